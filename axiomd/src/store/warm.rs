//! The warm tier: every event in DuckDB, an embedded file in the state directory. The writer
//! appends in batches (DuckDB's appender) and commits each batch: an event is acknowledged once
//! its batch is committed, and a crash after that loses nothing.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axiom_proto::wire::Event;

use super::{StoreError, gate, hostname, schema};
use crate::bus::tap::Intake;

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
        let host = self.host.clone();
        let run = self.run;
        self.commit(batch.iter().map(|ev| (host.as_str(), run, &**ev)), None)
    }

    /// Events moved from a Redis stream, with the stream's mark, in one transaction: either
    /// both are stored or neither, so an entry delivered again after a crash is skipped, not
    /// doubled.
    pub fn ingest(
        &mut self,
        rows: &[schema::Stored],
        stream: &str,
        last: (u64, u64),
    ) -> Result<(), StoreError> {
        self.commit(
            rows.iter().map(|s| (s.host.as_str(), s.run, &s.event)),
            Some((stream, last)),
        )
    }

    /// One transaction: a batch that fails leaves nothing behind, so retrying it cannot double.
    fn commit<'a>(
        &mut self,
        rows: impl ExactSizeIterator<Item = (&'a str, u64, &'a Event)>,
        mark: Option<(&str, (u64, u64))>,
    ) -> Result<(), StoreError> {
        if mark.is_none() && rows.len() <= APPENDER_FLUSH_ROWS {
            // The appender's flush is a transaction of its own, and the batch is one flush: the
            // columns are built in memory first (`schema::append`), then handed over whole. No
            // BEGIN and COMMIT statements: each one goes through DuckDB's executor, whose
            // threads spin-wait for each other, and on a machine the agents keep busy that spin
            // cost more than the writing (measured: ~2/3 of axiomd's CPU during a build).
            let mut app = self.conn.appender("events")?;
            let newest = schema::append(&mut app, rows)?;
            // A failed flush drops what it held (nothing is written, nothing left to retry on
            // drop).
            app.flush()?;
            if let Some(t) = newest {
                self.max_time_ns = self.max_time_ns.max(t.max(0) as u64);
            }
            return Ok(());
        }
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        let done = (|| {
            let mut app = self.conn.appender("events")?;
            let newest = schema::append(&mut app, rows)?;
            app.flush()?;
            drop(app);
            if let Some((stream, (run, seq))) = mark {
                self.conn.execute(
                    "INSERT OR REPLACE INTO ingest_marks VALUES (?, ?, ?)",
                    duckdb::params![stream, run, seq],
                )?;
            }
            self.conn.execute_batch("COMMIT")?;
            Ok::<_, duckdb::Error>(newest)
        })();
        match done {
            Ok(newest) => {
                if let Some(t) = newest {
                    self.max_time_ns = self.max_time_ns.max(t.max(0) as u64);
                }
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e.into())
            }
        }
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

/// Rows after which DuckDB's appender flushes by itself (`BaseAppender::DEFAULT_FLUSH_COUNT`,
/// 100 vectors of 2,048): a batch up to this size is one flush, so one transaction.
const APPENDER_FLUSH_ROWS: usize = 2048 * 100;

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
