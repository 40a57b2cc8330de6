//! `axiomd bench-store` (run by `cargo xtask bench store`): warm-tier ingest rate, Parquet export
//! rate, and "latest 1,000 events of one agent" at a given table size.
use std::{sync::Arc, time::Instant};

use axiom_proto::wire::{Body, Event};

use axiom_proto::wire::EventQuery;

use crate::store::{StoreError, Warm, query};

/// The bench's first event time (ns).
const T0: u64 = 1_800_000_000_000_000_000;

/// Agent-like events: 1,000 agents in turn, mostly ~100-byte output, some execs and files.
fn synthetic(i: u64) -> Event {
    let agent = 1 + i % 1000;
    let body = match i % 20 {
        0 => Body::Exec {
            filename: "/usr/bin/cargo".into(),
            argv: vec!["cargo".into(), "test".into(), format!("case_{i}")],
            cwd: Some("/work/project".into()),
            old_pid: 0,
            stdin: None,
        },
        1 => Body::File {
            op: axiom_proto::wire::FileOp::Open,
            path: format!("/work/project/src/mod_{}.rs", i % 97),
            path2: None,
            flags: 0o1101,
            mode: 0o644,
        },
        _ => Body::Output {
            fd: 1,
            syscall: axiom_proto::wire::WriteCall::Write,
            read_back: false,
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
        time_ns: T0 + i * 1000,
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
    pub parquet_out_mb_s: f64,
    pub db_bytes: u64,
}

/// Rows each table gets through axiomd's own writer (the ingest rate is measured on these); a
/// bigger table is first filled with as many older rows of the same shape by DuckDB itself, so
/// it is laid out exactly as a long ingest leaves it (time order) without taking the bench an
/// hour at the measured rate.
const APPENDED: u64 = 5_000_000;

/// `n` rows shaped like `synthetic(0..n)` (same agents, kinds, texts and bodies), by SQL, laid
/// out as the writer lays out its batches of `batch` (by agent, then time, within each).
fn fill(conn: &duckdb::Connection, host: &str, n: u64, batch: u64) -> Result<(), StoreError> {
    // Bodies as the writer stores them (an output's without its bytes: the text column has them).
    let body = |i: u64| {
        let mut out = Vec::new();
        crate::store::schema::body_json(&synthetic(i).body, &mut out);
        String::from_utf8(out).unwrap_or_default()
    };
    let text = |i: u64| crate::store::schema::searchable(&synthetic(i).body).unwrap_or_default();
    // About 10M rows at a time, whole batches.
    let chunk = batch * (10_000_000 / batch).max(1);
    let mut from = 0;
    while from < n {
        let to = (from + chunk).min(n);
        conn.execute(
            "INSERT INTO events SELECT 1, ?, i, ? + i * 1000, 1 + i % 1000, \
               CASE i % 20 WHEN 0 THEN 'exec' WHEN 1 THEN 'file' ELSE 'output' END, \
               10001 + i % 1000, 10001 + i % 1000, 1, 1000, 0, 'agent', false, \
               CASE i % 20 WHEN 0 THEN ? WHEN 1 THEN ? ELSE line || chr(10) END, \
               CASE i % 20 WHEN 0 THEN ? WHEN 1 THEN ? ELSE ? END, 1 \
             FROM (SELECT range AS i, 'line ' || lpad(range::VARCHAR, 10, ' ') \
                   || ': compiling module ' || (range % 311)::VARCHAR \
                   || ' of the project, all good so far ....' AS line FROM range(?, ?)) \
             ORDER BY i // ?, i % 1000, i",
            duckdb::params![
                host,
                T0 as i64,
                text(0),
                text(1),
                body(0),
                body(1),
                body(2),
                from as i64,
                to as i64,
                batch as i64
            ],
        )?;
        from = to;
    }
    Ok(())
}

/// A table of `rows` events at `path` (fresh): older ones filled by SQL, the newest
/// `APPENDED` through the warm tier's writer (timed), then measured.
pub fn run(
    path: &std::path::Path,
    rows: u64,
    parquet: bool,
    (batch_events, writers): (usize, usize),
) -> Result<Report, StoreError> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("duckdb.wal"));
    let mut warm = Warm::open(path, 1, 8192)?;
    let appended = rows.min(APPENDED);
    // Batches as the daemon's writer makes them under load: full ones, of the configured
    // `store.batch_events` sized as the writer sizes them.
    let batch = crate::store::warm::batch_cap(batch_events) as u64;
    let reader = warm.reader()?;
    fill(&reader, &crate::store::hostname(), rows - appended, batch)?;
    let ingest = append_timed(&mut warm, &reader, rows - appended..rows, batch, writers)?;
    let newest = warm.max_time_ns;
    let q = query::Query::from(EventQuery {
        agent: Some(7),
        limit: 1000,
        ..Default::default()
    });
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
    // MB/s of event data exported (its Arrow size before encoding), and of ZSTD Parquet written.
    let (parquet_mb_s, parquet_out_mb_s) = if parquet {
        let out = path.with_extension("parquet");
        let t = Instant::now();
        let w = crate::store::cold::write_parquet(&reader, &out, i64::MIN, i64::MAX)?;
        let secs = t.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&out);
        if w.rows != rows {
            return Err(StoreError::Refused(format!(
                "parquet export wrote {} of {rows} rows",
                w.rows
            )));
        }
        (w.arrow_bytes as f64 / secs / 1e6, bytes as f64 / secs / 1e6)
    } else {
        (0.0, 0.0)
    };
    let db_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    drop(reader);
    drop(warm);
    let _ = std::fs::remove_file(path);
    Ok(Report {
        rows,
        ingest_ev_s: appended as f64 / ingest,
        latest1000_ms: times[times.len() / 2],
        parquet_mb_s,
        parquet_out_mb_s,
        db_bytes,
    })
}

