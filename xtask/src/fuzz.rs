//! `cargo xtask fuzz`: the cargo-fuzz targets of fuzz/ (nightly, libFuzzer), one
//! after another, each for a fixed time, with a summary line per target.
//!
//! Not a test stage: it needs nightly and cargo-fuzz, and it runs for minutes.

use crate::run::{Ctx, Result};
use crate::say;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[&str] = &[
    "parse_validate",
    "template",
    "condition",
    "schema",
    "checkpoint_restore",
    "executor_events",
];

const DEFAULT_SECONDS: u64 = 300;

/// What one run of a target printed, from libFuzzer's output.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    runs: Option<u64>,
    seconds: Option<u64>,
    corpus: Option<u64>,
    /// Crash, timeout, leak and OOM inputs written to artifacts/.
    artifacts: Vec<String>,
}

pub fn fuzz(ctx: &Ctx, args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().ok_or("`--seconds` needs a number")?;
                seconds = v
                    .parse()
                    .map_err(|_| format!("`--seconds {v}`: not a whole number of seconds"))?;
            }
            "--list" => {
                for t in TARGETS {
                    println!("{t}");
                }
                return Ok(());
            }
            flag if flag.starts_with('-') => {
                return Err(format!(
                    "unknown option `{flag}` for `cargo xtask fuzz`: try `cargo xtask help`"
                ));
            }
            t if TARGETS.contains(&t) => targets.push(t.to_owned()),
            t => {
                return Err(format!(
                    "no fuzz target `{t}`; the targets are: {}",
                    TARGETS.join(", ")
                ));
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    check_tools(ctx)?;
    let dir = ctx.root.join("fuzz");
    let mut rows = Vec::new();
    for t in &targets {
        seed(&dir, t)?;
        let started = Instant::now();
        let (stats, ok) = run_target(ctx, &dir, t, seconds)?;
        let files = count_files(&dir.join("corpus").join(t));
        let corpus = stats.corpus.map_or(files, |c| c as usize);
        rows.push((t.clone(), stats, corpus, started.elapsed().as_secs(), ok));
    }
    println!();
    say!("fuzz summary ({seconds} s per target):");
    let mut failed = Vec::new();
    for (t, s, corpus, wall, ok) in &rows {
        let runs = s.runs.map_or("?".to_owned(), |r| r.to_string());
        let secs = s.seconds.unwrap_or(*wall).max(1);
        let rate = s.runs.map_or("?".to_owned(), |r| (r / secs).to_string());
        let crashes = if s.artifacts.is_empty() {
            "0 crashes".to_owned()
        } else {
            format!(
                "{} crash(es): {}",
                s.artifacts.len(),
                s.artifacts.join(", ")
            )
        };
        say!(
            "  {t:<20} {secs:>5} s  {runs:>10} executions  {rate:>7} exec/s  corpus {corpus:>5}  {crashes}",
        );
        if !ok || !s.artifacts.is_empty() {
            failed.push(t.as_str());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzzing found problems in {}: reproduce with `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/FILE` (in fuzz/), then add the input to core/tests/fuzz_regressions.rs",
            failed.join(", ")
        ))
    }
}

