//! `axiomctl events`: the recent events kept in memory, and with `--follow` what comes next.
use std::process::ExitCode;

use crate::client::{Global, Printer, connect, refused};

pub fn run(g: &Global, p: Printer, agent: Option<u64>, follow: bool) -> anyhow::Result<ExitCode> {
    let mut conn = connect(g)?;
    let r = conn.subscribe(true, agent)?;
    if !r.ok {
        return refused("events", r);
    }
    if !follow {
        // Replay only: stop once the stream goes quiet.
        conn.set_timeout(Some(std::time::Duration::from_millis(200)))?;
        while let Some(e) = conn.next_event()? {
            p.print(&e)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        if let Some(e) = conn.next_event()? {
            p.print(&e)?;
        }
    }
}
