//! axiomd as the MCP server reaches it, as the user running `axiomctl mcp`: over D-Bus (axiomd
//! authorises every call from the caller's uid as the bus daemon reports it) or, on a host
//! without a system bus (containers, CI runners, this project's own test machine), over its
//! control socket (authorised from the kernel's SO_PEERCRED): either way the MCP server can do
//! no more than its user.
use std::{path::PathBuf, sync::Arc};

use axiom_proto::wire::{AgentInfo, AgentRecord, Connection, Event, Reply, Request};
use tokio::io::AsyncBufReadExt as _;

use super::journal::Journal;

#[zbus::proxy(
    interface = "org.axiom.Axiom1",
    default_service = "org.axiom.Axiom1",
    default_path = "/org/axiom/Axiom1"
)]
pub trait Axiom1 {
    fn list_agents(&self) -> zbus::Result<Vec<AgentRecord>>;
    fn stop(&self, agent: u64) -> zbus::Result<()>;
    fn freeze(&self, agent: u64) -> zbus::Result<()>;
    fn thaw(&self, agent: u64) -> zbus::Result<()>;
    fn kill(&self, agent: u64) -> zbus::Result<()>;
    fn inject(&self, agent: u64, text: &str) -> zbus::Result<bool>;
    fn rules(&self) -> zbus::Result<String>;
    fn status(&self) -> zbus::Result<String>;
    fn subscribe(&self, agent: u64, replay: bool) -> zbus::Result<zbus::OwnedFd>;
}

/// axiomd, over D-Bus or its control socket.
#[derive(Clone)]
pub enum Daemon {
    Bus(Axiom1Proxy<'static>),
    Socket(PathBuf),
}

/// The system bus, or the bus at `address` (a private bus in tests, `unix:path=…`). Without a
/// system bus (none running: `system` was not asked for by name) axiomd's control socket.
pub async fn connect(address: Option<&str>, socket: &std::path::Path) -> anyhow::Result<Daemon> {
    let conn = match address {
        None | Some("system") => match zbus::Connection::system().await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(
                    "no system bus ({e}): using axiomd's control socket {}",
                    socket.display()
                );
                return Ok(Daemon::Socket(socket.to_path_buf()));
            }
        },
        Some("socket") => return Ok(Daemon::Socket(socket.to_path_buf())),
        Some(a) => zbus::connection::Builder::address(a).build().await?,
    };
    Ok(Daemon::Bus(Axiom1Proxy::new(&conn).await?))
}

impl Daemon {
    /// One request over the control socket (blocking I/O, off the async threads); a refusal is
    /// an error with axiomd's reason.
    async fn call(path: &std::path::Path, req: Request) -> zbus::Result<Reply> {
        let path = path.to_path_buf();
        let r = tokio::task::spawn_blocking(move || Connection::connect(&path)?.request(&req))
            .await
            .map_err(|e| zbus::Error::Failure(e.to_string()))?
            .map_err(|e| zbus::Error::Failure(e.to_string()))?;
        if r.ok {
            Ok(r)
        } else {
            Err(zbus::Error::Failure(
                r.error.unwrap_or_else(|| "refused".into()),
            ))
        }
    }

    async fn steer(&self, req: Request) -> zbus::Result<()> {
        match self {
            Daemon::Bus(p) => match req {
                Request::Stop { agent } => p.stop(agent).await,
                Request::Freeze { agent } => p.freeze(agent).await,
                Request::Thaw { agent } => p.thaw(agent).await,
                Request::Kill { agent } => p.kill(agent).await,
                _ => Err(zbus::Error::Failure("not a steering request".into())),
            },
            Daemon::Socket(path) => Self::call(path, req).await.map(drop),
        }
    }

    pub async fn stop(&self, agent: u64) -> zbus::Result<()> {
        self.steer(Request::Stop { agent }).await
    }
    pub async fn freeze(&self, agent: u64) -> zbus::Result<()> {
        self.steer(Request::Freeze { agent }).await
    }
    pub async fn thaw(&self, agent: u64) -> zbus::Result<()> {
        self.steer(Request::Thaw { agent }).await
    }
    pub async fn kill(&self, agent: u64) -> zbus::Result<()> {
        self.steer(Request::Kill { agent }).await
    }

