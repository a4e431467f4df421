//! First-token latency that ax adds over the provider, as users see it: a
//! loopback server streams an answer in the OpenAI Chat Completions format, and a
//! client reads its first piece of text
//!
//! - **direct**: from that server itself (the floor: loopback and parsing), and
//! - **through the API**: from a running `ax serve` (release build), as the first
//!   `step-delta` event on `GET /api/executions/{id}/events`
//!   (`Accept: text/event-stream`), the run started by `POST /api/executions`;
//! - **through the CLI**: from `ax workflow run FILE --stream` (release build, a
//!   child process on a fresh database, stdout piped), as the text on its
//!   stdout under the step's `┌ answer` header.
//!
//! The server holds its first piece until the client is ready, stamps the
//! instant it writes it, and the client stamps the instant it reads it: one
//! process, one monotonic clock. ax's share is the difference from the direct
//! path. "Ready" is: subscribed (direct, API); for the CLI, which subscribes to
//! the text before it starts the run, the request has reached the provider,
//! the CLI has printed its `▶` line (its display is about to follow the run),
//! and `--settle-ms` (default 50) have passed since both, so that the CLI
//! is idle, waiting on the provider, as it is in a real run (providers take
//! hundreds of ms to their first token). Its `┌ KEY` header cannot be the
//! signal: the CLI prints it with the step's first text.
//!
//! `ax-bench first-token [--quick] [--runs N] [--ax PATH] [--settle-ms MS]
//! [--build CMD]` → target/bench/first-token.{md,json} (`--build`: how the
//! binaries were built, for the published command); `ax-bench publish --file
//! BENCHMARKS.md --names first-token` copies a full run into BENCHMARKS.md.

use crate::serve::Server;
use crate::util::{self, Args};
use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKFLOW: &str =
    "name: first-token\nsteps:\n  - {key: answer, agent: writer, prompt: \"Say hello.\"}\n";
const LIMIT: Duration = Duration::from_secs(10);

pub fn main(args: &Args) -> Result<()> {
    let quick = args.flag("quick");
    let runs: usize = args.num("runs", if quick { 20 } else { 200 })?;
    let settle = Duration::from_millis(args.num("settle-ms", 50u64)?);
    let build = args
        .get("build")
        .unwrap_or("cargo build --release -p ax-server -p ax-bench")
        .to_owned();
    let ax = util::ax_binary(args)?;
    let out = util::out_dir(args)?;
    let dir = util::work_dir(&out, "first-token")?;
    let machine = util::machine();
    let streamer = Streamer::start()?;
    let agents = format!(
        "[defaults]\nprovider = \"fake\"\n\n[providers.fake]\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\nmodel = \"fake-stream\"\n",
        streamer.addr
    );
    let mut server = Server::new(&ax, &dir, &agents)?;
    server.start()?;
    let cli = Cli::new(&ax, &dir.join("cli"), &agents, settle)?;
    // Warm all paths (connections, SQLite pages, the model's learned quirks,
    // the binary in the page cache).
    for _ in 0..5 {
        direct(&streamer)?;
        through_ax(&server, &streamer)?;
        cli.run(&streamer)?;
    }
    let (mut d, mut a, mut c) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so that drift in the machine's load touches all alike.
    for _ in 0..runs {
        d.push(direct(&streamer)?.as_secs_f64() * 1000.0);
        a.push(through_ax(&server, &streamer)?.as_secs_f64() * 1000.0);
        c.push(cli.run(&streamer)?.as_secs_f64() * 1000.0);
    }
    let report = json!({
        "quick": quick,
        "runs": runs,
        "settleMs": settle.as_millis() as u64,
        "build": build,
        "machine": machine,
        "directMs": stat(&d),
        "throughAxMs": stat(&a),
        "throughCliMs": stat(&c),
        "addedMsP50": util::median(&a) - util::median(&d),
        "addedMsP95": util::percentile(&a, 95.0) - util::percentile(&d, 95.0),
        "cliAddedMsP50": util::median(&c) - util::median(&d),
        "cliAddedMsP95": util::percentile(&c, 95.0) - util::percentile(&d, 95.0),
    });
    let md = markdown(&report);
    print!("{md}");
    util::write_results(&out, "first-token", &md, &report)
}

