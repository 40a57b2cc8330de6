//! Agents: what is tracked, and who may track it.
//!
//! An agent is an id the kernel copies into every record of its processes. It is either a cgroup
//! v2 directory (every process in it, present and future) or a process tree adopted by pid (the
//! process and its descendants, present and future). Tracking state lives in the kernel maps, so
//! it survives an axiomd restart: the registry is rebuilt from those maps at start-up.
pub mod cgroup;
pub mod procfs;

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use axiom_common::Tracked;
use aya::maps::{Array, HashMap, MapData};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
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
}

impl AgentError {
    /// A stable, machine-readable name for the kind of error (clients map it to exit codes).
    pub fn code(&self) -> &'static str {
        match self {
            AgentError::NoSuchProcess(_) => "no_such_process",
            AgentError::ExitedDuringAdoption(_) => "exited_during_adoption",
            AgentError::KernelThread(_) => "kernel_thread",
            AgentError::Init => "init",
            AgentError::AlreadyTracked { .. } | AgentError::CgroupAlreadyTracked { .. } => {
                "already_tracked"
            }
            AgentError::NotACgroup { .. } => "not_a_cgroup",
            AgentError::NoSuchAgent(_) => "no_such_agent",
            AgentError::NotPermitted { .. } => "not_permitted",
            AgentError::Cgroup { .. } | AgentError::NoCgroup2 | AgentError::Map { .. } => {
                "internal"
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum Source {
    Cgroup {
        path: PathBuf,
        ids: Vec<u64>,
    },
    Process {
        pid: u32,
    },
    /// Found in the kernel maps at start-up (tracked by an earlier run).
    Restored,
}

#[derive(Clone, Debug)]
pub struct Agent {
    pub id: u64,
    pub owner_uid: u32,
    pub source: Source,
    pub name: Option<String>,
}

/// The kernel tracking maps and the agents they describe; every change goes through here.
pub struct Control {
    /// Agent id by tgid (0: untracked).
    pub tracked: Array<MapData, u64>,
    pub tracked_cgroups: HashMap<MapData, u64, Tracked>,
    agents: BTreeMap<u64, Agent>,
    next: u64,
    /// Where agents started by axiomd get their cgroups (`agent-<id>` below it).
    cgroup_root: Option<PathBuf>,
}

/// An intervention on a whole agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    /// SIGTERM to every process: ask the agent to end.
    Stop,
    Freeze,
    Thaw,
    Kill,
}

/// What `agents` reports of one agent.
#[derive(Clone, Debug)]
pub struct AgentView {
    pub agent: Agent,
    pub cgroup: Option<PathBuf>,
    pub processes: Vec<u32>,
    pub frozen: bool,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> AgentError {
    move |e| AgentError::Map {
        map,
        reason: e.to_string(),
    }
}

impl Control {
    /// Rebuilds the registry from what the kernel is tracking (after a restart, earlier agents are
    /// still there and new ids must not collide with theirs).
    pub fn restore(
        tracked: Array<MapData, u64>,
        tracked_cgroups: HashMap<MapData, u64, Tracked>,
    ) -> Control {
        let mut agents = BTreeMap::new();
        let mut max = 0;
        // The array is indexed by pid: look up the live pids rather than scan pid_max slots.
        let found: Vec<u64> = procfs::pids()
            .into_iter()
            .filter_map(|p| tracked.get(&p, 0).ok().filter(|a| *a != 0))
            .chain(tracked_cgroups.iter().flatten().map(|(_, t)| t.agent))
            .collect();
        for agent in found {
            max = max.max(agent);
            agents.entry(agent).or_insert(Agent {
                id: agent,
                owner_uid: 0,
                source: Source::Restored,
                name: None,
            });
        }
        Control {
            tracked,
            tracked_cgroups,
            agents,
            next: max + 1,
            cgroup_root: None,
        }
    }

    /// Sets (and creates) the directory for agent cgroups; agents found there from an earlier run
    /// are re-adopted with their cgroups.
    pub fn set_cgroup_root(&mut self, root: PathBuf) -> Result<(), AgentError> {
        std::fs::create_dir_all(&root).map_err(|e| AgentError::Cgroup {
            path: root.clone(),
            reason: e.to_string(),
        })?;
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(id) = name
                    .strip_prefix("agent-")
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                if let Some(a) = self.agents.get_mut(&id) {
                    a.owner_uid = std::fs::metadata(e.path()).map(|m| m.uid()).unwrap_or(0);
                    a.source = Source::Cgroup {
                        ids: cgroup::subtree_ids(&e.path()),
                        path: e.path(),
                    };
                }
            }
        }
        self.cgroup_root = Some(root);
        Ok(())
    }

    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    /// Agent of a pid, if tracked.
    pub fn agent_of(&self, pid: u32) -> Option<u64> {
        self.tracked.get(&pid, 0).ok().filter(|a| *a != 0)
    }

    /// (tracked live processes, tracked cgroups).
    pub fn tracked_counts(&self) -> (u64, u64) {
        (
            procfs::pids()
                .into_iter()
                .filter(|p| self.agent_of(*p).is_some())
                .count() as u64,
            self.tracked_cgroups.keys().flatten().count() as u64,
        )
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    fn set_pid(&mut self, pid: u32, agent: u64) -> Result<(), AgentError> {
        self.tracked.set(pid, agent, 0).map_err(map_err("TRACKED"))
    }

    /// Tracks every process in a cgroup v2 directory and below, present and future. Root only:
    /// a cgroup may hold anyone's processes.
    pub fn track_cgroup(&mut self, path: &Path, caller: u32) -> Result<u64, AgentError> {
        if caller != 0 {
            return Err(AgentError::NotPermitted {
                uid: caller,
                what: format!("track cgroup {}", path.display()),
            });
        }
        if !cgroup::is_cgroup2_dir(path) {
            return Err(AgentError::NotACgroup { path: path.into() });
        }
        let ids = cgroup::subtree_ids(path);
        for id in &ids {
            if let Ok(t) = self.tracked_cgroups.get(id, 0) {
                return Err(AgentError::CgroupAlreadyTracked {
                    path: path.into(),
                    agent: t.agent,
                });
            }
        }
        let agent = self.new_id();
        let t = Tracked { agent, flags: 0 };
        // Cgroups first: from here on the kernel adopts every fork and every move into them.
        for id in &ids {
            self.tracked_cgroups
                .insert(id, t, 0)
                .map_err(map_err("TRACKED_CGROUPS"))?;
        }
        for pid in cgroup::procs_recursive(path) {
            self.set_pid(pid, agent)?;
        }
        let owner_uid = std::fs::metadata(path).map(|m| m.uid()).unwrap_or(0);
        self.agents.insert(
            agent,
            Agent {
                id: agent,
                owner_uid,
                source: Source::Cgroup {
                    path: path.into(),
                    ids,
                },
                name: None,
            },
        );
        Ok(agent)
    }

    /// Checks that `caller` may make `pid` an agent: a live user process (not init, not a kernel
    /// thread) that the caller owns (or root), not tracked yet.
    fn adoptable(&self, pid: u32, caller: u32, what: &str) -> Result<procfs::ProcStat, AgentError> {
        if pid == 1 {
            return Err(AgentError::Init);
        }
        let st = procfs::stat(pid).ok_or(AgentError::NoSuchProcess(pid))?;
        if st.is_kernel_thread() {
            return Err(AgentError::KernelThread(pid));
        }
        if caller != 0 && caller != st.uid {
            return Err(AgentError::NotPermitted {
                uid: caller,
                what: format!("{what} pid {pid} (owned by uid {})", st.uid),
            });
        }
        if let Some(agent) = self.agent_of(pid) {
            return Err(AgentError::AlreadyTracked { pid, agent });
        }
        Ok(st)
    }

    /// Adopts a running process and its descendants, present and future. The caller must own
    /// the process, or be root.
    pub fn track_pid(&mut self, pid: u32, caller: u32) -> Result<u64, AgentError> {
        let st = self.adoptable(pid, caller, "watch")?;
        let agent = self.new_id();
        // The root first: from here on its forks are tracked by the kernel; the scan below picks
        // up the children it had before.
        self.set_pid(pid, agent)?;
        if procfs::stat(pid).is_none() {
            let _ = self.set_pid(pid, 0);
            return Err(AgentError::ExitedDuringAdoption(pid));
        }
        for child in procfs::descendants(pid) {
            if self.agent_of(child).is_none() {
                self.set_pid(child, agent)?;
            }
        }
        self.agents.insert(
            agent,
            Agent {
                id: agent,
                owner_uid: st.uid,
                source: Source::Process { pid },
                name: None,
            },
        );
        Ok(agent)
    }

    /// Starts an agent from a process its caller holds before exec: a cgroup of its own
    /// (`agent-<id>`, owned by the caller), tracked first, then the process moved in. The caller
    /// must own the process (or be root).
    pub fn run_agent(
        &mut self,
        pid: u32,
        caller: u32,
        name: Option<String>,
    ) -> Result<u64, AgentError> {
        let st = self.adoptable(pid, caller, "run")?;
        let root = self.cgroup_root.clone().ok_or(AgentError::NoCgroup2)?;
        let agent = self.new_id();
        let path = root.join(format!("agent-{agent}"));
        let cg_err = |e: std::io::Error| AgentError::Cgroup {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir(&path).map_err(cg_err)?;
        // The owner may read its own cgroup's files; axiomd keeps control of membership.
        let _ = nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(st.uid)), None);
        let id = cgroup::id(&path).map_err(cg_err)?;
        self.tracked_cgroups
            .insert(id, Tracked { agent, flags: 0 }, 0)
            .map_err(map_err("TRACKED_CGROUPS"))?;
        self.set_pid(pid, agent)?;
        if let Err(e) = std::fs::write(path.join("cgroup.procs"), pid.to_string()) {
            let _ = self.tracked_cgroups.remove(&id);
            let _ = self.set_pid(pid, 0);
            let _ = std::fs::remove_dir(&path);
            return Err(if procfs::stat(pid).is_none() {
                AgentError::ExitedDuringAdoption(pid)
            } else {
                cg_err(e)
            });
        }
        self.agents.insert(
            agent,
            Agent {
                id: agent,
                owner_uid: st.uid,
                source: Source::Cgroup {
                    path,
                    ids: vec![id],
                },
                name,
            },
        );
        Ok(agent)
    }

    fn authorised(&self, agent: u64, caller: u32, what: &str) -> Result<&Agent, AgentError> {
        let a = self
            .agents
            .get(&agent)
            .ok_or(AgentError::NoSuchAgent(agent))?;
        if caller != 0 && caller != a.owner_uid {
            return Err(AgentError::NotPermitted {
                uid: caller,
                what: format!("{what} agent {agent}"),
            });
        }
        Ok(a)
    }

    /// Live processes carrying an agent's id.
    fn pids_of(&self, agent: u64) -> Vec<u32> {
        procfs::pids()
            .into_iter()
            .filter(|p| self.agent_of(*p) == Some(agent))
            .collect()
    }

    /// Freezes, thaws or kills a whole agent: through its cgroup (cgroup.freeze, cgroup.kill) when
    /// it has one, else by signalling each of its processes.
    pub fn steer(&mut self, agent: u64, how: Steer, caller: u32) -> Result<u64, AgentError> {
        let a = self.authorised(agent, caller, &format!("{how:?}").to_lowercase())?;
        // A cgroup freezes and kills its whole tree atomically; stop, and agents without a
        // cgroup of their own, go through signals.
        let cgroup_file = match (&a.source, how) {
            (Source::Cgroup { path, .. }, Steer::Freeze) => Some((path.join("cgroup.freeze"), "1")),
            (Source::Cgroup { path, .. }, Steer::Thaw) => Some((path.join("cgroup.freeze"), "0")),
            (Source::Cgroup { path, .. }, Steer::Kill) => Some((path.join("cgroup.kill"), "1")),
            _ => None,
        };
        if let Some((file, value)) = cgroup_file {
            std::fs::write(&file, value).map_err(|e| AgentError::Cgroup {
                path: file.clone(),
                reason: e.to_string(),
            })?;
            return Ok(agent);
        }
        let sig = match how {
            Steer::Stop => nix::sys::signal::Signal::SIGTERM,
            Steer::Freeze => nix::sys::signal::Signal::SIGSTOP,
            Steer::Thaw => nix::sys::signal::Signal::SIGCONT,
            Steer::Kill => nix::sys::signal::Signal::SIGKILL,
        };
        for pid in self.pids_of(agent) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
        Ok(agent)
    }

    /// The agents a caller may see (root: all), with their processes and state.
    pub fn list(&self, caller: u32) -> Vec<AgentView> {
        self.agents
            .values()
            .filter(|a| caller == 0 || a.owner_uid == caller)
            .map(|a| {
                let cgroup = match &a.source {
                    Source::Cgroup { path, .. } => Some(path.clone()),
                    _ => None,
                };
                let frozen = cgroup.as_ref().is_some_and(|p| {
                    std::fs::read_to_string(p.join("cgroup.events"))
                        .is_ok_and(|s| s.lines().any(|l| l == "frozen 1"))
                });
                AgentView {
                    agent: a.clone(),
                    processes: self.pids_of(a.id),
                    cgroup,
                    frozen,
                }
            })
            .collect()
    }

    /// Stops tracking an agent: its cgroups and every process carrying its id.
    pub fn untrack(&mut self, agent: u64, caller: u32) -> Result<(), AgentError> {
        self.authorised(agent, caller, "untrack")?;
        let cgs: Vec<u64> = self
            .tracked_cgroups
            .iter()
            .flatten()
            .filter(|(_, t)| t.agent == agent)
            .map(|(k, _)| k)
            .collect();
        for k in cgs {
            let _ = self.tracked_cgroups.remove(&k);
        }
        for pid in self.pids_of(agent) {
            let _ = self.set_pid(pid, 0);
        }
        self.agents.remove(&agent);
        Ok(())
    }

    pub fn owner_of(&self, agent: u64) -> Option<u32> {
        self.agents.get(&agent).map(|a| a.owner_uid)
    }
}
