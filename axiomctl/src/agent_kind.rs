//! Which real agent a command runs, and what `axiomctl run` changes so that Axiom sees all of
//! its work.
//!
//! Interactive Codex starts a detached, shared `codex app-server` (under `$CODEX_HOME`) that
//! calls the model, runs the commands and writes the files; it outlives the TUI and the next
//! session reuses it, so work would happen in a process started outside this agent. Under
//! `axiomctl run` Codex gets `--no-daemon`: its app server runs inside the agent's own process
//! tree (and cgroup), and every command it runs is the agent's.
use std::path::Path;

use axiom_proto::agent_profile::{OVERRIDES, Profiles};

/// Codex subcommands that are not the interactive TUI (they take no `--no-daemon`).
const CODEX_SUBCOMMANDS: &[&str] = &[
    "exec",
    "e",
    "review",
    "login",
    "logout",
    "mcp",
    "mcp-server",
    "app-server",
    "app",
    "completion",
    "sandbox",
    "debug",
    "apply",
    "a",
    "resume",
    "fork",
    "cloud",
    "features",
    "help",
    "plugin",
    "remote-control",
    "update",
    "doctor",
];

/// The agent profiles: the shipped table with this host's changes (a broken overrides file is
/// reported and the shipped table used; axiomd refuses to start on one).
pub fn profiles() -> Profiles {
    Profiles::load(Path::new(OVERRIDES)).unwrap_or_else(|e| {
        eprintln!("axiom: {e}; using the shipped agent profiles");
        Profiles::builtin()
    })
}

/// What `run` changes in the command of an agent of `kind`.
pub struct Adapted {
    pub argv: Vec<String>,
    pub notes: Vec<&'static str>,
    /// Claude Code hooks were installed for the run.
    pub hooks: bool,
}

/// The command to exec for `command` of `kind`. `hook` is the command a Claude Code hook runs
/// (`axiomctl … hook`), when hooks are wanted.
pub fn adapt(command: &[String], kind: &str, hook: Option<&str>) -> Adapted {
    let mut out = Adapted {
        argv: command.to_vec(),
        notes: Vec::new(),
        hooks: false,
    };
    let sub = command.get(1).map(String::as_str);
    match kind {
        "codex" => {
            let interactive = sub.is_none_or(|s| !CODEX_SUBCOMMANDS.contains(&s));
            let chosen = command
                .iter()
                .any(|a| a == "--no-daemon" || a == "--remote" || a.starts_with("--remote="));
            if interactive && !chosen {
                out.argv.insert(1, "--no-daemon".into());
                out.notes
                    .push("codex runs with --no-daemon: its app server stays inside the agent");
            }
            // Its hooks for the run: on the interactive TUI and `exec`, as options of the
            // command they run (after `exec`).
            let at = match sub {
                Some("exec" | "e") => Some(2),
                _ if interactive => Some(1),
                _ => None,
            };
            if let (Some(hook), Some(at)) = (hook, at) {
                let args = codex_hook_args(hook);
                out.argv.splice(at..at, args);
                out.hooks = true;
                out.notes.push(
                    "codex runs with Axiom's hooks for this run (-c hooks.…, \
                     --dangerously-bypass-hook-trust: hooks added on the command line are not in \
                     Codex's trust store): a dangerous command is refused before it runs, a false \
                     claim before it stops",
                );
            }
        }
        "claude" => {
            if let Some(hook) = hook
                && !command.is_empty()
            {
                out.argv.insert(1, "--settings".into());
                out.argv.insert(2, claude_settings(hook).to_string());
                out.hooks = true;
                out.notes.push(
                    "claude runs with Axiom's hooks for this run (--settings): a dangerous Bash \
                     command, or a write leaving a TODO, is refused before it happens, \
                     a false claim before it stops",
                );
            }
        }
        _ => {}
    }
    out
}

