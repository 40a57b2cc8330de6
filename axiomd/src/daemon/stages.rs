//! The daemon's OS threads, each a stage with a stop flag of its own: started downstream first
//! (so that nothing published has nowhere to go), stopped upstream first and joined (so that
//! what is in flight drains downstream), and watched: a stage whose thread ends while the
//! daemon is not stopping is a stage gone, and the daemon stops rather than run blind.
//!
//! What runs where, and why:
//! - OS threads: the ring reader (real-time priority, poll() on the rings; it must never wait
//!   behind API work), the rules (CPU-bound matching and WebAssembly plugins), the actions
//!   (blocking terminal writes and paced typing; a message gets a short-lived thread of its
//!   own), and the store's writer, Redis publisher, mover and cold exporter (DuckDB, Redis and
//!   object-store I/O that blocks).
//! - tokio tasks: the control socket and D-Bus (many idle connections), telemetry, the agent
//!   exit follower, the limit watcher, the sweeper, the watchdog, signals: waiting, not working.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

/// One stage's thread and its stop flag.
struct Stage {
    name: &'static str,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The stages, in the order they were started.
#[derive(Default)]
pub(super) struct Stages {
    started: Vec<Stage>,
}

impl Stages {
    /// Starts `f` on a thread named `name`; it gets the flag that asks it to stop.
    pub(super) fn spawn(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(&flag))?;
        self.started.push(Stage { name, stop, thread });
        Ok(())
    }

    /// A stage whose thread has ended though it was not asked to stop.
    pub(super) fn dead(&self) -> Option<&'static str> {
        self.started
            .iter()
            .find(|s| !s.stop.load(Ordering::Relaxed) && s.thread.is_finished())
            .map(|s| s.name)
    }

    /// Stops the stage started last, and joins it; returns its name (none left: `None`).
    pub(super) fn stop_next(&mut self) -> Option<&'static str> {
        let s = self.started.pop()?;
        s.stop.store(true, Ordering::Relaxed);
        if s.thread.join().is_err() {
            tracing::error!(stage = s.name, "stage panicked");
        }
        Some(s.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_that_ends_unasked_is_dead_and_stops_go_in_reverse() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut st = Stages::default();
        for name in ["first", "second"] {
            let order = order.clone();
            st.spawn(name, move |stop| {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                order.lock().unwrap().push(name);
            })
            .unwrap();
        }
        st.spawn("quitter", |_| ()).unwrap();
        let t0 = std::time::Instant::now();
        while st.dead().is_none() {
            assert!(
                t0.elapsed().as_secs() < 5,
                "an ended stage is never seen dead"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(st.dead(), Some("quitter"));
        assert_eq!(st.stop_next(), Some("quitter"));
        assert_eq!(st.dead(), None, "a stopped stage is not dead");
        assert_eq!(st.stop_next(), Some("second"));
        assert_eq!(st.stop_next(), Some("first"));
        assert_eq!(st.stop_next(), None);
        assert_eq!(*order.lock().unwrap(), ["second", "first"]);
    }
}
