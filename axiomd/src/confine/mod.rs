//! Confinement profiles: what an agent started with `axiomctl run --profile P` may touch.
//!
//! A profile (configured under `[confine.profiles.<name>]`) is resolved here, for one launch —
//! its workspace and its owner's home — into an `axiom_proto::confine::Confinement`. The
//! launcher applies the filesystem part in the child before exec (Landlock, read-only mounts
//! over protected paths); axiomd applies the limits to the agent's cgroup (`limits`) and the
//! network allowlist in the kernel (`net`).
pub(crate) mod limits;
pub(crate) mod net;

use std::collections::BTreeMap;

use axiom_proto::confine::{Confinement, FsRules, Limits, NetAllow, NetRules};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfineError {
    #[error("no confinement profile {0:?} (configured: {1})")]
    NoSuchProfile(String, String),
    #[error("profile {profile}: {reason}")]
    Invalid { profile: String, reason: String },
    #[error("confine.unix_sockets: {0}")]
    UnixSockets(String),
}

/// `[confine]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ConfineConfig {
    /// The profile of `axiomctl run` without `--profile`.
    pub(crate) default_profile: String,
    /// `best-effort`: apply what this kernel can enforce and say exactly what it cannot;
    /// `strict`: refuse to start the agent instead.
    pub(crate) mode: Mode,
    /// Never writable by a confined agent, even inside a writable directory: relative paths are
    /// inside the workspace, `~` is the owner's home. A trailing `/` names a directory, made
    /// (empty) when absent so that it can be held read-only: an agent must not create it.
    pub(crate) protected: Vec<String>,
    /// Not even readable by a confined agent (credentials): an empty directory or file is
    /// mounted over each in the agent's own view. `~` is the owner's home.
    pub(crate) hidden: Vec<String>,
    /// Path sockets (absolute, exactly as clients name them) that an agent whose profile sets
    /// `unix_sockets = "deny"` may still connect or send to, besides axiomd's own socket. At
    /// most three; the kernel compares names before any lookup, so a name here must be one the
    /// agent cannot make lead elsewhere (a root-owned directory).
    pub(crate) unix_sockets: Vec<String>,
    /// Profiles beyond the built-in ones, or changes to them: a profile named like a built-in
    /// one changes only the keys it sets.
    pub(crate) profiles: BTreeMap<String, ProfileSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    BestEffort,
    Strict,
}

/// `[confine.profiles.<name>]`: every key optional (unset: the built-in profile's value, or the
/// defaults of `Profile`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileSpec {
    pub(crate) filesystem: Option<bool>,
    pub(crate) read: Option<Vec<String>>,
    pub(crate) write: Option<Vec<String>>,
    pub(crate) network: Option<Network>,
    pub(crate) unix_sockets: Option<UnixSockets>,
    pub(crate) pids: Option<u64>,
    pub(crate) memory_mib: Option<u64>,
    pub(crate) cpu_percent: Option<u32>,
}

/// Path Unix sockets (`connect`/`sendto` to a name in the filesystem): `allow` any, or `deny`
/// all but axiomd's and `confine.unix_sockets`. A path socket has no address a network rule can
/// name and leads to its listener with the caller's own rights: the user's D-Bus session bus
/// starts unconfined units (`systemd-run --user`), docker.sock is root, an ssh-agent signs. The
/// kernel cannot resolve the name when it decides, so there is no "sockets the agent made".
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum UnixSockets {
    Allow,
    Deny,
}

/// A profile as it applies.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    /// Restrict the filesystem at all (`false`: the `full` profile).
    pub(crate) filesystem: bool,
    /// Readable (and executable) beneath these.
    pub(crate) read: Vec<String>,
    /// Writable beneath these (`{workspace}` is the agent's workspace, `~` its owner's home).
    pub(crate) write: Vec<String>,
    /// `allow` (everything), `deny` (nothing), or a list of `addr[/prefix][:port]`.
    pub(crate) network: Network,
    /// Unset: `deny` when the profile restricts the filesystem or the network, else `allow`.
    pub(crate) unix_sockets: Option<UnixSockets>,
    /// Processes and threads at once.
    pub(crate) pids: Option<u64>,
    pub(crate) memory_mib: Option<u64>,
    /// CPU time, percent of one CPU.
    pub(crate) cpu_percent: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Network {
    Word(String),
    List(Vec<String>),
}

/// Character devices every interactive program opens (its terminal among them).
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/pts",
    "/dev/ptmx",
    "/dev/shm",
];

