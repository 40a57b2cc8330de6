//! `cargo xtask bench agents`: axiomd's cost per agent at 1,000 and 10,000 concurrently running
//! agents, each a real process (the purpose-built `axiom-writer`: ~100-byte writes, ~1,000
//! chars/s), each adopted as an agent of its own. Reports axiomd's RSS and CPU, events/s, and
//! lost events by kind.
use std::{
    io::BufRead as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use axiom_proto::wire::{ErrorCode, Request};
use axiom_tests::Daemon;

use crate::{build, require_root, setup::setup, target_dir};

pub(super) fn proc_stat_cpu(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &s[s.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?; // utime + stime
    let hz = clk_tck();
    Ok(ticks / hz)
}

fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// How often RSS is read during the window.
const RSS_EVERY: Duration = Duration::from_millis(250);

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// Where axiomd's memory is, printed beside the RSS: anonymous against file-backed pages
/// (/proc smaps_rollup) and what DuckDB says it holds (`duckdb_memory()`), so the per-agent cost
/// can be told from the store's.
fn memory_breakdown(d: &Daemon, pid: u32, n: usize) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib = |key: &str| -> f64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let duckdb = d.client().request(&axiom_tests::sql_request(
        "SELECT tag, memory_usage_bytes FROM duckdb_memory() WHERE memory_usage_bytes > 0 \
         ORDER BY 2 DESC",
        100,
    ));
    let mut total = 0.0;
    let mut tags = Vec::new();
    for row in duckdb.rows.unwrap_or_default() {
        let (Some(tag), Some(b)) = (
            row.first().and_then(|v| v.as_str()),
            row.get(1).and_then(serde_json::Value::as_f64),
        ) else {
            continue;
        };
        total += b;
        tags.push(format!("{tag}={:.1}", b / 1048576.0));
    }
    println!(
        "{n} agents: memory anon {:.1} MiB, file {:.1} MiB; DuckDB holds {:.1} MiB ({}){}",
        kib("Anonymous:") / 1024.0,
        (kib("Rss:") - kib("Anonymous:")) / 1024.0,
        total / 1048576.0,
        tags.join(" "),
        duckdb
            .error
            .map(|e| format!(" [query: {e}]"))
            .unwrap_or_default(),
    );
}

struct Result {
    agents: usize,
    /// Median of the readings through the window.
    rss_mib: f64,
    /// Highest reading through the window.
    rss_peak_mib: f64,
    cpu_cores: f64,
    events_per_s: f64,
    lost_lifecycle: u64,
    lost_output: u64,
    /// Events the rules thread never matched (its queue was full): detection lost.
    rules_backlog: u64,
    /// Output the store shed under pressure (queue or memory cap full): not stored.
    store_shed: u64,
    /// Children gone before axiomd adopted them (not agents of the run).
    gone: usize,
}

fn run_one(n: usize, window: Duration, set: &[String]) -> anyhow::Result<Result> {
    let args: Vec<&str> = set.iter().flat_map(|s| ["--set", s.as_str()]).collect();
    let d = Daemon::start("bench_agents", &args);
    let daemon_pid = d.child.as_ref().context("daemon")?.id();
    // Longer than adoption and the window take even on a loaded machine (adopting 10,000 took
    // 112 s in one CI run and over 170 s in the next): those still running are ended after it.
    let seconds = (window.as_secs() + 60 + n as u64 / 20).to_string();
    let mut writer = Command::new(target_dir().join("axiom-writer"))
        .args([&n.to_string(), "100", "100", &seconds])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting axiom-writer")?;
    let mut pids = Vec::with_capacity(n);
    let err = writer.stderr.take().context("writer stderr")?;
    for line in std::io::BufReader::new(err).lines() {
        let line = line?;
        if line == "ready" {
            break;
        }
        pids.push(line.parse::<u32>()?);
    }
    if pids.len() != n {
        bail!("axiom-writer started {} of {n} children", pids.len());
    }
    let t0 = Instant::now();
    let mut c = d.client();
    // A child that is gone by the time axiomd reaches it (two CI runs saw one each, the cause
    // unknown: the children live minutes longer than adoption takes) is counted and shown, not
    // a reason to throw the run away; any other refusal, or a child axiomd calls gone that is
    // still there, is an error.
    let mut gone = 0usize;
    for p in &pids {
        let r = c.request(&Request::TrackPid { pid: *p });
        if r.ok {
            continue;
        }
        let alive = std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        // Gone before axiomd reached it (no such process) or while it adopted it: either way
        // checked here, from /proc, not taken on axiomd's word.
        let gone_code = matches!(
            r.code,
            Some(ErrorCode::ExitedDuringAdoption | ErrorCode::NoSuchProcess)
        );
        if gone_code && !alive {
            gone += 1;
            continue;
        }
        bail!("adopting {p} (alive: {alive}): {:?}", r.error);
    }
    if gone > 0 {
        println!("{n} agents: {gone} children had exited before axiomd adopted them");
    }
    let adopt = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1)); // settle
    let st0 = d.status();
    let cpu0 = proc_stat_cpu(daemon_pid)?;
    let w0 = Instant::now();
    // RSS sampled through the window: with the store behind, it swings by a couple of hundred
    // MiB within seconds (a batch filling, columns built, DuckDB's copy while it appends), so a
    // single reading at the end is one draw from that swing, not the daemon's size.
    // At least one reading, whatever the window: an empty set would pass the target at 0 MiB.
    let mut rss_samples = Vec::new();
    loop {
        std::thread::sleep(RSS_EVERY.min(window.saturating_sub(w0.elapsed())));
        rss_samples.push(rss_mib(daemon_pid)?);
        if w0.elapsed() >= window {
            break;
        }
    }
    let cpu1 = proc_stat_cpu(daemon_pid)?;
    let st1 = d.status();
    let secs = w0.elapsed().as_secs_f64();
    let rss_peak = rss_samples.iter().copied().fold(0.0, f64::max);
    let rss = super::median(&mut rss_samples);
    memory_breakdown(&d, daemon_pid, n);
    let total = |s: &axiom_proto::wire::Status| s.events.values().sum::<u64>();
    let events_per_s = (total(&st1) - total(&st0)) as f64 / secs;
    // Every child's exit must be seen: end the ones still running (adoption may have taken most
    // of their lifetime on a loaded machine), wait for the writer, then count.
    use nix::{sys::signal, unistd::Pid};
    let alive: Vec<Pid> = pids
        .iter()
        .map(|p| Pid::from_raw(*p as i32))
        .filter(|p| signal::kill(*p, None).is_ok())
        .collect();
    for p in &alive {
        let _ = signal::kill(*p, signal::Signal::SIGTERM);
    }
    writer.wait()?;
    let exits_expected = st1.events.get("exit").copied().unwrap_or(0) + alive.len() as u64;
    let t1 = Instant::now();
    let mut st = d.status();
    while st.events.get("exit").copied().unwrap_or(0) < exits_expected
        && t1.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
        st = d.status();
    }
    let exits = st.events.get("exit").copied().unwrap_or(0);
    let lost_lifecycle = exits_expected.saturating_sub(exits)
        + st.lost.get("ring_full_events").copied().unwrap_or(0);
    let out_lost = |s: &axiom_proto::wire::Status| {
        s.lost.get("ring_full_output").copied().unwrap_or(0)
            + s.lost.get("subscriber_lagged").copied().unwrap_or(0)
    };
    let lost_output = out_lost(&st);
    let cause = |k: &str| st.lost.get(k).copied().unwrap_or(0);
    let (rules_backlog, store_shed) = (cause("rules_backlog"), cause("store_shed_output"));
    let mut causes: Vec<String> = st
        .lost
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    causes.sort();
    println!("{n} agents: lost by cause at the end: {}", causes.join(" "));
    println!(
        "{n} agents: output lost while adopting {}, in the window {}, while they exited {}",
        out_lost(&st0),
        out_lost(&st1) - out_lost(&st0),
        lost_output - out_lost(&st1)
    );
    println!(
        "{n} agents: adopted in {:.2} s; over {secs:.1} s axiomd used {:.3} cores ({:.1} µs CPU/s per agent), RSS {rss:.1} MiB median, {rss_peak:.1} peak ({:.1} KiB per agent at the median), {events_per_s:.0} events/s; lost lifecycle {lost_lifecycle}, lost output {lost_output}",
        adopt.as_secs_f64(),
        (cpu1 - cpu0) / secs,
        (cpu1 - cpu0) / secs / n as f64 * 1e6,
        rss * 1024.0 / n as f64,
    );
    Ok(Result {
        agents: n,
        rss_mib: rss,
        rss_peak_mib: rss_peak,
        cpu_cores: (cpu1 - cpu0) / secs,
        events_per_s,
        lost_lifecycle,
        lost_output,
        rules_backlog,
        store_shed,
        gone,
    })
}

