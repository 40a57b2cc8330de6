//! Reading the tiers: "latest N of an agent", time ranges, kinds, text search, and read-only
//! SQL — one answer merged across hot (Redis), warm (DuckDB) and cold (Parquet), each event
//! once (by its identity: host, run, seq), in time order.
use std::sync::{Arc, Mutex};

use axiom_proto::wire::{Count, Event, EventQuery};
use duckdb::types::Value;

use super::{StoreError, WriterStats, cold::Cold, hot, schema::Stored};

/// What `axiomctl query` asks for (the wire's own query, read through), and what the caller
/// may see of it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Query {
    pub(crate) asked: EventQuery,
    /// What a caller who is not an admin may see.
    pub(crate) visible_to: Option<Visible>,
}

impl From<EventQuery> for Query {
    fn from(asked: EventQuery) -> Query {
        Query {
            asked,
            visible_to: None,
        }
    }
}

impl std::ops::Deref for Query {
    type Target = EventQuery;
    fn deref(&self) -> &EventQuery {
        &self.asked
    }
}

impl std::ops::DerefMut for Query {
    fn deref_mut(&mut self) -> &mut EventQuery {
        &mut self.asked
    }
}

/// A caller's events: of this host, and either of their uid or of one of their agents since
/// it started. Agent ids are this host's and start again low after a reboot (or once high ids
/// were swept): user B's new agent 7 must not show user A's old agent 7, whose events are all
/// older than B's agent.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Visible {
    pub(crate) uid: u32,
    pub(crate) host: String,
    /// (agent id, when it started, ns since the epoch).
    pub(crate) agents: Vec<(u64, u64)>,
}

impl Visible {
    fn accepts(&self, host: &str, uid: u32, agent: u64, time_ns: u64) -> bool {
        host == self.host
            && (uid == self.uid
                || self
                    .agents
                    .iter()
                    .any(|(a, since)| *a == agent && time_ns >= *since))
    }
}

/// The columns a filter looks at (of an event from a tier DuckDB does not read).
pub(crate) struct Row<'a> {
    pub(crate) agent: u64,
    pub(crate) time_ns: u64,
    pub(crate) kind: &'a str,
    pub(crate) text: Option<&'a str>,
    pub(crate) uid: u32,
    pub(crate) host: &'a str,
}

impl Query {
    /// The same test as the SQL `events` builds, for events read outside DuckDB.
    pub(crate) fn accepts(&self, r: &Row) -> bool {
        self.agent.is_none_or(|a| a == r.agent)
            && self.since_ns.is_none_or(|t| r.time_ns >= t)
            && self.until_ns.is_none_or(|t| r.time_ns <= t)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == r.kind))
            && self
                .text
                .as_ref()
                .is_none_or(|t| r.text.is_some_and(|x| x.contains(t.as_str())))
            && self
                .visible_to
                .as_ref()
                .is_none_or(|v| v.accepts(r.host, r.uid, r.agent, r.time_ns))
    }

    /// The same test, for an event as stored (with the host that stored it).
    pub(crate) fn accepts_stored(&self, s: &super::schema::Stored) -> bool {
        let ev = &s.event;
        let text = super::schema::searchable(&ev.body);
        self.accepts(&Row {
            agent: ev.agent,
            time_ns: ev.time_ns,
            kind: ev.body.kind().name(),
            text: text.as_deref(),
            uid: ev.uid,
            host: &s.host,
        })
    }
}

