//! Rules in userspace: the follow-up stage. Every event of a tracked agent is matched against
//! the active rule set (literal prefilter, then the full regex over a context window that spans
//! consecutive writes of the same fd), claims are checked against what the kernel saw the agent
//! do, timeouts are checked once a second, cooldowns de-duplicate per agent and rule — and each
//! finding becomes a `violation` event and, by the rule's action, an intervention.
pub mod engine;

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

use axiom_common::rules::{RuleError, RuleSet};

/// The active rule set and where it came from; a reload replaces it only if the new one loads.
pub struct Rules {
    current: RwLock<Arc<RuleSet>>,
    pub paths: Vec<PathBuf>,
}

impl Rules {
    pub fn load(paths: Vec<PathBuf>) -> Result<Rules, RuleError> {
        let set = RuleSet::load(&paths)?;
        Ok(Rules {
            current: RwLock::new(Arc::new(set)),
            paths,
        })
    }

    pub fn get(&self) -> Arc<RuleSet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Loads the rule files again. On any error the old rules keep running.
    pub fn reload(&self) -> Result<usize, RuleError> {
        let set = RuleSet::load(&self.paths)?;
        let n = set.rules.len();
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
        Ok(n)
    }
}

/// The rules thread: matches every tracked event, ticks the timeouts once a second, and turns
/// each finding into a `violation` event and its intervention.
pub fn run(
    rx: std::sync::mpsc::Receiver<Arc<axiom_common::wire::Event>>,
    shared: Arc<crate::api::Shared>,
) {
    use std::{sync::mpsc::RecvTimeoutError, time::Instant};
    let mut engine = engine::Engine::default();
    let mut last_tick = Instant::now();
    loop {
        let set = shared.rules.get();
        let findings = match rx.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(ev) => engine.on_event(&set, &ev, Instant::now()),
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for f in findings {
            shared.enforce(&set, &f);
        }
        if last_tick.elapsed() >= std::time::Duration::from_secs(1) {
            last_tick = Instant::now();
            for f in engine.tick(&set, last_tick) {
                shared.enforce(&set, &f);
            }
        }
    }
}
