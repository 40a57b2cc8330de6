//! Per-agent rule state: context windows, activity (for claims and timeouts), cooldowns.
use std::{collections::HashMap, time::Instant};

use axiom_common::{
    rules::{self, Action, Hit, Kind, RuleSet, Scope, Verify},
    wire::{Body, Event},
};

/// Characters of an fd's previous output kept in front of the next write, so a phrase split
/// across two writes still matches.
const WINDOW: usize = 160;

/// What one agent has done, as far as the rules care.
struct Activity {
    started: Instant,
    files_written: u64,
    last_file: Instant,
    tests_ran: bool,
}

impl Activity {
    fn new(now: Instant) -> Activity {
        Activity {
            started: now,
            files_written: 0,
            last_file: now,
            tests_ran: false,
        }
    }
}

/// A rule that fired.
#[derive(Clone, Debug)]
pub struct Finding {
    pub agent: u64,
    pub rule: usize,
    pub detail: String,
    /// From the kernel's timestamp of the event to the finding, µs.
    pub latency_us: Option<f64>,
    /// The event that triggered it (pid, uid, comm), if one did.
    pub pid: u32,
    pub uid: u32,
    /// The kernel already acted (a deny: the writer was killed before its write landed).
    pub in_kernel: bool,
}

#[derive(Default)]
pub struct Engine {
    /// Keyed by (tgid, fd, into a file): terminal output and file content never mix.
    windows: HashMap<(u32, i32, bool), String>,
    activity: HashMap<u64, Activity>,
    fired: HashMap<(u64, String), Instant>,
    /// Rules already reported for one write (tgid, fd, time), by whichever of its two records —
    /// the kernel's match, the captured output — came first; the other one skips them.
    reported: HashMap<(u32, i32, u64), Vec<String>>,
    reported_order: std::collections::VecDeque<(u32, i32, u64)>,
    /// Findings suppressed by a cooldown.
    pub suppressed: u64,
    /// Plugin rules' prefilter hits since the last `take_candidates`.
    candidates: Vec<Candidate>,
}

/// A plugin rule's prefilter hit: its plugin judges it outside the engine's lock (a call may
/// take its whole fuel budget, and the reader thread takes that lock for kernel matches).
#[derive(Clone, Debug)]
pub struct Candidate {
    pub agent: u64,
    pub rule: usize,
    pub pid: u32,
    pub uid: u32,
    pub scope: Scope,
    pub comm: String,
    /// The text with its context window.
    pub text: String,
    pub latency_us: Option<f64>,
}

/// A plugin call that a sandbox limit stopped, while it looked at an agent's event.
#[derive(Clone, Debug)]
pub struct PluginFault {
    pub agent: u64,
    pub rule: usize,
    pub pid: u32,
    pub fault: axiom_common::sandbox::Fault,
    /// That was its last strike: it is switched off until the rules reload.
    pub disabled: bool,
}

/// Writes remembered for de-duplication (a write's two records arrive close together).
const REPORTED_MAX: usize = 4096;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Output to a file (not a terminal, pipe, socket or device).
fn is_file(target: Option<&str>) -> bool {
    rules::write_scope(target) == Scope::FileWrite
}

impl Engine {
    fn act(&mut self, agent: u64, now: Instant) -> &mut Activity {
        self.activity
            .entry(agent)
            .or_insert_with(|| Activity::new(now))
    }

    /// Whether a rule may fire again for this agent (and records that it does).
    fn cool(&mut self, set: &RuleSet, agent: u64, rule: usize, now: Instant) -> bool {
        let r = &set.rules[rule];
        let key = (agent, r.id.clone());
        if let Some(t) = self.fired.get(&key)
            && now.duration_since(*t) < r.cooldown
        {
            self.suppressed += 1;
            return false;
        }
        self.fired.insert(key, now);
        true
    }

