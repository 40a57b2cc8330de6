//! `[store]`: the warm tier, and the hot and cold tiers around it, and what one query may take.
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StoreConfig {
    /// Keep every event in the warm tier (DuckDB).
    pub(crate) enabled: bool,
    /// The DuckDB file.
    pub(crate) path: PathBuf,
    /// Output events that may wait for the writer; beyond, output is shed (counted as
    /// `store_shed_output`). Lifecycle, exec, file, network, violations and interventions are
    /// never shed.
    pub(crate) queue_events: usize,
    /// What waiting events may hold in memory, MiB: above 3/4 of it output chunks are
    /// coalesced (`store_coalesced_output`), at it output is shed (`store_shed_output`).
    pub(crate) memory_cap_mib: u64,
    /// Events per committed batch, and the longest a batch waits. At or above one DuckDB row
    /// group (122,880 rows) it is rounded down to whole row groups (`warm::batch_cap`): those are
    /// written straight to the file, a remainder through the WAL and again at each checkpoint.
    pub(crate) batch_events: usize,
    pub(crate) flush_ms: u64,
    /// Threads that append and commit batches side by side, each on a connection of its own
    /// (1..=8; `warm::pipeline`). Idle unless events come faster than one writer stores them.
    pub(crate) writers: usize,
    /// Redis Streams in front of the warm tier.
    pub(crate) hot: HotConfig,
    /// Parquet files (a directory or an S3 bucket) behind it.
    pub(crate) cold: ColdConfig,
    /// What one query may take.
    pub(crate) sql: SqlLimits,
}

/// Bounds on queries (`axiomctl query`, with or without `--sql`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SqlLimits {
    /// A statement still running after this is interrupted.
    pub(crate) timeout_ms: u64,
    /// Rows (or events) one answer holds at most, whatever `--limit` asks.
    pub(crate) max_rows: usize,
    /// DuckDB's memory for the whole database (writer and queries), MiB.
    pub(crate) memory_mib: u64,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            timeout_ms: 10_000,
            max_rows: 100_000,
            memory_mib: 1024,
        }
    }
}

impl StoreConfig {
    /// The paths left unset, beside the DuckDB file.
    pub(crate) fn resolved(&self) -> StoreConfig {
        let mut c = self.clone();
        let dir = self
            .path
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        c.hot.spool_dir.get_or_insert_with(|| dir.join("spool"));
        c.cold
            .url
            .get_or_insert_with(|| format!("file://{}", dir.join("cold").display()));
        c.cold
            .cache_dir
            .get_or_insert_with(|| dir.join("cold-cache"));
        c
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HotConfig {
    /// Off: events go straight to DuckDB. On: to Redis, and a consumer group moves them into
    /// DuckDB.
    pub(crate) enabled: bool,
    /// `redis://host:port/db`, `rediss://…`, or `redis+unix:///path`.
    pub(crate) url: String,
    /// Streams are `<prefix>:{<host>}:events` (one per host; the braces keep Redis Cluster
    /// commands on one slot).
    pub(crate) key_prefix: String,
    /// Approximate entries a stream keeps (`XADD … MAXLEN ~`): Redis's memory bound.
    pub(crate) maxlen: u64,
    /// The consumer group that moves entries into DuckDB.
    pub(crate) group: String,
    /// Run the mover here (off: another worker moves this host's stream; queries still see
    /// what waits in Redis).
    pub(crate) mover: bool,
    /// Where events wait while Redis is unreachable (default: `spool/` beside store.path).
    pub(crate) spool_dir: Option<PathBuf>,
    /// Entries per pipeline and per move.
    pub(crate) batch_events: usize,
}

impl Default for HotConfig {
    fn default() -> Self {
        HotConfig {
            enabled: false,
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "axiom".into(),
            maxlen: 1_000_000,
            group: "axiom-warm".into(),
            mover: true,
            spool_dir: None,
            batch_events: 8192,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ColdConfig {
    /// Move events older than `after_secs` out of DuckDB into Parquet files.
    pub(crate) enabled: bool,
    /// `file:///dir` or `s3://bucket/prefix`; each host writes under `<url>/<host>/`
    /// (default: `cold/` beside store.path).
    pub(crate) url: Option<String>,
    /// object_store options for S3 (`aws_endpoint`, `aws_region`, `aws_allow_http`, …);
    /// credentials are best left to the environment (`AWS_ACCESS_KEY_ID`, …).
    pub(crate) options: std::collections::BTreeMap<String, String>,
    /// Warm-tier retention: events older than this go cold.
    pub(crate) after_secs: u64,
    /// One Parquet file per partition of this many seconds (more when events arrive late).
    pub(crate) partition_secs: u64,
    /// Cold-tier retention (0: kept for ever).
    pub(crate) keep_secs: u64,
    /// How often the exporter looks for work.
    pub(crate) interval_secs: u64,
    /// Where cold files fetched for a query are cached (default: `cold-cache/` beside
    /// store.path).
    pub(crate) cache_dir: Option<PathBuf>,
}

impl Default for ColdConfig {
    fn default() -> Self {
        ColdConfig {
            enabled: true,
            url: None,
            options: Default::default(),
            after_secs: 7 * 86_400,
            partition_secs: 3600,
            keep_secs: 0,
            interval_secs: 60,
            cache_dir: None,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            path: "/var/lib/axiom/events.duckdb".into(),
            queue_events: 262_144,
            memory_cap_mib: 256,
            batch_events: 122_880,
            flush_ms: 200,
            writers: 2,
            hot: HotConfig::default(),
            cold: ColdConfig::default(),
            sql: SqlLimits::default(),
        }
    }
}
