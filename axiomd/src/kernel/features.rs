//! Pre-flight checks: each missing kernel feature is reported by name, with what to do about it,
//! before anything is loaded, so a user never has to read a verifier dump to learn that their
//! kernel lacks tracefs or ring buffers.
use std::path::{Path, PathBuf};

use axiom_proto::preflight::{self, BPF_FS_MAGIC, Check, Status, TRACEFS_MAGIC, fs_magic};

use super::LoadError;

/// A failed check as the error that stops the sensor, with its remedy.
fn required(c: Check) -> Result<(), LoadError> {
    match c.status {
        Status::Fail => Err(LoadError::Feature {
            feature: c.name,
            remedy: format!("{}: {}", c.detail, c.remedy.unwrap_or_default()),
        }),
        Status::Pass | Status::Warn => Ok(()),
    }
}

fn mount(at: &Path, fstype: &str) -> nix::Result<()> {
    nix::mount::mount(
        Some(fstype),
        at,
        Some(fstype),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
}

/// Makes sure bpffs is mounted at `/sys/fs/bpf` (mounting it when absent).
pub(crate) fn ensure_bpffs() -> Result<(), LoadError> {
    let root = Path::new(preflight::BPFFS_ROOT);
    if fs_magic(root) == Some(BPF_FS_MAGIC) {
        return Ok(());
    }
    std::fs::create_dir_all(root).map_err(|e| LoadError::Feature {
        feature: "bpffs",
        remedy: format!("cannot create {}: {e}", root.display()),
    })?;
    mount(root, "bpf").map_err(|e| LoadError::Feature {
        feature: "bpffs",
        remedy: format!("not mounted and `mount -t bpf bpf /sys/fs/bpf` failed: {e}"),
    })?;
    tracing::info!("mounted bpffs at /sys/fs/bpf");
    Ok(())
}

/// Returns the tracefs root, mounting it at `/sys/kernel/tracing` when no mount is found.
pub(crate) fn ensure_tracefs() -> Result<PathBuf, LoadError> {
    if let Some(p) = preflight::tracefs_root() {
        return Ok(p);
    }
    let root = Path::new("/sys/kernel/tracing");
    if fs_magic(root) != Some(TRACEFS_MAGIC) {
        mount(root, "tracefs").map_err(|e| LoadError::Feature {
            feature: "tracefs",
            remedy: format!(
                "not mounted and `mount -t tracefs tracefs /sys/kernel/tracing` failed: {e} \
                 (kernel needs CONFIG_FTRACE)"
            ),
        })?;
        tracing::info!("mounted tracefs at /sys/kernel/tracing");
    }
    Ok(root.to_path_buf())
}

pub(crate) use preflight::has_tracepoint;

pub(crate) fn tracepoint_missing(category: &str, event: &str) -> LoadError {
    let remedy = if category == "syscalls" {
        "the kernel needs CONFIG_FTRACE_SYSCALLS=y".to_string()
    } else {
        format!("the kernel does not provide the {category}:{event} tracepoint")
    };
    LoadError::Feature {
        feature: "tracepoint",
        remedy: format!("{category}:{event} is missing: {remedy}"),
    }
}

/// Ring buffer maps (Linux 5.8) carry every record; without them nothing works.
pub(crate) fn check_ringbuf() -> Result<(), LoadError> {
    required(preflight::ringbuf())
}

/// Kernel lockdown in confidentiality mode forbids reading user memory from BPF.
pub(crate) fn check_lockdown() -> Result<(), LoadError> {
    required(preflight::lockdown())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tracepoint_is_named_with_its_remedy() {
        let e = tracepoint_missing("syscalls", "sys_enter_write").to_string();
        assert!(e.contains("syscalls:sys_enter_write"), "{e}");
        assert!(e.contains("CONFIG_FTRACE_SYSCALLS"), "{e}");
        let e = tracepoint_missing("task", "task_newtask").to_string();
        assert!(
            e.contains("does not provide the task:task_newtask tracepoint"),
            "{e}"
        );
    }

    #[test]
    fn tracepoints_are_found_in_tracefs() {
        let dir = std::env::temp_dir().join(format!("axiom-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("events/sched/sched_process_exec")).unwrap();
        std::fs::write(dir.join("events/sched/sched_process_exec/id"), "1\n").unwrap();
        assert!(has_tracepoint(&dir, "sched", "sched_process_exec"));
        assert!(!has_tracepoint(&dir, "sched", "sched_process_fork"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
