//! The reader thread: both rings drained in passes, their records handled in timestamp order.
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::Pipeline;

/// Registers an fd-owning value with the reactor.
pub(crate) fn async_fd<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its fd (a ring buffer map) and moves into the AsyncFd, which
    // deregisters before dropping it: the fd cannot be closed while registered.
    unsafe { AsyncFd::register(inner) }.map_err(Into::into)
}

/// Records taken from both rings in one pass, handled in timestamp order: an exit must not
/// overtake the output its process wrote just before it (output waits in its own ring), and an
/// exec's identity must be known before its output is read.
#[derive(Default)]
struct Batch {
    arena: Vec<u8>,
    recs: Vec<(u64, usize, usize)>,
}

/// Records per ring per pass: bounds the batch's memory under a flood.
const BATCH_MAX: usize = 8192;
/// Passes per drain before the reader loop comes round again (the rings still hold records:
/// its poll returns at once).
const DRAIN_PASSES: usize = 16;

impl Batch {
    fn take(&mut self, ring: &mut RingBuf<MapData>) -> usize {
        let mut n = 0;
        while n < BATCH_MAX {
            let Some(r) = ring.next() else { break };
            // ts_ns sits at offset 16 of every header; a shorter record sorts first and is
            // rejected by the decoder.
            let ts = r
                .get(16..24)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
                .unwrap_or(0);
            // Keep 8-byte alignment for the zero-copy decoder.
            let start = self.arena.len().next_multiple_of(8);
            self.arena.resize(start, 0);
            self.arena.extend_from_slice(&r);
            self.recs.push((ts, start, r.len()));
            n += 1;
        }
        n
    }

    /// Drains both rings (in passes of at most BATCH_MAX records each) into the pipeline, for
    /// at most DRAIN_PASSES passes: under a flood that never lets the rings empty, the reader
    /// still comes back to beat the watchdog and to take the kernel's matches first.
    fn drain(
        &mut self,
        events: &mut RingBuf<MapData>,
        output: &mut RingBuf<MapData>,
        p: &mut Pipeline,
    ) {
        for _ in 0..DRAIN_PASSES {
            self.arena.clear();
            self.recs.clear();
            let at = p.now_ns();
            let n = self.take(events) + self.take(output);
            if n == 0 {
                p.mark_read(at);
                return;
            }
            self.recs.sort_by_key(|r| r.0);
            for &(_, start, len) in &self.recs {
                p.handle(&self.arena[start..start + len]);
            }
            p.publish();
        }
    }
}

/// Gives the calling thread a low real-time priority (SCHED_RR 1): on a machine saturated by
/// thousands of agents, a nice value alone does not get the reader scheduled often enough, and a
/// ring that is not drained loses records. The reader sleeps in poll() between batches, so it
/// takes little CPU; the kernel's RT throttling bounds it anyway.
pub(crate) fn make_realtime() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sets the scheduling policy of the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) } != 0 {
        tracing::warn!(
            "ring reader stays at normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Reads both rings until an error or `stop`, on a thread of its own: the reader must never wait behind
/// API work (a status over 10,000 agents, adoption scans) on a shared async runtime.
/// Lifecycle/file/network records and bulk output arrive on separate rings so a flood of output
/// can never push out an exec or exit record.
pub(crate) fn run(
    rings: crate::kernel::Rings,
    mut p: Pipeline,
    flush: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    let crate::kernel::Rings {
        mut events,
        mut output,
        mut matches,
    } = rings;
    let timeout = PollTimeout::try_from(flush).unwrap_or(PollTimeout::MAX);
    let mut batch = Batch::default();
    loop {
        if let Some(h) = &p.heartbeat {
            h.beat();
        }
        // A clean stop: what the rings hold now is handed on (the pass below), then the reader
        // returns; records written after are left in the rings for the next axiomd (the
        // programs stay attached) or go with them.
        let stopping = stop.load(std::sync::atomic::Ordering::Relaxed);
        // Kernel matches first, before any bulk: they are what detection latency is made of.
        while let Some(r) = matches.next() {
            p.handle(&r);
        }
        p.publish();
        // Records written while axiomd was down are already waiting: drain before each wait.
        batch.drain(&mut events, &mut output, &mut p);
        if stopping {
            return Ok(());
        }
        let mut fds = [
            PollFd::new(events.as_fd(), PollFlags::POLLIN),
            PollFd::new(output.as_fd(), PollFlags::POLLIN),
            PollFd::new(matches.as_fd(), PollFlags::POLLIN),
        ];
        // Most output records arrive without a wakeup: the timeout drains them.
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
