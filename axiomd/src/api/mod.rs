//! What clients may ask of axiomd, answered the same way whichever way they come in: the control
//! socket (`socket.rs`, JSON lines, used by axiomctl) or D-Bus (the `dbus` module, above this one).
//!
//! Every call is authorised from the caller's kernel-reported identity (`crate::authz::Caller`):
//! a user may track, watch and steer only their own processes and agents; root and the admin
//! group may do all. `status` is open.
//!
//! Its parts: this file the shared state and each request's answer; `clients.rs` the bounds on
//! open clients; `reply.rs` replies and the events the API publishes; `stream.rs` who may
//! follow what, and the stream.
mod clients;
pub(crate) mod config;
mod reply;
pub(crate) mod socket;
mod stream;

pub(crate) use clients::Clients;
pub(crate) use reply::{agent_info, error, refusal};
use reply::{asked_for, ok_agent, started};
pub(crate) use stream::{stream_subscribed, write_line};

use std::{os::fd::OwnedFd, path::PathBuf, sync::Arc};

use axiom_proto::wire::{AgentInfo, ErrorCode, Event, Reply, Request, Status};

use crate::{
    agents::{Agent, AgentError, Agents, Launch, Registry, Steer},
    authz::{Caller, PeerProcess, Seat},
    bus::Bus,
    kernel::{Sensor, cgroup, procfs},
};

/// How long a freeze or thaw may take before its caller is answered anyway.
const FREEZER_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// What the front-ends share.
pub(crate) struct Shared {
    pub(crate) agents: Arc<Agents>,
    pub(crate) bus: Arc<Bus>,
    pub(crate) sensor: Sensor,
    /// gid of the admin group, resolved at start-up.
    pub(crate) admin_gid: Option<u32>,
    pub(crate) rules: Arc<crate::rules::Rules>,
    /// The actions stage: interventions, and the agents' terminals.
    pub(crate) actions: Arc<crate::actions::Actions>,
    /// The event store's tiers (none when the store is off).
    pub(crate) store: Option<Arc<crate::store::Running>>,
    /// Confinement profiles (`axiomctl run --profile`).
    pub(crate) confine: crate::confine::ConfineConfig,
    /// Open clients, bounded per user and in all.
    pub(crate) clients: Arc<Clients>,
}

/// A profile that does not resolve (unknown, or invalid for this site or agent kind).
fn no_profile(e: crate::confine::ConfineError) -> Reply {
    Reply {
        code: Some(ErrorCode::NoSuchProfile),
        ..error(e)
    }
}

impl Shared {
    /// Runs an agent operation under the registry lock; on success publishes what `after`
    /// makes of the agent (started, intervention) once the lock is released.
    fn act(
        &self,
        f: impl FnOnce(&mut Registry) -> Result<u64, AgentError>,
        after: impl FnOnce(&Agent) -> Option<Event>,
    ) -> Reply {
        let rules = self.rules.get();
        let done = self.agents.with(|c| {
            let agent = f(c)?;
            // Secrets on the command line never reach the record, the state file or events.
            c.mask_command(agent, |a| rules.redact(None, a).map(|(m, _)| m));
            Ok((agent, c.get(agent).and_then(after)))
        });
        match done {
            Err(poisoned) => error(poisoned),
            Ok(Err(e)) => refusal(e),
            Ok(Ok((agent, ev))) => {
                // Published once the registry is free again.
                if let Some(ev) = ev {
                    self.bus.publish(ev);
                }
                ok_agent(agent)
            }
        }
    }

    fn intervene(&self, agent: u64, how: Steer, caller: Caller) -> Reply {
        let action = how.action();
        let reply = self.act(
            |c| c.steer(agent, how, caller),
            |a| Some(asked_for(a, action, caller.uid)),
        );
        // Writing cgroup.freeze only asks; answer once the kernel says the tree has stopped (or
        // gone on again), so that "frozen" in the next status is true.
        let want = match how {
            Steer::Freeze => Some(true),
            Steer::Thaw => Some(false),
            _ => None,
        };
        let path = match (reply.ok, want) {
            (true, Some(_)) => self.agents.cgroup_of(agent),
            _ => None,
        };
        if let (Some(path), Some(want)) = (path, want)
            && !cgroup::settle_freezer(&path, want, FREEZER_SETTLE)
        {
            tracing::warn!(
                agent,
                ?how,
                "the kernel has not finished yet ({})",
                path.display()
            );
        }
        reply
    }

