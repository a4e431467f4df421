//! Child processes: inherited stdio, timeouts by polling, clean environments, timing.
//!
//! Every command goes through [`Cmd`], so that each one is echoed before it runs, gets the
//! same PATH (with `~/.cargo/bin` first) and loses the variables `cargo run` set for xtask
//! itself, and fails with one line that names the command.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Every error is one line for the user: what failed, and how to fix or rerun it.
pub type Result<T, E = String> = std::result::Result<T, E>;

/// Print a progress line (stdout, so it interleaves with the children's output).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        println!("[xtask] {}", format_args!($($arg)*));
    }};
}

/// Facts about this checkout and machine, shared by every command.
pub struct Ctx {
    /// The workspace root (holds the root Cargo.toml).
    pub root: PathBuf,
    /// The workspace's target directory.
    pub target: PathBuf,
    /// `$CARGO_HOME/bin`, where `cargo install` puts tools.
    pub cargo_bin: PathBuf,
    /// PATH for children: `cargo_bin` first, so rustup's proxies win over /usr/bin/cargo.
    path: OsString,
    /// LD_LIBRARY_PATH for children, without what `cargo run` added for xtask.
    ld_library_path: Option<OsString>,
    /// Variables that `cargo run` (or rustup's proxy) set for xtask only.
    run_vars: Vec<OsString>,
    /// Whether this process runs as root (else privileged steps go through sudo).
    pub is_root: bool,
    /// `apt-get update` runs at most once per xtask run.
    pub apt_updated: std::cell::Cell<bool>,
}

impl Ctx {
    pub fn new() -> Result<Ctx> {
        let root = match std::env::var_os("CARGO_MANIFEST_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        };
        let root = root
            .parent()
            .ok_or("cannot find the workspace root above xtask/")?
            .to_path_buf();
        if !root.join("Cargo.toml").is_file() {
            return Err(format!(
                "no Cargo.toml at {}: run xtask as `cargo xtask` inside the ax checkout",
                root.display()
            ));
        }
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => root.join(dir),
            _ => root.join("target"),
        };
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".cargo")))
            .ok_or("neither CARGO_HOME nor HOME is set")?;
        let cargo_bin = cargo_home.join("bin");

        let old_path: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        let mut path = vec![cargo_bin.clone()];
        path.extend(old_path.into_iter().filter(|p| *p != cargo_bin));
        let path = std::env::join_paths(path).map_err(|e| format!("bad PATH: {e}"))?;

        // `cargo run` prepends target/debug, target/debug/deps and the toolchain's own lib
        // dirs; children (Debian's cargo above all) must not inherit those.
        let rustup_home = std::env::var_os("RUSTUP_HOME").map(PathBuf::from);
        let ld_library_path = std::env::var_os("LD_LIBRARY_PATH").and_then(|v| {
            let kept: Vec<PathBuf> = std::env::split_paths(&v)
                .filter(|p| !p.starts_with(&target) && !p.starts_with(root.join("target")))
                .filter(|p| match &rustup_home {
                    Some(rh) => !p.starts_with(rh.join("toolchains")),
                    None => !p.to_string_lossy().contains("/.rustup/toolchains/"),
                })
                .collect();
            if kept.is_empty() {
                None
            } else {
                std::env::join_paths(kept).ok()
            }
        });

        let run_vars = std::env::vars_os()
            .map(|(k, _)| k)
            .filter(|k| is_cargo_run_var(&k.to_string_lossy()))
            .collect();

        Ok(Ctx {
            root,
            target,
            cargo_bin,
            path,
            ld_library_path,
            run_vars,
            is_root: is_root(),
            apt_updated: std::cell::Cell::new(false),
        })
    }

    /// A command with the standard environment, run from the workspace root.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Cmd {
        let mut cmd = Cmd::new(program);
        cmd.cwd = Some(self.root.clone());
        for k in &self.run_vars {
            cmd.hidden_env.push((k.clone(), None));
        }
        cmd.hidden_env
            .push(("PATH".into(), Some(self.path.clone())));
        cmd.hidden_env
            .push(("LD_LIBRARY_PATH".into(), self.ld_library_path.clone()));
        cmd
    }

    /// A command with a cleaned environment: no rustup or cargo variables (but for the
    /// network and registry ones), no `~/.cargo/bin` or rustup toolchain on PATH. For
    /// running Debian's /usr/bin/cargo with Debian's rustc, whatever invoked xtask.
    pub fn clean_cmd(&self, program: impl AsRef<OsStr>) -> Cmd {
        let mut cmd = self.cmd(program);
        for (k, _) in std::env::vars_os() {
            if is_toolchain_var(&k.to_string_lossy()) {
                cmd.hidden_env.push((k, None));
            }
        }
        let path: Vec<PathBuf> = std::env::split_paths(&self.path)
            .filter(|p| *p != self.cargo_bin && !p.to_string_lossy().contains(".rustup"))
            .collect();
        let path = std::env::join_paths(path).unwrap_or_default();
        cmd.hidden_env.push(("PATH".into(), Some(path)));
        cmd
    }

    /// A command run as root: directly when xtask is root, else through sudo.
    pub fn root_cmd(&self, program: &str) -> Result<Cmd> {
        if self.is_root {
            return Ok(self.cmd(program));
        }
        if find_in_path(&self.path, "sudo").is_none() {
            return Err(format!(
                "`{program}` needs root and sudo is not installed: run `cargo xtask setup` as root"
            ));
        }
        let mut cmd = self.cmd("sudo");
        cmd.args([program]);
        Ok(cmd)
    }

    /// The full path of `name` on the children's PATH.
    pub fn which(&self, name: &str) -> Option<PathBuf> {
        find_in_path(&self.path, name)
    }
}

