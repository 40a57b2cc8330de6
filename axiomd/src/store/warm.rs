//! The warm tier: every event in DuckDB, an embedded file in the state directory. The writer
//! appends in batches (DuckDB's appender) and commits each batch: an event is acknowledged once
//! its batch is committed, and a crash after that loses nothing.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axiom_proto::wire::Event;

use super::{
    StoreError, gate, hostname,
    schema::{self, Columns},
};
use crate::bus::tap::Intake;

/// The DuckDB database holding the events.
pub(crate) struct Warm {
    conn: duckdb::Connection,
    pub(crate) path: PathBuf,
    host: String,
    run: u64,
    /// The newest event time appended: "latest N" queries look back from here.
    pub(crate) max_time_ns: u64,
}

impl Warm {
    /// Opens (or creates) the database and locks the instance down (`gate::lock_down`): no
    /// file, URL or extension reachable from SQL, `memory_mib` of memory at most.
    pub(crate) fn open(path: &Path, run: u64, memory_mib: u64) -> Result<Warm, StoreError> {
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

    /// Another writer on the same database: a connection of its own (`pipeline` commits
    /// batches on several side by side).
    fn another_writer(&self) -> Result<Warm, StoreError> {
        Ok(Warm {
            conn: self.conn.try_clone()?,
            path: self.path.clone(),
            host: self.host.clone(),
            run: self.run,
            max_time_ns: self.max_time_ns,
        })
    }

    /// A second connection to the same database (queries run on it, not on the writer's).
    pub(crate) fn reader(&self) -> Result<duckdb::Connection, StoreError> {
        Ok(self.conn.try_clone()?)
    }

    /// Appends a batch of this daemon's events and commits it.
    #[cfg(test)]
    pub(crate) fn append(&mut self, batch: &[Arc<Event>]) -> Result<(), StoreError> {
        let cols = Columns::of(&self.host, self.run, batch)?;
        self.append_columns(&cols)
    }

    /// Appends columns built by `columns` and commits them.
    pub(crate) fn append_columns(&mut self, cols: &schema::Columns) -> Result<(), StoreError> {
        self.commit(cols, None)
    }

    /// Events moved from a Redis stream, with the stream's mark, in one transaction: either
    /// both are stored or neither, so an entry delivered again after a crash is skipped, not
    /// doubled.
    pub(crate) fn ingest(
        &mut self,
        rows: &[schema::Stored],
        stream: &str,
        last: (u64, u64),
    ) -> Result<(), StoreError> {
        let cols = schema::columns(rows.iter().map(|s| (s.host.as_str(), s.run, &s.event)))
            .map_err(schema::arrow_error)?;
        self.commit(&cols, Some((stream, last)))
    }

    /// One transaction: a batch that fails leaves nothing behind, so retrying it cannot double.
    fn commit(
        &mut self,
        cols: &schema::Columns,
        mark: Option<(&str, (u64, u64))>,
    ) -> Result<(), StoreError> {
        if cols.rows() == 0 && mark.is_none() {
            return Ok(());
        }
        if mark.is_none() && cols.rows() <= APPENDER_FLUSH_ROWS {
            // The appender's flush is a transaction of its own, and the batch is one flush: the
            // columns are built in memory first (`schema::columns`), then handed over whole. No
            // BEGIN and COMMIT statements: each one goes through DuckDB's executor, whose
            // threads spin-wait for each other, and on a machine the agents keep busy that spin
            // cost more than the writing (measured: ~2/3 of axiomd's CPU during a build).
            let mut app = self.conn.appender("events")?;
            app.append_record_batch(cols.batch.clone())?;
            // A failed flush drops what it held (nothing is written, nothing left to retry on
            // drop).
            app.flush()?;
            drop(app);
            self.saw(cols.newest);
            return Ok(());
        }
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        let done = (|| {
            let mut app = self.conn.appender("events")?;
            if cols.rows() > 0 {
                app.append_record_batch(cols.batch.clone())?;
            }
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
        match done {
            Ok(()) => {
                self.saw(cols.newest);
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e.into())
            }
        }
    }

    fn saw(&mut self, newest: Option<i64>) {
        if let Some(t) = newest {
            self.max_time_ns = self.max_time_ns.max(t.max(0) as u64);
        }
    }

    /// A fresh database in a directory of its own under the temporary directory, for tests.
    #[cfg(test)]
    pub(crate) fn scratch(name: &str, run: u64, memory_mib: u64) -> (PathBuf, Warm) {
        let dir = std::env::temp_dir().join(format!("axiom-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let warm = Warm::open(&dir.join("events.duckdb"), run, memory_mib).unwrap();
        (dir, warm)
    }

    /// How far `stream` has been moved in: the (run, seq) of its last entry stored.
    pub(crate) fn mark(&self, stream: &str) -> Result<Option<(u64, u64)>, StoreError> {
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

/// Rows in one of DuckDB's row groups (`DEFAULT_ROW_GROUP_SIZE`, 60 vectors of 2,048). A
/// transaction's whole row groups are written straight to the database file; the rows past the
/// last whole one join the table's last, partial row group, which goes through the WAL and is
/// written again at every checkpoint until it fills.
pub(crate) const ROW_GROUP_ROWS: usize = 2048 * 60;

/// The writer's batch size for a configured `batch_events`: at or above one row group, rounded
/// down to whole row groups, so a full batch leaves no remainder behind. Measured (DuckDB 1.2,
/// 1M events): batches of 131,072 cost 3.1-3.9 µs of CPU per event, of 122,880 1.5, of 245,760
/// 1.3; a 131,072-event batch is one row group plus 8,192 rows that are written again and again.
pub(crate) fn batch_cap(configured: usize) -> usize {
    if configured >= ROW_GROUP_ROWS {
        configured - configured % ROW_GROUP_ROWS
    } else {
        configured.max(1)
    }
}

/// Rows after which DuckDB's appender flushes by itself (`BaseAppender::DEFAULT_FLUSH_COUNT`,
/// 100 vectors of 2,048): a batch up to this size is one flush, so one transaction.
const APPENDER_FLUSH_ROWS: usize = 2048 * 100;

/// What the writer has done, for `status`.
#[derive(Default)]
pub(crate) struct WriterStats {
    pub(crate) stored: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
    /// The newest event time committed.
    pub(crate) max_time_ns: AtomicU64,
}

/// The writer thread (warm tier only): batches of up to `batch` events or `flush` time from
/// the intake, through `pipeline`.
pub(crate) fn write(
    mut warm: Warm,
    intake: Intake,
    (batch, writers): (usize, usize),
    flush: Duration,
    stats: Arc<WriterStats>,
) {
    pipeline(
        &mut warm,
        writers,
        move |buf| intake.collect(buf, batch, flush),
        &stats,
    );
}

/// Stores batches in `writers + 1` threads: one fills each batch (`next`, which returns `None`
/// when no more will come) and builds its columns; `writers` others (the caller's among them)
/// each take the next built batch and append and commit it on a connection of their own. DuckDB
/// appends of two transactions to one table do not conflict, and a batch of whole row groups is
/// compressed and written by the transaction that appends it, before its commit (which only
/// links the row groups in): so two writers store batches side by side, on two cores. One
/// writer was the bottleneck (measured on `bench store`: the DuckDB thread busy all along, the
/// builder less than half the time). A built batch is handed over, never queued: at most
/// `writers + 1` batches' columns are in memory (a full one is tens of MiB). A batch that fails
/// (a full disk) is kept, reported and retried by its writer; the others go on, and once all
/// are retrying `next` is not called, so the intake's queue holds what arrives (beyond it,
/// output is shed and counted). Rows of different batches may be committed out of order; each
/// batch stays whole and laid out by agent (`Columns::of`).
pub(crate) fn pipeline(
    warm: &mut Warm,
    writers: usize,
    mut next: impl FnMut(&mut Vec<Arc<Event>>) -> Option<()> + Send,
    stats: &WriterStats,
) {
    stats.max_time_ns.store(warm.max_time_ns, Ordering::Relaxed);
    let (host, run) = (warm.host.clone(), warm.run);
    let ended = AtomicBool::new(false);
    // The extra writers' connections, opened before any thread starts: one that cannot be
    // opened leaves fewer writers, never none.
    let mut extra: Vec<Warm> = Vec::new();
    for _ in 1..writers.max(1) {
        match warm.another_writer() {
            Ok(w) => extra.push(w),
            Err(e) => {
                tracing::warn!("event store: one writer fewer: {e}");
                break;
            }
        }
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Columns>(0);
    let rx = std::sync::Mutex::new(rx);
    let trim = std::sync::Mutex::new(Trim::default());
    std::thread::scope(|s| {
        let builder = std::thread::Builder::new()
            .name("store-columns".into())
            .spawn_scoped(s, || {
                let tx = tx;
                let mut buf: Vec<Arc<Event>> = Vec::new();
                loop {
                    let more = next(&mut buf);
                    if !buf.is_empty() {
                        let built = Columns::of(&host, run, &buf);
                        // The events go before the columns are handed over: the hand-over waits
                        // for a free writer, which at saturation is most of the time, and a full
                        // batch of events is ~50 MiB that nothing else needs once built.
                        let events = buf.len();
                        buf.clear();
                        match built {
                            Ok(cols) => {
                                if tx.send(cols).is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(events, "event store: {e}");
                            }
                        }
                    }
                    if more.is_none() {
                        break;
                    }
                }
                ended.store(true, Ordering::Relaxed);
            });
        if let Err(e) = builder {
            tracing::error!("event store: starting the column builder: {e}");
            return;
        }
        let (rx, ended, trim) = (&rx, &ended, &trim);
        for (i, w) in extra.iter_mut().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("store-writer-{}", i + 1))
                .spawn_scoped(s, move || store_batches(w, rx, stats, ended, trim));
            if let Err(e) = spawned {
                tracing::warn!("event store: one writer fewer: {e}");
            }
        }
        store_batches(warm, rx, stats, ended, trim);
    });
    for w in &extra {
        warm.saw(Some(w.max_time_ns as i64));
    }
}

/// One writer: appends and commits each built batch it takes from `rx` until the builder is
/// done, retrying a batch that fails (once a second) until it is stored or the store stops.
fn store_batches(
    warm: &mut Warm,
    rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Columns>>,
    stats: &WriterStats,
    ended: &AtomicBool,
    trim: &std::sync::Mutex<Trim>,
) {
    loop {
        // The lock is held while waiting: the other writers wait behind it for the next batch.
        let cols = match rx.lock() {
            Ok(rx) => match rx.recv() {
                Ok(c) => c,
                Err(_) => return,
            },
            Err(_) => return,
        };
        loop {
            match warm.append_columns(&cols) {
                Ok(()) => {
                    stats
                        .max_time_ns
                        .fetch_max(warm.max_time_ns, Ordering::Relaxed);
                    stats
                        .stored
                        .fetch_add(cols.rows() as u64, Ordering::Relaxed);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut t) = trim.lock() {
                        t.after_commit();
                    }
                    break;
                }
                Err(e) => {
                    stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        events = cols.rows(),
                        "event store: batch not written, retrying: {e}"
                    );
                    // Shutting down: no retry can wait for the disk any longer.
                    if ended.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Gives the heap's free pages back to the kernel, at most once per `TRIM_EVERY`, after a
/// commit. DuckDB's appends and checkpoints allocate tens of MiB for a moment and free them;
/// glibc keeps what they freed in its arenas, so without this axiomd's RSS settles at the
/// highest any checkpoint reached (measured with heaptrack at 2,000 agents: DuckDB was 150 of
/// the 202 MiB peak heap, while it held 20-50 MiB between checkpoints).
#[derive(Default)]
struct Trim {
    last: Option<std::time::Instant>,
}

const TRIM_EVERY: Duration = Duration::from_secs(1);

impl Trim {
    fn after_commit(&mut self) {
        if self.last.is_some_and(|t| t.elapsed() < TRIM_EVERY) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        // SAFETY: malloc_trim only walks and releases glibc's own free lists; it takes no
        // pointer and is safe to call from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_is_whole_row_groups() {
        assert_eq!(batch_cap(131_072), ROW_GROUP_ROWS);
        assert_eq!(batch_cap(300_000), 2 * ROW_GROUP_ROWS);
        assert_eq!(batch_cap(ROW_GROUP_ROWS), ROW_GROUP_ROWS);
        // Below a row group every batch goes through the WAL anyway: left as configured.
        assert_eq!(batch_cap(8192), 8192);
        assert_eq!(batch_cap(0), 1);
    }

    /// `n` batches of `size` output events (seq and time in order), agents `agent(i)` within.
    fn batches(n: u64, size: u64, agent: fn(u64) -> u64) -> Vec<Vec<Arc<Event>>> {
        (0..n)
            .map(|b| {
                (0..size)
                    .map(|i| {
                        let seq = b * size + i;
                        let mut ev = schema::sample_output(seq, 100 + seq, 7, 1000, "x");
                        ev.agent = agent(i);
                        Arc::new(ev)
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs `pipeline` with `writers` over `batches` (first to last); its stats.
    fn store_all(
        warm: &mut Warm,
        writers: usize,
        mut batches: Vec<Vec<Arc<Event>>>,
    ) -> WriterStats {
        batches.reverse();
        let stats = WriterStats::default();
        pipeline(
            warm,
            writers,
            |buf| {
                *buf = batches.pop()?;
                Some(())
            },
            &stats,
        );
        stats
    }

    /// (agent, seq) of every stored row, in the table's order.
    fn stored_rows(warm: &Warm) -> Vec<(u64, u64)> {
        let conn = warm.reader().unwrap();
        let mut st = conn
            .prepare("SELECT agent, seq FROM events ORDER BY rowid")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Every batch `next` gives is stored, in order, each laid out by agent then time; and the
    /// stats count them.
    #[test]
    fn the_pipeline_stores_every_batch_laid_out_by_agent() {
        let (dir, mut warm) = Warm::scratch("pipeline", 1, 256);
        // Three batches of four events, agents 2 and 1 alternating within each.
        let stats = store_all(&mut warm, 1, batches(3, 4, |i| 2 - i % 2));
        assert_eq!(stats.stored.load(Ordering::Relaxed), 12);
        assert_eq!(stats.batches.load(Ordering::Relaxed), 3);
        assert_eq!(stats.max_time_ns.load(Ordering::Relaxed), 111);
        let want: Vec<(u64, u64)> = (0..3u64)
            .flat_map(|b| [(1, b * 4 + 1), (1, b * 4 + 3), (2, b * 4), (2, b * 4 + 2)])
            .collect();
        assert_eq!(stored_rows(&warm), want);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// With several writers every batch is stored once and whole, each still laid out by
    /// agent, whatever order the writers commit them in.
    #[test]
    fn writers_side_by_side_store_every_batch_whole() {
        let (dir, mut warm) = Warm::scratch("writers", 1, 256);
        let stats = store_all(&mut warm, 3, batches(40, 50, |i| 1 + i % 3));
        assert_eq!(stats.stored.load(Ordering::Relaxed), 2000);
        assert_eq!(stats.batches.load(Ordering::Relaxed), 40);
        assert_eq!(stats.max_time_ns.load(Ordering::Relaxed), 100 + 1999);
        assert_eq!(warm.max_time_ns, 100 + 1999);
        let rows = stored_rows(&warm);
        assert_eq!(rows.len(), 2000);
        // Runs of 50 rows, each one batch, by agent then seq.
        let mut seen = std::collections::BTreeSet::new();
        for run in rows.chunks(50) {
            let b = run[0].1 / 50;
            assert!(run.iter().all(|r| r.1 / 50 == b), "batch {b} is not whole");
            assert!(
                run.windows(2).all(|w| w[0] <= w[1]),
                "batch {b} not by agent"
            );
            assert!(seen.insert(b), "batch {b} twice");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
