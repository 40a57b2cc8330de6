//! Just enough /proc reading to adopt running processes: parent, flags, owner, descendants.
use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::PathBuf};

/// `PF_KTHREAD` in /proc/<pid>/stat's flags field.
const PF_KTHREAD: u64 = 0x0020_0000;

#[derive(Clone, Debug)]
pub(crate) struct ProcStat {
    pub(crate) ppid: u32,
    pub(crate) flags: u64,
    /// Owner (effective uid) of the process.
    pub(crate) uid: u32,
    pub(crate) comm: String,
}

/// Reads /proc/<pid>/stat; `None` when the process does not exist (or just exited).
pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
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
    pub(crate) fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// Whether a process that just ran `program` holds more privilege than `uid`, its real uid
/// when it exec'd: any of its uids or gids differs from its real ones or from `uid`, or it
/// holds capabilities `uid` (not root) has no claim to. Gone from /proc already: judged by the
/// program's set-id bits and file capabilities (what would have elevated it).
pub(crate) fn elevated(pid: u32, uid: u32, program: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => {
            let field = |key: &str| s.lines().find_map(|l| l.strip_prefix(key)).unwrap_or("");
            let ids = |key: &str| -> Vec<u32> {
                field(key)
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            };
            let (uids, gids) = (ids("Uid:"), ids("Gid:"));
            let caps = u64::from_str_radix(field("CapEff:").trim(), 16).unwrap_or(0);
            uids.iter().any(|&u| u != uid)
                || gids.iter().any(|g| Some(g) != gids.first())
                || (uid != 0 && caps != 0 && in_initial_userns(pid))
        }
        Err(_) => {
            let setid = std::fs::metadata(program).is_ok_and(|m| {
                m.mode() & 0o6000 != 0 && (m.uid() != uid || m.mode() & 0o2000 != 0)
            });
            setid || file_caps(program)
        }
    }
}

/// Capabilities held in a user namespace of the process's own (a sandbox such as bubblewrap)
/// give nothing over the owner's files: only the initial namespace's count.
fn in_initial_userns(pid: u32) -> bool {
    let ns = |p: String| std::fs::read_link(p).ok();
    ns(format!("/proc/{pid}/ns/user")).is_some_and(|n| Some(n) == ns("/proc/self/ns/user".into()))
}

/// Whether a program carries file capabilities (`security.capability`).
fn file_caps(program: &str) -> bool {
    let Ok(path) = std::ffi::CString::new(program) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and no buffer: asks only for the attribute's size.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n > 0
}

/// A pidfd for `pid`: it names that process and no later holder of the pid (`None`: gone).
pub(crate) fn pidfd(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    // SAFETY: a descriptor the kernel just gave us, owned by nobody else.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process a pidfd names has exited (a zombie has: its exit already ran).
pub(crate) fn has_exited(fd: &std::os::fd::OwnedFd) -> bool {
    use std::os::fd::AsRawFd as _;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n != 0
}

/// A process's argv (empty for kernel threads, zombies and processes that are gone).
pub(crate) fn cmdline(pid: u32) -> Vec<String> {
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
pub(crate) fn pids() -> Vec<u32> {
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
pub(crate) fn descendants(root: u32) -> Vec<u32> {
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
pub(crate) fn cwd(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// What an fd points at (`/path`, `pipe:[…]`, `socket:[…]`, `/dev/pts/N`).
pub(crate) fn fd_target(pid: u32, fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Whether a process's fd closes on exec (`O_CLOEXEC` in its fdinfo's octal `flags`); `None`
/// if the fd or the process is gone.
pub(crate) fn fd_cloexec(pid: u32, fd: i32) -> Option<bool> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())?;
    Some(flags & libc::O_CLOEXEC as u32 != 0)
}

/// What a slim kernel record leaves out: the process's name, owner and cgroup.
#[derive(Clone, Debug, Default)]
pub(crate) struct Identity {
    pub(crate) comm: String,
    pub(crate) uid: u32,
    pub(crate) cgroup_id: u64,
}

/// Reads a process's identity from /proc (`None` if it is gone).
pub(crate) fn identity(pid: u32, cgroup2: Option<&std::path::Path>) -> Option<Identity> {
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
    #[test]
    fn a_process_is_elevated_only_over_another_uid() {
        let me = std::process::id();
        let uid = nix::unistd::getuid().as_raw();
        assert!(!super::elevated(me, uid, "/proc/self/exe"));
        assert!(super::elevated(me, uid.wrapping_add(1), "/proc/self/exe"));
        // Gone from /proc: judged by the program's set-id bits.
        assert!(!super::elevated(u32::MAX - 1, uid, "/bin/sh"));
    }

    #[test]
    fn a_pidfd_sees_its_process_exit() {
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = super::pidfd(c.id()).unwrap();
        assert!(!super::has_exited(&fd));
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(super::has_exited(&fd));
    }
}
