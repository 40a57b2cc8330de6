//! Resource limits on an agent's processes, with whichever cgroup controllers the host has.
//!
//! On a unified host the pids, memory and cpu controllers are in cgroup v2 and the limits go on
//! the agent's own v2 cgroup. On a hybrid host (v2 mounted at /sys/fs/cgroup/unified, the
//! controllers bound to v1 hierarchies) each controller's v1 hierarchy gets an
//! group of its own at the same relative path as its v2 cgroup (`axiom/agent-<id>`) and the agent's first process is moved into it before it
//! runs anything, so every descendant is counted. What cannot be applied is reported by name.
use std::path::{Path, PathBuf};

use axiom_proto::confine::Limits;

/// Where one limit went, or why it did not.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Report {
    /// e.g. `pids.max=64 (cgroup v2)`.
    pub(crate) applied: Vec<String>,
    /// e.g. `cpu: no cpu controller in cgroup v2 or v1`.
    pub(crate) not_applied: Vec<String>,
    /// v1 groups made for this agent (removed when it is forgotten).
    pub(crate) v1_dirs: Vec<PathBuf>,
}

/// The v1 hierarchy a controller is bound to, from /proc/self/mountinfo.
fn v1_mount(controller: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut f = post.split_whitespace();
        if f.next()? != "cgroup" {
            return None;
        }
        let opts = f.nth(1)?;
        opts.split(',')
            .any(|o| o == controller)
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// Makes `controller` available to the children of `dir` in v2 (enabling it in
/// `cgroup.subtree_control` of every ancestor from the mount down), if the hierarchy has it.
fn v2_enable(mount: &Path, dir: &Path, controller: &str) -> bool {
    let has = |d: &Path| {
        std::fs::read_to_string(d.join("cgroup.controllers"))
            .is_ok_and(|s| s.split_whitespace().any(|c| c == controller))
    };
    if !has(mount) {
        return false;
    }
    let Ok(rel) = dir.parent().unwrap_or(dir).strip_prefix(mount) else {
        return false;
    };
    let mut at = mount.to_path_buf();
    let mut chain = vec![at.clone()];
    for c in rel.components() {
        at.push(c);
        chain.push(at.clone());
    }
    for d in chain {
        let _ = std::fs::write(d.join("cgroup.subtree_control"), format!("+{controller}"));
    }
    has(dir)
}

/// One limit: its v2 files and values, its v1 ones.
struct Want {
    controller: &'static str,
    v2: Vec<(&'static str, String)>,
    v1: Vec<(&'static str, String)>,
}

/// Applies `limits` to agent `agent`, whose v2 cgroup is `v2_dir` (already holding `pid`).
pub(crate) fn apply(
    agent: u64,
    v2_mount: &Path,
    v2_dir: &Path,
    pid: u32,
    limits: &Limits,
) -> Report {
    let mut wants = Vec::new();
    if let Some(n) = limits.pids {
        wants.push(Want {
            controller: "pids",
            v2: vec![("pids.max", n.to_string())],
            v1: vec![("pids.max", n.to_string())],
        });
    }
    if let Some(b) = limits.memory_bytes {
        wants.push(Want {
            controller: "memory",
            // No swap beyond the limit: a memory bomb meets the OOM killer, not the disk.
            v2: vec![
                ("memory.max", b.to_string()),
                ("memory.swap.max", "0".into()),
            ],
            v1: vec![
                ("memory.limit_in_bytes", b.to_string()),
                ("memory.memsw.limit_in_bytes", b.to_string()),
            ],
        });
    }
    if let Some(pct) = limits.cpu_percent {
        let period = 100_000u64;
        let quota = period * pct as u64 / 100;
        wants.push(Want {
            controller: "cpu",
            v2: vec![("cpu.max", format!("{quota} {period}"))],
            v1: vec![
                ("cpu.cfs_period_us", period.to_string()),
                ("cpu.cfs_quota_us", quota.to_string()),
            ],
        });
    }
    let mut r = Report::default();
    for w in wants {
        if v2_enable(v2_mount, v2_dir, w.controller) {
            write_all(&mut r, v2_dir, &w.v2, "cgroup v2");
            continue;
        }
        let Some(m) = v1_mount(w.controller) else {
            r.not_applied.push(format!(
                "{}: no {} controller in cgroup v2 or v1",
                w.v2[0].0, w.controller
            ));
            continue;
        };
        // The same place in the v1 hierarchy as the agent's v2 cgroup (unique per daemon).
        let rel = v2_dir
            .strip_prefix(v2_mount)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| PathBuf::from("axiom").join(format!("agent-{agent}")));
        let dir = m.join(rel);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            r.not_applied
                .push(format!("{}: {}: {e}", w.v2[0].0, dir.display()));
            continue;
        }
        r.v1_dirs.push(dir.clone());
        write_all(&mut r, &dir, &w.v1, "cgroup v1");
        if let Err(e) = std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
            r.not_applied.push(format!(
                "{}: moving pid {pid} into {}: {e}",
                w.controller,
                dir.display()
            ));
        }
    }
    r
}

/// Writes each file; the first (the limit itself) must succeed, the others are refinements the
/// kernel may lack (swap accounting).
fn write_all(r: &mut Report, dir: &Path, files: &[(&'static str, String)], via: &str) {
    for (i, (f, v)) in files.iter().enumerate() {
        match std::fs::write(dir.join(f), v) {
            Ok(()) => r.applied.push(format!("{f}={v} ({via})")),
            Err(e) if i == 0 => r.not_applied.push(format!("{f}={v} ({via}): {e}")),
            Err(_) => {}
        }
    }
}

/// Times the agent hit a limit so far: forks refused at pids.max, OOM kills at the memory limit.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Hits {
    pub(crate) fork_refused: u64,
    pub(crate) oom_kills: u64,
}

fn counter(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Reads the limit counters of an agent's groups (v2 dir and v1 dirs alike).
pub(crate) fn hits(v2_dir: &Path, v1_dirs: &[PathBuf]) -> Hits {
    let mut h = Hits::default();
    for d in std::iter::once(v2_dir).chain(v1_dirs.iter().map(PathBuf::as_path)) {
        h.fork_refused += counter(&d.join("pids.events"), "max").unwrap_or(0);
        h.oom_kills += counter(&d.join("memory.events"), "oom_kill")
            .or_else(|| counter(&d.join("memory.oom_control"), "oom_kill"))
            .unwrap_or(0);
    }
    h
}

/// Removes an ended agent's v1 groups (each empty once its processes are gone).
pub(crate) fn remove(v1_dirs: &[PathBuf]) {
    for d in v1_dirs {
        let _ = std::fs::remove_dir(d);
    }
}