impl Default for Profile {
    fn default() -> Self {
        Profile {
            filesystem: true,
            read: vec!["/".into()],
            write: Vec::new(),
            network: Network::Word("allow".into()),
            unix_sockets: None,
            pids: None,
            memory_mib: None,
            cpu_percent: None,
        }
    }
}

/// The built-in profiles.
fn builtin(name: &str) -> Option<Profile> {
    match name {
        "read-only" => Some(Profile {
            network: Network::Word("deny".into()),
            pids: Some(1024),
            ..Profile::default()
        }),
        "workspace-write" => Some(Profile {
            write: vec![
                "{workspace}".into(),
                "/tmp".into(),
                "/var/tmp".into(),
                "~/.cache".into(),
            ],
            pids: Some(4096),
            ..Profile::default()
        }),
        "full" => Some(Profile {
            filesystem: false,
            ..Profile::default()
        }),
        _ => None,
    }
}

const BUILTIN: &[&str] = &["read-only", "workspace-write", "full"];

impl Default for ConfineConfig {
    fn default() -> Self {
        ConfineConfig {
            default_profile: "workspace-write".into(),
            mode: Mode::BestEffort,
            protected: [
                // What git runs or reads as its own configuration: the hooks, the config, and
                // the files that point git elsewhere (`commondir` with a config of the agent's
                // choosing ran a command at the owner's next `git status`); a gitfile `.git`,
                // and submodules' and worktrees' own hooks and configs, are found at launch.
                ".git",
                ".git/hooks/",
                ".git/config",
                ".git/commondir",
                ".git/modules",
                ".git/worktrees",
                // Agents' settings that run commands in the owner's later sessions (hooks).
                ".claude/settings.json",
                ".claude/settings.local.json",
                ".gemini/settings.json",
                "~/.claude/settings.json",
                "~/.claude/settings.local.json",
                "~/.gemini/settings.json",
                // What the agents' own state holds that runs commands in the owner's later,
                // unconfined sessions (their state directories are writable to their agents):
                // Codex's config (notify, MCP servers, hooks) and exec-policy rules, a project's
                // Codex layer, Claude Code's hook scripts and installed plugins (their hooks),
                // Gemini CLI's extensions (MCP servers, hooks);
                ".codex",
                "~/.codex/config.toml",
                "~/.codex/hooks.json",
                "~/.codex/rules/",
                "~/.claude/hooks/",
                "~/.claude/plugins/cache/",
                "~/.claude/plugins/marketplaces/",
                "~/.gemini/extensions/",
                // opencode's project layer (plugins, tools, commands) and config, the packages
                // it loads plugins and providers from; aider's config (its lint and test
                // commands run at the owner's next session).
                ".opencode",
                "opencode.json",
                "opencode.jsonc",
                "~/.cache/opencode/node_modules/",
                ".aider.conf.yml",
                "~/.aider.conf.yml",
                // pre-commit's environments: code run at the owner's next commit.
                "~/.cache/pre-commit/",
                "~/.ssh",
                "~/.gnupg",
                "~/.bashrc",
                "~/.bash_profile",
                "~/.bash_login",
                "~/.profile",
                "~/.zshrc",
                "~/.zshenv",
                "~/.zprofile",
                "~/.config/fish",
                "~/.aws",
                "~/.azure",
                "~/.config/gcloud",
                "~/.kube",
                "~/.docker",
                "~/.netrc",
                "~/.git-credentials",
                "~/.npmrc",
                "~/.pypirc",
                "~/.cargo/credentials.toml",
            ]
            .map(String::from)
            .to_vec(),
            hidden: [
                "~/.ssh",
                "~/.gnupg",
                "~/.aws",
                "~/.azure",
                "~/.config/gcloud",
                "~/.kube",
                "~/.docker/config.json",
                "~/.netrc",
                "~/.git-credentials",
                "~/.config/gh",
                "~/.npmrc",
                "~/.pypirc",
                "~/.cargo/credentials.toml",
                "~/.password-store",
                "~/.local/share/keyrings",
                "~/.vault-token",
            ]
            .map(String::from)
            .to_vec(),
            // The name service cache: asked first by every user or host lookup (a root-owned
            // daemon that answers lookups only).
            unix_sockets: ["/run/nscd/socket", "/var/run/nscd/socket"]
                .map(String::from)
                .to_vec(),
            profiles: BTreeMap::new(),
        }
    }
}

