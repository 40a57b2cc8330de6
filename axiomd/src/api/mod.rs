//! The control socket: JSON lines over a Unix stream socket, one request per line.
//!
//! Every call is authorised from the peer's credentials (SO_PEERCRED), not from anything the client
//! says: a user may track and watch only their own processes; root may do all. `status` is open.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axiom_common::wire::{AgentInfo, Event, Reply, Request, Status};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream, unix::OwnedWriteHalf},
    sync::broadcast::error::RecvError,
};

use crate::{
    agents::{AgentView, Control, Source, Steer},
    bus::Bus,
    kernel::Sensor,
};

/// What the API needs from the daemon.
pub struct Shared {
    pub control: Mutex<Control>,
    pub bus: Arc<Bus>,
    pub sensor: Mutex<Sensor>,
}

pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    // Open to all local users: authorisation is per call, from the peer's uid.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = client(stream, shared).await {
                        tracing::debug!("client: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

fn error(e: impl std::fmt::Display) -> Reply {
    Reply {
        ok: false,
        error: Some(e.to_string()),
        ..Default::default()
    }
}

async fn write_line<T: serde::Serialize>(w: &mut OwnedWriteHalf, v: &T) -> std::io::Result<()> {
    let mut s = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    s.push(b'\n');
    w.write_all(&s).await
}

async fn client(stream: UnixStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                write_line(&mut w, &error(format!("bad request: {e}"))).await?;
                continue;
            }
        };
        match req {
            Request::Subscribe { replay, agent } => {
                return subscribe(&mut w, &shared, uid, replay, agent).await;
            }
            other => {
                let reply = handle(&shared, uid, other);
                write_line(&mut w, &reply).await?;
            }
        }
    }
    Ok(())
}

fn agent_info(v: AgentView) -> AgentInfo {
    let kind = match v.agent.source {
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
    AgentInfo {
        id: v.agent.id,
        name: v.agent.name,
        owner_uid: v.agent.owner_uid,
        kind: kind.into(),
        cgroup: v.cgroup.map(|p| p.display().to_string()),
        state: state.into(),
        pids: v.processes,
    }
}

/// Runs an agent operation under the control lock; the reply names the agent or the error.
fn with_control(
    shared: &Shared,
    f: impl FnOnce(&mut Control) -> Result<u64, crate::agents::AgentError>,
) -> Reply {
    let Ok(mut c) = shared.control.lock() else {
        return error("control state poisoned");
    };
    match f(&mut c) {
        Ok(agent) => Reply {
            ok: true,
            agent: Some(agent),
            ..Default::default()
        },
        Err(e) => Reply {
            code: Some(e.code().into()),
            ..error(e)
        },
    }
}

fn handle(shared: &Shared, uid: u32, req: Request) -> Reply {
    match req {
        Request::Status => Reply {
            ok: true,
            status: Some(status(shared)),
            ..Default::default()
        },
        Request::TrackCgroup { path } => {
            with_control(shared, |c| c.track_cgroup(&PathBuf::from(path), uid))
        }
        Request::TrackPid { pid } => with_control(shared, |c| c.track_pid(pid, uid)),
        Request::Untrack { agent } => {
            with_control(shared, |c| c.untrack(agent, uid).map(|()| agent))
        }
        Request::RunAgent { pid, name } => with_control(shared, |c| c.run_agent(pid, uid, name)),
        Request::Stop { agent } => with_control(shared, |c| c.steer(agent, Steer::Stop, uid)),
        Request::Freeze { agent } => with_control(shared, |c| c.steer(agent, Steer::Freeze, uid)),
        Request::Thaw { agent } => with_control(shared, |c| c.steer(agent, Steer::Thaw, uid)),
        Request::Kill { agent } => with_control(shared, |c| c.steer(agent, Steer::Kill, uid)),
        Request::Agents => {
            let Ok(c) = shared.control.lock() else {
                return error("control state poisoned");
            };
            Reply {
                ok: true,
                agents: Some(c.list(uid).into_iter().map(agent_info).collect()),
                ..Default::default()
            }
        }
        Request::Subscribe { .. } => error("subscribe is handled on its own"),
    }
}

pub fn status(shared: &Shared) -> Status {
    let mut st = Status {
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    if let Ok(s) = shared.sensor.lock() {
        st.pin_dir = s.pins.root.display().to_string();
        st.reused_pins = s.reused;
        st.startup_ms = s.startup.as_secs_f64() * 1e3;
        st.attached = s.attached.iter().map(|s| s.to_string()).collect();
        st.skipped = s.skipped.iter().map(|s| s.to_string()).collect();
        for (cause, n) in s.lost_counts() {
            st.lost.insert(cause.name().into(), n);
        }
    }
    if let Ok(c) = shared.control.lock() {
        (st.tracked_processes, st.tracked_cgroups) = c.tracked_counts();
    }
    let stats = &shared.bus.stats;
    st.events = stats.events();
    if let Ok(m) = stats.losses.lock() {
        st.lost.extend(m.iter().map(|(k, v)| (k.to_string(), *v)));
    }
    st.lost.insert(
        "subscriber_lagged".into(),
        stats.lagged.load(std::sync::atomic::Ordering::Relaxed),
    );
    st
}

/// Who may see an event: root sees all; a user sees events of their own uid and of agents they own.
fn visible(ev: &Event, uid: u32, owned: &dyn Fn(u64) -> bool) -> bool {
    uid == 0 || ev.uid == uid || owned(ev.agent)
}

async fn subscribe(
    w: &mut OwnedWriteHalf,
    shared: &Shared,
    uid: u32,
    replay: bool,
    agent: Option<u64>,
) -> std::io::Result<()> {
    if let Some(a) = agent {
        let owner = shared.control.lock().ok().and_then(|c| c.owner_of(a));
        match owner {
            None => {
                let e = crate::agents::AgentError::NoSuchAgent(a);
                let r = Reply {
                    code: Some(e.code().into()),
                    ..error(e)
                };
                return write_line(w, &r).await;
            }
            Some(o) if uid != 0 && o != uid => {
                return write_line(
                    w,
                    &error(format!(
                        "permission denied: uid {uid} may not watch agent {a}"
                    )),
                )
                .await;
            }
            _ => {}
        }
    }
    let owned = |a: u64| {
        shared
            .control
            .lock()
            .ok()
            .and_then(|c| c.owner_of(a))
            .is_some_and(|o| o == uid)
    };
    let wanted = |ev: &Event| agent.is_none_or(|a| ev.agent == a) && visible(ev, uid, &owned);
    let (snap, mut rx) = shared.bus.subscribe(replay);
    write_line(
        w,
        &Reply {
            ok: true,
            ..Default::default()
        },
    )
    .await?;
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
