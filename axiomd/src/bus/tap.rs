//! The store's tap on the bus, with back-pressure: lifecycle, exec, file, network, violations
//! and interventions on a lossless channel; bulk output on a bounded one that, when the writer
//! falls behind, first merges each stream's chunks (counted) and then sheds (counted). The bus
//! owns the publishing end (`Tap`), the sink the draining end (`Intake`), so the bus never names
//! the store.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError},
    },
    time::{Duration, Instant},
};

use axiom_proto::wire::{Body, Event};

/// Roughly what an event costs while it waits in memory (the struct, its strings).
pub fn weight(ev: &Event) -> u64 {
    let body = match &ev.body {
        Body::Output { text, target, .. } => text.len() + target.as_ref().map_or(0, String::len),
        Body::Exec { argv, filename, .. } => {
            filename.len() + argv.iter().map(|a| a.len() + 24).sum::<usize>()
        }
        Body::File { path, path2, .. } => path.len() + path2.as_ref().map_or(0, String::len),
        _ => 64,
    };
    (256 + ev.comm.len() + body) as u64
}

/// The largest output event coalescing makes.
const COALESCE_MAX: usize = 64 << 10;

/// Queued bytes, shared by both ends of the tap.
#[derive(Default)]
pub struct Pressure {
    pub queued_bytes: AtomicU64,
    /// Output events in the bulk queue (its bound is in events).
    pub queued_bulk: AtomicU64,
    /// Bulk output events shed (queue full or memory cap reached).
    pub shed_output: AtomicU64,
    /// Output chunks merged into the chunk before them under pressure.
    pub coalesced_output: AtomicU64,
}

/// The bus's side of the store: never blocks the publisher. Below the high watermark (3/4 of
/// the memory cap, or of the bulk queue's events) every event is queued as it is. Above it
/// (until both are back under half), the output of each stream (agent, process, fd) is merged
/// into one event per stream (counted) for up to `HELD_AGE`, and output is shed (counted) once
/// the cap is reached or the queue is full. Lifecycle, exec, file, network, violations and
/// interventions are always queued.
///
/// Held output leaves after `HELD_AGE`, with its process's exit, at the next event of any kind
/// once the pressure is over, or when the tap is dropped.
///
/// Merging by stream: at 10,000 agents writing side by side two chunks of one stream were
/// never next to each other, so merging only neighbours never merged, the event bound filled
/// before the byte watermark was reached, and the store shed what it could have kept as fewer,
/// larger rows.
pub struct Tap {
    critical: std::sync::mpsc::Sender<Arc<Event>>,
    bulk: SyncSender<Arc<Event>>,
    pressure: Arc<Pressure>,
    cap: u64,
    high: u64,
    low: u64,
    bulk_high: u64,
    bulk_low: u64,
    /// Under pressure, the output being coalesced.
    pending: std::sync::Mutex<Pending>,
}

/// The longest a stream's merged output waits under pressure before it is queued: an agent
/// writes a line every 100 ms or so, so a second merges about ten of its chunks.
const HELD_AGE: Duration = Duration::from_secs(1);
/// Streams merged at once at most (each holds one event); beyond, all are queued.
const HELD_STREAMS: usize = 65_536;

/// The writer's side.
pub struct Intake {
    critical: Receiver<Arc<Event>>,
    bulk: Receiver<Arc<Event>>,
    pressure: Arc<Pressure>,
}

/// A tap whose bulk queue holds `bulk_events` output events and whose queues hold about
/// `cap_bytes` in all.
pub fn tap(bulk_events: usize, cap_bytes: u64) -> (Tap, Intake) {
    let (c_tx, c_rx) = std::sync::mpsc::channel();
    let (b_tx, b_rx) = std::sync::mpsc::sync_channel(bulk_events.max(1));
    let pressure = Arc::new(Pressure::default());
    let cap = cap_bytes.max(1 << 20);
    (
        Tap {
            critical: c_tx,
            bulk: b_tx,
            pressure: pressure.clone(),
            cap,
            high: cap / 4 * 3,
            low: cap / 2,
            bulk_high: bulk_events.max(1) as u64 / 4 * 3,
            bulk_low: bulk_events.max(1) as u64 / 2,
            pending: std::sync::Mutex::new(Pending::default()),
        },
        Intake {
            critical: c_rx,
            bulk: b_rx,
            pressure,
        },
    )
}

