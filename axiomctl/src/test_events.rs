//! Events for the unit tests: one agent's (1), of process 2, as uid 1000.
use axiom_proto::wire::{Body, Event};

/// An event of `body` at `t` ns with sequence number `seq`.
pub fn ev(seq: u64, t: u64, body: Body) -> Event {
    Event {
        seq,
        time_ns: t,
        agent: 1,
        pid: 2,
        tgid: 2,
        ppid: 1,
        uid: 1000,
        cgroup_id: 0,
        comm: "agent".into(),
        truncated: false,
        body,
    }
}

/// A write of `text` to `target`.
pub fn out(seq: u64, t: u64, target: &str, text: &str) -> Event {
    ev(
        seq,
        t,
        Body::Output {
            fd: 1,
            syscall: axiom_proto::wire::WriteCall::Write,
            read_back: false,
            count: text.len() as u64,
            target: Some(target.into()),
            text: text.into(),
            captured: text.len() as u32,
            redacted: Vec::new(),
        },
    )
}
