//! From ring records to events: read both rings, decode in place, add what the kernel record does
//! not carry (parent pid, cwd of an exec, what an fd points at — from the fd table the kernel's
//! fd records keep in order with the writes, else /proc), number, and publish.
pub(crate) mod decode;
mod readback;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axiom_common::FLAG_SLIM;
use axiom_proto::wire::{Body, DeniedOp, Event};
use aya::maps::{MapData, RingBuf};
/// The reader's tables are looked up once or twice per record; their keys are pids and fds, for
/// which a seeded fast hash does. (At 10,000 agents `FdTable::get` stayed at ~22 % of the
/// reader's samples after the change from SipHash, against 24.8 %: its cost is reaching 10,000
/// scattered tables, not hashing.)
use foldhash::{HashMap, HashSet};
use tokio::io::unix::AsyncFd;

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

/// Per process, each fd opened for writing, each pipe and socket, still open: (absolute path,
/// or `pipe:`/`socket:`; close-on-exec). An fd not in it (inherited from before tracking: the
/// terminal, a pipe) is read from /proc.
///
/// A fork shares its parent's table until one of them changes it (copy on write): a process
/// holding thousands of fds that forks in a loop made axiomd copy its whole table per fork and
/// keep each copy for IDENT_GRACE after the child's exit (GiBs in seconds). The entries held in
/// distinct tables are bounded by FDT_ENTRIES_MAX; a change that would pass it drops that
/// process's table instead (its fds are then read from /proc while it lives), counted as the
/// loss `fd_table_shed`.
#[derive(Default)]
struct FdTable {
    procs: HashMap<u32, Arc<Fds>>,
    /// Entries held, each distinct table counted once however many processes share it.
    entries: usize,
    /// Tables dropped for the bound since the last `take_shed`.
    shed: u64,
}

type Fds = HashMap<i32, (Arc<str>, bool)>;

/// A stream's last write, for a secret split across two (see `Pipeline::mask_across`).
struct Carry {
    tail: String,
    /// Where its event waits: (publish generation, index in `pending`).
    pending: (u64, usize),
}
/// Bytes of a write kept for the next one: longer than any secret a rule knows.
const CARRY_BYTES: usize = 256;
/// Streams followed at most (all forgotten at once beyond: a rare miss, never growth).
const CARRIES: usize = 1 << 14;
/// Threads with a current directory of their own followed at most (rare: `unshare(CLONE_FS)`).
const THREAD_CWDS: usize = 4096;
/// Fds remembered per process at most (a process that opens without closing is not followed
/// further: its later fds are read from /proc).
const FDT_PER_PROC: usize = 4096;
/// Fd entries held in all tables at most: ~64 MiB at ~64 bytes an entry.
pub(crate) const FDT_ENTRIES_MAX: usize = 1 << 20;

impl FdTable {
    fn get(&self, tgid: u32, fd: i32) -> Option<Arc<str>> {
        self.procs.get(&tgid)?.get(&fd).map(|(p, _)| p.clone())
    }

    /// The process's current directory as its chdir records left it (`AT_FDCWD`'s entry).
    fn cwd(&self, tgid: u32) -> Option<Arc<str>> {
        self.get(tgid, decode::AT_FDCWD)
    }

    /// What /proc said the current directory is, for a process whose chdirs were not seen (it
    /// was adopted, or its table was let go): later records resolve against it after it exits.
    fn seed_cwd(&mut self, tgid: u32, cwd: &str) {
        if self.procs.len() < FD_CACHE_MAX {
            self.insert(tgid, decode::AT_FDCWD, (cwd.into(), false));
        }
    }

    /// Lets go of a process's table; its entries stop counting when no fork shares it.
    fn release(&mut self, tgid: u32) {
        if let Some(t) = self.procs.remove(&tgid)
            && Arc::strong_count(&t) == 1
        {
            self.entries = self.entries.saturating_sub(t.len());
        }
    }

    /// A process's own table, to change: copied first if a fork shares it. `None` (and the
    /// table dropped, counted) when the copy would pass the bound.
    fn own(&mut self, tgid: u32) -> Option<&mut Fds> {
        let shared_len = match self.procs.get(&tgid) {
            Some(t) if Arc::strong_count(t) > 1 => t.len(),
            _ => 0,
        };
        if self.entries + shared_len > FDT_ENTRIES_MAX {
            self.release(tgid);
            self.shed += 1;
            return None;
        }
        self.entries += shared_len;
        Some(Arc::make_mut(self.procs.entry(tgid).or_default()))
    }