/// Appends `next` to `into` when both are output of the same process and fd and the result
/// stays under `COALESCE_MAX`.
fn coalesce(into: &mut Event, next: &Event) -> bool {
    if into.tgid != next.tgid || into.agent != next.agent {
        return false;
    }
    match (&mut into.body, &next.body) {
        (
            Body::Output {
                fd,
                text,
                count,
                captured,
                redacted,
                ..
            },
            Body::Output {
                fd: fd2,
                text: t2,
                count: c2,
                captured: cap2,
                redacted: r2,
                ..
            },
        ) if fd == fd2 && text.len() + t2.len() <= COALESCE_MAX => {
            text.push_str(t2);
            *count += c2;
            *captured += cap2;
            for r in r2 {
                if !redacted.contains(r) {
                    redacted.push(r.clone());
                }
            }
            into.truncated |= next.truncated;
            true
        }
        _ => false,
    }
}

impl Drop for Tap {
    /// What is being coalesced still goes to the queue.
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            self.release_all(&mut p);
        }
    }
}

/// One stream's held chunk, how many written chunks it holds, and when it was opened.
type Held = (Event, u64, Instant);

/// The coalescer's state.
#[derive(Default)]
struct Pending {
    /// Between the high watermark and the return below the low one.
    under: bool,
    /// Per process, then per (agent, fd), the chunk being coalesced: a process's exit takes its
    /// own at once.
    held: foldhash::HashMap<u32, foldhash::HashMap<(u64, i32), Held>>,
    /// Streams held.
    streams: usize,
    /// The text the held chunks hold: at an eighth of the cap they are all queued.
    held_bytes: u64,
    /// When the held chunks were last checked for age.
    swept: Option<Instant>,
}

impl Tap {
    pub fn pressure(&self) -> &Pressure {
        &self.pressure
    }

    /// The counters, for whoever reports them after the tap is gone.
    pub fn shared_pressure(&self) -> Arc<Pressure> {
        self.pressure.clone()
    }

    /// Queues output (`chunks`: how many written chunks it holds), or sheds it, counted.
    fn queue_bulk(&self, ev: Arc<Event>, chunks: u64) {
        let w = weight(&ev);
        if self.pressure.queued_bytes.load(Ordering::Relaxed) + w > self.cap {
            self.pressure
                .shed_output
                .fetch_add(chunks, Ordering::Relaxed);
            return;
        }
        // Counted before the send: the writer may take it (and count it out) at once.
        self.pressure.queued_bytes.fetch_add(w, Ordering::Relaxed);
        self.pressure.queued_bulk.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.bulk.try_send(ev) {
            self.pressure.queued_bytes.fetch_sub(w, Ordering::Relaxed);
            self.pressure.queued_bulk.fetch_sub(1, Ordering::Relaxed);
            self.pressure
                .shed_output
                .fetch_add(chunks, Ordering::Relaxed);
        }
    }

    /// Queues a held chunk.
    fn queue_held(&self, p: &mut Pending, (h, n, _): Held) {
        p.streams -= 1;
        p.held_bytes = p.held_bytes.saturating_sub(text_len(&h));
        self.queue_bulk(Arc::new(h), n);
    }

    /// Queues every held chunk.
    fn release_all(&self, p: &mut Pending) {
        let held = std::mem::take(&mut p.held);
        for h in held.into_values().flat_map(|m| m.into_values()) {
            self.queue_held(p, h);
        }
    }

    /// Queues the held chunks of process `tgid`.
    fn release_process(&self, p: &mut Pending, tgid: u32) {
        if let Some(m) = p.held.remove(&tgid) {
            for h in m.into_values() {
                self.queue_held(p, h);
            }
        }
    }

    /// Queues the held chunks opened `HELD_AGE` or more before `now`.
    fn release_old(&self, p: &mut Pending, now: Instant) {
        let old = |h: &Held| now.duration_since(h.2) >= HELD_AGE;
        let mut due = Vec::new();
        p.held.retain(|_, m| {
            let keys: Vec<(u64, i32)> = m.iter().filter(|(_, h)| old(h)).map(|(k, _)| *k).collect();
            due.extend(keys.into_iter().filter_map(|k| m.remove(&k)));
            !m.is_empty()
        });
        for h in due {
            self.queue_held(p, h);
        }
    }

