//! The cold tier: Parquet (ZSTD) files in a directory or an S3 bucket (object_store).
//!
//! Events older than the warm tier's retention leave DuckDB one partition (an hour by default)
//! at a time. A part is written locally, uploaded, read back from the store (its size and the
//! row count in its footer must match), entered in the manifest, and only then are its rows
//! deleted from DuckDB — in a transaction that must delete exactly as many rows as were
//! exported, or nothing. Each host writes under `<url>/<host>/`, so hosts sharing a bucket never
//! write the same key. Every step can be repeated after a crash: a part is named by its
//! partition and its number in the manifest, so an upload that never reached the manifest is
//! overwritten, and rows still in DuckDB that a listed part holds are deleted before anything
//! else of that partition is exported.
use std::{
    collections::BTreeMap,
    path::{Path as FsPath, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arrow::{
    array::{Array, ArrayRef, AsArray as _, RecordBatch},
    datatypes::{ArrowPrimitiveType, DataType, Int64Type, UInt32Type, UInt64Type},
};
use axiom_proto::wire::Event;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, path::Path};
use parquet::{
    arrow::{ArrowWriter, arrow_reader::ParquetRecordBatchReaderBuilder},
    basic::{Compression, ZstdLevel},
    file::properties::WriterProperties,
};
use serde::{Deserialize, Serialize};

use super::config::ColdConfig;
use super::{
    query::{Query, Row},
    schema,
};

#[derive(Debug, thiserror::Error)]
pub enum ColdError {
    #[error("cold tier {url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cold tier: bad url {0}")]
    Url(String),
    #[error("cold tier: parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("cold tier: arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("cold tier: {0}")]
    Db(#[from] duckdb::Error),
    #[error("cold tier: {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cold tier: manifest: {0}")]
    Manifest(#[from] serde_json::Error),
    #[error("cold tier: {0}")]
    Verify(String),
}

/// One Parquet file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct Part {
    /// Object key, relative to the host's prefix.
    pub(crate) key: String,
    /// The partition it belongs to: [start_ns, end_ns).
    pub(crate) start_ns: i64,
    pub(crate) end_ns: i64,
    pub(crate) min_time_ns: i64,
    pub(crate) max_time_ns: i64,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
}

/// Every part of one host, in `<url>/<host>/manifest.json`.
#[derive(Serialize, Deserialize, Default, Debug)]
pub(crate) struct Manifest {
    pub(crate) schema_version: u8,
    pub(crate) parts: Vec<Part>,
}

/// What the exporter has done, for `status`.
#[derive(Default)]
pub(crate) struct ColdStats {
    pub(crate) parts: AtomicU64,
    pub(crate) rows: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) expired_parts: AtomicU64,
}

pub(crate) struct Cold {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// `<prefix>/<host>`
    root: Path,
    cache: PathBuf,
    /// Dropped without waiting (see `Drop`).
    rt: std::mem::ManuallyDrop<tokio::runtime::Runtime>,
}

impl Drop for Cold {
    /// The tier may be let go from inside the daemon's runtime (its last holder is a task that
    /// ends at the stop), where dropping a runtime the usual way panics: its work is done by
    /// then (the exporter thread was joined), so it is shut down without waiting.
    fn drop(&mut self) {
        // SAFETY: taken once, here, and never used after.
        let rt = unsafe { std::mem::ManuallyDrop::take(&mut self.rt) };
        rt.shutdown_background();
    }
}

fn io(path: &FsPath) -> impl FnOnce(std::io::Error) -> ColdError + '_ {
    move |source| ColdError::Io {
        path: path.into(),
        source,
    }
}

