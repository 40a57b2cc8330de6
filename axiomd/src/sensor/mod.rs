//! From ring records to events: read both rings, decode in place, add what the kernel record does
//! not carry (parent pid, cwd of an exec, what an fd points at — from the fd table the kernel's
//! fd records keep in order with the writes, else /proc), number, and publish.
//!
//! Its parts: `reader.rs` the thread that drains the rings; `decode.rs` records to events;
//! this file the pipeline that puts them in order, names their processes and publishes them;
//! `fdtable.rs` what each fd points at; `paths.rs` paths as the kernel resolved them;
//! `enrich.rs` secrets masked and what a record lacks added; `readback.rs` files read back
//! after a write the kernel could not copy.
pub(crate) mod decode;
mod enrich;
mod fdtable;
mod paths;
mod readback;
mod reader;

use enrich::Carry;
pub(crate) use fdtable::FDT_ENTRIES_MAX;
use fdtable::FdTable;
pub(crate) use reader::{async_fd, make_realtime, run};

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axiom_common::FLAG_SLIM;
use axiom_proto::wire::{Body, Event};
/// The reader's tables are looked up once or twice per record; their keys are pids and fds, for
/// which a seeded fast hash does. (At 10,000 agents `FdTable::get` stayed at ~22 % of the
/// reader's samples after the change from SipHash, against 24.8 %: its cost is reaching 10,000
/// scattered tables, not hashing.)
use foldhash::{HashMap, HashSet};

use crate::{bus::Bus, kernel::procfs};

/// How long an fd's resolved target is trusted before /proc is read again.
const FD_TTL: Duration = Duration::from_secs(1);
const FD_CACHE_MAX: usize = 65_536;
/// How long a process's identity is kept after its exit, for its output still in the ring.
const IDENT_GRACE: Duration = Duration::from_secs(30);

/// What the reader does with a kernel match record, right where it arrives.
pub(crate) type OnMatch = Box<dyn Fn(&Event) + Send>;
/// Masks secrets in a write's text (scope, text) → (masked text, rule ids), before it leaves.
/// `None` as scope: every secret rule (command lines).
pub(crate) type Redactor =
    Box<dyn Fn(Option<axiom_rules::Scope>, &str) -> Option<(String, Vec<String>)> + Send>;

pub(crate) struct Pipeline {
    bus: Arc<Bus>,
    /// Decoded events not yet published: handed to the bus together (one lock, one wakeup of
    /// the rules thread) at the end of a reader pass, or every PUBLISH_EVERY events.
    pending: Vec<Event>,
    on_match: Option<OnMatch>,
    redactor: Option<Redactor>,
    /// Bumped on every pass of the reader's loop (the systemd watchdog watches it).
    heartbeat: Option<crate::notify::Heartbeat>,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, to stamp events with wall time.
    clock_offset: i128,
    ppids: HashMap<u32, u32>,
    /// fd targets per process: keyed by tgid first so an exit or exec drops a process's entries
    /// in O(1) (a scan per exit stalled the reader for seconds when 10,000 agents exited).
    fds: HashMap<u32, HashMap<i32, (Option<String>, Instant)>>,
    /// Name, owner and cgroup per process, from full-header records, for slim output records;
    /// with the time it exited, since its output may still be in the ring after its exit record.
    idents: HashMap<u32, (procfs::Identity, Option<Instant>)>,
    exited: std::collections::VecDeque<(u32, Instant)>,
    cgroup2: Option<std::path::PathBuf>,
    /// Per process, its last recorded file operation (thread, op, path): a refusal that follows
    /// from the same thread is about it.
    last_file: HashMap<u32, (u32, axiom_proto::wire::FileOp, String)>,
    /// What tracked processes' fds point at, kept from the kernel's fd records (opens for
    /// writing, dups, closes, forks, execs) in order with their writes.
    fdt: FdTable,
    /// Processes that gained privilege by exec (a set-id or file-capability program: `passwd`,
    /// `sudo`) and their descendants: they no longer act as the agent's owner, so what they
    /// write, open or connect to is not the owner's to read. Their records are dropped here
    /// (counted as the loss `privileged`); the exec that crossed is kept.
    privileged: HashSet<u32>,
    /// What rules ignore by default (agent state, caches): a path under it is resolved.
    ignored: axiom_rules::PathFilter,
    /// Threads with a current directory of their own (`unshare(CLONE_FS)`): tid → (tgid, that
    /// directory, `None` while unknown). Other threads share their process's (`fdt`).
    thread_cwds: HashMap<u32, (u32, Option<Arc<str>>)>,
    /// Per stream (tgid, fd): the end of its last write as written, and where that write's
    /// event waits in `pending` (publish generation, index), so that a secret split across two
    /// writes is masked in both.
    carries: HashMap<(u32, i32), Carry>,
    /// Bumped at every publish: an index into `pending` from an older generation is gone.
    published: u64,
    /// Files written where the bytes were not captured, read back at close or exit.
    read_back: readback::ReadBack,
}

