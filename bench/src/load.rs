//! `ax-bench load`: `wrk` (a second process, on loopback) against the status and
//! list endpoints of `ax serve` at 100 connections while 100 executions run.

use crate::serve::Server;
use crate::util::{self, Args, machine, machine_md, write_results};
use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Reports what `--latency` prints, as one JSON line, from wrk's own histogram.
const LUA: &str = r#"
local paths = {}
for line in io.lines(os.getenv("AX_LOAD_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"durationUs":%d,"bytes":%d,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,"non2xx":%d,"timeouts":%d,"p50Us":%d,"p90Us":%d,"p99Us":%d,"p999Us":%d,"maxUs":%d,"meanUs":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"#;

/// How wrk runs.
struct Wrk<'a> {
    bin: &'a Path,
    dir: &'a Path,
    addr: std::net::SocketAddr,
    conns: usize,
    threads: usize,
    secs: u64,
}

fn wrk(w: &Wrk<'_>, name: &str, paths: &[String]) -> Result<Value> {
    let Wrk {
        bin: wrk,
        dir,
        addr,
        conns,
        threads,
        secs,
    } = *w;
    let script = dir.join("report.lua");
    std::fs::write(&script, LUA)?;
    let list = dir.join(format!(
        "{}.paths",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    std::fs::write(&list, paths.join("\n") + "\n")?;
    let out = Command::new(wrk)
        .args(["-t", &threads.to_string()])
        .args(["-c", &conns.to_string()])
        .args(["-d", &format!("{secs}s")])
        .args(["--timeout", "10s"])
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}{}", paths[0]))
        .env("AX_LOAD_PATHS", &list)
        .output()
        .with_context(|| format!("cannot run {}", wrk.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| anyhow!("no report from wrk: {stdout}"))?;
    let mut v: Value = serde_json::from_str(line)?;
    v["endpoint"] = json!(name);
    v["wrkText"] = json!(
        stdout
            .lines()
            .filter(|l| !l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(v)
}

fn count(server: &Server, state: &str) -> Result<usize> {
    Ok(server
        .get(&format!("/api/executions?state={state}&limit=1000"))?
        .json()?
        .as_array()
        .map(Vec::len)
        .unwrap_or(0))
}

pub fn main(args: &Args) -> Result<()> {
    let quick = args.flag("quick");
    let secs: u64 = args.num("duration-s", if quick { 5 } else { 30 })?;
    let conns: usize = args.num("connections", 100)?;
    let threads: usize = args.num("threads", 2)?;
    let n_exec: usize = args.num("executions", 100)?;
    let latency_ms: u64 = args.num("step-ms", 200)?;
    let out = util::out_dir(args)?;
    let ax = util::ax_binary(args)?;
    let wrk_bin = args.path("wrk", "wrk");
    let dir = util::work_dir(&out, "load")?;
    let m = machine();
    let wrk_version = Command::new(&wrk_bin)
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .split(" Copyright")
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .map_err(|e| anyhow!("cannot run wrk ({e}): install it with `apt-get install -y wrk`"))?;
    // Long enough that every execution is still running when the load ends.
    let steps = ((2 * secs + 20) * 1000 / latency_ms) as usize;
    let agents = format!(
        "[defaults]\nprovider = \"echo\"\n\n[providers.echo]\nkind = \"echo\"\nlatency_ms = {latency_ms}\n"
    );
    let mut server = Server::new(&ax, &dir, &agents)?;
    server.start()?;
    let yaml = crate::workflows::chain_plain(steps);
    let r = server.post("/api/workflows", &json!({"source": yaml}))?;
    let wf = r.json()?["id"].as_str().unwrap_or_default().to_owned();
    let mut ids = Vec::new();
    for _ in 0..n_exec {
        let r = server.post("/api/executions", &json!({"workflowId": wf}))?;
        if r.status != 201 {
            bail!("starting an execution: HTTP {}: {}", r.status, r.body);
        }
        ids.push(r.json()?["id"].as_str().unwrap_or_default().to_owned());
    }
    std::thread::sleep(Duration::from_secs(2));
    let running_before = count(&server, "running")?;
    eprintln!(
        "{running_before} executions of a {steps}-step chain ({latency_ms} ms steps) running; wrk for {secs} s per endpoint"
    );
    let t0 = Instant::now();
    let w = Wrk {
        bin: &wrk_bin,
        dir: &dir,
        addr: server.addr(),
        conns,
        threads,
        secs,
    };
    let list = wrk(
        &w,
        "GET /api/executions?limit=50",
        &["/api/executions?limit=50".to_owned()],
    )?;
    let running_mid = count(&server, "running")?;
    let status_paths: Vec<String> = ids.iter().map(|i| format!("/api/executions/{i}")).collect();
    let status = wrk(&w, "GET /api/executions/{id}", &status_paths)?;
    let running_after = count(&server, "running")?;
    let load_s = t0.elapsed().as_secs_f64();
    // Every execution must still finish, completed.
    let deadline = Instant::now() + Duration::from_secs(steps as u64 * latency_ms / 1000 + 120);
    let completed = loop {
        let done = count(&server, "completed")?;
        let other = count(&server, "failed")? + count(&server, "interrupted")?;
        if done + other >= n_exec || Instant::now() > deadline {
            break done;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // The same two runs on the idle server, for comparison.
    let list_idle = wrk(
        &w,
        "GET /api/executions?limit=50",
        &["/api/executions?limit=50".to_owned()],
    )?;
    let status_idle = wrk(&w, "GET /api/executions/{id}", &status_paths)?;
    let progress: u64 = {
        let db = rusqlite::Connection::open_with_flags(
            server.db(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        db.query_row(
            "SELECT COUNT(*) FROM workflow_step_executions WHERE state = 'completed'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64
    };
    server.interrupt()?;
    let errors = |v: &Value| {
        [
            "connectErrors",
            "readErrors",
            "writeErrors",
            "non2xx",
            "timeouts",
        ]
        .iter()
        .map(|k| v[k].as_u64().unwrap_or(0))
        .sum::<u64>()
    };
    let total_errors = errors(&list) + errors(&status) + errors(&list_idle) + errors(&status_idle);
    let pass = total_errors == 0 && completed == n_exec && running_before == n_exec;
    let mut md = String::new();
    let _ = writeln!(md, "### HTTP load while executions run\n");
    let _ = writeln!(md, "{}\n", machine_md(&m));
    let _ = writeln!(
        md,
        "Command: `cargo xtask load{}` ({wrk_version}; `wrk -t{threads} -c{conns} -d{secs}s --timeout 10s -s report.lua`, a second process on loopback; the Lua script only picks the path and prints wrk's own latency histogram). `ax serve` (release) on a SQLite file runs {n_exec} executions of a {steps}-step chain with {latency_ms} ms echo steps — about {} step commits a second — during both runs: {running_before} running before, {running_mid} between, {running_after} after. wrk and ax share the machine's {} cores.\n",
        if quick { " --quick" } else { "" },
        n_exec as u64 * 1000 / latency_ms,
        m["nproc"]
    );
    let _ = writeln!(
        md,
        "| endpoint | server | requests/s | p50 | p90 | p99 | p99.9 | max | errors (connect/read/write/timeout) | non-2xx | mean response |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (v, when) in [
        (&list, format!("{n_exec} executions running")),
        (&status, format!("{n_exec} executions running")),
        (&list_idle, "idle (afterwards)".to_owned()),
        (&status_idle, "idle (afterwards)".to_owned()),
    ] {
        let ms = |k: &str| format!("{:.1} ms", v[k].as_f64().unwrap_or(0.0) / 1000.0);
        let reqs = v["requests"].as_f64().unwrap_or(0.0);
        let dur = v["durationUs"].as_f64().unwrap_or(1.0) / 1e6;
        let _ = writeln!(
            md,
            "| `{}` | {when} | {:.0} | {} | {} | {} | {} | {} | {}/{}/{}/{} | {} | {} |",
            v["endpoint"].as_str().unwrap_or(""),
            reqs / dur,
            ms("p50Us"),
            ms("p90Us"),
            ms("p99Us"),
            ms("p999Us"),
            ms("maxUs"),
            v["connectErrors"],
            v["readErrors"],
            v["writeErrors"],
            v["timeouts"],
            v["non2xx"],
            util::kib(v["bytes"].as_u64().unwrap_or(0) / (reqs as u64).max(1))
        );
    }
    let _ = writeln!(
        md,
        "\nThe {n_exec} executions: {completed} completed afterwards ({progress} steps in all), none failed. Errors in all: {total_errors} (must be 0). Verdict: **{}**.",
        if pass { "pass" } else { "FAIL" }
    );
    let json = json!({
        "machine": m, "quick": quick, "wrk": wrk_version, "connections": conns, "threads": threads, "durationS": secs,
        "executions": n_exec, "steps": steps, "stepMs": latency_ms,
        "runningBefore": running_before, "runningBetween": running_mid, "runningAfter": running_after,
        "completedAfter": completed, "loadS": load_s, "results": [list, status], "idle": [list_idle, status_idle], "pass": pass,
    });
    write_results(&out, "load", &md, &json)?;
    println!("{md}");
    if !args.flag("keep") {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !pass {
        bail!("load: errors or executions that did not complete (see load.md)");
    }
    Ok(())
}
