//! The event bus: every decoded event goes to every live subscriber, and the most recent ones are
//! kept in memory so a client that connects late (or after a restart) can replay them.
//!
//! A slow subscriber never slows the sensor: it falls behind on a bounded channel, and what it
//! missed is counted (`subscriber_lagged`), not silently dropped.
pub(crate) mod tap;
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use axiom_proto::wire::Event;
use tokio::sync::broadcast;

pub(crate) struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
    /// Agent lifecycle, interventions and violations only: a channel of their own so that a
    /// flood of output can never push one out before the D-Bus signal is sent.
    notices: broadcast::Sender<Arc<Event>>,
    /// Exits of tracked processes, lossless: the agent registry learns here that an agent ended.
    exits: tokio::sync::mpsc::UnboundedSender<Arc<Event>>,
    /// Tracked agents' events for the rules, in batches (one per reader pass: the rules thread
    /// is woken once a batch, not once an event); bounded by the events queued: what does not
    /// fit is counted, not waited for.
    rules: std::sync::mpsc::Sender<Vec<Arc<Event>>>,
    rules_queued: Arc<AtomicUsize>,
    /// The sensor's mark (wall ns): every kernel record stamped before it has been queued.
    read_to: Arc<AtomicU64>,
    rules_cap: usize,
    replay: Mutex<Replay>,
    replay_cap: usize,
    /// The store's back-pressure counters (when the store is on).
    store_pressure: Option<Arc<tap::Pressure>>,
    pub(crate) stats: Stats,
}

/// Lossless or counted side channels, each for one consumer.
pub(crate) struct Taps {
    pub(crate) exits: tokio::sync::mpsc::UnboundedReceiver<Arc<Event>>,
    pub(crate) rules: RulesQueue,
}

/// The receiving end of the rules' queue.
pub(crate) struct RulesQueue {
    rx: std::sync::mpsc::Receiver<Vec<Arc<Event>>>,
    queued: Arc<AtomicUsize>,
    read_to: Arc<AtomicU64>,
}

impl RulesQueue {
    /// The next batch, waiting at most `d`; its events leave the queue's count.
    pub(crate) fn recv_timeout(
        &self,
        d: std::time::Duration,
    ) -> Result<Vec<Arc<Event>>, std::sync::mpsc::RecvTimeoutError> {
        let b = self.rx.recv_timeout(d)?;
        self.queued.fetch_sub(b.len(), Ordering::Relaxed);
        Ok(b)
    }

    /// The sensor's mark: every kernel record stamped before it (wall ns) has been queued. Read
    /// it before a `recv_timeout`; once the queue is then found empty, every record before the
    /// mark has been received (a batch is queued before the mark that covers it is set).
    pub(crate) fn read_to(&self) -> u64 {
        self.read_to.load(Ordering::Acquire)
    }

    /// Nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }
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
pub(crate) struct Stats {
    /// By `Kind as usize`.
    pub(crate) events: [AtomicU64; Kind::ALL.len()],
    pub(crate) losses: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) lagged: AtomicU64,
    /// Writes whose bytes were not text (TLS records, binary IPC): counted, not kept as text.
    pub(crate) binary_writes: AtomicU64,
    pub(crate) binary_bytes: AtomicU64,
    /// Writes longer than the capture: their tail was not inspected.
    pub(crate) past_capture: AtomicU64,
}

