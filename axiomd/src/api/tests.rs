//! The API's decisions without a kernel: the registry on tables in memory, no sensor loaded, real
//! processes standing in for agents. Who may see, steer, untrack and type into what, from
//! outside an agent and from inside one.
use super::*;
use crate::{
    agents::{Registry, tables::Memory, tests::Sleeper},
    kernel::LoadError,
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
    let registry = Arc::new(Mutex::new(Registry::restore(
        Box::new(Memory::default()),
        None,
    )));
    let (bus, _taps) = Bus::new(64, 64);
    let bus = Arc::new(bus);
    let engine = Arc::new(Mutex::new(crate::rules::engine::Engine::default()));
    let (actions, _queue) = crate::actions::Actions::new(
        registry.clone(),
        engine.clone(),
        bus.clone(),
        Arc::new(crate::actions::terminal::Terminals::default()),
        axiom_proto::agent_profile::Profiles::builtin(),
    );
    Shared {
        registry,
        bus,
        sensor: Mutex::new(Box::new(Absent)),
        admin_gid: None,
        rules: Arc::new(crate::rules::Rules::load(vec![]).expect("no rules")),
        engine,
        actions,
        store: None,
        confine: Default::default(),
        clients: Clients::new(16, 4),
    }
}

fn user(uid: u32, pid: Option<u32>) -> Caller {
    Caller {
        uid,
        admin: false,
        pid,
    }
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
    let owner = user(me(), Some(std::process::id()));
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
    let inside = user(me(), Some(agent_proc.pid()));
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
    // Still tracked, still its owner's to end.
    assert!(s.handle(owner, Request::Untrack { agent }, None).ok);
}

#[test]
fn a_user_steers_and_sees_only_their_own_agents() {
    let s = shared();
    let p = Sleeper::start();
    let owner = user(me(), None);
    let r = s.handle(owner, Request::TrackPid { pid: p.pid() }, None);
    let agent = r.agent.expect("tracked");
    let stranger = user(someone_else(), None);
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
