//! `cargo xtask bench rules`: what matching costs and how fast it detects.
//!
//! 1. Kernel scan cost: `dd bs=256` tracked by axiomd with 0 (capture only), 1, 16, 64 and 256
//!    literals in the kernel matcher, against the empty program on the same hook: the kernel's own
//!    accounting (`bpf_stats`: run time / run count of `enter_write`), so the cost of axiomd's
//!    userspace, which shares the CPUs, does not blur the number.
//! 2. Detection latency: ≥ 10,000 writes that carry a literal, by real tracked processes; each
//!    violation's latency from the write syscall (kernel timestamp) to the finding in axiomd.
//! 3. Follow-up throughput: the userspace engine over agent-like output (`axiomd bench-followup`).
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use axiom_proto::wire::Body;
use axiom_tests::{Cgroup, Daemon};

use super::{
    median,
    sensor::{Baseline, dd_bs},
};
use crate::{build, require_root, setup::setup, target_dir};

const SIZES: [usize; 5] = [0, 1, 16, 64, 256];

/// A literal made of letters only, distinct per index (8 bytes).
fn literal(i: usize) -> String {
    let mut s = String::from("zq");
    let mut n = i;
    for _ in 0..6 {
        s.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
    }
    s
}

/// A rules directory whose one rule holds `n` kernel literals (none: capture only).
fn rules_dir(n: usize) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("axiom-bench-rules-{n}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let body = if n == 0 {
        // A rule that needs no kernel literals.
        "[[rule]]\nid = \"none\"\nscope = \"exec\"\nliterals = [\"zzzz-never\"]\n".to_string()
    } else {
        let lits: Vec<String> = (0..n).map(|i| format!("\"{}\"", literal(i))).collect();
        format!(
            "[[rule]]\nid = \"bench\"\nscope = \"output\"\ncase_insensitive = true\ncooldown_secs = 0\nliterals = [{}]\n",
            lits.join(", ")
        )
    };
    std::fs::write(dir.join("bench.toml"), body)?;
    Ok(dir)
}

/// (run time ns, run count) of every loaded program named `enter_write`, by id.
fn write_hook_stats() -> std::collections::HashMap<u32, (u64, u64)> {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.name_as_str() == Some("enter_write"))
        .map(|p| (p.id(), (p.run_time().as_nanos() as u64, p.run_count())))
        .collect()
}

/// Mean ns per `enter_write` run while `f` runs (the busiest such program).
fn ns_per_write(f: impl FnOnce() -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    let before = write_hook_stats();
    f()?;
    let after = write_hook_stats();
    after
        .iter()
        .map(|(id, (t, n))| {
            let (t0, n0) = before.get(id).copied().unwrap_or((0, 0));
            (n - n0, t - t0)
        })
        .max_by_key(|(n, _)| *n)
        .filter(|(n, _)| *n > 0)
        .map(|(n, t)| t as f64 / n as f64)
        .context("no enter_write program ran")
}

