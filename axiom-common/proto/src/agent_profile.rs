//! Agent profiles (`config/agents.toml`): which real agent CLI a command starts, how to type a
//! message into it so that its model reads it, and which files it keeps for itself.
//!
//! The shipped table is compiled in; an overrides file (`/etc/axiom/agents.toml`) may add kinds
//! or change fields of a shipped one. Errors name the file and line.
use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::Deserialize;

/// The shipped table.
pub const BUILTIN: &str = include_str!("../../../config/agents.toml");
/// Where a host changes it.
pub const OVERRIDES: &str = "/etc/axiom/agents.toml";
/// The kind of anything not recognised.
pub const GENERIC: &str = "generic";

/// When a TUI gets a message as a bracketed paste.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Paste {
    /// When the program asked its terminal for bracketed paste (`CSI ?2004h`).
    Auto,
    Always,
    Never,
}

/// How one kind of agent is recognised and typed into.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub commands: Vec<String>,
    pub interrupt: String,
    pub submit: String,
    pub gap_ms: u64,
    pub paste: Paste,
    pub idle_ms: u64,
    pub attempts: u32,
    pub confirm_ms: u64,
    pub state: Vec<String>,
    /// What a profile that confines the filesystem still lets this kind write besides its
    /// workspace: its own state where it lives (`~` is the agent user's home; a trailing `/` a
    /// directory, made when absent). Protected paths stay protected beneath these.
    #[serde(default)]
    pub writable: Vec<String>,
    #[serde(default)]
    pub hooks: bool,
}

impl Profile {
    pub fn gap(&self) -> Duration {
        Duration::from_millis(self.gap_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    pub fn confirm(&self) -> Duration {
        Duration::from_millis(self.confirm_ms)
    }
    /// The state paths with `~` made `home`.
    pub fn state_paths(&self, home: Option<&str>) -> Vec<String> {
        self.state
            .iter()
            .filter_map(|s| match (s.strip_prefix("~/"), home) {
                (Some(rest), Some(h)) => Some(format!("{}/{rest}", h.trim_end_matches('/'))),
                (Some(_), None) => None,
                (None, _) => Some(s.clone()),
            })
            .collect()
    }
}

/// An agent profile file's error: `file:line: reason`, or it could not be read.
pub type ProfileError = crate::file_error::FileError;

/// Every kind, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profiles {
    kinds: BTreeMap<String, Profile>,
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ProfileError> {
    text.parse::<toml::Table>().map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        ProfileError::at(origin, text, offset, e.message().to_string())
    })
}

/// The line a kind's table starts at, for errors about it.
fn line_of_kind(text: &str, kind: &str) -> usize {
    let header = format!("[{kind}]");
    text.lines()
        .position(|l| l.trim() == header)
        .map_or(1, |i| i + 1)
}

impl Profiles {
    /// The shipped table alone.
    pub fn builtin() -> Profiles {
        // The shipped file is tested to parse (`the_shipped_table_parses`).
        Profiles::parse(BUILTIN, "agents.toml (built in)", None).unwrap_or(Profiles {
            kinds: BTreeMap::new(),
        })
    }

