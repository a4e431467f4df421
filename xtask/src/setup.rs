//! `cargo xtask setup`: install what a fresh machine lacks; a quick no-op the second time.
//!
//! See shared/TOOLCHAIN.md for why the wasm32 target may come from Debian's Rust rather
//! than from rustup (no internet here but the package registries).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::run::{Ctx, Report, Result, step};
use crate::say;

pub const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// The rustup name under which Debian's Rust (with our wasm32 std) is linked.
pub const LINKED_TOOLCHAIN: &str = "ax-wasm";
/// How long `rustup target add` may try before we fall back (it hangs when offline).
const RUSTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Debian's Rust, used only when rustup cannot provide the wasm32 target.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUST_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src", "lld-19"];
const LLD: &str = "/usr/lib/llvm-19/bin/lld";
const WASM_LD: &str = "wasm-ld-19";
const BROWSER_PACKAGES: &[&str] = &["chromium", "chromium-driver"];
/// The designer's code editor is bundled from npm packages (xtask/src/editor.rs).
const NODE_PACKAGES: &[&str] = &["nodejs", "npm"];
/// Bump to force a rebuild of the wasm32 std on every machine.
const SYSROOT_RECIPE: &str = "ax wasm32 sysroot recipe 1";

const WASM_PACK_VERSION: &str = "0.15.1";
const TRUNK_VERSION: &str = "0.21.14";

/// What a command needs installed: serving builds the page (the wasm32 target,
/// wasm-bindgen-cli, trunk, and npm for the editor bundle); testing also runs it in
/// Chromium (chromium, chromedriver, and wasm-pack for the wasm test stages).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Needs {
    Serve,
    Test,
}

/// What `setup` installs and checks for a command.
#[derive(Debug, PartialEq)]
struct Plan {
    /// Debian packages.
    packages: &'static [&'static str],
    /// cargo-installed tools, by binary name.
    tools: &'static [&'static str],
    /// Check that Chromium and chromedriver run and match.
    browser: bool,
}

fn plan(needs: Needs) -> Plan {
    match needs {
        Needs::Serve => Plan {
            packages: &[],
            tools: &["wasm-bindgen", "trunk"],
            browser: false,
        },
        Needs::Test => Plan {
            packages: BROWSER_PACKAGES,
            tools: &["wasm-bindgen", "wasm-pack", "trunk"],
            browser: true,
        },
    }
}

/// What the other commands need from the set-up.
pub struct Env {
    /// The rustup toolchain for wasm builds (`RUSTUP_TOOLCHAIN`); None: the active one.
    pub wasm_toolchain: Option<String>,
    /// Chromium and its driver, when set up for testing.
    pub browser: Option<Browser>,
}

pub struct Browser {
    pub chromedriver: PathBuf,
    pub chromium: PathBuf,
}

impl Env {
    /// Sets `RUSTUP_TOOLCHAIN` (when needed) for a wasm build or test command.
    pub fn wasm_cmd(&self, ctx: &Ctx, program: &str) -> crate::run::Cmd {
        let mut cmd = ctx.cmd(program);
        // Point-to-toolchain variables from the outer cargo would override the choice.
        cmd.env_remove("RUSTC").env_remove("RUSTDOC");
        // wasm-pack and trunk report errors through anyhow, which prints a backtrace of
        // itself when RUST_BACKTRACE is on; that buries the one line that matters.
        if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
            cmd.env_quiet("RUST_LIB_BACKTRACE", "0");
        }
        if let Some(tc) = &self.wasm_toolchain {
            cmd.env("RUSTUP_TOOLCHAIN", tc);
        }
        cmd
    }

    /// Chromium and chromedriver, which only `cargo xtask setup`/`test` install.
    pub fn browser(&self) -> Result<&Browser> {
        self.browser.as_ref().ok_or_else(|| {
            "Chromium and chromedriver are not set up: run `cargo xtask setup`".to_string()
        })
    }

    pub fn describe_toolchain(&self) -> String {
        match &self.wasm_toolchain {
            Some(tc) => format!("RUSTUP_TOOLCHAIN={tc}"),
            None => "the active rustup toolchain".into(),
        }
    }
}

/// Install and check what `needs` asks for; print one timed line per step.
pub fn setup(ctx: &Ctx, report: &mut Report, needs: Needs) -> Result<Env> {
    setup_steps(ctx, report, needs)
        .map_err(|e| format!("{e}; once fixed, rerun `cargo xtask setup`"))
}