impl Cold {
    /// The tier at `url` (`file:///dir`, `s3://bucket/prefix`), caching fetched parts in
    /// `cache`.
    pub(crate) fn open(
        url_text: &str,
        options: &BTreeMap<String, String>,
        cache: &FsPath,
    ) -> Result<Cold, ColdError> {
        let url =
            url::Url::parse(url_text).map_err(|e| ColdError::Url(format!("{url_text}: {e}")))?;
        // S3 credentials and endpoint from the environment, as the AWS tools take them;
        // the config's options win.
        let mut opts: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        opts.extend(options.clone());
        let (store, prefix) =
            object_store::parse_url_opts(&url, opts).map_err(|source| ColdError::Store {
                url: url_text.into(),
                source,
            })?;
        if url.scheme() == "file" {
            std::fs::create_dir_all(url.path()).map_err(io(FsPath::new(url.path())))?;
        }
        let root = prefix.clone().join(super::hostname().as_str());
        std::fs::create_dir_all(cache).map_err(io(cache))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io(cache))?;
        Ok(Cold {
            store: store.into(),
            url: url_text.into(),
            root,
            cache: cache.into(),
            rt: std::mem::ManuallyDrop::new(rt),
        })
    }

    /// Runs a future on this tier's own runtime, from any thread (also from inside another
    /// runtime): made and run on a scoped thread of its own.
    fn block<R: Send, F: std::future::Future<Output = R>>(
        &self,
        f: impl FnOnce() -> F + Send,
    ) -> R {
        std::thread::scope(|s| match s.spawn(|| self.rt.block_on(f())).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        })
    }

    fn err(&self, source: object_store::Error) -> ColdError {
        ColdError::Store {
            url: self.url.clone(),
            source,
        }
    }

    fn path(&self, key: &str) -> Path {
        let mut p = self.root.clone();
        for seg in key.split('/') {
            p = p.join(seg);
        }
        p
    }

    pub(crate) fn manifest(&self) -> Result<Manifest, ColdError> {
        let p = self.path("manifest.json");
        let got = self.block(|| async {
            match self.store.get(&p).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        match got.map_err(|e| self.err(e))? {
            Some(b) => Ok(serde_json::from_slice(&b)?),
            None => Ok(Manifest {
                schema_version: schema::VERSION,
                parts: Vec::new(),
            }),
        }
    }

    fn save_manifest(&self, m: &Manifest) -> Result<(), ColdError> {
        let p = self.path("manifest.json");
        let body = serde_json::to_vec_pretty(m)?;
        self.block(|| self.store.put(&p, PutPayload::from(body)))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The part's file, fetched into the cache once.
    fn fetch(&self, part: &Part) -> Result<PathBuf, ColdError> {
        let local = self.cache.join(part.key.replace('/', "_"));
        if std::fs::metadata(&local).is_ok_and(|m| m.len() == part.bytes) {
            return Ok(local);
        }
        let p = self.path(&part.key);
        let bytes = self
            .block(|| async { self.store.get(&p).await?.bytes().await })
            .map_err(|e| self.err(e))?;
        let tmp = local.with_extension("part");
        std::fs::write(&tmp, &bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &local).map_err(io(&local))?;
        Ok(local)
    }

    /// Moves the oldest partition older than `cutoff_ns` out of the warm tier, if any: rows
    /// exported (0 when there was nothing to do).
    pub(crate) fn export_once(
        &self,
        conn: &duckdb::Connection,
        cutoff_ns: i64,
        partition_ns: i64,
    ) -> Result<Option<Part>, ColdError> {
        let oldest: Option<i64> = conn.query_row(
            "SELECT min(time_ns) FROM events WHERE time_ns < ?",
            [cutoff_ns],
            |r| r.get(0),
        )?;
        let Some(oldest) = oldest else {
            return Ok(None);
        };
        let pn = partition_ns.max(1);
        let start = oldest.div_euclid(pn) * pn;
        let end = (start + pn).min(cutoff_ns);
        let mut manifest = self.manifest()?;
        let existing: Vec<Part> = manifest
            .parts
            .iter()
            .filter(|p| p.start_ns == start)
            .cloned()
            .collect();
        // Rows a listed part already holds (a crash after the manifest, before the delete).
        if !existing.is_empty() {
            self.forget_exported(conn, &existing, start, end)?;
        }
        let count: i64 = conn.query_row(
            "SELECT count(*) FROM events WHERE time_ns >= ? AND time_ns < ?",
            [start, end],
            |r| r.get(0),
        )?;
        if count == 0 {
            return Ok(None);
        }
        let key = format!("{}/{}-{}.parquet", day(start), start, existing.len());
        let local = self.cache.join(format!("export-{start}.parquet"));
        let Written {
            rows, min_t, max_t, ..
        } = write_parquet(conn, &local, start, end)?;
        let bytes = std::fs::metadata(&local).map_err(io(&local))?.len();
        self.upload(&local, &key)?;
        self.verify(&key, bytes, rows)?;
        let part = Part {
            key: key.clone(),
            start_ns: start,
            end_ns: end,
            min_time_ns: min_t,
            max_time_ns: max_t,
            rows,
            bytes,
        };
        manifest.parts.retain(|p| p.key != key);
        manifest.parts.push(part.clone());
        manifest.parts.sort_by_key(|p| (p.start_ns, p.key.clone()));
        self.save_manifest(&manifest)?;
        // The exported file doubles as the cache entry.
        let _ = std::fs::rename(&local, self.cache.join(key.replace('/', "_")));
        conn.execute_batch("BEGIN TRANSACTION")?;
        let deleted = match conn.execute(
            "DELETE FROM events WHERE time_ns >= ? AND time_ns < ?",
            [start, end],
        ) {
            Ok(n) => n,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        };
        if deleted as u64 != rows {
            // Late rows arrived meanwhile: keep everything; the next round deletes what the
            // part holds and exports the rest as another part.
            conn.execute_batch("ROLLBACK")?;
            return Err(ColdError::Verify(format!(
                "partition {start}: {deleted} rows now, {rows} exported; retrying"
            )));
        }
        conn.execute_batch("COMMIT")?;
        Ok(Some(part))
    }

    fn upload(&self, local: &FsPath, key: &str) -> Result<(), ColdError> {
        let p = self.path(key);
        let data = std::fs::read(local).map_err(io(local))?;
        self.block(|| async {
            let mut up = self.store.put_multipart(&p).await?;
            for chunk in data.chunks(16 << 20) {
                up.put_part(PutPayload::from(chunk.to_vec())).await?;
            }
            up.complete().await
        })
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Reads the object back: its size, and the row count in its Parquet footer.
    fn verify(&self, key: &str, bytes: u64, rows: u64) -> Result<(), ColdError> {
        let p = self.path(key);
        let got = self
            .block(|| async { self.store.get(&p).await?.bytes().await })
            .map_err(|e| self.err(e))?;
        if got.len() as u64 != bytes {
            return Err(ColdError::Verify(format!(
                "{key}: {} bytes stored, {bytes} written",
                got.len()
            )));
        }
        let meta = ParquetRecordBatchReaderBuilder::try_new(got)?;
        let n = meta.metadata().file_metadata().num_rows() as u64;
        if n != rows {
            return Err(ColdError::Verify(format!(
                "{key}: {n} rows stored, {rows} exported"
            )));
        }
        Ok(())
    }

    /// Deletes from the warm tier the rows these parts hold.
    fn forget_exported(
        &self,
        conn: &duckdb::Connection,
        parts: &[Part],
        start: i64,
        end: i64,
    ) -> Result<(), ColdError> {
        conn.execute_batch(
            "CREATE OR REPLACE TEMP TABLE cold_ids (host VARCHAR, run UBIGINT, seq UBIGINT)",
        )?;
        {
            let mut app = conn.appender("cold_ids")?;
            for part in parts {
                for s in read_part(&self.fetch(part)?, None)? {
                    app.append_row(duckdb::params![s.host, s.run, s.event.seq])?;
                }
            }
            app.flush()?;
        }
        let n = conn.execute(
            "DELETE FROM events USING cold_ids c WHERE events.time_ns >= ? AND events.time_ns < ? \
             AND events.host = c.host AND events.run = c.run AND events.seq = c.seq",
            [start, end],
        )?;
        conn.execute_batch("DROP TABLE cold_ids")?;
        if n > 0 {
            tracing::info!(
                rows = n,
                start,
                "cold tier: rows already exported removed from the warm tier"
            );
        }
        Ok(())
    }

    /// Deletes parts whose partition ended before `before_ns`.
    pub(crate) fn expire(&self, before_ns: i64) -> Result<u64, ColdError> {
        let mut m = self.manifest()?;
        let (old, keep): (Vec<Part>, Vec<Part>) =
            m.parts.drain(..).partition(|p| p.end_ns <= before_ns);
        if old.is_empty() {
            m.parts = keep;
            return Ok(0);
        }
        // The manifest first: a part no manifest lists is never read.
        m.parts = keep;
        self.save_manifest(&m)?;
        for p in &old {
            let path = self.path(&p.key);
            match self.block(|| self.store.delete(&path)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(e)),
            }
            let _ = std::fs::remove_file(self.cache.join(p.key.replace('/', "_")));
        }
        Ok(old.len() as u64)
    }

    /// Events of the cold tier that match `q`, newest parts first, until `q.limit` events at
    /// least as new as anything older could be are found.
    pub(crate) fn scan(&self, q: &Query) -> Result<Vec<schema::Stored>, ColdError> {
        let m = self.manifest()?;
        let since = q.since_ns.map(|t| t.min(i64::MAX as u64) as i64);
        let until = q.until_ns.map(|t| t.min(i64::MAX as u64) as i64);
        let mut parts: Vec<&Part> = m
            .parts
            .iter()
            .filter(|p| since.is_none_or(|s| p.max_time_ns >= s))
            .filter(|p| until.is_none_or(|u| p.min_time_ns <= u))
            .collect();
        parts.sort_by_key(|p| std::cmp::Reverse(p.max_time_ns));
        let mut out: Vec<schema::Stored> = Vec::new();
        for p in parts {
            if out.len() >= q.limit.max(1) {
                let mut times: Vec<u64> = out.iter().map(|s| s.event.time_ns).collect();
                times.sort_unstable_by(|a, b| b.cmp(a));
                let nth = times[q.limit.max(1) - 1];
                if (p.max_time_ns.max(0) as u64) < nth {
                    break;
                }
            }
            out.extend(read_part(&self.fetch(p)?, Some(q))?);
        }
        Ok(out)
    }

    /// Every cold event (for SQL over `all_events`), as Arrow batches.
    pub(crate) fn batches(&self) -> Result<Vec<RecordBatch>, ColdError> {
        let m = self.manifest()?;
        let mut out = Vec::new();
        for p in &m.parts {
            let f = std::fs::File::open(self.fetch(p)?).map_err(io(&self.cache))?;
            for b in ParquetRecordBatchReaderBuilder::try_new(f)?.build()? {
                out.push(b?);
            }
        }
        Ok(out)
    }
}

/// UTC day of a time, `YYYY-MM-DD` (keys sort and list by day).
fn day(ns: i64) -> String {
    let days = ns.div_euclid(86_400_000_000_000);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{:04}-{:02}-{:02}", if m <= 2 { y + 1 } else { y }, m, d)
}

/// What one Parquet file holds.
pub(crate) struct Written {
    pub(crate) rows: u64,
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    /// The rows' size in memory (Arrow) before encoding and compression.
    pub(crate) arrow_bytes: u64,
}

/// Writes the partition's rows, by agent then time (so a file's row groups prune by agent),
/// as Parquet with ZSTD.
pub(crate) fn write_parquet(
    conn: &duckdb::Connection,
    path: &FsPath,
    start: i64,
    end: i64,
) -> Result<Written, ColdError> {
    // Literal bounds (integers), so DuckDB prunes row groups outside the partition.
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM events WHERE time_ns >= {start} AND time_ns < {end} \
         ORDER BY agent, time_ns, seq",
        schema::COLUMNS
    ))?;
    let arrow = stmt.query_arrow([])?;
    let schema = arrow.get_schema();
    let file = std::fs::File::create(path).map_err(io(path))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(1 << 17))
        .build();
    let mut w = ArrowWriter::try_new(file, schema, Some(props))?;
    let (mut rows, mut min_t, mut max_t, mut arrow_bytes) = (0u64, i64::MAX, i64::MIN, 0u64);
    for batch in arrow {
        rows += batch.num_rows() as u64;
        arrow_bytes += batch.get_array_memory_size() as u64;
        if let Some(t) = batch
            .column_by_name("time_ns")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
        {
            for v in t.iter().flatten() {
                min_t = min_t.min(v);
                max_t = max_t.max(v);
            }
        }
        w.write(&batch)?;
    }
    w.close()?;
    Ok(Written {
        rows,
        min_t,
        max_t,
        arrow_bytes,
    })
}