    /// The shipped table with the overrides file's changes, if that file exists.
    pub fn load(overrides: &Path) -> Result<Profiles, ProfileError> {
        let text = match std::fs::read_to_string(overrides) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Profiles::builtin()),
            Err(source) => {
                return Err(ProfileError::Io {
                    path: overrides.display().to_string(),
                    source,
                });
            }
        };
        let origin = overrides.display().to_string();
        Profiles::parse(BUILTIN, "agents.toml (built in)", Some((&text, &origin)))
    }

    /// Parses `base`, each kind's fields overridden by the same kind's table in `over`.
    pub fn parse(
        base: &str,
        base_origin: &str,
        over: Option<(&str, &str)>,
    ) -> Result<Profiles, ProfileError> {
        let mut table = parse_table(base, base_origin)?;
        let mut origin_of: BTreeMap<String, (String, String)> = table
            .keys()
            .map(|k| (k.clone(), (base.to_string(), base_origin.to_string())))
            .collect();
        if let Some((text, origin)) = over {
            for (kind, v) in parse_table(text, origin)? {
                let toml::Value::Table(fields) = v else {
                    return Err(ProfileError::At {
                        origin: origin.into(),
                        line: 1,
                        reason: format!("{kind}: a kind is a table ([{kind}])"),
                    });
                };
                match table.get_mut(&kind) {
                    Some(toml::Value::Table(t)) => t.extend(fields),
                    _ => {
                        table.insert(kind.clone(), toml::Value::Table(fields));
                    }
                }
                origin_of.insert(kind, (text.to_string(), origin.to_string()));
            }
        }
        let mut kinds = BTreeMap::new();
        for (kind, v) in table {
            let p: Profile = v.try_into().map_err(|e: toml::de::Error| {
                let (text, origin) = origin_of.get(&kind).cloned().unwrap_or_default();
                ProfileError::At {
                    line: line_of_kind(&text, &kind),
                    origin,
                    reason: format!("[{kind}]: {}", e.message()),
                }
            })?;
            kinds.insert(kind, p);
        }
        Ok(Profiles { kinds })
    }

    pub fn get(&self, kind: &str) -> Option<&Profile> {
        self.kinds.get(kind)
    }

    /// The profile of `kind`, else the generic one (a table without one: the built-in's).
    pub fn of(&self, kind: Option<&str>) -> Profile {
        kind.and_then(|k| self.kinds.get(k))
            .or_else(|| self.kinds.get(GENERIC))
            .cloned()
            .unwrap_or_else(|| Profile {
                commands: Vec::new(),
                interrupt: String::new(),
                submit: "\r".into(),
                gap_ms: 300,
                paste: Paste::Auto,
                idle_ms: 1500,
                attempts: 3,
                confirm_ms: 3000,
                state: Vec::new(),
                writable: Vec::new(),
                hooks: false,
            })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// The kind of an agent started with `command`: `chosen` when it names a known kind (the
    /// launcher's `--agent-kind`), else from the program's name.
    pub fn kind(&self, command: &[String], chosen: Option<&str>) -> String {
        match chosen {
            Some(k) if self.get(k).is_some() => k.to_string(),
            _ => self.recognise(command).to_string(),
        }
    }

    /// The kind `command` starts, from its program's name (`generic` when none claims it).
    pub fn recognise(&self, command: &[String]) -> &str {
        let Some(program) = command.first() else {
            return GENERIC;
        };
        let name = program.rsplit('/').next().unwrap_or(program);
        self.kinds
            .iter()
            .find(|(_, p)| p.commands.iter().any(|c| c == name))
            .map_or(GENERIC, |(k, _)| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_shipped_table_parses() {
        let p = Profiles::parse(BUILTIN, "agents.toml", None).expect("shipped table");
        for k in ["claude", "codex", "gemini", "aider", "opencode", "generic"] {
            assert!(p.get(k).is_some(), "{k}");
        }
        assert!(p.of(Some("claude")).hooks);
        assert_eq!(p.of(Some("claude")).interrupt, "\u{1b}");
        assert_eq!(p.of(Some("nope")), p.of(None));
    }

    #[test]
    fn kinds_are_recognised_by_program_name() {
        let p = Profiles::builtin();
        assert_eq!(
            p.recognise(&v(&["/opt/x/bin/claude", "-p", "hi"])),
            "claude"
        );
        assert_eq!(p.recognise(&v(&["codex"])), "codex");
        assert_eq!(p.recognise(&v(&["bash", "-c", "claude"])), "generic");
        assert_eq!(p.recognise(&[]), "generic");
    }

    #[test]
    fn overrides_change_fields_and_add_kinds_and_errors_name_the_line() {
        let over = "[codex]\ngap_ms = 500\n\n[mine]\ncommands = [\"mine\"]\ninterrupt = \"\"\nsubmit = \"\\r\"\ngap_ms = 1\npaste = \"never\"\nidle_ms = 1\nattempts = 1\nconfirm_ms = 1\nstate = []\n";
        let p = Profiles::parse(BUILTIN, "builtin", Some((over, "/etc/axiom/agents.toml")))
            .expect("overrides");
        assert_eq!(p.of(Some("codex")).gap_ms, 500);
        assert_eq!(p.of(Some("codex")).interrupt, "\u{1b}");
        assert_eq!(p.recognise(&v(&["mine"])), "mine");
        let bad = "# x\n\n[claude]\ngap_ms = \"slow\"\n";
        let e = Profiles::parse(BUILTIN, "builtin", Some((bad, "/etc/axiom/agents.toml")))
            .expect_err("a string gap");
        assert!(
            e.to_string()
                .starts_with("/etc/axiom/agents.toml:3: [claude]"),
            "{e}"
        );
        let e = Profiles::parse(BUILTIN, "builtin", Some(("[x\n", "o.toml"))).expect_err("syntax");
        assert!(e.to_string().starts_with("o.toml:1:"), "{e}");
    }
}