fn setup_steps(ctx: &Ctx, report: &mut Report, needs: Needs) -> Result<Env> {
    let plan = plan(needs);
    if !plan.packages.is_empty() {
        step(report, "setup/browser-packages", || {
            let note = ensure_packages(ctx, plan.packages)?;
            Ok(((), note))
        })?;
    }
    let wasm_toolchain = step(report, "setup/wasm32-target", || {
        let tc = ensure_wasm_toolchain(ctx)?;
        let note = match &tc {
            Some(tc) => format!("using the linked toolchain `{tc}` (Debian's Rust)"),
            None => "the active rustup toolchain has it".into(),
        };
        Ok((tc, note))
    })?;
    step(report, "setup/tools", || {
        Ok(((), ensure_tools(ctx, plan.tools)?))
    })?;
    // The editor bundle is part of the page: serving needs npm as much as testing.
    step(report, "setup/node", || {
        // Any Node.js with npm will do (Debian's, or one installed otherwise).
        if ctx.which("npm").is_some() {
            return Ok(((), "npm found".into()));
        }
        Ok(((), ensure_packages(ctx, NODE_PACKAGES)?))
    })?;
    let browser = match plan.browser {
        false => None,
        true => Some(step(report, "setup/browser", || {
            let (chromium, chromedriver, note) = check_browser(ctx)?;
            Ok((
                Browser {
                    chromium,
                    chromedriver,
                },
                note,
            ))
        })?),
    };
    Ok(Env {
        wasm_toolchain,
        browser,
    })
}

/// The same facts as `setup`, found without installing anything (for `--skip-setup`
/// and `cargo xtask web`).
pub fn detect(ctx: &Ctx, needs: Needs) -> Result<Env> {
    let source = source()?;
    let wasm_toolchain = if source != Source::Debian && has_wasm_std(ctx, None)? {
        None
    } else if source != Source::Rustup && linked_toolchain_ready(ctx)? {
        Some(LINKED_TOOLCHAIN.to_string())
    } else {
        return Err(format!(
            "no Rust toolchain here has the {WASM_TARGET} target: run `cargo xtask setup`"
        ));
    };
    let browser = match plan(needs).browser {
        false => None,
        true => {
            let (chromium, chromedriver) = find_browser(ctx)?;
            Some(Browser {
                chromedriver,
                chromium,
            })
        }
    };
    Ok(Env {
        wasm_toolchain,
        browser,
    })
}

// ---------------------------------------------------------------- Debian packages

/// Install the missing ones of `packages` with apt-get; a note on what was done.
pub(crate) fn ensure_packages(ctx: &Ctx, packages: &[&str]) -> Result<String> {
    if ctx.which("dpkg-query").is_none() {
        return Ok(format!(
            "not a Debian system: skipped the check for {}",
            packages.join(" ")
        ));
    }
    let missing = missing_packages(ctx, packages)?;
    if missing.is_empty() {
        return Ok(format!("installed: {}", packages.join(" ")));
    }
    if ctx.which("apt-get").is_none() {
        return Err(format!(
            "Debian packages missing and no apt-get to install them: {}",
            missing.join(" ")
        ));
    }
    if !ctx.apt_updated.get() {
        apt(ctx, &["update"])?;
        ctx.apt_updated.set(true);
    }
    let mut args = vec!["install", "-y"];
    args.extend(missing.iter().map(String::as_str));
    apt(ctx, &args)?;
    let still = missing_packages(ctx, packages)?;
    if !still.is_empty() {
        return Err(format!(
            "apt-get install did not install {}: try `apt-get install -y {}` by hand",
            still.join(" "),
            still.join(" ")
        ));
    }
    Ok(format!("installed now: {}", missing.join(" ")))
}

fn apt(ctx: &Ctx, args: &[&str]) -> Result<()> {
    if !ctx.is_root && ctx.which("sudo").is_none() {
        return Err(format!(
            "`apt-get {}` needs root and sudo is not installed: run `cargo xtask setup` as root",
            args.join(" ")
        ));
    }
    // Through `env` so that the variable survives sudo.
    let mut cmd = ctx.root_cmd("env")?;
    cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
        .args(args);
    cmd.run()
}

