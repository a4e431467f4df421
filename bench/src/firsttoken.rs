//! First-token latency that ax adds over the provider, as users see it: a
//! loopback server streams an answer in the OpenAI Chat Completions format, and a
//! client reads its first piece of text
//!
//! - **direct**: from that server itself (the floor: loopback and parsing), and
//! - **through ax**: from a running `ax serve` (release build), as the first
//!   `step-delta` event on `GET /api/executions/{id}/events`
//!   (`Accept: text/event-stream`), the run started by `POST /api/executions`.
//!
//! The server holds its first piece until the client is subscribed, stamps the
//! instant it writes it, and the client stamps the instant it reads it: one
//! process, one monotonic clock. ax's share is the difference of the two.
//!
//! `ax-bench first-token [--quick] [--runs N] [--ax PATH]` →
//! target/bench/first-token.{md,json}; `ax-bench publish --file BENCHMARKS.md
//! --names first-token` copies a full run into BENCHMARKS.md.

use crate::serve::Server;
use crate::util::{self, Args};
use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKFLOW: &str =
    "name: first-token\nsteps:\n  - {key: answer, agent: writer, prompt: \"Say hello.\"}\n";
const LIMIT: Duration = Duration::from_secs(10);

pub fn main(args: &Args) -> Result<()> {
    let quick = args.flag("quick");
    let runs: usize = args.num("runs", if quick { 20 } else { 200 })?;
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
    // Warm both paths (connections, SQLite pages, the model's learned quirks).
    for _ in 0..5 {
        direct(&streamer)?;
        through_ax(&server, &streamer)?;
    }
    let mut d = Vec::with_capacity(runs);
    let mut a = Vec::with_capacity(runs);
    // Interleaved, so that drift in the machine's load touches both alike.
    for _ in 0..runs {
        d.push(direct(&streamer)?.as_secs_f64() * 1000.0);
        a.push(through_ax(&server, &streamer)?.as_secs_f64() * 1000.0);
    }
    let stat = |xs: &[f64]| {
        json!({
            "min": util::percentile(xs, 0.0),
            "p50": util::median(xs),
            "p95": util::percentile(xs, 95.0),
            "max": util::percentile(xs, 100.0),
        })
    };
    let (dm, am) = (util::median(&d), util::median(&a));
    let report = json!({
        "quick": quick,
        "runs": runs,
        "machine": machine,
        "directMs": stat(&d),
        "throughAxMs": stat(&a),
        "addedMsP50": am - dm,
        "addedMsP95": util::percentile(&a, 95.0) - util::percentile(&d, 95.0),
    });
    let row = |name: &str, s: &Value| {
        format!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            s["min"].as_f64().unwrap_or(0.0),
            s["p50"].as_f64().unwrap_or(0.0),
            s["p95"].as_f64().unwrap_or(0.0),
            s["max"].as_f64().unwrap_or(0.0)
        )
    };
    let md = format!(
        "### First token through `ax serve`\n\n{} Command: `cargo build --release -p ax-server -p ax-bench && target/release/ax-bench first-token --runs {runs}`.\n\n{runs} runs each, interleaved. Time from the loopback provider (OpenAI format, `stream: true`) writing the first piece of text to the client reading it: directly from the provider, and through a running `ax serve` as the first `step-delta` event of `GET /api/executions/{{id}}/events` (the run started by `POST /api/executions`).\n\n| path | min ms | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|\n{}{}\nax adds **{:.2} ms** at the median ({:.2} ms at p95).\n",
        util::machine_md(&report["machine"]),
        row("direct from the provider", &report["directMs"]),
        row(
            "through `ax serve` (`step-delta` on the SSE endpoint)",
            &report["throughAxMs"]
        ),
        am - dm,
        report["addedMsP95"].as_f64().unwrap_or(0.0),
    );
    print!("{md}");
    util::write_results(&out, "first-token", &md, &report)
}

/// The loopback provider: OpenAI-format SSE; holds its first piece of text
/// until `gate` opens, and reports when it wrote it on `first`.
struct Streamer {
    addr: SocketAddr,
    gate: Sender<()>,
    first: Mutex<Receiver<Instant>>,
}

impl Streamer {
    fn start() -> Result<Streamer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (gate, gate_rx) = channel::<()>();
        let (first_tx, first) = channel::<Instant>();
        let gate_rx = Arc::new(Mutex::new(gate_rx));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (gate_rx, first_tx) = (gate_rx.clone(), first_tx.clone());
                std::thread::spawn(move || {
                    if let Err(e) = answer(conn, &gate_rx, &first_tx) {
                        eprintln!("first-token: the loopback provider failed: {e:#}");
                    }
                });
            }
        });
        Ok(Streamer {
            addr,
            gate,
            first: Mutex::new(first),
        })
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

fn answer(conn: TcpStream, gate: &Mutex<Receiver<()>>, first: &Sender<Instant>) -> Result<()> {
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
