//! What the kernel and host must offer, checked one way for axiomd's start-up (which refuses
//! with the remedy) and `axiomctl doctor` (which lists every check with its remedy).
use std::path::{Path, PathBuf};

use aya::{maps::MapType, programs::ProgramType};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Works, but something is degraded or axiomd will fix it itself.
    Warn,
    Fail,
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about a warning or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Check {
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Pass,
            detail: detail.into(),
            remedy: None,
        }
    }
    pub fn warn(name: &'static str, detail: impl Into<String>, remedy: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            remedy: Some(remedy.into()),
        }
    }
    pub fn fail(name: &'static str, detail: impl Into<String>, remedy: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            remedy: Some(remedy.into()),
        }
    }
}

pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
pub const TRACEFS_MAGIC: i64 = 0x7472_6163;
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

pub fn fs_magic(path: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(path)
        .ok()
        .map(|s| s.filesystem_type().0)
}

/// A tracefs with its `events/` directory, where one is mounted.
pub fn tracefs_root() -> Option<PathBuf> {
    TRACEFS_ROOTS
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
        .map(Path::to_path_buf)
}

/// The kernel's type information, which the CO-RE programs are relocated against.
pub fn btf() -> Check {
    let p = Path::new("/sys/kernel/btf/vmlinux");
    match std::fs::metadata(p) {
        Ok(m) => Check::pass(
            "btf",
            format!(
                "{} ({:.1} MiB)",
                p.display(),
                m.len() as f64 / (1 << 20) as f64
            ),
        ),
        Err(e) => Check::fail(
            "btf",
            format!("{}: {e}", p.display()),
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution's since 2021)",
        ),
    }
}

pub fn bpffs() -> Check {
    if fs_magic(Path::new(BPFFS_ROOT)) == Some(BPF_FS_MAGIC) {
        Check::pass("bpffs", format!("mounted at {BPFFS_ROOT}"))
    } else {
        Check::warn(
            "bpffs",
            format!("not mounted at {BPFFS_ROOT}"),
            "axiomd mounts it at start; or `mount -t bpf bpf /sys/fs/bpf` (needs CONFIG_BPF_SYSCALL)",
        )
    }
}

/// tracefs, and the syscall tracepoints the sensor hooks.
pub fn tracefs() -> Check {
    let Some(root) = tracefs_root() else {
        return Check::warn(
            "tracefs",
            "not mounted",
            "axiomd mounts it at start; or `mount -t tracefs tracefs /sys/kernel/tracing` \
             (needs CONFIG_FTRACE)",
        );
    };
    let missing: Vec<String> = [
        ("syscalls", "sys_enter_write"),
        ("syscalls", "sys_enter_execve"),
        ("sched", "sched_process_fork"),
        ("sched", "sched_process_exit"),
    ]
    .iter()
    .filter(|(c, e)| !has_tracepoint(&root, c, e))
    .map(|(c, e)| format!("{c}:{e}"))
    .collect();
    if missing.is_empty() {
        Check::pass(
            "tracefs",
            format!("{} with syscall and sched tracepoints", root.display()),
        )
    } else {
        Check::fail(
            "tracefs",
            format!("{}: missing {}", root.display(), missing.join(", ")),
            "a kernel with CONFIG_FTRACE_SYSCALLS=y",
        )
    }
}

/// Checks that a tracepoint exists in this kernel.
pub fn has_tracepoint(tracefs: &Path, category: &str, event: &str) -> bool {
    tracefs
        .join("events")
        .join(category)
        .join(event)
        .join("id")
        .exists()
}

/// Lockdown in confidentiality mode forbids reading user memory from BPF.
pub fn lockdown() -> Check {
    let s = std::fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default();
    let mode = s
        .split_whitespace()
        .find(|w| w.starts_with('['))
        .map(|w| w.trim_matches(['[', ']']).to_string())
        .unwrap_or_else(|| "none (no lockdown LSM)".into());
    if mode == "confidentiality" {
        Check::fail(
            "lockdown",
            "confidentiality: bpf_probe_read is forbidden",
            "boot with lockdown=integrity or none",
        )
    } else {
        Check::pass("lockdown", mode)
    }
}

/// The bpf() syscall and ring buffer maps (Linux 5.8), which carry every record.
pub fn ringbuf() -> Check {
    match aya::sys::is_map_supported(MapType::RingBuf) {
        Ok(true) => Check::pass("bpf ring buffer", "BPF_MAP_TYPE_RINGBUF"),
        Ok(false) => Check::fail(
            "bpf ring buffer",
            "BPF_MAP_TYPE_RINGBUF is not supported",
            "Linux 5.8 or newer",
        ),
        Err(e) => Check::fail(
            "bpf ring buffer",
            format!("probing failed: {e}"),
            "run as root or with CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE; check \
             kernel.unprivileged_bpf_disabled and lockdown",
        ),
    }
}

/// The program types the sensor and the network policy load.
pub fn program_types() -> Vec<Check> {
    [
        (
            "prog tracepoint",
            ProgramType::TracePoint,
            "the sensor cannot load: a kernel with CONFIG_BPF_EVENTS",
        ),
        (
            "prog raw_tracepoint",
            ProgramType::RawTracePoint,
            "the sensor cannot load: a kernel with CONFIG_BPF_EVENTS",
        ),
        (
            "prog cgroup_sock_addr",
            ProgramType::CgroupSockAddr,
            "per-agent connect allowlists are off: a kernel with CONFIG_CGROUP_BPF",
        ),
    ]
    .into_iter()
    .map(
        |(name, t, remedy)| match aya::sys::is_program_supported(t) {
            Ok(true) => Check::pass(name, "loads"),
            Ok(false) => Check::fail(name, "not supported by this kernel", remedy),
            Err(e) => Check::fail(
                name,
                format!("probing failed: {e}"),
                "run as root (or with CAP_BPF and CAP_PERFMON)",
            ),
        },
    )
    .collect()
}

/// The cgroup v2 mount and the controllers the agents' limits use.
pub fn cgroup2() -> Check {
    let Some(m) = crate::host::cgroup2_mount() else {
        return Check::fail(
            "cgroup v2",
            "no cgroup2 mount",
            "mount cgroup2 (systemd does; or `mount -t cgroup2 none /sys/fs/cgroup`)",
        );
    };
    let have = std::fs::read_to_string(m.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<&str> = ["pids", "memory", "cpu"]
        .into_iter()
        .filter(|c| !have.split_whitespace().any(|h| h == *c))
        .collect();
    if missing.is_empty() {
        Check::pass(
            "cgroup v2",
            format!("{} (controllers: {})", m.display(), have.trim()),
        )
    } else {
        Check::warn(
            "cgroup v2",
            format!(
                "{} without the {} controller(s) (a hybrid host's v1 hierarchies are used instead)",
                m.display(),
                missing.join(", ")
            ),
            "boot with systemd.unified_cgroup_hierarchy=1 for v2 limits everywhere",
        )
    }
}
