//! Axiom's kernel sensor.
//!
//! Every program starts with the same gate: one hash lookup of the current thread group id in
//! `TRACKED`. An untracked process leaves after that lookup; nothing else runs. Tracking spreads in
//! the kernel itself (fork inherits, moving into a tracked cgroup adopts), so no event is missed
//! while userspace catches up.
//!
//! Tracepoint fields are read directly from the context (the kernel allows it and it is cheaper
//! than a probe_read). Syscall tracepoints carry their arguments at offset 16, 8 bytes each.
//!
//! This file holds the maps every program shares and the gate; the programs are grouped by hook
//! family: `lifecycle.rs` (fork, cgroup moves, exec, exit, signals), `output.rs` (writes and the
//! kernel matcher), `files.rs` (file operations), `fdtable.rs` (what each descriptor is),
//! `network.rs` (connects and the connect allowlist).
#![no_std]
#![no_main]
#![allow(static_mut_refs)]

use axiom_common::*;
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns, bpf_probe_read_kernel},
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};

mod fdtable;
mod files;
mod lifecycle;
mod network;
mod output;

/// Agent id per tracked process, indexed by tgid (0: not tracked). An array, not a hash: the
/// verifier inlines array lookups, so the gate every untracked syscall pays is one helper call and
/// one load. axiomd sizes it to kernel.pid_max (8 bytes × pid_max).
#[map]
pub(crate) static TRACKED: Array<u64> = Array::pinned(4 << 20, 0);
#[map]
pub(crate) static TRACKED_CGROUPS: HashMap<u64, Tracked> = HashMap::pinned(4096, 0);
/// Lifecycle, file and network records: small, never to be shed.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::pinned(4 << 20, 0);
/// Bulk output records.
#[map]
pub(crate) static OUTPUT: RingBuf = RingBuf::pinned(16 << 20, 0);
#[map]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::pinned(LOST_CAUSES, 0);
/// What the programs did, by `Work` (see there).
#[map]
pub(crate) static WORK: PerCpuArray<u64> = PerCpuArray::pinned(WORK_COUNTERS, 0);
#[map]
pub(crate) static CONFIG: Array<u64> = Array::pinned(CFG_ENTRIES, 0);
#[map]
pub(crate) static EXEC_STASH: LruHashMap<u32, ExecArgs> = LruHashMap::pinned(4096, 0);
#[map]
pub(crate) static EXIT_STATUS: LruHashMap<u32, u32> = LruHashMap::pinned(16384, 0);
/// The last signal sent to each tracked process (or thread). A signal whose default action ends
/// the process is delivered as SIGKILL (the kernel turns it into a group exit when it is sent),
/// so the signal a process died of is the one that was sent to it.
#[map]
pub(crate) static SENT_SIGNAL: LruHashMap<u32, u32> = LruHashMap::pinned(16384, 0);
#[map]
pub(crate) static OUT_SCRATCH: PerCpuArray<OutputScratch> = PerCpuArray::with_max_entries(1, 0);
/// Output records sent on this CPU since the last forced wakeup.
#[map]
pub(crate) static OUT_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub(crate) static EXEC_SCRATCH: PerCpuArray<ExecScratch> = PerCpuArray::with_max_entries(1, 0);
/// The kernel matcher's two tables (see CFG_DFA_ACTIVE).
#[map]
pub(crate) static DFA: Array<Dfa> = Array::pinned(2, 0);
/// Matcher state per (tgid, fd), so a literal split across two writes still matches:
/// `table << 16 | state`.
#[map]
pub(crate) static FD_STATE: LruHashMap<u64, u32> = LruHashMap::pinned(65536, 0);
/// Match records: small, rare, woken at once (detection latency), apart from bulk output.
#[map]
pub(crate) static MATCHES: RingBuf = RingBuf::pinned(1 << 20, 0);

/// ExecArgs plus slack, so a string of up to ARGV_LEN - 1 bytes read at any masked offset
/// below ARGV_LEN stays in bounds.
#[repr(C)]
pub(crate) struct ExecScratch {
    args: ExecArgs,
    slack: [u8; ARGV_LEN],
}

