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
    // `--cfg erase_components` (.cargo/config.toml, wasm32 only) is read by ui/dom.rs too.
    println!("cargo::rustc-check-cfg=cfg(erase_components)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=AX_WEB_KEEP_NAMES");
}
