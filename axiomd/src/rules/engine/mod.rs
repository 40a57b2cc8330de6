//! Per-agent rule state: context windows, activity (for claims and timeouts), cooldowns,
//! findings held for a rename. What an agent's terminal shows is the screens' (`crate::screens`):
//! the engine feeds them its terminal output and judges the rows that changed.
//!
//! Its parts: this file the engine (windows, cooldowns, matching by scope); `activity.rs` what
//! an agent did (what claims are checked against); `screen.rs` terminal output judged as the
//! screen shows it; `held.rs` findings held for an atomic write's rename.
use std::{collections::HashMap, sync::Arc, time::Instant};

use axiom_proto::wire::{Body, Event, Family, FileOp};

use crate::{agents::now_ns, screens::Screens};

mod activity;
mod held;
mod netexec;
mod screen;

use activity::{Activity, TestRun};
use axiom_rules::{self as rules, Action, Hit, Kind, RuleSet, Scope};

/// Characters of an fd's previous output kept in front of the next write, so a phrase split
/// across two writes still matches.
const WINDOW: usize = 160;

/// A claim the kernel's record contradicts.
pub(crate) struct Contradicted {
    pub(crate) finding: Finding,
    /// What the kernel saw (or did not).
    pub(crate) evidence: String,
    /// Not reported before (within the rule's cooldown).
    pub(crate) fresh: bool,
}

/// A rule that fired.
#[derive(Clone, Debug)]
pub(crate) struct Finding {
    pub(crate) agent: u64,
    pub(crate) rule: usize,
    pub(crate) detail: String,
    /// From the kernel's timestamp of the event to the finding, µs.
    pub(crate) latency_us: Option<f64>,
    /// The process whose event triggered it, if one did.
    pub(crate) pid: u32,
    /// The kernel already acted (a deny: the writer was killed before its write landed).
    pub(crate) in_kernel: bool,
    /// Where it was seen (none for timeouts).
    pub(crate) scope: Option<Scope>,
    /// The file it is about, for a file write.
    pub(crate) path: Option<String>,
}

/// A window: the target its fd wrote to, and the tail of what it wrote there.
type Window = (String, String);

#[derive(Default)]
pub(crate) struct Engine {
    /// Keyed by (tgid, fd, into a file): terminal output and file content never mix.
    /// With the fd's target at the time: a window continues only in the same file or channel
    /// (a reused fd number is another file, whose text is no context).
    /// By process first, so a process's exit drops its windows at once (a scan of every
    /// window per exit made 10,000 exiting agents quadratic).
    windows: HashMap<u32, HashMap<(i32, bool), Window>>,
    activity: HashMap<u64, Activity>,
    fired: HashMap<(u64, String), Instant>,
    /// Rules already reported for one write (tgid, fd, time), by whichever of its two records —
    /// the kernel's match, the captured output — came first; the other one skips them.
    reported: HashMap<(u32, i32, u64), Vec<String>>,
    reported_order: std::collections::VecDeque<(u32, i32, u64)>,
    /// Findings suppressed by a cooldown.
    pub(crate) suppressed: u64,
    /// Plugin rules' prefilter hits since the last `take_candidates`.
    candidates: Vec<Candidate>,
    /// The agents' terminals as they look (shared with the actions, behind their own lock).
    screens: Arc<Screens>,
    /// File findings held for a moment: a temporary file renamed over its target (an atomic
    /// write) is reported under the target's name.
    /// Each with the time it is due (wall ns, the kernel's record; 0 at once).
    held: Vec<(u64, Finding)>,
    /// The sensor's mark: every kernel record before it has been read (`held.rs`).
    read_to_ns: u64,
    /// Recent renames of temporary files (kernel time, from, to): a write's event may arrive
    /// after the rename of its file (read back, or decoded in a later pass).
    renames: std::collections::VecDeque<held::Rename>,
    /// What a bound cut since the last `take_shed`, by cause: the rules stage counts it as a
    /// loss (`axiomctl status`).
    shed: std::collections::BTreeMap<&'static str, u64>,
}