/// Where the launch happens: what `{workspace}` and `~` mean.
pub(crate) struct Site<'a> {
    pub(crate) workspace: &'a str,
    pub(crate) home: Option<&'a str>,
}

impl ConfineConfig {
    /// Every profile, resolved against a placeholder site: a configuration error is reported
    /// when the file is loaded, not when an agent starts.
    pub(crate) fn validate(&self) -> Result<(), ConfineError> {
        let site = Site {
            workspace: "/workspace",
            home: Some("/home/user"),
        };
        for name in self.names() {
            self.resolve(Some(&name), &site)?;
        }
        // axiomd's own socket takes one of the kernel's entries.
        let room = axiom_common::UNIX_ALLOW_ENTRIES as usize - 1;
        if self.unix_sockets.len() > room {
            return Err(ConfineError::UnixSockets(format!(
                "{} paths, at most {room}",
                self.unix_sockets.len()
            )));
        }
        for p in &self.unix_sockets {
            if !p.starts_with('/') || p.len() >= axiom_common::UNIX_PATH_MAX || p.contains('\0') {
                return Err(ConfineError::UnixSockets(format!(
                    "{p:?}: an absolute socket name of at most {} bytes",
                    axiom_common::UNIX_PATH_MAX - 1
                )));
            }
        }
        self.resolve(None, &site).map(drop)
    }

    /// Built-in and configured profile names.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = BUILTIN.iter().map(|s| s.to_string()).collect();
        n.extend(
            self.profiles
                .keys()
                .filter(|k| !BUILTIN.contains(&k.as_str()))
                .cloned(),
        );
        n
    }

    /// The profile `name`: the built-in one with the configured changes, or a configured one.
    pub(crate) fn profile(&self, name: &str) -> Option<Profile> {
        let spec = self.profiles.get(name);
        let mut p = match (builtin(name), spec) {
            (None, None) => return None,
            (b, _) => b.unwrap_or_default(),
        };
        if let Some(s) = spec.cloned() {
            p.filesystem = s.filesystem.unwrap_or(p.filesystem);
            p.read = s.read.unwrap_or(p.read);
            p.write = s.write.unwrap_or(p.write);
            p.network = s.network.unwrap_or(p.network);
            p.unix_sockets = s.unix_sockets.or(p.unix_sockets);
            p.pids = s.pids.or(p.pids);
            p.memory_mib = s.memory_mib.or(p.memory_mib);
            p.cpu_percent = s.cpu_percent.or(p.cpu_percent);
        }
        Some(p)
    }

    /// The profile `name` (or the default) for one launch.
    pub(crate) fn resolve(
        &self,
        name: Option<&str>,
        site: &Site,
    ) -> Result<Confinement, ConfineError> {
        let name = name.unwrap_or(&self.default_profile);
        let p = self
            .profile(name)
            .ok_or_else(|| ConfineError::NoSuchProfile(name.into(), self.names().join(", ")))?;
        let invalid = |reason: String| ConfineError::Invalid {
            profile: name.into(),
            reason,
        };
        let expand = |raw: &str, relative_to_workspace: bool| {
            expand(raw, site, relative_to_workspace).map_err(invalid)
        };
        let fs = if p.filesystem {
            let mut write = Vec::new();
            for w in &p.write {
                write.extend(expand(w, false)?);
            }
            write.extend(DEVICES.iter().map(|d| d.to_string()));
            let mut read = Vec::new();
            for r in &p.read {
                read.extend(expand(r, false)?);
            }
            let mut protect = Vec::new();
            for r in &self.protected {
                // A trailing `/` (a directory) survives expansion.
                let dir = r.len() > 1 && r.ends_with('/');
                protect.extend(
                    expand(r.trim_end_matches('/'), true)?
                        .map(|p| if dir { format!("{p}/") } else { p }),
                );
            }
            let mut hide = Vec::new();
            for r in &self.hidden {
                hide.extend(expand(r, false)?);
            }
            Some(FsRules {
                read,
                write,
                protect,
                hide,
                state: Vec::new(),
            })
        } else {
            None
        };
        let mut net = match &p.network {
            Network::Word(w) if w == "allow" => NetRules {
                allow_all: true,
                allow: Vec::new(),
                unix_any: true,
            },
            Network::Word(w) if w == "deny" => NetRules::default(),
            Network::Word(w) => {
                return Err(invalid(format!(
                    "network = {w:?}: expected \"allow\", \"deny\" or a list of addr[/prefix][:port]"
                )));
            }
            Network::List(l) => NetRules {
                allow_all: false,
                allow: l
                    .iter()
                    .map(|s| NetAllow::parse(s).map_err(|e| invalid(format!("network: {e}"))))
                    .collect::<Result<_, _>>()?,
                unix_any: false,
            },
        };
        net.unix_any = match p.unix_sockets {
            Some(u) => u == UnixSockets::Allow,
            None => !p.filesystem && net.allow_all,
        };
        if p.cpu_percent == Some(0) || p.pids == Some(0) || p.memory_mib == Some(0) {
            return Err(invalid("limits must be above 0".into()));
        }
        Ok(Confinement {
            profile: name.into(),
            strict: self.mode == Mode::Strict,
            fs,
            net,
            limits: Limits {
                pids: p.pids,
                memory_bytes: p.memory_mib.map(|m| m << 20),
                cpu_percent: p.cpu_percent,
            },
        })
    }
}

