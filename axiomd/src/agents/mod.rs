//! Agents: what is tracked, and who may track it.
//!
//! An agent is an id the kernel copies into every record of its processes. It is either a cgroup
//! v2 directory (every process in it, present and future) or a process tree adopted by pid (the
//! process and its descendants, present and future). Tracking state lives in the kernel maps, so
//! it survives an axiomd restart: the registry is rebuilt from those maps at start-up, and what
//! the kernel does not know (name, command, workspace, profile, start, exit) from the state files
//! axiomd keeps beside them (`state.rs`).
pub(crate) mod config;
mod error;
pub(crate) mod lifecycle;
mod record;
pub(crate) mod state;
pub(crate) mod tables;

pub(crate) use error::AgentError;
pub(crate) use record::{Agent, ExitStatus, Launch, Source, notice, now_ns};

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use axiom_common::Tracked;

use crate::{
    authz::Caller,
    kernel::{cgroup, procfs},
};

/// The kernel tracking maps and the agents they describe; every change goes through here.
pub(crate) struct Registry {
    /// The kernel's tables: agent id by tgid, agent by cgroup.
    tables: Box<dyn tables::Tables>,
    agents: BTreeMap<u64, Agent>,
    /// Agent by root process, for agents whose root still runs.
    leaders: std::collections::HashMap<u32, u64>,
    next: u64,
    /// Where agents started by axiomd get their cgroups (`agent-<id>` below it).
    cgroup_root: Option<PathBuf>,
    state: Option<state::StateDir>,
    /// The connect allowlist maps (none: the kernel lacks the programs).
    net: Option<crate::kernel::NetMaps>,
    /// Running agents one user (not root or the admin group) may have at once: the kernel's
    /// tables are shared by every user.
    max_per_user: usize,
    /// Ended agents whose kernel slots and cgroup were given back (their records stay listed).
    released: std::collections::HashSet<u64>,
    /// Agents untracked while confined in a cgroup of axiomd's, by id: their connect policy
    /// holds until the cgroup is empty.
    untracked_confined: std::collections::HashMap<u64, PathBuf>,
}

/// An intervention on a whole agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Steer {
    /// SIGTERM to every process: ask the agent to end.
    Stop,
    Freeze,
    Thaw,
    Kill,
}

impl Steer {
    /// The intervention it is, on the wire.
    pub(crate) fn action(self) -> axiom_proto::wire::Action {
        use axiom_proto::wire::Action;
        match self {
            Steer::Stop => Action::Stop,
            Steer::Freeze => Action::Freeze,
            Steer::Thaw => Action::Thaw,
            Steer::Kill => Action::Kill,
        }
    }
}

/// What `agents` reports of one agent.
#[derive(Clone, Debug)]
pub(crate) struct AgentView {
    pub(crate) agent: Agent,
    pub(crate) cgroup: Option<PathBuf>,
    pub(crate) processes: Vec<u32>,
    pub(crate) frozen: bool,
}

impl Registry {
    /// Rebuilds the registry from what the kernel is tracking (after a restart, earlier agents are
    /// still there and new ids must not collide with theirs).
    pub(crate) fn restore(
        tables: Box<dyn tables::Tables>,
        state: Option<state::StateDir>,
    ) -> Registry {
        let mut agents: BTreeMap<u64, Agent> = state
            .as_ref()
            .map(|s| s.load_all().into_iter().map(|a| (a.id, a)).collect())
            .unwrap_or_default();
        let mut max = agents.keys().copied().max().unwrap_or(0);
        // The array is indexed by pid: look up the live pids rather than scan pid_max slots.
        let found: Vec<u64> = procfs::pids()
            .into_iter()
            .filter_map(|p| tables.agent_of_pid(p))
            .chain(tables.cgroups().into_iter().map(|(_, t)| t.agent))
            .collect();
        for agent in found {
            max = max.max(agent);
            agents
                .entry(agent)
                .or_insert_with(|| Agent::new(agent, 0, Source::Restored, 0));
        }
        let mut leaders = std::collections::HashMap::new();
        for a in agents.values_mut() {
            if a.leader != 0 && a.exit.is_none() {
                if procfs::stat(a.leader).is_some() {
                    leaders.insert(a.leader, a.id);
                } else {
                    // It ended while axiomd was down: the code is lost, the end is not.
                    a.exit = Some(ExitStatus::default());
                    a.exited_ns = now_ns();
                }
            }
        }
        Registry {
            tables,
            agents,
            leaders,
            next: max + 1,
            cgroup_root: None,
            state,
            net: None,
            max_per_user: usize::MAX,
            released: Default::default(),
            untracked_confined: Default::default(),
        }
    }