/// The `WHERE` clause of a query, with the parameters its `?`s stand for.
fn filter(q: &Query) -> (String, Vec<Value>) {
    // Numbers go into the text as literals, not parameters: DuckDB prunes row groups by their
    // min/max only for constants known when it plans, and a time window that prunes is what
    // makes "latest N" fast (numbers formatted from integers cannot inject anything).
    use std::fmt::Write as _;
    let mut sql = String::from(" WHERE true");
    let mut args: Vec<Value> = Vec::new();
    if let Some(a) = q.agent {
        let _ = write!(sql, " AND agent = {a}");
    }
    if let Some(t) = q.since_ns {
        let _ = write!(sql, " AND time_ns >= {}", t.min(i64::MAX as u64));
    }
    if let Some(t) = q.until_ns {
        let _ = write!(sql, " AND time_ns <= {}", t.min(i64::MAX as u64));
    }
    if !q.kinds.is_empty() {
        sql.push_str(" AND kind IN (");
        sql.push_str(&vec!["?"; q.kinds.len()].join(", "));
        sql.push(')');
        args.extend(q.kinds.iter().map(|k| Value::Text(k.clone())));
    }
    if let Some(t) = &q.text {
        sql.push_str(" AND contains(text, ?)");
        args.push(Value::Text(t.clone()));
    }
    if let Some(v) = &q.visible_to {
        sql.push_str(" AND host = ?");
        args.push(Value::Text(v.host.clone()));
        let _ = write!(sql, " AND (uid = {}", v.uid);
        // Of one agent's events, only that agent's clause can hold: a caller with a hundred
        // agents does not have DuckDB plan a hundred for each read of one session.
        for (a, since) in v
            .agents
            .iter()
            .filter(|(a, _)| q.agent.is_none_or(|x| x == *a))
        {
            let _ = write!(
                sql,
                " OR (agent = {a} AND time_ns >= {})",
                (*since).min(i64::MAX as u64)
            );
        }
        sql.push(')');
    }
    (sql, args)
}

