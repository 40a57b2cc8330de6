//! The per-process fd table: what each descriptor is (file, pipe, socket, terminal), so that
//! output is attributed to its target.
use axiom_common::*;
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use core::ffi::c_void;

use crate::{files::*, *};

/// An open for writing in flight: what its exit needs to name the fd it returns.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct OpenArgs {
    pub(crate) path: u64,
    pub(crate) dirfd: i32,
    pub(crate) flags: u32,
}

#[map]
pub(crate) static OPEN_PENDING: LruHashMap<u32, OpenArgs> = LruHashMap::pinned(16384, 0);
/// A dup in flight: (old fd, O_CLOEXEC or 0).
#[map]
pub(crate) static DUP_PENDING: LruHashMap<u32, [i32; 2]> = LruHashMap::pinned(16384, 0);

pub(crate) const O_CLOEXEC: u64 = 0o2000000;
pub(crate) const F_DUPFD: u64 = 0;
pub(crate) const F_DUPFD_CLOEXEC: u64 = 1030;

/// A slim header for the OUTPUT ring's records (output, fd changes): no uid, cgroup or comm,
/// which axiomd knows from the process's lifecycle records or /proc.
#[inline(always)]
pub(crate) fn slim_header(h: &mut EventHeader, kind: u16, pid_tgid: u64, agent: u64) {
    h.kind = kind;
    h.flags = FLAG_SLIM;
    h.tgid = (pid_tgid >> 32) as u32;
    h.pid = pid_tgid as u32;
    h.uid = 0;
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
    h.cgroup_id = 0;
    h.agent = agent;
    h.comm[0] = 0;
}

/// A change to the fd table, on the OUTPUT ring: in order with the process's writes, so axiomd
/// knows what each write's fd points at when the write happens, not when it reads /proc later.
#[inline(always)]
pub(crate) fn fd_record(
    pid_tgid: u64,
    agent: u64,
    op: u16,
    fd: i32,
    oldfd: i32,
    flags: u32,
    child: u32,
) {
    match OUTPUT.reserve::<FdEvent>(0) {
        Some(mut entry) => {
            let e = unsafe { &mut *entry.as_mut_ptr() };
            slim_header(&mut e.hdr, KIND_FD, pid_tgid, agent);
            e.op = op;
            e._pad = 0;
            e.fd = fd;
            e.oldfd = oldfd;
            e.flags = flags;
            e.child = child;
            e._pad2 = 0;
            entry.submit(BPF_RB_NO_WAKEUP as u64);
        }
        None => lost(LostCause::RingFullOutput),
    }
}

