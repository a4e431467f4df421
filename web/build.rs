//! Release builds of the page drop the wasm `name` section (function names, about
//! 40 % of the file): trunk's wasm-bindgen step keeps it, and wasm-opt (which would
//! strip it) is too old on Debian to run.

fn main() {
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "wasm32");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    // `AX_WEB_KEEP_NAMES=1` keeps them, to see what takes the space.
    let keep = std::env::var_os("AX_WEB_KEEP_NAMES").is_some();
    if wasm && release && !keep {
        println!("cargo:rustc-link-arg-bins=--strip-all");
        // wasm-bindgen reads which wasm features are enabled from this section.
        println!("cargo:rustc-link-arg-bins=--keep-section=target_features");
    }
    // The code editor's bundle, which wasm-bindgen copies next to the page
    // (web/src/editor_host.rs): built from npm packages, not kept in git.
    if wasm {
        let bundle = std::path::Path::new("editor/dist/ax-editor.js");
        println!("cargo:rerun-if-changed=editor/dist/ax-editor.js");
        if !bundle.exists() {
            panic!(
                "web/editor/dist/ax-editor.js is missing: build the code editor with `cargo xtask editor` \
                 (npm and esbuild; `cargo xtask web` and `cargo xtask test` do it first)"
            );
        }
    }
    // `--cfg erase_components` (.cargo/config.toml, wasm32 only) is read by ui/dom.rs too.
    println!("cargo::rustc-check-cfg=cfg(erase_components)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=AX_WEB_KEEP_NAMES");
}
