//! The store, a sink on the bus: the warm tier (`warm.rs`: DuckDB, the embedded default), the
//! hot tier in front of it (`hot.rs`: Redis Streams, with a spool and a mover), the cold tier
//! behind it (`cold.rs`: Parquet in a directory or on S3), and queries merged across them
//! (`query.rs`, admin SQL through `gate.rs`). This file starts the tiers' threads and stops
//! them in order.
//!
//! Events reach the store through the bus's tap (`crate::bus::tap`: lossless for what matters,
//! bounded and counted for bulk output), drained as an `Intake`.
pub(crate) mod cold;
pub(crate) mod config;
pub(crate) mod gate;
pub(crate) mod hot;
pub(crate) mod query;
pub(crate) mod schema;
pub(crate) mod warm;

pub(crate) use warm::{Warm, WriterStats, write};

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

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
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// This daemon run's number: its start, in ms since the epoch. Events are numbered (`seq`) from
/// 1 in each run, so (host, run, seq) names one event for good, and `run-seq` is a valid,
/// increasing Redis stream id.
pub(crate) fn run_id() -> u64 {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RUN.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1)
    })
}

/// The store's threads, running: what queries read and what `status` shows.
pub(crate) struct Running {
    pub(crate) reader: query::Reader,
    pub(crate) writer: Arc<WriterStats>,
    pub(crate) hot: Option<(Arc<hot::HotStats>, Arc<hot::MoverStats>)>,
    pub(crate) cold: Option<Arc<cold::ColdStats>>,
    pub(crate) stop: Arc<std::sync::atomic::AtomicBool>,
    /// The store's threads: the intake's (`store`, or `store-hot`) first, then the rest.
    threads: std::sync::Mutex<Threads>,
}

impl Running {
    /// Counters by name, for `status`.
    pub(crate) fn status(&self) -> std::collections::BTreeMap<String, u64> {
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
    /// A clean stop, once the bus has let go of the tap: the intake's thread commits what was
    /// queued and ends (joined), then the mover and the exporter are told to stop and joined.
    pub(crate) fn finish(&self) {
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

/// The nice value of the store's threads (and of the threads they start, which inherit it).
/// Detection comes before storage: at 10,000 agents on two cores the store's threads, at the
/// same priority as the rules thread, took the CPU it needed and the rules fell behind
/// (`rules_backlog`). Behind, the store sheds output, counted (`store_shed_output`); a nice
/// value only matters while the CPU is contended.
const STORE_NICE: libc::c_int = 10;

/// Lowers the calling thread's priority to `STORE_NICE` (needs no privilege).
fn yield_to_detection(name: &str) {
    // SAFETY: plain syscalls on this thread's own id; no memory is passed.
    let r =
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, STORE_NICE) };
    if r != 0 {
        tracing::debug!(
            thread = name,
            "store: priority not lowered: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Starts one of the store's threads; the daemon's supervisor hears when it ends.
fn spawn(
    watch: &crate::supervise::Watch,
    threads: &mut Threads,
    name: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> Result<(), StoreError> {
    let h = watch
        .thread(name, move || {
            yield_to_detection(name);
            f()
        })
        .map_err(|e| StoreError::Refused(format!("starting the {name} thread: {e}")))?;
    threads.push((name, h));
    Ok(())
}

/// Opens the tiers the config enables and starts their threads: events from the tap go to
/// Redis (hot on) or straight to DuckDB; the mover and the cold exporter run beside.
pub(crate) fn start(
    cfg: &config::StoreConfig,
    intake: Intake,
    watch: &crate::supervise::Watch,
) -> Result<Running, StoreError> {
    let cfg = &cfg.resolved();
    let run = run_id();
    let warm = Warm::open(&cfg.path, run, cfg.sql.memory_mib)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = Arc::new(WriterStats::default());
    writer
        .max_time_ns
        .store(warm.max_time_ns, Ordering::Relaxed);
    let (batch, writers, flush) = (
        warm::batch_cap(cfg.batch_events),
        cfg.writers,
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
        spawn(watch, &mut others, "store-cold", move || {
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
        spawn(watch, &mut threads, "store-hot", move || {
            hot::publish(p, intake, hot_batch, flush, run)
        })?;
        if cfg.hot.mover {
            let (hc, m2, sp) = (cfg.hot.clone(), ms.clone(), stop.clone());
            spawn(watch, &mut others, "store-mover", move || {
                hot::mover(hc, warm, m2, w, sp)
            })?;
        }
        Some((hs, ms))
    } else {
        let w = writer.clone();
        spawn(watch, &mut threads, "store", move || {
            write(warm, intake, (batch, writers), flush, w)
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

impl crate::bus::Describe for Running {
    fn describe(&self, st: &mut axiom_proto::wire::Status) {
        st.store.extend(self.status());
    }
}