fn missing_packages(ctx: &Ctx, packages: &[&str]) -> Result<Vec<String>> {
    let mut cmd = ctx.cmd("dpkg-query");
    cmd.args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .args(packages);
    // dpkg-query exits 1 when some package is unknown; its stdout still lists the rest.
    let out = cmd.capture()?.stdout;
    Ok(packages
        .iter()
        .filter(|p| !package_installed(&out, p))
        .map(|p| p.to_string())
        .collect())
}

/// Whether dpkg-query's `${Package} ${db:Status-Abbrev}` lines show `package` installed.
fn package_installed(dpkg_out: &str, package: &str) -> bool {
    dpkg_out.lines().any(|l| {
        let mut parts = l.split_whitespace();
        parts.next() == Some(package) && parts.next().is_some_and(|s| s.starts_with("ii"))
    })
}

// ---------------------------------------------------------------- the wasm32 target

/// Where the wasm32 target may come from: `AX_WASM_TOOLCHAIN` = `auto` (the default),
/// `rustup` (the active rustup toolchain only) or `debian` (Debian's Rust only).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Source {
    Auto,
    Rustup,
    Debian,
}

fn source() -> Result<Source> {
    match std::env::var("AX_WASM_TOOLCHAIN").as_deref() {
        Err(_) | Ok("") | Ok("auto") => Ok(Source::Auto),
        Ok("rustup") => Ok(Source::Rustup),
        Ok("debian") => Ok(Source::Debian),
        Ok(other) => Err(format!(
            "AX_WASM_TOOLCHAIN={other}: want `auto`, `rustup` or `debian`"
        )),
    }
}

/// Make some toolchain have the wasm32 target; None means the active rustup toolchain.
fn ensure_wasm_toolchain(ctx: &Ctx) -> Result<Option<String>> {
    let source = source()?;
    let rustup = source != Source::Debian;
    let debian = source != Source::Rustup;
    // 1. The normal case: the active toolchain already has it.
    if rustup && has_wasm_std(ctx, None)? {
        return Ok(None);
    }
    // 2. A previous set-up linked Debian's Rust with our wasm32 std.
    if debian && linked_toolchain_ready(ctx)? {
        return Ok(Some(LINKED_TOOLCHAIN.to_string()));
    }
    // 3. rustup, if it can reach its server (bounded: offline, it hangs).
    if rustup {
        if ctx.which("rustup").is_none() {
            return Err(format!(
                "rustup not found and no {WASM_TARGET} std: install rustup (https://rustup.rs)"
            ));
        }
        let mut add = ctx.cmd("rustup");
        add.args(["target", "add", WASM_TARGET])
            .timeout(RUSTUP_TIMEOUT);
        let failed = match add.outcome()? {
            crate::run::Outcome::Exited(st) if st.success() && has_wasm_std(ctx, None)? => {
                return Ok(None);
            }
            crate::run::Outcome::Exited(st) => format!("`{}` failed ({st})", add.display()),
            crate::run::Outcome::TimedOut(t) => format!(
                "`{}` gave no answer in {}s (no internet?)",
                add.display(),
                t.as_secs()
            ),
        };
        if !debian {
            return Err(format!(
                "{failed}, and AX_WASM_TOOLCHAIN=rustup rules out Debian's Rust: \
                 unset it to fall back"
            ));
        }
        say!("{failed}: falling back to Debian's Rust");
    }
    // 4. Debian's Rust with a wasm32 std built from its packaged sources.
    debian_recipe(ctx)?;
    Ok(Some(LINKED_TOOLCHAIN.to_string()))
}

/// Whether `toolchain` (None: the active one) has a wasm32 std in its sysroot.
fn has_wasm_std(ctx: &Ctx, toolchain: Option<&str>) -> Result<bool> {
    let mut cmd = ctx.cmd("rustc");
    cmd.args(["--print", "target-libdir", "--target", WASM_TARGET])
        .env_remove("RUSTC");
    if let Some(tc) = toolchain {
        cmd.env("RUSTUP_TOOLCHAIN", tc);
    }
    let out = cmd.capture()?;
    if !out.status.success() {
        return Ok(false);
    }
    Ok(has_rlib(Path::new(out.stdout.trim()), "std"))
}

/// Whether `dir` holds `lib<name>-*.rlib`.
fn has_rlib(dir: &Path, name: &str) -> bool {
    let prefix = format!("lib{name}-");
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".rlib")
            })
        })
        .unwrap_or(false)
}

