//! What clients may ask of axiomd, answered the same way whichever way they come in: the control
//! socket (`socket.rs`, JSON lines, used by axiomctl) or D-Bus (`crate::dbus`).
//!
//! Every call is authorised from the caller's kernel-reported identity (`crate::authz::Caller`):
//! a user may track, watch and steer only their own processes and agents; root and the admin
//! group may do all. `status` is open.
pub mod socket;

use std::{
    os::fd::OwnedFd,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axiom_common::wire::{AgentInfo, Body, Event, Reply, Request, Status};
use tokio::{
    io::{AsyncWrite, AsyncWriteExt as _},
    sync::broadcast::error::RecvError,
};

use crate::{
    actions::terminal::Terminals,
    agents::{Agent, AgentError, AgentView, Control, Launch, Source, Steer},
    authz::Caller,
    bus::Bus,
    kernel::Sensor,
};

/// What the front-ends share.
pub struct Shared {
    pub control: Mutex<Control>,
    pub bus: Arc<Bus>,
    pub sensor: Mutex<Sensor>,
    pub terminals: Arc<Terminals>,
    /// gid of the admin group, resolved at start-up.
    pub admin_gid: Option<u32>,
    pub rules: crate::rules::Rules,
    /// Per-agent rule state, shared by the reader thread (kernel matches, found where they
    /// arrive) and the rules thread (everything else).
    pub engine: Mutex<crate::rules::engine::Engine>,
    /// Findings whose intervention the actions thread carries out.
    pub actions: std::sync::mpsc::SyncSender<(
        Arc<axiom_common::rules::RuleSet>,
        crate::rules::engine::Finding,
    )>,
    /// Typed around an `inject` rule's message.
    pub inject_keys: (String, String),
    /// The pause between the keys before the message, the message and the keys after it.
    pub inject_gap: std::time::Duration,
    /// The event store's tiers (none when the store is off).
    pub store: Option<crate::store::Running>,
    /// Confinement profiles (`axiomctl run --profile`).
    pub confine: crate::confine::ConfineConfig,
}

pub fn error(e: impl std::fmt::Display) -> Reply {
    Reply {
        ok: false,
        error: Some(e.to_string()),
        ..Default::default()
    }
}

pub fn refusal(e: AgentError) -> Reply {
    Reply {
        code: Some(e.code().into()),
        ..error(e)
    }
}

fn ok_agent(agent: u64) -> Reply {
    Reply {
        ok: true,
        agent: Some(agent),
        ..Default::default()
    }
}

pub fn agent_info(v: AgentView, pty: bool) -> AgentInfo {
    let a = v.agent;
    let kind = match a.source {
        Source::Cgroup { .. } => "cgroup",
        Source::Process { .. } => "process",
        Source::Restored => "restored",
    };
    let state = if v.processes.is_empty() {
        "exited"
    } else if v.frozen {
        "frozen"
    } else {
        "running"
    };
    let exit = a.exit.unwrap_or_default();
    AgentInfo {
        id: a.id,
        name: a.name,
        owner_uid: a.owner_uid,
        kind: kind.into(),
        cgroup: v.cgroup.map(|p| p.display().to_string()),
        state: state.into(),
        pids: v.processes,
        leader: a.leader,
        command: a.command,
        workspace: a.workspace,
        profile: a.profile,
        started_ns: a.started_ns,
        exit_code: exit.code,
        exit_signal: exit.signal,
        pty,
    }
}

/// An event about an agent as a whole (not from the kernel): stamped now, attributed to its root.
pub fn notice(a: &Agent, body: Body) -> Event {
    Event {
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

fn started(a: &Agent) -> Event {
    notice(
        a,
        Body::AgentStarted {
            name: a.name.clone(),
            command: a.command.clone(),
            workspace: a.workspace.clone(),
            profile: a.profile.clone(),
        },
    )
}

/// How long an injected message may take to show on the agent's screen.
const INJECT_CONFIRM: std::time::Duration = std::time::Duration::from_secs(3);

impl Shared {
    /// Runs an agent operation under the control lock; on success publishes what `after`
    /// makes of the agent (started, intervention) once the lock is released.
    fn act(
        &self,
        f: impl FnOnce(&mut Control) -> Result<u64, AgentError>,
        after: impl FnOnce(&Agent) -> Option<Event>,
    ) -> Reply {
        let Ok(mut c) = self.control.lock() else {
            return error("control state poisoned");
        };
        match f(&mut c) {
            Ok(agent) => {
                // Secrets on the command line never reach the record, the state file or events.
                let rules = self.rules.get();
                c.mask_command(agent, |a| rules.redact(None, a).map(|(m, _)| m));
                let ev = c.get(agent).and_then(after);
                drop(c);
                if let Some(ev) = ev {
                    self.bus.publish(ev);
                }
                ok_agent(agent)
            }
            Err(e) => refusal(e),
        }
    }

    fn intervene(&self, agent: u64, how: Steer, caller: Caller) -> Reply {
        let action = format!("{how:?}").to_lowercase();
        self.act(
            |c| c.steer(agent, how, caller),
            |a| {
                Some(notice(
                    a,
                    Body::Intervention {
                        action: action.clone(),
                        by_uid: Some(caller.uid),
                        detail: String::new(),
                        rule: None,
                        detect_us: None,
                        act_us: None,
                        delivered: None,
                    },
                ))
            },
        )
    }

    fn inject(&self, agent: u64, text: &str, caller: Caller) -> Reply {
        let a = match self.control.lock() {
            Ok(c) => match c.authorised(agent, caller, "type into") {
                Ok(a) => a.clone(),
                Err(e) => return refusal(e),
            },
            Err(_) => return error("control state poisoned"),
        };
        if let Ok(mut e) = self.engine.lock() {
            e.typed(agent, text);
        }
        if let Err(e) = self.terminals.inject(agent, text.as_bytes()) {
            let code = match e {
                crate::actions::terminal::TerminalError::NoTerminal(_) => "no_terminal",
                _ => "terminal_closed",
            };
            return Reply {
                code: Some(code.into()),
                ..error(e)
            };
        }
        self.bus.publish(notice(
            &a,
            Body::Intervention {
                action: "inject".into(),
                by_uid: Some(caller.uid),
                detail: text.into(),
                rule: None,
                detect_us: None,
                act_us: None,
                delivered: None,
            },
        ));
        ok_agent(agent)
    }

    /// The rule of a finding and the agent it is about (as they are now).
    fn finding_parts<'s>(
        &self,
        set: &'s axiom_common::rules::RuleSet,
        f: &crate::rules::engine::Finding,
    ) -> Option<(&'s axiom_common::rules::Rule, Agent)> {
        let r = set.rules.get(f.rule)?;
        let agent = self.control.lock().ok()?.get(f.agent).cloned()?;
        Some((r, agent))
    }

    /// Acts on a rule's finding: the `violation` event, then the rule's intervention (as axiomd,
    /// not as any user) and its `intervention` event with how long acting took.
    pub fn enforce(
        &self,
        set: &Arc<axiom_common::rules::RuleSet>,
        f: crate::rules::engine::Finding,
    ) {
        let Some((r, agent)) = self.finding_parts(set, &f) else {
            return;
        };
        let mut v = notice(
            &agent,
            Body::Violation {
                rule: r.id.clone(),
                severity: format!("{:?}", r.severity).to_lowercase(),
                action: r.action.name().into(),
                detail: f.detail.clone(),
                latency_us: f.latency_us,
                scope: f.scope.map(|s| s.name().to_string()),
                path: f.path.clone(),
            },
        );
        if f.pid != 0 {
            (v.pid, v.tgid) = (f.pid, f.pid);
        }
        self.bus.publish(v);
        if r.action == axiom_common::rules::Action::Alert {
            return;
        }
        // Acting may block (a terminal, a cgroup file): it happens on the actions thread, so the
        // thread that found the violation goes straight back to finding.
        if let Err(std::sync::mpsc::TrySendError::Full(_)) = self.actions.try_send((set.clone(), f))
        {
            self.bus.stats.count_loss("actions_backlog");
        }
    }

    /// Reports a plugin call a sandbox limit stopped: a `denied` event on the agent whose event
    /// it was looking at (the sandbox refused the plugin more fuel, memory or time).
    pub fn plugin_fault(
        &self,
        set: &axiom_common::rules::RuleSet,
        f: &crate::rules::engine::PluginFault,
    ) {
        let Some(r) = set.rules.get(f.rule) else {
            return;
        };
        let path = r
            .plugin
            .as_ref()
            .map(|p| p.plugin.path.display().to_string())
            .unwrap_or_default();
        tracing::warn!(rule = %r.id, plugin = %path, fault = %f.fault, switched_off = f.disabled, "plugin call stopped");
        let Some(agent) = self
            .control
            .lock()
            .ok()
            .and_then(|c| c.get(f.agent).cloned())
        else {
            return;
        };
        let mut by = f.fault.to_string();
        if f.disabled {
            by.push_str(&format!(
                "; switched off after {} stopped calls in a row, until the rules reload",
                axiom_common::rules::PLUGIN_STRIKES
            ));
        }
        let mut ev = notice(
            &agent,
            Body::Denied {
                op: "plugin".into(),
                target: format!("rule {} ({path})", r.id),
                by,
                count: 1,
            },
        );
        if f.pid != 0 {
            (ev.pid, ev.tgid) = (f.pid, f.pid);
        }
        self.bus.publish(ev);
    }

    /// Carries out a finding's intervention and reports it.
    /// Carries out a finding's action (an inject is typed, paced, and confirmed on the agent's
    /// screen).
    pub fn intervene_for(
        &self,
        set: &axiom_common::rules::RuleSet,
        f: &crate::rules::engine::Finding,
    ) {
        use axiom_common::rules::Action;
        let Some((r, agent)) = self.finding_parts(set, f) else {
            return;
        };
        let action = crate::rules::engine::effective(r.action, f.in_kernel);
        let t0 = std::time::Instant::now();
        let Some(action) = action else {
            self.bus.publish(notice(
                &agent,
                Body::Intervention {
                    action: "deny".into(),
                    by_uid: None,
                    detail: format!(
                        "rule {}: pid {} killed in the kernel before its write landed",
                        r.id, f.pid
                    ),
                    rule: Some(r.id.clone()),
                    detect_us: f.latency_us,
                    act_us: Some(0.0),
                    delivered: None,
                },
            ));
            return;
        };
        let mut delivered = None;
        let outcome = match action {
            Action::Alert => return,
            Action::Inject => {
                let paste = self.engine.lock().is_ok_and(|e| e.pastes(f.agent));
                let typing = crate::actions::terminal::Typing {
                    before: &self.inject_keys.0,
                    text: &r.message,
                    after: &self.inject_keys.1,
                    paste,
                    gap: self.inject_gap,
                };
                let typed = self
                    .terminals
                    .type_paced(f.agent, &typing)
                    .map_err(|e| e.to_string());
                if typed.is_ok() {
                    // A line-mode reader got the line from the kernel; a TUI shows what it
                    // took.
                    delivered = Some(
                        self.terminals.canonical(f.agent)
                            || self.await_on_screen(f.agent, &r.message),
                    );
                }
                typed
            }
            Action::Freeze | Action::Kill | Action::Deny => {
                let how = if action == Action::Freeze {
                    Steer::Freeze
                } else {
                    Steer::Kill
                };
                match self.control.lock() {
                    Ok(mut c) => c
                        .steer(f.agent, how, Caller::ROOT)
                        .map(drop)
                        .map_err(|e| e.to_string()),
                    Err(_) => Err("control state poisoned".into()),
                }
            }
        };
        let took = t0.elapsed().as_secs_f64() * 1e6;
        let detail = match (outcome, delivered) {
            (Ok(()), Some(false)) => format!(
                "rule {}: typed, but the agent's screen did not show it: {}",
                r.id, r.message
            ),
            (Ok(()), _) => format!("rule {}: {}", r.id, r.message),
            (Err(e), _) => format!("rule {}: failed: {e}", r.id),
        };
        self.bus.publish(notice(
            &agent,
            Body::Intervention {
                action: action.name().into(),
                by_uid: None,
                detail,
                rule: Some(r.id.clone()),
                detect_us: f.latency_us,
                act_us: Some(took),
                delivered,
            },
        ));
    }

    /// Waits (up to INJECT_CONFIRM) for the agent's screen to show the start of a message typed
    /// into it: the agent took it as input.
    fn await_on_screen(&self, agent: u64, message: &str) -> bool {
        let head: String = message
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        let t0 = std::time::Instant::now();
        while t0.elapsed() < INJECT_CONFIRM {
            if self.engine.lock().is_ok_and(|e| e.shows(agent, &head)) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
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
                code: Some("no_store".into()),
                ..error("the event store is off (store.enabled = false)")
            };
        };
        if !caller.admin {
            if sql.is_some() {
                return refusal(AgentError::NotPermitted {
                    uid: caller.uid,
                    what: "run SQL on the event store".into(),
                });
            }
            let owned: Vec<u64> = match self.control.lock() {
                Ok(c) => c.list(caller).into_iter().map(|v| v.agent.id).collect(),
                Err(_) => return error("control state poisoned"),
            };
            q.visible_to = Some((caller.uid, owned));
        }
        let bad = |e: crate::store::StoreError| Reply {
            code: Some("bad_query".into()),
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

    /// Loads the rule files again and puts their literals into the kernel matcher. On error the
    /// old rules keep running, in userspace and in the kernel.
    pub fn reload_rules(&self) -> Result<usize, axiom_common::rules::RuleError> {
        let set = self.rules.reload()?;
        self.install_matcher(set.clone());
        Ok(set.rules.len())
    }

    /// Puts a rule set's literals into the kernel (a failure leaves matching to userspace).
    pub fn install_matcher(&self, set: Arc<axiom_common::rules::RuleSet>) {
        let table = match self.sensor.lock() {
            Ok(mut s) => s.install_matcher(set.kernel.as_ref().map(|k| &*k.table)),
            Err(_) => return,
        };
        match table {
            Ok(0) => {}
            Ok(t) => {
                if let Some(k) = &set.kernel {
                    tracing::info!(
                        table = t,
                        states = k.states,
                        classes = k.classes,
                        literals = k.patterns.len(),
                        "kernel matcher installed"
                    );
                }
                self.rules.set_table(t, set);
            }
            Err(e) => tracing::warn!("kernel matcher not installed, userspace matches alone: {e}"),
        }
    }

    fn rules_list(&self) -> Vec<axiom_common::wire::RuleInfo> {
        use axiom_common::rules::Kind;
        self.rules
            .get()
            .rules
            .iter()
            .map(|r| axiom_common::wire::RuleInfo {
                id: r.id.clone(),
                description: r.description.clone(),
                kind: match r.kind {
                    Kind::Match => "match",
                    Kind::Claim(_) => "claim",
                    Kind::PlanningTimeout(_) => "planning_timeout",
                    Kind::ProgressCheck(_) => "progress_check",
                    Kind::Plugin => "plugin",
                }
                .into(),
                scope: (!r.scopes.is_empty()).then(|| {
                    r.scopes
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(",")
                }),
                severity: format!("{:?}", r.severity).to_lowercase(),
                priority: r.priority,
                action: r.action.name().into(),
                origin: r.origin.clone(),
            })
            .collect()
    }

    /// Answers one request. `fd` is a descriptor that came with it (the pty of `run_agent`).
    pub fn handle(&self, caller: Caller, req: Request, fd: Option<OwnedFd>) -> Reply {
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
            Request::Untrack { agent } => self.act(
                |c| {
                    // Published before the agent is forgotten (its owner sees the event).
                    let ev = c.get(agent).map(|a| {
                        notice(
                            a,
                            Body::Intervention {
                                action: "untrack".into(),
                                by_uid: Some(caller.uid),
                                detail: String::new(),
                                rule: None,
                                detect_us: None,
                                act_us: None,
                                delivered: None,
                            },
                        )
                    });
                    c.untrack(agent, caller)?;
                    self.terminals.release(agent);
                    if let Some(ev) = ev {
                        self.bus.publish(ev);
                    }
                    Ok(agent)
                },
                |_| None,
            ),
            Request::RunAgent {
                pid,
                name,
                command,
                workspace,
                profile,
                pty,
            } => {
                if pty && fd.is_none() {
                    return error("run_agent: pty announced but no descriptor came with it");
                }
                // The profile, resolved for this workspace and this owner: the launcher applies
                // the filesystem part before exec, the agent's cgroup gets the limits.
                let ws = workspace.clone().unwrap_or_else(|| {
                    std::fs::read_link(format!("/proc/{pid}/cwd"))
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "/".into())
                });
                // `~` is the home of the user the agent runs as (not of a root launcher).
                let owner = crate::agents::procfs::stat(pid).map_or(caller.uid, |s| s.uid);
                let home = crate::confine::home_of(owner);
                let site = crate::confine::Site {
                    workspace: &ws,
                    home: home.as_deref(),
                };
                let confinement = match self.confine.resolve(profile.as_deref(), &site) {
                    Ok(c) => c,
                    Err(e) => {
                        return Reply {
                            code: Some("no_such_profile".into()),
                            ..error(e)
                        };
                    }
                };
                let launch = Launch {
                    name,
                    command,
                    workspace,
                    profile: Some(confinement.profile.clone()),
                    limits: Some(confinement.limits.clone()),
                    net: Some(confinement.net.clone()),
                };
                let mut reply =
                    self.act(|c| c.run_agent(pid, caller, launch), |a| Some(started(a)));
                if let (true, Some(agent), Some(fd)) = (reply.ok, reply.agent, fd) {
                    self.terminals.hold(agent, fd);
                }
                if let (true, Some(agent)) = (reply.ok, reply.agent) {
                    if let Ok(c) = self.control.lock()
                        && let Some(a) = c.get(agent)
                    {
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
            Request::Inject { agent, text } => self.inject(agent, &text, caller),
            Request::Stop { agent } => self.intervene(agent, Steer::Stop, caller),
            Request::Freeze { agent } => self.intervene(agent, Steer::Freeze, caller),
            Request::Thaw { agent } => self.intervene(agent, Steer::Thaw, caller),
            Request::Kill { agent } => self.intervene(agent, Steer::Kill, caller),
            Request::Agents => Reply {
                ok: true,
                agents: Some(self.agents(caller)),
                ..Default::default()
            },
            Request::Query {
                agent,
                since_ns,
                until_ns,
                kinds,
                text,
                limit,
                sql,
            } => {
                let q = crate::store::query::Query {
                    agent,
                    since_ns,
                    until_ns,
                    kinds,
                    text,
                    limit,
                    visible_to: None,
                };
                self.query(caller, q, sql)
            }
            Request::Rules => Reply {
                ok: true,
                rules: Some(self.rules_list()),
                ..Default::default()
            },
            Request::ReloadRules => {
                if !caller.admin {
                    return refusal(AgentError::NotPermitted {
                        uid: caller.uid,
                        what: "reload the rules".into(),
                    });
                }
                match self.reload_rules() {
                    Ok(n) => {
                        tracing::info!(rules = n, "rules reloaded");
                        Reply {
                            ok: true,
                            rules: Some(self.rules_list()),
                            ..Default::default()
                        }
                    }
                    Err(e) => {
                        tracing::warn!("rules not reloaded, the old ones stay: {e}");
                        Reply {
                            code: Some("bad_rules".into()),
                            ..error(e)
                        }
                    }
                }
            }
            Request::Subscribe { .. } => error("subscribe is handled by the transport"),
        }
    }

    pub fn agents(&self, caller: Caller) -> Vec<AgentInfo> {
        let Ok(c) = self.control.lock() else {
            return Vec::new();
        };
        c.list(caller)
            .into_iter()
            .map(|v| {
                let pty = self.terminals.has(v.agent.id);
                agent_info(v, pty)
            })
            .collect()
    }

    pub fn status(&self) -> Status {
        let mut st = Status {
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        if let Ok(s) = self.sensor.lock() {
            st.pin_dir = s.pins.root.display().to_string();
            st.reused_pins = s.reused;
            st.startup_ms = s.startup.as_secs_f64() * 1e3;
            st.attached = s.attached.iter().map(|s| s.to_string()).collect();
            st.skipped = s.skipped.iter().map(|s| s.to_string()).collect();
            for (cause, n) in s.lost_counts() {
                st.lost.insert(cause.name().into(), n);
            }
        }
        if let Ok(c) = self.control.lock() {
            (st.tracked_processes, st.tracked_cgroups) = c.tracked_counts();
        }
        let stats = &self.bus.stats;
        st.events = stats.events();
        if let Ok(m) = stats.losses.lock() {
            st.lost.extend(m.iter().map(|(k, v)| (k.to_string(), *v)));
        }
        if let Some(p) = self.bus.store_pressure() {
            let get =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            st.lost
                .insert("store_shed_output".into(), get(&p.shed_output));
            st.lost
                .insert("store_coalesced_output".into(), get(&p.coalesced_output));
            if let Some(store) = &self.store {
                st.store = store.status();
            }
            st.store.insert("queued_bytes".into(), get(&p.queued_bytes));
        }
        st.lost.insert(
            "subscriber_lagged".into(),
            stats.lagged.load(std::sync::atomic::Ordering::Relaxed),
        );
        st
    }

    /// Checks a subscription: the agent (if one is named) exists and the caller may watch it.
    pub fn may_subscribe(&self, caller: Caller, agent: Option<u64>) -> Result<(), AgentError> {
        let Some(a) = agent else { return Ok(()) };
        let c = self.control.lock().map_err(|_| AgentError::Map {
            map: "registry",
            reason: "control state poisoned".into(),
        })?;
        c.authorised(a, caller, "watch").map(|_| ())
    }
}

pub async fn write_line<W, T>(w: &mut W, v: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: serde::Serialize,
{
    let mut s = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    s.push(b'\n');
    w.write_all(&s).await
}

/// Streams events as JSON lines into `w` (after the subscription was accepted) until the
/// reader goes away. Root and admins see all; a user sees events of their own uid and of
/// agents they own.
pub async fn stream_events<W: AsyncWrite + Unpin>(
    w: &mut W,
    shared: &Shared,
    caller: Caller,
    replay: bool,
    agent: Option<u64>,
) -> std::io::Result<()> {
    let owned = |a: u64| {
        shared
            .control
            .lock()
            .ok()
            .and_then(|c| c.owner_of(a))
            .is_some_and(|o| o == caller.uid)
    };
    let wanted = |ev: &Event| {
        agent.is_none_or(|a| ev.agent == a)
            && (caller.admin || ev.uid == caller.uid || owned(ev.agent))
    };
    let (snap, mut rx) = shared.bus.subscribe(replay);
    for ev in snap.iter().filter(|e| wanted(e)) {
        write_line(w, ev.as_ref()).await?;
    }
    loop {
        match rx.recv().await {
            Ok(ev) => {
                if wanted(&ev) {
                    write_line(w, ev.as_ref()).await?;
                }
            }
            Err(RecvError::Lagged(n)) => shared.bus.lagged(n),
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}