fn stat(xs: &[f64]) -> Value {
    json!({
        "min": util::percentile(xs, 0.0),
        "p50": util::median(xs),
        "p95": util::percentile(xs, 95.0),
        "max": util::percentile(xs, 100.0),
    })
}

fn markdown(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let row = |name: &str, s: &Value| {
        format!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            f(&s["min"]),
            f(&s["p50"]),
            f(&s["p95"]),
            f(&s["max"])
        )
    };
    let (runs, settle) = (&r["runs"], &r["settleMs"]);
    format!(
        "### First token through `ax serve` and `ax workflow run --stream`\n\n{} Command: `{} && target/release/ax-bench first-token --runs {runs}`.\n\n{runs} runs each, interleaved. Time from the loopback provider (OpenAI format, `stream: true`) writing the first piece of text to the client reading it: directly from the provider; through a running `ax serve` as the first `step-delta` event of `GET /api/executions/{{id}}/events` (the run started by `POST /api/executions`); and through `ax workflow run FILE --stream --db FRESH --agents AGENTS` (a child process, stdout piped) as the text under its `┌ answer` header on stdout, the provider holding the piece until the request has arrived, the CLI has printed its `▶` line, and {settle} ms have passed.\n\n| path | min ms | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|\n{}{}{}\nThrough the API ax adds **{:.2} ms** at the median ({:.2} ms at p95); through the CLI ax adds **{:.2} ms** at the median ({:.2} ms at p95).\n",
        util::machine_md(&r["machine"]),
        r["build"].as_str().unwrap_or("?"),
        row("direct from the provider", &r["directMs"]),
        row(
            "through `ax serve` (`step-delta` on the SSE endpoint)",
            &r["throughAxMs"]
        ),
        row(
            "through `ax workflow run --stream` (stdout)",
            &r["throughCliMs"]
        ),
        f(&r["addedMsP50"]),
        f(&r["addedMsP95"]),
        f(&r["cliAddedMsP50"]),
        f(&r["cliAddedMsP95"]),
    )
}

/// The loopback provider: OpenAI-format SSE; holds its first piece of text
/// until `gate` opens, and reports when it wrote it on `first`.
struct Streamer {
    addr: SocketAddr,
    gate: Sender<()>,
    first: Mutex<Receiver<Instant>>,
    /// A request has arrived (its headers and role chunk are written).
    asked: Mutex<Receiver<()>>,
}

impl Streamer {
    fn start() -> Result<Streamer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (gate, gate_rx) = channel::<()>();
        let (first_tx, first) = channel::<Instant>();
        let (asked_tx, asked) = channel::<()>();
        let gate_rx = Arc::new(Mutex::new(gate_rx));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (gate_rx, first_tx) = (gate_rx.clone(), first_tx.clone());
                let asked_tx = asked_tx.clone();
                std::thread::spawn(move || {
                    if let Err(e) = answer(conn, &gate_rx, &first_tx, &asked_tx) {
                        eprintln!("first-token: the loopback provider failed: {e:#}");
                    }
                });
            }
        });
        Ok(Streamer {
            addr,
            gate,
            first: Mutex::new(first),
            asked: Mutex::new(asked),
        })
    }

    /// Forget the requests announced so far (the other paths' ones).
    fn forget_asked(&self) -> Result<()> {
        let asked = self.asked.lock().map_err(|_| anyhow!("poisoned"))?;
        while asked.try_recv().is_ok() {}
        Ok(())
    }

    /// Until a request has arrived (since [`Streamer::forget_asked`]).
    fn await_asked(&self) -> Result<()> {
        self.asked
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .recv_timeout(LIMIT)
            .context("no request reached the provider")
    }

    /// Let the held answer go, and learn when its first text was written.
    fn release(&self) -> Result<Instant> {
        self.gate
            .send(())
            .map_err(|_| anyhow!("the provider is gone"))?;
        self.first
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .recv_timeout(LIMIT)
            .context("the provider never wrote its first piece")
    }
}

