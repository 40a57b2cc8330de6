//! Rules in userspace: the follow-up stage. Every event of a tracked agent is matched against
//! the active rule set (literal prefilter, then the full regex over a context window that spans
//! consecutive writes of the same fd; for its terminal, over the rows of its emulated screen that
//! changed), claims are checked against what the kernel saw the agent do, timeouts are checked
//! once a second, cooldowns de-duplicate per agent and rule — and each finding becomes a
//! `violation` event and, by the rule's action, an intervention.
pub(crate) mod config;
pub(crate) mod engine;
pub(crate) mod replay;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
};

use axiom_rules::{RuleError, RuleSet};

use crate::{agents::Agents, bus::Bus};

/// Where the rules stage sends what it finds when a rule acts; the actions stage implements it,
/// so that the rules never name the actions (or anything above them).
pub(crate) trait Enforce: Send + Sync {
    /// A finding whose rule acts (anything but `alert`): carry out its intervention.
    fn submit(&self, set: &Arc<RuleSet>, f: engine::Finding);
    /// A plugin that was stopped (fuel, memory, a trap): report it.
    fn plugin_fault(&self, set: &RuleSet, f: &engine::PluginFault);
    /// A finding about the agent's work (any rule's): whether its hooks ran before it.
    fn note_work(&self, agent: &crate::agents::Agent, what: &str);
}

/// What the rules stage works with: the rule set, the per-agent state, the registry (to name
/// the agent in a violation), the bus it reports on, and the stage it hands interventions to.
pub(crate) struct Stage {
    pub(crate) rules: Arc<Rules>,
    pub(crate) engine: Arc<Mutex<engine::Engine>>,
    pub(crate) agents: Arc<Agents>,
    pub(crate) bus: Arc<Bus>,
    pub(crate) actions: Arc<dyn Enforce>,
}

/// The one question the actions may put to the rules' per-agent state: which claims in an
/// agent's last message (a Stop hook's) what the kernel saw contradicts. The engine stays the
/// rules' own; its lock is taken only here and in this stage's threads.
#[derive(Clone)]
pub(crate) struct Claims(Arc<Mutex<engine::Engine>>);

impl Claims {
    pub(crate) fn of(engine: &Arc<Mutex<engine::Engine>>) -> Claims {
        Claims(engine.clone())
    }

    /// An agent's hook showed a tool call that writes `text` to `path` over `replaced` (before
    /// it runs): what the file already holds is not the agent's to answer for when the write
    /// lands.
    pub(crate) fn announced(&self, agent: u64, path: &str, text: &str, replaced: &str) {
        if let Ok(mut e) = self.0.lock() {
            e.announced(agent, path, (text, replaced), std::time::Instant::now());
        }
    }

    pub(crate) fn contradicted(
        &self,
        set: &RuleSet,
        agent: u64,
        text: &str,
        now: std::time::Instant,
    ) -> Vec<engine::Contradicted> {
        match self.0.lock() {
            Ok(mut e) => e.contradicted_claims(set, agent, text, now),
            Err(_) => Vec::new(),
        }
    }
}

/// The active rule set and where it came from; a reload replaces it only if the new one loads.
pub(crate) struct Rules {
    current: RwLock<Arc<RuleSet>>,
    pub(crate) paths: Vec<PathBuf>,
    /// The rule set behind each kernel matcher table: a match record names its table, and a
    /// reload must not make an old table's states mean the new set's rules.
    tables: std::sync::Mutex<[Option<Arc<RuleSet>>; 2]>,
}

impl Rules {
    pub(crate) fn load(paths: Vec<PathBuf>) -> Result<Rules, RuleError> {
        let set = RuleSet::load(&paths)?;
        Ok(Rules {
            current: RwLock::new(Arc::new(set)),
            paths,
            tables: Default::default(),
        })
    }

    /// Records which rule set kernel table `t` (1 or 2) holds.
    pub(crate) fn set_table(&self, t: u16, set: Arc<RuleSet>) {
        if let (Ok(mut g), Some(i)) = (self.tables.lock(), (t as usize).checked_sub(1))
            && let Some(slot) = g.get_mut(i)
        {
            *slot = Some(set);
        }
    }

