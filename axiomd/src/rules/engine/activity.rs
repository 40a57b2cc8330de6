//! What one agent has done, as far as the rules care: the facts a claim is checked against.
use std::time::Instant;

use axiom_rules::{PathFilter, Verify};

/// What one agent has done, as far as the rules care.
pub(super) struct Activity {
    pub(super) started: Instant,
    /// Its workspace: the work a claim is about is there.
    pub(super) workspace: Option<String>,
    pub(super) files_written: u64,
    pub(super) last_file: Instant,
    pub(super) tests_ran: bool,
    /// Its last few command lines: the evidence when a claim about tests is refused.
    pub(super) commands: std::collections::VecDeque<String>,
}

impl Activity {
    pub(super) fn new(now: Instant) -> Activity {
        Activity {
            started: now,
            workspace: None,
            files_written: 0,
            last_file: now,
            tests_ran: false,
            commands: std::collections::VecDeque::new(),
        }
    }

    /// What the kernel saw that contradicts a claim (`None`: the claim holds).
    pub(super) fn contradicts(&self, verify: Verify) -> Option<String> {
        let place = self
            .workspace
            .as_deref()
            .map_or(String::new(), |w| format!(" in {w}"));
        match verify {
            Verify::FilesWritten if self.files_written == 0 => Some(format!(
                "the kernel saw this agent write no file{place} since it started"
            )),
            Verify::TestsRan if !self.tests_ran => {
                let ran: Vec<&str> = self.commands.iter().map(String::as_str).collect();
                Some(if ran.is_empty() {
                    "the kernel saw this agent run no command at all".to_string()
                } else {
                    format!(
                        "the kernel saw this agent run no test command (its last commands: {})",
                        ran.join("; ")
                    )
                })
            }
            _ => None,
        }
    }

    /// Whether writing `path` is the agent's work: in its workspace (when it has one: a real
    /// agent also writes its own scratch files in /tmp, its desktop entries, its sockets), and
    /// not what its tools keep for themselves there (git's internals, caches).
    pub(super) fn is_work(&self, path: &str) -> bool {
        let inside = self.workspace.as_deref().is_none_or(|w| {
            path.strip_prefix(w.trim_end_matches('/'))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        inside && !AGENT_STATE.matches(path)
    }
}

/// What tools write for themselves (claims do not count it as the agent's work).
pub(super) static AGENT_STATE: std::sync::LazyLock<PathFilter> =
    std::sync::LazyLock::new(PathFilter::agent_state);
