//! `axiomctl watch <pid>`: adopt a running process tree as an agent and follow it.
use std::process::ExitCode;

use anyhow::Context as _;
use axiom_proto::wire::{Body, Request};

use crate::client::{
    Followed, Global, Printer, catch_sigint, connect, follow_agent, header, refused, summary,
};

pub fn run(g: &Global, p: Printer, pid: u32) -> anyhow::Result<ExitCode> {
    let mut conn = connect(g)?;
    let r = conn.request(&Request::TrackPid { pid })?;
    if !r.ok {
        return refused(&format!("watch {pid}"), r);
    }
    let agent = r.agent.context("no agent id in reply")?;
    let info = conn
        .request(&Request::Agents)?
        .agents
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.id == agent);
    if !g.json {
        if let Some(a) = &info {
            eprintln!("{}", header(a, p.style.color));
        }
        eprintln!("axiomctl: watching pid {pid} as agent {agent} (Ctrl-C to detach)");
    }
    let r = conn.subscribe(false, Some(agent))?;
    if !r.ok {
        return refused("subscribe", r);
    }
    catch_sigint();
    let mut seen = Default::default();
    let how = match follow_agent(&mut conn, &p, pid, &mut seen)? {
        Followed::Ended(e) => match e.body {
            Body::AgentExited { code: Some(c), .. } | Body::Exit { code: Some(c), .. } => {
                format!("agent {agent} ended: exit {c}")
            }
            Body::AgentExited {
                signal: Some(s), ..
            }
            | Body::Exit {
                signal: Some(s), ..
            } => format!("agent {agent} ended: signal {s}"),
            _ => format!("agent {agent} ended"),
        },
        Followed::Detached => format!(
            "detached; agent {agent} is still tracked (`axiomctl untrack {agent}` ends that)"
        ),
    };
    if !g.json {
        eprintln!("{}", summary(&how, &seen));
    }
    Ok(ExitCode::SUCCESS)
}
