//! A throwaway PostgreSQL server for tests and benchmarks: Debian's
//! `postgresql` package, a cluster made by `initdb` in a temporary directory,
//! listening on a free port of 127.0.0.1 only, stopped and removed afterwards.
//! No Docker. PostgreSQL refuses to run as root, so under root the cluster
//! belongs to the `postgres` system user (the package creates it) and its
//! commands run through `runuser`.
//!
//! `cargo xtask pg` starts one and waits (Enter stops it); `cargo xtask pg --
//! CMD…` runs CMD with `AX_TEST_PG` set to its URL, then stops it. The test
//! stage that needs it (`native`) gets one the same way.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::run::{Ctx, Report, Result, step};
use crate::say;

pub const PACKAGES: &[&str] = &["postgresql"];
/// What the partition test needs besides: `ip netns` and veth pairs.
pub const NET_PACKAGES: &[&str] = &["iproute2"];
/// The variable that gives tests the server's URL.
pub const URL_VAR: &str = "AX_TEST_PG";
/// Set for test runs that must not skip the PostgreSQL variants.
pub const REQUIRE_VAR: &str = "AX_REQUIRE_PG";
/// The directories of clusters this command made start with this.
const DIR_PREFIX: &str = "ax-pg-";

/// How the cluster is tuned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As PostgreSQL ships (fsync on): benchmarks and anything measured.
    Durable,
    /// `fsync=off`: test runs. A killed server process loses nothing (the OS
    /// still has every write); only a machine crash would, and the cluster is
    /// thrown away after the run anyway.
    Fast,
}

/// A running cluster; stopped and removed when dropped.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Run the server's commands as this user (under root).
    user: Option<String>,
}