    /// The rule set kernel table `t` was built from.
    pub(crate) fn table(&self, t: u16) -> Option<Arc<RuleSet>> {
        let g = self.tables.lock().ok()?;
        g.get((t as usize).checked_sub(1)?)?.clone()
    }

    pub(crate) fn get(&self) -> Arc<RuleSet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Loads the rule files again and puts their literals into the kernel matcher. On error the
    /// old rules keep running, in userspace and in the kernel.
    pub(crate) fn reload_into(&self, sensor: &crate::kernel::Sensor) -> Result<usize, RuleError> {
        let set = self.reload()?;
        self.install(sensor, set.clone());
        Ok(set.rules.len())
    }

    /// Puts a rule set's literals into the kernel (a failure leaves matching to userspace).
    pub(crate) fn install(&self, sensor: &crate::kernel::Sensor, set: Arc<RuleSet>) {
        let table = sensor.install_matcher(set.kernel.as_ref().map(|k| &*k.table));
        match table {
            Ok(0) => {}
            Ok(t) => {
                if let Some(k) = &set.kernel {
                    tracing::info!(
                        table = t,
                        states = k.states,
                        classes = k.classes,
                        literals = k.patterns.len(),
                        "kernel matcher installed"
                    );
                }
                self.set_table(t, set);
            }
            Err(e) => tracing::warn!("kernel matcher not installed, userspace matches alone: {e}"),
        }
    }

    /// The active rules as `axiomctl rules list` shows them.
    pub(crate) fn list(&self) -> Vec<axiom_proto::wire::RuleInfo> {
        use axiom_rules::Kind;
        self.get()
            .rules
            .iter()
            .map(|r| axiom_proto::wire::RuleInfo {
                id: r.id.clone(),
                description: r.description.clone(),
                kind: match r.kind {
                    Kind::Match => "match",
                    Kind::Claim(_) => "claim",
                    Kind::PlanningTimeout(_) => "planning_timeout",
                    Kind::ProgressCheck(_) => "progress_check",
                    Kind::Plugin => "plugin",
                    Kind::RemoteCode => "remote_code",
                }
                .into(),
                scope: (!r.scopes.is_empty()).then(|| {
                    r.scopes
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(",")
                }),
                severity: r.severity,
                priority: r.priority,
                action: r.action.wire(),
                origin: r.origin.clone(),
            })
            .collect()
    }

    /// Loads the rule files again. On any error the old rules keep running.
    pub(crate) fn reload(&self) -> Result<Arc<RuleSet>, RuleError> {
        let set = Arc::new(RuleSet::load(&self.paths)?);
        match self.current.write() {
            Ok(mut g) => *g = set.clone(),
            Err(p) => *p.into_inner() = set.clone(),
        }
        Ok(set)
    }
}

/// The `violation` event of rule `r` about `agent` (`detail`: the match in its context, secrets
/// masked): one way for the sensor's findings and for what an agent's hook asked about.
pub(crate) fn violation(
    agent: &crate::agents::Agent,
    r: &axiom_rules::Rule,
    detail: String,
    scope: Option<axiom_rules::Scope>,
    path: Option<String>,
    latency_us: Option<f64>,
) -> axiom_proto::wire::Event {
    crate::agents::notice(
        agent,
        axiom_proto::wire::Body::Violation {
            rule: r.id.clone(),
            severity: r.severity,
            action: r.action.wire(),
            detail,
            latency_us,
            scope: scope.map(axiom_rules::Scope::wire),
            path,
        },
    )
}

/// Reports a finding where it was found: its `violation` event now, then — when its rule acts —
/// the finding goes to the actions stage, which carries out and reports the intervention.
pub(crate) fn report(stage: &Stage, set: &Arc<RuleSet>, f: engine::Finding) {
    let Some(r) = set.rules.get(f.rule) else {
        return;
    };
    let Some(agent) = stage.agents.get(f.agent) else {
        return;
    };
    let mut v = violation(
        &agent,
        r,
        f.detail.clone(),
        f.scope,
        f.path.clone(),
        f.latency_us,
    );
    if f.pid != 0 {
        (v.pid, v.tgid) = (f.pid, f.pid);
    }
    stage.bus.publish(v);
    stage
        .actions
        .note_work(&agent, &format!("its work (rule {}) was seen", r.id));
    if r.action != axiom_rules::Action::Alert {
        stage.actions.submit(set, f);
    }
}