    /// Sets one entry, within both bounds; false when it was not kept.
    fn insert(&mut self, tgid: u32, fd: i32, v: (Arc<str>, bool)) -> bool {
        let full = self.entries >= FDT_ENTRIES_MAX;
        let Some(m) = self.own(tgid) else {
            return false;
        };
        let room = m.len() < FDT_PER_PROC && !full;
        match m.entry(fd) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.insert(v);
                true
            }
            std::collections::hash_map::Entry::Vacant(e) if room => {
                e.insert(v);
                self.entries += 1;
                true
            }
            std::collections::hash_map::Entry::Vacant(_) => {
                if full {
                    self.shed += 1;
                }
                false
            }
        }
    }

    /// Removes one entry, if the process has it.
    fn remove(&mut self, tgid: u32, fd: i32) {
        if self.procs.get(&tgid).is_some_and(|t| t.contains_key(&fd))
            && let Some(m) = self.own(tgid)
            && m.remove(&fd).is_some()
        {
            self.entries = self.entries.saturating_sub(1);
        }
    }

    /// Applies one change; an open's path is already absolute (resolved by the caller against
    /// the directory it names, before this change moves the current directory).
    fn apply(&mut self, tgid: u32, change: decode::FdChange) {
        use decode::FdChange as C;
        // Processes whose exit was never seen must not grow the table without bound.
        if self.procs.len() >= FD_CACHE_MAX {
            self.procs.clear();
            self.entries = 0;
        }
        match change {
            C::Open {
                fd, path, cloexec, ..
            } => {
                // A chdir to a path that could not be made absolute: the directory is unknown
                // (read from /proc while the process lives) rather than wrong.
                let unknown = fd == decode::AT_FDCWD && !path.starts_with('/');
                if unknown || !self.insert(tgid, fd, (path.into(), cloexec)) {
                    self.remove(tgid, fd);
                }
            }
            C::Dup { fd, oldfd, cloexec } => match self.get(tgid, oldfd) {
                Some(p) => {
                    if !self.insert(tgid, fd, (p, cloexec)) {
                        self.remove(tgid, fd);
                    }
                }
                None => self.remove(tgid, fd),
            },
            C::Close { fd } => self.remove(tgid, fd),
            C::CloseRange {
                first,
                last,
                cloexec_only,
            } => {
                let inside = |fd: &i32| *fd >= 0 && (first..=last).contains(&(*fd as u32));
                let touched = self.procs.get(&tgid).is_some_and(|t| {
                    t.iter()
                        .any(|(fd, (_, c))| inside(fd) && !(cloexec_only && *c))
                });
                let mut removed = 0;
                if touched && let Some(m) = self.own(tgid) {
                    if cloexec_only {
                        for (fd, v) in m.iter_mut() {
                            if inside(fd) {
                                v.1 = true;
                            }
                        }
                    } else {
                        let before = m.len();
                        m.retain(|fd, _| !inside(fd));
                        removed = before - m.len();
                    }
                }
                self.entries = self.entries.saturating_sub(removed);
            }
            C::Fork { child } => {
                self.release(child);
                if let Some(t) = self.procs.get(&tgid).cloned() {
                    self.procs.insert(child, t);
                }
            }
            C::Exec => {
                // Only a table with a close-on-exec entry changes (and is copied if shared).
                let mut removed = 0;
                if self
                    .procs
                    .get(&tgid)
                    .is_some_and(|t| t.values().any(|(_, c)| *c))
                    && let Some(m) = self.own(tgid)
                {
                    let before = m.len();
                    m.retain(|_, (_, cloexec)| !*cloexec);
                    removed = before - m.len();
                }
                self.entries = self.entries.saturating_sub(removed);
            }
            // A thread's own directory is the pipeline's (`thread_cwds`), not the table's.
            C::OwnFs => {}
            C::Pair {
                first,
                second,
                socket,
                cloexec,
            } => {
                if socket && second < 0 {
                    // A socket (socket, accept): what kind is read from /proc when it is
                    // written to; whatever the number was before is gone.
                    self.remove(tgid, first);
                    return;
                }
                // A pipe or a socketpair the agent made: a channel between its own processes.
                let what: Arc<str> = if socket {
                    axiom_rules::LOCAL_SOCKET.into()
                } else {
                    axiom_rules::LOCAL_PIPE.into()
                };
                for fd in [first, second] {
                    if fd >= 0 && !self.insert(tgid, fd, (what.clone(), cloexec)) {
                        self.remove(tgid, fd);
                    }
                }
            }
        }
    }

    fn exited(&mut self, tgid: u32) {
        self.release(tgid);
    }

    /// What /proc said an fd the table did not know points at (read while the process lives,
    /// so its exit has not dropped its entry yet). False when the table is full.
    fn learn(&mut self, tgid: u32, fd: i32, path: &str, cloexec: bool) -> bool {
        if self.procs.len() >= FD_CACHE_MAX && !self.procs.contains_key(&tgid) {
            return false;
        }
        self.insert(tgid, fd, (path.into(), cloexec))
    }

    /// Tables dropped for the bound since the last call.
    fn take_shed(&mut self) -> u64 {
        std::mem::take(&mut self.shed)
    }
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
            Body::Exec { cwd, argv, .. } => {
                *cwd = self.cwd(tgid);
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
            time_ns: (d.hdr.ts_ns as i128 + self.clock_offset).max(0) as u64,
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

    /// A change to a thread's own current directory, taken here (true) rather than by its
    /// process's table: the thread's `unshare(CLONE_FS)`, and its chdirs after it. At most
    /// `THREAD_CWDS` threads are followed; beyond, counted (`thread_cwd_shed`) and resolved
    /// against the process's directory, as before.
    fn thread_cwd_changed(&mut self, tgid: u32, tid: u32, change: &decode::FdChange) -> bool {
        use decode::FdChange as C;
        match change {
            C::OwnFs => {
                if self.thread_cwds.len() >= THREAD_CWDS && !self.thread_cwds.contains_key(&tid) {
                    self.bus.stats.count_loss("thread_cwd_shed");
                    return true;
                }
                // It starts where its process is.
                let here = self.thread_cwd(tgid, tid).map(Arc::from);
                self.thread_cwds.insert(tid, (tgid, here));
                true
            }
            C::Open {
                fd: decode::AT_FDCWD,
                dirfd,
                path,
                ..
            } if self.thread_cwds.get(&tid).is_some_and(|(t, _)| *t == tgid) => {
                let p = self.absolute(tgid, tid, *dirfd, path);
                let known = p.starts_with('/').then(|| Arc::from(p.as_str()));
                self.thread_cwds.insert(tid, (tgid, known));
                true
            }
            C::Dup {
                fd: decode::AT_FDCWD,
                oldfd,
                ..
            } if self.thread_cwds.get(&tid).is_some_and(|(t, _)| *t == tgid) => {
                let dir = self.fdt.get(tgid, *oldfd);
                self.thread_cwds.insert(tid, (tgid, dir));
                true
            }
            C::Exec => {
                // One thread is left, with the process's id: what it had of its own, the
                // process now has.
                self.thread_cwds
                    .retain(|t, (p, _)| *p != tgid || *t == tgid);
                false
            }
            _ => false,
        }
    }

    /// The current directory of thread `tid` of `tgid`: its own when it has one, else its
    /// process's.
    fn thread_cwd(&mut self, tgid: u32, tid: u32) -> Option<String> {
        match self.thread_cwds.get(&tid) {
            Some((t, own)) if *t == tgid => own.as_deref().map(str::to_string),
            _ => self.cwd(tgid),
        }
    }

    /// The current directory of `tgid`: as its chdir records left it, else from /proc (and then
    /// remembered, for its records read after it is gone).
    fn cwd(&mut self, tgid: u32) -> Option<String> {
        if let Some(c) = self.fdt.cwd(tgid) {
            return Some(c.to_string());
        }
        let c = procfs::cwd(tgid)?;
        self.fdt.seed_cwd(tgid, &c);
        Some(c)
    }

    /// `path` made absolute against the directory `dirfd` names (the current directory from
    /// the fd table, another directory fd from /proc when the record is read). A path that
    /// reads as the agents' own state or a cache (what rules ignore by default) has its
    /// directory's symlinks resolved: `ln -s .. .cache/up; echo x > .cache/up/app.py` writes
    /// the workspace's `app.py`, not a cache file.
    fn absolute(&mut self, tgid: u32, tid: u32, dirfd: i32, path: &str) -> String {
        let p = absolute(tgid, dirfd, path, || self.thread_cwd(tgid, tid));
        if self.ignored.matches(&p) {
            return resolved(&p).unwrap_or(p);
        }
        p
    }

    /// The path of a file opened for writing: the kernel's, from the dentries of the file it
    /// opened, when it gave all of it; else the path the caller passed, made absolute, when the
    /// kernel's names end it; else what the kernel gave. The caller's string can name another
    /// file than the one opened: a thread changed it during the call, or a symlink on the way
    /// was swapped before this record was read (`.cache/up` → `..`, then a directory).
    fn opened(
        &mut self,
        tgid: u32,
        tid: u32,
        dirfd: i32,
        path: &str,
        kernel: Option<&decode::KernelPath>,
    ) -> String {
        if let Some(whole) = kernel.and_then(decode::KernelPath::whole) {
            return whole;
        }
        let p = self.absolute(tgid, tid, dirfd, path);
        match kernel {
            Some(k) if !k.ends(&p) => {
                self.bus.stats.count_loss("opened_path_partial");
                k.partial()
            }
            _ => p,
        }
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

    /// Secrets on command lines (tokens in curl headers, keys in env assignments).
    fn redact_argv(&self, argv: &mut [String]) {
        if let Some(r) = &self.redactor {
            for a in argv.iter_mut() {
                if let Some((masked, _)) = r(None, a) {
                    *a = masked;
                }
            }
        }
    }

    /// An output record: where it went, its secrets masked, binary and past-capture writes
    /// counted. True when bytes past `sensor.capture_bytes` were not inspected (the event says
    /// so, and status counts how often: `output_past_capture`).
    fn enrich_output(&mut self, tgid: u32, body: &mut Body) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let Body::Output {
            fd,
            target,
            text,
            redacted,
            captured,
            count,
            ..
        } = body
        else {
            return false;
        };
        let past_capture = u64::from(*captured) < *count;
        if past_capture {
            self.bus.stats.past_capture.fetch_add(1, Relaxed);
        }
        if text.is_empty() && *captured > 0 {
            self.bus.stats.binary_writes.fetch_add(1, Relaxed);
            self.bus
                .stats
                .binary_bytes
                .fetch_add(u64::from(*captured), Relaxed);
        }
        *target = self.fd_target(tgid, *fd);
        if let Some(r) = &self.redactor {
            let scope = axiom_rules::write_scope(target.as_deref());
            let own = r(Some(scope), text);
            if let Some((masked, ids)) = self.mask_across(tgid, *fd, scope, text, own) {
                *text = masked;
                *redacted = ids;
            }
        }
        past_capture
    }

    /// A secret split across this write and the stream's last one (`printf 'KEY=AKIA…';
    /// printf '…'`): masked in this write's text, and in the last one's too while its event
    /// still waits in `pending` (writes a few microseconds apart are read in one pass; an older
    /// one is counted, `secret_half_published`). Then this write becomes the stream's carry.
    /// `raw` is the write as written, `own` its masking alone; returns its masking in all.
    fn mask_across(
        &mut self,
        tgid: u32,
        fd: i32,
        scope: axiom_rules::Scope,
        raw: &str,
        mut own: Option<(String, Vec<String>)>,
    ) -> Option<(String, Vec<String>)> {
        let r = self.redactor.as_ref()?;
        let key = (tgid, fd);
        if let Some(c) = self.carries.get(&key)
            && !c.tail.is_empty()
            && !raw.is_empty()
            && let Some(masked_tail) = crossing(r, scope, &c.tail, raw)
        {
            let joined = format!("{}{raw}", c.tail);
            if let Some((masked, ids)) = r(Some(scope), &joined)
                && !masked.starts_with(masked_tail.as_str())
            {
                // Where the masked whole and the masked tail part: the secret starts there.
                let at = masked
                    .char_indices()
                    .zip(masked_tail.chars())
                    .find(|((_, a), b)| a != b)
                    .map_or(masked_tail.len(), |((i, _), _)| i);
                let mut all = own.map(|(_, ids)| ids).unwrap_or_default();
                for id in ids {
                    if !all.contains(&id) {
                        all.push(id);
                    }
                }
                own = Some((masked[at..].to_string(), all));
                // The last write's end, from the secret's start on: masked too (when the tail
                // held no other secret, `at` counts its bytes as written).
                let half = c.tail.get(at..).filter(|_| masked_tail == c.tail);
                let (g, i) = c.pending;
                let fixed = match half {
                    Some(half) if g == self.published => match self.pending.get_mut(i) {
                        Some(Event {
                            body: Body::Output { text: t, .. },
                            ..
                        }) if t.ends_with(half) => {
                            t.truncate(t.len() - half.len());
                            t.push_str(axiom_rules::MASK);
                            true
                        }
                        _ => false,
                    },
                    _ => false,
                };
                if !fixed {
                    self.bus.stats.count_loss("secret_half_published");
                }
            }
        }
        if self.carries.len() >= CARRIES && !self.carries.contains_key(&key) {
            self.carries.clear();
        }
        // The end of this write as written: a secret's first part is at most this long.
        let start = raw.ceil_char_boundary(raw.len().saturating_sub(CARRY_BYTES));
        self.carries.insert(
            key,
            Carry {
                tail: raw[start..].to_string(),
                // Its event is the next one pushed (`emit` follows).
                pending: (self.published, self.pending.len()),
            },
        );
        own
    }

    /// A file record: paths as the kernel saw them are relative to a directory fd or the cwd;
    /// the rules and the store get absolute ones (a symlink's target stays as written). Kept
    /// per process, for a refusal that follows it.
    fn enrich_file(&mut self, tgid: u32, tid: u32, dirfds: (i32, i32), body: &mut Body) {
        let Body::File {
            op, path, path2, ..
        } = body
        else {
            return;
        };
        *path = self.absolute(tgid, tid, dirfds.0, path);
        if let Some(p2) = path2.as_mut()
            && *op != axiom_proto::wire::FileOp::Symlink
        {
            *p2 = self.absolute(tgid, tid, dirfds.1, p2);
        }
        let target = match path2 {
            Some(p2) => format!("{path} -> {p2}"),
            None => path.clone(),
        };
        self.last_file.insert(tgid, (tid, *op, target));
    }

    /// What a refused file operation was: the file record the same thread sent just before it.
    fn refused_file(&mut self, tgid: u32, tid: u32) -> (DeniedOp, String) {
        match self.last_file.remove(&tgid) {
            Some((t, op, target)) if t == tid => (op.into(), target),
            _ => (DeniedOp::File, "?".into()),
        }
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
    fn publish(&mut self) {
        if !self.pending.is_empty() {
            self.bus.publish_all(self.pending.drain(..));
            self.published += 1;
        }
    }
}

/// When a secret starts in `tail` (the stream's last write's end) and goes on into `raw`:
/// `tail` as masked on its own. Judged on `tail` and `raw`'s first `CARRY_BYTES` only (a
/// secret is shorter), so a long write is not redacted a second time whole unless one does.
fn crossing(r: &Redactor, scope: axiom_rules::Scope, tail: &str, raw: &str) -> Option<String> {
    let head = &raw[..raw.floor_char_boundary(CARRY_BYTES)];
    let (masked, _) = r(Some(scope), &format!("{tail}{head}"))?;
    let masked_tail = r(Some(scope), tail).map_or_else(|| tail.to_string(), |m| m.0);
    (!masked.starts_with(masked_tail.as_str())).then_some(masked_tail)
}

/// Events decoded before they are published at the latest: bounds how long the first event
/// of a long pass waits (~1 ms of decoding).
const PUBLISH_EVERY: usize = 256;

/// An absolute path with its directory's symlinks (and `..` after them) resolved, when the
/// directory still exists and resolves elsewhere.
fn resolved(path: &str) -> Option<String> {
    let p = std::path::Path::new(path);
    let (dir, name) = (p.parent()?, p.file_name()?);
    let real = std::fs::canonicalize(dir).ok()?;
    (real != dir).then(|| real.join(name).display().to_string())
}

/// `path` made absolute against the directory `dirfd` of process `tgid` names: `cwd` for the
/// current directory, /proc when the record is read for another directory fd (a process gone
/// since keeps its relative path).
fn absolute(tgid: u32, dirfd: i32, path: &str, cwd: impl FnOnce() -> Option<String>) -> String {
    // `/proc/self/fd/N/name` (Bun's file API opens through a directory fd this way): the
    // directory fd N of that process.
    for prefix in ["/proc/self/fd/", "/proc/thread-self/fd/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let (n, name) = rest.split_once('/').unwrap_or((rest, ""));
            if let Ok(fd) = n.parse::<i32>()
                && let Some(dir) = procfs::fd_target(tgid, fd).filter(|d| d.starts_with('/'))
            {
                return if name.is_empty() {
                    dir
                } else {
                    format!("{}/{name}", dir.trim_end_matches('/'))
                };
            }
        }
    }
    if path.starts_with('/') || path.is_empty() {
        return path.to_string();
    }
    let base = if dirfd == decode::AT_FDCWD {
        cwd()
    } else {
        procfs::fd_target(tgid, dirfd).filter(|b| b.starts_with('/'))
    };
    let Some(base) = base else {
        return path.to_string();
    };
    let mut out: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

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
            let n = self.take(events) + self.take(output);
            if n == 0 {
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
    mut events: RingBuf<MapData>,
    mut output: RingBuf<MapData>,
    mut matches: Option<RingBuf<MapData>>,
    mut p: Pipeline,
    flush: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
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
        if let Some(m) = matches.as_mut() {
            while let Some(r) = m.next() {
                p.handle(&r);
            }
            p.publish();
        }
        // Records written while axiomd was down are already waiting: drain before each wait.
        batch.drain(&mut events, &mut output, &mut p);
        if stopping {
            return Ok(());
        }
        let mut fds = vec![
            PollFd::new(events.as_fd(), PollFlags::POLLIN),
            PollFd::new(output.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(m) = matches.as_ref() {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        // Most output records arrive without a wakeup: the timeout drains them.
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FDT_ENTRIES_MAX, FdTable, decode::FdChange};

    fn pipes(t: &mut FdTable, tgid: u32, n: i32) {
        for i in 0..n {
            t.apply(
                tgid,
                FdChange::Pair {
                    first: 10 + 2 * i,
                    second: 11 + 2 * i,
                    socket: false,
                    cloexec: false,
                },
            );
        }
    }

    /// A process with 2,048 pipes forking in a loop: each child shares its parent's table, so
    /// axiomd holds one table, not one per fork.
    #[test]
    fn forks_share_a_table_until_one_changes_it() {
        let mut t = FdTable::default();
        pipes(&mut t, 1, 1024);
        assert_eq!(t.entries, 2048);
        for child in 2..2002 {
            t.apply(1, FdChange::Fork { child });
            t.apply(child, FdChange::Exec);
        }
        assert_eq!(
            t.entries, 2048,
            "a fork or an exec with nothing to close copied"
        );
        assert_eq!(t.get(1500, 10).as_deref(), Some(axiom_rules::LOCAL_PIPE));
        // One child closes an fd: it gets a copy of its own; the others still share.
        t.apply(7, FdChange::Close { fd: 10 });
        assert_eq!(t.entries, 2048 + 2047);
        assert!(t.get(7, 10).is_none());
        assert!(t.get(8, 10).is_some() && t.get(1, 10).is_some());
        // Exits give back what no one else holds.
        t.exited(7);
        assert_eq!(t.entries, 2048);
        for child in 2..2002 {
            t.exited(child);
        }
        t.exited(1);
        assert_eq!(t.entries, 0);
    }

    /// Copies that would pass the bound drop the copying process's table instead, counted.
    #[test]
    fn copies_past_the_bound_are_shed() {
        let mut t = FdTable::default();
        pipes(&mut t, 1, 2048);
        let copies = FDT_ENTRIES_MAX / 4096 + 10;
        for child in 2..2 + copies as u32 {
            t.apply(1, FdChange::Fork { child });
            t.apply(child, FdChange::Close { fd: 10 });
        }
        assert!(t.entries <= FDT_ENTRIES_MAX, "{}", t.entries);
        assert!(t.take_shed() > 0);
        assert_eq!(t.take_shed(), 0);
        // The parent's own table is intact.
        assert!(t.get(1, 10).is_some());
    }
}
