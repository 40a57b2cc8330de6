//! An agent's life once started, followed here: its end (its root process's exit), the limits
//! its cgroup hits, and forgetting it once it has been over long enough.
use std::sync::Arc;

use axiom_proto::wire::{Body, DeniedOp, Event};

use super::{Agents, ExitStatus, Source, notice};
use crate::bus::Bus;

/// Learns from the exits of tracked processes that an agent has ended: records it (state
/// file), announces it, and calls `ended` with its id (what waited for it above lets go).
pub(crate) async fn exits(
    mut exits: tokio::sync::mpsc::UnboundedReceiver<Arc<Event>>,
    agents: Arc<Agents>,
    bus: Arc<Bus>,
    ended: impl Fn(u64) + Send + 'static,
) {
    while let Some(ev) = exits.recv().await {
        let Body::Exit { code, signal } = ev.body else {
            continue;
        };
        let status = ExitStatus { code, signal };
        let n = match agents.with(|c| {
            c.exited(ev.tgid, status)
                .map(|a| notice(a, Body::AgentExited { code, signal }))
        }) {
            Ok(n) => n,
            Err(_) => {
                tracing::error!("agent registry poisoned: agents' exits are no longer followed");
                return;
            }
        };
        if let Some(n) = n {
            ended(n.agent);
            bus.publish(n);
        }
    }
}

/// Reports each time a confined agent hits a limit (a fork refused at pids.max, an OOM kill at
/// its memory limit) as a `denied` event: the kernel keeps these as counters, read every second.
pub(crate) async fn watch_limits(agents: Arc<Agents>, bus: Arc<Bus>) {
    let mut seen: std::collections::HashMap<u64, crate::confine::limits::Hits> = Default::default();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let mut out = Vec::new();
        let _ = agents.with(|c| {
            let mut live = std::collections::HashSet::new();
            for a in c.agents() {
                let Source::Cgroup { path, .. } = &a.source else {
                    continue;
                };
                if a.limits_applied.is_empty() {
                    continue;
                }
                live.insert(a.id);
                let now = crate::confine::limits::hits(path, &a.limit_groups);
                let was = seen.insert(a.id, now).unwrap_or_default();
                let limit = |key: &str| {
                    a.limits_applied
                        .iter()
                        .find(|l| l.starts_with(key))
                        .cloned()
                        .unwrap_or_else(|| key.into())
                };
                for (op, limit_key, by, count) in [
                    (
                        DeniedOp::Fork,
                        "pids.max",
                        "cgroup pids limit",
                        now.fork_refused.saturating_sub(was.fork_refused),
                    ),
                    (
                        DeniedOp::Memory,
                        "memory.",
                        "cgroup memory limit (OOM kill)",
                        now.oom_kills.saturating_sub(was.oom_kills),
                    ),
                ] {
                    if count > 0 {
                        out.push(notice(
                            a,
                            Body::Denied {
                                op,
                                target: limit(limit_key),
                                by: by.into(),
                                count,
                            },
                        ));
                    }
                }
            }
            seen.retain(|id, _| live.contains(id));
        });
        for ev in out {
            bus.publish(ev);
        }
    }
}

/// Forgets ended agents once they are older than `keep`.
pub(crate) async fn sweep(agents: Arc<Agents>, keep: std::time::Duration) {
    // Ended agents give back the kernel's slots within seconds (`release_ended`); their
    // records are forgotten after `keep`.
    let mut tick = tokio::time::interval(
        std::time::Duration::from_secs(5).min(keep.max(std::time::Duration::from_secs(1))),
    );
    loop {
        tick.tick().await;
        if let Ok(n) = agents.with(|c| c.sweep(keep))
            && n > 0
        {
            tracing::info!(agents = n, "forgot ended agents");
        }
    }
}
