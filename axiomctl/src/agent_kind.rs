//! Which real agent a command runs, and what `axiomctl run` changes so that Axiom sees all of
//! its work.
//!
//! Interactive Codex starts a detached, shared `codex app-server` (under `$CODEX_HOME`) that
//! calls the model, runs the commands and writes the files; it outlives the TUI and the next
//! session reuses it, so work would happen in a process started outside this agent. Under
//! `axiomctl run` Codex gets `--no-daemon`: its app server runs inside the agent's own process
//! tree (and cgroup), and every command it runs is the agent's.
/// The agents Axiom knows by name; anything else is generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKind {
    Claude,
    Codex,
    Gemini,
    Aider,
    Opencode,
    Generic,
}

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

/// The kind of agent `command` starts, from the program's name.
pub fn kind(command: &[String]) -> AgentKind {
    match command
        .first()
        .and_then(|p| axiom_common::agent_cli::agent_cli(p))
    {
        Some("claude") => AgentKind::Claude,
        Some("codex") => AgentKind::Codex,
        Some("gemini") => AgentKind::Gemini,
        Some("aider") => AgentKind::Aider,
        Some("opencode") => AgentKind::Opencode,
        _ => AgentKind::Generic,
    }
}

/// The command to exec for `command`, and a note for the user when it was changed.
pub fn adapt(command: &[String]) -> (Vec<String>, Option<&'static str>) {
    let mut argv = command.to_vec();
    if kind(command) == AgentKind::Codex {
        let sub = command.get(1).map(String::as_str);
        let interactive = sub.is_none_or(|s| !CODEX_SUBCOMMANDS.contains(&s));
        let chosen = command
            .iter()
            .any(|a| a == "--no-daemon" || a == "--remote" || a.starts_with("--remote="));
        if interactive && !chosen {
            argv.insert(1, "--no-daemon".into());
            return (
                argv,
                Some("codex runs with --no-daemon: its app server stays inside the agent"),
            );
        }
    }
    (argv, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn interactive_codex_keeps_its_app_server_inside() {
        let (a, note) = adapt(&v(&["/opt/bin/codex", "fix the bug"]));
        assert_eq!(a, v(&["/opt/bin/codex", "--no-daemon", "fix the bug"]));
        assert!(note.is_some());
        assert_eq!(adapt(&v(&["codex"])).0, v(&["codex", "--no-daemon"]));
        // Not the TUI, or the user chose: unchanged.
        for c in [
            v(&["codex", "exec", "x"]),
            v(&["codex", "--remote", "unix://", "x"]),
            v(&["codex", "--no-daemon"]),
            v(&["claude", "x"]),
        ] {
            assert_eq!(adapt(&c), (c.clone(), None));
        }
        assert_eq!(kind(&v(&["/usr/local/bin/claude"])), AgentKind::Claude);
        assert_eq!(kind(&v(&["python3", "agent.py"])), AgentKind::Generic);
    }
}