/// A column cast to `to` (DuckDB may hand strings over as views, integers as other widths).
fn column(b: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef, ColdError> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| ColdError::Verify(format!("column {name} missing")))?;
    Ok(arrow::compute::cast(col, to)?)
}

fn strings(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, ColdError> {
    let col = column(b, name, &DataType::Utf8)?;
    Ok(col
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(String::from))
        .collect())
}

fn numbers<T: ArrowPrimitiveType>(
    b: &RecordBatch,
    name: &str,
) -> Result<Vec<T::Native>, ColdError> {
    let col = column(b, name, &T::DATA_TYPE)?;
    Ok(col
        .as_primitive::<T>()
        .iter()
        .map(|v| v.unwrap_or_default())
        .collect())
}

/// A part's events (those `q` accepts, if given).
fn read_part(path: &FsPath, q: Option<&Query>) -> Result<Vec<schema::Stored>, ColdError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut out = Vec::new();
    for b in ParquetRecordBatchReaderBuilder::try_new(f)?.build()? {
        let b = b?;
        let (host, seq, time, agent) = (
            strings(&b, "host")?,
            numbers::<UInt64Type>(&b, "seq")?,
            numbers::<UInt64Type>(&b, "time_ns")?,
            numbers::<UInt64Type>(&b, "agent")?,
        );
        let (kind, text, body, comm) = (
            strings(&b, "kind")?,
            strings(&b, "text")?,
            strings(&b, "body")?,
            strings(&b, "comm")?,
        );
        let (pid, tgid, ppid, uid) = (
            numbers::<UInt32Type>(&b, "pid")?,
            numbers::<UInt32Type>(&b, "tgid")?,
            numbers::<UInt32Type>(&b, "ppid")?,
            numbers::<UInt32Type>(&b, "uid")?,
        );
        let (cgroup, run) = (
            numbers::<UInt64Type>(&b, "cgroup_id")?,
            numbers::<UInt64Type>(&b, "run")?,
        );
        let truncated = b
            .column_by_name("truncated")
            .and_then(|c| c.as_boolean_opt().cloned());
        for i in 0..b.num_rows() {
            let ev = Row {
                agent: agent[i],
                time_ns: time[i],
                kind: kind[i].as_deref().unwrap_or(""),
                text: text[i].as_deref(),
                uid: uid[i],
                host: host[i].as_deref().unwrap_or_default(),
            };
            if let Some(q) = q
                && !q.accepts(&ev)
            {
                continue;
            }
            let Some(body) =
                schema::body_of(body[i].as_deref().unwrap_or_default(), text[i].as_deref())
            else {
                continue;
            };
            out.push(schema::Stored {
                host: host[i].clone().unwrap_or_default(),
                run: run[i],
                event: Event {
                    seq: seq[i],
                    time_ns: time[i],
                    agent: agent[i],
                    pid: pid[i],
                    tgid: tgid[i],
                    ppid: ppid[i],
                    uid: uid[i],
                    cgroup_id: cgroup[i],
                    comm: comm[i].clone().unwrap_or_default(),
                    truncated: truncated
                        .as_ref()
                        .is_some_and(|t| t.is_valid(i) && t.value(i)),
                    body,
                },
            });
        }
    }
    Ok(out)
}

