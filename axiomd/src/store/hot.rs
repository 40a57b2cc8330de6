//! The hot tier: Redis Streams.
//!
//! Each host writes one stream, `<prefix>:{<host>}:events`: the braces are a Redis Cluster hash
//! tag, so every command touches one slot, and several hosts sharing one Redis (or one cluster)
//! never contend on a key. Entry ids are given here, `run-n` (the daemon run's start in ms, then
//! the entry's number in the order sent; events reach the store in an order of their own, so
//! the event's `seq` is not it): ids only grow, so an entry sent twice after a lost reply is
//! recognised and skipped instead of doubled, and a stream restored from Redis's own
//! persistence keeps its order. `XADD … MAXLEN ~ n` bounds Redis's memory.
//!
//! While Redis is unreachable, events go to a local spool file (fsync'd per batch: they are
//! acknowledged once there) and are sent, in order, before anything newer when it returns.
//!
//! A consumer group moves entries into the warm tier: each batch is stored with the stream's
//! mark in one DuckDB transaction and acknowledged (XACK) after, so an entry delivered again
//! (a crash between the two) is recognised by the mark and skipped: no duplicates, no gaps.
use std::{
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Seek as _, Write as _},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axiom_proto::wire::Event;
use redis::Value;

use super::config::HotConfig;
use super::{Warm, WriterStats, schema};
use crate::bus::tap::Intake;

#[derive(Debug, thiserror::Error)]
pub enum HotError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("spool {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("redis stream {key}: unexpected reply {what}")]
    Reply { key: String, what: String },
}

/// The stream a host writes.
pub(crate) fn stream_key(prefix: &str, host: &str) -> String {
    format!("{prefix}:{{{host}}}:events")
}

/// "run-seq" → (run, seq).
pub(crate) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (a, b) = id.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What the hot tier has done, for `status`.
#[derive(Default)]
pub(crate) struct HotStats {
    /// Entries Redis acknowledged.
    pub(crate) sent: AtomicU64,
    /// Events waiting in the local spool (Redis unreachable).
    pub(crate) spooled: AtomicU64,
    /// Entries refused as already present (sent again after a lost reply).
    pub(crate) duplicates: AtomicU64,
    /// Times Redis could not be reached or failed a command.
    pub(crate) redis_errors: AtomicU64,
    /// Batches that could be neither sent nor spooled (a full disk), each retried.
    pub(crate) failed_batches: AtomicU64,
}

