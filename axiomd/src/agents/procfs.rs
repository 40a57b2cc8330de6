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

/// Every descendant of `root` (children, grandchildren, …): walks the children files, so the
/// cost follows the size of the tree, not of the machine (adopting 10,000 agents one by one must
/// not scan /proc 10,000 times). Falls back to one scan of /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        match children(p) {
            Some(c) => {
                out.extend(&c);
                stack.extend(c);
            }
            None if p == root => return descendants_by_scan(root),
            None => {} // exited meanwhile
        }
    }
    out
}

fn descendants_by_scan(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in pids() {
        if let Some(st) = stat(pid) {
            children.entry(st.ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if let Some(c) = children.get(&p) {
            out.extend(c);
            stack.extend(c);
        }
    }
    out
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
