//! The registry's decisions against tables in memory (`tables::Memory`): who may adopt, see,
//! steer and untrack an agent, and the per-user bound. Real processes, no kernel sensor.
use super::*;
use crate::authz::Caller;

/// A process of ours that lives until the guard goes (the API's tests use it too).
pub(crate) struct Sleeper(pub(crate) std::process::Child);

impl Sleeper {
    pub(crate) fn start() -> Sleeper {
        Sleeper(
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("sleep"),
        )
    }

    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn registry() -> Registry {
    Registry::restore(Box::new(tables::Memory::default()), None)
}

/// The user running the tests, as a caller without the admin's say.
fn me() -> Caller {
    Caller {
        uid: nix::unistd::getuid().as_raw(),
        admin: false,
        seat: crate::authz::Seat::Outside,
    }
}

/// Someone else (not an admin).
fn other() -> Caller {
    let uid = nix::unistd::getuid().as_raw();
    Caller {
        uid: if uid == 65534 { 65533 } else { 65534 },
        admin: false,
        seat: crate::authz::Seat::Outside,
    }
}

#[test]
fn a_process_is_adopted_by_its_owner_once_and_by_nobody_else() {
    let mut r = registry();
    let p = Sleeper::start();
    assert!(matches!(
        r.track_pid(p.pid(), other()),
        Err(AgentError::NotPermitted { .. })
    ));
    assert_eq!(r.agent_of(p.pid()), None, "a refusal left a mark");
    let a = r.track_pid(p.pid(), me()).expect("the owner adopts");
    assert_eq!(r.agent_of(p.pid()), Some(a));
    assert_eq!(r.owner_of(a), Some(me().uid));
    assert!(matches!(
        r.track_pid(p.pid(), me()),
        Err(AgentError::AlreadyTracked { agent, .. }) if agent == a
    ));
    assert!(matches!(
        r.track_pid(1, Caller::ROOT),
        Err(AgentError::Init)
    ));
    assert!(matches!(
        r.track_pid(u32::MAX - 1, Caller::ROOT),
        Err(AgentError::NoSuchProcess(_))
    ));
}

#[test]
fn only_the_owner_or_an_admin_sees_steers_and_untracks_an_agent() {
    let mut r = registry();
    let p = Sleeper::start();
    let a = r.track_pid(p.pid(), me()).expect("adopt");
    assert!(
        r.list(other()).iter().all(|v| v.agent.id != a),
        "listed to another user"
    );
    let mine = r.list(me());
    let v = mine
        .iter()
        .find(|v| v.agent.id == a)
        .expect("listed to its owner");
    assert_eq!(v.processes, vec![p.pid()]);
    assert!(r.list(Caller::ROOT).iter().any(|v| v.agent.id == a));
    for how in [Steer::Freeze, Steer::Thaw, Steer::Stop, Steer::Kill] {
        assert!(
            matches!(
                r.steer(a, how, other()),
                Err(AgentError::NotPermitted { .. })
            ),
            "{how:?} by another user"
        );
    }
    assert!(matches!(
        r.untrack(a, other()),
        Err(AgentError::NotPermitted { .. })
    ));
    assert_eq!(r.agent_of(p.pid()), Some(a), "a refused untrack let go");
    r.untrack(a, me()).expect("the owner untracks");
    assert_eq!(r.agent_of(p.pid()), None);
    assert!(matches!(
        r.untrack(a, me()),
        Err(AgentError::NoSuchAgent(_))
    ));
}

#[test]
fn a_user_runs_at_most_max_per_user_agents_and_an_admin_is_not_bound() {
    let mut r = registry();
    r.set_max_per_user(1);
    let (p1, p2, p3) = (Sleeper::start(), Sleeper::start(), Sleeper::start());
    let a1 = r.track_pid(p1.pid(), me()).expect("the first");
    assert!(matches!(
        r.track_pid(p2.pid(), me()),
        Err(AgentError::NotPermitted { .. })
    ));
    assert_eq!(r.agent_of(p2.pid()), None, "a refusal left a mark");
    let admin = Caller {
        admin: true,
        ..me()
    };
    // The process is ours, so the agent is too: it counts toward our bound from now on.
    let a3 = r.track_pid(p3.pid(), admin).expect("an admin is not bound");
    r.untrack(a1, me()).expect("untrack");
    assert!(matches!(
        r.track_pid(p2.pid(), me()),
        Err(AgentError::NotPermitted { .. })
    ));
    r.untrack(a3, me()).expect("untrack");
    r.track_pid(p2.pid(), me())
        .expect("room again once ours are untracked");
}