/// Paths of Debian's Rust, read off /usr/bin/rustc.
struct Debian {
    /// `rustc -vV`: names the exact compiler the std was built with.
    version: String,
    host: String,
    sysroot: PathBuf,
}

impl Debian {
    fn probe(ctx: &Ctx) -> Result<Option<Debian>> {
        if !Path::new(DEBIAN_RUSTC).is_file() {
            return Ok(None);
        }
        let version = ctx.clean_cmd(DEBIAN_RUSTC).arg("-vV").stdout()?;
        let host = version
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .ok_or_else(|| format!("`{DEBIAN_RUSTC} -vV` names no host"))?
            .trim()
            .to_string();
        let sysroot = ctx
            .clean_cmd(DEBIAN_RUSTC)
            .args(["--print", "sysroot"])
            .stdout()?;
        Ok(Some(Debian {
            version,
            host,
            sysroot: PathBuf::from(sysroot.trim()),
        }))
    }

    fn rustlib(&self) -> PathBuf {
        self.sysroot.join("lib/rustlib")
    }
    fn wasm_lib(&self) -> PathBuf {
        self.rustlib().join(WASM_TARGET).join("lib")
    }
    fn stamp(&self) -> PathBuf {
        self.rustlib().join(WASM_TARGET).join("ax-sysroot.stamp")
    }
    fn stamp_text(&self) -> String {
        format!("{SYSROOT_RECIPE}\n{}", self.version)
    }
    fn rust_lld(&self) -> PathBuf {
        self.rustlib().join(&self.host).join("bin/rust-lld")
    }
    fn std_src(&self) -> PathBuf {
        self.rustlib().join("src/rust/library")
    }

    fn sysroot_ready(&self) -> bool {
        std::fs::read_to_string(self.stamp()).is_ok_and(|s| s == self.stamp_text())
            && has_rlib(&self.wasm_lib(), "std")
            && has_rlib(&self.wasm_lib(), "test")
    }

    fn lld_ready(&self) -> bool {
        std::fs::read_link(self.rust_lld()).is_ok_and(|t| t == Path::new(LLD))
            && Path::new(LLD).is_file()
    }
}

/// The linked toolchain exists, points at Debian's Rust, and its wasm32 std is current.
fn linked_toolchain_ready(ctx: &Ctx) -> Result<bool> {
    let Some(deb) = Debian::probe(ctx)? else {
        return Ok(false);
    };
    Ok(deb.sysroot_ready() && deb.lld_ready() && toolchain_linked(ctx, &deb)?)
}

fn toolchain_linked(ctx: &Ctx, deb: &Debian) -> Result<bool> {
    if ctx.which("rustup").is_none() {
        return Ok(false);
    }
    let list = ctx.cmd("rustup").args(["toolchain", "list"]).stdout()?;
    if !list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(LINKED_TOOLCHAIN))
    {
        return Ok(false);
    }
    let mut rustc = ctx.cmd("rustc");
    rustc
        .args(["--print", "sysroot"])
        .env_remove("RUSTC")
        .env("RUSTUP_TOOLCHAIN", LINKED_TOOLCHAIN);
    let out = rustc.capture()?;
    Ok(out.status.success() && Path::new(out.stdout.trim()) == deb.sysroot)
}