/// The latest `limit` events that match (the earliest, for `oldest`), oldest first.
pub(crate) fn events(conn: &duckdb::Connection, q: &Query) -> Result<Vec<Stored>, StoreError> {
    let (filter, args) = filter(q);
    let order = if q.oldest { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT seq, time_ns, agent, pid, tgid, ppid, uid, cgroup_id, comm, truncated, body, \
         host, run, text FROM events{filter} ORDER BY time_ns {order}, seq {order} LIMIT {}",
        q.limit.max(1)
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(duckdb::params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let body: String = r.get(10)?;
        let text: Option<String> = r.get(13)?;
        let Some(body) = super::schema::body_of(&body, text.as_deref()) else {
            continue;
        };
        out.push(Stored {
            host: r.get(11)?,
            run: r.get(12)?,
            event: Event {
                seq: r.get(0)?,
                time_ns: r.get::<_, i64>(1)?.max(0) as u64,
                agent: r.get(2)?,
                pid: r.get(3)?,
                tgid: r.get(4)?,
                ppid: r.get(5)?,
                uid: r.get(6)?,
                cgroup_id: r.get(7)?,
                comm: r.get(8)?,
                truncated: r.get(9)?,
                body,
            },
        });
    }
    if !q.oldest {
        out.reverse();
    }
    Ok(out)
}

/// How many events match, per agent, kind and span of `bucket_ns` (0: one span), in DuckDB.
pub(crate) fn counts(
    conn: &duckdb::Connection,
    q: &Query,
    bucket_ns: u64,
) -> Result<Vec<Count>, StoreError> {
    let (filter, args) = filter(q);
    let bucket = match bucket_ns.min(i64::MAX as u64) {
        0 => "0".to_string(),
        b => format!("(time_ns // {b}) * {b}"),
    };
    let sql = format!(
        "SELECT agent, kind, {bucket} AS b, count(*) FROM events{filter} GROUP BY agent, kind, b"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(duckdb::params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(Count {
            agent: r.get(0)?,
            kind: r.get(1)?,
            bucket_ns: r.get::<_, i64>(2)?.max(0) as u64,
            n: r.get::<_, i64>(3)?.max(0) as u64,
        });
    }
    Ok(out)
}

/// The latest `limit` events that match, looking back from `newest_ns` through windows widened
/// by what each one yielded: events are stored in time order, so DuckDB's zone maps skip every row group
/// outside the window, and "latest 1,000 of one agent" reads a sliver of a 100M-row table.
pub(crate) fn latest(
    conn: &duckdb::Connection,
    q: &Query,
    newest_ns: u64,
) -> Result<Vec<Stored>, StoreError> {
    if q.since_ns.is_some() || q.oldest || newest_ns == 0 {
        return events(conn, q);
    }
    let want = q.limit.max(1);
    let mut span: u64 = 1_000_000_000;
    for _ in 0..8 {
        let mut w = q.clone();
        w.since_ns = Some(newest_ns.saturating_sub(span));
        let got = events(conn, &w)?;
        if got.len() >= want {
            return Ok(got);
        }
        // Widen by what this window yielded (an agent's rate is roughly steady), with a margin,
        // and at least twice: a window just short of `limit` needs a little more, not ten times.
        let grow = (want as f64 / got.len().max(1) as f64 * 1.5).clamp(2.0, 100.0);
        span = (span as f64 * grow).min(u64::MAX as f64) as u64;
    }
    events(conn, q)
}

/// Entries of the hot tier a query looks at, beyond those already moved into DuckDB.
const HOT_SCAN: usize = 200_000;

/// Every tier a query reads.
pub(crate) struct Reader {
    pub(crate) warm: Mutex<duckdb::Connection>,
    /// Admits admin SQL (one read, by DuckDB's parser).
    pub(crate) gate: Mutex<super::gate::Gate>,
    pub(crate) limits: super::config::SqlLimits,
    pub(crate) hot: Option<hot::Reader>,
    pub(crate) cold: Option<Arc<Cold>>,
    pub(crate) stats: Arc<WriterStats>,
}

/// Keeps one copy of each event, orders by time, and keeps the newest `limit` (the oldest,
/// for `oldest`).
pub(crate) fn merge(mut all: Vec<Stored>, limit: usize, oldest: bool) -> Vec<Stored> {
    all.sort_by(|a, b| {
        (a.event.time_ns, &a.host, a.run, a.event.seq).cmp(&(
            b.event.time_ns,
            &b.host,
            b.run,
            b.event.seq,
        ))
    });
    all.dedup_by(|a, b| a.host == b.host && a.run == b.run && a.event.seq == b.event.seq);
    if oldest {
        all.truncate(limit.max(1));
    } else {
        let skip = all.len().saturating_sub(limit.max(1));
        all.drain(..skip);
    }
    all
}

impl Reader {
    /// Entries of the hot tier not yet in DuckDB.
    fn hot_rest(&self, conn: &duckdb::Connection) -> Result<Vec<Stored>, StoreError> {
        let Some(h) = &self.hot else {
            return Ok(Vec::new());
        };
        let mark = conn
            .query_row(
                "SELECT run, seq FROM ingest_marks WHERE stream = ?",
                [&h.key],
                |r| Ok((r.get::<_, u64>(0)?, r.get::<_, u64>(1)?)),
            )
            .ok();
        // Redis down: the warm and cold tiers still answer.
        Ok(h.above(mark, HOT_SCAN).unwrap_or_else(|e| {
            tracing::debug!("query: hot tier unavailable: {e}");
            Vec::new()
        }))
    }

    /// The latest `q.limit` events that match, across the tiers, oldest first.
    pub(crate) fn latest(&self, q: &Query) -> Result<Vec<Event>, StoreError> {
        let mut q = q.clone();
        q.limit = q.limit.min(self.limits.max_rows);
        let q = &q;
        let conn = self
            .warm
            .lock()
            .map_err(|_| StoreError::Refused("event store poisoned".into()))?;
        let newest = self
            .stats
            .max_time_ns
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut all = latest(&conn, q, newest)?;
        all.extend(
            self.hot_rest(&conn)?
                .into_iter()
                .filter(|s| q.accepts_stored(s)),
        );
        if let Some(cold) = &self.cold {
            // Cold holds what is older than the warm tier's oldest row: with enough answers it
            // is read only when the range asked for starts before that row (looked up only then).
            let reaches_back = || -> Result<bool, StoreError> {
                let Some(s) = q.since_ns else {
                    return Ok(false);
                };
                let oldest: Option<i64> =
                    conn.query_row("SELECT min(time_ns) FROM events", [], |r| r.get(0))?;
                Ok(oldest.is_none_or(|o| (s as i128) < o as i128))
            };
            if all.len() < q.limit.max(1) || reaches_back()? {
                all.extend(cold.scan(q)?);
            }
        }
        Ok(merge(all, q.limit, q.oldest)
            .into_iter()
            .map(|s| s.event)
            .collect())
    }

    /// How many events match, per agent, kind and span of `bucket_ns`, across the warm tier
    /// and what the hot tier holds beyond it. Parquet is not read: a summary is asked of a
    /// session page on each refresh, and a scan of the cold tier is not a refresh's cost.
    pub(crate) fn summary(&self, q: &Query, bucket_ns: u64) -> Result<Vec<Count>, StoreError> {
        let conn = self
            .warm
            .lock()
            .map_err(|_| StoreError::Refused("event store poisoned".into()))?;
        let mut all: std::collections::BTreeMap<(u64, String, u64), u64> =
            counts(&conn, q, bucket_ns)?
                .into_iter()
                .map(|c| ((c.agent, c.kind, c.bucket_ns), c.n))
                .collect();
        for s in self.hot_rest(&conn)?.iter().filter(|s| q.accepts_stored(s)) {
            let e = &s.event;
            let b = match bucket_ns {
                0 => 0,
                b => e.time_ns / b * b,
            };
            *all.entry((e.agent, e.body.kind().name().to_string(), b))
                .or_default() += 1;
        }
        Ok(all
            .into_iter()
            .map(|((agent, kind, bucket_ns), n)| Count {
                agent,
                kind,
                bucket_ns,
                n,
            })
            .collect())
    }

    /// One read-only statement; `all_events` names every tier (hot and cold copied in for the
    /// statement), `events` the warm tier alone.
    pub(crate) fn sql(
        &self,
        text: &str,
        limit: usize,
    ) -> Result<(Vec<String>, Vec<Vec<serde_json::Value>>), StoreError> {
        self.gate
            .lock()
            .map_err(|_| StoreError::Refused("sql gate poisoned".into()))?
            .admit(text)?;
        let conn = self
            .warm
            .lock()
            .map_err(|_| StoreError::Refused("event store poisoned".into()))?;
        if text.to_ascii_lowercase().contains("all_events") {
            self.stage_all(&conn)?;
        }
        // A statement past its time is interrupted (DuckDB stops it and returns an error).
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let handle = conn.interrupt_handle();
        let timeout = std::time::Duration::from_millis(self.limits.timeout_ms.max(1));
        let watchdog = std::thread::Builder::new()
            .name("store-sql-timeout".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(timeout)
                {
                    handle.interrupt();
                }
            })
            .map_err(|e| StoreError::Refused(format!("starting the sql watchdog: {e}")))?;
        let result = sql(&conn, text, limit.min(self.limits.max_rows));
        drop(done);
        let _ = watchdog.join();
        result.map_err(|e| match e {
            StoreError::Query(e) if e.to_string().contains("INTERRUPT") => {
                StoreError::Refused(format!(
                    "the statement ran past store.sql.timeout_ms ({} ms)",
                    timeout.as_millis()
                ))
            }
            e => e,
        })
    }

    /// `all_events`: warm, plus hot entries not yet moved, plus every cold part, with a `tier`
    /// column saying which answered.
    fn stage_all(&self, conn: &duckdb::Connection) -> Result<(), StoreError> {
        conn.execute_batch(
            "CREATE OR REPLACE TEMP TABLE tier_hot AS SELECT * FROM events LIMIT 0; \
             CREATE OR REPLACE TEMP TABLE tier_cold AS SELECT * FROM events LIMIT 0;",
        )?;
        let hot = self.hot_rest(conn)?;
        if !hot.is_empty() {
            let mut app = conn.appender("tier_hot")?;
            super::schema::append(
                &mut app,
                hot.iter().map(|s| (s.host.as_str(), s.run, &s.event)),
            )?;
            app.flush()?;
        }
        if let Some(cold) = &self.cold {
            let batches = cold.batches()?;
            let mut app = conn.appender("tier_cold")?;
            for b in batches {
                app.append_record_batch(b)?;
            }
            app.flush()?;
        }
        conn.execute_batch(&format!(
            "CREATE OR REPLACE TEMP VIEW all_events AS \
             SELECT {c}, 'warm' AS tier FROM events \
             UNION ALL SELECT {c}, 'hot' AS tier FROM tier_hot \
             UNION ALL SELECT {c}, 'cold' AS tier FROM tier_cold",
            c = super::schema::COLUMNS
        ))?;
        Ok(())
    }
}

fn json(v: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::TinyInt(i) => i.into(),
        Value::SmallInt(i) => i.into(),
        Value::Int(i) => i.into(),
        Value::BigInt(i) => i.into(),
        Value::UTinyInt(i) => i.into(),
        Value::USmallInt(i) => i.into(),
        Value::UInt(i) => i.into(),
        Value::UBigInt(i) => i.into(),
        Value::Float(f) => f.into(),
        Value::Double(f) => f.into(),
        Value::Text(s) => J::String(s),
        other => J::String(format!("{other:?}")),
    }
}

