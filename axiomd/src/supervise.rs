//! One supervisor for everything in axiomd that runs on its own: the stages' OS threads, the
//! store's threads, and the tokio tasks (the socket, D-Bus signals, telemetry, the agents'
//! lifecycle, reload on SIGHUP, the watchdog).
//!
//! Each part is started through it and reports its end on one channel — however it ends:
//! returning, panicking, a task that gave up on a poisoned lock — so the daemon hears of a
//! dead part at once, logs it and stops rather than run blind (a vital part), or logs it and
//! goes on (a helper, such as the kernel programs' diagnostics). Parts stop in the reverse of
//! the order they started: upstream first, so what is in flight drains downstream.
//!
//! What runs where, and why:
//! - OS threads: the ring reader (real-time priority, poll() on the rings; it must never wait
//!   behind API work), the rules (CPU-bound matching and WebAssembly plugins), the actions
//!   (blocking terminal writes and paced typing; a message gets a short-lived thread of its
//!   own), and the store's writer, Redis publisher, mover and cold exporter (DuckDB, Redis and
//!   object-store I/O that blocks).
//! - tokio tasks: the control socket and D-Bus (many idle connections), telemetry, the agent
//!   exit follower, the limit watcher, the sweeper, the watchdog, signals: waiting, not working.
//!   (A client's own connection task is not a part: it ends with its client.)
use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use tokio::sync::mpsc;

/// How a part is stopped.
enum Stop {
    /// A thread: its flag is set, then it is joined.
    Thread {
        flag: Arc<AtomicBool>,
        thread: JoinHandle<()>,
    },
    /// A tokio task: aborted, then awaited.
    Task(tokio::task::JoinHandle<()>),
    /// A part with a stop of its own (the store: its intake drains, then its other threads are
    /// told and joined); its threads report their ends through [`Watch`].
    Own(Box<dyn FnOnce() + Send>),
}

struct Part {
    name: &'static str,
    stop: Stop,
}

/// Whether a part's end on its own stops the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The daemon cannot do its job without it.
    Vital,
    /// Its end is logged; the daemon goes on.
    Helper,
}

/// Reports the end of whatever it is given to; cloned into parts started elsewhere (the
/// store's threads).
#[derive(Clone)]
pub(crate) struct Watch {
    ended: mpsc::UnboundedSender<(&'static str, Role)>,
}

/// Sends its part's name when dropped: at the end of its thread or task, panics included.
struct Ends {
    name: &'static str,
    role: Role,
    watch: Watch,
}

impl Drop for Ends {
    fn drop(&mut self) {
        let _ = self.watch.ended.send((self.name, self.role));
    }
}

impl Watch {
    fn ends(&self, name: &'static str, role: Role) -> Ends {
        Ends {
            name,
            role,
            watch: self.clone(),
        }
    }

    /// Starts `f` on a thread named `name` whose end is reported.
    pub(crate) fn thread(
        &self,
        name: &'static str,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let ends = self.ends(name, Role::Vital);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ends = ends;
                f()
            })
    }
}

/// The parts, in the order they started, and the channel their ends come on.
pub(crate) struct Supervisor {
    parts: Vec<Part>,
    watch: Watch,
    ended: mpsc::UnboundedReceiver<(&'static str, Role)>,
}

impl Default for Supervisor {
    fn default() -> Self {
        let (tx, ended) = mpsc::unbounded_channel();
        Supervisor {
            parts: Vec::new(),
            watch: Watch { ended: tx },
            ended,
        }
    }
}

impl Supervisor {
    /// What a part started elsewhere reports its threads' ends through.
    pub(crate) fn watch(&self) -> Watch {
        self.watch.clone()
    }

    /// Starts `f` on a thread named `name`; it gets the flag that asks it to stop.
    pub(crate) fn thread(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> std::io::Result<()> {
        let flag = Arc::new(AtomicBool::new(false));
        let asked = flag.clone();
        let thread = self.watch.thread(name, move || f(&asked))?;
        self.parts.push(Part {
            name,
            stop: Stop::Thread { flag, thread },
        });
        Ok(())
    }

    /// Starts `fut` as a tokio task (on the runtime this is called in).
    pub(crate) fn task(
        &mut self,
        name: &'static str,
        role: Role,
        fut: impl Future<Output = ()> + Send + 'static,
    ) {
        let ends = self.watch.ends(name, role);
        let task = tokio::spawn(async move {
            let _ends = ends;
            fut.await
        });
        self.parts.push(Part {
            name,
            stop: Stop::Task(task),
        });
    }

    /// A part started by its owner (its threads report through [`Supervisor::watch`]), stopped
    /// by `stop`.
    pub(crate) fn own(&mut self, name: &'static str, stop: impl FnOnce() + Send + 'static) {
        self.parts.push(Part {
            name,
            stop: Stop::Own(Box::new(stop)),
        });
    }

    /// The first vital part that ends on its own (a helper's end is logged on the way).
    pub(crate) async fn ended(&mut self) -> &'static str {
        loop {
            match self.ended.recv().await {
                Some((name, Role::Vital)) => return name,
                Some((name, Role::Helper)) => {
                    tracing::warn!(part = name, "ended on its own; axiomd goes on without it");
                }
                // Never: the supervisor holds a sender.
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Stops the part named `name` ahead of the others (the front ends, before the reader).
    pub(crate) async fn stop_first(&mut self, name: &str) {
        if let Some(i) = self.parts.iter().position(|p| p.name == name) {
            let p = self.parts.remove(i);
            stop(p).await;
        }
    }

    /// Stops every part, the last started first, each finished before the next.
    pub(crate) async fn stop_all(&mut self) {
        while let Some(p) = self.parts.pop() {
            stop(p).await;
        }
    }
}

async fn stop(p: Part) {
    let name = p.name;
    match p.stop {
        Stop::Thread { flag, thread } => {
            flag.store(true, Ordering::Relaxed);
            let joined = tokio::task::block_in_place(|| thread.join());
            if joined.is_err() {
                tracing::error!(part = name, "panicked");
            }
        }
        Stop::Task(task) => {
            task.abort();
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(part = name, "panicked");
            }
        }
        Stop::Own(f) => tokio::task::block_in_place(f),
    }
    tracing::info!(part = name, "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_part_that_ends_unasked_is_heard_at_once_and_stops_go_in_reverse() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut sup = Supervisor::default();
        for name in ["first", "second"] {
            let order = order.clone();
            sup.thread(name, move |stop| {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(std::time::Duration::from_millis(1));
                }
                order.lock().unwrap().push(name);
            })
            .unwrap();
        }
        sup.task("helper", Role::Helper, async {});
        sup.task("waiter", Role::Vital, std::future::pending());
        // A task that panics (as one that met a poisoned lock and unwrapped) is heard too.
        sup.task("quitter", Role::Vital, async { panic!("gave up") });
        assert_eq!(sup.ended().await, "quitter");
        sup.stop_all().await;
        assert_eq!(*order.lock().unwrap(), ["second", "first"]);
    }
}