/// The exit of an open: a write-intent open that succeeded names its fd and path; a refused one
/// is a denial (file_exit).
#[inline(always)]
pub(crate) fn open_exit(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(agent) = agent_of((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let tid = pid_tgid as u32;
    if let Some(a) = unsafe { OPEN_PENDING.get(&tid) }.copied() {
        let _ = OPEN_PENDING.remove(&tid);
        let ret: i64 = unsafe { field(ctx, 16) };
        if ret >= 0 {
            fd_open_record(pid_tgid, agent, ret as i32, &a);
        }
    }
    file_exit(ctx)
}

/// `fd` now names `a.path` (relative to `a.dirfd`), on the OUTPUT ring. The path the syscall
/// just read is resident: it is read again here.
#[inline(always)]
fn fd_open_record(pid_tgid: u64, agent: u64, fd: i32, a: &OpenArgs) {
    match OUTPUT.reserve::<FdOpenEvent>(0) {
        Some(mut entry) => {
            let e = unsafe { &mut *entry.as_mut_ptr() };
            slim_header(&mut e.hdr, KIND_FD_OPEN, pid_tgid, agent);
            e.fd = fd;
            e.dirfd = a.dirfd;
            e.flags = a.flags;
            e._pad = 0;
            e.path[0] = 0;
            if unsafe {
                bpf_probe_read_user_str(
                    e.path.as_mut_ptr() as *mut c_void,
                    PATH_LEN as u32,
                    a.path as *const c_void,
                )
            } < 0
            {
                e.hdr.flags |= FLAG_TRUNCATED;
                lost(LostCause::ReadFault);
            }
            entry.submit(BPF_RB_NO_WAKEUP as u64);
        }
        None => lost(LostCause::RingFullOutput),
    }
}

/// A chdir in flight: its path, read again at a successful exit.
#[map]
pub(crate) static CHDIR_PENDING: LruHashMap<u32, OpenArgs> = LruHashMap::pinned(16384, 0);

/// The current directory is the table's `AT_FDCWD` entry: relative paths of later opens and
/// file operations resolve against it in order, even when the process is gone before axiomd
/// reads its records (a shell's `cd sub && printf … > f` lasts a millisecond; /proc is empty
/// by then).
#[tracepoint(category = "syscalls", name = "sys_enter_chdir")]
pub fn enter_chdir(ctx: TracePointContext) -> u32 {
    if let Some((pid_tgid, _)) = tracked() {
        let a = OpenArgs {
            path: arg(&ctx, 0),
            dirfd: AT_FDCWD,
            flags: 0,
        };
        let _ = CHDIR_PENDING.insert(&(pid_tgid as u32), &a, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_chdir")]
pub fn exit_chdir(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(agent) = agent_of((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let tid = pid_tgid as u32;
    if let Some(a) = unsafe { CHDIR_PENDING.get(&tid) }.copied() {
        let _ = CHDIR_PENDING.remove(&tid);
        let ret: i64 = unsafe { field(&ctx, 16) };
        if ret == 0 {
            fd_open_record(pid_tgid, agent, AT_FDCWD, &a);
        }
    }
    0
}

/// fchdir(fd): the current directory is now what `fd` is (a dup onto `AT_FDCWD`).
#[tracepoint(category = "syscalls", name = "sys_enter_fchdir")]
pub fn enter_fchdir(ctx: TracePointContext) -> u32 {
    dup_enter(arg(&ctx, 0), false);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_fchdir")]
pub fn exit_fchdir(ctx: TracePointContext) -> u32 {
    dup_exit_onto(&ctx, |ret| (ret == 0).then_some(AT_FDCWD))
}

const CLONE_FS: u64 = 0x200;

/// unshare(CLONE_FS): the thread's current directory is its own from now on (threads share
/// one otherwise). Sent at entry, in order with the thread's chdirs on the same ring; the call
/// fails only without memory or with bad flags.
#[tracepoint(category = "syscalls", name = "sys_enter_unshare")]
pub fn enter_unshare(ctx: TracePointContext) -> u32 {
    if arg(&ctx, 0) & CLONE_FS != 0
        && let Some((pid_tgid, agent)) = tracked()
    {
        fd_record(pid_tgid, agent, FD_OWN_FS, AT_FDCWD, 0, 0, 0);
    }
    0
}

#[inline(always)]
pub(crate) fn dup_enter(oldfd: u64, cloexec: bool) {
    let Some((pid_tgid, _)) = tracked() else {
        return;
    };
    let v = [oldfd as i32, if cloexec { O_CLOEXEC as i32 } else { 0 }];
    let _ = DUP_PENDING.insert(&(pid_tgid as u32), &v, 0);
}

#[inline(always)]
pub(crate) fn dup_exit(ctx: &TracePointContext) -> u32 {
    dup_exit_onto(ctx, |ret| (ret >= 0).then_some(ret as i32))
}

/// The exit of a dup in flight: `onto` names, from the syscall's return, the fd that is now a
/// copy of the old one (the new fd of a dup; `AT_FDCWD` for a successful fchdir), if any.
#[inline(always)]
fn dup_exit_onto(ctx: &TracePointContext, onto: impl FnOnce(i64) -> Option<i32>) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(agent) = agent_of((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let tid = pid_tgid as u32;
    let Some(v) = (unsafe { DUP_PENDING.get(&tid) }).copied() else {
        return 0;
    };
    let _ = DUP_PENDING.remove(&tid);
    let ret: i64 = unsafe { field(ctx, 16) };
    if let Some(fd) = onto(ret) {
        fd_record(pid_tgid, agent, FD_DUP, fd, v[0], v[1] as u32, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_dup")]
pub fn enter_dup(ctx: TracePointContext) -> u32 {
    dup_enter(arg(&ctx, 0), false);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_dup2")]
pub fn enter_dup2(ctx: TracePointContext) -> u32 {
    dup_enter(arg(&ctx, 0), false);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_dup3")]
pub fn enter_dup3(ctx: TracePointContext) -> u32 {
    dup_enter(arg(&ctx, 0), arg(&ctx, 2) & O_CLOEXEC != 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_fcntl")]
pub fn enter_fcntl(ctx: TracePointContext) -> u32 {
    let cmd = arg(&ctx, 1);
    if cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC {
        dup_enter(arg(&ctx, 0), cmd == F_DUPFD_CLOEXEC);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_dup")]
pub fn exit_dup(ctx: TracePointContext) -> u32 {
    dup_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_dup2")]
pub fn exit_dup2(ctx: TracePointContext) -> u32 {
    dup_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_dup3")]
pub fn exit_dup3(ctx: TracePointContext) -> u32 {
    dup_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_fcntl")]
pub fn exit_fcntl(ctx: TracePointContext) -> u32 {
    dup_exit(&ctx)
}

/// A pipe2/socketpair in flight: (where the two fds go, O_CLOEXEC or 0).
#[map]
pub(crate) static PAIR_PENDING: LruHashMap<u32, [u64; 2]> = LruHashMap::pinned(16384, 0);

#[inline(always)]
pub(crate) fn pair_enter(fds: u64, cloexec: bool) {
    let Some((pid_tgid, _)) = tracked() else {
        return;
    };
    let _ = PAIR_PENDING.insert(&(pid_tgid as u32), &[fds, cloexec as u64], 0);
}

/// The exit of a pipe or socketpair: the two fds it wrote are pipes (sockets).
#[inline(always)]
pub(crate) fn pair_exit(ctx: &TracePointContext, op: u16) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(agent) = agent_of((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let tid = pid_tgid as u32;
    let Some(v) = (unsafe { PAIR_PENDING.get(&tid) }).copied() else {
        return 0;
    };
    let _ = PAIR_PENDING.remove(&tid);
    let ret: i64 = unsafe { field(ctx, 16) };
    if ret != 0 {
        return 0;
    }
    let mut fds = [0i32; 2];
    if unsafe { bpf_probe_read_user(fds.as_mut_ptr() as *mut c_void, 8, v[0] as *const c_void) } < 0
    {
        lost(LostCause::ReadFault);
        return 0;
    }
    let flags = if v[1] != 0 { O_CLOEXEC as u32 } else { 0 };
    fd_record(pid_tgid, agent, op, fds[0], fds[1], flags, 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_pipe")]
pub fn enter_pipe(ctx: TracePointContext) -> u32 {
    pair_enter(arg(&ctx, 0), false);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_pipe2")]
pub fn enter_pipe2(ctx: TracePointContext) -> u32 {
    pair_enter(arg(&ctx, 0), arg(&ctx, 1) & O_CLOEXEC != 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_pipe")]
pub fn exit_pipe(ctx: TracePointContext) -> u32 {
    pair_exit(&ctx, FD_PIPE)
}

#[tracepoint(category = "syscalls", name = "sys_exit_pipe2")]
pub fn exit_pipe2(ctx: TracePointContext) -> u32 {
    pair_exit(&ctx, FD_PIPE)
}

pub(crate) const SOCK_CLOEXEC: u64 = 0o2000000;

#[tracepoint(category = "syscalls", name = "sys_enter_socketpair")]
pub fn enter_socketpair(ctx: TracePointContext) -> u32 {
    pair_enter(arg(&ctx, 3), arg(&ctx, 1) & SOCK_CLOEXEC != 0);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_socketpair")]
pub fn exit_socketpair(ctx: TracePointContext) -> u32 {
    pair_exit(&ctx, FD_SOCKET)
}

/// A new socket fd (socket, accept, accept4).
#[inline(always)]
pub(crate) fn socket_exit(ctx: &TracePointContext) -> u32 {
    let Some((pid_tgid, agent)) = tracked() else {
        return 0;
    };
    let ret: i64 = unsafe { field(ctx, 16) };
    if ret >= 0 {
        fd_record(pid_tgid, agent, FD_SOCKET, ret as i32, -1, 0, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_socket")]
pub fn exit_socket(ctx: TracePointContext) -> u32 {
    socket_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn exit_accept(ctx: TracePointContext) -> u32 {
    socket_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn exit_accept4(ctx: TracePointContext) -> u32 {
    socket_exit(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    if let Some((pid_tgid, agent)) = tracked() {
        fd_record(pid_tgid, agent, FD_CLOSE, arg(&ctx, 0) as i32, -1, 0, 0);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_close_range")]
pub fn enter_close_range(ctx: TracePointContext) -> u32 {
    if let Some((pid_tgid, agent)) = tracked() {
        fd_record(
            pid_tgid,
            agent,
            FD_CLOSE_RANGE,
            arg(&ctx, 0) as i32,
            arg(&ctx, 1) as i32,
            arg(&ctx, 2) as u32,
            0,
        );
    }
    0
}