fn chunk(delta: Value, finish: Value) -> String {
    let v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "fake-stream",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

fn answer(
    conn: TcpStream,
    gate: &Mutex<Receiver<()>>,
    first: &Sender<Instant>,
    asked: &Sender<()>,
) -> Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut w = conn;
    w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n")?;
    w.write_all(chunk(json!({"role": "assistant", "content": ""}), Value::Null).as_bytes())?;
    w.flush()?;
    let _ = asked.send(());
    gate.lock()
        .map_err(|_| anyhow!("poisoned"))?
        .recv_timeout(LIMIT)
        .context("nobody released the answer")?;
    let at = Instant::now();
    w.write_all(chunk(json!({"content": "Hello"}), Value::Null).as_bytes())?;
    w.flush()?;
    let _ = first.send(at);
    for piece in [", ", "world", "."] {
        w.write_all(chunk(json!({"content": piece}), Value::Null).as_bytes())?;
    }
    w.write_all(chunk(json!({}), json!("stop")).as_bytes())?;
    w.write_all(b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\ndata: [DONE]\n\n")?;
    w.flush()?;
    Ok(())
}

/// Connect, send a request, read the response head.
fn open(addr: SocketAddr, head: &str, body: &str) -> Result<BufReader<TcpStream>> {
    let mut s = TcpStream::connect_timeout(&addr, LIMIT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(LIMIT))?;
    s.write_all(
        format!(
            "{head}\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)?;
    if !status.contains(" 200 ") {
        bail!("{head}: {}", status.trim());
    }
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            return Ok(r);
        }
    }
}

/// Read lines until one starts with `prefix`; then the rest, so the exchange ends.
fn first_line(r: &mut BufReader<TcpStream>, prefix: &str) -> Result<Instant> {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!(
                "the stream ended before `{prefix}`; it said: {}",
                util::clip(&seen, 2000)
            );
        }
        if line.starts_with(prefix) {
            return Ok(Instant::now());
        }
        seen.push_str(&line);
    }
}

fn drain(mut r: BufReader<TcpStream>) {
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
}

fn direct(s: &Streamer) -> Result<Duration> {
    let body = json!({"model": "fake-stream", "stream": true, "messages": [{"role": "user", "content": "Say hello."}]}).to_string();
    let mut r = open(
        s.addr,
        "POST /v1/chat/completions HTTP/1.1\r\ncontent-type: application/json",
        &body,
    )?;
    // Past the role chunk, then released.
    first_line(&mut r, "data: ")?;
    let written = s.release()?;
    let read = first_line(&mut r, "data: ")?;
    drain(r);
    Ok(read.saturating_duration_since(written))
}

fn through_ax(server: &Server, s: &Streamer) -> Result<Duration> {
    let created = server
        .post("/api/executions", &json!({"source": WORKFLOW}))?
        .json()?;
    let id = created["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no execution id in {created}"))?
        .to_owned();
    let mut r = open(
        server.addr(),
        &format!("GET /api/executions/{id}/events HTTP/1.1\r\naccept: text/event-stream"),
        "",
    )?;
    let written = s.release()?;
    let read = first_line(&mut r, "event: step-delta")?;
    // The run ends, and with it the stream.
    drain(r);
    Ok(read.saturating_duration_since(written))
}

/// `ax workflow run FILE --stream` as a child process, each run on a fresh
/// database in `dir`.
struct Cli {
    ax: PathBuf,
    dir: PathBuf,
    flow: PathBuf,
    agents: PathBuf,
    settle: Duration,
    n: std::cell::Cell<usize>,
}

impl Cli {
    fn new(ax: &Path, dir: &Path, agents_toml: &str, settle: Duration) -> Result<Cli> {
        std::fs::create_dir_all(dir.join("home"))?;
        let (flow, agents) = (dir.join("first-token.yaml"), dir.join("agents.toml"));
        std::fs::write(&flow, WORKFLOW)?;
        std::fs::write(&agents, agents_toml)?;
        Ok(Cli {
            ax: ax.to_owned(),
            dir: dir.to_owned(),
            flow,
            agents,
            settle,
            n: std::cell::Cell::new(0),
        })
    }

