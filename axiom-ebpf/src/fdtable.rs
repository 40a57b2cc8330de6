//! The per-process fd table: what each descriptor is (file, pipe, socket, terminal), so that
//! output is attributed to its target.
use axiom_common::*;
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_task, bpf_ktime_get_ns, bpf_loop, bpf_probe_read_kernel,
            bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str,
        },
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
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
            e.path[0] = 0;
            let (depth, state) = if fd >= 0 {
                kernel_path(fd, &mut e.knames)
            } else {
                (0, KPATH_NONE)
            };
            e.kdepth = depth;
            e.kstate = state;
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

/// Levels walked up from an opened file: its names and the mount points crossed on the way.
const KWALK: u32 = KNAMES as u32 + 8;

/// The walk's state between `bpf_loop` steps, in a per-CPU map (as the matcher's): the
/// verifier checks the step once, where a plain loop is followed level by level past its
/// complexity limit.
#[repr(C)]
pub(crate) struct KPathWalk {
    off: KOffsets,
    dentry: u64,
    vfsmnt: u64,
    mnt: u64,
    n: u64,
    state: u16,
    names: [u8; KNAMES * KNAME_LEN],
}

#[repr(C)]
struct KOffsets {
    parent: u64,
    /// `d_name.name` (`struct qstr { u64 hash_len; const unsigned char *name; }`).
    name: u64,
    mnt: u64,
    mnt_parent: u64,
    mountpoint: u64,
    root: u64,
}

#[map]
pub(crate) static KPATH_SCRATCH: PerCpuArray<KPathWalk> = PerCpuArray::with_max_entries(1, 0);

/// Names the file the kernel installed at `fd` of the current task, from its dentries up to
/// the root of the task's mount tree (crossing mounts as `d_path` does), into `names` (the
/// file's own name first). What the caller's memory says the path was can differ: a thread
/// may have changed the string, or a symlink on the way may have changed since. Returns the
/// names written and a `KPATH_*` state.
#[inline(always)]
fn kernel_path(fd: i32, names: &mut [u8; KNAMES * KNAME_LEN]) -> (u16, u16) {
    if config(CFG_KPATH) != 1 {
        return (0, KPATH_NONE);
    }
    let Some(w) = KPATH_SCRATCH.get_ptr_mut(0) else {
        return (0, KPATH_NONE);
    };
    let w = unsafe { &mut *w };
    let file = (|| {
        let task = unsafe { bpf_get_current_task() };
        let files = kread(task + config(CFG_TASK_FILES))?;
        let fdt = kread(files + config(CFG_FILES_FDT))?;
        let table = kread(fdt + config(CFG_FDT_FD))?;
        kread(table + 8 * (fd as u64 & 0xffff_ffff))
    })();
    let Some(file) = file else {
        return (0, KPATH_NONE);
    };
    // struct path { struct vfsmount *mnt; struct dentry *dentry; }
    let path = file + config(CFG_FILE_PATH);
    let (Some(vfsmnt), Some(dentry)) = (kread(path), kread(path + 8)) else {
        return (0, KPATH_NONE);
    };
    w.off = KOffsets {
        parent: config(CFG_DENTRY_PARENT),
        name: config(CFG_DENTRY_NAME) + 8,
        mnt: config(CFG_MOUNT_MNT),
        mnt_parent: config(CFG_MOUNT_PARENT),
        mountpoint: config(CFG_MOUNT_MOUNTPOINT),
        root: config(CFG_VFSMOUNT_ROOT),
    };
    w.vfsmnt = vfsmnt;
    w.dentry = dentry;
    w.mnt = vfsmnt - w.off.mnt;
    w.n = 0;
    w.state = KPATH_TAIL;
    unsafe { bpf_loop(KWALK, kpath_step as *mut c_void, core::ptr::null_mut(), 0) };
    if w.state == KPATH_NONE {
        return (0, KPATH_NONE);
    }
    let n = w.n;
    if n > 0
        && unsafe {
            bpf_probe_read_kernel(
                names.as_mut_ptr() as *mut c_void,
                (KNAMES * KNAME_LEN) as u32,
                w.names.as_ptr() as *const c_void,
            )
        } < 0
    {
        return (0, KPATH_NONE);
    }
    ((n & 0xff) as u16, w.state)
}

/// One level of the walk: a mount crossed, or a name taken and the dentry's parent next.
/// Returns 1 to stop (the root reached, the slots full, a read failed).
#[inline(never)]
extern "C" fn kpath_step(_i: u64, _ctx: *mut c_void) -> i64 {
    let Some(w) = KPATH_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let w = unsafe { &mut *w };
    let fail = |w: &mut KPathWalk| {
        w.state = KPATH_NONE;
        1
    };
    let Some(root) = kread(w.vfsmnt + w.off.root) else {
        return fail(w);
    };
    if w.dentry == root {
        let Some(parent) = kread(w.mnt + w.off.mnt_parent) else {
            return fail(w);
        };
        if parent == w.mnt {
            w.state = KPATH_WHOLE;
            return 1;
        }
        let Some(mountpoint) = kread(w.mnt + w.off.mountpoint) else {
            return fail(w);
        };
        w.dentry = mountpoint;
        w.mnt = parent;
        w.vfsmnt = parent + w.off.mnt;
        return 0;
    }
    let Some(up) = kread(w.dentry + w.off.parent) else {
        return fail(w);
    };
    if up == w.dentry {
        // The root of a tree no mount of ours holds (a detached one): whole as far as the
        // kernel can say.
        w.state = KPATH_WHOLE;
        return 1;
    }
    let n = w.n as usize;
    if n >= KNAMES {
        return 1;
    }
    let Some(name) = kread(w.dentry + w.off.name) else {
        return fail(w);
    };
    let slot = unsafe { w.names.as_mut_ptr().add((n & (KNAMES - 1)) * KNAME_LEN) };
    if unsafe {
        bpf_probe_read_kernel_str(slot as *mut c_void, KNAME_LEN as u32, name as *const c_void)
    } < 0
    {
        return fail(w);
    }
    w.n += 1;
    w.dentry = up;
    0
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