/// A plugin rule's prefilter hit: its plugin judges it outside the engine's lock (a call may
/// take its whole fuel budget, and the reader thread takes that lock for kernel matches).
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) agent: u64,
    pub(crate) rule: usize,
    pub(crate) pid: u32,
    pub(crate) scope: Scope,
    pub(crate) comm: String,
    /// The text with its context window.
    pub(crate) text: String,
    pub(crate) latency_us: Option<f64>,
}

/// A plugin call that a sandbox limit stopped, while it looked at an agent's event.
#[derive(Clone, Debug)]
pub(crate) struct PluginFault {
    pub(crate) agent: u64,
    pub(crate) rule: usize,
    pub(crate) pid: u32,
    pub(crate) fault: axiom_sandbox::Fault,
    /// That was its last strike: it is switched off until the rules reload.
    pub(crate) disabled: bool,
}

/// Writes remembered for de-duplication (a write's two records arrive close together).
const REPORTED_MAX: usize = 4096;

/// A hook call `axiomctl run` installed (`axiomctl --socket … hook`, or the shell that execs it).
fn is_axiom_hook(line: &str) -> bool {
    let line = line.trim_end();
    line.ends_with(" hook") && line.contains("axiomctl") && line.contains(" --socket ")
}

/// The test configuration of the project in `dir` that `argv` may name (`npm run <script>`:
/// `package.json`; `make <target>`: `Makefile`), read only for those commands: at most 256
/// KiB each, not through a symlink (the agent's files, read by root).
fn project_config(argv: &[String], dir: &str) -> Option<rules::testrun::Project> {
    let names: Vec<&str> = argv
        .iter()
        .take(4)
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .collect();
    let npm = names
        .iter()
        .any(|n| matches!(*n, "npm" | "yarn" | "pnpm" | "bun"));
    let make = names.iter().any(|n| matches!(*n, "make" | "gmake"));
    if !npm && !make {
        return None;
    }
    let read = |name: &str| -> Option<String> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(std::path::Path::new(dir).join(name))
            .ok()?;
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        f.take(256 * 1024).read_to_string(&mut text).ok()?;
        Some(text)
    };
    let mut p = rules::testrun::Project::default();
    if npm && let Some(t) = read("package.json") {
        p = p.with_package_json(&t);
    }
    if make
        && let Some(t) = ["GNUmakefile", "makefile", "Makefile"]
            .iter()
            .find_map(|n| read(n))
    {
        p = p.with_makefile(&t);
    }
    Some(p)
}

/// Output to a file (not a terminal, pipe, socket or device).
fn is_file(target: Option<&str>) -> bool {
    rules::write_scope(target) == Scope::FileWrite
}

impl Engine {
    /// An engine that paints the agents' terminal output on `screens`, behind the lock the
    /// rules stage's threads share (and [`super::Claims`] takes for the actions).
    pub(crate) fn shared(screens: Arc<Screens>) -> Arc<std::sync::Mutex<Engine>> {
        Arc::new(std::sync::Mutex::new(Engine::with_screens(screens)))
    }

