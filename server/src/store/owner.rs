//! Who drives an execution, and the control requests other processes leave for it.

use super::model::ExecutionRecord;

/// Who drives an execution: this host, this process, a random token.
#[derive(Debug, Clone)]
pub struct Owner {
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl Owner {
    pub fn this_process() -> Owner {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "localhost".to_owned());
        let pid = std::process::id();
        let mut token = [0u8; 6];
        let _ = getrandom::fill(&mut token);
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        Owner {
            id: format!("{host}/{pid}/{token}"),
            host,
            pid,
        }
    }
}

/// Heartbeats older than this mean the owner is gone.
pub const HEARTBEAT_STALE_MS: u64 = 5_000;

/// Is the recorded owner of `e` alive? Same host: its process must exist and its
/// heartbeat be fresh. Other hosts: a fresh heartbeat.
pub fn owner_alive(e: &ExecutionRecord, me: &Owner, now: u64) -> bool {
    let Some(owner) = &e.owner else { return false };
    if owner == &me.id {
        return true;
    }
    let fresh = e
        .heartbeat_at
        .is_some_and(|h| now.saturating_sub(h) < HEARTBEAT_STALE_MS);
    if e.owner_host.as_deref() == Some(me.host.as_str()) {
        let pid_alive = e.owner_pid.is_some_and(|pid| {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
                || !std::path::Path::new("/proc/self").exists()
        });
        return pid_alive && fresh;
    }
    fresh
}

/// Take ownership if nobody alive holds it. Returns false if another live process owns it.
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

/// Why an execution whose owner is gone counts as interrupted.
pub fn orphan_reason(e: &ExecutionRecord, now: u64) -> String {
    match (&e.owner, e.heartbeat_at) {
        (Some(o), Some(h)) => format!(
            "the process driving it ({o}) stopped; its last heartbeat was {} s ago",
            now.saturating_sub(h) / 1000
        ),
        (Some(o), None) => format!("the process driving it ({o}) stopped"),
        (None, _) => "no process was driving it any more".to_owned(),
    }
}