fn connect(client: &redis::Client) -> Result<redis::Connection, HotError> {
    let c = client.get_connection_with_timeout(Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(c)
}

/// The newest id in the stream (none for an empty or missing stream).
fn top(conn: &mut redis::Connection, key: &str) -> Result<Option<(u64, u64)>, HotError> {
    let v: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(conn)?;
    let Value::Array(items) = v else {
        return Ok(None);
    };
    Ok(items.first().and_then(|e| match e {
        Value::Array(parts) => match parts.first() {
            Some(Value::BulkString(id)) => parse_id(&String::from_utf8_lossy(id)),
            _ => None,
        },
        _ => None,
    }))
}

/// One event ready for the stream, with its stream id (`run-seq`).
struct Entry {
    run: u64,
    seq: u64,
    json: String,
}

/// The local spool: one line per event, `run seq json`.
struct Spool {
    path: PathBuf,
    file: File,
    events: u64,
}

impl Spool {
    fn open(path: PathBuf) -> Result<Spool, HotError> {
        let err = |source| HotError::Spool {
            path: path.clone(),
            source,
        };
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let events = BufReader::new(&file).lines().count() as u64;
        Ok(Spool { path, file, events })
    }

    fn err(&self, source: std::io::Error) -> HotError {
        HotError::Spool {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends and syncs: the events are acknowledged once this returns.
    fn push(&mut self, entries: &[Entry]) -> Result<(), HotError> {
        let mut buf = String::new();
        for e in entries {
            buf.push_str(&format!("{} {} {}\n", e.run, e.seq, e.json));
        }
        self.file
            .write_all(buf.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|e| self.err(e))?;
        self.events += entries.len() as u64;
        Ok(())
    }

    /// Every spooled event, oldest first.
    fn read(&mut self) -> Result<Vec<Entry>, HotError> {
        self.file
            .seek(std::io::SeekFrom::Start(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for line in BufReader::new(&self.file).lines() {
            let line = line.map_err(|e| self.err(e))?;
            let mut it = line.splitn(3, ' ');
            if let (Some(r), Some(s), Some(j)) = (it.next(), it.next(), it.next())
                && let (Ok(run), Ok(seq)) = (r.parse(), s.parse())
            {
                out.push(Entry {
                    run,
                    seq,
                    json: j.to_string(),
                });
            }
        }
        Ok(out)
    }

    fn clear(&mut self) -> Result<(), HotError> {
        self.file
            .set_len(0)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| self.err(e))?;
        self.events = 0;
        Ok(())
    }
}

/// The writer's side of the hot tier.
pub(crate) struct Publisher {
    client: redis::Client,
    conn: Option<redis::Connection>,
    key: String,
    host: String,
    maxlen: u64,
    spool: Spool,
    /// A send failed part-way: the stream's top must be read before sending again.
    uncertain: bool,
    /// The last entry number given in this run.
    sent_n: u64,
    stats: Arc<HotStats>,
}

impl Publisher {
    pub(crate) fn new(cfg: &HotConfig, stats: Arc<HotStats>) -> Result<Publisher, HotError> {
        let host = super::hostname();
        let key = stream_key(&cfg.key_prefix, &host);
        let spool = Spool::open(cfg.spool_dir.clone().unwrap_or_default().join(format!(
            "{}.spool",
            key.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
        )))?;
        stats.spooled.store(spool.events, Ordering::Relaxed);
        Ok(Publisher {
            client: redis::Client::open(cfg.url.as_str())?,
            conn: None,
            key,
            host,
            maxlen: cfg.maxlen,
            // Whatever a previous run spooled goes first, and may have partly reached Redis.
            uncertain: true,
            sent_n: 0,
            spool,
            stats,
        })
    }

    /// Sends entries, skipping any at or below the stream's top when a previous send failed.
    fn send(&mut self, entries: &[Entry]) -> Result<(), HotError> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.client)?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let floor = if self.uncertain {
            top(conn, &self.key)?
        } else {
            None
        };
        let mut pipe = redis::pipe();
        let mut n = 0u64;
        let mut skipped = 0u64;
        for e in entries {
            if floor.is_some_and(|f| (e.run, e.seq) <= f) {
                skipped += 1;
                continue;
            }
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.maxlen)
                .arg(format!("{}-{}", e.run, e.seq))
                .arg("h")
                .arg(&self.host)
                .arg("e")
                .arg(&e.json)
                .ignore();
            n += 1;
        }
        if n > 0 {
            pipe.query::<()>(conn)?;
        }
        self.uncertain = false;
        self.stats.sent.fetch_add(n, Ordering::Relaxed);
        self.stats.duplicates.fetch_add(skipped, Ordering::Relaxed);
        Ok(())
    }

    /// Sends a batch: first whatever is spooled, then the batch; what cannot be sent is
    /// spooled. An error here means an event could be neither sent nor spooled.
    fn publish(&mut self, entries: &[Entry]) -> Result<(), HotError> {
        if self.spool.events > 0 {
            match self.spool.read().and_then(|old| {
                for chunk in old.chunks(4096) {
                    self.send(chunk)?;
                }
                Ok(())
            }) {
                Ok(()) => {
                    tracing::info!(events = self.spool.events, "hot tier: spool sent to redis");
                    self.spool.clear()?;
                    self.stats.spooled.store(0, Ordering::Relaxed);
                }
                Err(e) => return self.fail(e, entries),
            }
        }
        match self.send(entries) {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e, entries),
        }
    }

    fn fail(&mut self, e: HotError, entries: &[Entry]) -> Result<(), HotError> {
        if matches!(e, HotError::Spool { .. }) {
            return Err(e);
        }
        if self
            .stats
            .redis_errors
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(100)
        {
            tracing::warn!("hot tier: redis unavailable, spooling locally: {e}");
        }
        self.conn = None;
        self.uncertain = true;
        self.spool.push(entries)?;
        self.stats
            .spooled
            .store(self.spool.events, Ordering::Relaxed);
        Ok(())
    }
}

impl Publisher {
    /// Sends (or spools) events numbered in run `run`.
    pub(crate) fn publish_events(&mut self, evs: &[Arc<Event>], run: u64) -> Result<(), HotError> {
        let entries: Vec<Entry> = evs
            .iter()
            .map(|ev| {
                self.sent_n += 1;
                Entry {
                    run,
                    seq: self.sent_n,
                    json: serde_json::to_string(&**ev).unwrap_or_default(),
                }
            })
            .collect();
        self.publish(&entries)
    }