pub(crate) const CLONE_THREAD: u64 = 0x0001_0000;
pub(crate) const O_WRONLY: u64 = 0o1;
pub(crate) const O_RDWR: u64 = 0o2;
pub(crate) const O_CREAT: u64 = 0o100;
pub(crate) const O_TRUNC: u64 = 0o1000;
pub(crate) const AT_REMOVEDIR: u64 = 0x200;

#[inline(always)]
pub(crate) unsafe fn field<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    unsafe { *(ctx.as_ptr().add(off) as *const T) }
}

/// Syscall argument `n` of a `syscalls:sys_enter_*` tracepoint.
#[inline(always)]
pub(crate) fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    unsafe { field::<u64>(ctx, 16 + 8 * n) }
}

/// `CONFIG[i]` (0 when unset).
#[inline(always)]
pub(crate) fn config(i: u32) -> u64 {
    CONFIG.get(i).copied().unwrap_or(0)
}

/// A kernel pointer-sized value at `src` (a struct member found by a BTF offset); `None` when
/// unreadable or 0 (a null pointer, an unset field).
#[inline(always)]
pub(crate) fn kread(src: u64) -> Option<u64> {
    let mut v: u64 = 0;
    let r = unsafe {
        bpf_probe_read_kernel(
            &mut v as *mut u64 as *mut core::ffi::c_void,
            8,
            src as *const core::ffi::c_void,
        )
    };
    (r == 0 && v != 0).then_some(v)
}

/// The agent id of a process, if it is tracked.
#[inline(always)]
pub(crate) fn agent_of(tgid: u32) -> Option<u64> {
    match TRACKED.get(tgid) {
        Some(&a) if a != 0 => Some(a),
        _ => None,
    }
}

/// Marks a process as tracked (agent ≠ 0) or untracked (0). A pid beyond the array (pid_max was
/// raised after load) cannot be tracked: counted.
/// Returns false when the pid could not be marked.
#[inline(always)]
pub(crate) fn set_agent(pid: u32, agent: u64) -> bool {
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
pub(crate) fn tracked() -> Option<(u64, u64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    agent_of((pid_tgid >> 32) as u32).map(|a| (pid_tgid, a))
}

#[inline(always)]
pub(crate) fn work(w: Work, n: u64) {
    if let Some(p) = WORK.get_ptr_mut(w as u32) {
        unsafe { *p += n };
    }
}

#[inline(always)]
pub(crate) fn lost(cause: LostCause) {
    if let Some(p) = LOST.get_ptr_mut(cause as u32) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn fill_header(h: *mut EventHeader, kind: u16, pid_tgid: u64, agent: u64) {
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
/// and submits it, waking axiomd (see `emit_then`). A full ring is counted, never silent.
#[inline(always)]
pub(crate) fn emit<T: 'static>(kind: u16, pid_tgid: u64, agent: u64, body: impl FnOnce(*mut T)) {
    emit_then(kind, pid_tgid, agent, |p| {
        body(p);
        true
    })
}

/// Like `emit`, `body` saying whether the record wakes axiomd; one that does not waits for the
/// next that does, or for the reader's drain timer. The kernel's own wakeup policy wakes the
/// reader only for a record at the consumer's position (the ring was read up to it), so behind
/// a record that did not wake it, no later one would: a waking record that finds other records
/// unread forces the wakeup (the query reads the ring's positions: a cache line the reader
/// writes, paid by waking records only).
#[inline(always)]
pub(crate) fn emit_then<T: 'static>(
    kind: u16,
    pid_tgid: u64,
    agent: u64,
    body: impl FnOnce(*mut T) -> bool,
) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            let p = entry.as_mut_ptr();
            fill_header(p as *mut EventHeader, kind, pid_tgid, agent);
            let flags = if !body(p) {
                BPF_RB_NO_WAKEUP
            } else if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > record_size::<T>() {
                BPF_RB_FORCE_WAKEUP
            } else {
                0
            };
            entry.submit(flags as u64);
        }
        None => lost(LostCause::RingFullEvents),
    }
}

/// The bytes a record of `T` takes in a ring: an 8-byte header, rounded up to 8.
#[inline(always)]
const fn record_size<T>() -> u64 {
    ((core::mem::size_of::<T>() + 8 + 7) & !7) as u64
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual BSD/GPL\0";