    /// Running agents one user may have at once.
    pub(crate) fn max_per_user(&self) -> usize {
        self.max_per_user
    }

    /// Bounds the running agents of one user (`agents.max_per_user`).
    pub(crate) fn set_max_per_user(&mut self, n: usize) {
        self.max_per_user = n.max(1);
    }

    /// Refuses a new agent for a user who has `max_per_user` running already.
    fn within_quota(&self, caller: Caller) -> Result<(), AgentError> {
        if caller.admin {
            return Ok(());
        }
        let running = self
            .agents
            .values()
            .filter(|a| a.owner_uid == caller.uid && a.exit.is_none())
            .count();
        if running >= self.max_per_user {
            return Err(AgentError::NotPermitted {
                uid: caller.uid,
                what: format!(
                    "start another agent: {running} running already (agents.max_per_user)"
                ),
            });
        }
        Ok(())
    }

    /// The connect allowlist maps the agents' policies go into.
    pub(crate) fn set_net(&mut self, net: crate::kernel::NetMaps) {
        self.net = Some(net);
    }

    /// Records a new agent (registry, leader index, state file).
    fn insert(&mut self, a: Agent) {
        if a.leader != 0 {
            self.leaders.insert(a.leader, a.id);
        }
        self.save(&a);
        self.agents.insert(a.id, a);
    }

    fn save(&self, a: &Agent) {
        if let Some(s) = &self.state
            && let Err(e) = s.save(a)
        {
            tracing::warn!(agent = a.id, "cannot save agent state: {e}");
        }
    }

    /// Records what an agent's hook call says of its conversation (its `session_id`, and the
    /// model where it names one) and saves it when that changed (a new conversation after
    /// `/clear`, a model switched).
    pub(crate) fn set_conversation(&mut self, agent: u64, id: Option<&str>, model: Option<&str>) {
        let Some(a) = self.agents.get_mut(&agent) else {
            return;
        };
        let mut changed = false;
        for (field, v) in [(&mut a.conversation, id), (&mut a.model, model)] {
            if let Some(v) = v.filter(|v| !v.is_empty() && v.len() <= 256)
                && field.as_deref() != Some(v)
            {
                *field = Some(v.to_string());
                changed = true;
            }
        }
        if changed {
            let a = a.clone();
            self.save(&a);
        }
    }

    /// Rewrites an agent's recorded command line (secrets masked) and saves it.
    pub(crate) fn mask_command(&mut self, agent: u64, mask: impl Fn(&str) -> Option<String>) {
        let Some(a) = self.agents.get_mut(&agent) else {
            return;
        };
        let mut changed = false;
        for arg in a.command.iter_mut() {
            if let Some(m) = mask(arg) {
                *arg = m;
                changed = true;
            }
        }
        if changed {
            let a = a.clone();
            self.save(&a);
        }
    }

    pub(crate) fn get(&self, agent: u64) -> Option<&Agent> {
        self.agents.get(&agent)
    }

    /// A tracked process exited: if it was an agent's root, the agent has ended.
    pub(crate) fn exited(&mut self, tgid: u32, status: ExitStatus) -> Option<&Agent> {
        let id = self.leaders.remove(&tgid)?;
        let a = self.agents.get_mut(&id)?;
        a.exit = Some(status);
        a.exited_ns = now_ns();
        let a = a.clone();
        self.save(&a);
        self.agents.get(&id)
    }

