//! `cargo xtask bench mcp`: what the MCP front end adds, measured by the official Python MCP
//! client (`tests/mcp/bench.py`) against a real axiomd on a private D-Bus:
//!
//! 1. `spawn` of one agent, until it returns, against `axiomctl run` of the same agent directly
//!    until it says the agent started;
//! 2. `spawn` of N agents in one call against N single spawns (the parallel speed-up);
//! 3. from the kernel's timestamp of a write to the client holding the event, through `observe`
//!    against the raw event stream read side by side.
use std::process::Command;

use anyhow::{Context as _, bail};
use axiom_tests::{TestBus, python};

use crate::{build, require_root, setup::setup, target_dir};

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

pub fn run(rounds: usize, parallel: usize) -> anyhow::Result<()> {
    require_root("bench mcp")?;
    setup()?;
    build()?;
    let (bus, d) = TestBus::with_daemon("bench_mcp");
    let ws = std::env::temp_dir().join(format!("axiom-bench-mcp-{}", std::process::id()));
    std::fs::create_dir_all(&ws)?;
    let script = crate::root().join("tests/mcp/bench.py");
    let out = Command::new(python())
        .arg(&script)
        .arg("--axiomctl")
        .arg(target_dir().join("axiomctl"))
        .args(["--bus", &bus.address, "--socket"])
        .arg(&d.socket)
        .arg("--ws")
        .arg(&ws)
        .args(["--rounds", &rounds.to_string()])
        .args(["--parallel", &parallel.to_string()])
        .output()
        .context("the MCP bench client")?;
    let _ = std::fs::remove_dir_all(&ws);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("mcp:"));
    let Some(line) = line.filter(|_| out.status.success()) else {
        bail!(
            "the MCP bench client failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    println!("{line}");
    let (run_ms, spawn_ms, par_ms) = (
        field(line, "run_ms"),
        field(line, "spawn_ms"),
        field(line, "parallel_ms"),
    );
    let (stream, observe) = (field(line, "stream_p50_ms"), field(line, "observe_p50_ms"));
    println!(
        "ratios: spawn_vs_run={:.2} parallel_speedup={:.1} (of {parallel}) observe_vs_stream_p50={:.2}",
        spawn_ms / run_ms,
        spawn_ms * parallel as f64 / par_ms,
        observe / stream
    );
    println!(
        "bench mcp: spawn_ms={spawn_ms:.2} run_ms={run_ms:.2} parallel{parallel}_ms={par_ms:.1} observe_p50_ms={observe:.2} stream_p50_ms={stream:.2}"
    );
    Ok(())
}
