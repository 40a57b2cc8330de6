//! The fd table: per process, what each fd it opened for writing points at, kept in order with
//! its writes from the kernel's fd records (copy on write across forks, bounded).
use std::sync::Arc;

use foldhash::HashMap;

use super::{FD_CACHE_MAX, decode};

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
pub(super) struct FdTable {
    procs: HashMap<u32, Arc<Fds>>,
    /// Entries held, each distinct table counted once however many processes share it.
    entries: usize,
    /// Tables dropped for the bound since the last `take_shed`.
    shed: u64,
    /// Pipes the agents made, so far: each one's number in its name.
    pipes: u64,
}

pub(super) type Fds = HashMap<i32, (Arc<str>, bool)>;

/// Fds remembered per process at most (a process that opens without closing is not followed
/// further: its later fds are read from /proc).
const FDT_PER_PROC: usize = 4096;
/// Fd entries held in all tables at most: ~64 MiB at ~64 bytes an entry.
pub(crate) const FDT_ENTRIES_MAX: usize = 1 << 20;

impl FdTable {
    pub(super) fn get(&self, tgid: u32, fd: i32) -> Option<Arc<str>> {
        self.procs.get(&tgid)?.get(&fd).map(|(p, _)| p.clone())
    }

    /// The process's current directory as its chdir records left it (`AT_FDCWD`'s entry).
    pub(super) fn cwd(&self, tgid: u32) -> Option<Arc<str>> {
        self.get(tgid, decode::AT_FDCWD)
    }

    /// What /proc said the current directory is, for a process whose chdirs were not seen (it
    /// was adopted, or its table was let go): later records resolve against it after it exits.
    pub(super) fn seed_cwd(&mut self, tgid: u32, cwd: &str) {
        if self.procs.len() < FD_CACHE_MAX {
            self.insert(tgid, decode::AT_FDCWD, (cwd.into(), false));
        }
    }

    /// Lets go of a process's table; its entries stop counting when no fork shares it.
    pub(super) fn release(&mut self, tgid: u32) {
        if let Some(t) = self.procs.remove(&tgid)
            && Arc::strong_count(&t) == 1
        {
            self.entries = self.entries.saturating_sub(t.len());
        }
    }

    /// A process's own table, to change: copied first if a fork shares it. `None` (and the
    /// table dropped, counted) when the copy would pass the bound.
    pub(super) fn own(&mut self, tgid: u32) -> Option<&mut Fds> {
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
    pub(super) fn insert(&mut self, tgid: u32, fd: i32, v: (Arc<str>, bool)) -> bool {
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
    pub(super) fn remove(&mut self, tgid: u32, fd: i32) {
        if self.procs.get(&tgid).is_some_and(|t| t.contains_key(&fd))
            && let Some(m) = self.own(tgid)
            && m.remove(&fd).is_some()
        {
            self.entries = self.entries.saturating_sub(1);
        }
    }

    /// Applies one change; an open's path is already absolute (resolved by the caller against
    /// the directory it names, before this change moves the current directory).
    pub(super) fn apply(&mut self, tgid: u32, change: decode::FdChange) {
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
                    self.pipes += 1;
                    axiom_rules::local_pipe(self.pipes).into()
                };
                for fd in [first, second] {
                    if fd >= 0 && !self.insert(tgid, fd, (what.clone(), cloexec)) {
                        self.remove(tgid, fd);
                    }
                }
            }
        }
    }

    pub(super) fn exited(&mut self, tgid: u32) {
        self.release(tgid);
    }

    /// What /proc said an fd the table did not know points at (read while the process lives,
    /// so its exit has not dropped its entry yet). False when the table is full.
    pub(super) fn learn(&mut self, tgid: u32, fd: i32, path: &str, cloexec: bool) -> bool {
        if self.procs.len() >= FD_CACHE_MAX && !self.procs.contains_key(&tgid) {
            return false;
        }
        self.insert(tgid, fd, (path.into(), cloexec))
    }

    /// Tables dropped for the bound since the last call.
    pub(super) fn take_shed(&mut self) -> u64 {
        std::mem::take(&mut self.shed)
    }
}

#[cfg(test)]
mod tests {
    use super::{FDT_ENTRIES_MAX, FdTable, decode::FdChange};

    pub(super) fn pipes(t: &mut FdTable, tgid: u32, n: i32) {
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
    pub(super) fn forks_share_a_table_until_one_changes_it() {
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
        assert_eq!(t.get(1500, 10).as_deref(), Some("pipe:[agent:1]"));
        assert_eq!(t.get(1500, 13).as_deref(), Some("pipe:[agent:2]"));
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
    pub(super) fn copies_past_the_bound_are_shed() {
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
