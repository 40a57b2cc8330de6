//! File operations of tracked processes: opens for writing, creations, renames, links,
//! removals, directories; refusals by the agent's confinement.
use axiom_common::*;
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use core::ffi::c_void;

use crate::{fdtable::*, *};

#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn file_event(
    op: u16,
    dirfd: u64,
    path: u64,
    dirfd2: u64,
    path2: u64,
    flags: u64,
    mode: u64,
) {
    let Some((pid_tgid, agent)) = tracked() else {
        return;
    };
    // The matching sys_exit reports a refusal of this operation (and only of this one).
    let _ = FILE_PENDING.insert(&(pid_tgid as u32), &1, 0);
    // An open for writing: its exit names the fd it got (the path is read again there).
    if op == FILE_OPEN || op == FILE_CREAT {
        let a = OpenArgs {
            path,
            dirfd: dirfd as i32,
            flags: flags as u32,
        };
        let _ = OPEN_PENDING.insert(&(pid_tgid as u32), &a, 0);
    }
    // A record wakes axiomd only when its path names a file through an fd (`under_fd`), which
    // axiomd reads from /proc while the fd is still open; the others wait for the next record that
    // wakes it (an exec, an exit: a Claude Code hook is one) or its drain timer. A wakeup of
    // an idle reader cost the writer ~15 µs here (two interrupts through the hypervisor),
    // twice per case of a Python test suite that writes and removes a file.
    emit_then::<FileEvent>(KIND_FILE, pid_tgid, agent, |e| unsafe {
        (*e).op = op;
        (*e)._pad = 0;
        (*e)._pad2 = 0;
        (*e).flags = flags as u32;
        (*e).mode = mode as u32;
        (*e).dirfd = dirfd as i32;
        (*e).dirfd2 = dirfd2 as i32;
        (*e).path[0] = 0;
        (*e).path2[0] = 0;
        // A path whose page is not resident cannot be read here (no faults in this context):
        // the record still goes out, marked truncated, and the fault is counted.
        if path != 0
            && bpf_probe_read_user_str(
                (*e).path.as_mut_ptr() as *mut c_void,
                PATH_LEN as u32,
                path as *const c_void,
            ) < 0
        {
            (*e).hdr.flags |= FLAG_TRUNCATED;
            lost(LostCause::ReadFault);
        }
        if path2 != 0
            && bpf_probe_read_user_str(
                (*e).path2.as_mut_ptr() as *mut c_void,
                PATH_LEN as u32,
                path2 as *const c_void,
            ) < 0
        {
            (*e).hdr.flags |= FLAG_TRUNCATED;
            lost(LostCause::ReadFault);
        }
        under_fd(dirfd, &(*e).path) || (path2 != 0 && under_fd(dirfd2, &(*e).path2))
    });
}

pub(crate) const CWD: u64 = AT_FDCWD as i64 as u64;

/// Whether `path` names a file through an fd: relative to a directory fd, or under
/// `/proc/<pid>/fd/` or `/dev/fd/` (Claude Code writes its files as `/proc/self/fd/N/name`).
/// axiomd reads such an fd's target from /proc, which it can only do while the fd is open.
#[inline(always)]
fn under_fd(dirfd: u64, path: &[u8; PATH_LEN]) -> bool {
    if path[0] != b'/' {
        return dirfd as i32 != AT_FDCWD;
    }
    (path[1] == b'p' && path[2] == b'r' && path[3] == b'o' && path[4] == b'c' && path[5] == b'/')
        || (path[1] == b'd'
            && path[2] == b'e'
            && path[3] == b'v'
            && path[4] == b'/'
            && path[5] == b'f'
            && path[6] == b'd'
            && path[7] == b'/')
}