    fn inject(&self, agent: u64, text: &str, raw: bool, caller: Caller) -> Reply {
        let a = match self
            .agents
            .with(|c| c.authorised(agent, caller, "type into").cloned())
        {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return refusal(e),
            Err(poisoned) => return error(poisoned),
        };
        match self
            .actions
            .inject(&self.rules.get(), &a, text, raw, caller.uid)
        {
            Ok(delivered) => Reply {
                delivered,
                ..ok_agent(agent)
            },
            Err(e) => {
                let code = match e {
                    crate::actions::terminal::TerminalError::NoTerminal(_) => ErrorCode::NoTerminal,
                    _ => ErrorCode::TerminalClosed,
                };
                Reply {
                    code: Some(code),
                    ..error(e)
                }
            }
        }
    }

    /// A Claude Code hook call from inside an agent: answered for the caller's own agent (the
    /// one its pid belongs to, by the kernel's word), never for another.
    fn hook(&self, caller: Caller, input: &serde_json::Value) -> Reply {
        let agent = caller
            .agent()
            .and_then(|id| self.agents.get(id))
            .filter(|a| a.owner_uid == caller.uid || caller.admin);
        let Some(agent) = agent else {
            return Reply {
                code: Some(ErrorCode::NotAnAgent),
                ..error("a hook call comes from inside a tracked agent")
            };
        };
        // Every hook input names the agent's conversation; Claude Code's SessionStart also its
        // model (what a session view and traces call them by).
        let field = |k: &str| input.get(k).and_then(serde_json::Value::as_str);
        let (id, model) = (field("session_id"), field("model"));
        if id.is_some() || model.is_some() {
            let _ = self
                .agents
                .with(|r| r.set_conversation(agent.id, id, model));
        }
        Reply {
            ok: true,
            agent: Some(agent.id),
            hook: self.actions.hook(&self.rules.get(), &agent, input),
            ..Default::default()
        }
    }

    /// Stored events the caller may see (all for admins; else their uid's and their agents').
    fn query(
        &self,
        caller: Caller,
        mut q: crate::store::query::Query,
        sql: Option<String>,
    ) -> Reply {
        let Some(store) = &self.store else {
            return Reply {
                code: Some(ErrorCode::NoStore),
                ..error("the event store is off (store.enabled = false)")
            };
        };
        if !caller.admin && sql.is_some() {
            return refusal(AgentError::NotPermitted {
                uid: caller.uid,
                what: "run SQL on the event store".into(),
            });
        }
        if let Err(r) = self.limit_to_caller(caller, &mut q) {
            return *r;
        }
        let bad = |e: crate::store::StoreError| Reply {
            code: Some(ErrorCode::BadQuery),
            ..error(e)
        };
        match sql {
            Some(sql) => match store.reader.sql(&sql, q.limit.max(1)) {
                Ok((columns, rows)) => Reply {
                    ok: true,
                    columns: Some(columns),
                    rows: Some(rows),
                    ..Default::default()
                },
                Err(e) => bad(e),
            },
            None => match store.reader.latest(&q) {
                Ok(events) => Reply {
                    ok: true,
                    events: Some(events),
                    ..Default::default()
                },
                Err(e) => bad(e),
            },
        }
    }

    /// Narrows a store query to what the caller may see (nothing to narrow for an admin).
    fn limit_to_caller(
        &self,
        caller: Caller,
        q: &mut crate::store::query::Query,
    ) -> Result<(), Box<Reply>> {
        if caller.admin {
            return Ok(());
        }
        let agents: Vec<(u64, u64)> = self
            .agents
            .with(|c| c.visible(caller))
            .map_err(|poisoned| Box::new(error(poisoned)))?;
        q.visible_to = Some(crate::store::query::Visible {
            uid: caller.uid,
            host: crate::store::hostname(),
            agents,
        });
        Ok(())
    }

