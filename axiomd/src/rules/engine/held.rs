//! Findings about a file held for a moment: a temporary file renamed over its target (an
//! atomic write) is reported under the target's name, however late its rename is read.
//!
//! The wait is measured in the kernel's record, not by the rules thread's clock: a finding
//! is given up on only once the sensor has read every record up to HOLD after its write (the
//! bus's mark) and none renamed the file. A reader or rules thread that falls behind on a busy
//! machine delays the report; it cannot lose the rename (the test suite once did, with a
//! wall-clock wait, when the reader was descheduled).
use super::{Engine, Finding};

/// A finding about a temporary file, now about the file it was renamed to.
pub(super) fn renamed_to(f: &mut Finding, from: &str, to: &str) {
    f.detail = format!("{} (written as {from}, renamed)", f.detail);
    f.path = Some(to.to_string());
}

/// How long after its write, in the kernel's record, a finding on a temporary file waits for
/// the rename that names its real file. Claude Code's Write tool flushes the temporary file to
/// disk before it renames it: on a machine busy with I/O the rename comes seconds after the
/// write. A rename or an unlink of the file, or the agent's exit, ends the wait at once; only a
/// temporary file that stays is reported this late.
pub(super) const HOLD_NS: u64 = 30_000_000_000;

/// How long, in the kernel's record, a rename is remembered for a write to the file it moved
/// whose event comes after it: a write read back from the file once its writer closed it, or
/// one decoded in a later reader pass, reaches the rules after the rename (the suite once lost
/// one this way on a loaded machine, with a 2 s memory by the rules thread's clock).
pub(super) const RENAME_MEMORY_NS: u64 = 60_000_000_000;

/// Renames remembered at most.
const RENAMES_MAX: usize = 4096;

/// A file name an atomic write uses before it renames the file over its target: Claude Code's
/// `app.py.tmp.<pid>.<rand>`, `app.py.tmp`, editors' `.app.py.swp` and `app.py~`.
pub(super) fn temporary(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.contains(".tmp.")
        || name.ends_with(".tmp")
        || name.ends_with('~')
        || (name.starts_with('.') && name.ends_with(".swp"))
}

/// A rename as the rules remember it: when (kernel time), by which process, from, to.
pub(super) type Rename = (u64, u32, String, String);

/// Where a finding about `path`, made for process `pid`, goes when process `by` renames `from`
/// to `to`: `to`, or `None` when the rename is not of that file.
///
/// A rename made relative to a directory descriptor (`renameat(dirfd, "a.tmp", dirfd, "a")`,
/// as Claude Code's runtime does) whose descriptor was closed before the sensor could look it
/// up arrives as `/proc/self/fd/<n>/<name>`: it is the file when the same process renames a
/// file of that name (a temporary name carries the writer's pid and a random part), and its
/// target is then the name in the finding's own directory.
fn destination(path: &str, pid: u32, by: u32, from: &str, to: &str) -> Option<String> {
    if path == from {
        return Some(to.to_string());
    }
    let unresolved = |p: &str| {
        let rest = p.strip_prefix("/proc/self/fd/")?;
        let (fd, name) = rest.split_once('/')?;
        (fd.bytes().all(|b| b.is_ascii_digit()) && !name.contains('/'))
            .then(|| (fd.to_string(), name.to_string()))
    };
    let (fd, name) = unresolved(from)?;
    let (dir, file) = path.rsplit_once('/')?;
    if pid != by || file != name {
        return None;
    }
    Some(match unresolved(to) {
        Some((to_fd, to_name)) if to_fd == fd => format!("{dir}/{to_name}"),
        Some(_) => return None,
        None => to.to_string(),
    })
}

impl Engine {
    /// A finding about a temporary file waits for the rename that names the real one (or takes
    /// the name of a rename that came first); any other finding is due now.
    pub(super) fn name_file(&mut self, mut f: Finding, written_ns: u64) -> Option<Finding> {
        let Some(path) = f.path.clone().filter(|p| temporary(p)) else {
            return Some(f);
        };
        // A rename of this file at or after the write (in the kernel's record) names it.
        let to = self
            .renames
            .iter()
            .rev()
            .filter(|(t, ..)| *t >= written_ns)
            .find_map(|(_, by, from, to)| destination(&path, f.pid, *by, from, to));
        match to {
            Some(to) => {
                renamed_to(&mut f, &path, &to);
                Some(f)
            }
            None => {
                self.held.push((written_ns.saturating_add(HOLD_NS), f));
                None
            }
        }
    }

    /// A rename: held findings about `from` are now about `to`, and due at once.
    pub(super) fn renamed(&mut self, from: &str, to: &str, at_ns: u64, by: u32) {
        while self.renames.front().is_some_and(|(t, ..)| {
            at_ns.saturating_sub(*t) > RENAME_MEMORY_NS || self.renames.len() >= RENAMES_MAX
        }) {
            self.renames.pop_front();
        }
        if temporary(from) {
            self.renames
                .push_back((at_ns, by, from.to_string(), to.to_string()));
        }
        for (due, f) in self.held.iter_mut() {
            let Some(path) = f.path.clone() else { continue };
            if let Some(dest) = destination(&path, f.pid, by, from, to) {
                renamed_to(f, &path, &dest);
                *due = 0;
            }
        }
    }

    /// Held findings that no rename will name are due now, under the name they were written to.
    pub(super) fn due_now(&mut self, which: impl Fn(&Finding) -> bool) {
        for (due, f) in self.held.iter_mut() {
            if which(f) {
                *due = 0;
            }
        }
    }

    /// The sensor has handed over every kernel record stamped before `ns` (wall ns).
    pub(crate) fn read_to(&mut self, ns: u64) {
        self.read_to_ns = self.read_to_ns.max(ns);
    }

    /// Held findings whose time has come in the kernel's record.
    pub(crate) fn release(&mut self) -> Vec<Finding> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let read_to = self.read_to_ns;
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(t, _)| *t <= read_to);
        self.held = keep;
        due.into_iter().map(|(_, f)| f).collect()
    }

    /// Whether findings are held (the caller then wakes up sooner than its tick).
    pub(crate) fn holding(&self) -> bool {
        !self.held.is_empty()
    }
}
