//! `/etc/axiom/axiomd.toml`. Every key has a default that runs with nothing else installed;
//! unknown keys are errors, and every error names `file:line:column` and the reason.
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/axiom/axiomd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {reason}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("--set {setting}: {reason}")]
    Setting { setting: String, reason: String },
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: String,
        key: &'static str,
        reason: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sensor: SensorConfig,
    pub api: ApiConfig,
    pub agents: AgentsConfig,
    pub daemon: DaemonConfig,
    pub dbus: DbusConfig,
    pub rules: RulesConfig,
    pub store: StoreConfig,
    pub confine: crate::confine::ConfineConfig,
    pub telemetry: crate::telemetry::TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Keep every event in the warm tier (DuckDB).
    pub enabled: bool,
    /// The DuckDB file.
    pub path: PathBuf,
    /// Output events that may wait for the writer; beyond, output is shed (counted as
    /// `store_shed_output`). Lifecycle, exec, file, network, violations and interventions are
    /// never shed.
    pub queue_events: usize,
    /// What waiting events may hold in memory, MiB: above 3/4 of it output chunks are
    /// coalesced (`store_coalesced_output`), at it output is shed (`store_shed_output`).
    pub memory_cap_mib: u64,
    /// Events per committed batch, and the longest a batch waits.
    pub batch_events: usize,
    pub flush_ms: u64,
    /// Redis Streams in front of the warm tier.
    pub hot: HotConfig,
    /// Parquet files (a directory or an S3 bucket) behind it.
    pub cold: ColdConfig,
    /// What one query may take.
    pub sql: SqlLimits,
}