    /// Counts of stored events the caller may see, per agent, kind and span of time.
    fn summary(&self, caller: Caller, mut q: crate::store::query::Query, bucket_ns: u64) -> Reply {
        let Some(store) = &self.store else {
            return Reply {
                code: Some(ErrorCode::NoStore),
                ..error("the event store is off (store.enabled = false)")
            };
        };
        if let Err(r) = self.limit_to_caller(caller, &mut q) {
            return *r;
        }
        match store.reader.summary(&q, bucket_ns) {
            Ok(counts) => Reply {
                ok: true,
                summary: Some(counts),
                ..Default::default()
            },
            Err(e) => Reply {
                code: Some(ErrorCode::BadQuery),
                ..error(e)
            },
        }
    }

    /// Places a connection's caller once, from the process that connected (pinned by a pidfd
    /// the kernel or the bus gave): inside the agent it runs in, outside every agent, or, when
    /// it is gone or the registry cannot answer, unplaced (fail closed). The pidfd is checked
    /// alive after the look-up, so the agent found is that process's and not a later holder's
    /// of its pid.
    pub(crate) fn place(&self, caller: Caller, process: Option<&PeerProcess>) -> Caller {
        let seat = match process {
            None => Seat::Unplaced,
            Some(p) => {
                let agent = self.agents.with(|r| r.agent_of_process(p.pid));
                match agent {
                    _ if procfs::has_exited(&p.pidfd) => Seat::Unplaced,
                    Ok(Some(a)) => Seat::Agent(a),
                    Ok(None) => Seat::Outside,
                    Err(_) => Seat::Unplaced,
                }
            }
        };
        Caller { seat, ..caller }
    }

    /// Answers one request. `fd` is a descriptor that came with it (the pty of `run_agent`).
    ///
    /// A caller inside a tracked agent is that agent, not its owner: it may read the status and
    /// the rules, answer Claude Code hooks and list its own agent — nothing that steers, adopts,
    /// untracks, types into or reads other agents (else `axiomctl untrack <own id>` from inside
    /// switched Axiom off for it). A caller that could not be placed gets the same, and no
    /// agent of its own.
    pub(crate) fn handle(&self, caller: Caller, req: Request, fd: Option<OwnedFd>) -> Reply {
        let inside = match caller.seat {
            Seat::Outside => return self.handle_checked(caller, req, fd),
            Seat::Agent(a) => Some(a),
            Seat::Unplaced => None,
        };
        match &req {
            Request::Status | Request::Rules | Request::Hook { .. } => {}
            Request::Agents => {
                return Reply {
                    ok: true,
                    agents: Some(
                        self.agents(caller)
                            .into_iter()
                            .filter(|a| Some(a.id) == inside)
                            .collect(),
                    ),
                    ..Default::default()
                };
            }
            _ => {
                let from = match inside {
                    Some(a) => format!("from inside agent {a}"),
                    None => "on a connection whose process is gone or could not be placed".into(),
                };
                return refusal(AgentError::NotPermitted {
                    uid: caller.uid,
                    what: format!("ask this of axiomd {from}"),
                });
            }
        }
        self.handle_checked(caller, req, fd)
    }

