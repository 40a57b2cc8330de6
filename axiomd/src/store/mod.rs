//! The warm tier: every event in DuckDB, an embedded file in the state directory.
//!
//! Events reach the store through a tap on the bus with back-pressure (`Tap`): lifecycle,
//! exec, file, network, violations and interventions on a lossless channel; bulk output on a
//! bounded one that sheds, counted, when the writer falls behind. The writer appends in batches
//! (DuckDB's appender) and commits each batch: an event is acknowledged once its batch is
//! committed, and a crash after that loses nothing.
pub mod bench;
pub mod cold;
pub mod gate;
pub mod hot;
pub mod query;
pub mod schema;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    time::{Duration, Instant},
};

use axiom_common::wire::{Body, Event};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: duckdb::Error,
    },
    #[error("event store: {0}")]
    Query(#[from] duckdb::Error),
    #[error("event store: {0}")]
    Refused(String),
    #[error(transparent)]
    Hot(#[from] hot::HotError),
    #[error(transparent)]
    Cold(#[from] cold::ColdError),
}

/// This host's name, as every tier records it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// This daemon run's number: its start, in ms since the epoch. Events are numbered (`seq`) from
/// 1 in each run, so (host, run, seq) names one event for good, and `run-seq` is a valid,
/// increasing Redis stream id.
pub fn run_id() -> u64 {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RUN.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1)
    })
}

/// The DuckDB database holding the events.
pub struct Warm {
    conn: duckdb::Connection,
    pub path: PathBuf,
    host: String,
    run: u64,
    /// The newest event time appended: "latest N" queries look back from here.
    pub max_time_ns: u64,
}

impl Warm {
    /// Opens (or creates) the database and locks the instance down (`gate::lock_down`): no
    /// file, URL or extension reachable from SQL, `memory_mib` of memory at most.
    pub fn open(path: &Path, run: u64, memory_mib: u64) -> Result<Warm, StoreError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = |source| StoreError::Db {
            path: path.into(),
            source,
        };
        let conn = duckdb::Connection::open(path).map_err(db)?;
        conn.execute_batch(schema::CREATE).map_err(db)?;
        gate::lock_down(&conn, memory_mib).map_err(db)?;
        // Whatever an earlier run stored (an empty table: 0).
        let max_time_ns = conn
            .query_row("SELECT coalesce(max(time_ns), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(db)?
            .max(0) as u64;
        Ok(Warm {
            conn,
            path: path.into(),
            host: hostname(),
            run,
            max_time_ns,
        })
    }

    /// A second connection to the same database (queries run on it, not on the writer's).
    pub fn reader(&self) -> Result<duckdb::Connection, StoreError> {
        Ok(self.conn.try_clone()?)
    }

    /// Appends a batch of this daemon's events and commits it.
    pub fn append(&mut self, batch: &[Arc<Event>]) -> Result<(), StoreError> {
        let rows: Vec<schema::Row> = batch
            .iter()
            .map(|ev| schema::Row::of(ev, &self.host, self.run))
            .collect();
        self.commit(&rows, None)
    }

    /// Rows moved from a Redis stream, with the stream's mark, in one transaction: either both
    /// are stored or neither, so an entry delivered again after a crash is skipped, not doubled.
    pub fn ingest(
        &mut self,
        rows: &[schema::Row],
        stream: &str,
        last: (u64, u64),
    ) -> Result<(), StoreError> {
        self.commit(rows, Some((stream, last)))
    }

