//! The `schemathesis` stage: a live `ax serve` (debug build, fresh database, the
//! offline echo provider, a token) tested against its own OpenAPI document by
//! schemathesis with every check, pinned in a throwaway virtualenv
//! (target/schemathesis/venv), as the LangGraph benchmark installs LangGraph.
//! Settings that are ours to choose (which statuses count as accepting valid data)
//! live in tests/schemathesis/schemathesis.toml, each with its reason.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{Ctx, Result, python_venv};
use crate::say;

/// schemathesis and its dependencies, pinned.
const REQUIREMENTS: &str = "tests/schemathesis/requirements.txt";
const CONFIG: &str = "tests/schemathesis/schemathesis.toml";
/// Fixed so that a failure reproduces; `AX_SCHEMATHESIS_SEED` picks another.
const SEED: &str = "20260510";

/// `ax serve`, stopped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// A token nobody can guess, from the kernel's random source.
fn token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `GET /healthz` over a bare socket (xtask has no HTTP client): its status code.
fn health(port: u16, token: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn start_server(ctx: &Ctx, dir: &Path, port: u16, token: &str) -> Result<Server> {
    let agents = dir.join("agents.toml");
    std::fs::write(
        &agents,
        "[defaults]\nprovider = \"echo\"\n\n[providers.echo]\nkind = \"echo\"\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", agents.display()))?;
    let log = dir.join("serve.log");
    let log_file =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let ax = ctx.target.join("debug/ax");
    let child = Command::new(&ax)
        .args(["serve", "--port", &port.to_string(), "--db"])
        .arg(dir.join("ax.db"))
        .arg("--agents")
        .arg(&agents)
        .env("AX_TOKEN", token)
        .env("HOME", dir)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("GEMINI_API_KEY")
        .env_remove("AX_ALLOWED_HOSTS")
        .env_remove("AX_CORS_ORIGINS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", ax.display()))?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(port, token) != Some(200) {
        if Instant::now() > deadline {
            return Err(format!(
                "ax serve did not answer /healthz within 30 s; its log: {}",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

/// Run the stage; a note for the report.
pub fn run(ctx: &Ctx) -> Result<String> {
    let venv = python_venv(ctx, &ctx.target.join("schemathesis/venv"), REQUIREMENTS)?;
    let mut build = ctx.cmd("cargo");
    build.args(["build", "-p", "ax-server", "--bin", "ax"]);
    build.run()?;
    let dir = ctx.target.join("schemathesis/run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let port = free_port()?;
    let token = token()?;
    let _server = start_server(ctx, &dir, port, &token)?;
    let seed = std::env::var("AX_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    let mut cmd = ctx.cmd(venv.join("schemathesis"));
    cmd.arg("--config-file")
        .arg(ctx.root.join(CONFIG))
        .arg("run")
        .arg(format!("http://127.0.0.1:{port}/api/openapi.json"))
        .args(["--checks", "all", "--seed", &seed])
        .arg("--report-dir")
        .arg(dir.join("report"))
        .args(["--report", "junit"])
        .cwd(&dir)
        .env_quiet("SCHEMATHESIS_TOKEN", &token)
        .timeout(Duration::from_secs(30 * 60));
    // The header goes in through the config file's ${SCHEMATHESIS_TOKEN}, so that
    // the echoed command line does not carry the token.
    cmd.run().map_err(|e| {
        format!(
            "{e}; the server's log is {}, the JUnit report {}",
            dir.join("serve.log").display(),
            dir.join("report").display()
        )
    })?;
    say!("schemathesis: 0 failures (seed {seed})");
    Ok(format!("0 failures, seed {seed}"))
}