/// The settings a Claude Code agent gets for the run: hooks that ask axiomd before a Bash
/// command runs or a write tool writes (PreToolUse), before the agent or one of its subagents
/// stops (Stop, SubagentStop), at the start of its session (SessionStart: its session id and
/// model), and after each tool call and prompt (to hand over what waits for it). Added to the user's own settings, never written
/// into them.
pub fn claude_settings(hook: &str) -> serde_json::Value {
    let call = |matcher: Option<&str>| {
        let mut m =
            serde_json::json!({"hooks": [{"type": "command", "command": hook, "timeout": 30}]});
        if let Some(x) = matcher {
            m["matcher"] = x.into();
        }
        serde_json::json!([m])
    };
    serde_json::json!({"hooks": {
        "PreToolUse": call(Some("Bash|Write|Edit|MultiEdit|NotebookEdit")),
        "PostToolUse": call(Some("*")),
        "UserPromptSubmit": call(None),
        "SessionStart": call(None),
        "Stop": call(None),
        "SubagentStop": call(None),
    }})
}

/// Codex's options for Axiom's hooks for one run: the same events and JSON as Claude Code's
/// (`PreToolUse` on its shell and `apply_patch`, `Stop`, and `PostToolUse` and
/// `UserPromptSubmit` to hand over waiting messages), given as config overrides. Codex runs a
/// hook only once its exact definition is trusted (kept in `~/.codex/config.toml`, which a
/// confined agent may not write), and these are new on every run: the run trusts them with
/// `--dangerously-bypass-hook-trust`. Hooks the user configured run as they would, inside the
/// agent's confinement; an agent cannot add any (`.codex`, `~/.codex/config.toml` and
/// `~/.codex/hooks.json` are protected).
pub fn codex_hook_args(hook: &str) -> Vec<String> {
    // A TOML basic string: JSON's escapes are TOML's.
    let command = serde_json::Value::from(hook).to_string();
    let entry = |matcher: Option<&str>| {
        let m = matcher.map_or(String::new(), |m| format!("matcher = \"{m}\", "));
        format!("[{{{m}hooks = [{{type = \"command\", command = {command}, timeout = 30}}]}}]")
    };
    let mut out = vec!["--dangerously-bypass-hook-trust".to_string()];
    for (event, matcher) in [
        ("PreToolUse", Some("Bash|apply_patch")),
        ("PostToolUse", None),
        ("UserPromptSubmit", None),
        ("Stop", None),
    ] {
        out.push("-c".into());
        out.push(format!("hooks.{event}={}", entry(matcher)));
    }
    out
}

/// Where `axiomctl run` keeps what it writes for the run of agent `pid` (Gemini CLI's settings
/// with Axiom's hooks, opencode's plugin): in the agent user's `home`, which a confining
/// profile leaves read-only (the agent reads them, cannot change them) and a private /tmp
/// keeps visible; removed after the run.
pub fn run_dir(home: &Path, pid: u32) -> std::path::PathBuf {
    home.join(".local/state/axiom/runs").join(pid.to_string())
}

/// Makes `run_dir` (as the agent's user, before it is confined), private to that user.
pub fn make_run_dir(home: &Path, pid: u32) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = run_dir(home, pid);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    Ok(dir)
}

/// Files an agent of `kind` makes on its first run where a confining profile leaves it
/// read-only, and fails without: made as it would make them (as the agent's user, before it is
/// confined), when absent. opencode writes `~/.config/opencode/.gitignore` once, for the plugin
/// packages it may install there, and stops with "Unexpected error" when it cannot; its
/// configuration directory stays read-only (plugins and MCP servers there run in its owner's
/// later sessions).
pub fn seed_state(kind: &str, home: &Path) {
    if kind != "opencode" {
        return;
    }
    let dir = home.join(".config/opencode");
    let file = dir.join(".gitignore");
    if std::fs::symlink_metadata(&file).is_err() {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            &file,
            "node_modules\npackage.json\npackage-lock.json\nbun.lock\n.gitignore",
        );
    }
}

