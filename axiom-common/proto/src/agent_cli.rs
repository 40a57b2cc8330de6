//! The agent CLIs Axiom knows by name: `axiomctl run` adapts how some are started (Codex's
//! app server), and axiomd knows their first prompt on the command line as the user's words.

/// Program names of the real agent CLIs.
pub const AGENT_CLIS: &[&str] = &[
    "claude",
    "codex",
    "gemini",
    "aider",
    "opencode",
    "qwen",
    "cursor-agent",
    "amp",
];

/// The agent CLI `program` (a path or a name) is, if it is one.
pub fn agent_cli(program: &str) -> Option<&'static str> {
    let name = program.rsplit('/').next().unwrap_or(program);
    AGENT_CLIS.iter().copied().find(|a| *a == name)
}