/// `raw` with `{workspace}` and `~` made the site's: an absolute path without `..`, or none (a
/// path under a home the owner does not have). A relative path is inside the workspace when
/// `relative_to_workspace`, else refused.
fn expand(raw: &str, site: &Site, relative_to_workspace: bool) -> Result<Option<String>, String> {
    let s = raw.replace("{workspace}", site.workspace);
    let s = if s == "~" || s.starts_with("~/") {
        match site.home {
            Some(h) => format!("{h}{}", &s[1..]),
            // No home: a path under it protects or grants nothing.
            None => return Ok(None),
        }
    } else {
        s
    };
    let s = if s.starts_with('/') {
        s
    } else if relative_to_workspace {
        format!("{}/{s}", site.workspace.trim_end_matches('/'))
    } else {
        return Err(format!("{raw:?} is not an absolute path"));
    };
    if s.split('/').any(|c| c == "..") {
        return Err(format!("{raw:?} contains \"..\""));
    }
    Ok(Some(s))
}

/// An agent kind's own state (`config/agents.toml`, `writable`), granted under a profile that
/// confines the filesystem: what the agent keeps for itself is written where it lives, the rest
/// of the home stays read-only, protected and hidden paths stay so beneath it (their mounts
/// are over the grant). Nothing is granted under `full` (everything is writable already).
/// A trailing `/` (a directory the launcher makes) survives. A path that is not in the owner's
/// home or the workspace is refused: a kind's table cannot open the system to its agents.
pub(crate) fn grant_state(
    c: &mut Confinement,
    kind: &str,
    writable: &[String],
    site: &Site,
) -> Result<(), ConfineError> {
    let profile = c.profile.clone();
    let Some(fs) = c.fs.as_mut() else {
        return Ok(());
    };
    let invalid = |reason: String| ConfineError::Invalid {
        profile: profile.clone(),
        reason: format!("agent kind {kind}: writable: {reason}"),
    };
    for w in writable {
        let dir = w.len() > 1 && w.ends_with('/');
        let Some(p) = expand(w.trim_end_matches('/'), site, true).map_err(invalid)? else {
            continue;
        };
        let inside = |root: &str| {
            let root = root.trim_end_matches('/');
            !root.is_empty() && (p == root || p.starts_with(&format!("{root}/")))
        };
        if p == site.home.unwrap_or_default()
            || !(site.home.is_some_and(inside) || inside(site.workspace))
        {
            return Err(invalid(format!(
                "{w:?} is not beneath the agent user's home or the workspace"
            )));
        }
        fs.state.push(if dir { format!("{p}/") } else { p });
    }
    Ok(())
}

