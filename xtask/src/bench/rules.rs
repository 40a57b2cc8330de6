//! `cargo xtask bench rules`: what matching costs and how fast it detects.
//!
//! 1. Kernel scan cost: `dd` of 256 B and 4 KiB writes tracked by axiomd with 0 (capture only), 1,
//!    16, 64, 256 and 1,024 literals in the kernel matcher (the cost per byte is the slope between
//!    the two sizes; the kernel's own counters confirm every byte was scanned), against the empty program on the same hook: the kernel's own
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
    sensor::{Baseline, dd_bs, kernel_work},
};
use crate::{build, require_root, setup::setup, target_dir};

/// Literals in the kernel matcher, per measured configuration (0: capture only).
const SIZES: [usize; 6] = [0, 1, 16, 64, 256, 1024];
/// Write sizes: the scan's cost per byte is the slope between them (the cost per write, fixed
/// parts such as the per-fd state and the match ring, cancels out).
const SMALL: usize = 256;
const LARGE: usize = axiom_common::SCAN_MAX;

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

/// Mean ns per `enter_write` run while `f` runs. Exactly one such program may run meanwhile
/// (the one measured): with two, which one is ours cannot be told from the numbers, and a
/// foreign sensor's cheap untracked path was once reported as the 64-literal scan.
fn ns_per_write(f: impl FnOnce() -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    let before = write_hook_stats();
    f()?;
    let after = write_hook_stats();
    let ran: Vec<(u32, u64, u64)> = after
        .iter()
        .map(|(id, (t, n))| {
            let (t0, n0) = before.get(id).copied().unwrap_or((0, 0));
            (*id, n - n0, t - t0)
        })
        .filter(|(_, n, _)| *n > 0)
        .collect();
    match ran.as_slice() {
        [(_, n, t)] => Ok(*t as f64 / *n as f64),
        [] => bail!("no enter_write program ran"),
        more => bail!(
            "{} enter_write programs ran (ids {:?}): another sensor is attached",
            more.len(),
            more.iter().map(|(id, _, _)| id).collect::<Vec<_>>()
        ),
    }
}

/// The timed run did the work it is reported for: every one of `count` writes captured, and
/// with literals in the matcher every captured byte (`bs` per write) scanned; with none, no scan.
fn check_work(
    literals: usize,
    count: u64,
    bs: usize,
    records: u64,
    scanned: u64,
) -> anyhow::Result<()> {
    let bytes = count * bs as u64;
    let scan_ok = if literals == 0 {
        scanned == 0
    } else {
        scanned >= bytes
    };
    if records < count || !scan_ok {
        bail!(
            "bench rules: with {literals} literals and {bs}-byte writes the kernel captured {records} writes (at least {count} expected) and scanned {scanned} bytes ({} expected): the timed work did not happen",
            if literals == 0 {
                "none".to_string()
            } else {
                format!("at least {bytes}")
            }
        );
    }
    Ok(())
}

/// One configuration's cost: ns per `enter_write` run for SMALL and LARGE writes.
#[derive(Default)]
struct Scan {
    small: Vec<f64>,
    large: Vec<f64>,
}

/// Literals, then median ns per write at SMALL and at LARGE.
type Row = (usize, f64, f64);

