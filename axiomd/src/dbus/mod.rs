//! The D-Bus API (`org.axiom.Axiom1` at `/org/axiom/Axiom1`), for desktop tools.
//!
//! Methods map one to one onto the control socket's requests and are answered by the same code
//! (`crate::api::Shared::handle`), authorised per call from the uid and groups the bus daemon
//! reports for the caller. Agent lifecycle, interventions and violations are signals; the event
//! stream itself, which can run at tens of thousands of events a second, is never put on the
//! bus: `Subscribe` returns a socket (fd passing) that carries JSON lines.
pub(crate) mod config;

use std::{os::fd::OwnedFd, sync::Arc};

use axiom_proto::wire::{Body, ErrorCode, Reply, Request};
use tokio::sync::broadcast::error::RecvError;
use zbus::{
    DBusError, interface,
    message::Header,
    names::{BusName, ErrorName},
    object_server::SignalEmitter,
};

use crate::{
    api::{Shared, stream_subscribed},
    authz::{self, Caller, PeerProcess},
    kernel::procfs,
};

pub(crate) const PATH: &str = "/org/axiom/Axiom1";

/// A refused call: `org.freedesktop.DBus.Error.AccessDenied` when the caller may not, else
/// `org.axiom.Axiom1.Error.<Reason>` (NoSuchProcess, AlreadyTracked, NoSuchAgent, …).
#[derive(Debug)]
pub(crate) struct Failure {
    name: String,
    message: String,
}

impl Failure {
    fn from_reply(r: Reply) -> Failure {
        let message = r.error.unwrap_or_else(|| "refused".into());
        let name = match r.code {
            Some(ErrorCode::NotPermitted) => "org.freedesktop.DBus.Error.AccessDenied".to_string(),
            Some(code) => format!("org.axiom.Axiom1.Error.{}", camel(code.name())),
            None => "org.axiom.Axiom1.Error.Failed".to_string(),
        };
        Failure { name, message }
    }

    fn failed(e: impl std::fmt::Display) -> Failure {
        Failure {
            name: "org.axiom.Axiom1.Error.Failed".into(),
            message: e.to_string(),
        }
    }
}

/// `no_such_agent` → `NoSuchAgent`.
fn camel(code: &str) -> String {
    code.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for Failure {}

impl From<zbus::Error> for Failure {
    fn from(e: zbus::Error) -> Failure {
        Failure::failed(e)
    }
}

impl From<zbus::fdo::Error> for Failure {
    fn from(e: zbus::fdo::Error) -> Failure {
        Failure::failed(e)
    }
}

impl DBusError for Failure {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::Message> {
        zbus::Message::error(call, self.name()).build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::try_from(self.name.as_str()).unwrap_or_else(|_| {
            ErrorName::from_static_str_unchecked("org.axiom.Axiom1.Error.Failed")
        })
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

type Result<T> = std::result::Result<T, Failure>;

pub(crate) use axiom_proto::wire::AgentRecord;

pub(crate) struct Axiom {
    shared: Arc<Shared>,
}

impl Axiom {
    /// Who is calling, from the bus daemon (never from the message), placed inside or outside
    /// the agents from the process that connected to the bus: the bus's pidfd for it
    /// (`ProcessFD`, dbus-broker and newer dbus-daemons), else one opened from its pid (a bus
    /// that gives only a pid leaves one residue: that pid reused by a process outside every
    /// agent after the connector exited — see the README's threat model).
    async fn caller(&self, hdr: &Header<'_>, conn: &zbus::Connection) -> Result<Caller> {
        let sender = hdr
            .sender()
            .ok_or_else(|| Failure::failed("call without a sender"))?;
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let creds = dbus
            .get_connection_credentials(BusName::Unique(sender.to_owned()))
            .await?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| Failure::failed("the bus did not say who is calling"))?;
        // dbus-daemon 1.14 reports no group ids; the caller's process then tells them.
        let gids = match creds.unix_group_ids() {
            Some(g) => g.clone(),
            None => creds
                .process_id()
                .map(|p| authz::process_groups(p, uid))
                .unwrap_or_default(),
        };
        let process = match creds.process_fd() {
            Some(fd) => {
                use std::os::fd::AsFd as _;
                fd.as_fd()
                    .try_clone_to_owned()
                    .ok()
                    .and_then(PeerProcess::from_pidfd)
            }
            None => creds
                .process_id()
                .and_then(|pid| procfs::pidfd(pid).map(|pidfd| PeerProcess { pid, pidfd })),
        };
        let caller = Caller::new(uid, &gids, self.shared.admin_gid);
        Ok(self.shared.place(caller, process.as_ref()))
    }

    /// Answers a request off the async threads (cgroup writes, terminal writes may block),
    /// holding one of the caller's client places meanwhile: calls in flight are bounded per
    /// user and in all as connections to the socket are (each took a blocking thread).
    async fn call(&self, caller: Caller, req: Request) -> Result<Reply> {
        let slot = self
            .shared
            .clients
            .admit(caller)
            .map_err(|e| Failure::from_reply(e.reply()))?;
        let shared = self.shared.clone();
        let r = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            shared.handle(caller, req, None)
        })
        .await
        .map_err(Failure::failed)?;
        if r.ok {
            Ok(r)
        } else {
            Err(Failure::from_reply(r))
        }
    }

    async fn agent_call(
        &self,
        hdr: &Header<'_>,
        conn: &zbus::Connection,
        req: Request,
    ) -> Result<u64> {
        let c = self.caller(hdr, conn).await?;
        let r = self.call(c, req).await?;
        r.agent.ok_or_else(|| Failure::failed("no agent in reply"))
    }
}

