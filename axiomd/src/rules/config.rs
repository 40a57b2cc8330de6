//! `[rules]`: where rule files and compiled plugins live.
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RulesConfig {
    /// Rule files and directories of `*.toml`, in order; directories that do not exist are
    /// skipped. A rule id may be defined once.
    pub(crate) paths: Vec<PathBuf>,
    /// Compiled rule plugins, keyed by the module's SHA-256 (must be root's, 0700).
    pub(crate) plugin_cache: PathBuf,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            paths: vec!["/usr/share/axiom/rules".into(), "/etc/axiom/rules.d".into()],
            plugin_cache: "/var/cache/axiom/wasm".into(),
        }
    }
}