impl Cluster {
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Make and start a new cluster.
    pub fn start(ctx: &Ctx, mode: Mode) -> Result<Cluster> {
        remove_stale(ctx);
        let bin = find_bin_dir()?;
        let user = ctx.is_root.then(|| "postgres".to_owned());
        if user.is_some() && ctx.which("runuser").is_none() {
            return Err(
                "running as root, and PostgreSQL refuses to: `runuser` (util-linux) is needed to run it as the postgres user"
                    .into(),
            );
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Who made it: a later run removes clusters whose maker is gone.
        std::fs::write(dir.join("xtask.pid"), std::process::id().to_string())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let cluster = Cluster {
            dir,
            bin,
            port: free_port()?,
            user,
        };
        if let Some(u) = &cluster.user {
            let mut chown = ctx.cmd("chown");
            chown.args(["-R", &format!("{u}:{u}")]).arg(&cluster.dir);
            chown.stdout().map_err(|e| {
                format!("{e} (is the `postgresql` package installed? it creates the `{u}` user)")
            })?;
        }
        let data = cluster.dir.join("data");
        let mut initdb = cluster.pg_cmd(ctx, "initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ]);
        if mode == Mode::Fast {
            initdb.arg("--no-sync");
        }
        initdb.timeout(Duration::from_secs(120));
        initdb.stdout()?;
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=128MB",
            cluster.port,
            cluster.dir.display()
        );
        if mode == Mode::Fast {
            options.push_str(" -c fsync=off -c full_page_writes=off");
        }
        let mut start = cluster.pg_cmd(ctx, "pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(cluster.dir.join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .timeout(Duration::from_secs(90));
        if let Err(e) = start.stdout() {
            let log = std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(format!(
                "{e}; the server's log ends with: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        Ok(cluster)
    }

    /// A PostgreSQL program of the cluster's version, as the cluster's user.
    fn pg_cmd(&self, ctx: &Ctx, program: &str) -> crate::run::Cmd {
        let path = self.bin.join(program);
        match &self.user {
            Some(u) => {
                let mut c = ctx.cmd("runuser");
                c.args(["-u", u, "--"]).arg(path);
                c
            }
            None => ctx.cmd(path),
        }
    }

    /// Stop the server (fast shutdown) and remove its files.
    fn stop(&self, ctx: &Ctx) {
        let mut stop = self.pg_cmd(ctx, "pg_ctl");
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .timeout(Duration::from_secs(60));
        if let Err(e) = stop.stdout() {
            say!("could not stop the test PostgreSQL server cleanly: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Holds a cluster and stops it when dropped (also when a stage fails).
pub struct Running<'c> {
    pub cluster: Cluster,
    ctx: &'c Ctx,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.cluster.stop(self.ctx);
    }
}

/// Start a cluster that lives as long as the returned guard.
pub fn running(ctx: &Ctx, mode: Mode) -> Result<Running<'_>> {
    let cluster = Cluster::start(ctx, mode)?;
    say!(
        "PostgreSQL test server at {} (data in {})",
        cluster.url(),
        cluster.dir.display()
    );
    Ok(Running { cluster, ctx })
}

/// Install Debian's `postgresql` when no server binaries are found, and
/// `iproute2` when there is no `ip` (the partition test's namespaces).
pub fn ensure_installed(ctx: &Ctx, report: &mut Report) -> Result<()> {
    step(report, "setup/postgresql", || {
        let net = match ctx.which("ip") {
            Some(ip) => format!("found {}", ip.display()),
            None => crate::setup::ensure_packages(ctx, NET_PACKAGES)?,
        };
        if let Ok(bin) = find_bin_dir() {
            return Ok(((), format!("found {}; {net}", bin.display())));
        }
        let note = crate::setup::ensure_packages(ctx, PACKAGES)?;
        let bin = find_bin_dir()?;
        Ok(((), format!("{note}; {}; {net}", bin.display())))
    })
}

/// `cargo xtask pg [-- CMD…]`.
pub fn command(ctx: &Ctx, args: &[String], report: &mut Report) -> Result<std::process::ExitCode> {
    let mut mode = Mode::Durable;
    let mut rest: &[String] = &[];
    for (i, a) in args.iter().enumerate() {
        match a.as_str() {
            "--fast" => mode = Mode::Fast,
            "--" => {
                rest = &args[i + 1..];
                break;
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` for `cargo xtask pg`: try `cargo xtask help`"
                ));
            }
        }
    }
    ensure_installed(ctx, report)?;
    let pg = running(ctx, mode)?;
    let url = pg.cluster.url();
    let Some((program, program_args)) = rest.split_first() else {
        say!("export {URL_VAR}={url}");
        say!("press Enter to stop the server and remove its data");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let mut cmd = ctx.cmd(program);
    cmd.args(program_args).env(URL_VAR, &url);
    match cmd.outcome()? {
        crate::run::Outcome::Exited(st) if st.success() => Ok(std::process::ExitCode::SUCCESS),
        crate::run::Outcome::Exited(st) => Ok(std::process::ExitCode::from(
            st.code().map_or(1, |c| c.clamp(1, 255) as u8),
        )),
        crate::run::Outcome::TimedOut(_) => Err("timed out".into()),
    }
}

/// The newest installed server version's bin directory.
fn find_bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or_else(|| {
        "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run `cargo xtask pg` or `apt-get install -y postgresql`".into()
    })
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

/// Stop and remove clusters left by xtask runs that are gone (killed, Ctrl-C).
fn remove_stale(ctx: &Ctx) {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in dir.flatten() {
        if !e.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let maker = std::fs::read_to_string(e.path().join("xtask.pid")).unwrap_or_default();
        let alive = maker
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if alive {
            continue;
        }
        let running = e.path().join("data/postmaster.pid").exists();
        if let (true, Ok(bin)) = (running, find_bin_dir()) {
            let stale = Cluster {
                dir: e.path(),
                bin,
                port: 0,
                user: ctx.is_root.then(|| "postgres".to_owned()),
            };
            say!(
                "removing a test PostgreSQL cluster left behind: {}",
                e.path().display()
            );
            stale.stop(ctx);
        } else {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
