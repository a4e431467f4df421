//! `cargo xtask`: ax's project automation, std only so that it compiles in seconds.
//!
//! ```text
//! cargo xtask setup              install what this machine lacks (a quick no-op when done)
//! cargo xtask test [STAGE…]      setup, then fmt, clippy, native tests, wasm tests, web build,
//!                                browser end to end, schemathesis against the API
//! cargo xtask serve [ARGS…]      set up what serving needs, build the web UI, run `ax serve ARGS…`
//! cargo xtask web                build the web UI with trunk
//! cargo xtask editor             bundle the designer's code editor (CodeMirror, npm + esbuild)
//! cargo xtask bench-core|bench-peer|soak|load|growth   the long measurements (bench/, BENCHMARKS.md, RELIABILITY.md)
//! cargo xtask fuzz [TARGET…]     the cargo-fuzz targets of fuzz/ (nightly), a summary per target
//! cargo xtask pg [-- CMD…]       a throwaway PostgreSQL server (AX_TEST_PG) for tests and benchmarks
//! ```

mod bench;
mod editor;
mod fuzz;
mod pg;
mod run;
mod schemathesis;
mod setup;
mod stages;
mod wasm;

use std::process::ExitCode;
use std::time::Instant;

use run::{Ctx, Report, Result, secs};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup                    install what this machine lacks: Chromium and ChromeDriver, the
                           wasm32 target (rustup, else Debian's Rust), wasm-bindgen-cli,
                           wasm-pack, trunk. Quick when everything is there.
  test [OPTIONS] [STAGE…]  setup, then every test stage in order, stopping at the first
                           failure; with STAGE names, only those (`wasm` = all `wasm-*`)
      --skip-setup         do not run setup first
      --list               list the stages and exit
  serve [ARGS…]            set up what serving needs (the wasm32 target, wasm-bindgen-cli,
                           trunk, npm for the editor bundle; not the browser or wasm-pack),
                           build the web UI, then `ax serve ARGS…` (release build)
  web                      build the web UI (the editor bundle, then
                           `trunk build --release --offline`)
  editor                   bundle the designer's code editor (web/editor: `npm ci` when
                           needed, then esbuild) into web/editor/dist/ax-editor.js
  bench-peer [OPTIONS]     ax and LangGraph side by side (pinned LangGraph in a throwaway
                           virtualenv, target/bench/venv): tables in target/bench/peer.md
      --quick              one repetition, 100 code-review executions
      --reps N | --only CASE   (cases: chain40 chain1000 fan100 review-seq review-concurrent)
  bench-core [--quick]     the core's criterion benchmarks and the engine's overhead per
                           step: target/bench/core.md, engine.md (full runs update BENCHMARKS.md)
  soak [--quick]           kill -9 soak under `ax serve` (hundreds of kills), the same with
                           provider faults, and provider faults alone: target/bench/soak*.md
  load [--quick]           wrk against the API at 100 connections while 100 executions run
                           (installs Debian's wrk if missing): target/bench/load.md
  growth [--quick]         10,000 executions with `ax workflow prune`: database size over time
                           (full runs of soak, load and growth update RELIABILITY.md)
  bench-scale [OPTIONS]    1,000 code-review runs at 100 ms model latency: SQLite with one
                           process, PostgreSQL (a throwaway cluster) with 1, 2, 3 `ax worker`s:
                           target/bench/scale.md (full runs update BENCHMARKS.md)
  fuzz [TARGET…] [OPTIONS] the cargo-fuzz targets of fuzz/ one after another (needs nightly
                           and cargo-fuzz; not part of `test`), seeded from fuzz/seeds/;
                           a summary line per target; crashes land in fuzz/artifacts/
      --seconds N          per target (default 300)
      --list               list the targets and exit
  pg [--fast] [-- CMD…]    a throwaway PostgreSQL server (Debian's `postgresql`, installed if
                           missing): a cluster in a temporary directory on a free port of
                           127.0.0.1, removed afterwards. Alone: prints its URL and waits for
                           Enter; with CMD: runs it with AX_TEST_PG=URL set (e.g. `cargo xtask
                           pg -- cargo test -p ax-server`). --fast: fsync off (as `test` does)
  help                     this text

environment:
  AX_WASM_TOOLCHAIN=auto|rustup|debian
                           where the wasm32 target comes from: `auto` (default) uses the
                           active rustup toolchain if it has the target, else tries
                           `rustup target add` (30 s at most), else builds a wasm32 std
                           for Debian's Rust and links it as rustup toolchain `ax-wasm`";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let start = Instant::now();
    let mut report = Report::default();
    let title = args.first().cloned().unwrap_or_default();
    let res = Ctx::new().and_then(|ctx| dispatch(&ctx, &args, &mut report));
    match res {
        Ok(code) => {
            if code == ExitCode::SUCCESS && report_worthy(&title) && !report.is_empty() {
                report.print(&format!("xtask {title} summary"), start.elapsed());
                say!("xtask {title}: all done in {}", secs(start.elapsed()));
            }
            code
        }
        Err(e) => {
            if report_worthy(&title) {
                report.print(&format!("xtask {title} summary"), start.elapsed());
            }
            eprintln!("[xtask] error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report_worthy(command: &str) -> bool {
    matches!(command, "setup" | "test")
}

fn dispatch(ctx: &Ctx, args: &[String], report: &mut Report) -> Result<ExitCode> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    match command.as_str() {
        "setup" => {
            no_args("setup", rest)?;
            let env = setup::setup(ctx, report, setup::Needs::Test)?;
            say!("wasm builds use {}", env.describe_toolchain());
        }
        "test" => test(ctx, rest, report)?,
        "serve" => return serve(ctx, rest, report),
        "web" => {
            no_args("web", rest)?;
            let env = setup::detect(ctx, setup::Needs::Serve)?;
            stages::web(ctx, &env)?;
        }
        "editor" => {
            no_args("editor", rest)?;
            editor::build(ctx)?;
        }
        "bench-peer" => bench::bench_peer(ctx, rest)?,
        "bench-core" => bench::bench_core(ctx, rest)?,
        "soak" => bench::soak(ctx, rest)?,
        "load" => bench::load(ctx, rest)?,
        "growth" => bench::growth(ctx, rest)?,
        "bench-scale" => bench::scale(ctx, rest, report)?,
        "fuzz" => fuzz::fuzz(ctx, rest)?,
        "pg" => return pg::command(ctx, rest, report),
        "help" | "-h" | "--help" => println!("{USAGE}"),
        other => {
            return Err(format!("unknown command `{other}`: try `cargo xtask help`"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn no_args(command: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        None => Ok(()),
        Some(a) => Err(format!(
            "`cargo xtask {command}` takes no argument `{a}`: try `cargo xtask help`"
        )),
    }
}

fn test(ctx: &Ctx, args: &[String], report: &mut Report) -> Result<()> {
    let mut skip_setup = false;
    let mut names = Vec::new();
    for a in args {
        match a.as_str() {
            "--skip-setup" => skip_setup = true,
            "--list" => {
                for s in stages::STAGES {
                    let needs = s.needs.map(|n| format!(" (needs {n})")).unwrap_or_default();
                    println!("{}{needs}", s.name);
                }
                return Ok(());
            }
            flag if flag.starts_with('-') => {
                return Err(format!(
                    "unknown option `{flag}` for `cargo xtask test`: try `cargo xtask help`"
                ));
            }
            name => names.push(name.to_string()),
        }
    }
    let selected = stages::select(&names)?;
    let env = if skip_setup {
        setup::detect(ctx, setup::Needs::Test)?
    } else {
        setup::setup(ctx, report, setup::Needs::Test)?
    };
    if !skip_setup && stages::need_postgres(&selected) {
        pg::ensure_installed(ctx, report)?;
    }
    say!("wasm builds and tests use {}", env.describe_toolchain());
    stages::run(ctx, &env, &selected, report)
}

fn serve(ctx: &Ctx, args: &[String], report: &mut Report) -> Result<ExitCode> {
    if !ctx.root.join("server/Cargo.toml").exists() {
        return Err(
            "server/Cargo.toml not found: the ax server crate (ax-server) is not in this checkout \
             yet, so there is nothing to serve"
                .into(),
        );
    }
    // Only what building and serving the page needs: no browser, no wasm-pack.
    let env = setup::setup(ctx, report, setup::Needs::Serve)?;
    if ctx.root.join("web/Cargo.toml").exists() {
        stages::web(ctx, &env)?;
    } else {
        say!("web/Cargo.toml not found: serving without building the web UI");
    }
    let mut cmd = ctx.cmd("cargo");
    cmd.args([
        "run",
        "--release",
        "-p",
        "ax-server",
        "--bin",
        "ax",
        "--",
        "serve",
    ])
    .args(args);
    match cmd.outcome()? {
        run::Outcome::Exited(st) if st.success() => Ok(ExitCode::SUCCESS),
        run::Outcome::Exited(st) => {
            eprintln!("[xtask] `ax serve` ended ({st})");
            Ok(ExitCode::from(
                st.code().map_or(1, |c| c.clamp(1, 255) as u8),
            ))
        }
        run::Outcome::TimedOut(_) => unreachable!("no timeout was set"),
    }
}
