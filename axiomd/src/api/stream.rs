//! Event streams: who may follow which agent, and the stream itself (a snapshot of recent
//! events, then what the bus carries, filtered to what the caller may see).
use axiom_proto::wire::Event;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt as _},
    sync::broadcast::error::RecvError,
};

use super::Shared;
use crate::{
    agents::AgentError,
    authz::{Caller, Seat},
};

impl Shared {
    /// Checks a subscription: the agent (if one is named) exists and the caller may watch it.
    pub(crate) fn may_subscribe(
        &self,
        caller: Caller,
        agent: Option<u64>,
    ) -> Result<(), AgentError> {
        // From inside an agent: its own events only; unplaced: none.
        match caller.seat {
            Seat::Outside => {}
            Seat::Agent(own) if agent == Some(own) => {}
            Seat::Agent(own) => {
                return Err(AgentError::NotPermitted {
                    uid: caller.uid,
                    what: format!("watch other agents from inside agent {own}"),
                });
            }
            Seat::Unplaced => {
                return Err(AgentError::NotPermitted {
                    uid: caller.uid,
                    what: "watch agents on a connection whose process is gone".into(),
                });
            }
        }
        let Some(a) = agent else { return Ok(()) };
        self.agents
            .with(|c| c.authorised(a, caller, "watch").map(|_| ()))
            .map_err(|p| AgentError::Map {
                map: "registry",
                reason: p.to_string(),
            })?
    }
}

pub(crate) async fn write_line<W, T>(w: &mut W, v: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: serde::Serialize,
{
    let mut s = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    s.push(b'\n');
    w.write_all(&s).await
}

/// Streams events as JSON lines into `w` until the reader goes away, from a subscription taken
/// before the caller was answered (so that nothing that happens after the answer is missed).
/// Root and admins see all; a user sees events of their own uid and of agents they own.
pub(crate) async fn stream_subscribed<W: AsyncWrite + Unpin>(
    w: &mut W,
    shared: &Shared,
    caller: Caller,
    agent: Option<u64>,
    subscription: crate::bus::Subscribed,
) -> std::io::Result<()> {
    let owned = |a: u64| shared.agents.owner_of(a).is_some_and(|o| o == caller.uid);
    let wanted = |ev: &Event| {
        agent.is_none_or(|a| ev.agent == a)
            && (caller.admin || ev.uid == caller.uid || owned(ev.agent))
    };
    let (snap, mut rx) = subscription;
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