    /// Gives back the kernel's slots (tracked cgroup, connect policy), the cgroup and the
    /// limit groups of every agent that ended and has no process left, at once: its record
    /// stays listed for `keep_exited_secs`, but a user cycling short agents must not hold the
    /// kernel's tables (4,096 entries, shared by every user) for that hour. Returns how many.
    pub(crate) fn release_ended(&mut self) -> usize {
        let untracked = self.release_untracked();
        let done: Vec<u64> = self
            .agents
            .values()
            .filter(|a| a.exit.is_some() && !self.released.contains(&a.id))
            .filter(|a| match &a.source {
                Source::Cgroup { path, .. } => !cgroup::populated(path),
                _ => true,
            })
            .map(|a| a.id)
            .collect();
        for id in &done {
            self.released.insert(*id);
            if let Some(a) = self.agents.get(id) {
                let a = a.clone();
                self.release(&a);
            }
        }
        untracked + done.len()
    }

    /// Whether a cgroup is one axiomd made for an agent (below `agents.cgroup_root`).
    fn made_here(&self, path: &Path) -> bool {
        self.cgroup_root
            .as_ref()
            .is_some_and(|r| path.starts_with(r))
    }

    /// Agents untracked while still confined: once their cgroup is empty, their connect policy
    /// and cgroup go. Returns how many went.
    fn release_untracked(&mut self) -> usize {
        let empty: Vec<(u64, PathBuf)> = self
            .untracked_confined
            .iter()
            .filter(|(_, p)| !cgroup::populated(p))
            .map(|(a, p)| (*a, p.clone()))
            .collect();
        for (agent, path) in &empty {
            self.untracked_confined.remove(agent);
            if let Some(n) = self.net.as_mut() {
                n.remove(*agent);
            }
            let _ = std::fs::remove_dir(path);
        }
        empty.len()
    }

    /// What the kernel and cgroupfs hold for an agent: its tracked cgroups, its connect
    /// policy, its cgroup (only one axiomd made) and its limit groups.
    fn release(&mut self, a: &Agent) {
        if let Source::Cgroup { path, ids } = &a.source {
            for cg in ids {
                self.tables.remove_cgroup(*cg);
            }
            if self.made_here(path) {
                let _ = std::fs::remove_dir(path);
            }
        }
        crate::confine::limits::remove(&a.limit_groups);
        if let Some(n) = self.net.as_mut() {
            n.remove(a.id);
        }
    }

    /// Forgets agents that ended more than `keep` ago and have no process left: their state file
    /// goes, and what `release_ended` had not given back yet. Returns how many went.
    pub(crate) fn sweep(&mut self, keep: std::time::Duration) -> usize {
        self.release_ended();
        let cutoff = now_ns().saturating_sub(keep.as_nanos() as u64);
        let old: Vec<u64> = self
            .agents
            .values()
            .filter(|a| a.exit.is_some() && a.exited_ns <= cutoff && self.released.contains(&a.id))
            .map(|a| a.id)
            .collect();
        for id in &old {
            self.released.remove(id);
            if let Some(a) = self.agents.remove(id)
                && let Some(s) = &self.state
            {
                s.remove(a.id);
            }
        }
        old.len()
    }

