//! The stages of `cargo xtask test`, in order. Adding a stage is one line in [`STAGES`].

use std::path::Path;
use std::time::{Duration, Instant};

use crate::run::{Cmd, Ctx, Report, Result, Status, secs};
use crate::say;
use crate::setup::Env;

/// What a stage runs.
pub enum Kind {
    /// `cargo ARGS…` at the workspace root, with the native (default) toolchain.
    Cargo(&'static [&'static str]),
    /// The wasm-bindgen tests of the crate in this directory (unit and integration tests,
    /// not examples or benches, which are native programs), in headless Chromium through
    /// `wasm-pack test`. Skipped while the crate has no `wasm-bindgen-test` dependency.
    WasmTest(&'static str),
    /// `trunk build --release --offline` at the workspace root (index.html, Trunk.toml).
    Trunk,
    /// schemathesis against a live `ax serve` and its OpenAPI document
    /// (`schemathesis.rs`).
    Schemathesis,
}

pub struct Stage {
    /// The name to select it with: `cargo xtask test NAME` (or the part before `-`).
    pub name: &'static str,
    pub kind: Kind,
    /// Skipped (and said so) while this file, relative to the root, does not exist.
    pub needs: Option<&'static str>,
    /// Killed (with everything it started) after this long.
    pub timeout: Duration,
    /// How to fix a failure, when there is a mechanical fix.
    pub fix: Option<&'static str>,
    /// Runs with a throwaway PostgreSQL server (`AX_TEST_PG`), and must use it.
    pub postgres: bool,
}

impl Stage {
    const fn new(name: &'static str, kind: Kind) -> Stage {
        Stage {
            name,
            kind,
            needs: None,
            timeout: Duration::from_secs(60 * 60),
            fix: None,
            postgres: false,
        }
    }
    const fn with_postgres(mut self) -> Stage {
        self.postgres = true;
        self
    }
    const fn fix(mut self, how: &'static str) -> Stage {
        self.fix = Some(how);
        self
    }
    const fn needs(mut self, path: &'static str) -> Stage {
        self.needs = Some(path);
        self
    }
}

/// `cargo xtask test` runs these in order and stops at the first failure. A stage whose
/// `needs` file (or, for `WasmTest`, whose crate) does not exist yet is skipped, and said so.
#[rustfmt::skip]
pub const STAGES: &[Stage] = &[
    Stage::new("fmt", Kind::Cargo(&["fmt", "--all", "--", "--check"])).fix("cargo fmt --all"),
    Stage::new("clippy", Kind::Cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])),
    // The store and engine suites run on SQLite and on a real PostgreSQL server.
    Stage::new("native", Kind::Cargo(&["test", "--workspace"])).with_postgres(),
    Stage::new("wasm-core", Kind::WasmTest("core")),
    Stage::new("wasm-web", Kind::WasmTest("web")),
    Stage::new("web-build", Kind::Trunk).needs("web/Cargo.toml"),
    // `ax serve` with the built web app, driven through headless Chromium.
    Stage::new("e2e-build", Kind::Cargo(&["build", "-p", "ax-server", "--bin", "ax"])).needs("tests/Cargo.toml"),
    Stage::new("e2e", Kind::Cargo(&["test", "-p", "ax-e2e", "--", "--ignored"])).needs("tests/Cargo.toml"),
    // The HTTP API against its own OpenAPI document (pinned schemathesis in a virtualenv).
    Stage::new("schemathesis", Kind::Schemathesis).needs("tests/schemathesis/requirements.txt"),
];

