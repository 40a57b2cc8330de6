//! `/etc/axiom/axiomd.toml`. Every key has a default that runs with nothing else installed;
//! unknown keys are errors, and every error names `file:line:column` and the reason.
//!
//! Each stage owns its section and checks it (`crate::kernel::config`, `crate::store::config`,
//! …); this file composes them, parses, applies `--set` and the environment, and names the file
//! in every error. Only `[daemon]` is the daemon's own.
use std::path::Path;

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
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub(crate) sensor: crate::kernel::config::SensorConfig,
    pub(crate) api: crate::api::config::ApiConfig,
    pub(crate) agents: crate::agents::config::AgentsConfig,
    pub(crate) daemon: DaemonConfig,
    pub(crate) dbus: crate::dbus::config::DbusConfig,
    pub(crate) rules: crate::rules::config::RulesConfig,
    pub(crate) store: crate::store::config::StoreConfig,
    pub(crate) confine: crate::confine::ConfineConfig,
    pub(crate) telemetry: crate::telemetry::TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DaemonConfig {
    /// Scheduling niceness of axiomd's threads (-20..=19). Below 0 so that, on a machine saturated
    /// by its agents, the reader still drains the rings (measured: at nice 0, 10,000 busy agents
    /// on 2 CPUs starve it and output records are lost).
    pub(crate) nice: i32,
    /// Run the ring reader thread at real-time priority (SCHED_RR 1) so it drains the rings even
    /// when agents saturate every CPU.
    pub(crate) realtime_reader: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            nice: -5,
            realtime_reader: true,
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
    /// Where the rules are read from.
    pub fn rule_paths(&self) -> &[std::path::PathBuf] {
        &self.rules.paths
    }

    /// The pin directory of the sensor's programs and maps.
    pub fn pins(&self) -> crate::kernel::Pins {
        crate::kernel::Pins {
            root: self.sensor.pin_dir.clone(),
        }
    }

    /// The daemon's niceness (set before its threads start).
    pub fn nice(&self) -> i32 {
        self.daemon.nice
    }

    /// (events per batch, writer threads) of the warm tier.
    pub fn store_batches(&self) -> (usize, usize) {
        (self.store.batch_events, self.store.writers)
    }

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

    /// Each section checks itself; the error names the file and the full key.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let invalid = |section: &str, (key, reason): (&str, String)| ConfigError::Invalid {
            path: path.into(),
            key: if key.is_empty() {
                section.to_string()
            } else {
                format!("{section}.{key}")
            },
            reason,
        };
        self.sensor.validate().map_err(|e| invalid("sensor", e))?;
        self.dbus.validate().map_err(|e| invalid("dbus", e))?;
        if !(-20..=19).contains(&self.daemon.nice) {
            return Err(invalid(
                "daemon",
                ("nice", format!("{} is outside -20..=19", self.daemon.nice)),
            ));
        }
        if !(1..=8).contains(&self.store.writers) {
            return Err(invalid(
                "store",
                (
                    "writers",
                    format!("{} is outside 1..=8", self.store.writers),
                ),
            ));
        }
        self.confine
            .validate()
            .map_err(|e| invalid("confine", ("", e.to_string())))?;
        self.telemetry
            .validate()
            .map_err(|e| invalid("telemetry", ("", e)))?;
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
        let e = Config::parse("[store]\nwriters = 0\n", "a.toml").unwrap_err();
        assert!(e.to_string().contains("store.writers"), "{e}");
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
        assert_eq!(c.store.batch_events, d.store.batch_events);
        assert_eq!(c.store.writers, d.store.writers);
        assert_eq!(c.confine.protected, d.confine.protected);
        assert_eq!(c.confine.hidden, d.confine.hidden);
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
