//! Process lifecycle: fork (tracking spreads to children), moves into tracked cgroups, exec
//! (argv stashed at entry), exit and the signal a process died of.
use axiom_common::*;
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task, bpf_probe_read_kernel,
            bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str,
        },
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use core::{ffi::c_void, mem::size_of};

use crate::{fdtable::*, *};

#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let child: i32 = unsafe { field(&ctx, 8) };
    let clone_flags: u64 = unsafe { field(&ctx, 32) };
    if clone_flags & CLONE_THREAD != 0 {
        // Threads share the tgid, already covered; one made without CLONE_FS (a raw clone)
        // has a current directory of its own, as after unshare(CLONE_FS).
        if clone_flags & CLONE_FS == 0
            && let Some((pid_tgid, agent)) = tracked()
        {
            let thread = (pid_tgid & !0xffff_ffff) | (child as u32 as u64);
            fd_record(thread, agent, FD_OWN_FS, AT_FDCWD, 0, 0, 0);
        }
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let agent = match agent_of(tgid) {
        Some(a) => a,
        None => {
            let cg = unsafe { bpf_get_current_cgroup_id() };
            match unsafe { TRACKED_CGROUPS.get(&cg) } {
                Some(t) => t.agent,
                None => return 0,
            }
        }
    };
    let child = child as u32;
    if !set_agent(child, agent) {
        warn!(
            &ctx,
            "axiom: pid {} is beyond the tracking array (pid_max raised?)", child
        );
    }
    emit::<ForkEvent>(KIND_FORK, pid_tgid, agent, |e| unsafe {
        (*e).child_pid = child;
        (*e)._pad = 0;
        (*e).clone_flags = clone_flags;
    });
    // The child's fd table starts as a copy of this one: said in order with the writes.
    fd_record(pid_tgid, agent, FD_FORK, -1, -1, 0, child);
    0
}

#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub fn cgroup_attach(ctx: TracePointContext) -> u32 {
    let dst: u64 = unsafe { field(&ctx, 16) };
    let Some(t) = (unsafe { TRACKED_CGROUPS.get(&dst) }) else {
        return 0;
    };
    let pid: i32 = unsafe { field(&ctx, 24) };
    set_agent(pid as u32, t.agent);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn proc_exec(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, agent)) = tracked() else {
        return 0;
    };
    let loc: u32 = unsafe { field(&ctx, 8) };
    let old_pid: i32 = unsafe { field(&ctx, 16) };
    let old_pid = old_pid as u32;
    let base = ctx.as_ptr() as *const u8;
    emit::<ExecEvent>(KIND_EXEC, pid_tgid, agent, |e| unsafe {
        (*e).old_pid = old_pid;
        let name = (*e).filename.as_mut_ptr() as *mut c_void;
        let src = base.add((loc & 0xffff) as usize) as *const c_void;
        if bpf_probe_read_kernel_str(name, PATH_LEN as u32, src) < 0 {
            (*e).filename[0] = 0;
        }
        let from_kernel = kernel_argv((*e).argv.as_mut_ptr());
        match EXEC_STASH.get(&old_pid) {
            _ if from_kernel.is_some() => {
                if let Some((n, truncated)) = from_kernel {
                    (*e).argc = 0;
                    (*e).argv_len = n;
                    if truncated {
                        (*e).hdr.flags |= FLAG_TRUNCATED;
                    }
                }
                let _ = EXEC_STASH.remove(&old_pid);
            }
            Some(a) => {
                (*e).argc = a.argc;
                if a.truncated != 0 {
                    (*e).hdr.flags |= FLAG_TRUNCATED;
                }
                (*e).argv_len = a.argv_len;
                bpf_probe_read_kernel(
                    (*e).argv.as_mut_ptr() as *mut c_void,
                    ARGV_LEN as u32,
                    a.argv.as_ptr() as *const c_void,
                );
                let _ = EXEC_STASH.remove(&old_pid);
            }
            None => {
                (*e).argc = 0;
                (*e).argv_len = 0;
                (*e).hdr.flags |= FLAG_NO_ARGV;
            }
        }
    });
    // Close-on-exec fds are gone: said in order with the new image's writes.
    fd_record(pid_tgid, agent, FD_EXEC, -1, -1, 0, 0);
    0
}

const CLONE_FS: u64 = 0x200;

/// The new image's arguments as the kernel copied them onto its stack (`mm->arg_start` to
/// `arg_end`, NUL-separated), read before it runs: not what the caller's memory held at entry,
/// which a racing thread may change, or which may not be mapped yet (a fresh file mapping the
/// kernel faults in as it copies, where the sensor's read cannot). `None` when the offsets are
/// unknown or a read fails: the stash is used. Returns the bytes read and whether argv was
/// longer than the room.
#[inline(always)]
fn kernel_argv(dst: *mut u8) -> Option<(u16, bool)> {
    let (off_mm, off_start, off_end) = (
        config(CFG_TASK_MM),
        config(CFG_MM_ARG_START),
        config(CFG_MM_ARG_END),
    );
    if off_mm == 0 || off_start == 0 || off_end == 0 {
        return None;
    }
    // A kernel thread has no mm: none.
    let mm = kread(unsafe { bpf_get_current_task() } + off_mm)?;
    let (start, end) = (kread(mm + off_start)?, kread(mm + off_end)?);
    if end <= start {
        return None;
    }
    let len = end - start;
    let room = (ARGV_LEN - 1) as u64;
    let n = if len > room { room } else { len };
    let r = unsafe {
        bpf_probe_read_user(
            dst as *mut c_void,
            (n & (ARGV_LEN as u64 - 1)) as u32,
            start as *const c_void,
        )
    };
    (r == 0).then_some((n as u16, len > room))
}