    fn handle_checked(&self, caller: Caller, req: Request, fd: Option<OwnedFd>) -> Reply {
        match req {
            Request::Status => Reply {
                ok: true,
                status: Some(self.status()),
                ..Default::default()
            },
            Request::TrackCgroup { path } => self.act(
                |c| c.track_cgroup(&PathBuf::from(path), caller),
                |a| Some(started(a)),
            ),
            Request::TrackPid { pid } => {
                self.act(|c| c.track_pid(pid, caller), |a| Some(started(a)))
            }
            Request::Untrack { agent } => self.untrack(agent, caller),
            Request::RunAgent {
                pid,
                name,
                command,
                workspace,
                profile,
                pty,
                kind,
                hooks,
            } => self.run_agent(
                caller,
                fd,
                pid,
                Launch {
                    name,
                    command,
                    workspace,
                    profile,
                    limits: None,
                    net: None,
                    kind,
                    hooks,
                    terminal: None,
                },
                pty,
            ),
            Request::Resolve {
                command,
                workspace,
                profile,
                kind,
            } => match self.resolve(caller.uid, &workspace, profile.as_deref(), &command, kind) {
                Ok((confinement, kind)) => Reply {
                    ok: true,
                    confinement: Some(confinement),
                    notes: Some(vec![format!("kind: {kind}")]),
                    ..Default::default()
                },
                Err(e) => no_profile(e),
            },
            Request::Inject { agent, text, raw } => self.inject(agent, &text, raw, caller),
            Request::Hook { input } => self.hook(caller, &input),
            Request::Stop { agent } => self.intervene(agent, Steer::Stop, caller),
            Request::Freeze { agent } => self.intervene(agent, Steer::Freeze, caller),
            Request::Thaw { agent } => self.intervene(agent, Steer::Thaw, caller),
            Request::Kill { agent } => self.intervene(agent, Steer::Kill, caller),
            Request::Agents => Reply {
                ok: true,
                agents: Some(self.agents(caller)),
                ..Default::default()
            },
            Request::Query { events, sql } => self.query(caller, events.into(), sql),
            Request::Summary { events, bucket_ns } => {
                self.summary(caller, events.into(), bucket_ns)
            }
            Request::Rules => Reply {
                ok: true,
                rules: Some(self.rules.list()),
                ..Default::default()
            },
            Request::ReloadRules => self.reload(caller),
            Request::Subscribe { .. } => error("subscribe is handled by the transport"),
        }
    }

    /// Stops tracking an agent; its owner hears of it (the event is published before the agent
    /// is forgotten).
    fn untrack(&self, agent: u64, caller: Caller) -> Reply {
        self.act(
            |c| {
                // Published before the agent is forgotten (its owner sees the event).
                let ev = c
                    .get(agent)
                    .map(|a| asked_for(a, axiom_proto::wire::Action::Untrack, caller.uid));
                c.untrack(agent, caller)?;
                self.actions.terminals.release(agent);
                if let Some(ev) = ev {
                    self.bus.publish(ev);
                }
                Ok(agent)
            },
            |_| None,
        )
    }