/// The shell command a hook runs: this axiomctl, on the same socket. `exec`, because Claude
/// Code runs it with `sh -c` and waits, and Debian's `sh` (dash) forks for a lone command
/// instead of becoming it: one process fewer per hook call.
pub fn hook_command(exe: &Path, socket: &Path) -> String {
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    format!("exec {} --socket {} hook", q(exe), q(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn adapt_as(c: &[String]) -> Adapted {
        let p = Profiles::builtin();
        adapt(c, &p.kind(c, None), Some("axiomctl hook"))
    }

    #[test]
    fn interactive_codex_keeps_its_app_server_inside() {
        let p = Profiles::builtin();
        let no_hooks = |c: &[String]| adapt(c, &p.kind(c, None), None);
        let a = no_hooks(&v(&["/opt/bin/codex", "fix the bug"]));
        assert_eq!(a.argv, v(&["/opt/bin/codex", "--no-daemon", "fix the bug"]));
        assert_eq!(a.notes.len(), 1);
        assert_eq!(no_hooks(&v(&["codex"])).argv, v(&["codex", "--no-daemon"]));
        // With hooks: trusted for the run, before the prompt; after `exec` for exec.
        let a = adapt_as(&v(&["codex", "fix it"]));
        assert!(a.hooks);
        assert_eq!(a.argv[1], "--dangerously-bypass-hook-trust");
        assert!(a.argv.contains(&"--no-daemon".to_string()));
        assert_eq!(a.argv.last().map(String::as_str), Some("fix it"));
        let pre = a
            .argv
            .iter()
            .find(|x| x.starts_with("hooks.PreToolUse="))
            .expect("pre");
        let value: toml::Value =
            toml::from_str(&format!("v = {}", &pre["hooks.PreToolUse=".len()..]))
                .expect("a TOML value");
        assert_eq!(value["v"][0]["matcher"].as_str(), Some("Bash|apply_patch"));
        assert_eq!(
            value["v"][0]["hooks"][0]["command"].as_str(),
            Some("axiomctl hook")
        );
        let e = adapt_as(&v(&["codex", "exec", "x"]));
        assert_eq!(
            e.argv[..3],
            v(&["codex", "exec", "--dangerously-bypass-hook-trust"])
        );
        // Not the TUI, or the user chose: unchanged.
        for c in [
            v(&["codex", "exec", "x"]),
            v(&["codex", "--remote", "unix://", "x"]),
            v(&["codex", "--no-daemon"]),
            v(&["python3", "agent.py"]),
        ] {
            let a = no_hooks(&c);
            assert_eq!((a.argv, a.notes.len()), (c.clone(), 0));
        }
    }

    #[test]
    fn claude_gets_hooks_for_the_run_only_when_wanted() {
        let a = adapt_as(&v(&["/usr/local/bin/claude", "fix it"]));
        assert!(a.hooks);
        assert_eq!(a.argv[1], "--settings");
        let s: serde_json::Value = serde_json::from_str(&a.argv[2]).expect("json");
        assert_eq!(
            s["hooks"]["PreToolUse"][0]["matcher"],
            "Bash|Write|Edit|MultiEdit|NotebookEdit"
        );
        assert_eq!(
            s["hooks"]["Stop"][0]["hooks"][0]["command"],
            "axiomctl hook"
        );
        assert_eq!(a.argv[3], "fix it");
        let p = Profiles::builtin();
        let c = v(&["claude"]);
        assert!(!adapt(&c, "claude", None).hooks);
        assert_eq!(p.kind(&v(&["my-wrapper"]), Some("claude")), "claude");
        assert_eq!(p.kind(&v(&["claude"]), Some("nonsense")), "claude");
        assert_eq!(
            hook_command(Path::new("/opt/axiom ctl"), Path::new("/run/a.sock")),
            "exec '/opt/axiom ctl' --socket '/run/a.sock' hook"
        );
    }
}