    /// An engine of its own that paints the agents' terminal output on `screens`.
    pub(crate) fn with_screens(screens: Arc<Screens>) -> Engine {
        Engine {
            screens,
            ..Engine::default()
        }
    }

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
    pub(crate) fn on_kernel_match(
        &mut self,
        set: &RuleSet,
        ev: &Event,
        now: Instant,
    ) -> Vec<Finding> {
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
                || (r.scopes.contains(&scope)
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
                in_kernel: killed,
                scope: Some(scope),
                path: target.clone().filter(|_| scope == Scope::FileWrite),
            });
        }
        out
    }

    /// Matches one event; returns what fired.
    pub(crate) fn on_event(&mut self, set: &RuleSet, ev: &Event, now: Instant) -> Vec<Finding> {
        if ev.agent == 0 {
            return Vec::new();
        }
        // A rename names the findings held for it before any is released: when the rules
        // thread falls behind (descheduled on a busy machine), the write and its rename wait in
        // its queue together, and by the time the rename is read the write's finding is due.
        match &ev.body {
            Body::File {
                op: FileOp::Rename,
                path,
                path2: Some(to),
                ..
            } => self.renamed(path, to, ev.time_ns, ev.tgid),
            // A temporary file removed, or an agent gone: no rename will name their findings.
            Body::File {
                op: FileOp::Unlink,
                path,
                ..
            } => self.due_now(|f| f.path.as_deref() == Some(path.as_str())),
            Body::AgentExited { .. } => self.due_now(|f| f.agent == ev.agent),
            _ => {}
        }
        let mut out = self.release();
        match &ev.body {
            Body::AgentStarted {
                command, workspace, ..
            } => self.agent_started(ev.agent, command, workspace.clone(), now),
            Body::AgentExited { .. } => {
                self.activity.remove(&ev.agent);
                self.fired.retain(|(a, _), _| *a != ev.agent);
                self.screens.forget(ev.agent);
            }
            Body::Fork { child_pid } => {
                if let Some(a) = self.activity.get_mut(&ev.agent) {
                    a.net.forked(ev.tgid, *child_pid);
                }
            }
            Body::Exit { code, signal } => {
                self.windows.remove(&ev.tgid);
                if let Some(a) = self.activity.get_mut(&ev.agent) {
                    a.ended(ev.tgid, *code, *signal, now);
                    a.net.exited(ev.tgid);
                }
            }
            Body::Output { text, target, .. } => {
                // A download written where a shell reads it.
                if let Some(t) = target {
                    let run = self.act(ev.agent, now).net.wrote(ev.tgid, t, text, now);
                    out.extend(self.remote_run(set, ev, run, now));
                }
                // A test run's summary line, for the evidence.
                if let Some(run) = self
                    .activity
                    .get_mut(&ev.agent)
                    .and_then(|a| a.running.get_mut(&ev.tgid))
                    && let Some(line) = rules::testrun::summary_line(text)
                {
                    run.summary = Some(line);
                }
                out.extend(self.on_output(set, ev, now))
            }
            Body::Exec {
                argv,
                filename,
                cwd,
                stdin,
                ..
            } => {
                let run = self.act(ev.agent, now).net.exec(
                    (ev.tgid, ev.ppid),
                    filename,
                    argv,
                    (cwd.as_deref(), stdin.as_deref()),
                    now,
                );
                out.extend(self.remote_run(set, ev, run, now));
                let line = if argv.is_empty() {
                    filename.clone()
                } else {
                    argv.join(" ")
                };
                let a = self.act(ev.agent, now);
                // A test runner (through wrappers, or a project's script or make target that
                // runs one): a test run, judged by how its process ends.
                let dir = cwd.as_deref().or(a.workspace.as_deref());
                let project = dir.and_then(|d| project_config(argv, d));
                if let Some(runner) = rules::testrun::test_runner(argv, project.as_ref()) {
                    a.running.insert(
                        ev.tgid,
                        TestRun {
                            runner,
                            line: line.chars().take(120).collect(),
                            started: now,
                            summary: None,
                        },
                    );
                }
                // Axiom's own hook calls (`axiomctl … hook`, run by the agent for us) are not
                // the agent's commands: a refusal's evidence lists what the agent ran.
                if !is_axiom_hook(&line) {
                    let shown: String = line.chars().take(120).collect();
                    a.commands.push_back(shown);
                    if a.commands.len() > 5 {
                        a.commands.pop_front();
                    }
                }
                out.extend(self.on_bytes(set, ev, &[Scope::Exec], line, None, None, now));
            }
            Body::File { .. } => out.extend(self.on_file(set, ev, now)),
            Body::Connect {
                address,
                port,
                family,
            } => {
                let t = format!("{address}:{port}");
                if matches!(family, Family::Inet | Family::Inet6) {
                    let run = self
                        .act(ev.agent, now)
                        .net
                        .connected(ev.tgid, t.clone(), now);
                    out.extend(self.remote_run(set, ev, run, now));
                }
                out.extend(self.on_bytes(set, ev, &[Scope::Connect], t, None, None, now));
            }
            _ => {}
        }
        out.extend(self.release());
        out
    }

    /// An agent's activity starts. A prompt given to an agent CLI on its command line is the
    /// user's words when the agent shows it on its screen ("make sure the tests pass" is not a
    /// claim); a script given to a shell is not a prompt: what it prints is the agent's.
    fn agent_started(
        &mut self,
        agent: u64,
        command: &[String],
        workspace: Option<String>,
        now: Instant,
    ) {
        let mut a = Activity::new(now);
        a.workspace = workspace;
        self.activity.insert(agent, a);
        if command
            .first()
            .is_some_and(|c| axiom_proto::agent_cli::agent_cli(c).is_some())
        {
            for a in command.iter().skip(1).filter(|a| a.contains(' ')) {
                self.screens.typed(agent, a);
            }
        }
    }

    /// A write: its secrets reported, then its (masked) bytes matched as a file write, or as
    /// output (and network, to a socket), and on a terminal as what the screen shows.
    fn on_output(&mut self, set: &RuleSet, ev: &Event, now: Instant) -> Vec<Finding> {
        let Body::Output {
            fd, text, target, ..
        } = &ev.body
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // The rest of the write is matched too (masked): a secret beside a TODO must not hide
        // the TODO.
        for f in self.secrets_in(set, ev, now) {
            out.extend(self.name_file(f, ev.time_ns));
        }
        let target = target.as_deref();
        if is_file(target) {
            let path = target.unwrap_or_default();
            let a = self.act(ev.agent, now);
            if a.is_work(path) {
                a.files_written += 1;
                a.last_file = now;
                a.wrote(path, now);
            }
            let key = (ev.tgid, *fd, true, path);
            out.extend(self.on_bytes(
                set,
                ev,
                &[Scope::FileWrite],
                text.clone(),
                Some(key),
                Some(path),
                now,
            ));
        } else {
            let scopes: &[Scope] = if rules::is_socket(target) {
                &[Scope::Output, Scope::Network]
            } else {
                &[Scope::Output]
            };
            let key = (ev.tgid, *fd, false, target.unwrap_or(""));
            out.extend(self.on_bytes(
                set,
                ev,
                scopes,
                rules::strip_ansi(text),
                Some(key),
                None,
                now,
            ));
            if let Some(t) = target
                && rules::is_terminal(Some(t))
            {
                out.extend(self.on_screen(set, ev, t, text, now));
            }
        }
        out
    }

    /// The secrets the reader masked in a write, as findings where they are the agent's doing.
    /// Masked everywhere; not reported through a pipe or a socketpair (between the agent's own
    /// processes: its harness reading `env` sees the key its user gave it), nor in a file its
    /// rule ignores (a secret its own transcript keeps of what it wrote is the same secret).
    fn secrets_in(&mut self, set: &RuleSet, ev: &Event, now: Instant) -> Vec<Finding> {
        let Body::Output {
            text,
            target,
            redacted,
            ..
        } = &ev.body
        else {
            return Vec::new();
        };
        let file = target.as_deref().filter(|t| is_file(Some(t)));
        if rules::is_local_channel(target.as_deref()) {
            return Vec::new();
        }
        let mut secrets = Vec::new();
        for id in redacted {
            if let Some(i) = set.rules.iter().position(|r| &r.id == id)
                && !file.is_some_and(|f| set.rules[i].ignore.matches(f))
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
                    in_kernel: false,
                    scope: Some(rules::write_scope(target.as_deref())),
                    path: file.map(String::from),
                });
            }
        }
        secrets
    }

    /// A file operation: renames carry the agent's pending writes along, work in the workspace
    /// counts as progress, and the path (both, for a rename or link) is matched.
    fn on_file(&mut self, set: &RuleSet, ev: &Event, now: Instant) -> Vec<Finding> {
        let Body::File {
            path, path2, op, ..
        } = &ev.body
        else {
            return Vec::new();
        };
        let a = self.act(ev.agent, now);
        let work = [Some(path), path2.as_ref()]
            .into_iter()
            .flatten()
            .any(|p| a.is_work(p));
        if work {
            a.last_file = now;
            if !matches!(op, FileOp::Unlink | FileOp::Rmdir) {
                a.files_written += 1;
            }
            // A file renamed into place (an atomic write) or removed changes the work too.
            a.wrote(path2.as_deref().unwrap_or(path), now);
        }
        let t = match path2 {
            Some(p2) => format!("{path} {p2}"),
            None => path.clone(),
        };
        self.on_bytes(set, ev, &[Scope::File], t, None, Some(path), now)
    }

    /// The agent's hook showed a write tool about to write `text` to `path` over `replaced`:
    /// the lines it adds are announced.
    pub(crate) fn announced(
        &mut self,
        agent: u64,
        path: &str,
        (text, replaced): (&str, &str),
        now: Instant,
    ) {
        let added = rules::new_lines(text, replaced);
        self.act(agent, now).announce(path, &added, now);
    }

    /// Findings of the `remote_code` rules for code from the network that ran (`run`).
    fn remote_run(
        &mut self,
        set: &RuleSet,
        ev: &Event,
        run: Option<netexec::RemoteRun>,
        now: Instant,
    ) -> Vec<Finding> {
        let Some(run) = run else {
            return Vec::new();
        };
        let rules: Vec<usize> = (0..set.rules.len())
            .filter(|&i| set.rules[i].kind == Kind::RemoteCode)
            .collect();
        rules
            .into_iter()
            .filter(|&i| self.cool(set, ev.agent, i, now))
            .map(|rule| Finding {
                agent: ev.agent,
                rule,
                detail: set
                    .redact(None, &run.detail)
                    .map_or(run.detail.clone(), |(m, _)| m),
                latency_us: Some((now_ns().saturating_sub(ev.time_ns)) as f64 / 1e3),
                pid: run.pid,
                in_kernel: false,
                scope: Some(Scope::Exec),
                path: None,
            })
            .collect()
    }

    /// The claims in `text` (an agent's last message, from a Claude Code Stop hook) that what
    /// the kernel saw contradicts: each one a finding with the evidence, through the rule's
    /// cooldown: `true` with a finding that is new (the same claim painted on its screen and
    /// reported already is not reported again).
    pub(crate) fn contradicted_claims(
        &mut self,
        set: &RuleSet,
        agent: u64,
        text: &str,
        now: Instant,
    ) -> Vec<Contradicted> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for h in set.scan(Scope::Terminal, text) {
            let r = &set.rules[h.rule];
            let Kind::Claim(verify) = r.kind else {
                continue;
            };
            if seen.contains(&h.rule) || !rules::asserted(text, h.start) {
                continue;
            }
            seen.push(h.rule);
            let after = text.get(h.end..).unwrap_or("");
            let Some(evidence) = self.act(agent, now).contradicts(verify, after) else {
                continue;
            };
            let fresh = self.cool(set, agent, h.rule, now);
            let f = Finding {
                agent,
                rule: h.rule,
                detail: format!("{}: {evidence}", rules::excerpt(text, &h, r.redact)),
                latency_us: None,
                pid: 0,
                in_kernel: false,
                scope: Some(Scope::Terminal),
                path: None,
            };
            out.push(Contradicted {
                finding: f,
                evidence,
                fresh,
            });
        }
        out
    }

    /// A hit that passed its prefilter and de-duplication: a claim is checked against what the
    /// agent did, a plugin rule becomes a candidate, the rest go through the cooldown.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &mut self,
        set: &RuleSet,
        ev: &Event,
        h: &Hit,
        text: &str,
        scope: Scope,
        path: Option<&str>,
        latency_us: Option<f64>,
        now: Instant,
    ) -> Option<Finding> {
        let r = &set.rules[h.rule];
        if let Kind::Claim(verify) = r.kind {
            // A question, an intent, a condition: no claim.
            if !rules::asserted(text, h.start) {
                return None;
            }
            let a = self.act(ev.agent, now);
            // A claim the record supports is no finding.
            a.contradicts(verify, text.get(h.end..).unwrap_or(""))?;
        }
        // A plugin rule's prefilter hit is only a candidate: its plugin decides, later.
        if r.plugin.is_some() {
            self.candidates.push(Candidate {
                agent: ev.agent,
                rule: h.rule,
                pid: ev.tgid,
                scope,
                comm: ev.comm.clone(),
                text: text.to_string(),
                latency_us,
            });
            return None;
        }
        if !self.cool(set, ev.agent, h.rule, now) {
            return None;
        }
        Some(Finding {
            agent: ev.agent,
            rule: h.rule,
            detail: rules::excerpt(text, h, r.redact),
            latency_us,
            pid: ev.tgid,
            in_kernel: false,
            scope: Some(scope),
            path: path.map(String::from),
        })
    }

    /// Matches bytes (a write's, with the tail of the same fd's previous writes in front; a
    /// command line; a path; an address) in each of `scopes`.
    #[allow(clippy::too_many_arguments)]
    fn on_bytes(
        &mut self,
        set: &RuleSet,
        ev: &Event,
        scopes: &[Scope],
        text: String,
        window: Option<(u32, i32, bool, &str)>,
        path: Option<&str>,
        now: Instant,
    ) -> Vec<Finding> {
        self.act(ev.agent, now);
        let window_key = window.map(|(t, fd, file, _)| (t, fd, file));
        let target = window.map_or("", |w| w.3);
        // The tail of this fd's previous output (to the same target) goes in front, for
        // phrases split across writes.
        let (full, fresh_from) =
            match window_key.and_then(|(t, fd, file)| self.windows.get(&t)?.get(&(fd, file))) {
                Some((to, prev)) if to == target => (format!("{prev}{text}"), prev.len()),
                _ => (text, 0),
            };
        // A match wholly inside the old tail was reported with the write it came in.
        let hits: Vec<(Scope, Hit)> = scopes
            .iter()
            .flat_map(|s| {
                set.scan_from(*s, &full, fresh_from)
                    .into_iter()
                    .map(move |h| (*s, h))
            })
            .collect();
        if let Some(k) = window_key {
            let mut cut = full.len().saturating_sub(WINDOW);
            while !full.is_char_boundary(cut) {
                cut += 1;
            }
            // The entry's strings are reused: this runs for every write.
            let (to, tail) = self
                .windows
                .entry(k.0)
                .or_default()
                .entry((k.1, k.2))
                .or_default();
            if to != target {
                to.clear();
                to.push_str(target);
            }
            tail.clear();
            tail.push_str(&full[cut..]);
        }
        let latency_us = Some((now_ns().saturating_sub(ev.time_ns)) as f64 / 1e3);
        let mut out = Vec::new();
        let key = window_key.map(|(t, fd, _)| (t, fd, ev.time_ns));
        for (scope, h) in hits {
            let r = &set.rules[h.rule];
            // Agent state (git internals, the agent's own transcripts) is not the agent's work;
            // a code-only rule does not judge docs and data.
            if scope == Scope::FileWrite
                && let Some(p) = path
                && (!r.judges_file(p, &full)
                    || !self.act(ev.agent, now).added(
                        p,
                        full.get(h.start..h.end).unwrap_or(""),
                        now,
                    ))
            {
                continue;
            }
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
            if scope == Scope::Output && self.echoed(set, ev.agent, &full, &h) {
                continue;
            }
            let Some(f) = self.judge(set, ev, &h, &full, scope, path, latency_us, now) else {
                continue;
            };
            out.extend(self.name_file(f, ev.time_ns));
        }
        out
    }

    /// The plugin rules' hits since the last time this was asked.
    pub(crate) fn take_candidates(&mut self) -> Vec<Candidate> {
        std::mem::take(&mut self.candidates)
    }

    /// A plugin's finding on a candidate, through its rule's cooldown.
    pub(crate) fn admit(
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
            in_kernel: false,
            scope: Some(c.scope),
            path: None,
        })
    }

    /// What bounds cut since the last call, by cause (for the loss counters).
    pub(crate) fn take_shed(&mut self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut shed = std::mem::take(&mut self.shed);
        for (cause, n) in self.screens.take_shed() {
            *shed.entry(cause).or_default() += n;
        }
        shed
    }

    /// Timeouts: planning (no file yet) and progress (no file activity lately).
    pub(crate) fn tick(&mut self, set: &RuleSet, now: Instant) -> Vec<Finding> {
        // A resized terminal: its screen follows.
        self.screens.follow_sizes();
        let mut out = self.release();
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
                in_kernel: false,
                scope: None,
                path: None,
            });
        }
        out
    }
}

/// What userspace still has to do: a `deny` the kernel enforced is done; one that only
/// userspace saw (a regex-only rule, bytes past the kernel's scan) ends the agent.
pub(crate) fn effective(action: Action, in_kernel: bool) -> Option<Action> {
    match action {
        Action::Deny if in_kernel => None,
        Action::Deny => Some(Action::Kill),
        a => Some(a),
    }
}

#[cfg(test)]
mod tests;