    /// Sets (and creates) the directory for agent cgroups; agents found there from an earlier run
    /// are re-adopted with their cgroups.
    pub(crate) fn set_cgroup_root(&mut self, root: PathBuf) -> Result<(), AgentError> {
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
                // Never hand out an id whose cgroup is still there (its state file was swept,
                // or lost with /run): `run` failed with "File exists" for every later agent.
                self.next = self.next.max(id + 1);
                if !self.agents.contains_key(&id) {
                    // An agent forgotten while its cgroup stayed (untracked while confined):
                    // gone if it is empty, else its policy holds until it is.
                    if std::fs::remove_dir(e.path()).is_err() {
                        self.untracked_confined.insert(id, e.path());
                    }
                    continue;
                }
                if let Some(a) = self.agents.get_mut(&id)
                    && matches!(a.source, Source::Restored)
                {
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

    pub(crate) fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    /// Agents whose root process has not ended.
    pub(crate) fn running(&self) -> usize {
        self.agents.values().filter(|a| a.exit.is_none()).count()
    }

    /// Agent of a pid, if tracked.
    pub(crate) fn agent_of(&self, pid: u32) -> Option<u64> {
        self.tables.agent_of_pid(pid)
    }

    /// The agent a live process belongs to: tracked by pid, or inside (or below) a tracked
    /// cgroup — an agent started by `axiomctl run` is tracked by its cgroup, its processes by
    /// the kernel's cgroup membership, not one by one.
    pub(crate) fn agent_of_process(&self, pid: u32) -> Option<u64> {
        use std::os::unix::fs::MetadataExt as _;
        if let Some(a) = self.agent_of(pid) {
            return Some(a);
        }
        let mount = axiom_proto::host::cgroup2_mount()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let mut dir = mount.join(rel.trim_start_matches('/'));
        loop {
            if let Ok(m) = std::fs::metadata(&dir)
                && let Some(t) = self.tables.cgroup(m.ino())
            {
                return Some(t.agent);
            }
            if dir == mount || !dir.pop() {
                return None;
            }
        }
    }

    /// (tracked live processes, tracked cgroups).
    pub(crate) fn tracked_counts(&self) -> (u64, u64) {
        (
            procfs::pids()
                .into_iter()
                .filter(|p| self.agent_of(*p).is_some())
                .count() as u64,
            self.tables.cgroups().len() as u64,
        )
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    fn set_pid(&mut self, pid: u32, agent: u64) -> Result<(), AgentError> {
        self.tables.set_pid(pid, agent)
    }

    /// Marks `pid` as `agent`'s only if it is, by a pidfd, the same live process owned by `owner`
    /// before and after the mark. A process found by a /proc scan may exit before it is marked:
    /// the kernel clears a mark at exit, so a mark set after it would outlive it and take in
    /// whoever gets the pid next (another user's or root's process). Returns whether it marked.
    fn mark_live(&mut self, pid: u32, agent: u64, owner: u32) -> Result<bool, AgentError> {
        let Some(fd) = procfs::pidfd(pid) else {
            return Ok(false);
        };
        // Read after the pidfd pinned the process, confirmed alive after: this is its owner.
        if procfs::stat(pid).is_none_or(|st| st.uid != owner) || procfs::has_exited(&fd) {
            return Ok(false);
        }
        self.set_pid(pid, agent)?;
        if procfs::has_exited(&fd) {
            self.set_pid(pid, 0)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Tracks every process in a cgroup v2 directory and below, present and future. Root only:
    /// a cgroup may hold anyone's processes.
    pub(crate) fn track_cgroup(&mut self, path: &Path, caller: Caller) -> Result<u64, AgentError> {
        if !caller.admin {
            return Err(AgentError::NotPermitted {
                uid: caller.uid,
                what: format!("track cgroup {}", path.display()),
            });
        }
        if !cgroup::is_cgroup2_dir(path) {
            return Err(AgentError::NotACgroup { path: path.into() });
        }
        let ids = cgroup::subtree_ids(path);
        for id in &ids {
            if let Some(t) = self.tables.cgroup(*id) {
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
            self.tables.insert_cgroup(*id, t)?;
        }
        for pid in cgroup::procs_recursive(path) {
            self.set_pid(pid, agent)?;
        }
        let owner_uid = std::fs::metadata(path).map(|m| m.uid()).unwrap_or(0);
        let mut a = Agent::new(
            agent,
            owner_uid,
            Source::Cgroup {
                path: path.into(),
                ids,
            },
            0,
        );
        a.name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        self.insert(a);
        Ok(agent)
    }

    /// Checks that `caller` may make `pid` an agent: a live user process (not init, not a kernel
    /// thread) that the caller owns (or root), not tracked yet.
    fn adoptable(
        &self,
        pid: u32,
        caller: Caller,
        what: &str,
    ) -> Result<procfs::ProcStat, AgentError> {
        if pid == 1 {
            return Err(AgentError::Init);
        }
        let st = procfs::stat(pid).ok_or(AgentError::NoSuchProcess(pid))?;
        if st.is_kernel_thread() {
            return Err(AgentError::KernelThread(pid));
        }
        if !caller.may_act_for(st.uid) {
            return Err(AgentError::NotPermitted {
                uid: caller.uid,
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
    pub(crate) fn track_pid(&mut self, pid: u32, caller: Caller) -> Result<u64, AgentError> {
        let st = self.adoptable(pid, caller, "watch")?;
        self.within_quota(caller)?;
        let agent = self.new_id();
        // The root first: from here on its forks are tracked by the kernel; the scan below picks
        // up the children it had before.
        if !self.mark_live(pid, agent, st.uid)? {
            return Err(AgentError::ExitedDuringAdoption(pid));
        }
        for child in procfs::descendants(pid) {
            if self.agent_of(child).is_none() {
                self.mark_live(child, agent, st.uid)?;
            }
        }
        let mut a = Agent::new(agent, st.uid, Source::Process { pid }, pid);
        a.command = procfs::cmdline(pid);
        a.workspace = procfs::cwd(pid);
        a.name = Some(st.comm.clone());
        self.insert(a);
        Ok(agent)
    }

    /// A cgroup of its own for agent `agent` (`agent-<id>` below `root`, owned by `owner`),
    /// tracked first, then `pid` moved in: its path and cgroup id.
    fn place(
        &mut self,
        agent: u64,
        pid: u32,
        root: &Path,
        owner: u32,
    ) -> Result<(PathBuf, u64), AgentError> {
        let path = root.join(format!("agent-{agent}"));
        let cg_err = |e: std::io::Error| AgentError::Cgroup {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir(&path).map_err(cg_err)?;
        // The owner may read its own cgroup's files; axiomd keeps control of membership.
        let _ = nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(owner)), None);
        let id = cgroup::id(&path).map_err(cg_err)?;
        self.tables.insert_cgroup(id, Tracked { agent, flags: 0 })?;
        self.set_pid(pid, agent)?;
        if let Err(e) = std::fs::write(path.join("cgroup.procs"), pid.to_string()) {
            self.tables.remove_cgroup(id);
            let _ = self.set_pid(pid, 0);
            let _ = std::fs::remove_dir(&path);
            return Err(if procfs::stat(pid).is_none() {
                AgentError::ExitedDuringAdoption(pid)
            } else {
                cg_err(e)
            });
        }
        Ok((path, id))
    }

    /// Starts an agent from a process its caller holds before exec: a cgroup of its own
    /// (`agent-<id>`, owned by the caller), tracked first, then the process moved in. The caller
    /// must own the process (or be root).
    pub(crate) fn run_agent(
        &mut self,
        pid: u32,
        caller: Caller,
        launch: Launch,
    ) -> Result<u64, AgentError> {
        let st = self.adoptable(pid, caller, "run")?;
        self.within_quota(caller)?;
        let root = self.cgroup_root.clone().ok_or(AgentError::NoCgroup2)?;
        let agent = self.new_id();
        // The connect allowlist first: refused, nothing else has been made to undo (the caller
        // still holds its process and ends it).
        if let Some(rules) = launch.net.as_ref().filter(|r| r.confines()) {
            let net = self.net.as_mut().ok_or_else(|| {
                AgentError::Confinement("the connect allowlist programs are not loaded".into())
            })?;
            if let Err(e) = net.apply(agent, rules) {
                net.remove(agent);
                return Err(AgentError::Confinement(format!("network policy: {e}")));
            }
        }
        let placed = self.place(agent, pid, &root, st.uid);
        if placed.is_err()
            && let Some(n) = self.net.as_mut()
        {
            n.remove(agent);
        }
        let (path, id) = placed?;
        // The policy binds the cgroup too: a process of the agent's whose pid slot is cleared
        // is held to it all the same.
        if launch.net.as_ref().is_some_and(|r| r.confines())
            && let Some(net) = self.net.as_mut()
            && let Err(e) = net.bind_cgroup(id, agent)
        {
            net.remove(agent);
            self.tables.remove_cgroup(id);
            let _ = self.set_pid(pid, 0);
            return Err(AgentError::Confinement(format!("network policy: {e}")));
        }
        // Limits before the agent runs anything (it is held before exec): every descendant counts.
        let report = match (&launch.limits, cgroup::mount_point()) {
            (Some(l), Some(mount)) => crate::confine::limits::apply(agent, &mount, &path, pid, l),
            _ => Default::default(),
        };
        let mut a = Agent::new(
            agent,
            st.uid,
            Source::Cgroup {
                path,
                ids: vec![id],
            },
            pid,
        );
        a.limit_groups = report.v1_dirs;
        a.limits_applied = report.applied;
        a.limits_not_applied = report.not_applied;
        a.name = launch.name;
        a.command = launch.command;
        a.workspace = launch.workspace;
        a.profile = launch.profile;
        a.kind = launch.kind;
        a.hooks = launch.hooks;
        a.terminal = launch.terminal;
        self.insert(a);
        Ok(agent)
    }

    /// The agent, if the caller may act on it.
    pub(crate) fn authorised(
        &self,
        agent: u64,
        caller: Caller,
        what: &str,
    ) -> Result<&Agent, AgentError> {
        let a = self
            .agents
            .get(&agent)
            .ok_or(AgentError::NoSuchAgent(agent))?;
        if !caller.may_act_for(a.owner_uid) {
            return Err(AgentError::NotPermitted {
                uid: caller.uid,
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
    pub(crate) fn steer(
        &mut self,
        agent: u64,
        how: Steer,
        caller: Caller,
    ) -> Result<u64, AgentError> {
        let a = self.authorised(agent, caller, how.action().name())?;
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

    /// The cgroup an agent is, when it is one.
    pub(crate) fn cgroup_of(&self, agent: u64) -> Option<PathBuf> {
        match &self.agents.get(&agent)?.source {
            Source::Cgroup { path, .. } => Some(path.clone()),
            _ => None,
        }
    }

    /// The agents a caller may see (root: all), with their processes and state. The system's
    /// processes are read once for all of them (not once per agent: with a hundred agents that
    /// was a hundred passes over /proc for each `agents` a `top` or a page asks).
    pub(crate) fn list(&self, caller: Caller) -> Vec<AgentView> {
        let mut pids: std::collections::HashMap<u64, Vec<u32>> = std::collections::HashMap::new();
        for p in procfs::pids() {
            if let Some(a) = self.agent_of(p) {
                pids.entry(a).or_default().push(p);
            }
        }
        self.agents
            .values()
            .filter(|a| caller.may_act_for(a.owner_uid))
            .map(|a| {
                let cgroup = self.cgroup_of(a.id);
                let frozen = cgroup.as_deref().is_some_and(cgroup::frozen);
                AgentView {
                    agent: a.clone(),
                    processes: pids.remove(&a.id).unwrap_or_default(),
                    cgroup,
                    frozen,
                }
            })
            .collect()
    }

    /// The agents a caller may see, each with when it started: what a store query is narrowed
    /// to (nothing of their processes is read).
    pub(crate) fn visible(&self, caller: Caller) -> Vec<(u64, u64)> {
        self.agents
            .values()
            .filter(|a| caller.may_act_for(a.owner_uid))
            .map(|a| (a.id, a.started_ns))
            .collect()
    }

    /// Stops tracking an agent: its cgroups and every process carrying its id.
    pub(crate) fn untrack(&mut self, agent: u64, caller: Caller) -> Result<(), AgentError> {
        self.authorised(agent, caller, "untrack")?;
        let cgs: Vec<u64> = self
            .tables
            .cgroups()
            .into_iter()
            .filter(|(_, t)| t.agent == agent)
            .map(|(k, _)| k)
            .collect();
        for k in cgs {
            self.tables.remove_cgroup(k);
        }
        for pid in self.pids_of(agent) {
            let _ = self.set_pid(pid, 0);
        }
        // Untracked, not unconfined: an agent started in a cgroup of axiomd's keeps its connect
        // policy (as it keeps its Landlock rules) until that cgroup is empty; an adopted tree
        // has no cgroup of ours to hold it, and its processes are no longer checked.
        let a = self.agents.remove(&agent);
        match a.as_ref().map(|a| &a.source) {
            Some(Source::Cgroup { path, .. }) if self.made_here(path) => {
                self.untracked_confined.insert(agent, path.clone());
            }
            _ => {
                if let Some(n) = self.net.as_mut() {
                    n.remove(agent);
                }
            }
        }
        if let Some(a) = a {
            self.leaders.remove(&a.leader);
            self.released.remove(&a.id);
        }
        if let Some(s) = &self.state {
            s.remove(agent);
        }
        Ok(())
    }

    pub(crate) fn owner_of(&self, agent: u64) -> Option<u32> {
        self.agents.get(&agent).map(|a| a.owner_uid)
    }
}

#[cfg(test)]
pub(crate) mod tests;

/// The agent registry behind its own lock: how every other room reaches the agents. What is
/// done to an agent is the registry's own methods, run through [`Agents::with`]; the lock, and
/// what a poisoned one means, stay here.
pub(crate) struct Agents(std::sync::Mutex<Registry>);

/// A thread panicked while it changed the registry: what it holds can no longer be trusted.
#[derive(Debug, thiserror::Error)]
#[error("agent registry poisoned")]
pub(crate) struct Poisoned;

impl Agents {
    pub(crate) fn new(registry: Registry) -> std::sync::Arc<Agents> {
        std::sync::Arc::new(Agents(std::sync::Mutex::new(registry)))
    }

    /// Runs `f` on the registry, alone.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> Result<T, Poisoned> {
        let mut r = self.0.lock().map_err(|_| Poisoned)?;
        Ok(f(&mut r))
    }

    /// The agent as it is now.
    pub(crate) fn get(&self, agent: u64) -> Option<Agent> {
        self.with(|r| r.get(agent).cloned()).ok().flatten()
    }

    pub(crate) fn cgroup_of(&self, agent: u64) -> Option<PathBuf> {
        self.with(|r| r.cgroup_of(agent)).ok().flatten()
    }

    pub(crate) fn owner_of(&self, agent: u64) -> Option<u32> {
        self.with(|r| r.owner_of(agent)).ok().flatten()
    }

    /// Agents running now (0 when the registry cannot answer).
    pub(crate) fn running(&self) -> usize {
        self.with(|r| r.running()).unwrap_or(0)
    }

    /// Agents known, running and recently ended.
    pub(crate) fn known(&self) -> usize {
        self.with(|r| r.agents().count()).unwrap_or(0)
    }
}

impl crate::bus::Describe for Agents {
    /// What is tracked, agents running, and the per-user bound on agents.
    fn describe(&self, st: &mut axiom_proto::wire::Status) {
        let _ = self.with(|c| {
            (st.tracked_processes, st.tracked_cgroups) = c.tracked_counts();
            st.agents_running = c.running() as u64;
            st.bounds
                .insert("agents_per_user".into(), c.max_per_user() as u64);
        });
    }
}