    pub fn offer(&self, ev: &Arc<Event>) {
        let queued = self.pressure.queued_bytes.load(Ordering::Relaxed);
        let bulk = self.pressure.queued_bulk.load(Ordering::Relaxed);
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        // Hysteresis: pressure starts above either high watermark, ends below both low ones.
        if !p.under && (queued > self.high || bulk > self.bulk_high) {
            p.under = true;
        } else if p.under && queued < self.low && bulk < self.bulk_low {
            p.under = false;
            self.release_all(&mut p);
        }
        match ev.body {
            Body::Output { fd, .. } if p.under => {
                let (tgid, key) = (ev.tgid, (ev.agent, fd));
                let now = Instant::now();
                let merged = p
                    .held
                    .get_mut(&tgid)
                    .and_then(|m| m.get_mut(&key))
                    .is_some_and(|(h, n, _)| {
                        let ok = coalesce(h, ev);
                        *n += u64::from(ok);
                        ok
                    });
                p.held_bytes += text_len(ev);
                if merged {
                    self.pressure
                        .coalesced_output
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    // Full (COALESCE_MAX): the held chunk goes, this one is held after it.
                    let full = p.held.get_mut(&tgid).and_then(|m| m.remove(&key));
                    if let Some(h) = full {
                        self.queue_held(&mut p, h);
                    }
                    if p.streams >= HELD_STREAMS {
                        self.release_all(&mut p);
                    }
                    p.streams += 1;
                    p.held
                        .entry(tgid)
                        .or_default()
                        .insert(key, ((**ev).clone(), 1, now));
                }
                if p.held_bytes > self.cap / 8 {
                    self.release_all(&mut p);
                }
                // Now and then, what has waited long enough goes.
                if p.swept
                    .is_none_or(|t| now.duration_since(t) >= HELD_AGE / 4)
                {
                    p.swept = Some(now);
                    self.release_old(&mut p, now);
                }
            }
            Body::Output { .. } => self.queue_bulk(ev.clone(), 1),
            Body::KernelMatch { .. } => {}
            _ => {
                // A process's exit comes after what it wrote (and an agent ends after its
                // processes).
                if matches!(ev.body, Body::Exit { .. }) {
                    self.release_process(&mut p, ev.tgid);
                }
                self.pressure
                    .queued_bytes
                    .fetch_add(weight(ev), Ordering::Relaxed);
                let _ = self.critical.send(ev.clone());
            }
        }
    }
}

/// The text of an output event.
fn text_len(ev: &Event) -> u64 {
    match &ev.body {
        Body::Output { text, .. } => text.len() as u64,
        _ => 0,
    }
}

impl Intake {
    fn take_bulk(&self, buf: &mut Vec<Arc<Event>>, ev: Arc<Event>) {
        self.pressure.queued_bulk.fetch_sub(1, Ordering::Relaxed);
        self.take(buf, ev);
    }

    fn take(&self, buf: &mut Vec<Arc<Event>>, ev: Arc<Event>) {
        self.pressure
            .queued_bytes
            .fetch_sub(weight(&ev), Ordering::Relaxed);
        buf.push(ev);
    }