/// Matches a kernel match record where it arrives (the reader thread): detection latency is
/// the ring wakeup and this, not a hand-off to another thread.
pub(crate) fn on_kernel_match(stage: &Stage, ev: &axiom_proto::wire::Event) {
    let axiom_proto::wire::Body::KernelMatch { table, .. } = &ev.body else {
        return;
    };
    // The states mean what the table's own rule set says.
    let Some(kset) = stage.rules.table(*table) else {
        return;
    };
    let findings = match stage.engine.lock() {
        Ok(mut e) => e.on_kernel_match(&kset, ev, std::time::Instant::now()),
        Err(_) => return,
    };
    for f in findings {
        report(stage, &kset, f);
    }
}

/// Held findings the kernel's record has passed (the sensor's mark `read_to`), reported; false
/// if the engine's lock is poisoned.
fn release(stage: &Stage, set: &Arc<RuleSet>, read_to: u64) -> bool {
    let findings = match stage.engine.lock() {
        Ok(mut e) => {
            e.read_to(read_to);
            e.release()
        }
        Err(_) => return false,
    };
    for f in findings {
        report(stage, set, f);
    }
    true
}

/// The rules thread: matches every other tracked event, ticks the timeouts once a second, and
/// turns each finding into a `violation` event and its intervention. Returns once `stop` is set
/// and what was queued before it is matched (or if the engine's lock is poisoned: the daemon
/// sees the thread end and stops).
pub(crate) fn run(
    rx: crate::bus::RulesQueue,
    stage: Arc<Stage>,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::{sync::mpsc::RecvTimeoutError, time::Instant};
    let mut last_tick = Instant::now();
    loop {
        let set = stage.rules.get();
        // Findings held for a rename wait on the sensor's mark: look at it often meanwhile.
        let wait = match stage.engine.lock() {
            _ if stop.load(std::sync::atomic::Ordering::Relaxed) => {
                std::time::Duration::from_millis(1)
            }
            Ok(e) if e.holding() => std::time::Duration::from_millis(50),
            _ => std::time::Duration::from_secs(1),
        };
        // Read before the queue: once it is then found empty, every record before the mark
        // has been matched, and a held finding past it will see no rename.
        let read_to = rx.read_to();
        match rx.recv_timeout(wait) {
            Ok(batch) => {
                for ev in batch {
                    if matches!(ev.body, axiom_proto::wire::Body::KernelMatch { .. }) {
                        on_kernel_match(&stage, &ev);
                        continue;
                    }
                    // The engine is locked per event: the reader takes it for kernel matches.
                    let (findings, candidates) = match stage.engine.lock() {
                        Ok(mut e) => (e.on_event(&set, &ev, Instant::now()), e.take_candidates()),
                        Err(_) => return,
                    };
                    for f in findings {
                        report(&stage, &set, f);
                    }
                    judge(&stage, &set, candidates);
                }
                if rx.is_empty() && !release(&stage, &set, read_to) {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if !release(&stage, &set, read_to) {
                    return;
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if last_tick.elapsed() >= std::time::Duration::from_secs(1) {
            last_tick = Instant::now();
            let (findings, shed) = match stage.engine.lock() {
                Ok(mut e) => (e.tick(&set, last_tick), e.take_shed()),
                Err(_) => return,
            };
            for (cause, n) in shed {
                stage.bus.stats.count_losses(cause, n);
            }
            for f in findings {
                report(&stage, &set, f);
            }
        }
    }
}

/// Plugin rules' candidates, each judged by its plugin in its sandbox with the engine unlocked;
/// a finding goes through the rule's cooldown, a stopped call is reported as a denial.
fn judge(stage: &Stage, set: &Arc<RuleSet>, candidates: Vec<engine::Candidate>) {
    use axiom_rules::{FollowUp, Subject};
    for c in candidates {
        let Some(rule) = set.rules.get(c.rule) else {
            continue;
        };
        let Some(p) = &rule.plugin else {
            continue;
        };
        let subject = Subject {
            rule: &rule.id,
            scope: c.scope,
            text: &c.text,
            agent: c.agent,
            pid: c.pid,
            comm: &c.comm,
        };
        match p.follow_up(&subject) {
            FollowUp::Finding(detail) => {
                let now = std::time::Instant::now();
                let f = match stage.engine.lock() {
                    Ok(mut e) => e.admit(set, &c, detail, now),
                    Err(_) => return,
                };
                if let Some(f) = f {
                    report(stage, set, f);
                }
            }
            FollowUp::Pass | FollowUp::Disabled => {}
            FollowUp::Fault { fault, disabled } => stage.actions.plugin_fault(
                set,
                &engine::PluginFault {
                    agent: c.agent,
                    rule: c.rule,
                    pid: c.pid,
                    fault,
                    disabled,
                },
            ),
        }
    }
}

impl crate::bus::Describe for Rules {
    /// The bounds on an agent's emulated screens.
    fn describe(&self, st: &mut axiom_proto::wire::Status) {
        use axiom_rules::screen::{MAX_COLS, MAX_ROWS};
        st.bounds.extend([
            ("screen_rows".to_string(), u64::from(MAX_ROWS)),
            ("screen_cols".to_string(), u64::from(MAX_COLS)),
            (
                "screens_per_agent".to_string(),
                crate::screens::SCREENS_PER_AGENT as u64,
            ),
        ]);
    }
}

#[cfg(test)]
mod tests {
    //! Enforcement without a kernel: a finding becomes a violation on the bus, and reaches the
    //! actions stage only when its rule acts.
    use super::*;
    use crate::{
        agents::{Registry, tables::Memory},
        authz::Caller,
    };

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Enforce for Recorder {
        fn submit(&self, set: &Arc<RuleSet>, f: engine::Finding) {
            if let Ok(mut v) = self.0.lock() {
                v.push(set.rules[f.rule].id.clone());
            }
        }
        fn plugin_fault(&self, _: &RuleSet, _: &engine::PluginFault) {}
        fn note_work(&self, _: &crate::agents::Agent, _: &str) {}
    }

    #[test]
    fn a_finding_is_reported_and_handed_on_only_when_its_rule_acts() {
        let dir = std::env::temp_dir().join(format!("axiom-rules-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("r.toml");
        std::fs::write(
            &file,
            r#"
[[rule]]
id = "told"
scope = "output"
literals = ["x"]
severity = "high"
action = "inject"
message = "stop it"

[[rule]]
id = "noted"
scope = "output"
literals = ["y"]
severity = "low"
action = "alert"
"#,
        )
        .unwrap();
        let rules = Arc::new(Rules::load(vec![file]).unwrap());
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let mut registry = Registry::restore(Box::new(Memory::default()), None);
        let agent = registry.track_pid(child.id(), Caller::ROOT).unwrap();
        let (bus, _taps) = Bus::new(64, 64);
        let bus = Arc::new(bus);
        let (_, mut rx) = bus.subscribe(false);
        let recorder = Arc::new(Recorder::default());
        let stage = Stage {
            rules: rules.clone(),
            engine: Default::default(),
            agents: Agents::new(registry),
            bus,
            actions: recorder.clone(),
        };
        let set = rules.get();
        for id in ["told", "noted"] {
            let rule = set.rules.iter().position(|r| r.id == id).unwrap();
            let f = engine::Finding {
                agent,
                rule,
                detail: format!("{id} detail"),
                latency_us: Some(1.0),
                pid: child.id(),
                in_kernel: false,
                scope: None,
                path: None,
            };
            report(&stage, &set, f);
        }
        let mut seen = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if let axiom_proto::wire::Body::Violation {
                rule,
                severity,
                action,
                ..
            } = &ev.body
            {
                assert_eq!(ev.agent, agent);
                assert_eq!(ev.tgid, child.id());
                seen.push((rule.clone(), severity.name(), action.name()));
            }
        }
        assert_eq!(
            seen,
            [
                ("told".to_string(), "high", "inject"),
                ("noted".to_string(), "low", "alert")
            ]
        );
        assert_eq!(
            *recorder.0.lock().unwrap(),
            ["told"],
            "an alert was acted on"
        );
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
