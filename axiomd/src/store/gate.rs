//! What admin SQL (`axiomctl query --sql`) may run, and what it can reach when it runs.
//!
//! Prefix matching on the text let `EXPLAIN ANALYZE COPY … TO '/path'` write any file as root,
//! and `read_text('/etc/shadow')` read one. Two locks, both DuckDB's own:
//! - [`lock_down`] turns the database instance's reach off (`enable_external_access = false`:
//!   no file, URL or environment read or written by SQL; no extension installed or loaded),
//!   caps its memory, and locks the configuration (`SET` fails from then on).
//! - [`Gate`] parses and binds the statement with DuckDB's parser on a private in-memory
//!   database of the same schema, and admits exactly one statement of type SELECT (which covers
//!   `WITH`, `FROM`, `DESCRIBE`, `SHOW`, `SUMMARIZE`), or `EXPLAIN [ANALYZE]` of one.
use std::ffi::{CStr, CString};

use duckdb::ffi;

use super::StoreError;

/// Locks a DuckDB instance down: no external access, no extensions, `memory_mib` of memory, and
/// no configuration change after this. Settings are the instance's: every connection to it is
/// bound (the writer never needs any of them: Parquet is written by Rust, not by `COPY`).
pub(crate) fn lock_down(conn: &duckdb::Connection, memory_mib: u64) -> Result<(), duckdb::Error> {
    conn.execute_batch(&lock_down_sql(memory_mib))
}

/// The statements of `lock_down` (the gate's own database runs them too).
fn lock_down_sql(memory_mib: u64) -> String {
    format!(
        "SET autoinstall_known_extensions = false; \
         SET autoload_known_extensions = false; \
         SET allow_community_extensions = false; \
         SET enable_external_access = false; \
         SET memory_limit = '{}MiB'; \
         SET lock_configuration = true;",
        memory_mib.max(64)
    )
}

/// DuckDB's parser and binder on a private in-memory database with the events schema.
pub(crate) struct Gate {
    db: ffi::duckdb_database,
    conn: ffi::duckdb_connection,
}

// SAFETY: a DuckDB connection may be used from any thread, one at a time; the gate is used
// behind a mutex (`&mut self` on every call that touches it).
unsafe impl Send for Gate {}

