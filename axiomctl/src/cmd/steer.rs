//! `axiomctl stop|freeze|thaw|kill|untrack <agent>` and `axiomctl inject <agent> <text>`.
use std::process::ExitCode;

use axiom_proto::wire::Request;

use crate::{Cli, connect, refused};

pub fn steer(cli: &Cli, what: &str, req: Request) -> anyhow::Result<ExitCode> {
    let r = connect(cli)?.request(&req)?;
    if !r.ok {
        return refused(what, r);
    }
    Ok(ExitCode::SUCCESS)
}

/// Types `text` into the agent's terminal (`raw`: as it is, without Enter) and says whether
/// its screen showed it.
pub fn inject(cli: &Cli, agent: u64, text: &str, raw: bool) -> anyhow::Result<ExitCode> {
    let req = Request::Inject {
        agent,
        text: text.to_string(),
        raw,
    };
    let r = connect(cli)?.request(&req)?;
    if !r.ok {
        return refused("inject", r);
    }
    if r.delivered == Some(false) {
        eprintln!("axiomctl: inject: typed, but the agent's screen never showed it");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