    fn remember(&mut self, key: (u32, i32, u64), rule: &str) {
        let e = self.reported.entry(key).or_insert_with(|| {
            self.reported_order.push_back(key);
            Vec::new()
        });
        e.push(rule.to_string());
        while self.reported_order.len() > REPORTED_MAX {
            if let Some(k) = self.reported_order.pop_front() {
                self.reported.remove(&k);
            }
        }
    }

    fn already(&self, key: (u32, i32, u64), rule: &str) -> bool {
        self.reported
            .get(&key)
            .is_some_and(|v| v.iter().any(|r| r == rule))
    }

    /// A kernel match record: rules it settles on its own (a deny; a literal-only,
    /// case-insensitive match) are reported now, microseconds after the write; the rest wait
    /// for the captured bytes (regex, case, claims).
    pub fn on_kernel_match(&mut self, set: &RuleSet, ev: &Event, now: Instant) -> Vec<Finding> {
        let Body::KernelMatch {
            fd,
            target,
            deny,
            states,
            ..
        } = &ev.body
        else {
            return Vec::new();
        };
        let Some(k) = &set.kernel else {
            return Vec::new();
        };
        let scope = if is_file(target.as_deref()) {
            Scope::FileWrite
        } else {
            Scope::Output
        };
        let mut rules: Vec<usize> = Vec::new();
        for st in states {
            for r in k.rules_at(*st) {
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
        }
        rules.sort_by_key(|r| std::cmp::Reverse(set.rules[*r].priority));
        let latency_us = Some((now_ns().saturating_sub(ev.time_ns)) as f64 / 1e3);
        let key = (ev.tgid, *fd, ev.time_ns);
        let mut out = Vec::new();
        for i in rules {
            let r = &set.rules[i];
            let killed = *deny && r.action == Action::Deny;
            let settled = killed
                || (r.scope == Some(scope)
                    && r.kind == Kind::Match
                    && r.regex.is_none()
                    && (r.case_insensitive
                        || r.literals
                            .iter()
                            .all(|l| !l.bytes().any(|b| b.is_ascii_alphabetic()))));
            if !settled || self.already(key, &r.id) {
                continue;
            }
            self.remember(key, &r.id);
            if !self.cool(set, ev.agent, i, now) {
                continue;
            }
            out.push(Finding {
                agent: ev.agent,
                rule: i,
                detail: format!(
                    "{} in a write of {} bytes to fd {fd}{}",
                    r.literals.join(" | "),
                    match &ev.body {
                        Body::KernelMatch { count, .. } => *count,
                        _ => 0,
                    },
                    target
                        .as_deref()
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default()
                ),
                latency_us,
                pid: ev.tgid,
                uid: ev.uid,
                in_kernel: killed,
            });
        }
        out
    }

    /// Matches one event; returns what fired.
    pub fn on_event(&mut self, set: &RuleSet, ev: &Event, now: Instant) -> Vec<Finding> {
        if ev.agent == 0 {
            return Vec::new();
        }
        let (scope, text, window_key) = match &ev.body {
            Body::AgentStarted { .. } => {
                self.activity.insert(ev.agent, Activity::new(now));
                return Vec::new();
            }
            Body::AgentExited { .. } => {
                self.activity.remove(&ev.agent);
                self.fired.retain(|(a, _), _| *a != ev.agent);
                return Vec::new();
            }
            Body::Exit { .. } => {
                self.windows.retain(|(t, _, _), _| *t != ev.tgid);
                return Vec::new();
            }
            Body::Output {
                fd,
                text,
                target,
                redacted,
                ..
            } => {
                // Secrets were masked before the event left the reader: report them here.
                let mut secrets = Vec::new();
                for id in redacted {
                    if let Some(i) = set.rules.iter().position(|r| &r.id == id)
                        && self.cool(set, ev.agent, i, now)
                    {
                        secrets.push(Finding {
                            agent: ev.agent,
                            rule: i,
                            detail: format!(
                                "a secret in a write of {} bytes{}, masked before it left axiomd",
                                text.len(),
                                target
                                    .as_deref()
                                    .map(|t| format!(" to {t}"))
                                    .unwrap_or_default()
                            ),
                            latency_us: Some((now_ns().saturating_sub(ev.time_ns)) as f64 / 1e3),
                            pid: ev.tgid,
                            uid: ev.uid,
                            in_kernel: false,
                        });
                    }
                }
                if !secrets.is_empty() {
                    return secrets;
                }
                if is_file(target.as_deref()) {
                    let a = self.act(ev.agent, now);
                    a.files_written += 1;
                    a.last_file = now;
                    (Scope::FileWrite, text.clone(), Some((ev.tgid, *fd, true)))
                } else {
                    (
                        Scope::Output,
                        rules::strip_ansi(text),
                        Some((ev.tgid, *fd, false)),
                    )
                }
            }
            Body::Exec { argv, filename, .. } => {
                let line = if argv.is_empty() {
                    filename.clone()
                } else {
                    argv.join(" ")
                };
                if rules::is_test_command(&line) {
                    self.act(ev.agent, now).tests_ran = true;
                }
                (Scope::Exec, line, None)
            }
            Body::File {
                path, path2, op, ..
            } => {
                let a = self.act(ev.agent, now);
                a.last_file = now;
                if op != "unlink" && op != "rmdir" {
                    a.files_written += 1;
                }
                let t = match path2 {
                    Some(p2) => format!("{path} {p2}"),
                    None => path.clone(),
                };
                (Scope::File, t, None)
            }
            Body::Connect { address, port, .. } => {
                (Scope::Connect, format!("{address}:{port}"), None)
            }
            _ => return Vec::new(),
        };
        self.act(ev.agent, now);
        // The tail of this fd's previous output goes in front, for phrases split across writes.
        let (full, fresh_from) = match window_key.and_then(|k| self.windows.get(&k)) {
            Some(prev) => (format!("{prev}{text}"), prev.len()),
            None => (text, 0),
        };
        // A match wholly inside the old tail was reported with the write it came in.
        let hits: Vec<Hit> = set.scan_from(scope, &full, fresh_from);
        if let Some(k) = window_key {
            let mut cut = full.len().saturating_sub(WINDOW);
            while !full.is_char_boundary(cut) {
                cut += 1;
            }
            self.windows.insert(k, full[cut..].to_string());
        }
        let latency_us = Some((now_ns().saturating_sub(ev.time_ns)) as f64 / 1e3);
        let mut out = Vec::new();
        let key = window_key.map(|(t, fd, _)| (t, fd, ev.time_ns));
        for h in hits {
            let r = &set.rules[h.rule];
            // A deny literal within the bytes the kernel scans was settled there (the writer is
            // already dead); its match record reports it, whichever record comes first.
            if r.action == Action::Deny
                && set.kernel.is_some()
                && !r.literals.is_empty()
                && h.end.saturating_sub(fresh_from) <= axiom_common::SCAN_MAX
            {
                continue;
            }
            if let Some(k) = key {
                if self.already(k, &r.id) {
                    continue;
                }
                self.remember(k, &r.id);
            }
            if let Kind::Claim(verify) = r.kind {
                let a = self.act(ev.agent, now);
                let holds = match verify {
                    Verify::FilesWritten => a.files_written > 0,
                    Verify::TestsRan => a.tests_ran,
                };
                if holds {
                    continue;
                }
            }
            // A plugin rule's prefilter hit is only a candidate: its plugin decides, later.
            if r.plugin.is_some() {
                self.candidates.push(Candidate {
                    agent: ev.agent,
                    rule: h.rule,
                    pid: ev.tgid,
                    uid: ev.uid,
                    scope,
                    comm: ev.comm.clone(),
                    text: full.clone(),
                    latency_us,
                });
                continue;
            }
            if !self.cool(set, ev.agent, h.rule, now) {
                continue;
            }
            out.push(Finding {
                agent: ev.agent,
                rule: h.rule,
                detail: rules::excerpt(&full, &h, r.redact),
                latency_us,
                pid: ev.tgid,
                uid: ev.uid,
                in_kernel: false,
            });
        }
        out
    }

    /// The plugin rules' hits since the last time this was asked.
    pub fn take_candidates(&mut self) -> Vec<Candidate> {
        std::mem::take(&mut self.candidates)
    }

    /// A plugin's finding on a candidate, through its rule's cooldown.
    pub fn admit(
        &mut self,
        set: &RuleSet,
        c: &Candidate,
        detail: String,
        now: Instant,
    ) -> Option<Finding> {
        self.cool(set, c.agent, c.rule, now).then_some(Finding {
            agent: c.agent,
            rule: c.rule,
            detail,
            latency_us: c.latency_us,
            pid: c.pid,
            uid: c.uid,
            in_kernel: false,
        })
    }

    /// Timeouts: planning (no file yet) and progress (no file activity lately).
    pub fn tick(&mut self, set: &RuleSet, now: Instant) -> Vec<Finding> {
        let mut due = Vec::new();
        for (agent, a) in &self.activity {
            for (i, r) in set.rules.iter().enumerate() {
                let detail = match r.kind {
                    Kind::PlanningTimeout(d)
                        if a.files_written == 0 && now.duration_since(a.started) >= d =>
                    {
                        format!(
                            "no file written in {:.0} s since the start",
                            d.as_secs_f64()
                        )
                    }
                    Kind::ProgressCheck(d) if now.duration_since(a.last_file) >= d => {
                        format!("no file activity for {:.0} s", d.as_secs_f64())
                    }
                    _ => continue,
                };
                due.push((*agent, i, detail));
            }
        }
        let mut out = Vec::new();
        for (agent, rule, detail) in due {
            // A planning timeout fires once per agent; a progress check once per cooldown.
            let once = matches!(set.rules[rule].kind, Kind::PlanningTimeout(_));
            if once
                && self
                    .fired
                    .contains_key(&(agent, set.rules[rule].id.clone()))
            {
                continue;
            }
            if !self.cool(set, agent, rule, now) {
                continue;
            }
            out.push(Finding {
                agent,
                rule,
                detail,
                latency_us: None,
                pid: 0,
                uid: 0,
                in_kernel: false,
            });
        }
        out
    }
}

/// What userspace still has to do: a `deny` the kernel enforced is done; one that only
/// userspace saw (a regex-only rule, bytes past the kernel's scan) ends the agent.
pub fn effective(action: Action, in_kernel: bool) -> Option<Action> {
    match action {
        Action::Deny if in_kernel => None,
        Action::Deny => Some(Action::Kill),
        a => Some(a),
    }
}

/// Feeds about `bytes` of agent-like terminal output (prose, code, colour codes, now and then a
/// phrase the default rules catch) through the engine in 200-byte writes of several agents.
/// Returns (bytes matched, seconds, findings).
pub fn bench(set: &RuleSet, bytes: usize) -> (usize, f64, usize) {
    const LINES: [&str; 8] = [
        "\x1b[1mReading\x1b[0m src/main.rs to see how the parser is wired together.\n",
        "    let tokens = lexer.tokenize(&input)?; // split into tokens first\n",
        "fn parse(tokens: &[Token]) -> Result<Ast, ParseError> { parse_items(tokens) }\n",
        "\x1b[32m✓\x1b[0m 42 tests compiled; running the integration suite next.\n",
        "Now I'll update the error type so callers can tell a syntax error from an I/O error.\n",
        "Let me plan the refactor before touching the module boundaries.\n",
        "The build finished in 12.3s with 0 warnings; checking the benchmarks as well.\n",
        "diff --git a/src/lib.rs b/src/lib.rs\n@@ -10,7 +10,9 @@ impl Parser {\n",
    ];
    let mut text = String::new();
    while text.len() < 64 << 10 {
        for l in LINES {
            text.push_str(l);
        }
    }
    let chunks: Vec<&str> = {
        let mut v = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let mut j = (i + 200).min(text.len());
            while !text.is_char_boundary(j) {
                j += 1;
            }
            v.push(&text[i..j]);
            i = j;
        }
        v
    };
    let events: Vec<Event> = chunks
        .iter()
        .enumerate()
        .map(|(n, c)| Event {
            seq: 0,
            time_ns: now_ns(),
            agent: 1 + (n % 8) as u64,
            pid: 100 + (n % 8) as u32,
            tgid: 100 + (n % 8) as u32,
            ppid: 1,
            uid: 1000,
            cgroup_id: 0,
            comm: "agent".into(),
            truncated: false,
            body: Body::Output {
                fd: 1,
                syscall: "write".into(),
                count: c.len() as u64,
                target: Some("/dev/pts/1".into()),
                text: (*c).to_string(),
                captured: c.len() as u32,
                redacted: Vec::new(),
            },
        })
        .collect();
    let mut e = Engine::default();
    let (mut done, mut findings) = (0usize, 0usize);
    let t0 = Instant::now();
    while done < bytes {
        for ev in &events {
            findings += e.on_event(set, ev, Instant::now()).len();
            if let Body::Output { text, .. } = &ev.body {
                done += text.len();
            }
        }
    }
    (done, t0.elapsed().as_secs_f64(), findings)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ev(agent: u64, body: Body) -> Event {
        Event {
            seq: 0,
            time_ns: now_ns(),
            agent,
            pid: 10,
            tgid: 10,
            ppid: 1,
            uid: 1000,
            cgroup_id: 0,
            comm: "agent".into(),
            truncated: false,
            body,
        }
    }

