//! Axiom's kernel sensor.
//!
//! Every program starts with the same gate: one hash lookup of the current thread group id in
//! `TRACKED`. An untracked process leaves after that lookup; nothing else runs. Tracking spreads in
//! the kernel itself (fork inherits, moving into a tracked cgroup adopts), so no event is missed
//! while userspace catches up.
//!
//! Tracepoint fields are read directly from the context (the kernel allows it and it is cheaper
//! than a probe_read). Syscall tracepoints carry their arguments at offset 16, 8 bytes each.
#![no_std]
#![no_main]
#![allow(static_mut_refs)]

use axiom_common::*;
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_cgroup_id, bpf_ktime_get_ns, bpf_loop, bpf_probe_read_kernel,
            bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str,
            bpf_send_signal,
        },
    },
    macros::{cgroup_sock_addr, map, tracepoint},
    maps::{
        Array, HashMap, LruHashMap, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{SockAddrContext, TracePointContext},
};
use aya_log_ebpf::warn;
use core::{ffi::c_void, mem::size_of};

/// Agent id per tracked process, indexed by tgid (0: not tracked). An array, not a hash: the
/// verifier inlines array lookups, so the gate every untracked syscall pays is one helper call and
/// one load. axiomd sizes it to kernel.pid_max (8 bytes × pid_max).
#[map]
static TRACKED: Array<u64> = Array::pinned(4 << 20, 0);
#[map]
static TRACKED_CGROUPS: HashMap<u64, Tracked> = HashMap::pinned(4096, 0);
/// Lifecycle, file and network records: small, never to be shed.
#[map]
static EVENTS: RingBuf = RingBuf::pinned(4 << 20, 0);
/// Bulk output records.
#[map]
static OUTPUT: RingBuf = RingBuf::pinned(16 << 20, 0);
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::pinned(LOST_CAUSES, 0);
#[map]
static CONFIG: Array<u64> = Array::pinned(CFG_ENTRIES, 0);
#[map]
static EXEC_STASH: LruHashMap<u32, ExecArgs> = LruHashMap::pinned(4096, 0);
#[map]
static EXIT_STATUS: LruHashMap<u32, u32> = LruHashMap::pinned(16384, 0);
/// The last signal sent to each tracked process (or thread). A signal whose default action ends
/// the process is delivered as SIGKILL (the kernel turns it into a group exit when it is sent),
/// so the signal a process died of is the one that was sent to it.
#[map]
static SENT_SIGNAL: LruHashMap<u32, u32> = LruHashMap::pinned(16384, 0);
#[map]
static OUT_SCRATCH: PerCpuArray<OutputScratch> = PerCpuArray::with_max_entries(1, 0);
/// Output records sent on this CPU since the last forced wakeup.
#[map]
static OUT_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
static EXEC_SCRATCH: PerCpuArray<ExecScratch> = PerCpuArray::with_max_entries(1, 0);
/// The kernel matcher's two tables (see CFG_DFA_ACTIVE).
#[map]
static DFA: Array<Dfa> = Array::pinned(2, 0);
/// Matcher state per (tgid, fd), so a literal split across two writes still matches:
/// `table << 16 | state`.
#[map]
static FD_STATE: LruHashMap<u64, u32> = LruHashMap::pinned(65536, 0);
/// Match records: small, rare, woken at once (detection latency), apart from bulk output.
#[map]
static MATCHES: RingBuf = RingBuf::pinned(1 << 20, 0);

/// ExecArgs plus slack, so a string of up to ARGV_LEN - 1 bytes read at any masked offset
/// below ARGV_LEN stays in bounds.
#[repr(C)]
struct ExecScratch {
    args: ExecArgs,
    slack: [u8; ARGV_LEN],
}

const CLONE_THREAD: u64 = 0x0001_0000;
const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const AT_REMOVEDIR: u64 = 0x200;

#[inline(always)]
unsafe fn field<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    unsafe { *(ctx.as_ptr().add(off) as *const T) }
}

/// Syscall argument `n` of a `syscalls:sys_enter_*` tracepoint.
#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    unsafe { field::<u64>(ctx, 16 + 8 * n) }
}

/// The agent id of a process, if it is tracked.
#[inline(always)]
fn agent_of(tgid: u32) -> Option<u64> {
    match TRACKED.get(tgid) {
        Some(&a) if a != 0 => Some(a),
        _ => None,
    }
}

