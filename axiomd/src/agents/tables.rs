//! The kernel's tracking tables (agent id by tgid; agent by cgroup id), behind a small trait so
//! that the registry's decisions (who may track, steer and untrack what; quotas; adoption) run
//! in unit tests against tables in memory, without a kernel sensor.
#[cfg(test)]
use std::collections::BTreeMap;

use axiom_common::Tracked;

use super::AgentError;

pub(crate) trait Tables: Send {
    /// The agent a tgid carries (none: untracked).
    fn agent_of_pid(&self, pid: u32) -> Option<u64>;
    /// Marks a tgid as an agent's (0: untracked).
    fn set_pid(&mut self, pid: u32, agent: u64) -> Result<(), AgentError>;
    /// The agent a cgroup (by id) is tracked as.
    fn cgroup(&self, id: u64) -> Option<Tracked>;
    fn insert_cgroup(&mut self, id: u64, t: Tracked) -> Result<(), AgentError>;
    fn remove_cgroup(&mut self, id: u64);
    /// Every tracked cgroup.
    fn cgroups(&self) -> Vec<(u64, Tracked)>;
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> AgentError {
    move |e| AgentError::Map {
        map,
        reason: e.to_string(),
    }
}

/// The kernel's own tracking maps.
impl Tables for crate::kernel::TrackingMaps {
    fn agent_of_pid(&self, pid: u32) -> Option<u64> {
        self.tracked.get(&pid, 0).ok().filter(|a| *a != 0)
    }

    fn set_pid(&mut self, pid: u32, agent: u64) -> Result<(), AgentError> {
        self.tracked.set(pid, agent, 0).map_err(map_err("TRACKED"))
    }

    fn cgroup(&self, id: u64) -> Option<Tracked> {
        self.cgroups.get(&id, 0).ok()
    }

    fn insert_cgroup(&mut self, id: u64, t: Tracked) -> Result<(), AgentError> {
        self.cgroups
            .insert(id, t, 0)
            .map_err(map_err("TRACKED_CGROUPS"))
    }

    fn remove_cgroup(&mut self, id: u64) {
        let _ = self.cgroups.remove(&id);
    }

    fn cgroups(&self) -> Vec<(u64, Tracked)> {
        self.cgroups.iter().flatten().collect()
    }
}

/// Tables in memory, for tests of the decisions above them.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Memory {
    pub(crate) pids: BTreeMap<u32, u64>,
    pub(crate) cgroups: BTreeMap<u64, Tracked>,
}

#[cfg(test)]
impl Tables for Memory {
    fn agent_of_pid(&self, pid: u32) -> Option<u64> {
        self.pids.get(&pid).copied().filter(|a| *a != 0)
    }

    fn set_pid(&mut self, pid: u32, agent: u64) -> Result<(), AgentError> {
        self.pids.insert(pid, agent);
        Ok(())
    }

    fn cgroup(&self, id: u64) -> Option<Tracked> {
        self.cgroups.get(&id).copied()
    }

    fn insert_cgroup(&mut self, id: u64, t: Tracked) -> Result<(), AgentError> {
        self.cgroups.insert(id, t);
        Ok(())
    }

    fn remove_cgroup(&mut self, id: u64) {
        self.cgroups.remove(&id);
    }

    fn cgroups(&self) -> Vec<(u64, Tracked)> {
        self.cgroups.iter().map(|(k, v)| (*k, *v)).collect()
    }
}