fn clock_ns(c: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(c)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0)
}

impl Pipeline {
    pub(crate) fn new(bus: Arc<Bus>) -> Pipeline {
        let clock_offset = clock_ns(nix::time::ClockId::CLOCK_REALTIME)
            - clock_ns(nix::time::ClockId::CLOCK_MONOTONIC);
        Pipeline {
            bus,
            pending: Vec::new(),
            on_match: None,
            redactor: None,
            heartbeat: None,
            clock_offset,
            ppids: HashMap::default(),
            fds: HashMap::default(),
            idents: HashMap::default(),
            exited: std::collections::VecDeque::new(),
            cgroup2: crate::kernel::cgroup::mount_point(),
            last_file: HashMap::default(),
            fdt: FdTable::default(),
            privileged: HashSet::default(),
            ignored: axiom_rules::PathFilter::agent_state(),
            thread_cwds: HashMap::default(),
            carries: HashMap::default(),
            published: 0,
            read_back: readback::ReadBack::default(),
        }
    }

    fn ppid(&mut self, tgid: u32) -> u32 {
        if let Some(p) = self.ppids.get(&tgid) {
            return *p;
        }
        let p = procfs::stat(tgid).map(|s| s.ppid).unwrap_or(0);
        if p != 0 {
            self.ppids.insert(tgid, p);
        }
        p
    }

    fn fd_target(&mut self, tgid: u32, fd: i32) -> Option<String> {
        // Known from the kernel's fd records: what the fd pointed at when the write happened.
        if let Some(p) = self.fdt.get(tgid, fd) {
            return Some(p.to_string());
        }
        let now = Instant::now();
        if let Some((t, at)) = self.fds.get(&tgid).and_then(|m| m.get(&fd))
            && now.duration_since(*at) < FD_TTL
        {
            return t.clone();
        }
        if self.fds.len() >= FD_CACHE_MAX {
            self.fds.clear();
        }
        let t = procfs::fd_target(tgid, fd);
        // An inherited fd (the terminal, a pipe from the parent) read once: from now on the
        // kernel's records about it (dup, close, fork, exec) keep it right in the table, and its
        // children inherit the answer, rather than one readlink per process per FD_TTL.
        if let Some(p) = &t
            && let Some(cloexec) = procfs::fd_cloexec(tgid, fd)
            && self.fdt.learn(tgid, fd, p, cloexec)
        {
            return t;
        }
        self.fds
            .entry(tgid)
            .or_default()
            .insert(fd, (t.clone(), now));
        t
    }

    /// Identity of a slim record's process: remembered, else read from /proc once.
    fn identity(&mut self, tgid: u32) -> procfs::Identity {
        if let Some((i, _)) = self.idents.get(&tgid) {
            return i.clone();
        }
        let i = procfs::identity(tgid, self.cgroup2.as_deref()).unwrap_or_default();
        self.remember(tgid, i.clone());
        i
    }

    /// Masks secrets in every write with `f` before the event is published (watchers, D-Bus,
    /// storage see only the mask; the rules learn which rule masked what).
    pub(crate) fn redactor(mut self, f: Redactor) -> Pipeline {
        self.redactor = Some(f);
        self
    }

    /// Proves the reader alive to the watchdog: `hb` moves on every pass of its loop.
    pub(crate) fn heartbeat(mut self, hb: crate::notify::Heartbeat) -> Pipeline {
        self.heartbeat = Some(hb);
        self
    }

    /// Handles kernel match records on the reader thread with `f` (instead of queueing them).
    pub(crate) fn on_match(mut self, f: OnMatch) -> Pipeline {
        self.on_match = Some(f);
        self
    }

    fn remember(&mut self, tgid: u32, i: procfs::Identity) {
        if self.idents.len() >= FD_CACHE_MAX {
            self.idents.clear();
        }
        self.idents.insert(tgid, (i, None));
    }

    /// Forgets processes that exited more than IDENT_GRACE ago (unless the pid was reused).
    fn prune(&mut self, now: Instant) {
        while let Some(&(tgid, at)) = self.exited.front() {
            if now.duration_since(at) < IDENT_GRACE {
                break;
            }
            self.exited.pop_front();
            if self.idents.get(&tgid).is_some_and(|(_, e)| *e == Some(at)) {
                self.idents.remove(&tgid);
                self.ppids.remove(&tgid);
                self.privileged.remove(&tgid);
                // Its last writes may come after its exit record (another ring): its fd table
                // goes with its identity, not at the exit record.
                self.fdt.exited(tgid);
                self.thread_cwds.retain(|_, (p, _)| *p != tgid);
                self.carries.retain(|(p, _), _| *p != tgid);
            }
        }
        let shed = self.fdt.take_shed();
        if shed > 0 {
            self.bus.stats.count_losses("fd_table_shed", shed);
        }
    }