/// Marks a process as tracked (agent ≠ 0) or untracked (0). A pid beyond the array (pid_max was
/// raised after load) cannot be tracked: counted.
/// Returns false when the pid could not be marked.
#[inline(always)]
fn set_agent(pid: u32, agent: u64) -> bool {
    match TRACKED.get_ptr_mut(pid) {
        Some(p) => {
            unsafe { *p = agent };
            true
        }
        None => {
            if agent != 0 {
                lost(LostCause::TrackFull);
            }
            false
        }
    }
}

/// The gate: (pid_tgid, agent id) of the current process, if it is tracked.
#[inline(always)]
fn tracked() -> Option<(u64, u64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    agent_of((pid_tgid >> 32) as u32).map(|a| (pid_tgid, a))
}

#[inline(always)]
fn lost(cause: LostCause) {
    if let Some(p) = LOST.get_ptr_mut(cause as u32) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn fill_header(h: *mut EventHeader, kind: u16, pid_tgid: u64, agent: u64) {
    unsafe {
        (*h).kind = kind;
        (*h).flags = 0;
        (*h).tgid = (pid_tgid >> 32) as u32;
        (*h).pid = pid_tgid as u32;
        (*h).uid = bpf_get_current_uid_gid() as u32;
        (*h).ts_ns = bpf_ktime_get_ns();
        (*h).cgroup_id = bpf_get_current_cgroup_id();
        (*h).agent = agent;
        (*h).comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    }
}

/// Reserves a fixed-size record on the EVENTS ring, fills its header, lets `body` fill the rest,
/// and submits it. A full ring is counted, never silent.
#[inline(always)]
fn emit<T: 'static>(kind: u16, pid_tgid: u64, agent: u64, body: impl FnOnce(*mut T)) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            let p = entry.as_mut_ptr();
            fill_header(p as *mut EventHeader, kind, pid_tgid, agent);
            body(p);
            entry.submit(0);
        }
        None => lost(LostCause::RingFullEvents),
    }
}

// ---------------------------------------------------------------- process lifecycle

