//! The designer's code editor (`web/editor/`): CodeMirror 6 from npm, bundled
//! by esbuild into one ES module, `web/editor/dist/ax-editor.js`, which the page
//! imports through wasm-bindgen (so it is served next to the page's own
//! JavaScript: offline, no CDN). `npm ci` installs the exact versions of
//! `package-lock.json` when they are not installed yet; the bundle is rebuilt
//! every time (esbuild takes a fraction of a second).

use std::path::{Path, PathBuf};

use crate::run::{Ctx, Result};
use crate::say;

/// The bundle wasm-bindgen reads (`web/src/editor_host.rs`).
pub const BUNDLE: &str = "web/editor/dist/ax-editor.js";

fn dir(ctx: &Ctx) -> PathBuf {
    ctx.root.join("web/editor")
}

/// Whether `node_modules` is at least as new as `package-lock.json` (npm
/// writes `node_modules/.package-lock.json` at the end of an install).
fn installed(dir: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(dir.join("package-lock.json")),
        modified(dir.join("node_modules/.package-lock.json")),
    ) {
        (Some(lock), Some(done)) => done >= lock && dir.join("node_modules/.bin/esbuild").exists(),
        _ => false,
    }
}

/// Install the editor's npm packages if needed and bundle it.
pub fn build(ctx: &Ctx) -> Result<()> {
    let dir = dir(ctx);
    if ctx.which("npm").is_none() {
        return Err(
            "npm not found: the code editor is built from npm packages (`cargo xtask setup` installs Node.js and npm)"
                .into(),
        );
    }
    if !installed(&dir) {
        say!("installing the editor's npm packages (package-lock.json)");
        let mut npm = ctx.cmd("npm");
        npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .cwd(&dir);
        npm.run()?;
    }
    let mut esbuild = ctx.cmd(dir.join("node_modules/.bin/esbuild"));
    esbuild
        .args([
            "src/index.js",
            "--bundle",
            "--format=esm",
            "--minify",
            "--target=es2020",
            "--legal-comments=none",
            "--log-level=warning",
            "--outfile=dist/ax-editor.js",
        ])
        .cwd(&dir);
    esbuild.run()?;
    let size = std::fs::metadata(ctx.root.join(BUNDLE))
        .map(|m| m.len())
        .map_err(|e| format!("{BUNDLE}: {e}"))?;
    say!("editor bundle: {BUNDLE} ({} KB)", size.div_ceil(1000));
    Ok(())
}

/// axe-core's browser build (the e2e test's accessibility audit), installed with the editor.
pub fn axe(ctx: &Ctx) -> PathBuf {
    dir(ctx).join("node_modules/axe-core/axe.min.js")
}