    /// Whether a record is the agent's owner's to see: not once its process gained privilege
    /// (checked at each exec against the real uid the kernel gave with the exec), nor for its
    /// descendants; the crossing exec itself is.
    fn owners_record(&mut self, tgid: u32, uid: u32, body: &Body) -> bool {
        let privileged = self.privileged.contains(&tgid);
        match body {
            Body::Fork { child_pid } => {
                if privileged {
                    self.privileged.insert(*child_pid);
                } else {
                    // A reused pid starts clean.
                    self.privileged.remove(child_pid);
                }
                !privileged
            }
            Body::Exec { filename, .. } if !privileged => {
                if procfs::elevated(tgid, uid, filename) {
                    self.privileged.insert(tgid);
                }
                true
            }
            Body::Exit { .. } => true,
            _ => !privileged,
        }
    }

    /// Decodes one record and publishes it; a malformed one is counted and skipped.
    pub(crate) fn handle(&mut self, rec: &[u8]) {
        match decode::fd_change(rec) {
            Ok(None) => {}
            Ok(Some((tgid, tid, change))) => return self.fd_changed(tgid, tid, change),
            Err(e) => return self.skip(e),
        }
        let d = match decode::decode(rec) {
            Ok(d) => d,
            Err(e) => return self.skip(e),
        };
        let tgid = d.hdr.tgid;
        if !self.owners_record(tgid, d.hdr.uid, &d.body) {
            self.bus.stats.count_loss("privileged");
            return;
        }
        let (comm, uid, cgroup_id) = self.identity_of(&d);
        let mut body = d.body;
        let mut truncated = d.truncated;
        match &mut body {
            Body::Fork { child_pid } => {
                self.ppids.insert(*child_pid, tgid);
            }
            Body::Exec {
                cwd, argv, stdin, ..
            } => {
                *cwd = self.cwd(tgid);
                *stdin = self.fd_target(tgid, 0);
                self.redact_argv(argv);
            }
            Body::Output { .. } => truncated |= self.enrich_output(tgid, &mut body),
            Body::KernelMatch { fd, target, .. } => *target = self.fd_target(tgid, *fd),
            Body::File { .. } => self.enrich_file(tgid, d.hdr.pid, d.dirfds, &mut body),
            Body::Denied { op, target, .. } if target.is_empty() => {
                (*op, *target) = self.refused_file(tgid, d.hdr.pid);
            }
            _ => {}
        }
        let ppid = self.ppid(tgid);
        let exited = matches!(body, Body::Exit { .. });
        if exited {
            self.process_exited(tgid);
        }
        let ev = Event {
            seq: 0,
            time_ns: self.wall_ns(d.hdr.ts_ns as i128),
            agent: d.hdr.agent,
            pid: d.hdr.pid,
            tgid,
            ppid,
            uid,
            cgroup_id,
            comm,
            truncated,
            body,
        };
        if !self.read_back.note(&ev) {
            self.bus.stats.count_loss("read_back_shed");
        }
        self.emit(ev);
        if exited {
            self.read_back_released(tgid, None);
        }
    }

    /// Reads back what closing `fds` of `tgid` (or its exit: `None`) released, and emits it
    /// with its secrets masked.
    fn read_back_released(&mut self, tgid: u32, fds: Option<&dyn Fn(i32) -> bool>) {
        for mut ev in self.read_back.released(tgid, fds) {
            if let (
                Some(r),
                Body::Output {
                    text,
                    redacted,
                    target,
                    ..
                },
            ) = (&self.redactor, &mut ev.body)
                && let Some((masked, ids)) =
                    r(Some(axiom_rules::write_scope(target.as_deref())), text)
            {
                *text = masked;
                *redacted = ids;
            }
            self.emit(ev);
        }
    }

    /// A malformed or unknown record: counted by cause, skipped.
    fn skip(&self, e: decode::DecodeError) {
        tracing::debug!("skipping record: {e}");
        self.bus.stats.count_loss(e.cause());
    }

