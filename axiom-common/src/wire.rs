//! What axiomd says to its clients (axiomctl, tests, tools): JSON lines over the control socket.
//! One event model for every consumer, decoded once from the kernel records.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/axiom/axiomd.sock";

/// One observed event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// Position in this daemon's stream (monotonic per daemon run).
    pub seq: u64,
    /// Wall clock, ns since the Unix epoch (from the kernel's monotonic stamp).
    pub time_ns: u64,
    pub agent: u64,
    pub pid: u32,
    pub tgid: u32,
    /// Parent process id where known (0 otherwise).
    pub ppid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    /// Part of the payload could not be read or did not fit.
    #[serde(default)]
    pub truncated: bool,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Fork {
        child_pid: u32,
    },
    Exec {
        filename: String,
        argv: Vec<String>,
        /// Read from /proc right after the event; absent if the process was already gone.
        cwd: Option<String>,
        old_pid: u32,
    },
    Exit {
        /// Exit code, if the process called exit.
        code: Option<i32>,
        /// Fatal signal, if one ended it.
        signal: Option<i32>,
    },
    Output {
        fd: i32,
        syscall: String,
        /// Bytes the process asked to write.
        count: u64,
        /// What the fd pointed at (a path, `pipe:[…]`, `socket:[…]`, a tty), where it could be read.
        target: Option<String>,
        /// The captured bytes, UTF-8 with invalid sequences replaced.
        text: String,
        /// Bytes captured (≤ count).
        captured: u32,
    },
    File {
        op: String,
        path: String,
        path2: Option<String>,
        flags: u32,
        mode: u32,
    },
    Connect {
        family: String,
        address: String,
        port: u16,
    },
}

impl Body {
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Fork { .. } => "fork",
            Body::Exec { .. } => "exec",
            Body::Exit { .. } => "exit",
            Body::Output { .. } => "output",
            Body::File { .. } => "file",
            Body::Connect { .. } => "connect",
        }
    }
}

/// A request on the control socket, one JSON object per line.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Track every process in a cgroup v2 directory, present and future.
    TrackCgroup { path: String },
    /// Track a running process and all its descendants, present and future.
    TrackPid { pid: u32 },
    /// Stop tracking an agent's processes.
    Untrack { agent: u64 },
    /// Stream events as JSON lines; `replay` first sends the recent events kept in memory.
    Subscribe {
        #[serde(default)]
        replay: bool,
        #[serde(default)]
        agent: Option<u64>,
    },
}

/// The answer to a request (for `subscribe`, the first line, followed by events).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Status {
    pub version: String,
    pub pin_dir: String,
    /// The running programs were found pinned and reused at start-up.
    pub reused_pins: bool,
    pub startup_ms: f64,
    pub attached: Vec<String>,
    pub skipped: Vec<String>,
    pub tracked_processes: u64,
    pub tracked_cgroups: u64,
    pub events: BTreeMap<String, u64>,
    /// Every loss, by cause: the kernel's (ring full, map full, read fault) and userspace's
    /// (malformed records, slow subscribers).
    pub lost: BTreeMap<String, u64>,
}
