//! axiomd over D-Bus, as the user running `axiomctl mcp`: axiomd authorises every call from the
//! caller's uid as the bus daemon reports it, so the MCP server can do no more than its user.
use std::sync::Arc;

use axiom_common::wire::{AgentInfo, AgentRecord, Event};
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

/// The system bus, or the bus at `address` (a private bus in tests, `unix:path=…`).
pub async fn connect(address: Option<&str>) -> anyhow::Result<Axiom1Proxy<'static>> {
    let conn = match address {
        None | Some("system") => zbus::Connection::system().await?,
        Some(a) => zbus::connection::Builder::address(a).build().await?,
    };
    Ok(Axiom1Proxy::new(&conn).await?)
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
pub async fn agents(p: &Axiom1Proxy<'_>) -> zbus::Result<Vec<AgentInfo>> {
    Ok(p.list_agents()
        .await?
        .into_iter()
        .map(AgentInfo::from_record)
        .collect())
}

/// Follows every event the caller may see into the journal, from the recent ones axiomd keeps
/// in memory on; subscribes again (after a pause) when the stream ends, e.g. when axiomd
/// restarts.
pub async fn follow(p: Axiom1Proxy<'static>, journal: Arc<Journal>) {
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match stream(&p, &journal).await {
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
