//! `axiomctl hook`: what Claude Code's hooks call, from inside the agent; axiomd answers for the
//! agent the calling process belongs to.
use std::time::{Duration, Instant};

use axiom_proto::wire::{Reply, Request};

use crate::client::{Global, connect};

/// The longest a hook call waits for axiomd's answer. Claude Code waits for its hooks before it
/// goes on (its screen stops too), so a supervisor that does not answer must not hold the agent:
/// past this the hook says nothing and the agent carries on, as if axiomd were not running.
const DEADLINE: Duration = Duration::from_secs(10);

/// `axiomctl hook`: whatever goes wrong, the agent is not stopped by it (exit 0, nothing said).
pub fn run(g: &Global) {
    use std::io::Read as _;
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        return;
    }
    let Ok(input) = serde_json::from_str::<serde_json::Value>(&input) else {
        return;
    };
    let Ok(mut conn) = connect(g) else {
        return;
    };
    match ask(&mut conn, &Request::Hook { input }) {
        Ok(Some(r)) if r.ok => {
            if let Some(out) = r.hook {
                println!("{out}");
            }
        }
        Ok(Some(r)) => eprintln!("axiom: hook: {}", r.error.unwrap_or_default()),
        Ok(None) => eprintln!(
            "axiom: hook: axiomd did not answer within {} s; carrying on",
            DEADLINE.as_secs()
        ),
        Err(e) => eprintln!("axiom: hook: {e}"),
    }
}

/// The reply to `req`, or `None` once `DEADLINE` has passed without one.
fn ask(
    conn: &mut axiom_proto::wire::Connection,
    req: &Request,
) -> Result<Option<Reply>, axiom_proto::wire::ConnectionError> {
    let t0 = Instant::now();
    conn.set_timeout(Some(Duration::from_millis(200)))?;
    conn.send(req)?;
    while t0.elapsed() < DEADLINE {
        if let Some(line) = conn.read_line()? {
            return Ok(Some(serde_json::from_str(&line)?));
        }
    }
    Ok(None)
}