fn text(p: *const std::os::raw::c_char, or: &str) -> String {
    if p.is_null() {
        or.into()
    } else {
        // SAFETY: DuckDB returns NUL-terminated strings that live until the object is destroyed.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

fn refused(why: impl Into<String>) -> StoreError {
    StoreError::Refused(why.into())
}

impl Gate {
    pub(crate) fn new() -> Result<Gate, StoreError> {
        let mut db: ffi::duckdb_database = std::ptr::null_mut();
        let mut conn: ffi::duckdb_connection = std::ptr::null_mut();
        // SAFETY: out-pointers to locals; a null path opens an in-memory database.
        unsafe {
            if ffi::duckdb_open(std::ptr::null(), &mut db) != ffi::DuckDBSuccess {
                return Err(refused("sql gate: opening an in-memory database"));
            }
            if ffi::duckdb_connect(db, &mut conn) != ffi::DuckDBSuccess {
                ffi::duckdb_close(&mut db);
                return Err(refused("sql gate: connecting"));
            }
        }
        let mut g = Gate { db, conn };
        g.exec(super::schema::CREATE)?;
        g.exec(&format!(
            "CREATE VIEW all_events AS SELECT {}, 'warm' AS tier FROM events",
            super::schema::COLUMNS
        ))?;
        g.exec(&lock_down_sql(64))?;
        Ok(g)
    }

    fn exec(&mut self, sql: &str) -> Result<(), StoreError> {
        let c = CString::new(sql).map_err(|_| refused("a NUL byte in the statement"))?;
        // SAFETY: `result` is zeroed as DuckDB asks and destroyed on every path.
        unsafe {
            let mut result: ffi::duckdb_result = std::mem::zeroed();
            let ok = ffi::duckdb_query(self.conn, c.as_ptr(), &mut result) == ffi::DuckDBSuccess;
            let err = text(ffi::duckdb_result_error(&mut result), "sql gate: failed");
            ffi::duckdb_destroy_result(&mut result);
            if ok { Ok(()) } else { Err(refused(err)) }
        }
    }

    /// DuckDB's statement type of `sql`, which must be exactly one statement that binds.
    fn statement_type(&mut self, sql: &str) -> Result<ffi::duckdb_statement_type, StoreError> {
        let c = CString::new(sql).map_err(|_| refused("a NUL byte in the statement"))?;
        // SAFETY: out-pointers to locals; each object DuckDB allocates is destroyed before
        // returning, on every path.
        unsafe {
            let mut ex: ffi::duckdb_extracted_statements = std::ptr::null_mut();
            let n = ffi::duckdb_extract_statements(self.conn, c.as_ptr(), &mut ex);
            if n != 1 {
                let err = if n == 0 {
                    text(ffi::duckdb_extract_statements_error(ex), "no statement")
                } else {
                    format!("{n} statements; one is allowed")
                };
                ffi::duckdb_destroy_extracted(&mut ex);
                return Err(refused(err));
            }
            let mut p: ffi::duckdb_prepared_statement = std::ptr::null_mut();
            let ok = ffi::duckdb_prepare_extracted_statement(self.conn, ex, 0, &mut p)
                == ffi::DuckDBSuccess;
            let result = if ok {
                Ok(ffi::duckdb_prepared_statement_type(p))
            } else {
                Err(refused(text(ffi::duckdb_prepare_error(p), "does not bind")))
            };
            ffi::duckdb_destroy_prepare(&mut p);
            ffi::duckdb_destroy_extracted(&mut ex);
            result
        }
    }

    /// Admits one read: a SELECT, or an `EXPLAIN [ANALYZE]` of one.
    pub(crate) fn admit(&mut self, sql: &str) -> Result<(), StoreError> {
        match self.statement_type(sql)? {
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT => Ok(()),
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPLAIN => {
                let inner = strip_word(sql, "explain")
                    .ok_or_else(|| refused("EXPLAIN must open the statement"))?;
                let inner = strip_word(inner, "analyze").unwrap_or(inner);
                match self.statement_type(inner)? {
                    ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT => Ok(()),
                    t => Err(refused(format!(
                        "only a read may be explained; this is a {} statement",
                        kind(t)
                    ))),
                }
            }
            t => Err(refused(format!(
                "only one read (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); \
                 DuckDB parses this as a {} statement",
                kind(t)
            ))),
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // SAFETY: both were opened in `new` and are closed once.
        unsafe {
            ffi::duckdb_disconnect(&mut self.conn);
            ffi::duckdb_close(&mut self.db);
        }
    }
}

/// `sql` without its first word if that word is `word` (any case).
fn strip_word<'a>(sql: &'a str, word: &str) -> Option<&'a str> {
    let s = sql.trim_start();
    let head = s.get(..word.len())?;
    let rest = &s[word.len()..];
    (head.eq_ignore_ascii_case(word) && rest.starts_with(|c: char| c.is_whitespace()))
        .then_some(rest)
}

fn kind(t: ffi::duckdb_statement_type) -> &'static str {
    match t {
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_INSERT => "INSERT",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE => "UPDATE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DELETE => "DELETE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE => "CREATE",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY => "COPY",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SET
        | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VARIABLE_SET => "SET",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PRAGMA => "PRAGMA",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ATTACH => "ATTACH",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DROP => "DROP",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPORT => "EXPORT",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOAD => "LOAD",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CALL => "CALL",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_TRANSACTION => "transaction",
        ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPLAIN => "EXPLAIN",
        _ => "non-read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_reads_only_by_duckdbs_parser() {
        let mut g = Gate::new().unwrap();
        for ok in [
            "SELECT count(*) FROM events",
            "  with x as (select 1) select * from x;",
            "FROM events LIMIT 3",
            "DESCRIBE events",
            "SUMMARIZE events",
            "SELECT kind, count(*) FROM all_events GROUP BY kind",
            "EXPLAIN SELECT * FROM events",
            "explain analyze select 1",
        ] {
            g.admit(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "DROP TABLE events",
            "select 1; drop table events",
            "COPY events TO '/tmp/x'",
            "EXPLAIN ANALYZE COPY events TO '/tmp/x'",
            "EXPLAIN ANALYZE DELETE FROM events",
            "/* c */ EXPLAIN ANALYZE COPY events TO '/tmp/x'",
            "SET enable_external_access = true",
            "PRAGMA enable_profiling",
            "ATTACH '/tmp/x.db'",
            "INSTALL httpfs",
            "LOAD httpfs",
            "CALL pragma_version()",
            "EXPORT DATABASE '/tmp/x'",
            "SELECT * FROM read_text('/etc/shadow')",
            "SELECT * FROM read_blob('/proc/self/environ')",
            "CHECKPOINT",
            "BEGIN",
        ] {
            assert!(g.admit(bad).is_err(), "admitted: {bad}");
        }
    }

    #[test]
    fn a_locked_instance_reads_no_file_and_takes_no_setting() {
        let dir = std::env::temp_dir().join(format!("axiom-gate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let probe = dir.join("probe.txt");
        std::fs::write(&probe, "secret").unwrap();
        let conn = duckdb::Connection::open(dir.join("db.duckdb")).unwrap();
        conn.execute_batch(super::super::schema::CREATE).unwrap();
        lock_down(&conn, 256).unwrap();
        let read = format!("SELECT * FROM read_text('{}')", probe.display());
        assert!(
            conn.prepare(&read)
                .and_then(|mut s| s.query([]).map(|_| ()))
                .is_err()
        );
        let copy = format!("COPY events TO '{}'", dir.join("out.csv").display());
        assert!(conn.execute_batch(&copy).is_err());
        assert!(!dir.join("out.csv").exists());
        assert!(
            conn.execute_batch("SET enable_external_access = true")
                .is_err()
        );
        assert!(conn.execute_batch("SET memory_limit = '100GB'").is_err());
        // The database itself still works.
        conn.execute_batch("SELECT count(*) FROM events").unwrap();
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