    /// The stream this publisher writes.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

/// The hot writer thread: batches from the bus, to Redis or the spool; a batch that can be
/// neither sent nor spooled (a full disk) is retried, never dropped.
pub(crate) fn publish(mut p: Publisher, intake: Intake, batch: usize, flush: Duration, run: u64) {
    let mut buf = Vec::with_capacity(batch);
    loop {
        let more = intake.collect(&mut buf, batch, flush);
        if !buf.is_empty() {
            while let Err(err) = p.publish_events(&buf, run) {
                p.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("hot tier: batch neither sent nor spooled, retrying: {err}");
                std::thread::sleep(Duration::from_secs(1));
            }
            buf.clear();
        }
        if more.is_none() {
            return;
        }
    }
}

/// Entries parsed from an XREADGROUP or XRANGE reply: (id, host, event).
/// A stream entry: its id, and its host and event JSON fields when both are there.
type StreamEntry = (String, Option<(String, String)>);
/// A stream entry id, `<ms>-<seq>`.
type StreamId = (u64, u64);

fn entries(v: Value) -> Vec<StreamEntry> {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    let mut out = Vec::new();
    let list = |v: Value| match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    for item in list(v) {
        let Value::Array(parts) = item else { continue };
        let Some(id) = parts.first().and_then(text) else {
            continue;
        };
        // A trimmed entry still pending comes back with no fields.
        let fields = parts.get(1).and_then(|f| match f {
            Value::Array(kv) => {
                let mut h = None;
                let mut e = None;
                for pair in kv.chunks(2) {
                    match (pair.first().and_then(text).as_deref(), pair.get(1)) {
                        (Some("h"), Some(v)) => h = text(v),
                        (Some("e"), Some(v)) => e = text(v),
                        _ => {}
                    }
                }
                Some((h?, e?))
            }
            _ => None,
        });
        out.push((id, fields));
    }
    out
}

/// An entry as a row of the warm tier.
fn row(id: &str, host: &str, json: &str) -> Option<schema::Stored> {
    let (run, _) = parse_id(id)?;
    let event: Event = serde_json::from_str(json).ok()?;
    Some(schema::Stored {
        host: host.to_string(),
        run,
        event,
    })
}

/// Counters of the worker that moves entries into the warm tier.
#[derive(Default)]
pub(crate) struct MoverStats {
    pub(crate) moved: AtomicU64,
    /// Entries delivered again that the mark showed were already stored.
    pub(crate) redelivered: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// A connection to Redis with the consumer group in place (created when missing: a first start,
/// or a Redis that lost its data).
fn join_group(
    client: &redis::Client,
    key: &str,
    group: &str,
) -> Result<redis::Connection, HotError> {
    let mut c = connect(client)?;
    let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut c);
    match r {
        Ok(_) => Ok(c),
        Err(e) if e.to_string().contains("BUSYGROUP") => Ok(c),
        Err(e) => Err(e.into()),
    }
}

/// Entries for this consumer: its own pending ones (`backlog`: delivered before a crash, never
/// acknowledged), else new ones, waiting up to 200 ms for them.
fn read_group(
    c: &mut redis::Connection,
    cfg: &HotConfig,
    consumer: &str,
    key: &str,
    backlog: bool,
) -> redis::RedisResult<Vec<StreamEntry>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&cfg.group)
        .arg(consumer)
        .arg("COUNT")
        .arg(cfg.batch_events.max(1));
    if !backlog {
        cmd.arg("BLOCK").arg(200);
    }
    cmd.arg("STREAMS")
        .arg(key)
        .arg(if backlog { "0" } else { ">" });
    let reply: Value = cmd.query(c)?;
    // [[key, [entries…]]] (or nil after BLOCK)
    Ok(match reply {
        Value::Array(streams) => streams
            .into_iter()
            .next()
            .and_then(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .map(entries)
            .unwrap_or_default(),
        Value::Map(m) => m
            .into_iter()
            .next()
            .map(|(_, v)| entries(v))
            .unwrap_or_default(),
        _ => Vec::new(),
    })
}

/// The rows of entries past the warm tier's mark (those at or below it were stored before a
/// crash and are delivered again), the highest id seen, and how many were redelivered.
fn unseen_rows(
    got: &[StreamEntry],
    mark: Option<StreamId>,
) -> (Vec<schema::Stored>, Option<StreamId>, u64) {
    let mut rows = Vec::with_capacity(got.len());
    let mut last = mark;
    let mut redelivered = 0u64;
    for (id, fields) in got {
        let Some(idn) = parse_id(id) else { continue };
        if mark.is_some_and(|m| idn <= m) {
            redelivered += 1;
            continue;
        }
        if let Some((h, e)) = fields
            && let Some(r) = row(id, h, e)
        {
            rows.push(r);
        }
        last = Some(last.map_or(idn, |l| l.max(idn)));
    }
    (rows, last, redelivered)
}