    /// One transaction: a batch that fails leaves nothing behind, so retrying it cannot double.
    fn commit(
        &mut self,
        rows: &[schema::Row],
        mark: Option<(&str, (u64, u64))>,
    ) -> Result<(), StoreError> {
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        let done = (|| {
            let mut app = self.conn.appender("events")?;
            schema::append_rows(&mut app, rows)?;
            app.flush()?;
            drop(app);
            if let Some((stream, (run, seq))) = mark {
                self.conn.execute(
                    "INSERT OR REPLACE INTO ingest_marks VALUES (?, ?, ?)",
                    duckdb::params![stream, run, seq],
                )?;
            }
            self.conn.execute_batch("COMMIT")
        })();
        if let Err(e) = done {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        if let Some(t) = rows.iter().map(|r| r.time_ns).max() {
            self.max_time_ns = self.max_time_ns.max(t.max(0) as u64);
        }
        Ok(())
    }

    /// How far `stream` has been moved in: the (run, seq) of its last entry stored.
    pub fn mark(&self, stream: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT run, seq FROM ingest_marks WHERE stream = ?")?;
        let mut rows = st.query([stream])?;
        Ok(match rows.next()? {
            Some(r) => Some((r.get(0)?, r.get(1)?)),
            None => None,
        })
    }
}

/// Roughly what an event costs while it waits in memory (the struct, its strings).
pub fn weight(ev: &Event) -> u64 {
    let body = match &ev.body {
        Body::Output { text, target, .. } => text.len() + target.as_ref().map_or(0, String::len),
        Body::Exec { argv, filename, .. } => {
            filename.len() + argv.iter().map(|a| a.len() + 24).sum::<usize>()
        }
        Body::File { path, path2, .. } => path.len() + path2.as_ref().map_or(0, String::len),
        _ => 64,
    };
    (256 + ev.comm.len() + body) as u64
}

/// The largest output event coalescing makes.
const COALESCE_MAX: usize = 64 << 10;

/// Queued bytes, shared by both ends of the tap.
#[derive(Default)]
pub struct Pressure {
    pub queued_bytes: AtomicU64,
    /// Bulk output events shed (queue full or memory cap reached).
    pub shed_output: AtomicU64,
    /// Output chunks merged into the chunk before them under pressure.
    pub coalesced_output: AtomicU64,
}

/// The bus's side of the store: never blocks the publisher. Below the high watermark every
/// event is queued as it is. Above it (until the queue is back under the low watermark),
/// output chunks of one process and fd that follow each other are merged into one event
/// (counted), and output is shed (counted) once the memory cap is reached. Lifecycle, exec,
/// file, network, violations and interventions are always queued.
pub struct Tap {
    critical: std::sync::mpsc::Sender<Arc<Event>>,
    bulk: SyncSender<Arc<Event>>,
    pressure: Arc<Pressure>,
    cap: u64,
    high: u64,
    low: u64,
    /// Under pressure, the output chunk being coalesced.
    pending: std::sync::Mutex<Pending>,
}

/// The writer's side.
pub struct Intake {
    critical: Receiver<Arc<Event>>,
    bulk: Receiver<Arc<Event>>,
    pressure: Arc<Pressure>,
}

/// A tap whose bulk queue holds `bulk_events` output events and whose queues hold about
/// `cap_bytes` in all.
pub fn tap(bulk_events: usize, cap_bytes: u64) -> (Tap, Intake) {
    let (c_tx, c_rx) = std::sync::mpsc::channel();
    let (b_tx, b_rx) = std::sync::mpsc::sync_channel(bulk_events.max(1));
    let pressure = Arc::new(Pressure::default());
    let cap = cap_bytes.max(1 << 20);
    (
        Tap {
            critical: c_tx,
            bulk: b_tx,
            pressure: pressure.clone(),
            cap,
            high: cap / 4 * 3,
            low: cap / 2,
            pending: std::sync::Mutex::new(Pending::default()),
        },
        Intake {
            critical: c_rx,
            bulk: b_rx,
            pressure,
        },
    )
}

/// Appends `next` to `into` when both are output of the same process and fd and the result
/// stays under `COALESCE_MAX`.
fn coalesce(into: &mut Event, next: &Event) -> bool {
    if into.tgid != next.tgid || into.agent != next.agent {
        return false;
    }
    match (&mut into.body, &next.body) {
        (
            Body::Output {
                fd,
                text,
                count,
                captured,
                redacted,
                ..
            },
            Body::Output {
                fd: fd2,
                text: t2,
                count: c2,
                captured: cap2,
                redacted: r2,
                ..
            },
        ) if fd == fd2 && text.len() + t2.len() <= COALESCE_MAX => {
            text.push_str(t2);
            *count += c2;
            *captured += cap2;
            for r in r2 {
                if !redacted.contains(r) {
                    redacted.push(r.clone());
                }
            }
            into.truncated |= next.truncated;
            true
        }
        _ => false,
    }
}

impl Drop for Tap {
    /// What is being coalesced still goes to the queue.
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            let held = p.held.take();
            if let Some((h, n)) = held {
                self.queue_bulk(Arc::new(h), n);
            }
        }
    }
}

