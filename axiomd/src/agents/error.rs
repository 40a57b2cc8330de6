//! Why an agent operation was refused or failed, with the code a client matches on.
use std::path::PathBuf;

use axiom_proto::wire::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    #[error("no process with pid {0}")]
    NoSuchProcess(u32),
    #[error("pid {0} exited while it was being adopted")]
    ExitedDuringAdoption(u32),
    #[error("pid {0} is a kernel thread: only user processes can be tracked")]
    KernelThread(u32),
    #[error("pid 1 (init) cannot be tracked: it would track the whole machine")]
    Init,
    #[error("pid {pid} is already tracked as agent {agent}")]
    AlreadyTracked { pid: u32, agent: u64 },
    #[error("{path} is not a cgroup v2 directory")]
    NotACgroup { path: PathBuf },
    #[error("cgroup {path} is already tracked as agent {agent}")]
    CgroupAlreadyTracked { path: PathBuf, agent: u64 },
    #[error("no agent with id {0}")]
    NoSuchAgent(u64),
    #[error("permission denied: uid {uid} may not {what}")]
    NotPermitted { uid: u32, what: String },
    #[error("cgroup {path}: {reason}")]
    Cgroup { path: PathBuf, reason: String },
    #[error("no cgroup v2 hierarchy is mounted: agents cannot get cgroups of their own")]
    NoCgroup2,
    #[error("kernel map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    /// The agent's confinement could not be put in place: it must not run.
    #[error("confinement: {0}")]
    Confinement(String),
}

impl AgentError {
    /// A stable, machine-readable name for the kind of error (clients map it to exit codes).
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            AgentError::NoSuchProcess(_) => ErrorCode::NoSuchProcess,
            AgentError::ExitedDuringAdoption(_) => ErrorCode::ExitedDuringAdoption,
            AgentError::KernelThread(_) => ErrorCode::KernelThread,
            AgentError::Init => ErrorCode::Init,
            AgentError::AlreadyTracked { .. } | AgentError::CgroupAlreadyTracked { .. } => {
                ErrorCode::AlreadyTracked
            }
            AgentError::NotACgroup { .. } => ErrorCode::NotACgroup,
            AgentError::NoSuchAgent(_) => ErrorCode::NoSuchAgent,
            AgentError::NotPermitted { .. } => ErrorCode::NotPermitted,
            AgentError::Confinement(_) => ErrorCode::Confinement,
            AgentError::Cgroup { .. } | AgentError::NoCgroup2 | AgentError::Map { .. } => {
                ErrorCode::Internal
            }
        }
    }
}
