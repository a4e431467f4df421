//! Who drives an execution: leases, fencing tokens, process liveness, and the
//! control requests other processes leave for the owner.
//!
//! An execution is driven under a lease: the owner (`host/pid/token`), a
//! fencing token that grows with every claim, and an expiry the owner keeps
//! pushing forward. A claim succeeds when nobody alive holds the lease; every
//! write of the owner carries its token and is refused once the token is no
//! longer the execution's, so a process that lost its lease (suspended,
//! partitioned, presumed dead) cannot commit anything afterwards.
//!
//! Whether an owner is alive: a process on the same machine, in the same pid
//! and network namespace, is checked directly, pid and start time, so a
//! suspended laptop or a long `prune` does not make a live owner look dead,
//! and a killed one is replaced at once. Processes elsewhere (other hosts,
//! other network namespaces: a live process there may be cut off from the
//! database) are judged by their lease's expiry.

use super::model::ExecutionRecord;

/// How long a lease lasts without renewal, by default.
pub const DEFAULT_LEASE_MS: u64 = 10_000;

/// Who drives an execution: this host, this process, a random token.
#[derive(Debug, Clone)]
pub struct Owner {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// The process's start time (clock ticks since boot), when known.
    pub started: Option<u64>,
    /// "boot id/pid namespace": processes with the same one can check each
    /// other's pids.
    pub boot: Option<String>,
}

impl Owner {
    pub fn this_process() -> Owner {
        let pid = std::process::id();
        Owner::for_process(pid, process_start(pid))
    }

    /// An owner identity for process `pid` of this machine (tests stand in
    /// for other processes this way).
    pub fn for_process(pid: u32, started: Option<u64>) -> Owner {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "localhost".to_owned());
        let mut token = [0u8; 6];
        let _ = getrandom::fill(&mut token);
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        Owner {
            id: format!("{host}/{pid}/{token}"),
            host,
            pid,
            started,
            boot: machine_identity(),
        }
    }
}

/// A lease held on an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub execution_id: String,
    pub owner: String,
    /// The fencing token: every write under this lease carries it.
    pub token: i64,
}

/// What a claim found.
#[derive(Debug, Clone)]
pub enum Claim {
    Granted {
        lease: Lease,
        /// The owner whose lease this one replaces (it died or expired).
        previous: Option<String>,
    },
    /// A live process holds it.
    Held { owner: String },
}

/// An execution a worker claimed from the queue.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub lease: Lease,
    pub state: String,
    /// The owner whose lease ran out or who died, for a run taken over.
    pub previous: Option<String>,
}

/// This machine, pid namespace and network namespace, as
/// `boot id/pid namespace/net namespace`.
fn machine_identity() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let pid = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let net = std::fs::read_link("/proc/self/ns/net").ok()?;
    Some(format!(
        "{}/{}/{}",
        boot.trim(),
        pid.display(),
        net.display()
    ))
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`, field 22).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Is process `pid`, started at `started`, still running on this machine?
fn process_alive(pid: i64, started: Option<i64>) -> bool {
    let Ok(pid) = u32::try_from(pid) else {
        return false;
    };
    match (process_start(pid), started) {
        (Some(now), Some(then)) => now as i64 == then,
        // Running, but its start time was not recorded: trust the pid.
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Is the recorded owner of `e` alive? `pids`: whether an owner on this
/// machine (same identity) is judged by its pid.
pub fn owner_alive(e: &ExecutionRecord, me: &Owner, now: u64, pids: bool) -> bool {
    let Some(owner) = &e.owner else { return false };
    if owner == &me.id {
        return true;
    }
    if pids
        && let (Some(boot), Some(pid)) = (&e.owner_boot, e.owner_pid)
        && me.boot.as_deref() == Some(boot.as_str())
    {
        return process_alive(pid, e.owner_started);
    }
    e.lease_expires_at.is_some_and(|t| t > now)
}

/// Why an execution whose owner is gone counts as interrupted.
pub fn orphan_reason(e: &ExecutionRecord, now: u64) -> String {
    match (&e.owner, e.lease_expires_at.or(e.heartbeat_at)) {
        (Some(o), Some(t)) if t <= now => format!(
            "the process driving it ({o}) stopped; its lease ran out {} s ago",
            now.saturating_sub(t) / 1000
        ),
        (Some(o), _) => format!("the process driving it ({o}) is gone"),
        (None, _) => "no process was driving it any more".to_owned(),
    }
}

/// A control request from any process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pause,
    PauseNow,
    Resume,
    Cancel,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::PauseNow => "pause-now",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
        }
    }
    pub fn parse(s: &str) -> Option<Control> {
        Some(match s {
            "pause" => Control::Pause,
            "pause-now" => Control::PauseNow,
            "resume" => Control::Resume,
            "cancel" => Control::Cancel,
            _ => return None,
        })
    }
}

/// Word from the database that something waits for a process (PostgreSQL's
/// LISTEN/NOTIFY; see `Store::wakeups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// A control request was left for the execution's owner.
    Control(String),
    /// A message (a decision, a child's report) reached the execution's inbox.
    Inbox(String),
    /// An execution wants a driver and has none.
    Work,
    /// The wake-up connection was (re)opened: what was announced meanwhile is
    /// lost, so look at everything once.
    Resync,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_an_exited_one_is_not() {
        let me = Owner::this_process();
        assert!(me.started.is_some());
        assert!(process_alive(
            i64::from(me.pid),
            me.started.map(|s| s as i64)
        ));
        // Same pid, another start time: a reused pid.
        assert!(!process_alive(
            i64::from(me.pid),
            me.started.map(|s| s as i64 + 1)
        ));
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!process_alive(i64::from(pid), None));
    }
}