#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let child: i32 = unsafe { field(&ctx, 8) };
    let clone_flags: u64 = unsafe { field(&ctx, 32) };
    if clone_flags & CLONE_THREAD != 0 {
        return 0; // threads share the tgid, already covered
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
        match EXEC_STASH.get(&old_pid) {
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

/// Stashes argv at execve entry: after a successful exec the old image's memory is gone.
#[inline(always)]
fn stash_argv(argv: u64) {
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
fn non_fatal(sig: i32) -> bool {
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

// ---------------------------------------------------------------- output

#[inline(always)]
fn capture_limit() -> usize {
    let v = CONFIG.get(CFG_CAPTURE_BYTES).copied().unwrap_or(0);
    let v = if v == 0 { DEFAULT_CAPTURE } else { v };
    if v > MAX_CAPTURE as u64 {
        MAX_CAPTURE
    } else {
        v as usize
    }
}

/// Matcher state carried through `bpf_loop`, kept in a per-CPU map rather than on the stack: the
/// verifier checks a callback until its state converges, and map values are opaque to it where
/// stack values (a hit counter going 0, 1, 2, …) would never converge.
#[map]
static SCAN_CTX: PerCpuArray<ScanCtx> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct ScanCtx {
    table: u32,
    n: u32,
    state: u32,
    hits: u32,
    first: u32,
    deny: u32,
    states: [u16; MATCH_STATES],
}

/// Bytes handled per `bpf_loop` step: the verifier checks the callback once, not per byte (a
/// plain loop over 4 KiB is unrolled by the verifier past its complexity limit), and a long step
/// keeps the per-call cost small.
const SCAN_STEP: usize = 128;

#[inline(never)]
extern "C" fn scan_step(i: u64, _ctx: *mut c_void) -> i64 {
    let Some(c) = SCAN_CTX.get_ptr_mut(0) else {
        return 1;
    };
    let c = unsafe { &mut *c };
    let (Some(s), Some(dfa)) = (OUT_SCRATCH.get_ptr(0), DFA.get(c.table.wrapping_sub(1))) else {
        return 1;
    };
    let s = unsafe { &*s };
    let base = (i as usize) * SCAN_STEP;
    let n = c.n as usize;
    let mut st = c.state as usize;
    let mut done = 0;
    for j in 0..SCAN_STEP {
        let at = base + j;
        if at >= n {
            done = 1;
            break;
        }
        let b = s.data[at & (MAX_CAPTURE - 1)] as usize;
        let cl = dfa.classes[b & 255] as usize;
        let v = dfa.next[(st * DFA_CLASSES + cl) & (DFA_MAX_STATES * DFA_CLASSES - 1)];
        st = (v & NEXT_STATE) as usize;
        if v & NEXT_ACCEPT != 0 {
            if c.hits == 0 {
                c.first = at as u32 + 1;
            }
            if (c.hits as usize) < MATCH_STATES {
                c.states[c.hits as usize & (MATCH_STATES - 1)] = st as u16;
            }
            c.hits += 1;
            if v & NEXT_DENY != 0 {
                c.deny = 1;
            }
        }
    }
    c.state = st as u32;
    done
}

/// Runs the kernel matcher over the captured bytes, continuing from this fd's state. A match is
/// reported on MATCHES at once; a deny pattern kills the writer here, at syscall entry, so the
/// write never lands.
#[inline(always)]
fn scan(s: &OutputScratch, captured: usize) {
    let table = match CONFIG.get(CFG_DFA_ACTIVE).copied() {
        Some(t @ 1..=2) => t as u32,
        _ => return,
    };
    let key = ((s.ev.hdr.tgid as u64) << 32) | (s.ev.fd as u32 as u64);
    // SAFETY: the value is copied out at once.
    let state = match unsafe { FD_STATE.get(&key) } {
        Some(v) if *v >> 16 == table => *v & 0xffff,
        _ => 0,
    };
    let n = if captured > SCAN_MAX {
        SCAN_MAX
    } else {
        captured
    };
    let Some(c) = SCAN_CTX.get_ptr_mut(0) else {
        return;
    };
    let c = unsafe { &mut *c };
    c.table = table;
    c.n = n as u32;
    c.state = state;
    c.hits = 0;
    c.first = 0;
    c.deny = 0;
    c.states = [0; MATCH_STATES];
    let steps = n.div_ceil(SCAN_STEP) as u32;
    unsafe { bpf_loop(steps, scan_step as *mut c_void, core::ptr::null_mut(), 0) };
    let _ = FD_STATE.insert(&key, &((table << 16) | (c.state & 0xffff)), 0);
    if c.hits == 0 {
        return;
    }
    if c.deny != 0 {
        // SIGKILL pending: the write returns before copying a byte.
        unsafe { bpf_send_signal(9) };
    }
    match MATCHES.reserve::<MatchEvent>(0) {
        Some(mut e) => {
            let m = e.as_mut_ptr();
            unsafe {
                (*m).hdr = s.ev.hdr;
                (*m).hdr.kind = KIND_MATCH;
                (*m).fd = s.ev.fd;
                (*m).table = table as u16;
                (*m).deny = c.deny as u16;
                (*m).count = s.ev.count;
                (*m).hits = c.hits;
                (*m).offset = c.first;
                (*m).states = c.states;
            }
            e.submit(BPF_RB_FORCE_WAKEUP as u64);
        }
        None => lost(LostCause::RingFullMatches),
    }
}

/// Sends the assembled scratch record: header plus `captured` bytes, nothing more.
#[inline(always)]
fn send_output(s: &mut OutputScratch, captured: usize) {
    scan(s, captured);
    let captured = captured & (2 * MAX_CAPTURE - 1);
    s.ev.captured = captured as u32;
    s.ev._pad = 0;
    s.ev._pad2 = 0;
    let len = size_of::<OutputEvent>() + captured;
    let bytes = unsafe { core::slice::from_raw_parts(s as *const OutputScratch as *const u8, len) };
    // Not bpf_ringbuf_query: reading the consumer position pulls a cache line the reader keeps
    // writing on another CPU, which costs more than the whole record (measured: ~1 µs on a VM).
    let every = match CONFIG.get(CFG_OUTPUT_WAKEUP_RECORDS).copied() {
        Some(0) | None => DEFAULT_OUTPUT_WAKEUP_RECORDS,
        Some(w) => w,
    };
    let mut flags = BPF_RB_NO_WAKEUP;
    if let Some(n) = OUT_COUNT.get_ptr_mut(0) {
        unsafe {
            *n += 1;
            if *n >= every {
                *n = 0;
                flags = BPF_RB_FORCE_WAKEUP;
            }
        }
    }
    if OUTPUT.output::<[u8]>(bytes, flags as u64).is_err() {
        lost(LostCause::RingFullOutput);
    }
}

#[inline(always)]
fn scratch(sys: u16, fd: u64, count: u64) -> Option<&'static mut OutputScratch> {
    let (pid_tgid, agent) = tracked()?;
    let s = unsafe { &mut *OUT_SCRATCH.get_ptr_mut(0)? };
    // The hottest record gets a slim header: uid, cgroup and comm cost three helper calls per
    // write (measured ~300 ns here) and axiomd already knows them from the process's lifecycle
    // records or /proc.
    slim_header(&mut s.ev.hdr, KIND_OUTPUT, pid_tgid, agent);
    s.ev.fd = fd as i32;
    s.ev.syscall = sys;
    s.ev.count = count;
    Some(s)
}

/// write(2)-shaped calls: one user buffer.
#[inline(always)]
fn capture_buf(sys: u16, fd: u64, buf: u64, count: u64) {
    let Some(s) = scratch(sys, fd, count) else {
        return;
    };
    let limit = capture_limit();
    let n = if count > limit as u64 {
        limit
    } else {
        count as usize
    };
    let n = n & (2 * MAX_CAPTURE - 1);
    let r = unsafe {
        bpf_probe_read_user(
            s.data.as_mut_ptr() as *mut c_void,
            n as u32,
            buf as *const c_void,
        )
    };
    if r < 0 {
        s.ev.hdr.flags |= FLAG_TRUNCATED;
        lost(LostCause::ReadFault);
        send_output(s, 0);
        return;
    }
    send_output(s, n);
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// writev(2)-shaped calls: up to MAX_IOV iovecs, concatenated up to the capture limit.
#[inline(always)]
fn capture_iov(sys: u16, fd: u64, iov: u64, iovcnt: u64) {
    let Some(s) = scratch(sys, fd, 0) else {
        return;
    };
    let limit = capture_limit();
    let mut off: usize = 0;
    let mut total: u64 = 0;
    for i in 0..MAX_IOV {
        if i as u64 >= iovcnt {
            break;
        }
        let mut v = Iovec { base: 0, len: 0 };
        let r = unsafe {
            bpf_probe_read_user(
                &mut v as *mut Iovec as *mut c_void,
                size_of::<Iovec>() as u32,
                (iov as *const Iovec).wrapping_add(i) as *const c_void,
            )
        };
        if r < 0 {
            s.ev.hdr.flags |= FLAG_TRUNCATED;
            break;
        }
        total += v.len;
        if off >= limit {
            continue;
        }
        let room = limit - off;
        let n = if v.len > room as u64 {
            room
        } else {
            v.len as usize
        };
        let dst = unsafe { s.data.as_mut_ptr().add(off & (MAX_CAPTURE - 1)) };
        let r = unsafe {
            bpf_probe_read_user(
                dst as *mut c_void,
                (n & (MAX_CAPTURE - 1)) as u32,
                v.base as *const c_void,
            )
        };
        if r < 0 {
            s.ev.hdr.flags |= FLAG_TRUNCATED;
            lost(LostCause::ReadFault);
            break;
        }
        off += n & (MAX_CAPTURE - 1);
    }
    if iovcnt > MAX_IOV as u64 {
        s.ev.hdr.flags |= FLAG_TRUNCATED;
    }
    s.ev.count = total;
    send_output(s, off);
}

/// An output hook: a syscall whose first three arguments are (fd, buffer or iovec, count).
macro_rules! output_hook {
    ($($name:ident: $event:literal => $capture:ident($sys:expr);)*) => {$(
        #[tracepoint(category = "syscalls", name = $event)]
        pub fn $name(ctx: TracePointContext) -> u32 {
            $capture($sys, arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2));
            0
        }
    )*};
}

output_hook! {
    enter_write: "sys_enter_write" => capture_buf(SYS_WRITE);
    enter_pwrite64: "sys_enter_pwrite64" => capture_buf(SYS_PWRITE64);
    enter_sendto: "sys_enter_sendto" => capture_buf(SYS_SENDTO);
    enter_writev: "sys_enter_writev" => capture_iov(SYS_WRITEV);
    enter_pwritev: "sys_enter_pwritev" => capture_iov(SYS_PWRITEV);
    enter_pwritev2: "sys_enter_pwritev2" => capture_iov(SYS_PWRITEV2);
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn enter_sendmsg(ctx: TracePointContext) -> u32 {
    if tracked().is_none() {
        return 0;
    }
    // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
    let msg = arg(&ctx, 1);
    let mut hdr = [0u64; 4];
    let r =
        unsafe { bpf_probe_read_user(hdr.as_mut_ptr() as *mut c_void, 32, msg as *const c_void) };
    if r < 0 {
        lost(LostCause::ReadFault);
        return 0;
    }
    capture_iov(SYS_SENDMSG, arg(&ctx, 0), hdr[2], hdr[3]);
    0
}

// ---------------------------------------------------------------- files

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn file_event(op: u16, dirfd: u64, path: u64, dirfd2: u64, path2: u64, flags: u64, mode: u64) {
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
    emit::<FileEvent>(KIND_FILE, pid_tgid, agent, |e| unsafe {
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
    });
}

const CWD: u64 = AT_FDCWD as i64 as u64;

#[inline(always)]
fn writes(flags: u64) -> bool {
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
static FILE_PENDING: LruHashMap<u32, u8> = LruHashMap::pinned(16384, 0);

const EPERM: i64 = 1;
const EACCES: i64 = 13;
const EXDEV: i64 = 18;
const EROFS: i64 = 30;

/// A recorded file operation that the kernel refused (Landlock, a read-only mount, permissions)
/// is reported with its error: denials are events, not silence.
#[inline(always)]
fn file_exit(ctx: &TracePointContext) -> u32 {
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

// ---------------------------------------------------------------- fd table

/// An open for writing in flight: what its exit needs to name the fd it returns.
#[repr(C)]
#[derive(Clone, Copy)]
struct OpenArgs {
    path: u64,
    dirfd: i32,
    flags: u32,
}

#[map]
static OPEN_PENDING: LruHashMap<u32, OpenArgs> = LruHashMap::pinned(16384, 0);
/// A dup in flight: (old fd, O_CLOEXEC or 0).
#[map]
static DUP_PENDING: LruHashMap<u32, [i32; 2]> = LruHashMap::pinned(16384, 0);

const O_CLOEXEC: u64 = 0o2000000;
const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

/// A slim header for the OUTPUT ring's records (output, fd changes): no uid, cgroup or comm,
/// which axiomd knows from the process's lifecycle records or /proc.
#[inline(always)]
fn slim_header(h: &mut EventHeader, kind: u16, pid_tgid: u64, agent: u64) {
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
fn fd_record(pid_tgid: u64, agent: u64, op: u16, fd: i32, oldfd: i32, flags: u32, child: u32) {
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
fn open_exit(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(agent) = agent_of((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let tid = pid_tgid as u32;
    if let Some(a) = unsafe { OPEN_PENDING.get(&tid) }.copied() {
        let _ = OPEN_PENDING.remove(&tid);
        let ret: i64 = unsafe { field(ctx, 16) };
        if ret >= 0 {
            match OUTPUT.reserve::<FdOpenEvent>(0) {
                Some(mut entry) => {
                    let e = unsafe { &mut *entry.as_mut_ptr() };
                    slim_header(&mut e.hdr, KIND_FD_OPEN, pid_tgid, agent);
                    e.fd = ret as i32;
                    e.dirfd = a.dirfd;
                    e.flags = a.flags;
                    e._pad = 0;
                    e.path[0] = 0;
                    // The path the syscall just read is resident: it reads again here.
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
    }
    file_exit(ctx)
}

#[inline(always)]
fn dup_enter(oldfd: u64, cloexec: bool) {
    let Some((pid_tgid, _)) = tracked() else {
        return;
    };
    let v = [oldfd as i32, if cloexec { O_CLOEXEC as i32 } else { 0 }];
    let _ = DUP_PENDING.insert(&(pid_tgid as u32), &v, 0);
}

#[inline(always)]
fn dup_exit(ctx: &TracePointContext) -> u32 {
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
    if ret >= 0 {
        fd_record(pid_tgid, agent, FD_DUP, ret as i32, v[0], v[1] as u32, 0);
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
static PAIR_PENDING: LruHashMap<u32, [u64; 2]> = LruHashMap::pinned(16384, 0);

#[inline(always)]
fn pair_enter(fds: u64, cloexec: bool) {
    let Some((pid_tgid, _)) = tracked() else {
        return;
    };
    let _ = PAIR_PENDING.insert(&(pid_tgid as u32), &[fds, cloexec as u64], 0);
}

/// The exit of a pipe or socketpair: the two fds it wrote are pipes (sockets).
#[inline(always)]
fn pair_exit(ctx: &TracePointContext, op: u16) -> u32 {
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

const SOCK_CLOEXEC: u64 = 0o2000000;

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
fn socket_exit(ctx: &TracePointContext) -> u32 {
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

// ---------------------------------------------------------------- network

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, agent)) = tracked() else {
        return 0;
    };
    let fd = arg(&ctx, 0);
    let addr = arg(&ctx, 1);
    let addrlen = arg(&ctx, 2);
    emit::<ConnectEvent>(KIND_CONNECT, pid_tgid, agent, |e| unsafe {
        (*e).fd = fd as i32;
        (*e).addrlen = addrlen as u32;
        let n = if addrlen > SOCKADDR_LEN as u64 {
            SOCKADDR_LEN as u64
        } else {
            addrlen
        };
        (*e).addr[0] = 0;
        (*e).addr[1] = 0;
        if bpf_probe_read_user(
            (*e).addr.as_mut_ptr() as *mut c_void,
            (n & 127) as u32,
            addr as *const c_void,
        ) < 0
        {
            (*e).hdr.flags |= FLAG_TRUNCATED;
        }
    });
    0
}

// ---------------------------------------------------------------- network policy

/// Agents whose connects are checked against `NET_ALLOW` (value unused); others connect freely.
#[map]
static NET_POLICY: HashMap<u64, u32> = HashMap::pinned(4096, 0);
/// Allowed destinations per agent (see `NetKey`).
#[map]
static NET_ALLOW: LpmTrie<NetKey, NetPorts> = LpmTrie::pinned(16384, 0);

/// 1: let the connect through; 0: refuse it (EPERM), after reporting it.
#[inline(always)]
fn connect_policy(ctx: &SockAddrContext, v6: bool) -> i32 {
    let Some((pid_tgid, agent)) = tracked() else {
        return 1;
    };
    if unsafe { NET_POLICY.get(&agent) }.is_none() {
        return 1;
    }
    let sa = ctx.sock_addr;
    let mut addr = [0u8; 16];
    unsafe {
        if v6 {
            for i in 0..4 {
                let w = (*sa).user_ip6[i].to_ne_bytes();
                addr[i * 4..i * 4 + 4].copy_from_slice(&w);
            }
        } else {
            addr[10] = 0xff;
            addr[11] = 0xff;
            addr[12..16].copy_from_slice(&(*sa).user_ip4.to_ne_bytes());
        }
    }
    let port = u16::from_be(unsafe { (*sa).user_port } as u16);
    let key = Key::new(
        64 + 128,
        NetKey {
            agent: agent.to_be_bytes(),
            addr,
        },
    );
    if let Some(p) = NET_ALLOW.get(&key) {
        if p.any != 0 {
            return 1;
        }
        let mut i = 0;
        while i < NET_PORTS {
            if (i as u32) < p.n && p.ports[i] == port {
                return 1;
            }
            i += 1;
        }
    }
    // Refused: the record carries a sockaddr as the process gave it, and the denied flag.
    emit::<ConnectEvent>(KIND_CONNECT, pid_tgid, agent, |e| unsafe {
        (*e).hdr.flags |= FLAG_DENIED;
        (*e).fd = -1;
        let a = &mut (*e).addr;
        let pb = port.to_be_bytes();
        if v6 {
            (*e).addrlen = 28;
            a[0..2].copy_from_slice(&(AF_INET6 as u16).to_ne_bytes());
            a[2..4].copy_from_slice(&pb);
            a[4..8].copy_from_slice(&[0; 4]);
            a[8..24].copy_from_slice(&addr);
        } else {
            (*e).addrlen = 16;
            a[0..2].copy_from_slice(&(AF_INET as u16).to_ne_bytes());
            a[2..4].copy_from_slice(&pb);
            a[4..8].copy_from_slice(&addr[12..16]);
        }
    });
    0
}

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    connect_policy(&ctx, false)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    connect_policy(&ctx, true)
}

/// A datagram sent with a destination (`sendto`/`sendmsg` without `connect`: UDP, DNS) is a
/// connect of its own: the same allowlist.
#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    connect_policy(&ctx, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    connect_policy(&ctx, true)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual BSD/GPL\0";
