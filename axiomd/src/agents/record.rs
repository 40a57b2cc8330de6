//! What axiomd records of an agent: where it came from, how it was started, how it ended.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Source {
    Cgroup {
        path: PathBuf,
        ids: Vec<u64>,
    },
    Process {
        pid: u32,
    },
    /// Found in the kernel maps at start-up with no state file (tracked by an earlier run).
    Restored,
}

/// How an agent's root process ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitStatus {
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
}

/// What axiomd knows of an agent beyond the kernel maps; saved as its state file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Agent {
    pub(crate) id: u64,
    pub(crate) owner_uid: u32,
    pub(crate) source: Source,
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// The root process (0: none, e.g. a tracked cgroup).
    #[serde(default)]
    pub(crate) leader: u32,
    #[serde(default)]
    pub(crate) command: Vec<String>,
    #[serde(default)]
    pub(crate) workspace: Option<String>,
    #[serde(default)]
    pub(crate) profile: Option<String>,
    /// Started or adopted, ns since the Unix epoch.
    #[serde(default)]
    pub(crate) started_ns: u64,
    #[serde(default)]
    pub(crate) exit: Option<ExitStatus>,
    /// When axiomd saw it exit (for retention), ns since the Unix epoch.
    #[serde(default)]
    pub(crate) exited_ns: u64,
    /// cgroup v1 groups holding its limits on a hybrid host (removed when it is forgotten).
    #[serde(default)]
    pub(crate) limit_groups: Vec<PathBuf>,
    /// Limits applied (`pids.max=64 (cgroup v1)`) and those that could not be.
    #[serde(default)]
    pub(crate) limits_applied: Vec<String>,
    #[serde(default)]
    pub(crate) limits_not_applied: Vec<String>,
    /// Its profile in `agents.toml` (how to type into it; its own state files).
    #[serde(default)]
    pub(crate) kind: Option<String>,
    /// It calls axiomd from Claude Code hooks (`axiomctl hook`).
    #[serde(default)]
    pub(crate) hooks: bool,
    /// The agent's own id for its conversation (`session_id` in its hook calls): what its
    /// transcripts and `--resume` are keyed by.
    #[serde(default)]
    pub(crate) conversation: Option<String>,
    /// The model it says it talks to (Claude Code's `SessionStart`), as its hooks report it.
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// Its own terminal, when axiomd holds it (`axiomctl run`).
    #[serde(default)]
    pub(crate) terminal: Option<axiom_proto::wire::Terminal>,
}

/// What a client says about an agent it starts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Launch {
    pub(crate) name: Option<String>,
    pub(crate) command: Vec<String>,
    pub(crate) workspace: Option<String>,
    pub(crate) profile: Option<String>,
    /// Limits for its cgroup (a confinement profile's).
    pub(crate) limits: Option<axiom_proto::confine::Limits>,
    /// Where it may connect.
    pub(crate) net: Option<axiom_proto::confine::NetRules>,
    pub(crate) kind: Option<String>,
    pub(crate) hooks: bool,
    /// Its own terminal (`axiomctl run` hands axiomd the master).
    pub(crate) terminal: Option<axiom_proto::wire::Terminal>,
}

impl Agent {
    pub(super) fn new(id: u64, owner_uid: u32, source: Source, leader: u32) -> Agent {
        Agent {
            id,
            owner_uid,
            source,
            name: None,
            leader,
            command: Vec::new(),
            workspace: None,
            profile: None,
            started_ns: now_ns(),
            exit: None,
            exited_ns: 0,
            limit_groups: Vec::new(),
            limits_applied: Vec::new(),
            limits_not_applied: Vec::new(),
            kind: None,
            hooks: false,
            conversation: None,
            model: None,
            terminal: None,
        }
    }
}

/// An event about an agent as a whole (not from the kernel): stamped now, attributed to its root.
pub(crate) fn notice(a: &Agent, body: axiom_proto::wire::Body) -> axiom_proto::wire::Event {
    axiom_proto::wire::Event {
        seq: 0,
        time_ns: crate::agents::now_ns(),
        agent: a.id,
        pid: a.leader,
        tgid: a.leader,
        ppid: 0,
        uid: a.owner_uid,
        cgroup_id: 0,
        comm: a.name.clone().unwrap_or_default(),
        truncated: false,
        body,
    }
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
