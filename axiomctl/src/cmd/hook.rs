//! `axiomctl hook`: what Claude Code's hooks call, from inside the agent; axiomd answers for the
//! agent the calling process belongs to.
use axiom_proto::wire::Request;

use crate::{Cli, connect};

/// `axiomctl hook`: whatever goes wrong, the agent is not stopped by it (exit 0, nothing said).
pub fn run(cli: &Cli) {
    use std::io::Read as _;
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        return;
    }
    let Ok(input) = serde_json::from_str::<serde_json::Value>(&input) else {
        return;
    };
    let Ok(mut conn) = connect(cli) else {
        return;
    };
    match conn.request(&Request::Hook { input }) {
        Ok(r) if r.ok => {
            if let Some(out) = r.hook {
                println!("{out}");
            }
        }
        Ok(r) => eprintln!("axiom: hook: {}", r.error.unwrap_or_default()),
        Err(e) => eprintln!("axiom: hook: {e}"),
    }
}