/// The coalescer's state.
#[derive(Default)]
struct Pending {
    /// Between the high watermark and the return below the low one.
    under: bool,
    /// The chunk being coalesced, and how many chunks it holds.
    held: Option<(Event, u64)>,
}

impl Tap {
    pub fn pressure(&self) -> &Pressure {
        &self.pressure
    }

    /// Queues output (`chunks`: how many written chunks it holds), or sheds it, counted.
    fn queue_bulk(&self, ev: Arc<Event>, chunks: u64) {
        let w = weight(&ev);
        if self.pressure.queued_bytes.load(Ordering::Relaxed) + w > self.cap {
            self.pressure
                .shed_output
                .fetch_add(chunks, Ordering::Relaxed);
            return;
        }
        self.pressure.queued_bytes.fetch_add(w, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.bulk.try_send(ev) {
            self.pressure.queued_bytes.fetch_sub(w, Ordering::Relaxed);
            self.pressure
                .shed_output
                .fetch_add(chunks, Ordering::Relaxed);
        }
    }

    fn release(&self, p: &mut Pending) {
        if let Some((h, n)) = p.held.take() {
            self.queue_bulk(Arc::new(h), n);
        }
    }

    pub fn offer(&self, ev: &Arc<Event>) {
        let queued = self.pressure.queued_bytes.load(Ordering::Relaxed);
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        // Hysteresis: pressure starts above the high watermark, ends below the low one.
        if !p.under && queued > self.high {
            p.under = true;
        } else if p.under && queued < self.low {
            p.under = false;
        }
        match ev.body {
            Body::Output { .. } if p.under => {
                if let Some((h, n)) = p.held.as_mut()
                    && coalesce(h, ev)
                {
                    *n += 1;
                    self.pressure
                        .coalesced_output
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.release(&mut p);
                p.held = Some(((**ev).clone(), 1));
            }
            Body::Output { .. } => {
                self.release(&mut p);
                self.queue_bulk(ev.clone(), 1);
            }
            Body::KernelMatch { .. } => {}
            _ => {
                self.release(&mut p);
                self.pressure
                    .queued_bytes
                    .fetch_add(weight(ev), Ordering::Relaxed);
                let _ = self.critical.send(ev.clone());
            }
        }
    }
}

/// What the writer has done, for `status`.
#[derive(Default)]
pub struct WriterStats {
    pub stored: AtomicU64,
    pub batches: AtomicU64,
    pub failed_batches: AtomicU64,
    /// The newest event time committed.
    pub max_time_ns: AtomicU64,
}

impl Intake {
    fn take(&self, buf: &mut Vec<Arc<Event>>, ev: Arc<Event>) {
        self.pressure
            .queued_bytes
            .fetch_sub(weight(&ev), Ordering::Relaxed);
        buf.push(ev);
    }

    /// Fills `buf` up to `batch` events (lossless ones first); returns when the batch is full,
    /// or `flush` has passed since its first event, or `None` once the bus is gone and nothing
    /// is left.
    pub fn collect(&self, buf: &mut Vec<Arc<Event>>, batch: usize, flush: Duration) -> Option<()> {
        let since = Instant::now();
        loop {
            while buf.len() < batch {
                match self.critical.try_recv() {
                    Ok(ev) => self.take(buf, ev),
                    Err(_) => break,
                }
            }
            while buf.len() < batch {
                match self.bulk.try_recv() {
                    Ok(ev) => self.take(buf, ev),
                    Err(_) => break,
                }
            }
            if buf.len() >= batch || (!buf.is_empty() && since.elapsed() >= flush) {
                return Some(());
            }
            match self.bulk.recv_timeout(Duration::from_millis(20)) {
                Ok(ev) => self.take(buf, ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return (!buf.is_empty()).then_some(());
                }
            }
        }
    }
}

/// The writer thread (warm tier only): batches of up to `batch` events or `flush` time,
/// appended and committed; a batch that fails (a full disk) is kept, reported and retried.
pub fn write(
    mut warm: Warm,
    intake: Intake,
    batch: usize,
    flush: Duration,
    stats: Arc<WriterStats>,
) {
    let mut buf: Vec<Arc<Event>> = Vec::with_capacity(batch);
    stats.max_time_ns.store(warm.max_time_ns, Ordering::Relaxed);
    loop {
        let more = intake.collect(&mut buf, batch, flush);
        while !buf.is_empty() {
            match warm.append(&buf) {
                Ok(()) => {
                    stats.max_time_ns.store(warm.max_time_ns, Ordering::Relaxed);
                    stats.stored.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    buf.clear();
                }
                Err(e) => {
                    stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        events = buf.len(),
                        "event store: batch not written, retrying: {e}"
                    );
                    if more.is_none() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    // Take in what arrived meanwhile (output beyond the queue is shed, counted).
                    break;
                }
            }
        }
        if more.is_none() {
            return;
        }
    }
}

/// The store's threads, running: what queries read and what `status` shows.
pub struct Running {
    pub reader: query::Reader,
    pub writer: Arc<WriterStats>,
    pub hot: Option<(Arc<hot::HotStats>, Arc<hot::MoverStats>)>,
    pub cold: Option<Arc<cold::ColdStats>>,
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Running {
    /// Counters by name, for `status`.
    pub fn status(&self) -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        let mut put = |k: &str, v: &AtomicU64| {
            m.insert(k.to_string(), v.load(Ordering::Relaxed));
        };
        let w = &self.writer;
        put("stored", &w.stored);
        put("batches", &w.batches);
        put("failed_batches", &w.failed_batches);
        if let Some((h, mv)) = &self.hot {
            put("hot_sent", &h.sent);
            put("hot_spooled", &h.spooled);
            put("hot_duplicates", &h.duplicates);
            put("hot_redis_errors", &h.redis_errors);
            put("hot_failed_batches", &h.failed_batches);
            put("hot_moved", &mv.moved);
            put("hot_redelivered", &mv.redelivered);
            put("hot_mover_errors", &mv.errors);
        }
        if let Some(c) = &self.cold {
            put("cold_parts", &c.parts);
            put("cold_rows", &c.rows);
            put("cold_bytes", &c.bytes);
            put("cold_errors", &c.errors);
            put("cold_expired_parts", &c.expired_parts);
        }
        m
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| StoreError::Refused(format!("starting the {name} thread: {e}")))
}

/// Opens the tiers the config enables and starts their threads: events from the tap go to
/// Redis (hot on) or straight to DuckDB; the mover and the cold exporter run beside.
pub fn start(cfg: &crate::config::StoreConfig, intake: Intake) -> Result<Running, StoreError> {
    let cfg = &cfg.resolved();
    let run = run_id();
    let warm = Warm::open(&cfg.path, run, cfg.sql.memory_mib)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = Arc::new(WriterStats::default());
    writer
        .max_time_ns
        .store(warm.max_time_ns, Ordering::Relaxed);
    let (batch, flush) = (
        cfg.batch_events.max(1),
        Duration::from_millis(cfg.flush_ms.max(1)),
    );
    let reader_conn = warm.reader()?;
    let cold = if cfg.cold.enabled {
        let c = Arc::new(cold::Cold::open(
            cfg.cold.url.as_deref().unwrap_or_default(),
            &cfg.cold.options,
            cfg.cold.cache_dir.as_deref().unwrap_or(Path::new(".")),
        )?);
        let stats = Arc::new(cold::ColdStats::default());
        let (conn, c2, cc, st, sp) = (
            warm.reader()?,
            c.clone(),
            cfg.cold.clone(),
            stats.clone(),
            stop.clone(),
        );
        spawn("store-cold", move || cold::exporter(c2, conn, cc, st, sp))?;
        Some((c, stats))
    } else {
        None
    };
    let hot = if cfg.hot.enabled {
        let hs = Arc::new(hot::HotStats::default());
        let ms = Arc::new(hot::MoverStats::default());
        let p = hot::Publisher::new(&cfg.hot, hs.clone())?;
        let w = writer.clone();
        let hot_batch = cfg.hot.batch_events.max(1);
        spawn("store-hot", move || {
            hot::publish(p, intake, hot_batch, flush, run)
        })?;
        if cfg.hot.mover {
            let (hc, m2, sp) = (cfg.hot.clone(), ms.clone(), stop.clone());
            spawn("store-mover", move || hot::mover(hc, warm, m2, w, sp))?;
        }
        Some((hs, ms))
    } else {
        let w = writer.clone();
        spawn("store", move || write(warm, intake, batch, flush, w))?;
        None
    };
    Ok(Running {
        reader: query::Reader {
            warm: std::sync::Mutex::new(reader_conn),
            gate: std::sync::Mutex::new(gate::Gate::new()?),
            limits: cfg.sql.clone(),
            hot: if cfg.hot.enabled {
                Some(hot::Reader::new(&cfg.hot)?)
            } else {
                None
            },
            cold: cold.as_ref().map(|(c, _)| c.clone()),
            stats: writer.clone(),
        },
        writer,
        hot,
        cold: cold.map(|(_, s)| s),
        stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(seq: u64, tgid: u32, text: &str) -> Arc<Event> {
        Arc::new(schema::sample_output(seq, seq, tgid, 0, text))
    }

    #[test]
    fn under_pressure_output_is_coalesced_then_shed_and_the_rest_kept() {
        // 1 MiB cap, nobody draining: pressure from 768 KiB.
        let (tap, intake) = tap(1 << 20, 1 << 20);
        let line = "x".repeat(1000);
        for i in 0..4000 {
            tap.offer(&output(i, 7, &line));
            if i % 100 == 0 {
                let mut exit = (*output(i, 7, "")).clone();
                exit.body = Body::Exit {
                    code: Some(0),
                    signal: None,
                };
                tap.offer(&Arc::new(exit));
            }
        }
        let p = tap.pressure();
        let coalesced = p.coalesced_output.load(Ordering::Relaxed);
        let shed = p.shed_output.load(Ordering::Relaxed);
        assert!(coalesced > 0, "nothing coalesced");
        assert!(shed > 0, "nothing shed");
        // The cap held (critical events aside, which are never refused).
        assert!(p.queued_bytes.load(Ordering::Relaxed) <= (1 << 20) + 40 * 512);
        drop(tap);
        let mut buf = Vec::new();
        let mut all = Vec::new();
        while intake
            .collect(&mut buf, 100_000, Duration::from_millis(1))
            .is_some()
        {
            all.append(&mut buf);
        }
        let exits = all
            .iter()
            .filter(|e| matches!(e.body, Body::Exit { .. }))
            .count();
        assert_eq!(exits, 40, "every lifecycle event kept");
        let bytes: usize = all
            .iter()
            .filter_map(|e| match &e.body {
                Body::Output { text, .. } => Some(text.len()),
                _ => None,
            })
            .sum();
        // Every byte is either stored (alone or coalesced) or counted as shed.
        let kept_chunks = bytes / 1000;
        // (Dropping the tap released what it was coalescing: shed too, at the cap.)
        let shed = intake.pressure.shed_output.load(Ordering::Relaxed);
        assert_eq!(kept_chunks as u64 + shed, 4000, "chunks accounted for");
        assert_eq!(intake.pressure.queued_bytes.load(Ordering::Relaxed), 0);
    }
}