    fn out(text: &str, target: &str) -> Body {
        Body::Output {
            fd: 1,
            syscall: "write".into(),
            count: text.len() as u64,
            target: Some(target.into()),
            text: text.into(),
            captured: text.len() as u32,
            redacted: Vec::new(),
        }
    }

    fn set() -> RuleSet {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/rules/default.toml");
        RuleSet::load(&[path]).expect("default rules")
    }

    fn ids(set: &RuleSet, f: &[Finding]) -> Vec<String> {
        f.iter().map(|f| set.rules[f.rule].id.clone()).collect()
    }

    #[test]
    fn a_phrase_split_across_writes_matches_once() {
        let set = set();
        let mut e = Engine::default();
        let t = Instant::now();
        assert!(
            e.on_event(&set, &ev(1, out("OK. Let me p", "/dev/pts/3")), t)
                .is_empty()
        );
        let f = e.on_event(&set, &ev(1, out("lan this.\n", "/dev/pts/3")), t);
        assert_eq!(ids(&set, &f), ["stop-planning"]);
        // Cooldown: the same phrase again right away is suppressed.
        assert!(
            e.on_event(&set, &ev(1, out("let me plan", "/dev/pts/3")), t)
                .is_empty()
        );
        assert_eq!(e.suppressed, 1);
    }