    /// Delivers a message to the agent; whether it arrived.
    pub async fn inject(&self, agent: u64, text: &str) -> zbus::Result<bool> {
        match self {
            Daemon::Bus(p) => p.inject(agent, text).await,
            Daemon::Socket(path) => {
                let req = Request::Inject {
                    agent,
                    text: text.into(),
                    raw: false,
                };
                Ok(Self::call(path, req).await?.delivered.unwrap_or(false))
            }
        }
    }

    /// The active rules (JSON).
    pub async fn rules(&self) -> zbus::Result<String> {
        match self {
            Daemon::Bus(p) => p.rules().await,
            Daemon::Socket(path) => {
                let r = Self::call(path, Request::Rules).await?;
                serde_json::to_string(&r.rules.unwrap_or_default())
                    .map_err(|e| zbus::Error::Failure(e.to_string()))
            }
        }
    }

    /// axiomd's status (JSON).
    pub async fn status(&self) -> zbus::Result<String> {
        match self {
            Daemon::Bus(p) => p.status().await,
            Daemon::Socket(path) => {
                let r = Self::call(path, Request::Status).await?;
                serde_json::to_string(&r.status.unwrap_or_default())
                    .map_err(|e| zbus::Error::Failure(e.to_string()))
            }
        }
    }
}

/// A D-Bus error as the model should read it: axiomd's reason, without the error name's prefix
/// when it has a message.
pub fn reason(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(msg), _) => format!("{msg} ({name})"),
        zbus::Error::MethodError(name, None, _) => name.to_string(),
        other => other.to_string(),
    }
}

/// The agents the caller may see.
pub async fn agents(d: &Daemon) -> zbus::Result<Vec<AgentInfo>> {
    match d {
        Daemon::Bus(p) => Ok(p
            .list_agents()
            .await?
            .into_iter()
            .map(AgentInfo::from_record)
            .collect()),
        Daemon::Socket(path) => Ok(Daemon::call(path, Request::Agents)
            .await?
            .agents
            .unwrap_or_default()),
    }
}

/// Follows every event the caller may see into the journal, from the recent ones axiomd keeps
/// in memory on; subscribes again (after a pause) when the stream ends, e.g. when axiomd
/// restarts.
pub async fn follow(d: Daemon, journal: Arc<Journal>) {
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        let r = match &d {
            Daemon::Bus(p) => stream(p, &journal).await,
            Daemon::Socket(path) => {
                let (path, journal) = (path.clone(), journal.clone());
                tokio::task::spawn_blocking(move || stream_socket(&path, &journal))
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r)
            }
        };
        match r {
            Ok(()) => tracing::info!("axiomd's event stream ended; subscribing again"),
            Err(e) => tracing::warn!("axiomd's event stream: {e:#}"),
        }
        journal.set_connected(false);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
}

async fn stream(p: &Axiom1Proxy<'_>, journal: &Journal) -> anyhow::Result<()> {
    // Which axiomd answers: its unique bus name changes when it restarts.
    let dbus = zbus::fdo::DBusProxy::new(p.inner().connection()).await?;
    let owner = dbus
        .get_name_owner(zbus::names::BusName::try_from("org.axiom.Axiom1")?)
        .await?;
    let fd = p.subscribe(0, true).await?;
    journal.begin_stream(owner.as_str());
    let std_fd: std::os::fd::OwnedFd = fd.into();
    let sock = std::os::unix::net::UnixStream::from(std_fd);
    sock.set_nonblocking(true)?;
    let sock = tokio::net::UnixStream::from_std(sock)?;
    journal.set_connected(true);
    let mut lines = tokio::io::BufReader::new(sock).lines();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Event>(&line) {
            Ok(ev) => journal.record(ev),
            Err(e) => tracing::debug!("unreadable event from axiomd: {e}"),
        }
    }
    Ok(())
}

/// The event stream over the control socket (blocking: on a thread of its own).
fn stream_socket(path: &std::path::Path, journal: &Journal) -> anyhow::Result<()> {
    let mut c = Connection::connect(path)?;
    let r = c.subscribe(true, None)?;
    if !r.ok {
        anyhow::bail!("subscribe: {}", r.error.unwrap_or_default());
    }
    journal.begin_stream(&format!("socket:{}", path.display()));
    journal.set_connected(true);
    loop {
        if let Some(ev) = c.next_event()? {
            journal.record(ev);
        }
    }
}
