//! One event schema for every tier (version 1): the envelope in typed columns (host, agent,
//! time, kind, pid, …), the kind's own fields as JSON (`body`, the wire model's `Body`), and the
//! searchable payload as text (what was written, the command line, the path, the address).
use axiom_proto::wire::{Body, Event};

pub(crate) const VERSION: u8 = 1;

pub(crate) const CREATE: &str = "
CREATE TABLE IF NOT EXISTS events (
    schema_version UTINYINT NOT NULL,
    host VARCHAR NOT NULL,
    seq UBIGINT NOT NULL,
    time_ns BIGINT NOT NULL,
    agent UBIGINT NOT NULL,
    kind VARCHAR NOT NULL,
    pid UINTEGER NOT NULL,
    tgid UINTEGER NOT NULL,
    ppid UINTEGER NOT NULL,
    uid UINTEGER NOT NULL,
    cgroup_id UBIGINT NOT NULL,
    comm VARCHAR NOT NULL,
    truncated BOOLEAN NOT NULL,
    text VARCHAR,
    body VARCHAR NOT NULL,
    run UBIGINT NOT NULL DEFAULT 0
);
-- Files written by an earlier build of version 1 lack `run` (appended last, so the appender's
-- column order holds for both).
ALTER TABLE events ADD COLUMN IF NOT EXISTS run UBIGINT DEFAULT 0;
-- How far each Redis stream has been moved into this table (the stream id of the last entry):
-- updated in the same transaction as the rows, so a redelivered entry is recognised and skipped.
CREATE TABLE IF NOT EXISTS ingest_marks (
    stream VARCHAR PRIMARY KEY,
    run UBIGINT NOT NULL,
    seq UBIGINT NOT NULL
);
";

/// The envelope and body columns, in table order (what the cold tier's Parquet files hold too).
pub(crate) const COLUMNS: &str = "schema_version, host, seq, time_ns, agent, kind, pid, tgid, ppid, uid, \
     cgroup_id, comm, truncated, text, body, run";

/// An event with its identity, as any tier gives it back.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub(crate) host: String,
    pub(crate) run: u64,
    pub(crate) event: Event,
}

impl Stored {
    /// The identity queries merge tiers by.
    #[cfg(test)]
    pub(crate) fn key(&self) -> (String, u64, u64) {
        (self.host.clone(), self.run, self.event.seq)
    }
}

/// The text a search looks in.
pub(crate) fn searchable(b: &Body) -> Option<String> {
    searchable_ref(b).map(std::borrow::Cow::into_owned)
}

/// The text a search looks in, borrowed where the event holds it (an output's bytes: most rows).
fn searchable_ref(b: &Body) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow::{Borrowed, Owned};
    match b {
        Body::Output { text, .. } => Some(Borrowed(text.as_str())),
        Body::Exec { argv, filename, .. } => Some(if argv.is_empty() {
            Borrowed(filename.as_str())
        } else {
            Owned(argv.join(" "))
        }),
        Body::File { path, path2, .. } => Some(match path2 {
            Some(p) => Owned(format!("{path} {p}")),
            None => Borrowed(path.as_str()),
        }),
        Body::Connect { address, port, .. } => Some(Owned(format!("{address}:{port}"))),
        Body::Violation { rule, detail, .. } => Some(Owned(format!("{rule} {detail}"))),
        Body::Denied { op, target, by, .. } => Some(Owned(format!("{op} {target} {by}"))),
        Body::HooksInactive { reason } => Some(Borrowed(reason.as_str())),
        Body::Hook {
            event, tool, text, ..
        } => Some(Owned(format!(
            "{event} {} {text}",
            tool.as_deref().unwrap_or("")
        ))),
        Body::Intervention { action, detail, .. } => Some(Owned(format!("{action} {detail}"))),
        _ => None,
    }
}