fn check_tools(ctx: &Ctx) -> Result<()> {
    let nightly = ctx
        .cmd("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .capture();
    if !matches!(nightly, Ok(c) if c.status.success()) {
        return Err(
            "the nightly toolchain is missing (cargo-fuzz needs it): `rustup toolchain install nightly`"
                .into(),
        );
    }
    let fuzz = ctx
        .cmd("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .capture();
    if !matches!(fuzz, Ok(c) if c.status.success()) {
        return Err("cargo-fuzz is missing: `cargo install cargo-fuzz`".into());
    }
    Ok(())
}

/// Copy the checked-in seeds (fuzz/seeds/TARGET) into the working corpus
/// (fuzz/corpus/TARGET, not checked in), keeping what earlier runs found.
fn seed(dir: &Path, target: &str) -> Result<()> {
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let seeds = dir.join("seeds").join(target);
    let Ok(entries) = std::fs::read_dir(&seeds) else {
        return Ok(()); // a target that starts from nothing
    };
    let mut n = 0;
    for e in entries.flatten() {
        let to = corpus.join(format!("seed-{}", e.file_name().to_string_lossy()));
        if !to.exists() {
            std::fs::copy(e.path(), &to).map_err(|err| format!("{}: {err}", to.display()))?;
            n += 1;
        }
    }
    if n > 0 {
        say!("{target}: {n} seed(s) from {}", seeds.display());
    }
    Ok(())
}

/// `cargo +nightly fuzz run TARGET -- -max_total_time=N …`, libFuzzer's output
/// passed through (stderr) and read for its final figures.
fn run_target(ctx: &Ctx, dir: &Path, target: &str, seconds: u64) -> Result<(Stats, bool)> {
    let max_time = format!("-max_total_time={seconds}");
    let args = [
        "+nightly",
        "fuzz",
        "run",
        target,
        "--",
        &max_time,
        "-rss_limit_mb=2048",
        // An input that takes this long is a finding (libFuzzer's default: 20 minutes).
        "-timeout=30",
        "-print_final_stats=1",
    ];
    say!("$ (cd fuzz && cargo {})", args.join(" "));
    // ctx.cmd() sets PATH; run it by hand to read stderr as it comes.
    let mut cmd = Command::new(ctx.which("cargo").unwrap_or_else(|| "cargo".into()));
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    for k in [
        "CARGO",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start cargo fuzz: {e}"))?;
    let mut stats = Stats::default();
    if let Some(err) = child.stderr.take() {
        let mut echo = std::io::stderr();
        for line in BufReader::new(err).split(b'\n').map_while(|l| l.ok()) {
            let line = String::from_utf8_lossy(&line);
            let _ = writeln!(echo, "{line}");
            read_line(&line, &mut stats);
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo fuzz: {e}"))?;
    Ok((stats, status.success()))
}

fn read_line(line: &str, s: &mut Stats) {
    let line = line.trim();
    if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
        s.runs = v.trim().parse().ok();
    } else if let Some(rest) = line.strip_prefix("Done ") {
        // "Done 158356 runs in 91 second(s)"
        let mut w = rest.split_whitespace();
        if let Some(r) = w.next().and_then(|r| r.parse().ok()) {
            s.runs = s.runs.or(Some(r));
        }
        s.seconds = w.nth(2).and_then(|x| x.parse().ok());
    } else if let Some(i) = line.find("Test unit written to ") {
        s.artifacts
            .push(line[i + "Test unit written to ".len()..].trim().to_owned());
    } else if line.starts_with('#') && line.contains(" corp: ") {
        // "#1234	NEW    cov: 10 ft: 20 corp: 31/2048b ..."
        if let Some(c) = line
            .split(" corp: ")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|c| c.parse().ok())
        {
            s.corpus = Some(c);
        }
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_output() {
        let mut s = Stats::default();
        for l in [
            "#2\tINITED cov: 6608 ft: 22015 corp: 18/56Kb exec/s: 0 rss: 66Mb",
            "#158356\tDONE   cov: 7200 ft: 30000 corp: 412/300Kb lim: 9466 exec/s: 1740 rss: 300Mb",
            "Done 158356 runs in 91 second(s)",
            "stat::number_of_executed_units: 158357",
            "artifact_prefix='a/'; Test unit written to a/crash-abc",
        ] {
            read_line(l, &mut s);
        }
        assert_eq!(s.runs, Some(158357));
        assert_eq!(s.seconds, Some(91));
        assert_eq!(s.corpus, Some(412));
        assert_eq!(s.artifacts, vec!["a/crash-abc".to_owned()]);
    }
}
