//! Delivering a message to an agent's model, and knowing whether it arrived.
//!
//! Typed the way its kind reads input (its profile in `agents.toml`): the interrupt key when
//! the message interrupts, a pause, the text — a bracketed paste when the TUI asked for them —
//! a pause, the submit key; each a write of its own. Confirmed when the agent's screen shows
//! the message's first words (the TUI took it as input) or, for a program that reads lines,
//! when the kernel's line discipline took the line; else typed again, up to the profile's
//! attempts, then reported undelivered. A message that waits for the agent to be idle waits
//! (while the agent lives) until its terminal has been quiet for the profile's `idle_ms`; an
//! agent with Claude Code hooks may take it sooner, at its next hook call.
use std::time::{Duration, Instant};

use axiom_proto::{
    agent_profile::{Paste, Profile},
    wire::Channel,
};

use super::{Actions, terminal::TerminalError};
use crate::{agents::Agent, screens::Waited};

/// What to tell an agent.
pub(crate) struct Message<'a> {
    pub(crate) text: &'a str,
    /// Type the agent's interrupt key first (stops its turn or running tool).
    pub(crate) interrupt: bool,
    /// Wait until the agent is idle (queued; never dropped while it lives).
    pub(crate) wait_idle: bool,
}

/// How a delivery went.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) delivered: bool,
    /// `terminal` or `hook`.
    pub(crate) channel: Channel,
    /// Times the message was typed.
    pub(crate) attempts: u32,
    /// The terminal could not be written (closed, not read, none held).
    pub(crate) error: Option<TerminalError>,
    /// How long it waited for the agent to be idle.
    pub(crate) queued: Duration,
}

/// The first words of a message: what its echo on the agent's screen is recognised by (a TUI
/// wraps long text, so a whole paragraph is never on one row).
fn head(text: &str) -> String {
    text.split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Actions {
    /// Delivers `m` to `agent` (blocking: up to the profile's attempts × (typing + confirm),
    /// and for an idle-waiting message as long as the agent stays busy).
    pub(crate) fn deliver(&self, agent: &Agent, m: &Message) -> Delivery {
        let profile = self.profile_of(agent);
        let mut interrupt = m.interrupt;
        let mut queued = Duration::ZERO;
        if m.wait_idle {
            let t0 = Instant::now();
            // A hooked agent's next hook call may take it first (Claude Code's Stop comes as the
            // turn ends, before its screen goes quiet).
            let parked = self
                .hooks_usable(agent)
                .then(|| self.park(agent.id, m.text));
            let idle = self.await_idle(agent.id, &profile, parked);
            queued = t0.elapsed();
            if let Some(id) = parked
                && self.unpark(agent.id, id)
            {
                return Delivery {
                    delivered: true,
                    channel: Channel::Hook,
                    attempts: 0,
                    error: None,
                    queued,
                };
            }
            if let Err(e) = idle {
                return Delivery {
                    delivered: false,
                    channel: Channel::Terminal,
                    attempts: 0,
                    error: Some(e),
                    queued,
                };
            }
            // Idle: nothing to interrupt.
            interrupt = false;
        }
        self.screens.typed(agent.id, m.text);
        let mut d = Delivery {
            delivered: false,
            channel: Channel::Terminal,
            attempts: 0,
            error: None,
            queued,
        };
        while d.attempts < profile.attempts.max(1) {
            d.attempts += 1;
            let paste = match profile.paste {
                Paste::Always => true,
                Paste::Never => false,
                Paste::Auto => self.screens.pastes(agent.id),
            };
            let typing = super::terminal::Typing {
                before: if interrupt { &profile.interrupt } else { "" },
                text: m.text,
                after: &profile.submit,
                paste,
                gap: profile.gap(),
            };
            let before = self.screens.shows(agent.id, &head(m.text));
            if let Err(e) = self.terminals.type_paced(agent.id, &typing) {
                d.error = Some(e);
                return d;
            }
            // A line-mode reader got the line from the kernel; a TUI shows what it took.
            if self.terminals.canonical(agent.id)
                || self.await_on_screen(agent.id, m.text, before, &profile)
            {
                d.delivered = true;
                return d;
            }
        }
        d
    }

    /// Waits until the agent's terminal has been quiet for the profile's idle time, or a hook
    /// call took parked message `parked`. Errs when the agent's terminal is gone. Woken by the
    /// screens' notification (a paint, a message taken, a terminal released), never a poll.
    fn await_idle(
        &self,
        agent: u64,
        profile: &Profile,
        parked: Option<u64>,
    ) -> Result<(), TerminalError> {
        let mut closed = false;
        self.screens.await_quiet(agent, profile.idle(), || {
            if parked.is_some_and(|id| self.taken(agent, id)) {
                return true;
            }
            closed = !self.terminals.has(agent);
            closed
        });
        if closed {
            return Err(TerminalError::Closed(agent));
        }
        Ok(())
    }

    /// Waits (up to the profile's confirm time) for the agent's screen to show the start of a
    /// message typed into it once more than the `before` times it showed it: the agent took it
    /// as input.
    fn await_on_screen(&self, agent: u64, message: &str, before: usize, profile: &Profile) -> bool {
        let deadline = Instant::now() + profile.confirm();
        self.screens
            .await_shown(agent, &head(message), before, deadline)
            == Waited::Done
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_message_is_recognised_by_its_first_words() {
        assert_eq!(
            super::head("You left a TODO/FIXME in\nthe code."),
            "You left a TODO/FIXME"
        );
    }
}