    /// Fills `buf` up to `batch` events (lossless ones first); returns when the batch is full,
    /// or `flush` has passed since its first event, or `None` once the bus is gone and nothing
    /// is left.
    ///
    /// Only an empty batch waits on the queue. Once a batch is open the writer sleeps in slices
    /// and drains what came meanwhile: blocking on the queue would wake it for every event, and
    /// at an agent's pace (a few thousand events a second, each alone) those wakeups cost more
    /// CPU than storing the events (measured: ~50 µs of axiomd per event of a Python test
    /// suite). A slice is short enough for the bulk queue to hold what arrives in it at any
    /// rate the writer keeps up with.
    pub fn collect(&self, buf: &mut Vec<Arc<Event>>, batch: usize, flush: Duration) -> Option<()> {
        const SLICE: Duration = Duration::from_millis(20);
        let mut opened = (!buf.is_empty()).then(Instant::now);
        loop {
            let mut gone = false;
            while buf.len() < batch {
                match self.critical.try_recv() {
                    Ok(ev) => self.take(buf, ev),
                    Err(_) => break,
                }
            }
            while buf.len() < batch {
                match self.bulk.try_recv() {
                    Ok(ev) => self.take_bulk(buf, ev),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        gone = true;
                        break;
                    }
                }
            }
            if opened.is_none() && !buf.is_empty() {
                opened = Some(Instant::now());
            }
            if buf.len() >= batch {
                return Some(());
            }
            match opened {
                Some(t0) => {
                    let left = flush.saturating_sub(t0.elapsed());
                    if left.is_zero() || gone {
                        return Some(());
                    }
                    std::thread::sleep(left.min(SLICE));
                }
                None if gone => return None,
                None => match self.bulk.recv_timeout(SLICE) {
                    Ok(ev) => self.take_bulk(buf, ev),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        return (!buf.is_empty()).then_some(());
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;

    fn output(seq: u64, tgid: u32, text: &str) -> Arc<Event> {
        Arc::new(schema::sample_output(seq, seq, tgid, 0, text))
    }

    /// Everything the intake holds, once the tap is gone.
    fn drain(intake: &Intake) -> Vec<Arc<Event>> {
        let (mut buf, mut all) = (Vec::new(), Vec::new());
        while intake
            .collect(&mut buf, 100_000, Duration::from_millis(1))
            .is_some()
        {
            all.append(&mut buf);
        }
        all
    }

    #[test]
    fn a_batch_waits_its_flush_time_from_its_first_event_not_from_the_call() {
        let (tap, intake) = tap(1024, 1 << 20);
        let t = std::thread::spawn(move || {
            // Idle longer than the flush time, then a trickle.
            std::thread::sleep(Duration::from_millis(300));
            tap.offer(&output(0, 7, "first"));
            std::thread::sleep(Duration::from_millis(60));
            for i in 1..10 {
                tap.offer(&output(i, 7, "more"));
            }
            std::thread::sleep(Duration::from_millis(400));
        });
        let mut buf = Vec::new();
        assert!(
            intake
                .collect(&mut buf, 1000, Duration::from_millis(200))
                .is_some()
        );
        assert_eq!(buf.len(), 10, "the trickle is one batch");
        t.join().unwrap();
        buf.clear();
        assert!(
            intake
                .collect(&mut buf, 1000, Duration::from_millis(200))
                .is_none()
        );
    }

    /// Many agents writing side by side: under pressure (here the bulk queue's event bound,
    /// long before the byte cap) each stream's chunks are merged into one event per stream, in
    /// order; an exit brings its process's merged output out first; nothing is lost.
    #[test]
    fn under_pressure_interleaved_streams_are_merged_each_on_its_own() {
        let (tap, intake) = tap(1000, 256 << 20);
        let streams = 50u32;
        for i in 0..10_000u64 {
            let tgid = 100 + (i % u64::from(streams)) as u32;
            tap.offer(&output(i, tgid, &format!("{i};")));
        }
        let mut exit = (*output(99_999, 100, "")).clone();
        exit.body = Body::Exit {
            code: Some(0),
            signal: None,
        };
        tap.offer(&Arc::new(exit));
        let p = tap.shared_pressure();
        assert_eq!(p.shed_output.load(Ordering::Relaxed), 0, "nothing shed");
        let coalesced = p.coalesced_output.load(Ordering::Relaxed);
        assert!(coalesced > 5_000, "merged by stream: {coalesced}");
        drop(tap);
        let all = drain(&intake);
        // Every write is there once, and each stream's in the order written.
        let mut seen = Vec::new();
        for tgid in 100..100 + streams {
            let text: String = all
                .iter()
                .filter(|e| e.tgid == tgid)
                .filter_map(|e| match &e.body {
                    Body::Output { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            let nums: Vec<u64> = text
                .split(';')
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().expect("number"))
                .collect();
            assert!(
                nums.windows(2).all(|w| w[0] < w[1]),
                "stream {tgid} in order"
            );
            seen.extend(nums);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..10_000).collect::<Vec<u64>>());
        assert_eq!(p.queued_bulk.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn under_pressure_output_is_coalesced_then_shed_and_the_rest_kept() {
        // 1 MiB cap, nobody draining: pressure from 768 KiB.
        let (tap, intake) = tap(1 << 20, 1 << 20);
        let line = "x".repeat(1000);
        for i in 0..4000 {
            tap.offer(&output(i, 7, &line));
            if i % 100 == 0 {
                let mut exit = (*output(i, 7, "")).clone();
                exit.body = Body::Exit {
                    code: Some(0),
                    signal: None,
                };
                tap.offer(&Arc::new(exit));
            }
        }
        let p = tap.pressure();
        let coalesced = p.coalesced_output.load(Ordering::Relaxed);
        let shed = p.shed_output.load(Ordering::Relaxed);
        assert!(coalesced > 0, "nothing coalesced");
        assert!(shed > 0, "nothing shed");
        // The cap held (critical events aside, which are never refused).
        assert!(p.queued_bytes.load(Ordering::Relaxed) <= (1 << 20) + 40 * 512);
        drop(tap);
        let all = drain(&intake);
        let exits = all
            .iter()
            .filter(|e| matches!(e.body, Body::Exit { .. }))
            .count();
        assert_eq!(exits, 40, "every lifecycle event kept");
        let bytes: usize = all
            .iter()
            .filter_map(|e| match &e.body {
                Body::Output { text, .. } => Some(text.len()),
                _ => None,
            })
            .sum();
        // Every byte is either stored (alone or coalesced) or counted as shed.
        let kept_chunks = bytes / 1000;
        // (Dropping the tap released what it was coalescing: shed too, at the cap.)
        let shed = intake.pressure.shed_output.load(Ordering::Relaxed);
        assert_eq!(kept_chunks as u64 + shed, 4000, "chunks accounted for");
        assert_eq!(intake.pressure.queued_bytes.load(Ordering::Relaxed), 0);
    }
}