/// An output's body as stored: everything but its bytes, which the `text` column holds (once,
/// not twice: the body used to carry them again, half of every output row). `"text":""` stays
/// in, so the JSON still reads as a `Body` without the column.
#[derive(serde::Serialize)]
#[serde(tag = "kind", rename = "output")]
struct OutputSansText<'a> {
    fd: i32,
    syscall: axiom_proto::wire::WriteCall,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    read_back: bool,
    count: u64,
    target: &'a Option<String>,
    text: &'static str,
    captured: u32,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    redacted: &'a [String],
}

/// `body` as the `body` column stores it, into `out` (cleared first).
pub(crate) fn body_json(body: &Body, out: &mut Vec<u8>) {
    out.clear();
    let done = match body {
        Body::Output {
            fd,
            syscall,
            read_back,
            count,
            target,
            captured,
            redacted,
            ..
        } => serde_json::to_writer(
            &mut *out,
            &OutputSansText {
                fd: *fd,
                syscall: *syscall,
                read_back: *read_back,
                count: *count,
                target,
                text: "",
                captured: *captured,
                redacted,
            },
        ),
        other => serde_json::to_writer(&mut *out, other),
    };
    if done.is_err() {
        out.clear();
        out.extend_from_slice(b"{}");
    }
}

/// A stored row's body: the `body` column, with an output's bytes from the `text` column.
pub(crate) fn body_of(body: &str, text: Option<&str>) -> Option<Body> {
    let mut b: Body = serde_json::from_str(body).ok()?;
    if let (Body::Output { text: t, .. }, Some(col)) = (&mut b, text)
        && t.is_empty()
    {
        *t = col.to_string();
    }
    Some(b)
}

/// A batch of events as DuckDB takes it: one Arrow record batch, and the newest event time in it.
/// Built apart from the appending (`columns`), so the writer can build the next batch's
/// columns while DuckDB stores the last one.
#[derive(Clone)]
pub(crate) struct Columns {
    pub(crate) batch: arrow::record_batch::RecordBatch,
    pub(crate) newest: Option<i64>,
}

impl Columns {
    /// This daemon's events (one host and run) as columns.
    pub(crate) fn of(
        host: &str,
        run: u64,
        events: &[std::sync::Arc<Event>],
    ) -> Result<Columns, super::StoreError> {
        columns(events.iter().map(|ev| (host, run, &**ev)))
            .map_err(|e| super::StoreError::Query(arrow_error(e)))
    }

    pub(crate) fn rows(&self) -> usize {
        self.batch.num_rows()
    }
}

/// Appends events, with the identity each is stored under (host, run): `columns`, then DuckDB's
/// appender. The newest event time appended, if any.
pub(crate) fn append<'a>(
    app: &mut duckdb::Appender,
    rows: impl ExactSizeIterator<Item = (&'a str, u64, &'a Event)>,
) -> Result<Option<i64>, duckdb::Error> {
    let c = columns(rows).map_err(arrow_error)?;
    if c.rows() > 0 {
        app.append_record_batch(c.batch)?;
    }
    Ok(c.newest)
}

/// An Arrow error as the DuckDB error the store reports.
pub(crate) fn arrow_error(e: arrow::error::ArrowError) -> duckdb::Error {
    duckdb::Error::ToSqlConversionFailure(Box::new(e))
}

