//! `cargo xtask bench sandbox`: what confinement costs at start-up and per plugin call.
//!
//! 1. WASI tool start-up from the compiled-module cache, against compiling it each time
//!    (`axiomd bench-sandbox`, in one process).
//! 2. A rule plugin's call (fresh instance, input in, verdict out), against the same check in
//!    native Rust.
//! 3. `axiomctl run -- /bin/true` end to end (a cgroup of its own, tracked by axiomd, a pty)
//!    with the `full` profile (no filesystem rules) and with `workspace-write` (Landlock,
//!    protected paths, limits), against spawning `/bin/true` directly.
use std::{
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use axiom_tests::{Daemon, WasmKind, build_wasm};

use super::median;
use crate::{build, require_root, setup::setup, target_dir};

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Median ms of `rounds` runs of a command that must succeed.
fn time_cmd(rounds: usize, mut make: impl FnMut() -> Command) -> anyhow::Result<f64> {
    let mut v = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut c = make();
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let t0 = Instant::now();
        let out = c.output().with_context(|| format!("{c:?}"))?;
        v.push(t0.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() {
            bail!(
                "{c:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(median(&mut v))
}

pub fn run(rounds: usize) -> anyhow::Result<()> {
    require_root("bench sandbox")?;
    setup()?;
    build()?;
    let dir = std::env::temp_dir().join(format!("axiom-bench-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tool = build_wasm("nop", WasmKind::Wasi, &dir);
    let plugin = build_wasm("sql_guard", WasmKind::Plugin, &dir);

    let out = Command::new(target_dir().join("axiomd"))
        .args(["--config", "/dev/null", "bench-sandbox"])
        .arg("--tool")
        .arg(&tool)
        .arg("--plugin")
        .arg(&plugin)
        .arg("--dir")
        .arg(dir.join("scratch"))
        .args(["--rounds", &(rounds * 10).to_string()])
        .output()
        .context("axiomd bench-sandbox")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    if !out.status.success() {
        bail!(
            "axiomd bench-sandbox failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("sandbox:"))
        .context("no result from axiomd bench-sandbox")?;
    let (start, compile, call, native) = (
        field(line, "wasm_start_ms"),
        field(line, "wasm_compile_start_ms"),
        field(line, "plugin_call_us"),
        field(line, "native_call_us"),
    );

    // axiomctl run, end to end, against a plain spawn.
    let d = Daemon::start("bench_sandbox", &[]);
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws)?;
    let ctl = target_dir().join("axiomctl");
    let run_with = |profile: &'static str| {
        let (ctl, ws, socket) = (ctl.clone(), ws.clone(), d.socket.clone());
        move || {
            let mut c = Command::new(&ctl);
            c.arg("--socket")
                .arg(&socket)
                .args(["run", "--profile", profile, "--workspace"])
                .arg(&ws)
                .args(["--", "/bin/true"]);
            c
        }
    };
    // One of each first: the first run pays for page faults nobody else will.
    time_cmd(1, run_with("full"))?;
    time_cmd(1, run_with("workspace-write"))?;
    let exec_ms = time_cmd(rounds, || Command::new("/bin/true"))?;
    let run_ms = time_cmd(rounds, run_with("full"))?;
    let profile_ms = time_cmd(rounds, run_with("workspace-write"))?;
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "sandbox: exec_ms={exec_ms:.3} run_ms={run_ms:.2} run_profile_ms={profile_ms:.2} (median of {rounds})"
    );
    println!(
        "ratios: cached_vs_compiled_start={:.3} plugin_vs_native_call={:.1} run_vs_exec={:.1} profile_vs_run={:.2}",
        start / compile,
        call / native,
        run_ms / exec_ms,
        profile_ms / run_ms
    );
    println!(
        "target: wasm start-up 1-10 ms from the cache ({})",
        if start <= 10.0 { "met" } else { "NOT met" }
    );
    println!(
        "bench sandbox: wasm_start_ms={start:.3} plugin_call_us={call:.2} run_start_ms={run_ms:.2} run_profile_start_ms={profile_ms:.2}"
    );
    Ok(())
}
