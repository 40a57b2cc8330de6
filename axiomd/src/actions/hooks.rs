//! Claude Code's hooks: a channel to the model that is stronger than the terminal where it
//! exists. `axiomctl run` installs them for the run only (`--settings`, never the user's own
//! settings files); each calls `axiomctl hook`, which asks axiomd here, as the agent's own
//! process (the agent is the caller's, by its pid).
//!
//! - `PreToolUse` on Bash: a command an exec rule with action deny, kill or freeze would hit is
//!   refused before it runs, and the model is told why.
//! - `Stop`: the agent may not stop while a claim in its last message (done, tests pass) is
//!   contradicted by what the kernel saw; the model gets the evidence. After three refusals in
//!   a row it may (an agent that cannot do better is not held in a loop).
//! - Messages waiting for the agent to be idle are handed over at the next call (`Stop`: as the
//!   reason to go on; `PostToolUse`, `UserPromptSubmit`: as context).
use std::time::Instant;

use axiom_proto::wire::{Body, Channel};
use axiom_rules::{Action, RuleSet, Scope};
use serde_json::{Value, json};

use super::{Actions, Intervention};
use crate::{
    agents::{Agent, notice},
    rules::violation,
};

/// How long a Stop call waits for the message of a claim the screen has just found.
const PARK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Refused stops in a row after which the agent may stop.
const MAX_STOP_REFUSALS: u32 = 3;

/// The prefix of everything axiomd tells the model through a hook.
const FROM: &str = "Axiom (the supervisor of this session)";

impl Actions {
    /// Answers one hook call of `agent`: what `axiomctl hook` prints for Claude Code (`None`:
    /// nothing to say, carry on).
    pub(crate) fn hook(&self, set: &RuleSet, agent: &Agent, input: &Value) -> Option<Value> {
        let event = input.get("hook_event_name")?.as_str()?;
        match event {
            "PreToolUse" => self.pre_tool_use(set, agent, input),
            "Stop" => self.stop(set, agent, input),
            "PostToolUse" | "UserPromptSubmit" => {
                let parked = self.take_parked(agent.id);
                (!parked.is_empty()).then(|| {
                    json!({"hookSpecificOutput": {
                        "hookEventName": event,
                        "additionalContext": format!("{FROM}: {}", parked.join("\n\n")),
                    }})
                })
            }
            _ => None,
        }
    }

    fn pre_tool_use(&self, set: &RuleSet, agent: &Agent, input: &Value) -> Option<Value> {
        if input.get("tool_name")?.as_str()? != "Bash" {
            return None;
        }
        let command = input.get("tool_input")?.get("command")?.as_str()?;
        // The rule that acts first (highest priority) among those that would stop the command.
        let r = set
            .scan(Scope::Exec, command)
            .into_iter()
            .map(|h| {
                let r = &set.rules[h.rule];
                (h, r)
            })
            .filter(|(_, r)| matches!(r.action, Action::Deny | Action::Kill | Action::Freeze))
            .max_by_key(|(_, r)| r.priority)?;
        let (h, r) = r;
        let why = if r.message.is_empty() {
            &r.description
        } else {
            &r.message
        };
        let reason = format!(
            "{FROM} refused this command before it ran (rule {}): {why}",
            r.id
        );
        // The command comes from the agent's hook, not through the sensor: its secrets are
        // masked here before the excerpt leaves axiomd.
        let shown = masked(set, axiom_rules::excerpt(command, &h, r.redact));
        self.bus.publish(violation(
            agent,
            r,
            shown.clone(),
            Some(Scope::Exec),
            None,
            None,
        ));
        self.bus.publish(notice(
            agent,
            by_hook(
                axiom_proto::wire::Action::Deny,
                &r.id,
                format!("refused before it ran (Claude Code hook): {shown}"),
            ),
        ));
        Some(json!({"hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }}))
    }

    fn stop(&self, set: &RuleSet, agent: &Agent, input: &Value) -> Option<Value> {
        let refused = self
            .stop_refusals
            .lock()
            .map_or(0, |m| m.get(&agent.id).copied().unwrap_or(0));
        if refused >= MAX_STOP_REFUSALS {
            self.stopped(agent.id);
            return None;
        }
        let mut reasons = self.take_parked(agent.id);
        // The claim comes from the agent's hook: masked before it is judged and reported.
        let last = masked(
            set,
            input
                .get("last_assistant_message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        );
        let last = last.as_str();
        let claims = self
            .claims
            .contradicted(set, agent.id, last, Instant::now());
        for c in claims {
            let (f, evidence, fresh) = (c.finding, c.evidence, c.fresh);
            let Some(r) = set.rules.get(f.rule) else {
                continue;
            };
            let with_evidence = format!("{} (Evidence: {evidence}.)", r.message);
            // The screen saw the claim first: its message is parked here, or about to be (the
            // finding is on its way through the actions thread): it gets the evidence.
            if !fresh && !reasons.contains(&r.message) {
                reasons.extend(self.await_parked(agent.id, &r.message));
            }
            if let Some(m) = reasons.iter_mut().find(|m| **m == r.message) {
                *m = with_evidence;
                continue;
            }
            if !fresh {
                continue;
            }
            self.bus
                .publish(violation(agent, r, f.detail.clone(), f.scope, None, None));
            if r.action != Action::Inject {
                continue;
            }
            self.bus.publish(notice(
                agent,
                by_hook(
                    axiom_proto::wire::Action::Inject,
                    &r.id,
                    format!("stop refused (Claude Code hook): {with_evidence}"),
                ),
            ));
            reasons.push(with_evidence);
        }
        if reasons.is_empty() {
            self.stopped(agent.id);
            return None;
        }
        if let Ok(mut m) = self.stop_refusals.lock() {
            *m.entry(agent.id).or_default() += 1;
        }
        Some(json!({
            "decision": "block",
            "reason": format!("{FROM}: {}", reasons.join("\n\n")),
        }))
    }

    /// Takes the agent's parked messages once `message` is among them, waiting up to
    /// `PARK_WAIT` for it (a finding made just before the Stop call is parked by the thread
    /// that delivers it a moment later); what it took either way.
    fn await_parked(&self, agent: u64, message: &str) -> Vec<String> {
        let deadline = Instant::now() + PARK_WAIT;
        let mut took = Vec::new();
        let Ok(mut p) = self.pending.lock() else {
            return took;
        };
        loop {
            took.extend(Self::take_from(&mut p, agent));
            let now = Instant::now();
            if took.iter().any(|m| m == message) || now >= deadline {
                break;
            }
            p = match self.parked.wait_timeout(p, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        drop(p);
        if !took.is_empty() {
            self.screens.nudge();
        }
        took
    }

    /// The agent stopped (or may): its refusals start again from none.
    fn stopped(&self, agent: u64) {
        if let Ok(mut m) = self.stop_refusals.lock() {
            m.remove(&agent);
        }
    }
}

/// `text` with every secret a rule knows masked (what the sensor does to captured bytes).
fn masked(set: &RuleSet, text: String) -> String {
    set.redact(None, &text).map_or(text, |(m, _)| m)
}

/// An intervention made through the agent's own hook: delivered as the hook's answer.
fn by_hook(action: axiom_proto::wire::Action, rule: &str, what: String) -> Body {
    Intervention::by_rule(action, rule, &what)
        .channel(Channel::Hook)
        .delivered(Some(true))
        .body()
}
