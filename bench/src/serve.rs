//! `ax serve` as a child process: start, wait until healthy, kill -9, restart.

use crate::util::{self, Response};
use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    ax: PathBuf,
    db: PathBuf,
    agents: PathBuf,
    home: PathBuf,
    log: PathBuf,
    pub port: u16,
    child: Option<Child>,
    pub env: Vec<(String, String)>,
}

impl Server {
    /// A server on a free port, its database, agents file and log in `dir`.
    pub fn new(ax: &Path, dir: &Path, agents_toml: &str) -> Result<Server> {
        let agents = dir.join("agents.toml");
        std::fs::write(&agents, agents_toml)?;
        let home = dir.join("home");
        std::fs::create_dir_all(&home)?;
        Ok(Server {
            ax: ax.to_owned(),
            db: dir.join("ax.db"),
            agents,
            home,
            log: dir.join("serve.log"),
            port: util::free_port()?,
            child: None,
            env: Vec::new(),
        })
    }

    pub fn db(&self) -> &Path {
        &self.db
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// An `ax` command on this server's database and agents file.
    pub fn ax_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.ax);
        c.args(args)
            .arg("--db")
            .arg(&self.db)
            .arg("--agents")
            .arg(&self.agents);
        self.clean_env(&mut c);
        c
    }

    fn clean_env(&self, c: &mut Command) {
        for k in [
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "GEMINI_API_KEY",
            "ANTHROPIC_BASE_URL",
            "OPENAI_BASE_URL",
            "GEMINI_BASE_URL",
            "AX_DB",
            "AX_AGENTS",
            "AX_TOKEN",
        ] {
            c.env_remove(k);
        }
        c.env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("RUST_LOG", "warn");
        for (k, v) in &self.env {
            c.env(k, v);
        }
    }

    /// Start it and wait until `/healthz` answers; returns how long that took.
    pub fn start(&mut self) -> Result<Duration> {
        if self.child.is_some() {
            bail!("already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut c = self.ax_cmd(&["serve", "--port", &self.port.to_string()]);
        c.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let t = Instant::now();
        let child = c
            .spawn()
            .with_context(|| format!("cannot start {}", self.ax.display()))?;
        self.child = Some(child);
        loop {
            if let Ok(r) = self.get("/healthz")
                && r.status == 200
            {
                return Ok(t.elapsed());
            }
            if let Some(ch) = self.child.as_mut()
                && let Ok(Some(st)) = ch.try_wait()
            {
                self.child = None;
                bail!(
                    "ax serve exited at start ({st}); see {}",
                    self.log.display()
                );
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!(
                    "ax serve did not answer /healthz within 60 s; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGINT (graceful: running executions are paused), then wait.
    pub fn interrupt(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGINT);
            }
            let t = Instant::now();
            loop {
                if c.try_wait()?.is_some() {
                    return Ok(());
                }
                if t.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                    let _ = c.wait();
                    bail!("ax serve did not stop within 30 s of SIGINT");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn get(&self, path: &str) -> Result<Response> {
        util::http(self.addr(), "GET", path, None, Duration::from_secs(10))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Response> {
        util::http(
            self.addr(),
            "POST",
            path,
            Some(body),
            Duration::from_secs(30),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
