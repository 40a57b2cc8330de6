//! A plugin rule's module. With the `plugins` feature it is compiled into a wasmtime sandbox and
//! called on what the rule's prefilter lets through; without it (a rule-file check that must
//! not build wasmtime) the module is only checked to be there, and every other field of the rule
//! is checked as usual.
use std::path::{Path, PathBuf};
#[cfg(feature = "plugins")]
use std::{collections::HashMap, sync::Mutex};

#[cfg(feature = "plugins")]
use crate::Scope;

/// A plugin call's limits as the rule file sets them; unset: the sandbox's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PluginLimits {
    pub fuel: Option<u64>,
    pub memory_mib: Option<u64>,
    pub timeout_ms: Option<u64>,
}

#[cfg(feature = "plugins")]
impl From<PluginLimits> for axiom_sandbox::Limits {
    fn from(p: PluginLimits) -> Self {
        let mut l = axiom_sandbox::Limits::PLUGIN;
        if p.fuel.is_some() {
            l.fuel = p.fuel;
        }
        if let Some(m) = p.memory_mib {
            l.memory_bytes = (m as usize) << 20;
        }
        if let Some(t) = p.timeout_ms {
            l.deadline = Some(std::time::Duration::from_millis(t));
        }
        l
    }
}

#[cfg(not(feature = "plugins"))]
/// A plugin rule's module, checked to be a readable file but not compiled.
#[derive(Debug)]
pub struct RulePlugin {
    path: PathBuf,
}

#[cfg(not(feature = "plugins"))]
impl RulePlugin {
    pub fn load(path: PathBuf, _limits: PluginLimits) -> Result<Self, String> {
        match std::fs::File::open(&path) {
            Ok(_) => Ok(RulePlugin { path }),
            Err(e) => Err(format!("plugin {}: {e}", path.display())),
        }
    }

    /// The module's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(feature = "plugins")]
/// A rule's plugin, and per agent how many of its calls in a row were stopped: one agent that
/// feeds it what makes it run away switches it off for itself, not for every agent.
#[derive(Debug)]
pub struct RulePlugin {
    pub plugin: axiom_sandbox::Plugin,
    strikes: Mutex<HashMap<u64, u32>>,
}

#[cfg(feature = "plugins")]
/// Agents whose strikes are remembered per plugin; past it the count starts over (an agent
/// that cycles ids to clear its strikes only pays more calls, each within the limits).
const STRIKES_KEPT: usize = 4096;

#[cfg(feature = "plugins")]
/// Calls in a row stopped by a limit before a plugin is switched off (until the rules reload):
/// a plugin that always runs away would otherwise cost its whole budget on every event.
pub const PLUGIN_STRIKES: u32 = 3;

#[cfg(feature = "plugins")]
/// What a rule's follow-up made of a prefilter hit.
#[derive(Debug, PartialEq)]
pub enum FollowUp {
    /// A finding, with the plugin's detail.
    Finding(String),
    /// The plugin found nothing.
    Pass,
    /// The call was stopped; `disabled`: that was the last strike.
    Fault {
        fault: axiom_sandbox::Fault,
        disabled: bool,
    },
    /// Switched off after `PLUGIN_STRIKES` stopped calls.
    Disabled,
}

#[cfg(feature = "plugins")]
/// What a plugin is asked about (sent to it as one JSON object).
#[derive(Debug, serde::Serialize)]
pub struct Subject<'a> {
    pub rule: &'a str,
    pub scope: Scope,
    pub text: &'a str,
    pub agent: u64,
    pub pid: u32,
    pub comm: &'a str,
}

#[cfg(feature = "plugins")]
impl RulePlugin {
    /// Compiles (or takes from the module cache) the plugin at `path`.
    pub fn load(path: PathBuf, limits: PluginLimits) -> Result<Self, String> {
        let sb = axiom_sandbox::shared().map_err(|e| e.to_string())?;
        let plugin = axiom_sandbox::Plugin::load(sb, path, limits.into())
            .map_err(|e| format!("plugin {e}"))?;
        Ok(RulePlugin {
            plugin,
            strikes: Mutex::new(HashMap::new()),
        })
    }

    /// The module's file.
    pub fn path(&self) -> &Path {
        &self.plugin.path
    }

    /// Calls the plugin unless it is switched off for the subject's agent; counts strikes.
    pub fn follow_up(&self, subject: &Subject) -> FollowUp {
        let strikes = |f: &mut dyn FnMut(&mut HashMap<u64, u32>) -> u32| {
            self.strikes
                .lock()
                .map(|mut m| f(&mut m))
                .unwrap_or(PLUGIN_STRIKES)
        };
        if strikes(&mut |m| m.get(&subject.agent).copied().unwrap_or(0)) >= PLUGIN_STRIKES {
            return FollowUp::Disabled;
        }
        let input = serde_json::to_vec(subject).unwrap_or_default();
        match self.plugin.check(&input) {
            Ok(v) => {
                strikes(&mut |m| m.remove(&subject.agent).unwrap_or(0));
                match v {
                    Some(d) => FollowUp::Finding(d),
                    None => FollowUp::Pass,
                }
            }
            Err(fault) => {
                let n = strikes(&mut |m| {
                    if m.len() >= STRIKES_KEPT && !m.contains_key(&subject.agent) {
                        m.clear();
                    }
                    let n = m.entry(subject.agent).or_default();
                    *n += 1;
                    *n
                });
                FollowUp::Fault {
                    fault,
                    disabled: n >= PLUGIN_STRIKES,
                }
            }
        }
    }
}