pub fn run(sizes: &[usize], window_s: u64, set: &[String]) -> anyhow::Result<()> {
    require_root("bench agents")?;
    setup()?;
    build()?;
    let mut last = None;
    for &n in sizes {
        last = Some(run_one(n, Duration::from_secs(window_s), set)?);
    }
    let r = last.context("no sizes")?;
    println!(
        "targets at 10,000 agents: RSS <= 256 MiB at its peak in the window, < 1 core, 0 lost lifecycle events, every event matched by the rules{}",
        if r.agents == 10_000 {
            format!(
                " — {}",
                if r.rss_peak_mib <= 256.0
                    && r.cpu_cores < 1.0
                    && r.lost_lifecycle == 0
                    && r.rules_backlog == 0
                {
                    "met"
                } else {
                    "NOT met"
                }
            )
        } else {
            String::new()
        }
    );
    println!(
        "bench agents: agents={} rss_mib={:.0} rss_peak_mib={:.0} cpu_cores={:.3} events_per_s={:.0} lost_lifecycle={} lost_output={} rules_backlog={} store_shed={} exited_before_adoption={}",
        r.agents,
        r.rss_mib,
        r.rss_peak_mib,
        r.cpu_cores,
        r.events_per_s,
        r.lost_lifecycle,
        r.lost_output,
        r.rules_backlog,
        r.store_shed,
        r.gone
    );
    Ok(())
}