/// Variables `cargo run` or rustup's proxy set for the xtask process itself.
fn is_cargo_run_var(k: &str) -> bool {
    matches!(
        k,
        "CARGO"
            | "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "RUSTUP_TOOLCHAIN_SOURCE"
    ) || k.starts_with("CARGO_PKG_")
}

/// Variables that select or configure a Rust toolchain or build (dropped by `clean_cmd`).
fn is_toolchain_var(k: &str) -> bool {
    const KEEP: &[&str] = &["CARGO_HOME", "RUST_BACKTRACE", "RUST_LOG"];
    const KEEP_PREFIX: &[&str] = &[
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_SOURCE_",
        "CARGO_TERM_",
    ];
    if KEEP.contains(&k) || KEEP_PREFIX.iter().any(|p| k.starts_with(p)) {
        return false;
    }
    k.starts_with("CARGO") || k.starts_with("RUST")
}

fn is_root() -> bool {
    // Effective uid is the second number of the `Uid:` line.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("Uid:"))
    {
        return line.split_whitespace().nth(2) == Some("0");
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn find_in_path(path: &OsStr, name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A command to run, that knows how to print itself.
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    /// Variables worth showing in the echoed command line (set by the caller).
    shown_env: Vec<(OsString, Option<OsString>)>,
    /// Plumbing variables (PATH, removals), not echoed.
    hidden_env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    timeout: Option<Duration>,
}

/// How a finished command ended.
pub enum Outcome {
    Exited(ExitStatus),
    TimedOut(Duration),
}

/// The captured output of a finished command.
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Cmd {
    fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            shown_env: Vec::new(),
            hidden_env: Vec::new(),
            cwd: None,
            timeout: None,
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Cmd {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Set a variable (shown when the command is echoed).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Cmd {
        self.shown_env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Set a variable without echoing it (plumbing, not part of what to rerun).
    pub fn env_quiet(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Cmd {
        self.hidden_env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Cmd {
        self.hidden_env.push((key.as_ref().to_owned(), None));
        self
    }

    pub fn cwd(&mut self, dir: impl AsRef<Path>) -> &mut Cmd {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    pub fn timeout(&mut self, timeout: Duration) -> &mut Cmd {
        self.timeout = Some(timeout);
        self
    }

    /// The command as a shell line: `VAR=value program args…`.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.shown_env {
            if let Some(v) = v {
                let _ = write!(s, "{}={} ", k.to_string_lossy(), quote(v));
            }
        }
        s.push_str(&quote(&self.program));
        for a in &self.args {
            s.push(' ');
            s.push_str(&quote(a));
        }
        s
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in self.hidden_env.iter().chain(&self.shown_env) {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(dir) = &self.cwd {
            c.current_dir(dir);
        }
        c
    }

    fn spawn(&self, mut c: Command) -> Result<Child> {
        c.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                format!(
                    "`{}` not found: run `cargo xtask setup` to install it",
                    self.program.to_string_lossy()
                )
            } else {
                format!("could not start `{}`: {e}", self.display())
            }
        })
    }

    /// Run with inherited stdio (echoing the command first); how it ended.
    pub fn outcome(&self) -> Result<Outcome> {
        say!("$ {}", self.display());
        let mut child = self.spawn(self.command())?;
        wait(&mut child, self.timeout).map_err(|e| format!("waiting for `{}`: {e}", self.display()))
    }

    /// Run with inherited stdio; an error line unless it exits with 0.
    pub fn run(&self) -> Result<()> {
        match self.outcome()? {
            Outcome::Exited(st) if st.success() => Ok(()),
            Outcome::Exited(st) => Err(format!("`{}` failed ({st})", self.display())),
            Outcome::TimedOut(t) => Err(format!(
                "`{}` was killed after {}s without finishing",
                self.display(),
                t.as_secs()
            )),
        }
    }

    /// Run silently, capturing output (60 s unless a timeout was set).
    pub fn capture(&self) -> Result<Captured> {
        let mut c = self.command();
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.spawn(c)?;
        let out = child.stdout.take().map(reader);
        let err = child.stderr.take().map(reader);
        let timeout = self.timeout.unwrap_or(Duration::from_secs(60));
        let outcome =
            wait(&mut child, Some(timeout)).map_err(|e| format!("`{}`: {e}", self.display()))?;
        let stdout = out
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = err
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        match outcome {
            Outcome::Exited(status) => Ok(Captured {
                status,
                stdout,
                stderr,
            }),
            Outcome::TimedOut(t) => Err(format!(
                "`{}` was killed after {}s without finishing",
                self.display(),
                t.as_secs()
            )),
        }
    }

    /// Captured stdout of a command that must succeed.
    pub fn stdout(&self) -> Result<String> {
        let c = self.capture()?;
        if c.status.success() {
            Ok(c.stdout)
        } else {
            let why = c.stderr.lines().rev().find(|l| !l.trim().is_empty());
            Err(format!(
                "`{}` failed ({}){}",
                self.display(),
                c.status,
                why.map(|w| format!(": {}", w.trim())).unwrap_or_default()
            ))
        }
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Wait for a child, polling; past the timeout, kill it and all its descendants.
fn wait(child: &mut Child, timeout: Option<Duration>) -> io::Result<Outcome> {
    let Some(timeout) = timeout else {
        return child.wait().map(Outcome::Exited);
    };
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Outcome::Exited(st));
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            kill_tree(child);
            return Ok(Outcome::TimedOut(timeout));
        }
        let step = if elapsed < Duration::from_secs(2) {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(200)
        };
        thread::sleep(step.min(timeout - elapsed));
    }
}

/// Kill a child and everything it started (found through /proc), then reap it.
fn kill_tree(child: &mut Child) {
    let mut pids = descendants(child.id());
    pids.retain(|&p| p != child.id());
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// All processes below `root`, from each /proc/<pid>/stat's parent pid.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    let mut out = Vec::new();
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

/// Quote for a shell line, only when needed.
fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Durations as people read them: 0.04s, 12.3s, 2m05s.
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2}s")
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// What happened to one timed step.
pub enum Status {
    Ok(String),
    Skipped(String),
    Failed(String),
}

/// The timed steps of one xtask run, for the summary at the end.
#[derive(Default)]
pub struct Report {
    rows: Vec<(String, Duration, Status)>,
}

impl Report {
    pub fn add(&mut self, name: impl Into<String>, took: Duration, status: Status) {
        self.rows.push((name.into(), took, status));
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn print(&self, title: &str, total: Duration) {
        if self.is_empty() {
            return;
        }
        let width = self
            .rows
            .iter()
            .map(|r| r.0.len())
            .max()
            .unwrap_or(0)
            .max(5);
        say!("{title}:");
        for (name, took, status) in &self.rows {
            let (word, note) = match status {
                Status::Ok(n) => ("ok", n),
                Status::Skipped(n) => ("skipped", n),
                Status::Failed(n) => ("FAILED", n),
            };
            let note = if note.is_empty() {
                String::new()
            } else {
                format!("  {note}")
            };
            say!("  {name:<width$} {:>8}  {word}{note}", secs(*took));
        }
        say!("  {:<width$} {:>8}", "total", secs(total));
    }
}

/// Run one timed step: prints its outcome and time on one line, records it.
pub fn step<T>(
    report: &mut Report,
    name: &str,
    f: impl FnOnce() -> Result<(T, String)>,
) -> Result<T> {
    let start = Instant::now();
    let res = f();
    let took = start.elapsed();
    match res {
        Ok((value, note)) => {
            say!("{name}: {note} ({})", secs(took));
            report.add(name, took, Status::Ok(note));
            Ok(value)
        }
        Err(e) => {
            report.add(name, took, Status::Failed(String::new()));
            Err(format!("{name}: {e}"))
        }
    }
}

/// A throwaway Python virtualenv in `dir` with the pinned packages of
/// `requirements` (relative to the root), created or refreshed when that file
/// changed; returns its `bin` folder.
pub fn python_venv(ctx: &Ctx, dir: &Path, requirements: &str) -> Result<PathBuf> {
    let bin = dir.join("bin");
    let wanted = std::fs::read_to_string(ctx.root.join(requirements))
        .map_err(|e| format!("cannot read {requirements}: {e}"))?;
    let stamp = dir.join("ax-requirements.txt");
    if bin.join("python").is_file()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted)
    {
        say!("virtualenv up to date: {}", dir.display());
        return Ok(bin);
    }
    let py = ["python3.11", "python3"]
        .iter()
        .find(|p| ctx.which(p).is_some())
        .ok_or("python3 not found: install Python 3.11 (with venv and pip)")?;
    let mut cmd = ctx.cmd(py);
    cmd.args(["-m", "venv", "--clear"]).arg(dir);
    cmd.run()?;
    let mut cmd = ctx.cmd(bin.join("python"));
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-r",
    ])
    .arg(ctx.root.join(requirements));
    cmd.run()?;
    std::fs::write(&stamp, wanted).map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(OsStr::new("wasm-pack")), "wasm-pack");
        assert_eq!(quote(OsStr::new("-D warnings")), "'-D warnings'");
        assert_eq!(quote(OsStr::new("it's")), r"'it'\''s'");
    }

    #[test]
    fn durations() {
        assert_eq!(secs(Duration::from_millis(40)), "0.04s");
        assert_eq!(secs(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(secs(Duration::from_secs(125)), "2m05s");
    }

    #[test]
    fn toolchain_vars() {
        assert!(is_toolchain_var("RUSTUP_TOOLCHAIN"));
        assert!(is_toolchain_var("RUSTC"));
        assert!(is_toolchain_var("CARGO_TARGET_DIR"));
        assert!(is_toolchain_var("CARGO"));
        assert!(!is_toolchain_var("CARGO_HOME"));
        assert!(!is_toolchain_var("CARGO_HTTP_PROXY"));
        assert!(!is_toolchain_var("RUST_BACKTRACE"));
        assert!(is_cargo_run_var("CARGO_PKG_NAME"));
        assert!(!is_cargo_run_var("CARGO_HOME"));
    }

    #[test]
    fn timeout_kills_the_child() {
        let mut c = Cmd::new("sleep");
        c.arg("5").timeout(Duration::from_millis(200));
        let start = Instant::now();
        assert!(matches!(c.outcome(), Ok(Outcome::TimedOut(_))));
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