/// TOOLCHAIN.md's recipe, each step checked first.
fn debian_recipe(ctx: &Ctx) -> Result<()> {
    let note = ensure_packages(ctx, DEBIAN_RUST_PACKAGES)?;
    say!("Debian's Rust packages: {note}");
    let deb = Debian::probe(ctx)?.ok_or_else(|| {
        format!("{DEBIAN_RUSTC} missing after installing rustc-web: install it by hand")
    })?;
    for need in [Path::new(DEBIAN_CARGO), &deb.std_src().join("Cargo.lock")] {
        if !need.exists() {
            return Err(format!(
                "{} is missing: reinstall with `apt-get install --reinstall {}`",
                need.display(),
                DEBIAN_RUST_PACKAGES.join(" ")
            ));
        }
    }

    if deb.sysroot_ready() {
        say!("wasm32 std: already in {}", deb.wasm_lib().display());
    } else {
        build_sysroot(ctx, &deb)?;
    }

    if deb.lld_ready() {
        say!("rust-lld: {} -> {LLD}", deb.rust_lld().display());
    } else {
        if !Path::new(LLD).is_file() {
            return Err(format!("{LLD} missing: `apt-get install -y lld-19`"));
        }
        let dir = deb
            .rust_lld()
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        ctx.root_cmd("mkdir")?.arg("-p").arg(&dir).run()?;
        ctx.root_cmd("ln")?
            .arg("-sfn")
            .arg(LLD)
            .arg(deb.rust_lld())
            .run()?;
    }

    if toolchain_linked(ctx, &deb)? {
        say!(
            "rustup toolchain `{LINKED_TOOLCHAIN}`: linked to {}",
            deb.sysroot.display()
        );
    } else {
        let list = ctx.cmd("rustup").args(["toolchain", "list"]).stdout()?;
        if list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(LINKED_TOOLCHAIN))
        {
            // Linked somewhere else: replace it.
            ctx.cmd("rustup")
                .args(["toolchain", "uninstall", LINKED_TOOLCHAIN])
                .run()?;
        }
        ctx.cmd("rustup")
            .args(["toolchain", "link", LINKED_TOOLCHAIN])
            .arg(&deb.sysroot)
            .run()?;
    }

    if !linked_toolchain_ready(ctx)? || !has_wasm_std(ctx, Some(LINKED_TOOLCHAIN))? {
        return Err(format!(
            "the `{LINKED_TOOLCHAIN}` toolchain is still not usable for {WASM_TARGET} after set-up: \
             see shared/TOOLCHAIN.md"
        ));
    }
    smoke_test(ctx)
}

/// Build std for wasm32 from Debian's sources in a scratch crate; install it in the sysroot.
fn build_sysroot(ctx: &Ctx, deb: &Debian) -> Result<()> {
    let scratch = ctx.target.join("xtask/wasm-sysroot");
    say!(
        "building the wasm32 std from {} in {}",
        deb.std_src().display(),
        scratch.display()
    );
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .map_err(|e| format!("cannot remove {}: {e}", scratch.display()))?;
    }
    let write = |name: &str, text: &str| {
        let p = scratch.join(name);
        std::fs::create_dir_all(p.parent().unwrap_or(&scratch))
            .and_then(|()| std::fs::write(&p, text))
            .map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    // An empty [workspace] keeps it out of ax's workspace (it lives under target/).
    write(
        "Cargo.toml",
        "[package]\nname = \"ax-wasm-sysroot\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         publish = false\n\n[lib]\npath = \"lib.rs\"\n\n[workspace]\n",
    )?;
    write(
        "lib.rs",
        "//! Only here to make cargo build std for wasm32.\n",
    )?;

    let out = scratch.join("target");
    let mut cargo = ctx.clean_cmd(DEBIAN_CARGO);
    cargo
        .args([
            "build",
            "--release",
            "-Zbuild-std=std,panic_abort,test",
            "--target",
        ])
        .arg(WASM_TARGET)
        .cwd(&scratch)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "RUSTFLAGS",
            "-Cembed-bitcode=yes -Zforce-unstable-if-unmarked",
        )
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", WASM_LD)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("CARGO_TARGET_DIR", &out)
        .timeout(Duration::from_secs(60 * 60));
    cargo.run().map_err(|e| {
        format!("{e}: building the wasm32 std failed; rerun with `cargo xtask setup`")
    })?;

    let deps = out.join(WASM_TARGET).join("release/deps");
    let mut rlibs: Vec<PathBuf> = std::fs::read_dir(&deps)
        .map_err(|e| format!("cannot read {}: {e}", deps.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("lib") && n.ends_with(".rlib") && !n.starts_with("libax_wasm_sysroot-")
        })
        .collect();
    rlibs.sort();
    if !has_rlib(&deps, "std") || !has_rlib(&deps, "test") {
        return Err(format!(
            "the std build left no libstd/libtest rlib in {}",
            deps.display()
        ));
    }

    let dest = deb.wasm_lib();
    ctx.root_cmd("mkdir")?.arg("-p").arg(&dest).run()?;
    // Old rlibs of another build would be a second candidate for each crate.
    let old: Vec<PathBuf> = std::fs::read_dir(&dest)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let old: Vec<PathBuf> = old
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rlib"))
        .collect();
    // A rebuild from the same sources is byte-identical: then nothing goes stale.
    let changed = !same_files(&old, &rlibs);
    if !old.is_empty() && changed {
        let names: Vec<&std::ffi::OsStr> = old.iter().filter_map(|p| p.file_name()).collect();
        ctx.root_cmd("rm")?
            .arg("-f")
            .args(&names)
            .cwd(&dest)
            .run()?;
    }
    if changed {
        say!("copying {} rlibs to {}", rlibs.len(), dest.display());
        let names: Vec<&std::ffi::OsStr> = rlibs.iter().filter_map(|p| p.file_name()).collect();
        ctx.root_cmd("cp")?
            .args(&names)
            .arg(&dest)
            .cwd(&deps)
            .run()?;
    } else {
        say!(
            "the rebuilt std is identical to the one in {}",
            dest.display()
        );
    }
    let stamp_tmp = scratch.join("ax-sysroot.stamp");
    std::fs::write(&stamp_tmp, deb.stamp_text())
        .map_err(|e| format!("cannot write {}: {e}", stamp_tmp.display()))?;
    ctx.root_cmd("cp")?.arg(&stamp_tmp).arg(deb.stamp()).run()?;

    // A different std under the same rustc: what the linked toolchain built against the
    // old one now fails with "can't find crate", yet cargo thinks it is fresh. (Nothing to
    // do the first time: without a std, that toolchain could build nothing for wasm32.)
    let stale = ctx.target.join(WASM_TARGET);
    if !old.is_empty() && changed && stale.exists() {
        say!(
            "replaced the wasm32 std: removing {} (stale)",
            stale.display()
        );
        if let Err(e) = std::fs::remove_dir_all(&stale) {
            say!(
                "warning: cannot remove {}: {e}; if wasm builds fail with \"can't find crate\", \
                 run `cargo clean --target {WASM_TARGET}`",
                stale.display()
            );
        }
    }
    // The scratch build is ~150 MB and always redone from nothing: drop it.
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Whether `old` and `new` hold the same file names with the same bytes.
fn same_files(old: &[PathBuf], new: &[PathBuf]) -> bool {
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_owned());
    let mut old_names: Vec<_> = old.iter().map(name).collect();
    let mut new_names: Vec<_> = new.iter().map(name).collect();
    old_names.sort();
    new_names.sort();
    if old_names != new_names {
        return false;
    }
    new.iter().all(|n| {
        let o = old.iter().find(|o| name(o) == name(n));
        match (o.map(std::fs::read), std::fs::read(n)) {
            (Some(Ok(a)), Ok(b)) => a == b,
            _ => false,
        }
    })
}