#[interface(name = "org.axiom.Axiom1")]
impl Axiom {
    /// Adopts a running process and all its descendants, present and future; returns the agent.
    async fn watch_pid(
        &self,
        pid: u32,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<u64> {
        self.agent_call(&hdr, conn, Request::TrackPid { pid }).await
    }

    /// Tracks every process in a cgroup v2 directory (root and the admin group only).
    async fn track_cgroup(
        &self,
        path: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<u64> {
        self.agent_call(&hdr, conn, Request::TrackCgroup { path })
            .await
    }

    /// Starts an agent from a process the caller holds before exec (see `axiomctl run`).
    #[allow(clippy::too_many_arguments)] // the D-Bus signature
    async fn run_agent(
        &self,
        pid: u32,
        name: String,
        command: Vec<String>,
        workspace: String,
        profile: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<u64> {
        let opt = |s: String| (!s.is_empty()).then_some(s);
        let req = Request::RunAgent {
            pid,
            name: opt(name),
            command,
            workspace: opt(workspace),
            profile: opt(profile),
            pty: false,
            kind: None,
            hooks: false,
        };
        self.agent_call(&hdr, conn, req).await
    }

    async fn untrack(
        &self,
        agent: u64,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<()> {
        self.agent_call(&hdr, conn, Request::Untrack { agent })
            .await
            .map(drop)
    }

    /// SIGTERM to every process of the agent.
    async fn stop(
        &self,
        agent: u64,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<()> {
        self.agent_call(&hdr, conn, Request::Stop { agent })
            .await
            .map(drop)
    }

    async fn freeze(
        &self,
        agent: u64,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<()> {
        self.agent_call(&hdr, conn, Request::Freeze { agent })
            .await
            .map(drop)
    }

    async fn thaw(
        &self,
        agent: u64,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<()> {
        self.agent_call(&hdr, conn, Request::Thaw { agent })
            .await
            .map(drop)
    }

    async fn kill(
        &self,
        agent: u64,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<()> {
        self.agent_call(&hdr, conn, Request::Kill { agent })
            .await
            .map(drop)
    }

    /// Delivers a message to the agent (agents started by `axiomctl run`): typed the way its
    /// kind reads input, interrupting it; returns whether the agent's screen showed it.
    async fn inject(
        &self,
        agent: u64,
        text: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<bool> {
        let c = self.caller(&hdr, conn).await?;
        let r = self
            .call(
                c,
                Request::Inject {
                    agent,
                    text,
                    raw: false,
                },
            )
            .await?;
        Ok(r.delivered.unwrap_or(false))
    }

    /// The agents the caller may see.
    async fn list_agents(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<AgentRecord>> {
        // Through the request handler: from inside an agent, its own agent alone.
        let c = self.caller(&hdr, conn).await?;
        let r = self.call(c, Request::Agents).await?;
        Ok(r.agents
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.into_record())
            .collect())
    }

    /// The active rules as JSON (id, description, kind, scope, severity, priority, action, origin).
    async fn rules(&self) -> Result<String> {
        let r = self.call(Caller::ROOT, Request::Rules).await?;
        serde_json::to_string(&r.rules.unwrap_or_default()).map_err(Failure::failed)
    }

    /// Loads the rule files again (root and the admin group). A file with an error is refused
    /// with `org.axiom.Axiom1.Error.BadRules` naming file:line, and the old rules keep running.
    /// Returns how many rules are active.
    async fn reload_rules(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<u32> {
        let c = self.caller(&hdr, conn).await?;
        let r = self.call(c, Request::ReloadRules).await?;
        Ok(r.rules.map(|v| v.len() as u32).unwrap_or(0))
    }

    /// Daemon status as JSON (the same document as `axiomctl status --json`).
    async fn status(&self) -> Result<String> {
        serde_json::to_string(&self.shared.status()).map_err(Failure::failed)
    }

    /// A stream of events (JSON lines) on a socket of its own: all the caller may see, or one
    /// agent's (`agent` ≠ 0); `replay` first sends the recent events kept in memory.
    async fn subscribe(
        &self,
        agent: u64,
        replay: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<zbus::OwnedFd> {
        let c = self.caller(&hdr, conn).await?;
        let agent = (agent != 0).then_some(agent);
        self.shared
            .may_subscribe(c, agent)
            .map_err(|e| Failure::from_reply(crate::api::refusal(e)))?;
        let slot = self
            .shared
            .clients
            .admit(c)
            .map_err(|e| Failure::from_reply(e.reply()))?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(Failure::failed)?;
        ours.set_nonblocking(true).map_err(Failure::failed)?;
        let ours = tokio::net::UnixStream::from_std(ours).map_err(Failure::failed)?;
        let shared = self.shared.clone();
        let subscription = shared.bus.subscribe(replay);
        tokio::spawn(async move {
            let _slot = slot;
            let (mut r, mut w) = ours.into_split();
            // Ends when the subscriber closes its end, even if no event comes to notice it by.
            let gone = async {
                let mut buf = [0u8; 256];
                while tokio::io::AsyncReadExt::read(&mut r, &mut buf)
                    .await
                    .is_ok_and(|n| n > 0)
                {}
            };
            tokio::select! {
                _ = stream_subscribed(&mut w, &shared, c, agent, subscription) => {}
                _ = gone => {}
            }
        });
        Ok(zbus::OwnedFd::from(OwnedFd::from(theirs)))
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").into()
    }

    /// Agents known to axiomd (running and recently ended).
    #[zbus(property(emits_changed_signal = "false"))]
    fn agent_count(&self) -> u32 {
        self.shared.agents.known() as u32
    }

    /// Events delivered since axiomd started, all kinds.
    #[zbus(property(emits_changed_signal = "false"))]
    fn events_total(&self) -> u64 {
        self.shared.bus.stats.events().values().sum()
    }

    /// Events lost since axiomd started, all causes (`Status` has them by cause).
    #[zbus(property(emits_changed_signal = "false"))]
    fn lost_total(&self) -> u64 {
        self.shared.status().lost.values().sum()
    }

    #[zbus(signal)]
    async fn agent_started(
        emitter: &SignalEmitter<'_>,
        agent: u64,
        name: &str,
        owner_uid: u32,
        pid: u32,
        command: Vec<String>,
    ) -> zbus::Result<()>;

    /// `code` is -1 and `signal` the fatal signal when a signal ended it.
    #[zbus(signal)]
    async fn agent_exited(
        emitter: &SignalEmitter<'_>,
        agent: u64,
        code: i32,
        signal: i32,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn violation(
        emitter: &SignalEmitter<'_>,
        agent: u64,
        rule: &str,
        severity: &str,
        action: &str,
        detail: &str,
    ) -> zbus::Result<()>;

    /// `by_uid` is the uid that asked, or u32::MAX when a rule did.
    #[zbus(signal)]
    async fn intervention(
        emitter: &SignalEmitter<'_>,
        agent: u64,
        action: &str,
        by_uid: u32,
        detail: &str,
    ) -> zbus::Result<()>;
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DbusError {
    #[error("cannot connect to D-Bus at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: zbus::Error,
    },
    #[error(
        "cannot own {name} on D-Bus (is another axiomd running, or the policy file missing?): {source}"
    )]
    Name {
        name: String,
        #[source]
        source: zbus::Error,
    },
}

/// Connects, serves the interface, owns the name and forwards notices as signals. `Ok(None)`
/// when D-Bus is off, or when the system bus is absent (axiomd works without it).
pub(crate) async fn start(
    bus: &str,
    name: &str,
    shared: Arc<Shared>,
    sup: &mut crate::supervise::Supervisor,
) -> std::result::Result<Option<zbus::Connection>, DbusError> {
    let builder = match bus {
        "off" => return Ok(None),
        "system" => zbus::connection::Builder::system(),
        addr => zbus::connection::Builder::address(addr),
    };
    let conn = builder
        .serve_at(
            PATH,
            Axiom {
                shared: shared.clone(),
            },
        )
        .build()
        .await;
    let conn = match conn {
        Ok(c) => c,
        Err(e) if bus == "system" => {
            tracing::warn!("no D-Bus system bus ({e}): the D-Bus API is off");
            return Ok(None);
        }
        Err(source) => {
            return Err(DbusError::Connect {
                address: bus.into(),
                source,
            });
        }
    };
    conn.request_name(name)
        .await
        .map_err(|source| DbusError::Name {
            name: name.into(),
            source,
        })?;
    sup.task(
        "dbus-signals",
        crate::supervise::Role::Vital,
        signals(conn.clone(), shared),
    );
    Ok(Some(conn))
}

/// Turns agent notices from the event bus into D-Bus signals.
///
/// Signals go to every connection on the bus, any user's: they say which agent, rule and action,
/// never what the agent ran, wrote or was told (`command` is empty, `detail` is empty). Those
/// reach only callers allowed to see the agent, through `Subscribe` and `ListAgents`.
async fn signals(conn: zbus::Connection, shared: Arc<Shared>) {
    let mut rx = shared.bus.notices();
    let Ok(emitter) = SignalEmitter::new(&conn, PATH) else {
        return;
    };
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => {
                shared.bus.stats.count_loss("dbus_signal_lagged");
                tracing::warn!(missed = n, "D-Bus signals fell behind");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let r = match &ev.body {
            Body::AgentStarted { name, .. } => {
                Axiom::agent_started(
                    &emitter,
                    ev.agent,
                    name.as_deref().unwrap_or(""),
                    ev.uid,
                    ev.tgid,
                    Vec::new(),
                )
                .await
            }
            Body::AgentExited { code, signal } => {
                Axiom::agent_exited(&emitter, ev.agent, code.unwrap_or(-1), signal.unwrap_or(0))
                    .await
            }
            Body::Violation {
                rule,
                severity,
                action,
                ..
            } => {
                Axiom::violation(&emitter, ev.agent, rule, severity.name(), action.name(), "").await
            }
            Body::Intervention { action, by_uid, .. } => {
                Axiom::intervention(
                    &emitter,
                    ev.agent,
                    action.name(),
                    by_uid.unwrap_or(u32::MAX),
                    "",
                )
                .await
            }
            _ => Ok(()),
        };
        if let Err(e) = r {
            tracing::debug!("D-Bus signal: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_names() {
        assert_eq!(super::camel("no_such_agent"), "NoSuchAgent");
        assert_eq!(super::camel("init"), "Init");
    }
}
