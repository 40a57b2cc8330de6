//! Just enough /proc reading to adopt running processes: parent, flags, owner, descendants.
use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::PathBuf};

/// `PF_KTHREAD` in /proc/<pid>/stat's flags field.
const PF_KTHREAD: u64 = 0x0020_0000;

#[derive(Clone, Debug)]
pub struct ProcStat {
    pub ppid: u32,
    pub flags: u64,
    /// Owner (effective uid) of the process.
    pub uid: u32,
    pub comm: String,
}

/// Reads /proc/<pid>/stat; `None` when the process does not exist (or just exited).
pub fn stat(pid: u32) -> Option<ProcStat> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let uid = std::fs::metadata(&dir).ok()?.uid();
    let s = std::fs::read_to_string(dir.join("stat")).ok()?;
    // comm may hold spaces and parentheses: fields resume after the last ')'.
    let close = s.rfind(')')?;
    let comm = s[s.find('(')? + 1..close].to_string();
    let rest = &s[close + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is state (field 3); ppid is field 4, flags field 9.
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        flags: f.get(6)?.parse().ok()?,
        uid,
        comm,
    })
}

impl ProcStat {
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// A process's argv (empty for kernel threads, zombies and processes that are gone).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every live process id.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Direct children of a process from /proc/<pid>/task/*/children (CONFIG_PROC_CHILDREN); `None`
/// when the kernel does not provide the file.
fn children(pid: u32) -> Option<Vec<u32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let s = std::fs::read_to_string(t.path().join("children")).ok()?;
        out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    Some(out)
}

/// Parent links of the machine's processes, kept from one adoption to the next. Where the kernel
/// has no children files (CONFIG_PROC_CHILDREN), finding a process's descendants means knowing
/// every process's parent: read whole each time, that is a stat read per process per adoption,
/// and adopting 10,000 agents one by one took minutes. Kept here, each adoption lists /proc and
/// reads the stat of the processes it has not seen before only.
#[derive(Default)]
pub struct ProcTree {
    parent: HashMap<u32, u32>,
}

impl ProcTree {
    /// Every descendant of `root` (children, grandchildren, …), each confirmed by a fresh read
    /// of its parent (a process reparented since it was seen is not counted).
    pub fn descendants(&mut self, root: u32) -> Vec<u32> {
        if let Some(found) = descendants_by_children(root) {
            return found;
        }
        let live: std::collections::HashSet<u32> = pids().into_iter().collect();
        self.parent.retain(|p, _| live.contains(p));
        for p in live {
            if let std::collections::hash_map::Entry::Vacant(e) = self.parent.entry(p)
                && let Some(st) = stat(p)
            {
                e.insert(st.ppid);
            }
        }
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (p, pp) in &self.parent {
            children.entry(*pp).or_default().push(*p);
        }
        let mut out = Vec::new();
        let mut stack = vec![root];
        while let Some(p) = stack.pop() {
            for c in children.get(&p).into_iter().flatten() {
                // A pid seen before may have been reused, or reparented: believe /proc now.
                match stat(*c) {
                    Some(st) if st.ppid == p => {
                        out.push(*c);
                        stack.push(*c);
                    }
                    Some(st) => {
                        self.parent.insert(*c, st.ppid);
                    }
                    None => {
                        self.parent.remove(c);
                    }
                }
            }
        }
        out
    }
}

/// Every descendant of `root` through the children files; `None` when the kernel has none.
fn descendants_by_children(root: u32) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        match children(p) {
            Some(c) => {
                out.extend(&c);
                stack.extend(c);
            }
            None if p == root => return None,
            None => {} // exited meanwhile
        }
    }
    Some(out)
}

/// The current working directory of a process, if it can still be read.
pub fn cwd(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// What an fd points at (`/path`, `pipe:[…]`, `socket:[…]`, `/dev/pts/N`).
pub fn fd_target(pid: u32, fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// What a slim kernel record leaves out: the process's name, owner and cgroup.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub comm: String,
    pub uid: u32,
    pub cgroup_id: u64,
}

/// Reads a process's identity from /proc (`None` if it is gone).
pub fn identity(pid: u32, cgroup2: Option<&std::path::Path>) -> Option<Identity> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let uid = std::fs::metadata(&dir).ok()?.uid();
    let comm = std::fs::read_to_string(dir.join("comm"))
        .ok()?
        .trim_end()
        .to_string();
    let cgroup_id = cgroup2
        .and_then(|root| {
            let s = std::fs::read_to_string(dir.join("cgroup")).ok()?;
            let rel = s.lines().find_map(|l| l.strip_prefix("0::"))?;
            let p = root.join(rel.trim_start_matches('/'));
            std::fs::metadata(p).ok().map(|m| m.ino())
        })
        .unwrap_or(0);
    Some(Identity {
        comm,
        uid,
        cgroup_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Children of `root` as the tree finds them, once `want` of them have started.
    fn wait_for(tree: &mut ProcTree, root: u32, want: usize) -> Vec<u32> {
        let t0 = std::time::Instant::now();
        loop {
            let mut d = tree.descendants(root);
            if d.len() >= want || t0.elapsed() > std::time::Duration::from_secs(5) {
                d.sort_unstable();
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn the_tree_finds_new_descendants_and_forgets_gone_ones() {
        let mut tree = ProcTree::default();
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & read x; sleep 30 & wait"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let root = sh.id();
        let first = wait_for(&mut tree, root, 2);
        assert_eq!(first.len(), 2, "{first:?}");
        // One ends; another starts after the tree has seen the first two.
        let gone = first[0];
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(gone as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        use std::io::Write as _;
        sh.stdin.take().unwrap().write_all(b"\n").unwrap();
        let t0 = std::time::Instant::now();
        let now = loop {
            let mut d = tree.descendants(root);
            d.sort_unstable();
            if (!d.contains(&gone) && d.len() == 2) || t0.elapsed().as_secs() > 5 {
                break d;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(!now.contains(&gone), "{now:?} still has {gone}");
        assert!(now.contains(&first[1]), "{now:?}");
        assert_eq!(now.len(), 2, "{now:?}");
        let _ = sh.kill();
        for p in now {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = sh.wait();
    }
}