/// The home directory of `uid` (from the user database), for `~` in paths.
pub(crate) fn home_of(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir.display().to_string())
        .filter(|h| h != "/" && !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site<'static> {
        Site {
            workspace: "/work/p",
            home: Some("/home/u"),
        }
    }

    #[test]
    fn shipped_profiles_resolve() {
        let c = ConfineConfig::default();
        c.validate().unwrap();
        let ww = c.resolve(None, &site()).unwrap();
        assert_eq!(ww.profile, "workspace-write");
        let fs = ww.fs.unwrap();
        assert!(fs.write.contains(&"/work/p".to_string()));
        assert!(fs.write.contains(&"/home/u/.cache".to_string()));
        assert!(fs.protect.contains(&"/work/p/.git/hooks/".to_string()));
        assert!(fs.protect.contains(&"/work/p/.git/commondir".to_string()));
        assert!(fs.protect.contains(&"/home/u/.ssh".to_string()));
        assert!(fs.hide.contains(&"/home/u/.aws".to_string()));
        assert!(ww.net.allow_all);
        let ro = c.resolve(Some("read-only"), &site()).unwrap();
        let fs = ro.fs.unwrap();
        assert!(!fs.write.contains(&"/work/p".to_string()));
        assert!(!ro.net.allow_all && ro.net.allow.is_empty());
        assert!(c.resolve(Some("full"), &site()).unwrap().fs.is_none());
    }

    /// A kind's own state is granted where it lives under a confining profile, in the home or
    /// the workspace only, and nothing under `full` (everything is writable there already).
    #[test]
    fn an_agent_kinds_state_is_granted_in_its_home_only() {
        let c = ConfineConfig::default();
        let kinds = axiom_proto::agent_profile::Profiles::builtin();
        let mut ww = c.resolve(None, &site()).unwrap();
        let claude = kinds.of(Some("claude")).writable;
        grant_state(&mut ww, "claude", &claude, &site()).unwrap();
        let fs = ww.fs.as_ref().unwrap();
        assert!(fs.state.contains(&"/home/u/.claude/".to_string()), "{fs:?}");
        assert!(fs.writable().contains(&"/home/u/.claude".to_string()));
        assert!(!fs.write.iter().any(|w| w == "/home/u"));
        for bad in ["/etc/", "~", "~/../v/", "/home/u2/.x/"] {
            let e = grant_state(&mut ww.clone(), "x", &[bad.to_string()], &site());
            assert!(e.is_err(), "{bad} granted");
        }
        let mut full = c.resolve(Some("full"), &site()).unwrap();
        grant_state(&mut full, "claude", &claude, &site()).unwrap();
        assert!(full.fs.is_none());
    }

    /// Path Unix sockets follow the profile: denied where the filesystem or the network is
    /// restricted, allowed under `full`, and a profile's own word wins either way.
    #[test]
    fn path_sockets_are_denied_where_the_profile_confines() {
        let c: ConfineConfig = toml::from_str(
            "[profiles.full]\nnetwork = \"deny\"\n[profiles.open]\nunix_sockets = \"allow\"\n",
        )
        .unwrap();
        let unix_any = |p: &str| c.resolve(Some(p), &site()).unwrap().net.unix_any;
        assert!(!unix_any("workspace-write") && !unix_any("read-only"));
        assert!(!unix_any("full"), "full with network deny");
        assert!(unix_any("open"));
        assert!(
            ConfineConfig::default()
                .resolve(Some("full"), &site())
                .unwrap()
                .net
                .unix_any
        );
        let ww = c.resolve(Some("workspace-write"), &site()).unwrap();
        assert!(ww.net.allow_all && ww.net.confines());
        for bad in [
            "unix_sockets = [\"/a\", \"/b\", \"/c\", \"/d\"]",
            "unix_sockets = [\"run/x.sock\"]",
        ] {
            let c: ConfineConfig = toml::from_str(bad).unwrap();
            assert!(
                matches!(c.validate(), Err(ConfineError::UnixSockets(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_configured_profile_changes_only_the_keys_it_sets() {
        let c: ConfineConfig = toml::from_str(
            "[profiles.workspace-write]\npids = 40\n[profiles.ci]\nwrite = [\"{workspace}\"]\nnetwork = [\"10.0.0.0/8:443\"]\n",
        )
        .unwrap();
        let ww = c.resolve(Some("workspace-write"), &site()).unwrap();
        assert_eq!(ww.limits.pids, Some(40));
        assert!(ww.fs.unwrap().write.contains(&"/work/p".to_string()));
        let ci = c.resolve(Some("ci"), &site()).unwrap();
        assert_eq!(ci.net.allow.len(), 1);
        assert!(c.names().contains(&"ci".to_string()));
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        let mut c = ConfineConfig::default();
        assert!(matches!(
            c.resolve(Some("nope"), &site()),
            Err(ConfineError::NoSuchProfile(..))
        ));
        c.profiles.insert(
            "bad".into(),
            ProfileSpec {
                write: Some(vec!["relative/dir".into()]),
                ..Default::default()
            },
        );
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("bad") && e.contains("not an absolute path"),
            "{e}"
        );
        c.profiles.insert(
            "bad".into(),
            ProfileSpec {
                network: Some(Network::List(vec!["example.com:443".into()])),
                ..Default::default()
            },
        );
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("not an IP address"), "{e}");
    }
}