/// Compile and link a tiny cdylib with the linked toolchain: proves std and rust-lld.
fn smoke_test(ctx: &Ctx) -> Result<()> {
    let dir = ctx.target.join("xtask/wasm-smoke");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let src = dir.join("smoke.rs");
    std::fs::write(
        &src,
        "#[unsafe(no_mangle)]\npub extern \"C\" fn ax_smoke(n: u32) -> u32 { \
         std::format!(\"{n}\").len() as u32 }\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    let mut rustc = ctx.cmd("rustc");
    rustc
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "cdylib",
            "-O",
            "--target",
            WASM_TARGET,
        ])
        .arg("-o")
        .arg(dir.join("smoke.wasm"))
        .arg(&src)
        .env_remove("RUSTC")
        .env("RUSTUP_TOOLCHAIN", LINKED_TOOLCHAIN);
    rustc.stdout().map_err(|e| {
        format!("{e}: the `{LINKED_TOOLCHAIN}` toolchain cannot build for {WASM_TARGET}")
    })?;
    say!("`{LINKED_TOOLCHAIN}` built and linked a wasm32 cdylib");
    Ok(())
}

// ---------------------------------------------------------------- cargo-installed tools

struct Tool {
    /// The binary checked with `--version`.
    bin: &'static str,
    /// The crate `cargo install` builds it from.
    krate: &'static str,
    version: String,
    /// `--locked` first; then, if allowed, without it.
    locked: Locked,
}

#[derive(PartialEq)]
enum Locked {
    Never,
    Always,
    TryFirst,
}

