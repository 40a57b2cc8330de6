//! `axiomd bench-store` (run by `cargo xtask bench store`): warm-tier ingest rate, Parquet export
//! rate, and "latest 1,000 events of one agent" at a given table size.
use std::{sync::Arc, time::Instant};

use axiom_common::wire::{Body, Event};

use super::{StoreError, Warm, query};

/// Agent-like events: 1,000 agents in turn, mostly ~100-byte output, some execs and files.
fn synthetic(i: u64) -> Event {
    let agent = 1 + i % 1000;
    let body = match i % 20 {
        0 => Body::Exec {
            filename: "/usr/bin/cargo".into(),
            argv: vec!["cargo".into(), "test".into(), format!("case_{i}")],
            cwd: Some("/work/project".into()),
            old_pid: 0,
        },
        1 => Body::File {
            op: "open".into(),
            path: format!("/work/project/src/mod_{}.rs", i % 97),
            path2: None,
            flags: 0o1101,
            mode: 0o644,
        },
        _ => Body::Output {
            fd: 1,
            syscall: "write".into(),
            count: 100,
            target: Some("/dev/pts/3".into()),
            text: format!(
                "line {i:>10}: compiling module {} of the project, all good so far ....\n",
                i % 311
            ),
            captured: 100,
            redacted: Vec::new(),
        },
    };
    Event {
        seq: i,
        time_ns: 1_800_000_000_000_000_000 + i * 1000,
        agent,
        pid: 10_000 + agent as u32,
        tgid: 10_000 + agent as u32,
        ppid: 1,
        uid: 1000,
        cgroup_id: 0,
        comm: "agent".into(),
        truncated: false,
        body,
    }
}

pub struct Report {
    pub rows: u64,
    pub ingest_ev_s: f64,
    pub latest1000_ms: f64,
    pub parquet_mb_s: f64,
    pub db_bytes: u64,
}

/// Ingests `rows` events into a fresh database at `path`, then measures.
pub fn run(path: &std::path::Path, rows: u64, parquet: bool) -> Result<Report, StoreError> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("duckdb.wal"));
    let mut warm = Warm::open(path, 1)?;
    let batch: u64 = 1 << 17;
    let t0 = Instant::now();
    let mut i = 0;
    let mut buf: Vec<Arc<Event>> = Vec::with_capacity(batch as usize);
    while i < rows {
        buf.clear();
        let end = (i + batch).min(rows);
        buf.extend((i..end).map(|n| Arc::new(synthetic(n))));
        warm.append(&buf)?;
        i = end;
    }
    let ingest = t0.elapsed().as_secs_f64();
    let reader = warm.reader()?;
    let newest = warm.max_time_ns;
    reader.execute_batch("CHECKPOINT")?;
    let q = query::Query {
        agent: Some(7),
        limit: 1000,
        ..Default::default()
    };
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let got = query::latest(&reader, &q, newest)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if got.len() != 1000 {
            return Err(StoreError::Refused(format!(
                "latest 1000 returned {}",
                got.len()
            )));
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    // The cold tier's own writer: the whole table, by agent then time, ZSTD.
    let parquet_mb_s = if parquet {
        let out = path.with_extension("parquet");
        let t = Instant::now();
        super::cold::write_parquet(&reader, &out, i64::MIN, i64::MAX)?;
        let secs = t.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&out);
        bytes as f64 / secs / 1e6
    } else {
        0.0
    };
    let db_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    drop(reader);
    drop(warm);
    let _ = std::fs::remove_file(path);
    Ok(Report {
        rows,
        ingest_ev_s: rows as f64 / ingest,
        latest1000_ms: times[times.len() / 2],
        parquet_mb_s,
        db_bytes,
    })
}

/// Events per second the hot tier's publisher gets into Redis (pipelined XADD, the daemon's
/// own code), over `n` events, on a stream of its own that is deleted after.
pub fn redis(url: &str, n: u64) -> Result<f64, StoreError> {
    let dir = std::env::temp_dir().join(format!("axiom-bench-spool-{}", std::process::id()));
    let cfg = crate::config::HotConfig {
        enabled: true,
        url: url.into(),
        key_prefix: format!("axiom-bench-{}", std::process::id()),
        spool_dir: Some(dir.clone()),
        ..Default::default()
    };
    let stats = Arc::new(super::hot::HotStats::default());
    let mut p = super::hot::Publisher::new(&cfg, stats.clone())?;
    let batch = cfg.batch_events as u64;
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let evs: Vec<Arc<Event>> = (i..end).map(|k| Arc::new(synthetic(k + 1))).collect();
        p.publish_events(&evs, 1)?;
        i = end;
    }
    let secs = t0.elapsed().as_secs_f64();
    let sent = stats.sent.load(std::sync::atomic::Ordering::Relaxed);
    let spooled = stats.spooled.load(std::sync::atomic::Ordering::Relaxed);
    let key = p.key().to_string();
    if let Ok(mut c) = redis::Client::open(url).and_then(|c| c.get_connection()) {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&key).query(&mut c);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if sent != n || spooled != 0 {
        return Err(StoreError::Refused(format!(
            "redis bench: {sent} of {n} sent, {spooled} spooled"
        )));
    }
    Ok(n as f64 / secs)
}
