//! `axiomctl agents`: the agents the caller may see.
use std::process::ExitCode;

use axiom_proto::wire::Request;

use crate::{
    client::{Global, connect, refused},
    render,
};

pub fn run(g: &Global) -> anyhow::Result<ExitCode> {
    let r = connect(g)?.request(&Request::Agents)?;
    if !r.ok {
        return refused("agents", r);
    }
    let agents = r.agents.unwrap_or_default();
    if g.json {
        println!("{}", serde_json::to_string_pretty(&agents)?);
    } else {
        println!(
            "{:>6}  {:<16} {:>6}  {:<8} {:<8} {:>5}  {:<8} {:<9} COMMAND",
            "AGENT", "NAME", "UID", "KIND", "STATE", "PROCS", "STARTED", "EXIT"
        );
        for a in agents {
            let exit = match (a.exit_code, a.exit_signal) {
                (Some(c), _) => c.to_string(),
                (_, Some(s)) => format!("signal {s}"),
                _ if a.state == "exited" => "?".into(),
                _ => "-".into(),
            };
            let cmd = render::argv(&a.command);
            println!(
                "{:>6}  {:<16} {:>6}  {:<8} {:<8} {:>5}  {:<8} {:<9} {}",
                a.id,
                render::escape(a.name.as_deref().unwrap_or("-")),
                a.owner_uid,
                a.kind,
                a.state,
                a.pids.len(),
                render::clock(a.started_ns).get(..8).unwrap_or("-"),
                exit,
                if cmd.is_empty() { "-".into() } else { cmd }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
