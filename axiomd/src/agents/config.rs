//! `[agents]`: where agents' cgroups and state files live, and how many one user may run.
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AgentsConfig {
    /// Directory for the cgroups of agents started by axiomd (`agent-<id>` below it). Default:
    /// `axiom` in the cgroup v2 mount, wherever it is (detected).
    pub(crate) cgroup_root: Option<PathBuf>,
    /// One state file per agent (name, command, owner, start, exit), so agents keep what they
    /// are across an axiomd restart.
    pub(crate) state_dir: PathBuf,
    /// Changes to the shipped agent profiles (`agents.toml`: how each kind is typed into);
    /// skipped when it does not exist.
    pub(crate) profiles: PathBuf,
    /// How long an ended agent stays listed (with its exit code) before it is forgotten.
    pub(crate) keep_exited_secs: u64,
    /// Running agents one user may have at once (root and the admin group: no bound). The
    /// kernel's tables of tracked cgroups and connect policies are shared by every user.
    pub(crate) max_per_user: usize,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            cgroup_root: None,
            state_dir: "/run/axiom/agents".into(),
            profiles: axiom_proto::agent_profile::OVERRIDES.into(),
            keep_exited_secs: 3600,
            max_per_user: 256,
        }
    }
}
