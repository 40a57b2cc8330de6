//! Terminal output judged as the agent's screen shows it: the rows that changed, each hit once,
//! and not the echo of what was typed into it.
use std::time::Instant;

use axiom_proto::wire::Event;
use axiom_rules::{Action, Hit, RuleSet, Scope};

use super::{Engine, Finding};
use crate::agents::now_ns;

impl Engine {
    /// Whether the text around a hit is the echo of something typed into the agent (an
    /// intervention's message on its screen): the words before the match are the words before
    /// the same match in a typed text.
    pub(super) fn echoed(&self, set: &RuleSet, agent: u64, text: &str, h: &Hit) -> bool {
        let matched = text.get(h.start..h.end).unwrap_or("").to_lowercase();
        if matched.is_empty() {
            return false;
        }
        let before: Vec<String> = text
            .get(..h.start)
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let typed = self.screens.typed_into(agent);
        let typed = typed.iter().map(String::as_str);
        let messages = set
            .rules
            .iter()
            .filter(|r| r.action == Action::Inject)
            .map(|r| r.message.as_str());
        let after: Vec<String> = text
            .get(h.end..)
            .unwrap_or("")
            .split_whitespace()
            .take(2)
            .map(str::to_lowercase)
            .collect();
        typed.chain(messages).any(|m| {
            let m = m.to_lowercase();
            m.match_indices(&matched).any(|(i, _)| {
                let lead: Vec<&str> = m[..i].split_whitespace().collect();
                let trail: Vec<&str> = m[i + matched.len()..].split_whitespace().take(2).collect();
                // Two words of the typed text lead up to the match, or follow it, as on screen
                // (or the match is the whole typed text).
                let led = lead.len() >= 2
                    && before.len() >= 2
                    && lead[lead.len() - 2..]
                        .iter()
                        .zip(&before[before.len() - 2..])
                        .all(|(a, b)| a == b);
                let trailed = trail.len() == 2
                    && after.len() == 2
                    && trail.iter().zip(&after).all(|(a, b)| a == b);
                led || trailed || (lead.is_empty() && trail.is_empty())
            })
        })
    }

    /// Terminal output through the agent's screen: the rows that changed, each hit judged once.
    pub(super) fn on_screen(
        &mut self,
        set: &RuleSet,
        ev: &Event,
        device: &str,
        bytes: &str,
        now: Instant,
    ) -> Vec<Finding> {
        let emulate = set.has_scope(Scope::Terminal);
        let Some(changed) = self
            .screens
            .paint(ev.agent, device, bytes.as_bytes(), now, emulate)
        else {
            return Vec::new();
        };
        let latency_us = Some((now_ns().saturating_sub(ev.time_ns)) as f64 / 1e3);
        let mut out = Vec::new();
        // Rules judged in this text: a rule's first new hit is the one judged.
        let mut judged: Vec<usize> = Vec::new();
        for h in set.scan_every(Scope::Terminal, &changed.text) {
            if judged.contains(&h.rule) {
                continue;
            }
            let r = &set.rules[h.rule];
            let k = changed.hit_key(&r.id, h.start, h.end);
            let first = self.screens.first_time(ev.agent, device, k);
            // Old text (a context row, a repaint) or an echo: the rule may still hit the same
            // rows further on.
            if !first || self.echoed(set, ev.agent, &changed.text, &h) {
                continue;
            }
            judged.push(h.rule);
            if let Some(f) = self.judge(
                set,
                ev,
                &h,
                &changed.text,
                Scope::Terminal,
                None,
                latency_us,
                now,
            ) {
                out.push(f);
            }
        }
        out
    }
}