/// The empty program's ns per write, and per literal count the tracked cost at both sizes.
fn scan_cost(rounds: usize, count: u64) -> anyhow::Result<(f64, Vec<Row>)> {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling bpf_stats")?;
    let mut empty = Vec::new();
    let mut scans: Vec<Scan> = SIZES.iter().map(|_| Scan::default()).collect();
    let dirs: Vec<PathBuf> = SIZES
        .iter()
        .map(|n| rules_dir(*n))
        .collect::<Result<_, _>>()?;
    // Large writes move 16 times the bytes: fewer of them keep a run as long.
    let large_count = (count / 8).max(1000);
    for round in 0..rounds {
        {
            let _b = Baseline::start()?;
            empty.push(ns_per_write(|| dd_bs(count, SMALL, None, &[]))?);
        }
        for (i, dir) in dirs.iter().enumerate() {
            let d = Daemon::start("bench_rules", &["--rules", &dir.display().to_string()]);
            let cg = Cgroup::new("bench_rules");
            d.track_cgroup(&cg);
            for (bs, n, large) in [(SMALL, count, false), (LARGE, large_count, true)] {
                let (r0, s0) = kernel_work(&d);
                let ns = ns_per_write(|| dd_bs(n, bs, Some(&cg), &[]))?;
                let (r1, s1) = kernel_work(&d);
                check_work(SIZES[i], n, bs, r1 - r0, s1 - s0)?;
                if large {
                    scans[i].large.push(ns);
                } else {
                    scans[i].small.push(ns);
                }
            }
        }
        println!("bench rules: scan round {}/{rounds} done", round + 1);
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    let rows = SIZES
        .iter()
        .zip(&mut scans)
        .map(|(n, s)| (*n, median(&mut s.small), median(&mut s.large)))
        .collect();
    Ok((median(&mut empty), rows))
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

/// The floor under detection latency on this machine: one thread writes its clock into a pipe
/// once per millisecond (the latency bench's pace, so the CPUs idle between), another blocked in
/// read(2) wakes and reads the clock again. A detection is at least this: axiomd's reader is a
/// thread that the kernel wakes when a match lands in its ring. Microseconds, one per wakeup.
fn wakeup_floor(n: usize) -> anyhow::Result<Vec<f64>> {
    use std::io::{Read as _, Write as _};
    let (mut rx, mut tx) = std::io::pipe()?;
    let now = || {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
            .unwrap_or(0)
    };
    let reader = std::thread::spawn(move || {
        let mut out = Vec::with_capacity(n);
        let mut b = [0u8; 16];
        while rx.read_exact(&mut b).is_ok() {
            let sent = i128::from_le_bytes(b);
            out.push((now() - sent) as f64 / 1e3);
        }
        out
    });
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(1));
        tx.write_all(&now().to_le_bytes())?;
    }
    drop(tx);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the wakeup reader panicked"))
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
    super::sensor::require_clean_kernel("bench rules")?;
    let (empty, rows) = scan_cost(rounds, count)?;
    println!();
    println!(
        "dd of {SMALL} B and {LARGE} B writes, median of {rounds} rounds: ns per enter_write run (bpf_stats)"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "mode",
        format!("{SMALL} B"),
        format!("{LARGE} B"),
        "scan ns/B"
    );
    println!("{:<34} {empty:>10.1}", "empty program, same hook");
    let (capture_small, capture_large) = (rows[0].1, rows[0].2);
    let bytes = (LARGE - SMALL) as f64;
    // The scan's cost per byte: what the matcher adds over capture alone, as the slope between
    // the two write sizes (its cost per write, whatever the size, cancels out).
    let per_byte =
        |small: f64, large: f64| ((large - capture_large) - (small - capture_small)) / bytes;
    for (n, small, large) in &rows {
        let slope = if *n == 0 {
            String::new()
        } else {
            format!("{:.2}", per_byte(*small, *large))
        };
        println!(
            "{:<34} {small:>10.1} {large:>10.1} {slope:>12}",
            format!("axiomd tracked, {n} literals")
        );
    }
    let ratio = |n: usize| {
        rows.iter()
            .find(|r| r.0 == n)
            .map_or(f64::NAN, |r| r.1 / empty)
    };
    let slope = |n: usize| {
        rows.iter()
            .find(|r| r.0 == n)
            .map_or(f64::NAN, |r| per_byte(r.1, r.2))
    };
    let mut lat = latency(writes)?;
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    println!(
        "detection latency over {} matches: p50 {p50:.1} µs, p99 {p99:.1} µs",
        lat.len()
    );
    let mut floor = wakeup_floor(writes)?;
    let (f50, f99) = (percentile(&mut floor, 0.5), percentile(&mut floor, 0.99));
    println!(
        "thread wakeup on this machine (the floor under detection): p50 {f50:.1} µs, p99 {f99:.1} µs"
    );
    let mbs = followup()?;
    let worst = SIZES[1..]
        .iter()
        .map(|n| slope(*n))
        .fold(f64::NAN, f64::max);
    println!(
        "targets: scan <= 1.5 ns/B for any literal count ({}), p50 <= 10 µs ({}), p99 <= 50 µs ({})",
        if worst <= 1.5 { "met" } else { "NOT met" },
        if p50 <= 10.0 { "met" } else { "NOT met" },
        if p99 <= 50.0 { "met" } else { "NOT met" },
    );
    println!(
        "bench rules: scan_ns_per_byte_1={:.2} scan_ns_per_byte_16={:.2} scan_ns_per_byte_64={:.2} scan_ns_per_byte_256={:.2} scan_ns_per_byte_1024={:.2} capture256_vs_empty={:.2} scan64_vs_empty={:.2} p50_us={p50:.1} p99_us={p99:.1} wakeup_p50_us={f50:.1} wakeup_p99_us={f99:.1} followup_mb_s={mbs:.1}",
        slope(1),
        slope(16),
        slope(64),
        slope(256),
        slope(1024),
        ratio(0),
        ratio(64),
    );
    Ok(())
}