/// Runs one statement (admitted by `gate::Gate`) inside a transaction that is rolled back.
pub(crate) fn sql(
    conn: &duckdb::Connection,
    sql: &str,
    limit: usize,
) -> Result<(Vec<String>, Vec<Vec<serde_json::Value>>), StoreError> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    let result = (|| {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        let mut columns = Vec::new();
        while let Some(r) = rows.next()? {
            if columns.is_empty() {
                columns = r.as_ref().column_names();
            }
            let n = r.as_ref().column_count();
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(json(r.get::<_, Value>(i)?));
            }
            out.push(row);
            if out.len() >= limit {
                break;
            }
        }
        Ok::<_, duckdb::Error>((columns, out))
    })();
    let _ = conn.execute_batch("ROLLBACK");
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axiom_proto::wire::Body;

    fn ev(host: &str, run: u64, seq: u64, t: u64, text: &str) -> Stored {
        Stored {
            host: host.into(),
            run,
            event: crate::store::schema::sample_output(seq, t, 1, 1000, text),
        }
    }

    #[test]
    fn merging_tiers_keeps_each_event_once_in_time_order() {
        let all = vec![
            ev("h", 1, 2, 20, "b"),
            ev("h", 1, 1, 10, "a"),
            ev("h", 1, 2, 20, "b"),
            ev("g", 1, 2, 20, "other host"),
            ev("h", 2, 1, 30, "c"),
        ];
        let m = merge(all.clone(), 10, false);
        let keys: Vec<_> = m.iter().map(|s| s.key()).collect();
        assert_eq!(
            keys,
            [
                ("h".to_string(), 1, 1),
                ("g".to_string(), 1, 2),
                ("h".to_string(), 1, 2),
                ("h".to_string(), 2, 1)
            ]
        );
        // The newest two.
        let m = merge(all, 2, false);
        assert_eq!(
            m.iter().map(|s| s.event.time_ns).collect::<Vec<_>>(),
            [20, 30]
        );
    }

    /// An output's bytes are stored once (the `text` column), and every event reads back as
    /// it was appended, a binary write's empty text included.
    #[test]
    fn events_read_back_as_appended_with_the_text_stored_once() {
        let (dir, mut warm) = crate::store::Warm::scratch("roundtrip", 1, 256);
        let mut binary = ev("h", 1, 2, 20, "").event;
        if let Body::Output { captured, .. } = &mut binary.body {
            *captured = 40;
        }
        let mut exec = ev("h", 1, 3, 30, "").event;
        exec.body = Body::Exec {
            filename: "/bin/ls".into(),
            argv: vec!["ls".into(), "-l".into()],
            cwd: Some("/w".into()),
            old_pid: 0,
            stdin: None,
        };
        let sent = vec![
            ev("h", 1, 1, 10, "a \"quoted\" line\nwith \u{1b}[1m escapes é").event,
            binary,
            exec,
        ];
        let batch: Vec<_> = sent.iter().cloned().map(Arc::new).collect();
        warm.append(&batch).unwrap();
        let conn = warm.reader().unwrap();
        let body: String = conn
            .query_row("SELECT body FROM events WHERE seq = 1", [], |r| r.get(0))
            .unwrap();
        assert!(!body.contains("quoted"), "{body}");
        let got = events(
            &conn,
            &Query::from(EventQuery {
                limit: 10,
                ..Default::default()
            }),
        )
        .unwrap();
        let got: Vec<Event> = got.into_iter().map(|s| s.event).collect();
        assert_eq!(got, sent);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A session read forward a page at a time (the earliest after a cursor), and counted per
    /// kind and span of time without reading it: what the session page asks.
    #[test]
    fn a_session_is_paged_forward_and_counted_in_spans() {
        let (dir, mut warm) = crate::store::Warm::scratch("pages", 1, 256);
        let mut sent: Vec<Event> = (1..=10)
            .map(|i| ev("h", 1, i, i * 100, &format!("line {i}")).event)
            .collect();
        sent[4].body = Body::Exit {
            code: Some(0),
            signal: None,
        };
        let batch: Vec<_> = sent.iter().cloned().map(Arc::new).collect();
        warm.append(&batch).unwrap();
        let conn = warm.reader().unwrap();
        let page = |since: u64| {
            events(
                &conn,
                &Query::from(EventQuery {
                    since_ns: Some(since),
                    limit: 3,
                    oldest: true,
                    ..Default::default()
                }),
            )
            .unwrap()
            .into_iter()
            .map(|s| s.event.time_ns)
            .collect::<Vec<_>>()
        };
        assert_eq!(page(0), [100, 200, 300]);
        assert_eq!(page(301), [400, 500, 600]);
        assert_eq!(page(1000), [1000]);
        let mut c = counts(&conn, &Query::default(), 500).unwrap();
        c.sort_by_key(|c| (c.bucket_ns, c.kind.clone()));
        let got: Vec<(u64, &str, u64)> = c
            .iter()
            .map(|c| (c.bucket_ns, c.kind.as_str(), c.n))
            .collect();
        assert_eq!(
            got,
            [
                (0, "output", 4),
                (500, "exit", 1),
                (500, "output", 4),
                (1000, "output", 1)
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_rust_filter_matches_the_sql_one() {
        let e = ev("h", 1, 1, 10, "hello world");
        let q = |f: fn(&mut Query)| {
            let mut q = Query::from(EventQuery {
                limit: 10,
                ..Default::default()
            });
            f(&mut q);
            q.accepts_stored(&e)
        };
        fn visible(uid: u32, host: &str, agents: Vec<(u64, u64)>) -> Option<Visible> {
            Some(Visible {
                uid,
                host: host.into(),
                agents,
            })
        }
        assert!(q(|_| {}));
        assert!(q(|q| q.agent = Some(3)));
        assert!(!q(|q| q.agent = Some(4)));
        assert!(q(|q| q.text = Some("lo wo".into())));
        assert!(!q(|q| q.text = Some("bye".into())));
        assert!(q(|q| q.kinds = vec!["exec".into(), "output".into()]));
        assert!(!q(|q| q.kinds = vec!["exec".into()]));
        assert!(!q(|q| q.since_ns = Some(11)));
        assert!(q(|q| q.until_ns = Some(10)));
        assert!(q(|q| q.visible_to = visible(1000, "h", vec![])));
        assert!(!q(|q| q.visible_to = visible(1001, "h", vec![])));
        assert!(q(|q| q.visible_to = visible(1001, "h", vec![(3, 10)])));
        // Agent 3 of this caller started after this event: another agent that had its id.
        assert!(!q(|q| q.visible_to = visible(1001, "h", vec![(3, 11)])));
        // Another host's events are not this host's users'.
        assert!(!q(|q| q.visible_to = visible(1000, "other", vec![])));
    }
}