/// The stages a command line selects: all, or those named (`wasm` selects `wasm-*`).
pub fn select(names: &[String]) -> Result<Vec<&'static Stage>> {
    if names.is_empty() {
        return Ok(STAGES.iter().collect());
    }
    for n in names {
        if !STAGES.iter().any(|s| matches(s, n)) {
            return Err(format!(
                "unknown stage `{n}`: the stages are {}",
                STAGES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    Ok(STAGES
        .iter()
        .filter(|s| names.iter().any(|n| matches(s, n)))
        .collect())
}

fn matches(stage: &Stage, name: &str) -> bool {
    stage.name == name || stage.name.split('-').next() == Some(name)
}

/// Why a stage cannot run in this checkout yet, if so.
fn skip_reason(ctx: &Ctx, stage: &Stage) -> Option<String> {
    if let Some(path) = stage.needs
        && !ctx.root.join(path).exists()
    {
        return Some(format!("{path} not found"));
    }
    if let Kind::WasmTest(dir) = stage.kind {
        let manifest = Path::new(dir).join("Cargo.toml");
        match std::fs::read_to_string(ctx.root.join(&manifest)) {
            Err(_) => return Some(format!("{} not found", manifest.display())),
            Ok(text) if !text.contains("wasm-bindgen-test") => {
                return Some(format!(
                    "{} has no wasm-bindgen-test dependency",
                    manifest.display()
                ));
            }
            Ok(_) => {}
        }
    }
    None
}

/// The command a stage runs.
fn command(ctx: &Ctx, env: &Env, stage: &Stage) -> Result<Cmd> {
    let mut cmd = match stage.kind {
        Kind::Cargo(args) => {
            let mut cmd = ctx.cmd("cargo");
            cmd.args(args);
            if stage.name == "e2e" {
                // The accessibility audit's axe-core, installed with the editor.
                crate::editor::build(ctx)?;
                cmd.env("AX_AXE_JS", crate::editor::axe(ctx));
            }
            cmd
        }
        Kind::WasmTest(dir) => {
            if dir == "web" {
                crate::editor::build(ctx)?;
            }
            let webdriver = write_webdriver_json(ctx, env)?;
            let chromedriver = &env.browser()?.chromedriver;
            let mut cmd = env.wasm_cmd(ctx, "wasm-pack");
            cmd.args(["test", "--headless", "--chrome", "--chromedriver"])
                .arg(chromedriver)
                .args(["--mode", "no-install", dir])
                .args(test_targets(&ctx.root.join(dir)))
                .env("CHROMEDRIVER", chromedriver)
                .env("WASM_BINDGEN_TEST_WEBDRIVER_JSON", webdriver)
                .env("WASM_BINDGEN_TEST_TIMEOUT", "300")
                .env("WASM_BINDGEN_TEST_DRIVER_TIMEOUT", "60");
            cmd
        }
        Kind::Trunk => {
            crate::editor::build(ctx)?;
            let mut cmd = env.wasm_cmd(ctx, "trunk");
            cmd.args(["build", "--release", "--offline"]);
            cmd
        }
        Kind::Schemathesis => return Err("the schemathesis stage is not one command".into()),
    };
    cmd.timeout(stage.timeout);
    Ok(cmd)
}

/// `cargo test` target flags for a crate's tests but not its examples or benches. (Not
/// `--tests`: wasm-pack passes that to its own `cargo build` already, and twice is an error.)
fn test_targets(dir: &Path) -> Vec<&'static str> {
    let mut out = Vec::new();
    if dir.join("src/lib.rs").exists() {
        out.push("--lib");
    }
    if dir.join("src/main.rs").exists() || dir.join("src/bin").is_dir() {
        out.push("--bins");
    }
    let has_tests = std::fs::read_dir(dir.join("tests")).is_ok_and(|d| {
        d.flatten().any(|e| {
            e.path().extension().is_some_and(|x| x == "rs") || e.path().join("main.rs").exists()
        })
    });
    if has_tests {
        out.extend(["--test", "*"]);
    }
    out
}

/// Chromium's flags for wasm-bindgen-test-runner, which reads WebDriver capabilities from
/// the file named by WASM_BINDGEN_TEST_WEBDRIVER_JSON (default `./webdriver.json`) and adds
/// `headless`, `no-sandbox` and `disable-dev-shm-usage` itself.
fn write_webdriver_json(ctx: &Ctx, env: &Env) -> Result<std::path::PathBuf> {
    let args = [
        "headless",
        "no-sandbox",
        "disable-gpu",
        "disable-dev-shm-usage",
        "disable-background-networking",
        "disable-component-update",
        "disable-sync",
        "disable-quic",
        "no-first-run",
    ];
    let args: Vec<String> = args.iter().map(|a| format!("\"--{a}\"")).collect();
    let json = format!(
        "{{\n  \"goog:chromeOptions\": {{\n    \"binary\": {:?},\n    \"args\": [{}]\n  }}\n}}\n",
        env.browser()?.chromium.display().to_string(),
        args.join(", ")
    );
    let path = ctx.target.join("xtask/webdriver.json");
    std::fs::create_dir_all(ctx.target.join("xtask"))
        .and_then(|()| std::fs::write(&path, json))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Do any of these stages need PostgreSQL?
pub fn need_postgres(stages: &[&Stage]) -> bool {
    stages.iter().any(|s| s.postgres)
}

/// Run the stages in order; stop at the first failure with a line on how to rerun it.
pub fn run(ctx: &Ctx, env: &Env, stages: &[&Stage], report: &mut Report) -> Result<()> {
    for stage in stages {
        if let Some(why) = skip_reason(ctx, stage) {
            say!("skip {}: {why}", stage.name);
            report.add(stage.name, Duration::ZERO, Status::Skipped(why));
            continue;
        }
        say!("==> {}", stage.name);
        let start = Instant::now();
        let res = match stage.kind {
            Kind::Schemathesis => crate::schemathesis::run(ctx),
            _ => command(ctx, env, stage)
                .and_then(|mut cmd| {
                    // Stopped and removed when this scope ends, whatever happened.
                    let pg = if stage.postgres {
                        let pg = crate::pg::running(ctx, crate::pg::Mode::Fast)?;
                        cmd.env(crate::pg::URL_VAR, pg.cluster.url())
                            .env(crate::pg::REQUIRE_VAR, "1");
                        Some(pg)
                    } else {
                        None
                    };
                    let r = cmd.run();
                    drop(pg);
                    r
                })
                .and_then(|()| after(ctx, stage)),
        };
        let took = start.elapsed();
        match res {
            Ok(note) => {
                say!("<== {} ok ({})", stage.name, secs(took));
                report.add(stage.name, took, Status::Ok(note));
            }
            Err(e) => {
                report.add(stage.name, took, Status::Failed(String::new()));
                let fix = stage
                    .fix
                    .map(|f| format!("fix with `{f}`, then "))
                    .unwrap_or_default();
                return Err(format!(
                    "stage `{}` failed after {}: {e}; {fix}rerun just it with `cargo xtask test --skip-setup {}`",
                    stage.name,
                    secs(took),
                    stage.name
                ));
            }
        }
    }
    Ok(())
}

/// `cargo xtask web`: the trunk build alone.
pub fn web(ctx: &Ctx, env: &Env) -> Result<()> {
    let stage = STAGES
        .iter()
        .find(|s| matches!(s.kind, Kind::Trunk))
        .ok_or("no trunk stage")?;
    if let Some(why) = skip_reason(ctx, stage) {
        return Err(format!(
            "nothing to build: {why} (the web crate is not in this checkout yet)"
        ));
    }
    say!("wasm toolchain: {}", env.describe_toolchain());
    command(ctx, env, stage)?.run()?;
    after(ctx, stage).map(drop)
}

/// The most the whole page (wasm, JavaScript, CSS; each file `gzip -9`, as a
/// server sends them) may weigh; the web-build stage fails above it.
pub const PAGE_GZ_LIMIT: u64 = 700_000;

/// What runs after a stage succeeded: the trunk build reports (and bounds) the
/// page's gzipped weight. Returns a note for the report.
fn after(ctx: &Ctx, stage: &Stage) -> Result<String> {
    if !matches!(stage.kind, Kind::Trunk) {
        return Ok(String::new());
    }
    let dist = ctx.root.join("dist");
    let wasm = std::fs::read_dir(&dist)
        .map_err(|e| format!("cannot list dist/: {e}"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wasm"))
        .ok_or("the trunk build left no .wasm in dist/")?;
    shrink_wasm(&wasm)?;
    let mut parts = Vec::new();
    for file in page_files(&dist) {
        let mut gz = ctx.cmd("sh");
        gz.args(["-c", "gzip -9 -c \"$0\" | wc -c"]).arg(&file);
        let out = gz.stdout()?;
        let size: u64 = out
            .trim()
            .parse()
            .map_err(|_| format!("`gzip -9 | wc -c` printed {out:?}"))?;
        let raw = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        parts.push((kind_of(&file), raw, size));
    }
    let note = size_note(&parts);
    say!("web page: {note}");
    let total: u64 = parts.iter().map(|p| p.2).sum();
    if total > PAGE_GZ_LIMIT {
        return Err(format!(
            "the web page grew to {} KB gzipped (wasm, JavaScript and CSS), over the {} KB ceiling",
            total.div_ceil(1000),
            PAGE_GZ_LIMIT / 1000
        ));
    }
    Ok(note)
}

/// The files a browser loads for the page: wasm, JavaScript (wasm-bindgen's
/// glue and the snippets it imports, the editor among them) and CSS.
fn page_files(dist: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dist.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "wasm" || x == "js" || x == "css")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn kind_of(p: &Path) -> &'static str {
    match p.extension().and_then(|x| x.to_str()) {
        Some("wasm") => "wasm",
        Some("css") => "CSS",
        _ => "JavaScript",
    }
}

/// Shrink the page's wasm after trunk (`wasm.rs`): drop the `name` and `producers`
/// sections wasm-bindgen writes (names of its generated glue, tool versions: about
/// 1 KB gzipped that the page never reads; trunk has no switch for wasm-bindgen's
/// `--remove-name-section`), then order the functions for gzip (about 16 KB). The
/// build itself links without a name section (web/build.rs); with
/// `AX_WEB_KEEP_NAMES` set (to see what takes the space) the file stays as built.
fn shrink_wasm(wasm: &Path) -> Result<()> {
    if std::env::var_os("AX_WEB_KEEP_NAMES").is_some() {
        return Ok(());
    }
    let bytes = std::fs::read(wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    let stripped = crate::wasm::without_sections(&bytes, &["name", "producers"])
        .ok_or_else(|| format!("{}: not a wasm module this can read", wasm.display()))?;
    let sorted = crate::wasm::sort_functions(&stripped);
    if sorted.is_none() {
        say!(
            "web wasm: functions left in the linker's order (a part of the module this cannot rewrite)"
        );
    }
    let out = sorted.unwrap_or(stripped);
    if out != bytes {
        std::fs::write(wasm, out).map_err(|e| format!("{}: {e}", wasm.display()))?;
    }
    Ok(())
}

/// "612 KB gzipped of 700 KB (wasm 420 KB, JavaScript 180 KB, CSS 12 KB; 1,650 KB raw)".
fn size_note(parts: &[(&'static str, u64, u64)]) -> String {
    let total: u64 = parts.iter().map(|p| p.2).sum();
    let raw: u64 = parts.iter().map(|p| p.1).sum();
    let by_kind: Vec<String> = ["wasm", "JavaScript", "CSS"]
        .iter()
        .filter_map(|k| {
            let gz: u64 = parts.iter().filter(|p| p.0 == *k).map(|p| p.2).sum();
            (gz > 0).then(|| format!("{k} {} KB", gz.div_ceil(1000)))
        })
        .collect();
    format!(
        "{} KB gzipped of the {} KB ceiling ({}; {} KB raw)",
        total.div_ceil(1000),
        PAGE_GZ_LIMIT / 1000,
        by_kind.join(", "),
        raw.div_ceil(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_notes() {
        assert_eq!(
            size_note(&[
                ("wasm", 1_127_787, 436_233),
                ("JavaScript", 450_000, 150_100),
                ("CSS", 20_000, 5_000)
            ]),
            "592 KB gzipped of the 700 KB ceiling (wasm 437 KB, JavaScript 151 KB, CSS 5 KB; 1598 KB raw)"
        );
    }

    #[test]
    fn selection() {
        let names = |v: &[&str]| -> Vec<&str> {
            let args: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            select(&args).unwrap().iter().map(|s| s.name).collect()
        };
        assert_eq!(names(&[]).len(), STAGES.len());
        assert_eq!(names(&["wasm"]), ["wasm-core", "wasm-web"]);
        assert_eq!(names(&["wasm-core"]), ["wasm-core"]);
        assert_eq!(names(&["native", "fmt"]), ["fmt", "native"]);
        assert!(select(&["nope".to_string()]).is_err());
    }

    #[test]
    fn stage_names_are_unique() {
        for (i, a) in STAGES.iter().enumerate() {
            assert!(
                STAGES[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
        }
    }
}