/// The exporter thread: every `interval`, partitions older than the warm retention go cold;
/// parts past the cold retention are deleted. Errors (S3 down) are retried with back-off.
pub(crate) fn exporter(
    cold: Arc<Cold>,
    conn: duckdb::Connection,
    cfg: ColdConfig,
    stats: Arc<ColdStats>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut backoff = Duration::from_secs(1);
    let interval = Duration::from_secs(cfg.interval_secs.max(1));
    while !stop.load(Ordering::Relaxed) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let cutoff = now - (cfg.after_secs as i64).saturating_mul(1_000_000_000);
        let mut failed = false;
        // Every ready partition, one after another.
        loop {
            match cold.export_once(
                &conn,
                cutoff,
                (cfg.partition_secs.max(1) as i64) * 1_000_000_000,
            ) {
                Ok(None) => break,
                Ok(Some(p)) => {
                    stats.parts.fetch_add(1, Ordering::Relaxed);
                    stats.rows.fetch_add(p.rows, Ordering::Relaxed);
                    stats.bytes.fetch_add(p.bytes, Ordering::Relaxed);
                    tracing::info!(key = %p.key, rows = p.rows, bytes = p.bytes, "cold tier: partition exported");
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(retry_in = ?backoff, "cold tier: export failed: {e}");
                    failed = true;
                    break;
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        if cfg.keep_secs > 0 && !failed {
            let before = now - (cfg.keep_secs as i64).saturating_mul(1_000_000_000);
            match cold.expire(before) {
                Ok(n) => {
                    stats.expired_parts.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("cold tier: expiry failed: {e}");
                    failed = true;
                }
            }
        }
        let wait = if failed {
            let w = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(300));
            w
        } else {
            backoff = Duration::from_secs(1);
            interval
        };
        let t0 = std::time::Instant::now();
        while t0.elapsed() < wait && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use axiom_proto::wire::EventQuery;
    use std::sync::Arc;

    use super::*;
    use crate::store::{Warm, schema::sample_output};

    #[test]
    fn export_verify_delete_read_back_and_expire() {
        let (dir, mut warm) = Warm::scratch("cold-test", 9, 1024);
        let s = 1_000_000_000i64;
        // Two partitions of 10 s: t = 0..9 s and 10..14 s, then one recent event.
        let evs: Vec<Arc<Event>> = (0..15u64)
            .chain([100])
            .map(|i| {
                Arc::new(sample_output(
                    i + 1,
                    i * s as u64,
                    7,
                    0,
                    &format!("line {i}"),
                ))
            })
            .collect();
        warm.append(&evs).unwrap();
        let conn = warm.reader().unwrap();
        let cold = Cold::open(
            &format!("file://{}", dir.join("cold").display()),
            &BTreeMap::new(),
            &dir.join("cache"),
        )
        .unwrap();
        let cutoff = 50 * s;
        let a = cold.export_once(&conn, cutoff, 10 * s).unwrap().unwrap();
        assert_eq!((a.rows, a.start_ns, a.end_ns), (10, 0, 10 * s));
        let b = cold.export_once(&conn, cutoff, 10 * s).unwrap().unwrap();
        assert_eq!((b.rows, b.start_ns), (5, 10 * s));
        assert!(cold.export_once(&conn, cutoff, 10 * s).unwrap().is_none());
        let left: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 1, "only the recent event stays warm");
        let m = cold.manifest().unwrap();
        assert_eq!(m.parts, vec![a.clone(), b.clone()]);
        // Read back, filtered, newest first until the limit is met.
        let q = Query::from(EventQuery {
            limit: 3,
            ..Default::default()
        });
        let got = cold.scan(&q).unwrap();
        assert!(
            got.iter()
                .all(|e| e.run == 9 && e.host == crate::store::hostname())
        );
        let mut seqs: Vec<u64> = got.iter().map(|e| e.event.seq).collect();
        seqs.sort_unstable();
        assert_eq!(&seqs[seqs.len() - 3..], [13, 14, 15]);
        let all = cold
            .scan(&Query::from(EventQuery {
                limit: 100,
                text: Some("line 1".into()),
                ..Default::default()
            }))
            .unwrap();
        assert_eq!(all.len(), 6, "line 1 and line 10..14");
        // Exporting again after a crash between the manifest and the delete: the rows a listed
        // part holds are dropped from the warm tier, not exported twice.
        warm.append(&evs[..3]).unwrap();
        assert!(cold.export_once(&conn, cutoff, 10 * s).unwrap().is_none());
        assert_eq!(cold.manifest().unwrap().parts.len(), 2);
        // Retention: the first partition ends before 12 s.
        assert_eq!(cold.expire(12 * s).unwrap(), 1);
        let m = cold.manifest().unwrap();
        assert_eq!(m.parts, vec![b]);
        assert!(
            !dir.join("cold")
                .join(crate::store::hostname())
                .join(&a.key)
                .exists()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn days() {
        assert_eq!(super::day(0), "1970-01-01");
        assert_eq!(super::day(1_795_000_000 * 1_000_000_000), "2026-11-18");
        assert_eq!(super::day(951_782_400 * 1_000_000_000), "2000-02-29");
    }
}