    fn spawn(&self) -> Result<(Child, PathBuf)> {
        let n = self.n.get() + 1;
        self.n.set(n);
        let (db, log) = (
            self.dir.join(format!("run-{n}.db")),
            self.dir.join(format!("run-{n}.stderr")),
        );
        let mut c = Command::new(&self.ax);
        c.arg("workflow").arg("run").arg(&self.flow).arg("--stream");
        c.arg("--db").arg(&db).arg("--agents").arg(&self.agents);
        for k in [
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "GEMINI_API_KEY",
            "AX_DB",
            "AX_AGENTS",
            "AX_TOKEN",
        ] {
            c.env_remove(k);
        }
        let home = self.dir.join("home");
        c.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("RUST_LOG", "warn");
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let child = c
            .spawn()
            .with_context(|| format!("cannot start {}", self.ax.display()))?;
        Ok((child, log))
    }

    /// One run: the time from the provider writing its first piece to this
    /// process reading it from the CLI's stdout.
    fn run(&self, s: &Streamer) -> Result<Duration> {
        s.forget_asked()?;
        let (mut child, log) = self.spawn()?;
        let res = self.measure(&mut child, s);
        if res.is_err() {
            let _ = child.kill();
        }
        let status = child.wait()?;
        let took = res.with_context(|| {
            format!(
                "ax workflow run --stream ({status}); it said: {}",
                util::clip(&std::fs::read_to_string(&log).unwrap_or_default(), 2000)
            )
        })?;
        if !status.success() {
            bail!(
                "ax workflow run --stream failed ({status}); see {}",
                log.display()
            );
        }
        Ok(took)
    }

    fn measure(&self, child: &mut Child, s: &Streamer) -> Result<Duration> {
        let stdout = child.stdout.take().context("no stdout")?;
        let out = Output::follow(stdout);
        let mut seen = Vec::new();
        out.until(&mut seen, |b| after(b, "▶", "\n").is_some())?;
        s.await_asked()?;
        std::thread::sleep(self.settle);
        let written = s.release()?;
        let read = out.until(&mut seen, |b| after(b, "┌ answer", "Hello").is_some())?;
        // The rest, until the CLI closes its stdout.
        out.until(&mut seen, |_| false).ok();
        Ok(read.saturating_duration_since(written))
    }
}

/// Where `then` starts in `buf` after the first `first`, if it does.
fn after(buf: &[u8], first: &str, then: &str) -> Option<usize> {
    let text = String::from_utf8_lossy(buf);
    let at = text.find(first)? + first.len();
    text[at..].find(then).map(|i| at + i)
}

/// A child's stdout, read on a thread that stamps each read the instant it
/// returns.
struct Output(Receiver<(Instant, Vec<u8>)>);

impl Output {
    fn follow(mut stdout: ChildStdout) -> Output {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        });
        Output(rx)
    }

    /// Read into `seen` until `done(seen)`; when the read that made it so
    /// returned. An error when the output ends first or stalls.
    fn until(&self, seen: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) -> Result<Instant> {
        loop {
            let (at, bytes) = self.0.recv_timeout(LIMIT).map_err(|_| {
                anyhow!(
                    "the CLI's output ended or stalled; it printed: {}",
                    util::clip(&String::from_utf8_lossy(seen), 2000)
                )
            })?;
            seen.extend_from_slice(&bytes);
            if done(seen) {
                return Ok(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::after;

    #[test]
    fn finds_text_only_after_its_header() {
        let out = "▶ first-token — execution x (1 steps)\n  ┌ answer\nHello, world.\n";
        assert_eq!(
            after(out.as_bytes(), "┌ answer", "Hello"),
            out.find("Hello")
        );
        assert_eq!(after(b"Hello\n", "┌ answer", "Hello"), None);
        assert_eq!(after("  ┌ answer\n".as_bytes(), "┌ answer", "Hello"), None);
        assert!(after("▶ x\n".as_bytes(), "▶", "\n").is_some());
        assert!(after("▶ x".as_bytes(), "▶", "\n").is_none());
    }
}