    /// Starts an agent from a process its caller holds before exec: checks the terminal that
    /// came with it, resolves the confinement profile for its workspace and owner, recognises its
    /// kind, and gives it a cgroup of its own (what the launcher applies before exec comes back
    /// in the reply). `launch` is what the caller asked; the resolved parts are filled in here.
    fn run_agent(
        &self,
        caller: Caller,
        fd: Option<OwnedFd>,
        pid: u32,
        launch: Launch,
        pty: bool,
    ) -> Reply {
        if pty && fd.is_none() {
            return error("run_agent: pty announced but no descriptor came with it");
        }
        if fd
            .as_ref()
            .is_some_and(|f| !crate::actions::terminal::is_pty_master(f))
        {
            return error("run_agent: the descriptor is not a pseudo-terminal's master");
        }
        // The profile, resolved for this workspace and this owner: the launcher applies
        // the filesystem part before exec, the agent's cgroup gets the limits.
        let ws = launch.workspace.clone().unwrap_or_else(|| {
            std::fs::read_link(format!("/proc/{pid}/cwd"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "/".into())
        });
        // `~` is the home of the user the agent runs as (not of a root launcher).
        let owner = crate::kernel::procfs::stat(pid).map_or(caller.uid, |s| s.uid);
        let (confinement, kind) = match self.resolve(
            owner,
            &ws,
            launch.profile.as_deref(),
            &launch.command,
            launch.kind.clone(),
        ) {
            Ok(r) => r,
            Err(e) => return no_profile(e),
        };
        let terminal = fd
            .as_ref()
            .and_then(crate::kernel::pty::describe)
            .map(|(device, rows, cols)| axiom_proto::wire::Terminal { device, rows, cols });
        let launch = Launch {
            terminal,
            profile: Some(confinement.profile.clone()),
            limits: Some(confinement.limits.clone()),
            net: Some(confinement.net.clone()),
            kind: Some(kind),
            ..launch
        };
        let mut reply = self.act(|c| c.run_agent(pid, caller, launch), |a| Some(started(a)));
        if let (true, Some(agent), Some(fd)) = (reply.ok, reply.agent, fd) {
            self.actions.terminals.hold(agent, fd);
        }
        if let (true, Some(agent)) = (reply.ok, reply.agent) {
            if let Some(a) = self.agents.get(agent) {
                reply.notes = Some(
                    a.limits_not_applied
                        .iter()
                        .map(|n| format!("limit not applied: {n}"))
                        .collect(),
                );
            }
            reply.confinement = Some(confinement);
        }
        reply
    }

    /// The confinement an agent of `owner` started with `command` in `workspace` gets under
    /// `profile` (else the default), and its kind (the launcher's word for it when it is one
    /// we know, else the program's name): the profile resolved for this workspace and this
    /// owner's home, with what the kind keeps for itself writable where it lives.
    fn resolve(
        &self,
        owner: u32,
        workspace: &str,
        profile: Option<&str>,
        command: &[String],
        kind: Option<String>,
    ) -> Result<(axiom_proto::confine::Confinement, String), crate::confine::ConfineError> {
        let home = crate::confine::home_of(owner);
        let site = crate::confine::Site {
            workspace,
            home: home.as_deref(),
        };
        let mut confinement = self.confine.resolve(profile, &site)?;
        let profiles = self.actions.profiles();
        let kind = profiles.kind(command, kind.as_deref());
        let writable = profiles.of(Some(&kind)).writable;
        crate::confine::grant_state(&mut confinement, &kind, &writable, &site)?;
        Ok((confinement, kind))
    }

    /// Loads the rule files again (root and the admin group); a broken file keeps the old rules.
    fn reload(&self, caller: Caller) -> Reply {
        if !caller.admin {
            return refusal(AgentError::NotPermitted {
                uid: caller.uid,
                what: "reload the rules".into(),
            });
        }
        match self.rules.reload_into(&self.sensor) {
            Ok(n) => {
                tracing::info!(rules = n, "rules reloaded");
                Reply {
                    ok: true,
                    rules: Some(self.rules.list()),
                    ..Default::default()
                }
            }
            Err(e) => {
                tracing::warn!("rules not reloaded, the old ones stay: {e}");
                Reply {
                    code: Some(ErrorCode::BadRules),
                    ..error(e)
                }
            }
        }
    }

    pub(crate) fn agents(&self, caller: Caller) -> Vec<AgentInfo> {
        let Ok(listed) = self.agents.with(|c| c.list(caller)) else {
            return Vec::new();
        };
        listed
            .into_iter()
            .map(|v| {
                let pty = self.actions.terminals.has(v.agent.id);
                agent_info(v, pty)
            })
            .collect()
    }

    /// `axiomctl status`: each stage's part (`Describe`), and the API's own bounds.
    pub(crate) fn status(&self) -> Status {
        use crate::bus::Describe;
        let mut st = Status {
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        let parts: [&dyn Describe; 5] = [
            &self.sensor,
            &*self.agents,
            &*self.rules,
            &*self.actions,
            &*self.bus,
        ];
        for p in parts {
            p.describe(&mut st);
        }
        if let Some(store) = &self.store {
            store.describe(&mut st);
        }
        st.bounds.extend([(
            "fd_table_entries".to_string(),
            crate::sensor::FDT_ENTRIES_MAX as u64,
        )]);
        st.bounds.extend(self.clients.bounds());
        st
    }
}

#[cfg(test)]
mod tests;
