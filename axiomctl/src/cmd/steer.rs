//! `axiomctl stop|freeze|thaw|kill|untrack <agent>` and `axiomctl inject <agent> <text>`.
use std::process::ExitCode;

use axiom_proto::wire::Request;

use crate::client::{Global, connect, refused};

pub fn steer(g: &Global, what: &str, req: Request) -> anyhow::Result<ExitCode> {
    let r = connect(g)?.request(&req)?;
    if !r.ok {
        return refused(what, r);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `axiomctl inject` was asked.
#[derive(clap::Args, Debug)]
pub struct InjectArgs {
    pub agent: u64,
    /// The text; words are joined with spaces.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub text: Vec<String>,
    /// Type the text as it is, in one write: no interrupt key, no Enter, no confirmation.
    #[arg(long)]
    pub no_enter: bool,
}

/// Types the text into the agent's terminal (`--no-enter`: as it is, without Enter) and says
/// whether its screen showed it.
pub fn inject(g: &Global, a: &InjectArgs) -> anyhow::Result<ExitCode> {
    let req = Request::Inject {
        agent: a.agent,
        text: a.text.join(" "),
        raw: a.no_enter,
    };
    let r = connect(g)?.request(&req)?;
    if !r.ok {
        return refused("inject", r);
    }
    if r.delivered == Some(false) {
        eprintln!("axiomctl: inject: typed, but the agent's screen never showed it");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