/// Seconds the warm tier's writer (`warm::pipeline`, its threads as the daemon runs them, with
/// `writers` writers) takes to store `synthetic(range)` in batches of `batch`, with the
/// checkpoint that ends it. Only the writer is timed: the daemon's events arrive built, so the
/// bench makes all of its own first.
fn append_timed(
    warm: &mut Warm,
    reader: &duckdb::Connection,
    range: std::ops::Range<u64>,
    batch: u64,
    writers: usize,
) -> Result<f64, StoreError> {
    let n = range.end - range.start;
    let end = range.end;
    let mut batches: std::collections::VecDeque<Vec<Arc<Event>>> = range
        .step_by(batch as usize)
        .map(|from| {
            (from..(from + batch).min(end))
                .map(|n| Arc::new(synthetic(n)))
                .collect()
        })
        .collect();
    let stats = crate::store::warm::WriterStats::default();
    let t0 = Instant::now();
    crate::store::warm::pipeline(
        warm,
        writers,
        |buf| {
            *buf = batches.pop_front()?;
            Some(())
        },
        &stats,
    );
    // The checkpoint is the ingest's too: what the batches left in the WAL is written into the
    // file there (a long ingest pays it every 16 MiB of WAL; a short one, here).
    reader.execute_batch("CHECKPOINT")?;
    let secs = t0.elapsed().as_secs_f64();
    let stored = stats.stored.load(std::sync::atomic::Ordering::Relaxed);
    if stored != n {
        return Err(StoreError::Refused(format!(
            "the writer stored {stored} of {n} events"
        )));
    }
    Ok(secs)
}

/// Ingest events/s with one writer and with `writers`, in the same run: `APPENDED` events into a
/// fresh database each time, in the order one, many, many, one (drift of the machine falls on
/// both). The means of each pair: (one writer, `writers` writers).
pub fn writers(
    path: &std::path::Path,
    (batch_events, writers): (usize, usize),
) -> Result<(f64, f64), StoreError> {
    let batch = crate::store::warm::batch_cap(batch_events) as u64;
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for w in [1, writers, writers, 1] {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(path.with_extension("duckdb.wal"));
        let mut warm = Warm::open(path, 1, 8192)?;
        let reader = warm.reader()?;
        let secs = append_timed(&mut warm, &reader, 0..APPENDED, batch, w)?;
        drop(reader);
        drop(warm);
        let _ = std::fs::remove_file(path);
        if w == 1 { &mut one } else { &mut many }.push(APPENDED as f64 / secs);
    }
    let mid = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok((mid(&one), mid(&many)))
}

/// Events per second the hot tier's publisher gets into Redis (pipelined XADD, the daemon's
/// own code), over `n` events, on a stream of its own that is deleted after.
pub fn redis(url: &str, n: u64) -> Result<f64, StoreError> {
    let dir = std::env::temp_dir().join(format!("axiom-bench-spool-{}", std::process::id()));
    let cfg = crate::store::config::HotConfig {
        enabled: true,
        url: url.into(),
        key_prefix: format!("axiom-bench-{}", std::process::id()),
        spool_dir: Some(dir.clone()),
        ..Default::default()
    };
    let stats = Arc::new(crate::store::hot::HotStats::default());
    let mut p = crate::store::hot::Publisher::new(&cfg, stats.clone())?;
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
