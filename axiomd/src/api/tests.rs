//! The API's decisions without a kernel: the registry on tables in memory, no sensor loaded, real
//! processes standing in for agents. Who may see, steer, untrack and type into what, from
//! outside an agent and from inside one.
use super::*;
use crate::{
    agents::{Registry, tables::Memory, tests::Sleeper},
    kernel::{LoadError, Loaded},
};

/// No programs in the kernel: matching stays in userspace.
struct Absent;

impl Loaded for Absent {
    fn install_matcher(&mut self, _: Option<&axiom_common::Dfa>) -> Result<u16, LoadError> {
        Ok(0)
    }
    fn describe(&self, _: &mut Status) {}
    fn unpin(&self) -> std::io::Result<()> {
        Ok(())
    }
}

fn shared() -> Shared {
    let agents = crate::agents::Agents::new(Registry::restore(Box::new(Memory::default()), None));
    let (bus, _taps) = Bus::new(64, 64);
    let bus = Arc::new(bus);
    let engine = crate::rules::engine::Engine::shared(Default::default());
    let (actions, _queue) = crate::actions::Actions::new(
        agents.clone(),
        crate::rules::Claims::of(&engine),
        bus.clone(),
        Arc::new(crate::actions::terminal::Terminals::new(Default::default())),
        axiom_proto::agent_profile::Profiles::builtin(),
    );
    Shared {
        agents,
        bus,
        sensor: crate::kernel::Sensor::new(Box::new(Absent)),
        admin_gid: None,
        rules: Arc::new(crate::rules::Rules::load(vec![]).expect("no rules")),
        actions,
        store: None,
        confine: Default::default(),
        clients: Clients::new(16, 4),
    }
}

/// A caller outside every agent.
fn user(uid: u32) -> Caller {
    Caller {
        uid,
        admin: false,
        seat: crate::authz::Seat::Outside,
    }
}

/// A caller placed as the transport places it, from the process that connected.
fn placed(s: &Shared, uid: u32, pid: u32) -> Caller {
    let process =
        crate::kernel::procfs::pidfd(pid).map(|pidfd| crate::authz::PeerProcess { pid, pidfd });
    s.place(Caller::new(uid, &[], None), process.as_ref())
}

fn me() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn someone_else() -> u32 {
    if me() == 65534 { 65533 } else { 65534 }
}

fn refused_as(r: &Reply, code: ErrorCode) {
    assert!(!r.ok, "allowed: {r:?}");
    assert_eq!(r.code, Some(code), "{r:?}");
}

#[test]
fn an_agent_is_not_its_owner() {
    let s = shared();
    let (agent_proc, other_proc) = (Sleeper::start(), Sleeper::start());
    let owner = placed(&s, me(), std::process::id());
    assert_eq!(owner.seat, crate::authz::Seat::Outside);
    let r = s.handle(
        owner,
        Request::TrackPid {
            pid: agent_proc.pid(),
        },
        None,
    );
    assert!(r.ok, "{r:?}");
    let agent = r.agent.expect("an agent id");
    // The same user, calling from inside the agent (by the kernel's pid).
    let inside = placed(&s, me(), agent_proc.pid());
    assert_eq!(inside.seat, crate::authz::Seat::Agent(agent));
    for req in [
        Request::Untrack { agent },
        Request::Freeze { agent },
        Request::Stop { agent },
        Request::Kill { agent },
        Request::TrackPid {
            pid: other_proc.pid(),
        },
        Request::ReloadRules,
    ] {
        let what = format!("{req:?}");
        let r = s.handle(inside, req, None);
        assert!(!r.ok, "from inside the agent: {what} allowed");
    }
    assert!(s.handle(inside, Request::Status, None).ok);
    // It sees its own record, and only that.
    let r = s.handle(inside, Request::Agents, None);
    let ids: Vec<u64> = r.agents.unwrap_or_default().iter().map(|a| a.id).collect();
    assert_eq!(ids, [agent]);
    // Placed once: the connection stays the agent's after its process is gone.
    drop(agent_proc);
    refused_as(
        &s.handle(inside, Request::Untrack { agent }, None),
        ErrorCode::NotPermitted,
    );
    // Still tracked, still its owner's to end.
    assert!(s.handle(owner, Request::Untrack { agent }, None).ok);
}

/// A connection whose process was gone before it was placed (a child that connected on its
/// parent's socket and exited) is no one's: it may read the status and nothing of any agent.
#[test]
fn a_connection_whose_process_is_gone_is_unplaced() {
    let s = shared();
    let p = Sleeper::start();
    let owner = user(me());
    let agent = s
        .handle(owner, Request::TrackPid { pid: p.pid() }, None)
        .agent
        .expect("tracked");
    let gone = s.place(Caller::new(me(), &[], None), None);
    assert_eq!(gone.seat, crate::authz::Seat::Unplaced);
    for req in [
        Request::Untrack { agent },
        Request::Kill { agent },
        Request::ReloadRules,
    ] {
        refused_as(&s.handle(gone, req, None), ErrorCode::NotPermitted);
    }
    assert!(s.handle(gone, Request::Status, None).ok);
    let listed = s
        .handle(gone, Request::Agents, None)
        .agents
        .unwrap_or_default();
    assert!(listed.is_empty(), "listed {listed:?}");
    assert!(s.may_subscribe(gone, Some(agent)).is_err());
    assert!(s.may_subscribe(gone, None).is_err());
}

#[test]
fn a_user_steers_and_sees_only_their_own_agents() {
    let s = shared();
    let p = Sleeper::start();
    let owner = user(me());
    let r = s.handle(owner, Request::TrackPid { pid: p.pid() }, None);
    let agent = r.agent.expect("tracked");
    let stranger = user(someone_else());
    for req in [
        Request::Freeze { agent },
        Request::Thaw { agent },
        Request::Stop { agent },
        Request::Kill { agent },
        Request::Untrack { agent },
    ] {
        refused_as(&s.handle(stranger, req, None), ErrorCode::NotPermitted);
    }
    refused_as(
        &s.handle(
            stranger,
            Request::Inject {
                agent,
                text: "x".into(),
                raw: false,
            },
            None,
        ),
        ErrorCode::NotPermitted,
    );
    let r = s.handle(stranger, Request::Agents, None);
    assert!(
        r.agents.unwrap_or_default().is_empty(),
        "listed to a stranger"
    );
    // The owner's inject has no terminal to go to (the agent was adopted, not started).
    refused_as(
        &s.handle(
            owner,
            Request::Inject {
                agent,
                text: "x".into(),
                raw: false,
            },
            None,
        ),
        ErrorCode::NoTerminal,
    );
    refused_as(
        &s.handle(owner, Request::Freeze { agent: agent + 100 }, None),
        ErrorCode::NoSuchAgent,
    );
}