/// Bounds on queries (`axiomctl query`, with or without `--sql`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlLimits {
    /// A statement still running after this is interrupted.
    pub timeout_ms: u64,
    /// Rows (or events) one answer holds at most, whatever `--limit` asks.
    pub max_rows: usize,
    /// DuckDB's memory for the whole database (writer and queries), MiB.
    pub memory_mib: u64,
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
    pub fn resolved(&self) -> StoreConfig {
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
pub struct HotConfig {
    /// Off: events go straight to DuckDB. On: to Redis, and a consumer group moves them into
    /// DuckDB.
    pub enabled: bool,
    /// `redis://host:port/db`, `rediss://…`, or `redis+unix:///path`.
    pub url: String,
    /// Streams are `<prefix>:{<host>}:events` (one per host; the braces keep Redis Cluster
    /// commands on one slot).
    pub key_prefix: String,
    /// Approximate entries a stream keeps (`XADD … MAXLEN ~`): Redis's memory bound.
    pub maxlen: u64,
    /// The consumer group that moves entries into DuckDB.
    pub group: String,
    /// Run the mover here (off: another worker moves this host's stream; queries still see
    /// what waits in Redis).
    pub mover: bool,
    /// Where events wait while Redis is unreachable (default: `spool/` beside store.path).
    pub spool_dir: Option<PathBuf>,
    /// Entries per pipeline and per move.
    pub batch_events: usize,
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
pub struct ColdConfig {
    /// Move events older than `after_secs` out of DuckDB into Parquet files.
    pub enabled: bool,
    /// `file:///dir` or `s3://bucket/prefix`; each host writes under `<url>/<host>/`
    /// (default: `cold/` beside store.path).
    pub url: Option<String>,
    /// object_store options for S3 (`aws_endpoint`, `aws_region`, `aws_allow_http`, …);
    /// credentials are best left to the environment (`AWS_ACCESS_KEY_ID`, …).
    pub options: std::collections::BTreeMap<String, String>,
    /// Warm-tier retention: events older than this go cold.
    pub after_secs: u64,
    /// One Parquet file per partition of this many seconds (more when events arrive late).
    pub partition_secs: u64,
    /// Cold-tier retention (0: kept for ever).
    pub keep_secs: u64,
    /// How often the exporter looks for work.
    pub interval_secs: u64,
    /// Where cold files fetched for a query are cached (default: `cold-cache/` beside
    /// store.path).
    pub cache_dir: Option<PathBuf>,
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
            batch_events: 65_536,
            flush_ms: 200,
            hot: HotConfig::default(),
            cold: ColdConfig::default(),
            sql: SqlLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rule files and directories of `*.toml`, in order; directories that do not exist are
    /// skipped. A rule id may be defined once.
    pub paths: Vec<PathBuf>,
    /// Compiled rule plugins, keyed by the module's SHA-256 (must be root's, 0700).
    pub plugin_cache: PathBuf,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            paths: vec!["/usr/share/axiom/rules".into(), "/etc/axiom/rules.d".into()],
            plugin_cache: "/var/cache/axiom/wasm".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbusConfig {
    /// `system` (the system bus; if it is not running axiomd goes on without D-Bus), `off`, or
    /// a D-Bus address (`unix:path=…`), which must then be reachable.
    pub bus: String,
    /// Well-known name axiomd owns on the bus.
    pub name: String,
}

impl Default for DbusConfig {
    fn default() -> Self {
        DbusConfig {
            bus: "system".into(),
            name: "org.axiom.Axiom1".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Scheduling niceness of axiomd's threads (-20..=19). Below 0 so that, on a machine saturated
    /// by its agents, the reader still drains the rings (measured: at nice 0, 10,000 busy agents
    /// on 2 CPUs starve it and output records are lost).
    pub nice: i32,
    /// Run the ring reader thread at real-time priority (SCHED_RR 1) so it drains the rings even
    /// when agents saturate every CPU.
    pub realtime_reader: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            nice: -5,
            realtime_reader: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// Directory for the cgroups of agents started by axiomd (`agent-<id>` below it). Default:
    /// `axiom` in the cgroup v2 mount, wherever it is (detected).
    pub cgroup_root: Option<PathBuf>,
    /// One state file per agent (name, command, owner, start, exit), so agents keep what they
    /// are across an axiomd restart.
    pub state_dir: PathBuf,
    /// Changes to the shipped agent profiles (`agents.toml`: how each kind is typed into);
    /// skipped when it does not exist.
    pub profiles: PathBuf,
    /// How long an ended agent stays listed (with its exit code) before it is forgotten.
    pub keep_exited_secs: u64,
    /// Running agents one user may have at once (root and the admin group: no bound). The
    /// kernel's tables of tracked cgroups and connect policies are shared by every user.
    pub max_per_user: usize,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            cgroup_root: None,
            state_dir: "/run/axiom/agents".into(),
            profiles: axiom_common::agent_profile::OVERRIDES.into(),
            keep_exited_secs: 3600,
            max_per_user: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorConfig {
    /// bpffs directory for pinned programs, maps and links (no dots: bpffs rejects them).
    pub pin_dir: PathBuf,
    /// Leave the programs attached and the maps pinned on a clean stop, so tracking never stops
    /// across restarts and upgrades. `false` detaches everything on stop.
    pub keep_sensors_on_exit: bool,
    /// Bytes captured from each output syscall (1..=8192).
    pub capture_bytes: u32,
    /// Ring for lifecycle, file and network records (power of two, ≥ 4096).
    pub events_ring_bytes: u32,
    /// Ring for captured output (power of two, ≥ 4096).
    pub output_ring_bytes: u32,
    /// Output records each CPU sends between two wakeups of axiomd; the rest wait for the
    /// `output_flush_ms` timer. Batching wakeups is what keeps capture cheap per write.
    pub output_wakeup_records: u32,
    /// Longest time captured output waits in the ring (1..=1000 ms).
    pub output_flush_ms: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Control socket (JSON lines; used by axiomctl).
    pub socket: PathBuf,
    /// Recent events kept in memory for clients that ask for a replay.
    pub replay_events: usize,
    /// Members of this group may watch and steer every agent, like root.
    pub admin_group: String,
    /// Open clients (socket connections and D-Bus event streams) at once, all users together.
    pub max_clients: usize,
    /// Open clients per user (root and the admin group count only toward `max_clients`).
    pub max_clients_per_user: usize,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            pin_dir: "/sys/fs/bpf/axiom".into(),
            keep_sensors_on_exit: true,
            capture_bytes: axiom_common::DEFAULT_CAPTURE as u32,
            events_ring_bytes: 4 << 20,
            output_ring_bytes: 16 << 20,
            output_wakeup_records: axiom_common::DEFAULT_OUTPUT_WAKEUP_RECORDS as u32,
            output_flush_ms: 10,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: axiom_common::wire::DEFAULT_SOCKET.into(),
            replay_events: 65_536,
            admin_group: "axiom".into(),
            max_clients: 512,
            max_clients_per_user: 32,
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

impl Config {
    /// Parses a config text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.into(),
                line,
                column,
                reason: e.message().to_string(),
            }
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Settings from the environment, for containers: `AXIOMD_STORE__HOT__ENABLED=true` is
    /// `--set store.hot.enabled=true` (`__` between levels, the rest lower-cased). They come
    /// before the command line's `--set`s, which therefore win.
    pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
        let mut out: Vec<String> = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("AXIOMD_")?;
                (!key.is_empty() && key.contains(|c: char| c.is_ascii_alphabetic()))
                    .then(|| format!("{}={v}", key.to_ascii_lowercase().replace("__", ".")))
            })
            .collect();
        out.sort();
        out
    }

    /// `path`'s settings with `key=value` overrides (a TOML value; a bare word is a string),
    /// e.g. `store.hot.enabled=true`, `store.cold.url=s3://bucket/axiom`.
    pub fn load_with(path: &Path, sets: &[String]) -> Result<Config, ConfigError> {
        let cfg = Config::load(path)?;
        if sets.is_empty() {
            return Ok(cfg);
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut table: toml::Table = toml::from_str(&text).unwrap_or_default();
        for set in sets {
            let bad = |reason: String| ConfigError::Setting {
                setting: set.clone(),
                reason,
            };
            let (key, value) = set
                .split_once('=')
                .ok_or_else(|| bad("expected key=value".into()))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_string()));
            let mut at = &mut table;
            let parts: Vec<&str> = key.trim().split('.').collect();
            let (last, dirs) = parts.split_last().ok_or_else(|| bad("empty key".into()))?;
            for d in dirs {
                at = at
                    .entry(d.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                    .as_table_mut()
                    .ok_or_else(|| bad(format!("{d} is not a table")))?;
            }
            at.insert(last.to_string(), value);
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Setting {
                setting: sets.join(" "),
                reason: e.message().to_string(),
            })?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// Loads `path`; a missing file at the default path means "all defaults".
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Config::parse(&t, &path.display().to_string()),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PATH) =>
            {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| ConfigError::Invalid {
            path: path.into(),
            key,
            reason,
        };
        let s = &self.sensor;
        if !(1..=axiom_common::MAX_CAPTURE as u32).contains(&s.capture_bytes) {
            return Err(invalid(
                "sensor.capture_bytes",
                format!(
                    "{} is outside 1..={}",
                    s.capture_bytes,
                    axiom_common::MAX_CAPTURE
                ),
            ));
        }
        for (key, v) in [
            ("sensor.events_ring_bytes", s.events_ring_bytes),
            ("sensor.output_ring_bytes", s.output_ring_bytes),
        ] {
            if v < 4096 || !v.is_power_of_two() {
                return Err(invalid(key, format!("{v} must be a power of two ≥ 4096")));
            }
        }
        if !(1..=1000).contains(&s.output_flush_ms) {
            return Err(invalid(
                "sensor.output_flush_ms",
                format!("{} is outside 1..=1000", s.output_flush_ms),
            ));
        }
        if !(1..=65536).contains(&s.output_wakeup_records) {
            return Err(invalid(
                "sensor.output_wakeup_records",
                format!("{} is outside 1..=65536", s.output_wakeup_records),
            ));
        }
        let bus = self.dbus.bus.as_str();
        if !matches!(bus, "system" | "off") && !bus.contains(':') {
            return Err(invalid(
                "dbus.bus",
                format!("{bus:?} is neither \"system\", \"off\" nor a D-Bus address (unix:path=…)"),
            ));
        }
        if zbus::names::WellKnownName::try_from(self.dbus.name.as_str()).is_err() {
            return Err(invalid(
                "dbus.name",
                format!("{:?} is not a valid D-Bus name", self.dbus.name),
            ));
        }
        if !(-20..=19).contains(&self.daemon.nice) {
            return Err(invalid(
                "daemon.nice",
                format!("{} is outside -20..=19", self.daemon.nice),
            ));
        }
        if s.pin_dir.to_string_lossy().contains('.') {
            return Err(invalid(
                "sensor.pin_dir",
                "bpffs rejects names containing a dot".into(),
            ));
        }
        if let Err(e) = self.confine.validate() {
            return Err(invalid("confine", e.to_string()));
        }
        if let Err(e) = self.telemetry.validate() {
            return Err(invalid("telemetry", e));
        }
        if !s.pin_dir.starts_with("/sys/fs/bpf") {
            return Err(invalid(
                "sensor.pin_dir",
                "must be below /sys/fs/bpf".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_its_line() {
        let e = Config::parse("[sensor]\ncapture_bytes = 10\nbogus = 1\n", "a.toml").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("a.toml:3:"), "{s}");
        assert!(s.contains("bogus"), "{s}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let e = Config::parse("[sensor]\ncapture_bytes = 100000\n", "a.toml").unwrap_err();
        assert!(e.to_string().contains("sensor.capture_bytes"));
        let e = Config::parse("[sensor]\noutput_ring_bytes = 5000\n", "a.toml").unwrap_err();
        assert!(e.to_string().contains("power of two"));
        let e = Config::parse("[sensor]\npin_dir = \"/sys/fs/bpf/a.b\"\n", "a.toml").unwrap_err();
        assert!(e.to_string().contains("dot"));
    }

    #[test]
    fn shipped_config_parses_and_matches_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/axiomd.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let c = Config::parse(&text, path).unwrap();
        let d = Config::default();
        assert_eq!(c.sensor.pin_dir, d.sensor.pin_dir);
        assert_eq!(c.sensor.capture_bytes, d.sensor.capture_bytes);
        assert_eq!(c.sensor.output_ring_bytes, d.sensor.output_ring_bytes);
        assert_eq!(
            c.sensor.output_wakeup_records,
            d.sensor.output_wakeup_records
        );
        assert_eq!(c.api.socket, d.api.socket);
        assert_eq!(c.confine.protected, d.confine.protected);
        assert_eq!(c.confine.default_profile, d.confine.default_profile);
    }

    #[test]
    fn the_environment_sets_keys_and_the_command_line_wins() {
        let env = [
            ("AXIOMD_STORE__HOT__ENABLED", "true"),
            ("AXIOMD_SENSOR__CAPTURE_BYTES", "1024"),
            ("AXIOMD_RULES__PLUGIN_CACHE", "/srv/wasm"),
            ("AXIOM_SOCKET", "/elsewhere"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let mut sets = Config::env_overrides(env);
        assert_eq!(
            sets,
            [
                "rules.plugin_cache=/srv/wasm",
                "sensor.capture_bytes=1024",
                "store.hot.enabled=true"
            ]
        );
        sets.push("sensor.capture_bytes=2048".into());
        let c = Config::load_with(Path::new("/dev/null"), &sets).unwrap();
        assert!(c.store.hot.enabled);
        assert_eq!(c.sensor.capture_bytes, 2048);
        assert_eq!(c.rules.plugin_cache, Path::new("/srv/wasm"));
        // A mistake in the environment is as precise as one in the file.
        let bad = Config::env_overrides([("AXIOMD_SENSOR__BOGUS".into(), "1".into())]);
        let e = Config::load_with(Path::new("/dev/null"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sensor.bogus=1") && e.contains("bogus"), "{e}");
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("", "a.toml").unwrap();
        assert_eq!(c.sensor.capture_bytes, 4096);
        assert!(c.sensor.keep_sensors_on_exit);
    }
}
