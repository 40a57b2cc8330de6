//! What a test run killed part-way leaves in the kernel: pin directories (with attached links, so
//! every later write still pays for the sensor) and agent cgroups. The test harness names both
//! `<name>_<pid>_<seq>` after its own process; when that process is gone, nobody will unpin them.
//! `cargo xtask test` and the benchmarks sweep them first, so one killed run does not make the
//! next one refuse to measure ("another sensor is attached") or measure someone else's sensor.
use std::path::{Path, PathBuf};

const BPFFS: &str = "/sys/fs/bpf";

/// The test process a harness-made name belongs to, if the name has the harness's shape.
fn owner_pid(name: &str) -> Option<i32> {
    let mut parts = name.rsplitn(3, '_');
    let seq = parts.next()?;
    let pid = parts.next()?;
    let prefix = parts.next()?;
    if prefix.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) || seq.is_empty() {
        return None;
    }
    pid.parse().ok().filter(|p: &i32| *p > 0)
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Entries under `dir` named by a test process that no longer runs.
fn orphans(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(owner_pid)
                        .is_some_and(|pid| !alive(pid))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Unpins what dead test daemons left (removing a link's pin detaches it once nothing else
/// holds it) and removes their empty agent cgroups. Prints what it removed; never fails the run
/// (what it cannot remove, the benchmarks' clean-kernel check still reports).
pub fn sweep_stale() {
    for pin in orphans(Path::new(BPFFS)) {
        // Only the daemon's layout: a pin directory with `links` or `maps` inside.
        if !pin.join("links").is_dir() && !pin.join("maps").is_dir() {
            continue;
        }
        match std::fs::remove_dir_all(&pin) {
            Ok(()) => eprintln!(
                "xtask: unpinned {} (its test process is gone)",
                pin.display()
            ),
            Err(e) => eprintln!("xtask: could not unpin {}: {e}", pin.display()),
        }
    }
    for root in [
        "/sys/fs/cgroup/unified/axiom-tests",
        "/sys/fs/cgroup/axiom-tests",
    ] {
        for group in orphans(Path::new(root)) {
            remove_empty_tree(&group);
        }
    }
}

/// cgroupfs removes only empty groups, leaves first; a group still holding a process stays.
fn remove_empty_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten().filter(|e| e.path().is_dir()) {
            remove_empty_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn only_harness_names_have_an_owner() {
        assert_eq!(owner_pid("real_codex_25638_37"), Some(25638));
        assert_eq!(owner_pid("escapes_12_0"), Some(12));
        assert_eq!(owner_pid("axiom"), None);
        assert_eq!(owner_pid("maps.debug"), None);
        assert_eq!(owner_pid("a_b_c"), None);
        assert_eq!(owner_pid("_12_3"), None);
    }
}