fn ensure_tools(ctx: &Ctx, wanted: &[&str]) -> Result<String> {
    let bindgen = wasm_bindgen_version(&ctx.root)?;
    let tools = [
        // The registry mirror lacks one of its locked transitive versions: never --locked.
        Tool {
            bin: "wasm-bindgen",
            krate: "wasm-bindgen-cli",
            version: bindgen,
            locked: Locked::Never,
        },
        Tool {
            bin: "wasm-pack",
            krate: "wasm-pack",
            version: WASM_PACK_VERSION.into(),
            locked: Locked::TryFirst,
        },
        // Unlocked, trunk picks a cssparser that does not compile.
        Tool {
            bin: "trunk",
            krate: "trunk",
            version: TRUNK_VERSION.into(),
            locked: Locked::Always,
        },
    ];
    let mut notes = Vec::new();
    for tool in tools.iter().filter(|t| wanted.contains(&t.bin)) {
        let found = tool_version(ctx, tool.bin);
        if found.as_deref() == Some(tool.version.as_str()) {
            notes.push(format!("{} {}", tool.bin, tool.version));
            continue;
        }
        match &found {
            Some(v) => say!("{} is {v}, want {}: installing", tool.bin, tool.version),
            None => say!("{} not found: installing {}", tool.bin, tool.version),
        }
        install(ctx, tool)?;
        let now = tool_version(ctx, tool.bin);
        if now.as_deref() != Some(tool.version.as_str()) {
            return Err(format!(
                "after `cargo install {}`, `{} --version` says {}, want {} (is another {} earlier on PATH?)",
                tool.krate,
                tool.bin,
                now.as_deref().unwrap_or("nothing"),
                tool.version,
                tool.bin
            ));
        }
        notes.push(format!("{} {} (installed now)", tool.bin, tool.version));
    }
    Ok(notes.join(", "))
}

fn install(ctx: &Ctx, tool: &Tool) -> Result<()> {
    let attempt = |locked: bool| {
        let mut cmd = ctx.cmd("cargo");
        cmd.args(["install", tool.krate, "--version", &tool.version]);
        if locked {
            cmd.arg("--locked");
        }
        cmd.run()
    };
    match tool.locked {
        Locked::Never => attempt(false),
        Locked::Always => attempt(true),
        Locked::TryFirst => attempt(true).or_else(|e| {
            say!("{e}; trying again without --locked");
            attempt(false)
        }),
    }
    .map_err(|e| format!("{e}: installing {} failed", tool.krate))
}

/// The version a tool reports (`name 1.2.3 …` → `1.2.3`), or None when it cannot run.
fn tool_version(ctx: &Ctx, bin: &str) -> Option<String> {
    let out = ctx.cmd(bin).arg("--version").capture().ok()?;
    if !out.status.success() {
        return None;
    }
    first_version(&out.stdout)
}

/// The first word that looks like a version number.
fn first_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|w| w.trim_start_matches('v'))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
        .map(str::to_string)
}

/// The `wasm-bindgen` version in Cargo.lock, else the exact pin in the root Cargo.toml.
pub fn wasm_bindgen_version(root: &Path) -> Result<String> {
    if let Ok(lock) = std::fs::read_to_string(root.join("Cargo.lock")) {
        let versions = lock_versions(&lock, "wasm-bindgen");
        match versions.as_slice() {
            [one] => return Ok(one.clone()),
            [] => {}
            many => {
                return Err(format!(
                    "Cargo.lock holds several wasm-bindgen versions ({}): pin one with `=` in Cargo.toml",
                    many.join(", ")
                ));
            }
        }
    }
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))
        .map_err(|e| format!("cannot read Cargo.toml: {e}"))?;
    manifest_pin(&manifest, "wasm-bindgen").ok_or_else(|| {
        "no wasm-bindgen version in Cargo.lock or Cargo.toml: add `wasm-bindgen = \"=X.Y.Z\"` \
         to [workspace.dependencies]"
            .to_string()
    })
}

/// Versions of package `name` in a Cargo.lock.
fn lock_versions(lock: &str, name: &str) -> Vec<String> {
    let want = format!("name = \"{name}\"");
    let mut out = Vec::new();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == want
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
        {
            out.push(v.trim_matches('"').to_string());
        }
    }
    out
}

/// `name = "=1.2.3"` or `name = { version = "=1.2.3", … }` in a manifest → `1.2.3`.
fn manifest_pin(manifest: &str, name: &str) -> Option<String> {
    manifest.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(name)?.trim_start();
        let rest = rest.strip_prefix('=')?.trim_start();
        let rest = match rest.find("version") {
            Some(i) if rest.starts_with('{') => rest[i + "version".len()..]
                .trim_start()
                .strip_prefix('=')?
                .trim_start(),
            _ => rest,
        };
        let quoted = rest.strip_prefix('"')?;
        let v = &quoted[..quoted.find('"')?];
        let v = v.trim_start_matches('=').trim();
        (!v.is_empty()).then(|| v.to_string())
    })
}

