//! cgroup v2: where it is mounted (detected, never assumed) and what is in a directory.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

pub(crate) use axiom_proto::host::cgroup2_mount as mount_point;

/// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`) is the directory's inode number.
pub(crate) fn id(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

/// Whether `path` is a directory of a cgroup v2 hierarchy.
pub(crate) fn is_cgroup2_dir(path: &Path) -> bool {
    path.join("cgroup.procs").exists() && path.join("cgroup.controllers").exists()
}

/// `path` and every directory below it (a cgroup's subtree).
fn subtree(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            stack.extend(
                rd.flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path()),
            );
        }
        out.push(dir);
    }
    out
}

/// Pids in `path` and every cgroup below it.
pub(crate) fn procs_recursive(path: &Path) -> Vec<u32> {
    subtree(path)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Cgroup ids of `path` and its descendants (each must be tracked: the kernel matches exact ids).
pub(crate) fn subtree_ids(path: &Path) -> Vec<u64> {
    subtree(path).iter().filter_map(|d| id(d).ok()).collect()
}

/// Does the cgroup (or one below it) still hold a process? (`populated` in cgroup.events; a
/// cgroup that is gone holds nothing.)
pub(crate) fn populated(path: &Path) -> bool {
    event_is(path, "populated 1")
}

/// Has the cgroup finished freezing? (`frozen` in cgroup.events: writing cgroup.freeze only
/// asks; the kernel reports the tree frozen once every task in it has stopped.)
pub(crate) fn frozen(path: &Path) -> bool {
    event_is(path, "frozen 1")
}

/// Waits, up to `timeout`, for the cgroup's freezer to reach `want`, so that a freeze or thaw
/// answered as done is done (a task in uninterruptible sleep can hold it up; then the caller
/// is answered anyway and the kernel finishes later). Returns whether it got there.
pub(crate) fn settle_freezer(path: &Path, want: bool, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if frozen(path) == want || !populated(path) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn event_is(path: &Path, line: &str) -> bool {
    std::fs::read_to_string(path.join("cgroup.events")).is_ok_and(|s| s.lines().any(|l| l == line))
}
