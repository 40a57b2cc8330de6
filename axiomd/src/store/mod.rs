//! The warm tier: every event in DuckDB, an embedded file in the state directory.
//!
//! Events reach the store through the bus's tap (`crate::bus::tap`: lossless for what matters,
//! bounded and counted for bulk output), drained here as an `Intake`. The writer appends in batches
//! (DuckDB's appender) and commits each batch: an event is acknowledged once its batch is
//! committed, and a crash after that loses nothing.
pub mod bench;
pub mod cold;
pub mod config;
pub mod gate;
pub mod hot;
pub mod query;
pub mod schema;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axiom_common::wire::Event;

use crate::bus::tap::Intake;

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

/// What the writer has done, for `status`.
#[derive(Default)]
pub struct WriterStats {
    pub stored: AtomicU64,
    pub batches: AtomicU64,
    pub failed_batches: AtomicU64,
    /// The newest event time committed.
    pub max_time_ns: AtomicU64,
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
    /// The store's threads: the intake's (`store`, or `store-hot`) first, then the rest.
    threads: std::sync::Mutex<Threads>,
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

impl Running {
    /// A thread of the store that has ended while the store was not being stopped.
    pub fn dead(&self) -> Option<&'static str> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let t = self.threads.lock().ok()?;
        t.iter().find(|(_, h)| h.is_finished()).map(|(n, _)| *n)
    }

    /// A clean stop, once the bus has let go of the tap: the intake's thread commits what was
    /// queued and ends (joined), then the mover and the exporter are told to stop and joined.
    pub fn finish(&self) {
        let Ok(mut threads) = self.threads.lock() else {
            return;
        };
        let mut threads = std::mem::take(&mut *threads).into_iter();
        if let Some((name, h)) = threads.next()
            && h.join().is_err()
        {
            tracing::error!(thread = name, "store thread panicked");
        }
        self.stop.store(true, Ordering::Relaxed);
        for (name, h) in threads {
            if h.join().is_err() {
                tracing::error!(thread = name, "store thread panicked");
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Threads = Vec<(&'static str, std::thread::JoinHandle<()>)>;

fn spawn(
    threads: &mut Threads,
    name: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<(), StoreError> {
    let h = std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| StoreError::Refused(format!("starting the {name} thread: {e}")))?;
    threads.push((name, h));
    Ok(())
}

/// Opens the tiers the config enables and starts their threads: events from the tap go to
/// Redis (hot on) or straight to DuckDB; the mover and the cold exporter run beside.
pub fn start(cfg: &config::StoreConfig, intake: Intake) -> Result<Running, StoreError> {
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
    // The intake's thread goes first in the list: a clean stop joins it before the others.
    let (mut threads, mut others) = (Threads::new(), Threads::new());
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
        spawn(&mut others, "store-cold", move || {
            cold::exporter(c2, conn, cc, st, sp)
        })?;
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
        spawn(&mut threads, "store-hot", move || {
            hot::publish(p, intake, hot_batch, flush, run)
        })?;
        if cfg.hot.mover {
            let (hc, m2, sp) = (cfg.hot.clone(), ms.clone(), stop.clone());
            spawn(&mut others, "store-mover", move || {
                hot::mover(hc, warm, m2, w, sp)
            })?;
        }
        Some((hs, ms))
    } else {
        let w = writer.clone();
        spawn(&mut threads, "store", move || {
            write(warm, intake, batch, flush, w)
        })?;
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
        threads: std::sync::Mutex::new(threads.into_iter().chain(others).collect()),
    })
}
