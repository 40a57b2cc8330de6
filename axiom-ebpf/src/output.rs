//! Output capture: what tracked processes write (write, writev, pwrite*, sendto, sendmsg), up
//! to the capture size, and the kernel matcher that scans it (and can stop a write before it
//! lands).
use axiom_common::*;
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_loop, bpf_probe_read_user, bpf_send_signal},
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use core::{ffi::c_void, mem::size_of};

use crate::{fdtable::*, *};

#[inline(always)]
pub(crate) fn capture_limit() -> usize {
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
pub(crate) static SCAN_CTX: PerCpuArray<ScanCtx> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub(crate) struct ScanCtx {
    table: u32,
    /// Two chains scan at once, so the CPU overlaps their loads (one chain is two dependent loads
    /// per byte, each waiting on the last): A covers `[0, mid)` from the fd's carried state; B
    /// covers `[from, n)` from the root, `from` the longest literal's length before `mid`, so
    /// that it is in the right state at `mid`, and counts only what ends at or after `mid`. `mid`
    /// makes both as long (`len` steps; A runs at most one byte past `mid`, its hits there not
    /// counted), so the loop tests no chain's bounds per byte. Unsplit (short writes): B alone
    /// scans `[0, n)` from the carried state.
    mid: u32,
    from: u32,
    len: u32,
    /// The chains' states, as their rows' offsets in `Dfa::next`.
    state: u32,
    state_b: u32,
    /// The exact pass over one step (see `exact_byte`): its first byte and its chains' states.
    ex_base: u32,
    ex_a: u32,
    ex_b: u32,
    hits: u32,
    first: u32,
    deny: u32,
    states: [u16; MATCH_STATES],
}

/// Bytes handled per `bpf_loop` step: the verifier checks the callback once, not per byte (a
/// plain loop over 4 KiB is unrolled by the verifier past its complexity limit), and a long step
/// keeps the per-call cost small. A step's loop has no branch but its bound: it runs the chains
/// and ORs their entries; only a step that saw an accepting entry is scanned again, byte by
/// byte, to find where (`exact_byte`). A branch per byte in the loop itself would cost time on
/// every byte, and the verifier, which walks each of the loop's iterations, would follow every
/// combination of its outcomes.
pub(crate) const SCAN_STEP: usize = 128;

#[inline(always)]
fn hit(c: &mut ScanCtx, at: usize, v: u32) {
    if c.hits == 0 || (at as u32) < c.first - 1 {
        c.first = at as u32 + 1;
    }
    if (c.hits as usize) < MATCH_STATES {
        c.states[c.hits as usize & (MATCH_STATES - 1)] =
            ((v & NEXT_ROW) / DFA_ROW_BYTES as u32) as u16;
    }
    c.hits += 1;
    if v & NEXT_DENY != 0 {
        c.deny = 1;
    }
}

/// One byte of one chain: the `Dfa::next` entry for `byte` from the state whose row is at `row`.
/// The class load does not depend on the state; the chain waits on one add and one load per
/// byte. The caller keeps the entry's row (`& NEXT_ROW`) as the next state whatever its flags,
/// so the verifier sees one state shape per byte whichever branch a hit took.
#[inline(always)]
fn step(dfa: *const u8, row: u32, byte: u8) -> u32 {
    // SAFETY: `classes` is the table's first 256 bytes; a class is a multiple of 4 below 256 and
    // a row offset at most NEXT_ROW, so the u32 read stays inside `next`.
    unsafe {
        let class = *dfa.add(byte as usize) as u32 & 0xfc;
        *(dfa.add(Dfa::NEXT_OFFSET + ((row & NEXT_ROW) + class) as usize) as *const u32)
    }
}

/// The scan context, the captured bytes and the live table, for a `bpf_loop` step.
#[inline(always)]
fn step_args() -> Option<(&'static mut ScanCtx, *const u8, *const u8)> {
    let c = unsafe { &mut *SCAN_CTX.get_ptr_mut(0)? };
    let s = OUT_SCRATCH.get_ptr(0)?;
    let dfa = DFA.get_ptr(c.table.wrapping_sub(1))?;
    Some((c, unsafe { (*s).data.as_ptr() }, dfa as *const u8))
}

/// The exact pass, one byte per call (a callback has no loop for the verifier to unroll): both
/// chains from the step's saved states, each accept recorded as the step's loop would have.
/// A's hits count below `mid`, B's from `mid` on (unsplit, `mid` is 0: B's all count).
#[inline(never)]
extern "C" fn exact_byte(j: u64, _ctx: *mut c_void) -> i64 {
    let Some((c, data, dfa)) = step_args() else {
        return 1;
    };
    let at = c.ex_base as usize + (j as usize & (SCAN_STEP - 1));
    let bt = c.from as usize + at;
    let mid = c.mid as usize;
    let (va, vb) = (
        step(dfa, c.ex_a, byte(data, at)),
        step(dfa, c.ex_b, byte(data, bt)),
    );
    c.ex_a = va & NEXT_ROW;
    c.ex_b = vb & NEXT_ROW;
    if va & NEXT_ACCEPT != 0 && at < mid {
        hit(c, at, va);
    }
    if vb & NEXT_ACCEPT != 0 && bt >= mid {
        hit(c, bt, vb);
    }
    0
}

/// After a step whose entries held an accept: scans its bytes again from its starting states
/// `a` and `b`, exactly.
#[inline(always)]
fn exact(c: &mut ScanCtx, base: usize, a: u32, b: u32) {
    c.ex_base = base as u32;
    c.ex_a = a;
    c.ex_b = b;
    let left = c.len as usize - base;
    let n = if left > SCAN_STEP { SCAN_STEP } else { left };
    unsafe {
        bpf_loop(
            n as u32,
            exact_byte as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
}

/// The captured byte at `at`.
#[inline(always)]
fn byte(data: *const u8, at: usize) -> u8 {
    // SAFETY: masked inside the scratch buffer.
    unsafe { *data.add(at & (MAX_CAPTURE - 1)) }
}

/// `bpf_loop` step: chain B over `[from, n)` and, in a split scan (`PAIR`), chain A beside it.
/// Unsplit, `from` is 0 and A is compiled out.
#[inline(never)]
extern "C" fn scan_step<const PAIR: bool>(i: u64, _ctx: *mut c_void) -> i64 {
    let Some((c, data, dfa)) = step_args() else {
        return 1;
    };
    let base = (i as usize) * SCAN_STEP;
    let (from, len) = (c.from as usize, c.len as usize);
    let (mut a, mut b) = (c.state, c.state_b);
    let mut done = 0;
    let mut any = 0u32;
    for j in 0..SCAN_STEP {
        let at = base + j;
        if at >= len {
            done = 1;
            break;
        }
        let vb = step(dfa, b, byte(data, from + at));
        b = vb & NEXT_ROW;
        any |= vb;
        if PAIR {
            let va = step(dfa, a, byte(data, at));
            a = va & NEXT_ROW;
            any |= va;
        }
    }
    if any & NEXT_ACCEPT != 0 {
        let (a0, b0) = (c.state, c.state_b);
        exact(c, base, a0, b0);
    }
    c.state = a;
    c.state_b = b;
    done
}

/// Runs the kernel matcher over the captured bytes, continuing from this fd's state. A match is
/// reported on MATCHES at once; a deny pattern kills the writer here, at syscall entry, so the
/// write never lands.
#[inline(always)]
pub(crate) fn scan(s: &OutputScratch, captured: usize) {
    let table = match CONFIG.get(CFG_DFA_ACTIVE).copied() {
        Some(t @ 1..=2) => t as u32,
        _ => return,
    };
    let Some(dfa) = DFA.get(table - 1) else {
        return;
    };
    let depth = dfa.depth as usize;
    let key = ((s.ev.hdr.tgid as u64) << 32) | (s.ev.fd as u32 as u64);
    // An entry of the other table is stale: it reads as state 0, and is overwritten below.
    // SAFETY: the value is copied out at once.
    let (state, stale) = match unsafe { FD_STATE.get(&key) } {
        Some(v) if *v >> 16 == table => (*v & 0xffff, false),
        Some(_) => (0, true),
        None => (0, false),
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
    let carried = (state & (DFA_MAX_STATES as u32 - 1)) * DFA_ROW_BYTES as u32;
    // Split when both halves are long beside the warm-up.
    let split = depth < SCAN_STEP && n >= 4 * depth + 64;
    if split {
        let mid = (n + depth) / 2;
        c.mid = mid as u32;
        c.from = (mid - depth) as u32;
        c.len = (n - (mid - depth)) as u32;
        c.state = carried;
        c.state_b = 0;
    } else {
        c.mid = 0;
        c.from = 0;
        c.len = n as u32;
        c.state = 0;
        c.state_b = carried;
    }
    c.hits = 0;
    c.first = 0;
    c.deny = 0;
    c.states = [0; MATCH_STATES];
    let steps = (c.len as usize).div_ceil(SCAN_STEP) as u32;
    let step = if split {
        scan_step::<true> as *mut c_void
    } else {
        scan_step::<false> as *mut c_void
    };
    unsafe { bpf_loop(steps, step, core::ptr::null_mut(), 0) };
    // The state carries a literal split across writes. Written only when it changed: a hash
    // update costs more than scanning a short write, and most writes end where they began (in
    // no literal, or with no entry at all, which reads as state 0).
    let end = c.state_b / DFA_ROW_BYTES as u32;
    if end != state || stale {
        let _ = FD_STATE.insert(&key, &((table << 16) | (end & 0xffff)), 0);
    }
    work(Work::ScannedBytes, n as u64);
    if c.hits == 0 {
        return;
    }
    work(Work::Matches, 1);
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

/// Scans, then sends the assembled scratch record: header plus `captured` bytes, nothing more.
#[inline(always)]
pub(crate) fn send_output(s: &mut OutputScratch, captured: usize) {
    scan(s, captured);
    ring_output(s, captured);
}

/// Sends the assembled scratch record as it is (no scan: a record with nothing captured must
/// not reach the matcher's `bpf_loop`, whose callbacks the verifier then finds unreachable and
/// refuses: "No program to jit").
#[inline(always)]
fn ring_output(s: &mut OutputScratch, captured: usize) {
    let captured = captured & (2 * MAX_CAPTURE - 1);
    work(Work::OutputRecords, 1);
    work(Work::CapturedBytes, captured as u64);
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
pub(crate) fn scratch(sys: u16, fd: u64, count: u64) -> Option<&'static mut OutputScratch> {
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
pub(crate) fn capture_buf(sys: u16, fd: u64, buf: u64, count: u64) {
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
pub(crate) struct Iovec {
    base: u64,
    len: u64,
}

/// writev(2)-shaped calls: up to MAX_IOV iovecs, concatenated up to the capture limit.
#[inline(always)]
pub(crate) fn capture_iov(sys: u16, fd: u64, iov: u64, iovcnt: u64) {
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

/// A write whose bytes the kernel copies from another file or a pipe (or, for a shared writable
/// mapping, that stores into memory): nothing to capture, so the record says where and how much
/// and axiomd reads the file itself.
#[inline(always)]
fn uncaptured(sys: u16, fd: u64, count: u64) {
    if (fd as i64) < 0 {
        return;
    }
    let Some(s) = scratch(sys, fd, count) else {
        return;
    };
    s.ev.hdr.flags |= FLAG_TRUNCATED;
    ring_output(s, 0);
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendfile64")]
pub fn enter_sendfile64(ctx: TracePointContext) -> u32 {
    // (out_fd, in_fd, offset, count)
    uncaptured(SYS_SENDFILE, arg(&ctx, 0), arg(&ctx, 3));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_copy_file_range")]
pub fn enter_copy_file_range(ctx: TracePointContext) -> u32 {
    // (fd_in, off_in, fd_out, off_out, len, flags)
    uncaptured(SYS_COPY_FILE_RANGE, arg(&ctx, 2), arg(&ctx, 4));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_splice")]
pub fn enter_splice(ctx: TracePointContext) -> u32 {
    // (fd_in, off_in, fd_out, off_out, len, flags)
    uncaptured(SYS_SPLICE, arg(&ctx, 2), arg(&ctx, 4));
    0
}

const PROT_WRITE: u64 = 0x2;
const MAP_SHARED: u64 = 0x1;

#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn enter_mmap(ctx: TracePointContext) -> u32 {
    // (addr, len, prot, flags, fd, off): only a shared writable mapping of a file writes it.
    if arg(&ctx, 2) & PROT_WRITE != 0 && arg(&ctx, 3) & MAP_SHARED != 0 {
        uncaptured(SYS_MMAP, arg(&ctx, 4), arg(&ctx, 1));
    }
    0
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