/// Stashes argv at execve entry: after a successful exec the old image's memory is gone.
#[inline(always)]
pub(crate) fn stash_argv(argv: u64) {
    let Some((pid_tgid, _)) = tracked() else {
        return;
    };
    let Some(s) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let s = unsafe { &mut *s };
    let mut off: usize = 0;
    let mut argc: u16 = 0;
    let mut truncated = false;
    for i in 0..MAX_ARGS {
        let mut p: u64 = 0;
        let r = unsafe {
            bpf_probe_read_user(
                &mut p as *mut u64 as *mut c_void,
                8,
                (argv as *const u64).wrapping_add(i) as *const c_void,
            )
        };
        if r < 0 {
            truncated = true;
            break;
        }
        if p == 0 {
            break;
        }
        if off >= ARGV_LEN {
            truncated = true;
            break;
        }
        let dst = unsafe { s.args.argv.as_mut_ptr().add(off & (ARGV_LEN - 1)) };
        // One argument may take all the room left: an agent's shell runs its whole command as
        // one `bash -c` argument behind a long preamble (Claude Code's is ~270 bytes).
        let room = ARGV_LEN - off;
        let max = if room > ARGV_LEN - 1 {
            ARGV_LEN - 1
        } else {
            room
        };
        let n =
            unsafe { bpf_probe_read_user_str(dst as *mut c_void, max as u32, p as *const c_void) };
        if n <= 0 {
            truncated = true;
            break;
        }
        if n as usize >= max {
            truncated = true;
        }
        off += n as usize;
        argc += 1;
    }
    s.args.argc = argc;
    s.args.argv_len = if off > ARGV_LEN {
        ARGV_LEN as u16
    } else {
        off as u16
    };
    s.args.truncated = truncated as u32;
    let tid = pid_tgid as u32;
    if EXEC_STASH.insert(&tid, &s.args, 0).is_err() {
        lost(LostCause::ExecStashFull);
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn enter_execve(ctx: TracePointContext) -> u32 {
    stash_argv(arg(&ctx, 1));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
pub fn enter_execveat(ctx: TracePointContext) -> u32 {
    stash_argv(arg(&ctx, 2));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_exit_group")]
pub fn exit_group(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, _)) = tracked() else {
        return 0;
    };
    let code = arg(&ctx, 0) as u32;
    let status = (code & 0xff) << 8;
    let _ = EXIT_STATUS.insert(&((pid_tgid >> 32) as u32), &status, 0);
    0
}

/// Signals whose default action does not end the process.
#[inline(always)]
pub(crate) fn non_fatal(sig: i32) -> bool {
    matches!(sig, 17..=23 | 28) // CHLD CONT STOP TSTP TTIN TTOU URG WINCH
}

#[tracepoint(category = "signal", name = "signal_deliver")]
pub fn sig_deliver(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, _)) = tracked() else {
        return 0;
    };
    let sig: i32 = unsafe { field(&ctx, 8) };
    let handler: u64 = unsafe { field(&ctx, 24) };
    if handler != 0 || non_fatal(sig) {
        return 0;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let sig = if sig == 9 {
        let sent = unsafe { SENT_SIGNAL.get(&tgid) }
            .or_else(|| unsafe { SENT_SIGNAL.get(&(pid_tgid as u32)) })
            .copied();
        sent.map_or(sig, |s| s as i32)
    } else {
        sig
    };
    // BPF_NOEXIST: a SIGKILL sent to sibling threads by exit_group must not hide its code.
    let _ = EXIT_STATUS.insert(
        &((pid_tgid >> 32) as u32),
        &((sig as u32) & 0x7f),
        BPF_NOEXIST as u64,
    );
    0
}

/// Remembers a signal sent to a tracked process: what it dies of, if it does (see `SENT_SIGNAL`).
/// Runs in the sender's context (any process), so the target is looked up, not the caller.
#[tracepoint(category = "signal", name = "signal_generate")]
pub fn sig_generate(ctx: TracePointContext) -> u32 {
    let sig: i32 = unsafe { field(&ctx, 8) };
    let pid: i32 = unsafe { field(&ctx, 36) };
    let result: i32 = unsafe { field(&ctx, 44) };
    // result 0: TRACE_SIGNAL_DELIVERED (queued); others were ignored, already pending, lost.
    if result != 0 || pid <= 0 || non_fatal(sig) || agent_of(pid as u32).is_none() {
        return 0;
    }
    let _ = SENT_SIGNAL.insert(&(pid as u32), &(sig as u32), 0);
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn proc_exit(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, agent)) = tracked() else {
        return 0;
    };
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let group_dead: u8 = unsafe { field(&ctx, 32) };
    if group_dead == 0 {
        if tid != tgid {
            // A cgroup attach of a whole group marks each thread id; clear it before the id can
            // be reused by a new process.
            set_agent(tid, 0);
            let _ = SENT_SIGNAL.remove(&tid);
        }
        return 0;
    }
    let status = unsafe { EXIT_STATUS.get(&tgid) }.copied();
    let _ = EXIT_STATUS.remove(&tgid);
    let _ = SENT_SIGNAL.remove(&tgid);
    emit::<ExitEvent>(KIND_EXIT, pid_tgid, agent, |e| unsafe {
        (*e).hdr.tgid = tgid;
        (*e)._pad = 0;
        match status {
            Some(s) => {
                (*e).status = s;
                (*e).hdr.flags |= FLAG_STATUS_KNOWN;
            }
            None => (*e).status = 0,
        }
    });
    set_agent(tgid, 0);
    if tid != tgid {
        set_agent(tid, 0);
        let _ = SENT_SIGNAL.remove(&tid);
    }
    0
}