#[inline(always)]
pub(crate) fn writes(flags: u64) -> bool {
    flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC) != 0
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn enter_open(ctx: TracePointContext) -> u32 {
    let flags = arg(&ctx, 1);
    if writes(flags) {
        file_event(FILE_OPEN, CWD, arg(&ctx, 0), 0, 0, flags, arg(&ctx, 2));
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn enter_openat(ctx: TracePointContext) -> u32 {
    let flags = arg(&ctx, 2);
    if writes(flags) {
        file_event(
            FILE_OPEN,
            arg(&ctx, 0),
            arg(&ctx, 1),
            0,
            0,
            flags,
            arg(&ctx, 3),
        );
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn enter_openat2(ctx: TracePointContext) -> u32 {
    // struct open_how { u64 flags; u64 mode; u64 resolve; }
    let mut how = [0u64; 2];
    let r = unsafe {
        bpf_probe_read_user(
            how.as_mut_ptr() as *mut c_void,
            16,
            arg(&ctx, 2) as *const c_void,
        )
    };
    if r == 0 && writes(how[0]) {
        file_event(FILE_OPEN, arg(&ctx, 0), arg(&ctx, 1), 0, 0, how[0], how[1]);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_creat")]
pub fn enter_creat(ctx: TracePointContext) -> u32 {
    file_event(
        FILE_CREAT,
        CWD,
        arg(&ctx, 0),
        0,
        0,
        O_CREAT | O_WRONLY | O_TRUNC,
        arg(&ctx, 1),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_rename")]
pub fn enter_rename(ctx: TracePointContext) -> u32 {
    file_event(FILE_RENAME, CWD, arg(&ctx, 0), CWD, arg(&ctx, 1), 0, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_renameat")]
pub fn enter_renameat(ctx: TracePointContext) -> u32 {
    file_event(
        FILE_RENAME,
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        arg(&ctx, 3),
        0,
        0,
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_renameat2")]
pub fn enter_renameat2(ctx: TracePointContext) -> u32 {
    let flags = arg(&ctx, 4);
    file_event(
        FILE_RENAME,
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        arg(&ctx, 3),
        flags,
        0,
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_unlink")]
pub fn enter_unlink(ctx: TracePointContext) -> u32 {
    file_event(FILE_UNLINK, CWD, arg(&ctx, 0), 0, 0, 0, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_unlinkat")]
pub fn enter_unlinkat(ctx: TracePointContext) -> u32 {
    let flags = arg(&ctx, 2);
    let op = if flags & AT_REMOVEDIR != 0 {
        FILE_RMDIR
    } else {
        FILE_UNLINK
    };
    file_event(op, arg(&ctx, 0), arg(&ctx, 1), 0, 0, flags, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdir")]
pub fn enter_mkdir(ctx: TracePointContext) -> u32 {
    file_event(FILE_MKDIR, CWD, arg(&ctx, 0), 0, 0, 0, arg(&ctx, 1));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdirat")]
pub fn enter_mkdirat(ctx: TracePointContext) -> u32 {
    file_event(
        FILE_MKDIR,
        arg(&ctx, 0),
        arg(&ctx, 1),
        0,
        0,
        0,
        arg(&ctx, 2),
    );
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_rmdir")]
pub fn enter_rmdir(ctx: TracePointContext) -> u32 {
    file_event(FILE_RMDIR, CWD, arg(&ctx, 0), 0, 0, 0, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_link")]
pub fn enter_link(ctx: TracePointContext) -> u32 {
    file_event(FILE_LINK, CWD, arg(&ctx, 0), CWD, arg(&ctx, 1), 0, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_linkat")]
pub fn enter_linkat(ctx: TracePointContext) -> u32 {
    let flags = arg(&ctx, 4);
    file_event(
        FILE_LINK,
        arg(&ctx, 0),
        arg(&ctx, 1),
        arg(&ctx, 2),
        arg(&ctx, 3),
        flags,
        0,
    );
    0
}

/// symlink(target, linkpath): `path` is the new link, `path2` what it points to.
#[tracepoint(category = "syscalls", name = "sys_enter_symlink")]
pub fn enter_symlink(ctx: TracePointContext) -> u32 {
    file_event(FILE_SYMLINK, CWD, arg(&ctx, 1), CWD, arg(&ctx, 0), 0, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_symlinkat")]
pub fn enter_symlinkat(ctx: TracePointContext) -> u32 {
    file_event(
        FILE_SYMLINK,
        arg(&ctx, 1),
        arg(&ctx, 2),
        CWD,
        arg(&ctx, 0),
        0,
        0,
    );
    0
}

/// Threads with a file operation in flight whose enter was recorded (value unused).
#[map]
pub(crate) static FILE_PENDING: LruHashMap<u32, u8> = LruHashMap::pinned(16384, 0);

pub(crate) const EPERM: i64 = 1;
pub(crate) const EACCES: i64 = 13;
pub(crate) const EXDEV: i64 = 18;
pub(crate) const EROFS: i64 = 30;

/// A recorded file operation that the kernel refused (Landlock, a read-only mount, permissions)
/// is reported with its error: denials are events, not silence.
#[inline(always)]
pub(crate) fn file_exit(ctx: &TracePointContext) -> u32 {
    // The same gate as every hook first: an untracked process (axiomd reading /proc among them)
    // pays one array load, not a hash lookup, on every file syscall's exit.
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(agent) = agent_of((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let tid = pid_tgid as u32;
    if unsafe { FILE_PENDING.get(&tid) }.is_none() {
        return 0;
    }
    let _ = FILE_PENDING.remove(&tid);
    // struct trace_event_raw_sys_exit: common fields (8), syscall nr (8 with padding), ret.
    let ret: i64 = unsafe { field(ctx, 16) };
    if ret != -EACCES && ret != -EPERM && ret != -EROFS && ret != -EXDEV {
        return 0;
    }
    emit::<FileRefusedEvent>(KIND_FILE_REFUSED, pid_tgid, agent, |e| unsafe {
        (*e).errno = -ret as i32;
        (*e)._pad = 0;
    });
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn exit_open(ctx: TracePointContext) -> u32 {
    open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn exit_openat(ctx: TracePointContext) -> u32 {
    open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn exit_openat2(ctx: TracePointContext) -> u32 {
    open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_creat")]
pub fn exit_creat(ctx: TracePointContext) -> u32 {
    open_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_rename")]
pub fn exit_rename(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_renameat")]
pub fn exit_renameat(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_renameat2")]
pub fn exit_renameat2(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_unlink")]
pub fn exit_unlink(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_unlinkat")]
pub fn exit_unlinkat(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdir")]
pub fn exit_mkdir(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdirat")]
pub fn exit_mkdirat(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_rmdir")]
pub fn exit_rmdir(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_link")]
pub fn exit_link(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_linkat")]
pub fn exit_linkat(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_symlink")]
pub fn exit_symlink(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_symlinkat")]
pub fn exit_symlinkat(ctx: TracePointContext) -> u32 {
    file_exit(&ctx)
}
