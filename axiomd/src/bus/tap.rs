//! The store's tap on the bus, with back-pressure: lifecycle, exec, file, network, violations
//! and interventions on a lossless channel; bulk output on a bounded one that, when the writer
//! falls behind, first merges consecutive chunks (counted) and then sheds (counted). The bus
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
pub(crate) fn weight(ev: &Event) -> u64 {
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
pub(crate) struct Pressure {
    pub(crate) queued_bytes: AtomicU64,
    /// Bulk output events shed (queue full or memory cap reached).
    pub(crate) shed_output: AtomicU64,
    /// Output chunks merged into the chunk before them under pressure.
    pub(crate) coalesced_output: AtomicU64,
    /// Lossless events refused because the queues held twice the cap: the writer has been
    /// stuck (a full disk retried once a second) long enough to fill memory. They still went
    /// to watchers and telemetry; the store alone misses them.
    pub(crate) shed_critical: AtomicU64,
}

/// The bus's side of the store: never blocks the publisher. Below the high watermark every
/// event is queued as it is. Above it (until the queue is back under the low watermark),
/// output chunks of one process and fd that follow each other are merged into one event
/// (counted), and output is shed (counted) once the memory cap is reached. Lifecycle, exec,
/// file, network, violations and interventions are queued until the queues hold twice the cap
/// (a writer that cannot write at all), then shed too, counted.
pub(crate) struct Tap {
    critical: std::sync::mpsc::Sender<Arc<Event>>,
    bulk: SyncSender<Arc<Event>>,
    pressure: Arc<Pressure>,
    cap: u64,
    high: u64,
    low: u64,
    /// Under pressure, the output chunk being coalesced.
    pending: std::sync::Mutex<Pending>,
}

/// The writer's side.
pub(crate) struct Intake {
    critical: Receiver<Arc<Event>>,
    bulk: Receiver<Arc<Event>>,
    pressure: Arc<Pressure>,
}

/// A tap whose bulk queue holds `bulk_events` output events and whose queues hold about
/// `cap_bytes` in all.
pub(crate) fn tap(bulk_events: usize, cap_bytes: u64) -> (Tap, Intake) {
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
            let held = p.held.take();
            if let Some((h, n)) = held {
                self.queue_bulk(Arc::new(h), n);
            }
        }
    }
}

/// The coalescer's state.
#[derive(Default)]
struct Pending {
    /// Between the high watermark and the return below the low one.
    under: bool,
    /// The chunk being coalesced, and how many chunks it holds.
    held: Option<(Event, u64)>,
}

impl Tap {
    #[cfg(test)]
    pub(crate) fn pressure(&self) -> &Pressure {
        &self.pressure
    }

    /// The counters, for whoever reports them after the tap is gone.
    pub(crate) fn shared_pressure(&self) -> Arc<Pressure> {
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
        self.pressure.queued_bytes.fetch_add(w, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.bulk.try_send(ev) {
            self.pressure.queued_bytes.fetch_sub(w, Ordering::Relaxed);
            self.pressure
                .shed_output
                .fetch_add(chunks, Ordering::Relaxed);
        }
    }

    fn release(&self, p: &mut Pending) {
        if let Some((h, n)) = p.held.take() {
            self.queue_bulk(Arc::new(h), n);
        }
    }

    pub(crate) fn offer(&self, ev: &Arc<Event>) {
        let queued = self.pressure.queued_bytes.load(Ordering::Relaxed);
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        // Hysteresis: pressure starts above the high watermark, ends below the low one.
        if !p.under && queued > self.high {
            p.under = true;
        } else if p.under && queued < self.low {
            p.under = false;
        }
        match ev.body {
            Body::Output { .. } if p.under => {
                if let Some((h, n)) = p.held.as_mut()
                    && coalesce(h, ev)
                {
                    *n += 1;
                    self.pressure
                        .coalesced_output
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.release(&mut p);
                p.held = Some(((**ev).clone(), 1));
            }
            Body::Output { .. } => {
                self.release(&mut p);
                self.queue_bulk(ev.clone(), 1);
            }
            Body::KernelMatch { .. } => {}
            _ => {
                self.release(&mut p);
                // Never refused while the writer keeps up; bounded all the same, at twice the
                // cap, for a writer that cannot write at all.
                if queued > self.cap.saturating_mul(2) {
                    self.pressure.shed_critical.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.pressure
                    .queued_bytes
                    .fetch_add(weight(ev), Ordering::Relaxed);
                let _ = self.critical.send(ev.clone());
            }
        }
    }
}

impl Intake {
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
    pub(crate) fn collect(
        &self,
        buf: &mut Vec<Arc<Event>>,
        batch: usize,
        flush: Duration,
    ) -> Option<()> {
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
                    Ok(ev) => self.take(buf, ev),
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
                    Ok(ev) => self.take(buf, ev),
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

    /// A lossless event (a process's exit).
    fn exit(seq: u64, tgid: u32) -> Arc<Event> {
        let mut e = (*output(seq, tgid, "")).clone();
        e.body = Body::Exit {
            code: Some(0),
            signal: None,
        };
        Arc::new(e)
    }

    fn output(seq: u64, tgid: u32, text: &str) -> Arc<Event> {
        Arc::new(schema::sample_output(seq, seq, tgid, 0, text))
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

    /// A writer that cannot write at all (a full disk): lossless events are queued up to twice
    /// the cap, then shed and counted, never held without bound.
    #[test]
    fn lossless_events_are_bounded_when_nothing_drains() {
        let (tap, _intake) = tap(16, 1 << 20);
        for i in 0..20_000 {
            tap.offer(&exit(i, 7));
        }
        let p = tap.pressure();
        assert!(p.queued_bytes.load(Ordering::Relaxed) <= (2 << 20) + 1024);
        assert!(p.shed_critical.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn under_pressure_output_is_coalesced_then_shed_and_the_rest_kept() {
        // 1 MiB cap, nobody draining: pressure from 768 KiB.
        let (tap, intake) = tap(1 << 20, 1 << 20);
        let line = "x".repeat(1000);
        for i in 0..4000 {
            tap.offer(&output(i, 7, &line));
            if i % 100 == 0 {
                tap.offer(&exit(i, 7));
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
        let mut buf = Vec::new();
        let mut all = Vec::new();
        while intake
            .collect(&mut buf, 100_000, Duration::from_millis(1))
            .is_some()
        {
            all.append(&mut buf);
        }
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