    /// A change to a process's descriptor table: the /proc fallback's answers about the changed
    /// fd (or, for a range, an exec or a new process, all of them) are stale.
    fn fd_changed(&mut self, tgid: u32, tid: u32, change: decode::FdChange) {
        use decode::FdChange as C;
        if self.thread_cwd_changed(tgid, tid, &change) {
            return;
        }
        // A descriptor closed (or replaced by a dup) releases the file read back behind it.
        match &change {
            C::Close { fd } | C::Dup { fd, .. } => {
                let fd = *fd;
                self.read_back_released(tgid, Some(&move |f| f == fd));
            }
            C::CloseRange {
                first,
                last,
                cloexec_only: false,
            } => {
                let (first, last) = (*first, *last);
                self.read_back_released(
                    tgid,
                    Some(&move |f| f >= 0 && (first..=last).contains(&(f as u32))),
                );
            }
            _ => {}
        }
        match &change {
            C::Open { fd, .. } | C::Dup { fd, .. } | C::Close { fd } => {
                if let Some(m) = self.fds.get_mut(&tgid) {
                    m.remove(fd);
                }
            }
            C::Pair { first, second, .. } => {
                if let Some(m) = self.fds.get_mut(&tgid) {
                    m.remove(first);
                    m.remove(second);
                }
            }
            C::CloseRange { .. } | C::Exec => {
                self.fds.remove(&tgid);
            }
            C::Fork { child } => {
                self.fds.remove(child);
            }
            C::OwnFs => {}
        }
        let change = match change {
            C::Open {
                fd,
                dirfd,
                path,
                cloexec,
                kernel,
            } => C::Open {
                fd,
                path: self.opened(tgid, tid, dirfd, &path, kernel.as_ref()),
                dirfd,
                cloexec,
                kernel: None,
            },
            other => other,
        };
        self.fdt.apply(tgid, change);
    }

    /// Who wrote a record: from the record itself, or for a slim one (no identity, to save the
    /// ring) what was remembered of the process.
    fn identity_of(&mut self, d: &decode::Decoded) -> (String, u32, u64) {
        let tgid = d.hdr.tgid;
        if d.hdr.flags & FLAG_SLIM != 0 {
            let i = self.identity(tgid);
            return (i.comm, i.uid, i.cgroup_id);
        }
        let i = procfs::Identity {
            comm: decode::cstr(&d.hdr.comm),
            uid: d.hdr.uid,
            cgroup_id: d.hdr.cgroup_id,
        };
        if let Body::Fork { child_pid } = d.body {
            // Until it execs, a child is named and owned like its parent.
            self.remember(child_pid, i.clone());
        }
        if !matches!(d.body, Body::Exit { .. }) {
            self.remember(tgid, i.clone());
        }
        (i.comm, i.uid, i.cgroup_id)
    }

    /// A process exited: what was kept about it is let go (its identity after a grace period,
    /// for records still in flight).
    fn process_exited(&mut self, tgid: u32) {
        let now = Instant::now();
        if let Some((_, e)) = self.idents.get_mut(&tgid) {
            *e = Some(now);
            self.exited.push_back((tgid, now));
        }
        self.fds.remove(&tgid);
        self.last_file.remove(&tgid);
        self.prune(now);
    }

    /// Kernel matches go to the rules only (or to the hook that waits for them); everything
    /// else to the bus.
    fn emit(&mut self, ev: Event) {
        if matches!(ev.body, Body::KernelMatch { .. }) {
            match &self.on_match {
                Some(f) => {
                    self.bus.stats.count_event(ev.body.kind());
                    f(&ev);
                }
                None => self.bus.to_rules(ev),
            }
        } else {
            self.pending.push(ev);
            if self.pending.len() >= PUBLISH_EVERY {
                self.publish();
            }
        }
    }

    /// Publishes what the pass decoded so far.
    /// A kernel stamp (CLOCK_MONOTONIC ns) as wall ns, as events carry it.
    fn wall_ns(&self, mono_ns: i128) -> u64 {
        (mono_ns + self.clock_offset).max(0) as u64
    }

    /// The kernel's clock now, stamped as records are (wall ns).
    fn now_ns(&self) -> u64 {
        self.wall_ns(clock_ns(nix::time::ClockId::CLOCK_MONOTONIC))
    }

    /// Both rings were found empty after `at` (from `now_ns`): every record stamped before it,
    /// less the moment between a program's stamp and its submit, has been published.
    fn mark_read(&self, at: u64) {
        self.bus.mark_read_to(at.saturating_sub(MARK_SLACK_NS));
    }

    fn publish(&mut self) {
        if !self.pending.is_empty() {
            self.bus.publish_all(self.pending.drain(..));
            self.published += 1;
        }
    }
}

/// A program stamps its record before it reserves and submits it: a record stamped just before
/// the rings were found empty may be submitted just after. Far above that gap, far below any
/// wait measured by the mark.
const MARK_SLACK_NS: u64 = 50_000_000;

/// Events decoded before they are published at the latest: bounds how long the first event
/// of a long pass waits (~1 ms of decoding).
const PUBLISH_EVERY: usize = 256;
