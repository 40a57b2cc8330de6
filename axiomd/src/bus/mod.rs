//! The event bus: every decoded event goes to every live subscriber, and the most recent ones are
//! kept in memory so a client that connects late (or after a restart) can replay them.
//!
//! A slow subscriber never slows the sensor: it falls behind on a bounded channel, and what it
//! missed is counted (`subscriber_lagged`), not silently dropped.
pub mod tap;
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axiom_proto::wire::Event;
use tokio::sync::broadcast;

pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
    /// Agent lifecycle, interventions and violations only: a channel of their own so that a
    /// flood of output can never push one out before the D-Bus signal is sent.
    notices: broadcast::Sender<Arc<Event>>,
    /// Exits of tracked processes, lossless: the agent registry learns here that an agent ended.
    exits: tokio::sync::mpsc::UnboundedSender<Arc<Event>>,
    /// Tracked agents' events for the rules; bounded: what does not fit is counted, not waited for.
    rules: std::sync::mpsc::SyncSender<Arc<Event>>,
    replay: Mutex<Replay>,
    replay_cap: usize,
    /// The store's back-pressure counters (when the store is on).
    store_pressure: Option<Arc<tap::Pressure>>,
    pub stats: Stats,
}

/// Lossless or counted side channels, each for one consumer.
pub struct Taps {
    pub exits: tokio::sync::mpsc::UnboundedReceiver<Arc<Event>>,
    pub rules: std::sync::mpsc::Receiver<Arc<Event>>,
}

struct Replay {
    events: VecDeque<Arc<Event>>,
    seq: u64,
    /// The store's tap (when the store is on), under the lock that numbers events so that the
    /// store receives them in `seq` order and `close_store` cannot cut one in half.
    store: Option<tap::Tap>,
}

use axiom_proto::wire::Kind;

/// Counters by name, shown by `status`. Per-event counters are atomics: this is the hot path.
#[derive(Default)]
pub struct Stats {
    /// By `Kind as usize`.
    pub events: [AtomicU64; Kind::ALL.len()],
    pub losses: Mutex<BTreeMap<&'static str, u64>>,
    pub lagged: AtomicU64,
    /// Writes whose bytes were not text (TLS records, binary IPC): counted, not kept as text.
    pub binary_writes: AtomicU64,
    pub binary_bytes: AtomicU64,
    /// Writes longer than the capture: their tail was not inspected.
    pub past_capture: AtomicU64,
}

impl Stats {
    pub fn count_event(&self, kind: Kind) {
        if let Some(n) = self.events.get(kind as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn events(&self) -> BTreeMap<String, u64> {
        let mut m: BTreeMap<String, u64> = Kind::ALL
            .iter()
            .zip(&self.events)
            .map(|(k, v)| (k.name().to_string(), v.load(Ordering::Relaxed)))
            .collect();
        m.insert(
            "output_binary".into(),
            self.binary_writes.load(Ordering::Relaxed),
        );
        m.insert(
            "output_binary_bytes".into(),
            self.binary_bytes.load(Ordering::Relaxed),
        );
        m.insert(
            "output_past_capture".into(),
            self.past_capture.load(Ordering::Relaxed),
        );
        m
    }

    pub fn count_loss(&self, cause: &'static str) {
        if let Ok(mut m) = self.losses.lock() {
            *m.entry(cause).or_default() += 1;
        }
    }
}

/// A subscription: the replayed events, then the live ones.
pub type Subscribed = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

impl Bus {
    /// The bus, and the receiving ends of its taps.
    pub fn new(capacity: usize, replay_cap: usize) -> (Bus, Taps) {
        let (tx, _) = broadcast::channel(capacity.max(16));
        let (notices, _) = broadcast::channel(4096);
        let (exits, exits_rx) = tokio::sync::mpsc::unbounded_channel();
        let (rules, rules_rx) = std::sync::mpsc::sync_channel(capacity.max(16));
        let bus = Bus {
            tx,
            notices,
            exits,
            rules,
            replay: Mutex::new(Replay {
                events: VecDeque::with_capacity(replay_cap.min(1 << 16)),
                seq: 0,
                store: None,
            }),
            replay_cap,
            store_pressure: None,
            stats: Stats::default(),
        };
        (
            bus,
            Taps {
                exits: exits_rx,
                rules: rules_rx,
            },
        )
    }

    /// Sends every published event to the store too.
    pub fn with_store(mut self, tap: tap::Tap) -> Bus {
        self.store_pressure = Some(tap.shared_pressure());
        if let Ok(r) = self.replay.get_mut() {
            r.store = Some(tap);
        }
        self
    }

    /// The store's back-pressure counters (none when the store is off).
    pub fn store_pressure(&self) -> Option<&tap::Pressure> {
        self.store_pressure.as_deref()
    }

    /// Lets go of the store's tap (at a clean stop, once nothing upstream publishes): what it
    /// holds is queued, and the store's writer, seeing its intake end, commits the rest and
    /// returns. Events published after this are not stored.
    pub fn close_store(&self) {
        let tap = self.replay.lock().ok().and_then(|mut r| r.store.take());
        drop(tap);
    }

    /// Numbers the event (its `seq`) and hands it to every subscriber.
    pub fn publish(&self, mut ev: Event) {
        self.stats.count_event(ev.body.kind());
        // The replay lock is held across send so a subscriber sees each event exactly once:
        // either in its replay snapshot or on its channel; it also orders `seq`.
        let Ok(mut r) = self.replay.lock() else {
            return;
        };
        r.seq += 1;
        ev.seq = r.seq;
        let ev = Arc::new(ev);
        if self.replay_cap > 0 {
            if r.events.len() >= self.replay_cap {
                r.events.pop_front();
            }
            r.events.push_back(ev.clone());
        }
        use axiom_proto::wire::Body;
        if let Some(t) = &r.store {
            t.offer(&ev);
        }
        if ev.body.is_notice() {
            let _ = self.notices.send(ev.clone());
        } else if ev.agent != 0 && matches!(ev.body, Body::Exit { .. }) {
            let _ = self.exits.send(ev.clone());
        }
        // Rules see what agents do and how they start and end, never their own findings.
        if ev.agent != 0
            && !matches!(ev.body, Body::Violation { .. } | Body::Intervention { .. })
            && let Err(std::sync::mpsc::TrySendError::Full(_)) = self.rules.try_send(ev.clone())
        {
            self.stats.count_loss("rules_backlog");
        }
        let _ = self.tx.send(ev);
    }

    /// An event only the rules see (kernel matches): counted, not numbered, not broadcast.
    pub fn to_rules(&self, ev: Event) {
        self.stats.count_event(ev.body.kind());
        if let Err(std::sync::mpsc::TrySendError::Full(_)) = self.rules.try_send(Arc::new(ev)) {
            self.stats.count_loss("rules_backlog");
        }
    }

    /// Agent lifecycle, interventions and violations, from now on.
    pub fn notices(&self) -> broadcast::Receiver<Arc<Event>> {
        self.notices.subscribe()
    }

    /// A snapshot of the replay buffer (if asked) and a receiver for what follows it.
    pub fn subscribe(&self, replay: bool) -> Subscribed {
        match self.replay.lock() {
            Ok(r) => {
                let snap = if replay {
                    r.events.iter().cloned().collect()
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