    #[test]
    fn claims_are_checked_against_what_the_agent_did() {
        let set = set();
        let mut e = Engine::default();
        let t = Instant::now();
        let claim = || out("I've successfully implemented the parser.", "/dev/pts/1");
        assert_eq!(
            ids(&set, &e.on_event(&set, &ev(1, claim()), t)),
            ["false-completion"]
        );
        // Agent 2 wrote a file first: its claim holds.
        e.on_event(&set, &ev(2, out("fn main() {}", "/work/src/main.rs")), t);
        assert!(e.on_event(&set, &ev(2, claim()), t).is_empty());
    }

    #[test]
    fn planning_timeout_fires_once() {
        let set = set();
        let mut e = Engine::default();
        let t = Instant::now();
        e.on_event(
            &set,
            &ev(
                1,
                Body::AgentStarted {
                    name: None,
                    command: vec![],
                    workspace: None,
                    profile: None,
                },
            ),
            t,
        );
        assert!(e.tick(&set, t + Duration::from_secs(10)).is_empty());
        let late = t + Duration::from_secs(301);
        assert_eq!(ids(&set, &e.tick(&set, late)), ["planning-timeout"]);
        assert!(
            e.tick(&set, late + Duration::from_secs(1000))
                .iter()
                .all(|f| set.rules[f.rule].id != "planning-timeout")
        );
    }
}