/// The consumer-group worker: Redis → DuckDB, exactly once as a query sees it.
pub(crate) fn mover(
    cfg: HotConfig,
    mut warm: Warm,
    stats: Arc<MoverStats>,
    writer: Arc<WriterStats>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let host = super::hostname();
    let key = stream_key(&cfg.key_prefix, &host);
    let consumer = host.clone();
    let Ok(client) = redis::Client::open(cfg.url.as_str()) else {
        tracing::error!(url = %cfg.url, "hot tier: bad redis url");
        return;
    };
    writer
        .max_time_ns
        .store(warm.max_time_ns, Ordering::Relaxed);
    let mut conn: Option<redis::Connection> = None;
    let mut backlog = true;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match join_group(&client, &key, &cfg.group) {
                Ok(c) => {
                    backlog = true;
                    conn = Some(c);
                }
                Err(e) => {
                    if stats
                        .errors
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(100)
                    {
                        tracing::warn!("hot tier: mover cannot reach redis: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // Our own pending entries first (delivered before a crash, never acknowledged).
        let got = match read_group(c, &cfg, &consumer, &key, backlog) {
            Ok(got) => got,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("hot tier: XREADGROUP: {e}");
                // NOGROUP (Redis restarted empty) and lost connections: reconnect, recreate.
                conn = None;
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if got.is_empty() {
            backlog = false;
            continue;
        }
        let mark = warm.mark(&key).ok().flatten();
        let (rows, last, redelivered) = unseen_rows(&got, mark);
        if let Some(last) = last
            && (!rows.is_empty() || Some(last) != mark)
            && let Err(e) = warm.ingest(&rows, &key, last)
        {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "hot tier: moving {} entries into the warm tier: {e}",
                rows.len()
            );
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        let acked: redis::RedisResult<Value> = redis::cmd("XACK")
            .arg(&key)
            .arg(&cfg.group)
            .arg(&ids)
            .query(c);
        if acked.is_err() {
            conn = None;
        }
        stats.moved.fetch_add(rows.len() as u64, Ordering::Relaxed);
        stats.redelivered.fetch_add(redelivered, Ordering::Relaxed);
        writer
            .stored
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        writer.batches.fetch_add(1, Ordering::Relaxed);
        writer
            .max_time_ns
            .store(warm.max_time_ns, Ordering::Relaxed);
    }
}

/// Reads the newest entries of the stream above `after` (those not yet in the warm tier), for
/// queries: at most `limit`, oldest first.
pub(crate) struct Reader {
    client: redis::Client,
    pub(crate) key: String,
}

impl Reader {
    pub(crate) fn new(cfg: &HotConfig) -> Result<Reader, HotError> {
        Ok(Reader {
            client: redis::Client::open(cfg.url.as_str())?,
            key: stream_key(&cfg.key_prefix, &super::hostname()),
        })
    }

    pub(crate) fn above(
        &self,
        after: Option<(u64, u64)>,
        limit: usize,
    ) -> Result<Vec<schema::Stored>, HotError> {
        let mut conn = connect(&self.client)?;
        let start = match after {
            Some((r, s)) => format!("({r}-{s}"),
            None => "-".into(),
        };
        let v: Value = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query(&mut conn)?;
        Ok(entries(v)
            .into_iter()
            .filter_map(|(id, f)| {
                let (h, e) = f?;
                let (run, _) = parse_id(&id)?;
                let event: Event = serde_json::from_str(&e).ok()?;
                Some(schema::Stored {
                    host: h,
                    run,
                    event,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids() {
        assert_eq!(stream_key("axiom", "web-1"), "axiom:{web-1}:events");
        assert_eq!(parse_id("1764000000000-42"), Some((1_764_000_000_000, 42)));
        assert_eq!(parse_id("nonsense"), None);
        // Ids order as (run, seq): a later run sorts after every event of an earlier one.
        assert!(parse_id("2-1") > parse_id("1-999"));
    }

    #[test]
    fn the_spool_keeps_events_across_a_reopen_until_cleared() {
        let dir = std::env::temp_dir().join(format!("axiom-spool-test-{}", std::process::id()));
        let path = dir.join("s.spool");
        let e = |seq| Entry {
            run: 7,
            seq,
            json: format!("{{\"seq\":{seq},\"text\":\"a b\\nc\"}}"),
        };
        {
            let mut s = Spool::open(path.clone()).unwrap();
            s.push(&[e(1), e(2)]).unwrap();
            s.push(&[e(3)]).unwrap();
            assert_eq!(s.events, 3);
        }
        let mut s = Spool::open(path.clone()).unwrap();
        assert_eq!(s.events, 3, "counted again after a restart");
        let back = s.read().unwrap();
        assert_eq!(
            back.iter().map(|x| (x.run, x.seq)).collect::<Vec<_>>(),
            [(7, 1), (7, 2), (7, 3)]
        );
        assert_eq!(back[0].json, e(1).json);
        s.clear().unwrap();
        assert_eq!(Spool::open(path).unwrap().events, 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
