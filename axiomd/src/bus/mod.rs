//! The event bus: every decoded event goes to every live subscriber, and the most recent ones are
//! kept in memory so a client that connects late (or after a restart) can replay them.
//!
//! A slow subscriber never slows the sensor: it falls behind on a bounded channel, and what it
//! missed is counted (`subscriber_lagged`), not silently dropped.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axiom_common::wire::Event;
use tokio::sync::broadcast;

pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
    replay: Mutex<VecDeque<Arc<Event>>>,
    replay_cap: usize,
    pub stats: Stats,
}

/// Event kinds, in the order of `Stats::events`.
pub const KINDS: [&str; 6] = ["fork", "exec", "exit", "output", "file", "connect"];

/// Counters by name, shown by `status`. Per-event counters are atomics: this is the hot path.
#[derive(Default)]
pub struct Stats {
    pub events: [AtomicU64; KINDS.len()],
    pub losses: Mutex<BTreeMap<&'static str, u64>>,
    pub lagged: AtomicU64,
}

impl Stats {
    pub fn count_event(&self, kind: &'static str) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.events[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn events(&self) -> BTreeMap<String, u64> {
        KINDS
            .iter()
            .zip(&self.events)
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn count_loss(&self, cause: &'static str) {
        if let Ok(mut m) = self.losses.lock() {
            *m.entry(cause).or_default() += 1;
        }
    }
}

impl Bus {
    pub fn new(capacity: usize, replay_cap: usize) -> Bus {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Bus {
            tx,
            replay: Mutex::new(VecDeque::with_capacity(replay_cap.min(1 << 16))),
            replay_cap,
            stats: Stats::default(),
        }
    }

    pub fn publish(&self, ev: Event) {
        self.stats.count_event(ev.body.kind());
        let ev = Arc::new(ev);
        // The replay lock is held across send so a subscriber sees each event exactly once:
        // either in its replay snapshot or on its channel.
        let Ok(mut r) = self.replay.lock() else {
            return;
        };
        if self.replay_cap > 0 {
            if r.len() >= self.replay_cap {
                r.pop_front();
            }
            r.push_back(ev.clone());
        }
        let _ = self.tx.send(ev);
    }

    /// A snapshot of the replay buffer (if asked) and a receiver for what follows it.
    pub fn subscribe(&self, replay: bool) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        match self.replay.lock() {
            Ok(r) => {
                let snap = if replay {
                    r.iter().cloned().collect()
                } else {
                    Vec::new()
                };
                (snap, self.tx.subscribe())
            }
            Err(_) => (Vec::new(), self.tx.subscribe()),
        }
    }

    pub fn lagged(&self, n: u64) {
        self.stats.lagged.fetch_add(n, Ordering::Relaxed);
    }
}