fn scan_cost(rounds: usize, count: u64) -> anyhow::Result<Vec<(String, f64)>> {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling bpf_stats")?;
    let mut empty = Vec::new();
    let mut scans: Vec<Vec<f64>> = vec![Vec::new(); SIZES.len()];
    let dirs: Vec<PathBuf> = SIZES
        .iter()
        .map(|n| rules_dir(*n))
        .collect::<Result<_, _>>()?;
    for round in 0..rounds {
        {
            let _b = Baseline::start()?;
            empty.push(ns_per_write(|| dd_bs(count, 256, None, &[]))?);
        }
        for (i, dir) in dirs.iter().enumerate() {
            let d = Daemon::start("bench_rules", &["--rules", &dir.display().to_string()]);
            let cg = Cgroup::new("bench_rules");
            d.track_cgroup(&cg);
            scans[i].push(ns_per_write(|| dd_bs(count, 256, Some(&cg), &[]))?);
        }
        println!("bench rules: scan round {}/{rounds} done", round + 1);
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    let mut rows = vec![("empty program, same hook".to_string(), median(&mut empty))];
    for (i, n) in SIZES.iter().enumerate() {
        rows.push((
            format!("axiomd tracked, {n} literals"),
            median(&mut scans[i]),
        ));
    }
    Ok(rows)
}

/// Violations' latencies (µs) for `writes` matching writes.
fn latency(writes: usize) -> anyhow::Result<Vec<f64>> {
    let dir = std::env::temp_dir().join(format!("axiom-bench-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("marker.toml"),
        "[[rule]]\nid = \"marker\"\nscope = \"output\"\ncase_insensitive = true\ncooldown_secs = 0\nliterals = [\"axiom-latency-marker\"]\n",
    )?;
    let d = Daemon::start("bench_latency", &["--rules", &dir.display().to_string()]);
    let cg = Cgroup::new("bench_latency");
    d.track_cgroup(&cg);
    let mut sub = d.subscribe(false);
    // 4 writers, one marked line each per ms, for as long as it takes to reach `writes`.
    let children = 4;
    let seconds = (writes / children / 1000 + 2).to_string();
    let mut w = cg.command(&target_dir().join("axiom-writer").display().to_string());
    w.args([
        &children.to_string(),
        "64",
        "1",
        &seconds,
        "axiom-latency-marker",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = w.spawn().context("axiom-writer")?;
    let mut lat = Vec::with_capacity(writes);
    let t0 = Instant::now();
    let deadline = Duration::from_secs(seconds.parse::<u64>()? + 20);
    while lat.len() < writes && t0.elapsed() < deadline {
        let got = sub.next_for(Duration::from_millis(200));
        for e in got {
            if let Body::Violation {
                latency_us: Some(l),
                ..
            } = e.body
            {
                lat.push(l);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let st = d.status();
    println!(
        "bench rules: {} violations from {} kernel matches; lost {:?}",
        lat.len(),
        st.events.get("kernel_match").copied().unwrap_or(0),
        st.lost
    );
    let _ = std::fs::remove_dir_all(&dir);
    if lat.len() < writes {
        bail!("only {} of {writes} matches were reported", lat.len());
    }
    Ok(lat)
}

fn followup() -> anyhow::Result<f64> {
    let out = Command::new(target_dir().join("axiomd"))
        .args(["--config", "/dev/null", "--rules"])
        .arg(crate::root().join("config/rules"))
        .args(["bench-followup", "--mb", "64"])
        .output()
        .context("axiomd bench-followup")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    text.split("followup_mb_s=")
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .context("no followup_mb_s in axiomd's output")
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(rounds: usize, count: u64, writes: usize) -> anyhow::Result<()> {
    require_root("bench rules")?;
    setup()?;
    build()?;
    let rows = scan_cost(rounds, count)?;
    println!();
    println!(
        "dd bs=256, {count} blocks per run, median of {rounds} rounds: ns per enter_write run (bpf_stats)"
    );
    for (name, x) in &rows {
        println!("{name:<34} {x:>10.1}");
    }
    let empty = rows[0].1;
    let capture = rows[1].1;
    let ratio = |i: usize| rows[i + 1].1 / empty;
    println!(
        "scan alone (over capture): 1 → {:.1} ns, 16 → {:.1} ns, 64 → {:.1} ns, 256 → {:.1} ns per 256 B",
        rows[2].1 - capture,
        rows[3].1 - capture,
        rows[4].1 - capture,
        rows[5].1 - capture
    );
    let mut lat = latency(writes)?;
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    println!(
        "detection latency over {} matches: p50 {p50:.1} µs, p99 {p99:.1} µs",
        lat.len()
    );
    let mbs = followup()?;
    println!(
        "targets: scan64_vs_empty <= 2 ({}), p50 <= 10 µs ({}), p99 <= 100 µs ({})",
        if ratio(3) <= 2.0 { "met" } else { "NOT met" },
        if p50 <= 10.0 { "met" } else { "NOT met" },
        if p99 <= 100.0 { "met" } else { "NOT met" },
    );
    println!(
        "bench rules: scan1_vs_empty={:.2} scan16_vs_empty={:.2} scan64_vs_empty={:.2} scan256_vs_empty={:.2} p50_us={p50:.1} p99_us={p99:.1} followup_mb_s={mbs:.1}",
        ratio(1),
        ratio(2),
        ratio(3),
        ratio(4),
    );
    Ok(())
}
