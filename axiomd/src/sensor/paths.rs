//! Paths as the kernel resolved them for the process: its (or its thread's) current directory,
//! a directory fd, a file the kernel named from its dentries.
use std::sync::Arc;

use super::decode;
use crate::kernel::procfs;

impl super::Pipeline {
    /// A change to a thread's own current directory, taken here (true) rather than by its
    /// process's table: the thread's `unshare(CLONE_FS)`, and its chdirs after it. At most
    /// `THREAD_CWDS` threads are followed; beyond, counted (`thread_cwd_shed`) and resolved
    /// against the process's directory, as before.
    pub(super) fn thread_cwd_changed(
        &mut self,
        tgid: u32,
        tid: u32,
        change: &decode::FdChange,
    ) -> bool {
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
    pub(super) fn thread_cwd(&mut self, tgid: u32, tid: u32) -> Option<String> {
        match self.thread_cwds.get(&tid) {
            Some((t, own)) if *t == tgid => own.as_deref().map(str::to_string),
            _ => self.cwd(tgid),
        }
    }

    /// The current directory of `tgid`: as its chdir records left it, else from /proc (and then
    /// remembered, for its records read after it is gone).
    pub(super) fn cwd(&mut self, tgid: u32) -> Option<String> {
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
    pub(super) fn absolute(&mut self, tgid: u32, tid: u32, dirfd: i32, path: &str) -> String {
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
    pub(super) fn opened(
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
}

/// An absolute path with its directory's symlinks (and `..` after them) resolved, when the
/// directory still exists and resolves elsewhere.
pub(super) fn resolved(path: &str) -> Option<String> {
    let p = std::path::Path::new(path);
    let (dir, name) = (p.parent()?, p.file_name()?);
    let real = std::fs::canonicalize(dir).ok()?;
    (real != dir).then(|| real.join(name).display().to_string())
}

/// `path` made absolute against the directory `dirfd` of process `tgid` names: `cwd` for the
/// current directory, /proc when the record is read for another directory fd (a process gone
/// since keeps its relative path).
pub(super) fn absolute(
    tgid: u32,
    dirfd: i32,
    path: &str,
    cwd: impl FnOnce() -> Option<String>,
) -> String {
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

/// Threads with a current directory of their own followed at most (rare: `unshare(CLONE_FS)`).
pub(super) const THREAD_CWDS: usize = 4096;
