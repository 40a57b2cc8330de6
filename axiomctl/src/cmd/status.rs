//! `axiomctl status`: what axiomd runs, tracks, has seen and lost.
use std::process::ExitCode;

use anyhow::Context as _;
use axiom_proto::wire::Request;

use crate::client::{Global, connect};

pub fn run(g: &Global) -> anyhow::Result<ExitCode> {
    let r = connect(g)?.request(&Request::Status)?;
    let st = r.status.context("no status in reply")?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        println!(
            "axiomd {}  pins {}  ({} programs, {})",
            st.version,
            st.pin_dir,
            st.attached.len(),
            if st.reused_pins {
                "reused at start"
            } else {
                "loaded at start"
            }
        );
        println!("start-up to attached: {:.1} ms", st.startup_ms);
        println!(
            "tracked: {} processes, {} cgroups",
            st.tracked_processes, st.tracked_cgroups
        );
        let line = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("events: {}", line(&st.events));
        println!("lost: {}", line(&st.lost));
        if !st.kernel_work.is_empty() {
            println!("kernel: {}", line(&st.kernel_work));
        }
        if !st.store.is_empty() {
            println!("store: {}", line(&st.store));
        }
        if !st.bounds.is_empty() {
            println!("bounds: {}", line(&st.bounds));
        }
    }
    Ok(ExitCode::SUCCESS)
}