impl Stats {
    pub(crate) fn count_event(&self, kind: Kind) {
        if let Some(n) = self.events.get(kind as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn events(&self) -> BTreeMap<String, u64> {
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

    pub(crate) fn count_loss(&self, cause: &'static str) {
        self.count_losses(cause, 1);
    }

    pub(crate) fn count_losses(&self, cause: &'static str, n: u64) {
        if let Ok(mut m) = self.losses.lock() {
            *m.entry(cause).or_default() += n;
        }
    }
}

/// A subscription: the replayed events, then the live ones.
pub(crate) type Subscribed = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

impl Bus {
    /// The bus, and the receiving ends of its taps.
    pub(crate) fn new(capacity: usize, replay_cap: usize) -> (Bus, Taps) {
        let (tx, _) = broadcast::channel(capacity.max(16));
        let (notices, _) = broadcast::channel(4096);
        let (exits, exits_rx) = tokio::sync::mpsc::unbounded_channel();
        let (rules, rules_rx) = std::sync::mpsc::channel();
        let rules_queued = Arc::new(AtomicUsize::new(0));
        let read_to = Arc::new(AtomicU64::new(0));
        let bus = Bus {
            tx,
            notices,
            exits,
            rules,
            rules_queued: rules_queued.clone(),
            read_to: read_to.clone(),
            rules_cap: capacity.max(16),
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
                rules: RulesQueue {
                    rx: rules_rx,
                    queued: rules_queued,
                    read_to,
                },
            },
        )
    }

    /// Sends every published event to the store too.
    pub(crate) fn with_store(mut self, tap: tap::Tap) -> Bus {
        self.store_pressure = Some(tap.shared_pressure());
        if let Ok(r) = self.replay.get_mut() {
            r.store = Some(tap);
        }
        self
    }

    /// The store's back-pressure counters (none when the store is off).
    pub(crate) fn store_pressure(&self) -> Option<&tap::Pressure> {
        self.store_pressure.as_deref()
    }

    /// Lets go of the store's tap (at a clean stop, once nothing upstream publishes): what it
    /// holds is queued, and the store's writer, seeing its intake end, commits the rest and
    /// returns. Events published after this are not stored.
    pub(crate) fn close_store(&self) {
        let tap = self.replay.lock().ok().and_then(|mut r| r.store.take());
        drop(tap);
    }

    /// Numbers the event (its `seq`) and hands it to every subscriber.
    pub(crate) fn publish(&self, ev: Event) {
        self.publish_all(std::iter::once(ev));
    }

    /// Numbers the events and hands them to every subscriber; the rules get them as one batch.
    pub(crate) fn publish_all(&self, evs: impl IntoIterator<Item = Event>) {
        use axiom_proto::wire::Body;
        let mut for_rules = Vec::new();
        {
            // The replay lock is held across send so a subscriber sees each event exactly
            // once: either in its replay snapshot or on its channel; it also orders `seq`.
            let Ok(mut r) = self.replay.lock() else {
                return;
            };
            for mut ev in evs {
                self.stats.count_event(ev.body.kind());
                r.seq += 1;
                ev.seq = r.seq;
                let ev = Arc::new(ev);
                if self.replay_cap > 0 {
                    if r.events.len() >= self.replay_cap {
                        r.events.pop_front();
                    }
                    r.events.push_back(ev.clone());
                }
                if let Some(t) = &r.store {
                    t.offer(&ev);
                }
                if ev.body.is_notice() {
                    let _ = self.notices.send(ev.clone());
                } else if ev.agent != 0 && matches!(ev.body, Body::Exit { .. }) {
                    let _ = self.exits.send(ev.clone());
                }
                // Rules see what agents do and how they start and end, never their own
                // findings.
                if ev.agent != 0
                    && !matches!(ev.body, Body::Violation { .. } | Body::Intervention { .. })
                {
                    for_rules.push(ev.clone());
                }
                let _ = self.tx.send(ev);
            }
        }
        self.to_rules_batch(for_rules);
    }

    /// The sensor has queued every kernel record stamped before `ns` (wall ns): what the rules
    /// wait for in the kernel's record (an atomic write's rename) is measured by this mark, not by
    /// the rules thread's clock, so a reader that falls behind cannot make them give up early.
    pub(crate) fn mark_read_to(&self, ns: u64) {
        self.read_to.fetch_max(ns, Ordering::Release);
    }

    /// An event only the rules see (kernel matches): counted, not numbered, not broadcast.
    pub(crate) fn to_rules(&self, ev: Event) {
        self.stats.count_event(ev.body.kind());
        self.to_rules_batch(vec![Arc::new(ev)]);
    }

    /// Queues a batch for the rules: what does not fit under the bound is counted and left.
    fn to_rules_batch(&self, mut batch: Vec<Arc<Event>>) {
        let room = self
            .rules_cap
            .saturating_sub(self.rules_queued.load(Ordering::Relaxed));
        if batch.len() > room {
            self.stats
                .count_losses("rules_backlog", (batch.len() - room) as u64);
            batch.truncate(room);
        }
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        self.rules_queued.fetch_add(n, Ordering::Relaxed);
        if self.rules.send(batch).is_err() {
            self.rules_queued.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Agent lifecycle, interventions and violations, from now on.
    pub(crate) fn notices(&self) -> broadcast::Receiver<Arc<Event>> {
        self.notices.subscribe()
    }

    /// A snapshot of the replay buffer (if asked) and a receiver for what follows it.
    pub(crate) fn subscribe(&self, replay: bool) -> Subscribed {
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

    pub(crate) fn lagged(&self, n: u64) {
        self.stats.lagged.fetch_add(n, Ordering::Relaxed);
    }
}

/// A stage's part of `axiomctl status` (and of the metrics built from it): each fills in what
/// it alone knows, and the status is their composition, not one room reading all the others.
pub(crate) trait Describe: Send + Sync {
    fn describe(&self, st: &mut axiom_proto::wire::Status);
}

impl Describe for Bus {
    /// Events handled, losses by cause, the store queue's pressure and lagging subscribers.
    fn describe(&self, st: &mut axiom_proto::wire::Status) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        st.events = self.stats.events();
        if let Ok(m) = self.stats.losses.lock() {
            st.lost.extend(m.iter().map(|(k, v)| (k.to_string(), *v)));
        }
        if let Some(p) = self.store_pressure() {
            st.lost
                .insert("store_shed_output".into(), get(&p.shed_output));
            st.lost
                .insert("store_coalesced_output".into(), get(&p.coalesced_output));
            st.lost
                .insert("store_shed_critical".into(), get(&p.shed_critical));
            st.store.insert("queued_bytes".into(), get(&p.queued_bytes));
        }
        st.lost
            .insert("subscriber_lagged".into(), get(&self.stats.lagged));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axiom_proto::wire::Body;

    fn fork(agent: u64, child_pid: u32) -> Event {
        Event {
            seq: 0,
            time_ns: 0,
            agent,
            pid: 10,
            tgid: 10,
            ppid: 1,
            uid: 1000,
            cgroup_id: 0,
            comm: "agent".into(),
            truncated: false,
            body: Body::Fork { child_pid },
        }
    }

    #[test]
    fn the_rules_get_a_pass_as_one_batch_bounded_by_events() {
        let (bus, taps) = Bus::new(16, 0);
        let wait = std::time::Duration::from_millis(10);
        // Untracked processes' events are not the rules' business.
        bus.publish_all((0..3).map(|i| fork(if i == 1 { 0 } else { 7 }, i)));
        let b = taps.rules.recv_timeout(wait).expect("one batch");
        let seqs: Vec<u64> = b.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 3]);
        assert!(taps.rules.recv_timeout(wait).is_err());
        // A pass larger than the room left: what fits goes, the rest is counted.
        bus.publish_all((0..10).map(|i| fork(7, i)));
        bus.publish_all((0..10).map(|i| fork(7, i)));
        let first = taps.rules.recv_timeout(wait).expect("first");
        let second = taps.rules.recv_timeout(wait).expect("second");
        assert_eq!((first.len(), second.len()), (10, 6));
        let lost = bus
            .stats
            .losses
            .lock()
            .expect("losses")
            .get("rules_backlog")
            .copied();
        assert_eq!(lost, Some(4));
        // Taken off the queue, the room is back.
        bus.publish(fork(7, 99));
        assert_eq!(taps.rules.recv_timeout(wait).expect("room").len(), 1);
    }
}
