//! Claude Code's global configuration under a profile that confines the filesystem.
//!
//! Claude Code keeps most of its state in `~/.claude` (granted writable by the kind's
//! `writable` in `config/agents.toml`), but its global configuration (onboarding, trusted
//! projects, the account) is `~/.claude.json`, in the home itself, rewritten through a temporary
//! file renamed over it and a lock directory beside it. Landlock cannot allow that without
//! making the whole home writable, and with the home read-only Claude Code loses every change to
//! it. Claude Code's own setting for its config directory, `CLAUDE_CONFIG_DIR`, set to
//! `~/.claude` (where all its other state already is), moves that one file to
//! `~/.claude/.claude.json`, where it can be written as Claude Code writes it.
//!
//! The two copies are kept in step: at the start the newer of the two is copied over the other
//! (the user's own, unconfined sessions keep using `~/.claude.json`), and at the end of the run
//! the launcher copies a newer `~/.claude/.claude.json` back, so that a project trusted or an
//! account refreshed in a confined session is there in the next unconfined one. A user who set
//! `CLAUDE_CONFIG_DIR` is left alone.
//!
//! What in that file runs commands or lets them run in the owner's later, unconfined sessions
//! (MCP servers, user-wide and per project; a project's trust and its `.mcp.json` servers
//! enabled) is never carried back: those keys keep the home file's values (`COMMANDS`).
use std::path::{Path, PathBuf};

use axiom_proto::confine::FsRules;
use serde_json::Value;

/// Claude Code's setting for its config directory.
pub const ENV: &str = "CLAUDE_CONFIG_DIR";

/// The two places of Claude Code's global configuration for one run.
pub struct View {
    /// `~/.claude`: the config directory the agent is given.
    pub dir: PathBuf,
    /// `~/.claude.json`: where it lives outside Axiom.
    home_file: PathBuf,
    /// `~/.claude/.claude.json`: where the confined agent keeps it.
    kept: PathBuf,
}

/// The view for an agent of `kind` under `fs` with home `home`: only for Claude Code, only when
/// `~/.claude` is writable to it and the filesystem is otherwise confined, and only when the
/// user has not chosen a config directory.
pub fn view(kind: &str, fs: Option<&FsRules>, home: &Path) -> Option<View> {
    let fs = fs?;
    if kind != "claude" || std::env::var_os(ENV).is_some() {
        return None;
    }
    let dir = home.join(".claude");
    let granted = fs
        .writable()
        .iter()
        .any(|w| Path::new(w) == dir || dir.starts_with(w.as_str()));
    granted.then(|| View {
        kept: dir.join(".claude.json"),
        home_file: home.join(".claude.json"),
        dir,
    })
}

impl View {
    /// Before the agent starts (as its user): the newer copy over the older one.
    pub fn seed(&self) {
        if newer(&self.home_file, &self.kept) {
            let _ = std::fs::create_dir_all(&self.dir);
            let _ = copy_atomic(&self.home_file, &self.kept);
        }
    }

    /// After the agent ended (as its user): what it changed, back where the user's own sessions
    /// read it.
    pub fn keep_back(&self) {
        if !newer(&self.kept, &self.home_file) {
            return;
        }
        let read = |p: &Path| {
            std::fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        };
        // Not JSON: nothing the user's sessions could read, nothing carried back.
        let Some(new) = read(&self.kept) else { return };
        let old = read(&self.home_file).unwrap_or(Value::Object(Default::default()));
        let merged = without_new_commands(new, &old);
        if let Ok(text) = serde_json::to_vec_pretty(&merged) {
            let _ = write_atomic(&text, &self.home_file);
        }
    }
}

/// Keys of `.claude.json` that start programs in a later session: user-wide MCP servers, and per
/// project its MCP servers, its trust (which lets the project's own `.mcp.json` and settings
/// act) and which of its `.mcp.json` servers are enabled.
const COMMANDS: &[&str] = &["mcpServers"];
const PROJECT_COMMANDS: &[&str] = &[
    "mcpServers",
    "hasTrustDialogAccepted",
    "enabledMcpjsonServers",
    "disabledMcpjsonServers",
    "enableAllProjectMcpServers",
];

/// `new` with every command-bearing key as it is in `old` (absent where `old` has none).
fn without_new_commands(mut new: Value, old: &Value) -> Value {
    let restore = |n: &mut serde_json::Map<String, Value>, o: Option<&Value>, keys: &[&str]| {
        for k in keys {
            match o.and_then(|o| o.get(*k)) {
                Some(v) => {
                    n.insert((*k).to_string(), v.clone());
                }
                None => {
                    n.remove(*k);
                }
            }
        }
    };
    let Some(n) = new.as_object_mut() else {
        return old.clone();
    };
    restore(n, Some(old), COMMANDS);
    if let Some(projects) = n.get_mut("projects").and_then(Value::as_object_mut) {
        for (path, p) in projects.iter_mut() {
            if let Some(p) = p.as_object_mut() {
                let o = old.get("projects").and_then(|o| o.get(path));
                restore(p, o, PROJECT_COMMANDS);
            }
        }
    }
    new
}

/// `a` exists and `b` is absent or older.
fn newer(a: &Path, b: &Path) -> bool {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (m(a), m(b)) {
        (Some(_), None) => true,
        (Some(ta), Some(tb)) => ta > tb,
        _ => false,
    }
}

/// `from` copied over `to` through a temporary file beside `to` renamed over it (as Claude Code
/// writes it: a reader never sees half of it), keeping `to`'s mode when it exists, else 0600.
fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    write_atomic(&std::fs::read(from)?, to)
}

/// `text` written over `to` the same way.
fn write_atomic(text: &[u8], to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mode = std::fs::metadata(to).map_or(0o600, |m| m.permissions().mode() & 0o777);
    let tmp = to.with_extension(format!("json.axiom-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, to).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newer_copy_wins_both_ways_and_a_chosen_dir_is_left_alone() {
        let home = std::env::temp_dir().join(format!("claude-view-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).expect("home");
        let fs = FsRules {
            state: vec![format!("{}/.claude/", home.display())],
            ..Default::default()
        };
        assert!(view("codex", Some(&fs), &home).is_none());
        assert!(view("claude", None, &home).is_none());
        assert!(view("claude", Some(&FsRules::default()), &home).is_none());
        let v = view("claude", Some(&fs), &home).expect("a view");
        std::fs::write(home.join(".claude.json"), "{\"a\":1}").expect("write");
        v.seed();
        let kept = home.join(".claude/.claude.json");
        assert_eq!(std::fs::read_to_string(&kept).expect("kept"), "{\"a\":1}");
        // The agent changed it: back in the home at the end.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&kept, "{\"a\":2}").expect("write");
        v.keep_back();
        let home_json = |h: &Path| -> Value {
            serde_json::from_str(&std::fs::read_to_string(h.join(".claude.json")).expect("home"))
                .expect("json")
        };
        assert_eq!(home_json(&home), serde_json::json!({"a": 2}));
        // An MCP server or a project's trust added by the confined agent stays behind.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(
            &kept,
            r#"{"a":3,"mcpServers":{"x":{"command":"sh"}},"projects":{"/p":{"hasTrustDialogAccepted":true,"mcpServers":{"y":{"command":"sh"}},"history":[1]}}}"#,
        )
        .expect("write");
        v.keep_back();
        assert_eq!(
            home_json(&home),
            serde_json::json!({"a": 3, "projects": {"/p": {"history": [1]}}})
        );
        let _ = std::fs::remove_dir_all(&home);
    }
}