/// Events, with the identity each is stored under (host, run), as one Arrow batch built
/// straight from them: every column a builder (no row structs, no copies of texts beyond the
/// column's own), so DuckDB copies whole vectors instead of converting sixteen values per row.
///
/// A batch is laid out by agent, then time: batches follow each other in time (zone maps
/// still skip every row group outside a time window), and within one an agent's events are
/// neighbours, so "the latest 1,000 of one agent" finds them in a few of DuckDB's 2,048-row
/// vectors and skips the text and body of every other vector instead of decompressing them.
/// The rows are sorted first and the columns built in that order: gathering built columns
/// afterwards copied every text and body a second time (measured: a fifth of the build).
pub(crate) fn columns<'a>(
    rows: impl ExactSizeIterator<Item = (&'a str, u64, &'a Event)>,
) -> Result<Columns, arrow::error::ArrowError> {
    use arrow::array::{
        ArrayRef, BooleanBuilder, Int64Builder, StringBuilder, UInt8Array, UInt32Builder,
        UInt64Builder,
    };
    let time_of = |ev: &Event| ev.time_ns.min(i64::MAX as u64) as i64;
    let mut rows: Vec<(&str, u64, &Event)> = rows.collect();
    rows.sort_unstable_by_key(|&(_, r, ev)| (ev.agent, time_of(ev), r, ev.seq));
    let n = rows.len();
    let newest = rows.iter().map(|&(_, _, ev)| time_of(ev)).max();
    let strings = |bytes_each: usize| StringBuilder::with_capacity(n, n * bytes_each);
    let (mut host, mut kind, mut comm) = (strings(16), strings(8), strings(16));
    let (mut text, mut body) = (strings(128), strings(128));
    let u64s = || UInt64Builder::with_capacity(n);
    let u32s = || UInt32Builder::with_capacity(n);
    let (mut seq, mut agent, mut cgroup, mut run) = (u64s(), u64s(), u64s(), u64s());
    let (mut pid, mut tgid, mut ppid, mut uid) = (u32s(), u32s(), u32s(), u32s());
    let mut time = Int64Builder::with_capacity(n);
    let mut truncated = BooleanBuilder::with_capacity(n);
    let mut scratch = Vec::with_capacity(256);
    for (h, r, ev) in rows {
        host.append_value(h);
        seq.append_value(ev.seq);
        time.append_value(time_of(ev));
        agent.append_value(ev.agent);
        kind.append_value(ev.body.kind().name());
        pid.append_value(ev.pid);
        tgid.append_value(ev.tgid);
        ppid.append_value(ev.ppid);
        uid.append_value(ev.uid);
        cgroup.append_value(ev.cgroup_id);
        comm.append_value(&ev.comm);
        truncated.append_value(ev.truncated);
        text.append_option(searchable_ref(&ev.body));
        body_json(&ev.body, &mut scratch);
        // serde_json writes UTF-8; checked all the same (a cheap pass), never trusted blindly.
        match std::str::from_utf8(&scratch) {
            Ok(b) => body.append_value(b),
            Err(_) => body.append_value(String::from_utf8_lossy(&scratch)),
        }
        run.append_value(r);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "schema_version",
            std::sync::Arc::new(UInt8Array::from(vec![VERSION; n])),
        ),
        ("host", std::sync::Arc::new(host.finish())),
        ("seq", std::sync::Arc::new(seq.finish())),
        ("time_ns", std::sync::Arc::new(time.finish())),
        ("agent", std::sync::Arc::new(agent.finish())),
        ("kind", std::sync::Arc::new(kind.finish())),
        ("pid", std::sync::Arc::new(pid.finish())),
        ("tgid", std::sync::Arc::new(tgid.finish())),
        ("ppid", std::sync::Arc::new(ppid.finish())),
        ("uid", std::sync::Arc::new(uid.finish())),
        ("cgroup_id", std::sync::Arc::new(cgroup.finish())),
        ("comm", std::sync::Arc::new(comm.finish())),
        ("truncated", std::sync::Arc::new(truncated.finish())),
        ("text", std::sync::Arc::new(text.finish())),
        ("body", std::sync::Arc::new(body.finish())),
        ("run", std::sync::Arc::new(run.finish())),
    ];
    Ok(Columns {
        batch: arrow::record_batch::RecordBatch::try_from_iter(columns)?,
        newest,
    })
}

/// An output event for tests.
#[cfg(test)]
pub(crate) fn sample_output(seq: u64, time_ns: u64, tgid: u32, uid: u32, text: &str) -> Event {
    Event {
        seq,
        time_ns,
        agent: 3,
        pid: tgid,
        tgid,
        ppid: 1,
        uid,
        cgroup_id: 0,
        comm: "a".into(),
        truncated: false,
        body: Body::Output {
            fd: 1,
            syscall: axiom_proto::wire::WriteCall::Write,
            read_back: false,
            count: text.len() as u64,
            target: None,
            text: text.into(),
            captured: text.len() as u32,
            redacted: vec![],
        },
    }
}
