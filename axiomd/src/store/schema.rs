//! One event schema for every tier (version 1): the envelope in typed columns (host, agent,
//! time, kind, pid, …), the kind's own fields as JSON (`body`, the wire model's `Body`), and the
//! searchable payload as text (what was written, the command line, the path, the address).
use axiom_proto::wire::{Body, Event};

pub const VERSION: u8 = 1;

pub const CREATE: &str = "
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
pub const COLUMNS: &str = "schema_version, host, seq, time_ns, agent, kind, pid, tgid, ppid, uid, \
     cgroup_id, comm, truncated, text, body, run";

/// An event with its identity, as any tier gives it back.
#[derive(Clone, Debug)]
pub struct Stored {
    pub host: String,
    pub run: u64,
    pub event: Event,
}

impl Stored {
    /// The identity queries merge tiers by.
    pub fn key(&self) -> (String, u64, u64) {
        (self.host.clone(), self.run, self.event.seq)
    }
}

/// An event as a row.
pub struct Row {
    pub host: String,
    /// The daemon run that numbered the event (its start, ms since the epoch): with `host` and
    /// `seq`, the event's identity in every tier (and its Redis stream id, `run-seq`).
    pub run: u64,
    pub seq: u64,
    pub time_ns: i64,
    pub agent: u64,
    pub kind: &'static str,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    pub truncated: bool,
    pub text: Option<String>,
    pub body: String,
}

/// The text a search looks in.
pub fn searchable(b: &Body) -> Option<String> {
    match b {
        Body::Output { text, .. } => Some(text.clone()),
        Body::Exec { argv, filename, .. } => Some(if argv.is_empty() {
            filename.clone()
        } else {
            argv.join(" ")
        }),
        Body::File { path, path2, .. } => Some(match path2 {
            Some(p) => format!("{path} {p}"),
            None => path.clone(),
        }),
        Body::Connect { address, port, .. } => Some(format!("{address}:{port}")),
        Body::Violation { rule, detail, .. } => Some(format!("{rule} {detail}")),
        Body::Denied { op, target, by, .. } => Some(format!("{op} {target} {by}")),
        Body::Intervention { action, detail, .. } => Some(format!("{action} {detail}")),
        _ => None,
    }
}

impl Row {
    pub fn of(ev: &Event, host: &str, run: u64) -> Row {
        Row {
            host: host.into(),
            run,
            seq: ev.seq,
            time_ns: ev.time_ns.min(i64::MAX as u64) as i64,
            agent: ev.agent,
            kind: ev.body.kind().name(),
            pid: ev.pid,
            tgid: ev.tgid,
            ppid: ev.ppid,
            uid: ev.uid,
            cgroup_id: ev.cgroup_id,
            comm: ev.comm.clone(),
            truncated: ev.truncated,
            text: searchable(&ev.body),
            body: serde_json::to_string(&ev.body).unwrap_or_else(|_| "{}".into()),
        }
    }
}

/// Appends rows as one Arrow batch, column by column in table order: DuckDB copies whole
/// vectors instead of converting sixteen values per row (several times faster than
/// `append_row`, which the ingest rate depends on).
pub fn append_rows(app: &mut duckdb::Appender, rows: &[Row]) -> Result<(), duckdb::Error> {
    use arrow::array::{
        ArrayRef, BooleanArray, Int64Array, StringArray, UInt8Array, UInt32Array, UInt64Array,
    };
    if rows.is_empty() {
        return Ok(());
    }
    let u64s = |f: fn(&Row) -> u64| -> ArrayRef {
        std::sync::Arc::new(rows.iter().map(|r| Some(f(r))).collect::<UInt64Array>())
    };
    let u32s = |f: fn(&Row) -> u32| -> ArrayRef {
        std::sync::Arc::new(rows.iter().map(|r| Some(f(r))).collect::<UInt32Array>())
    };
    let strs = |f: fn(&Row) -> Option<&str>| -> ArrayRef {
        std::sync::Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "schema_version",
            std::sync::Arc::new(UInt8Array::from(vec![VERSION; rows.len()])),
        ),
        ("host", strs(|r| Some(r.host.as_str()))),
        ("seq", u64s(|r| r.seq)),
        (
            "time_ns",
            std::sync::Arc::new(rows.iter().map(|r| Some(r.time_ns)).collect::<Int64Array>()),
        ),
        ("agent", u64s(|r| r.agent)),
        ("kind", strs(|r| Some(r.kind))),
        ("pid", u32s(|r| r.pid)),
        ("tgid", u32s(|r| r.tgid)),
        ("ppid", u32s(|r| r.ppid)),
        ("uid", u32s(|r| r.uid)),
        ("cgroup_id", u64s(|r| r.cgroup_id)),
        ("comm", strs(|r| Some(r.comm.as_str()))),
        (
            "truncated",
            std::sync::Arc::new(
                rows.iter()
                    .map(|r| Some(r.truncated))
                    .collect::<BooleanArray>(),
            ),
        ),
        ("text", strs(|r| r.text.as_deref())),
        ("body", strs(|r| Some(r.body.as_str()))),
        ("run", u64s(|r| r.run)),
    ];
    let batch = arrow::record_batch::RecordBatch::try_from_iter(columns)
        .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))?;
    app.append_record_batch(batch)
}

/// An output event for tests.
#[cfg(test)]
pub fn sample_output(seq: u64, time_ns: u64, tgid: u32, uid: u32, text: &str) -> Event {
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
            syscall: "write".into(),
            count: text.len() as u64,
            target: None,
            text: text.into(),
            captured: text.len() as u32,
            redacted: vec![],
        },
    }
}