// ---------------------------------------------------------------- the browser

const CHROMIUM_NAMES: &[&str] = &[
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

fn find_browser(ctx: &Ctx) -> Result<(PathBuf, PathBuf)> {
    let chromium = CHROMIUM_NAMES
        .iter()
        .find_map(|n| ctx.which(n))
        .ok_or("chromium not found: run `cargo xtask setup` (apt-get install -y chromium)")?;
    let chromedriver = ctx.which("chromedriver").ok_or(
        "chromedriver not found: run `cargo xtask setup` (apt-get install -y chromium-driver)",
    )?;
    Ok((chromium, chromedriver))
}

fn check_browser(ctx: &Ctx) -> Result<(PathBuf, PathBuf, String)> {
    let (chromium, chromedriver) = find_browser(ctx)?;
    let version = |p: &Path| -> Result<String> {
        // Debian's chromium wrapper script chatters on stderr; the version is on stdout.
        let out = ctx.cmd(p).arg("--version").stdout()?;
        first_version(&out)
            .ok_or_else(|| format!("`{} --version` printed no version: {out:?}", p.display()))
    };
    let (cv, dv) = (version(&chromium)?, version(&chromedriver)?);
    let major = |v: &str| v.split('.').next().unwrap_or("").to_string();
    if major(&cv) != major(&dv) {
        return Err(format!(
            "chromium {cv} and chromedriver {dv} differ in major version: \
             `apt-get install -y chromium chromium-driver` to get a matching pair"
        ));
    }
    Ok((
        chromium.clone(),
        chromedriver.clone(),
        format!(
            "{} {cv}, {} {dv}",
            chromium.display(),
            chromedriver.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_tool_output() {
        assert_eq!(
            first_version("wasm-bindgen 0.2.130").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(
            first_version("Chromium 156.0.8078.108 built on Debian GNU/Linux 12 (bookworm)")
                .as_deref(),
            Some("156.0.8078.108")
        );
        assert_eq!(
            first_version("trunk v0.21.14\n").as_deref(),
            Some("0.21.14")
        );
        assert_eq!(first_version("no version"), None);
    }

    #[test]
    fn lockfile_versions() {
        let lock = "[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n\
                    source = \"registry\"\n\n[[package]]\nname = \"wasm-bindgen-test\"\n\
                    version = \"0.3.50\"\n";
        assert_eq!(lock_versions(lock, "wasm-bindgen"), ["0.2.130"]);
        assert_eq!(lock_versions(lock, "wasm-bindgen-test"), ["0.3.50"]);
        assert!(lock_versions(lock, "trunk").is_empty());
    }

    #[test]
    fn manifest_pins() {
        let m =
            "[workspace.dependencies]\nwasm-bindgen-test = \"0.3\"\nwasm-bindgen = \"=0.2.130\"\n";
        assert_eq!(manifest_pin(m, "wasm-bindgen").as_deref(), Some("0.2.130"));
        let m = "wasm-bindgen = { version = \"=0.2.99\", default-features = false }\n";
        assert_eq!(manifest_pin(m, "wasm-bindgen").as_deref(), Some("0.2.99"));
        assert_eq!(manifest_pin("serde = \"1\"\n", "wasm-bindgen"), None);
    }

    /// `cargo xtask serve` installs what building and serving the page needs, not
    /// the browser and wasm-pack that only the tests use (14 minutes on a fresh machine).
    #[test]
    fn serving_installs_less_than_testing() {
        let serve = plan(Needs::Serve);
        assert!(serve.packages.is_empty());
        assert!(!serve.browser);
        assert_eq!(serve.tools, ["wasm-bindgen", "trunk"]);
        let test = plan(Needs::Test);
        assert_eq!(test.packages, ["chromium", "chromium-driver"]);
        assert!(test.browser);
        assert_eq!(test.tools, ["wasm-bindgen", "wasm-pack", "trunk"]);
    }

    #[test]
    fn dpkg_status() {
        let out = "chromium ii \nchromium-driver un \n";
        assert!(package_installed(out, "chromium"));
        assert!(!package_installed(out, "chromium-driver"));
        assert!(!package_installed(out, "lld-19"));
    }

    #[test]
    fn this_workspace_pins_wasm_bindgen() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let v = wasm_bindgen_version(root).unwrap();
        assert!(v.starts_with("0.2."), "{v}");
    }
}
