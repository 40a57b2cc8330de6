//! Record layouts shared by Axiom's kernel programs and `axiomd`.
//!
//! Every type here is `#[repr(C)]`, has no padding the compiler could fill with garbage, and is read
//! by userspace straight out of the ring buffer (zero-copy, via `zerocopy` with the `user` feature).
//! A change to any layout changes the object hash, so `axiomd` reloads rather than reusing pins that
//! were made for the old layout.
//!
//! Only the kernel ABI lives here. What userspace alone shares is in the crates beside it:
//! `axiom-proto` (the socket protocol, confinement, agent profiles, host checks), `axiom-rules`
//! (rule files, the matcher, the DFA this crate's `Dfa` is filled from) and `axiom-sandbox`
//! (wasmtime).
#![cfg_attr(not(feature = "user"), no_std)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

#[cfg(feature = "user")]
use zerocopy::{FromBytes, Immutable, KnownLayout};

/// Hard upper bound of bytes captured from one output syscall. The runtime limit
/// (`CONFIG[CFG_CAPTURE_BYTES]`) is clamped to it. A power of two, so the kernel side can bound
/// lengths with a mask the verifier understands.
pub const MAX_CAPTURE: usize = 8192;
/// Default bytes captured per output syscall.
pub const DEFAULT_CAPTURE: u64 = 4096;
/// Bytes kept of each path argument.
pub const PATH_LEN: usize = 256;
/// Bytes kept of an exec's argv, NUL-separated.
pub const ARGV_LEN: usize = 1024;
/// Arguments read from an exec's argv (the rest is counted in `ExecEvent::argc` only when read).
pub const MAX_ARGS: usize = 24;
/// iovec entries read from writev/sendmsg.
pub const MAX_IOV: usize = 8;
/// Bytes kept of a connect() socket address (covers sockaddr_un's 110 bytes).
pub const SOCKADDR_LEN: usize = 112;
pub const COMM_LEN: usize = 16;

/// Indices of the `CONFIG` array map (u64 values).
pub const CFG_CAPTURE_BYTES: u32 = 0;
/// FNV-1a hash of the loaded object, written by axiomd after attaching: a restart reuses the pins
/// only when it matches its own object.
pub const CFG_OBJECT_HASH: u32 = 1;
/// Output records a CPU sends between two wakeups of the reader. The others are written without
/// a wakeup and axiomd drains the ring on a short timer: one wakeup per batch, not per write (a
/// wakeup is an IPI, and an IPI on a VM costs microseconds).
pub const CFG_OUTPUT_WAKEUP_RECORDS: u32 = 2;
pub const DEFAULT_OUTPUT_WAKEUP_RECORDS: u64 = 512;
/// Which kernel matcher table is live: 0 none (no literals to scan for), n: `DFA[n - 1]`.
/// Two tables, so a reload writes the idle one and then flips this index: a program never reads a
/// half-written automaton.
pub const CFG_DFA_ACTIVE: u32 = 3;
/// Byte offsets of `task_struct.mm`, `mm_struct.arg_start` and `mm_struct.arg_end` in the running
/// kernel (from its BTF; 0: unknown): the exec record takes argv from the new image's stack,
/// where the kernel copied it, rather than the stash read from the caller's memory at entry.
pub const CFG_TASK_MM: u32 = 4;
pub const CFG_MM_ARG_START: u32 = 5;
pub const CFG_MM_ARG_END: u32 = 6;
/// Byte offsets the open record walks through to name the file the kernel opened, from the
/// task's fd table to the dentries and mounts above it (from the kernel's BTF). Read only when
/// `CFG_KPATH` is 1 (some are legitimately 0: `vfsmount.mnt_root`).
pub const CFG_TASK_FILES: u32 = 7;
pub const CFG_FILES_FDT: u32 = 8;
pub const CFG_FDT_FD: u32 = 9;
pub const CFG_FILE_PATH: u32 = 10;
pub const CFG_DENTRY_PARENT: u32 = 11;
pub const CFG_DENTRY_NAME: u32 = 12;
pub const CFG_MOUNT_MNT: u32 = 13;
pub const CFG_MOUNT_PARENT: u32 = 14;
pub const CFG_MOUNT_MOUNTPOINT: u32 = 15;
pub const CFG_VFSMOUNT_ROOT: u32 = 16;
/// 1 when the offsets above are set.
pub const CFG_KPATH: u32 = 17;
pub const CFG_ENTRIES: u32 = 32;

/// The opened file's path as the kernel holds it: up to `KNAMES` names from the file up
/// (the file's own first), each in a slot of `KNAME_LEN` bytes, NUL-terminated (a longer name
/// is cut at `KNAME_LEN - 1`).
pub const KNAMES: usize = 16;
pub const KNAME_LEN: usize = 64;
/// `FdOpenEvent::kstate`: no kernel path (offsets unknown, a read failed, a chdir).
pub const KPATH_NONE: u16 = 0;
/// The names reach the root of the process's mount tree: the path is whole.
pub const KPATH_WHOLE: u16 = 1;
/// The names stop `KNAMES` levels up: the path's end only.
pub const KPATH_TAIL: u16 = 2;

/// Kernel matcher: the literal parts of every active rule, compiled by axiomd into one
/// Aho–Corasick DFA over byte classes (ASCII case folded), scanned over each captured buffer.
/// At most 16,384 states (about as many literal bytes: some 2,000 literals of 8 bytes); a table
/// is 4 MiB and the kernel holds two.
pub const DFA_MAX_STATES: usize = 16384;
/// Byte classes (class 0: every byte no pattern uses).
pub const DFA_CLASSES: usize = 64;
/// Bytes of one state's row of `Dfa::next` (a u32 per class).
pub const DFA_ROW_BYTES: usize = DFA_CLASSES * 4;
/// Bytes of a captured buffer the kernel scans (the rest is left to userspace).
pub const SCAN_MAX: usize = 4096;
/// `Dfa::accept` bits.
pub const ACCEPT_MATCH: u8 = 1;
/// A pattern of a `deny` rule ends here: the writer is killed before its bytes land.
pub const ACCEPT_DENY: u8 = 2;
/// Bits of a `Dfa::next` entry besides the target row: the target accepts (a literal ends
/// there), and one of those literals is a deny rule's.
pub const NEXT_ACCEPT: u32 = 1 << 31;
pub const NEXT_DENY: u32 = 1 << 30;
/// The target row's byte offset in `Dfa::next` (state × `DFA_ROW_BYTES`): the kernel adds the
/// byte's class offset and loads, with no multiply or shift on the chain of dependent loads that
/// bounds a scan's speed.
pub const NEXT_ROW: u32 = ((DFA_MAX_STATES * DFA_ROW_BYTES - 1) & !(DFA_ROW_BYTES - 1)) as u32;
/// Accepting states reported per match record.
pub const MATCH_STATES: usize = 4;

/// One automaton. A byte `b` in state `s` goes to the entry at byte offset
/// `s × DFA_ROW_BYTES + classes[b]` of `next`; the entry holds the target's row offset and the
/// NEXT_* bits, so each byte costs the kernel one load of `classes` (independent of the state)
/// and one load of `next`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Dfa {
    /// Each byte's class, as its byte offset within a row (class × 4).
    pub classes: [u8; 256],
    /// The longest literal's length: a scan may start that many bytes before a point from the
    /// root and be in the right state there (the kernel scans two halves of a buffer at once).
    pub depth: u16,
    pub accept: [u8; DFA_MAX_STATES],
    pub next: [u32; DFA_MAX_STATES * DFA_CLASSES],
}

impl Dfa {
    /// Byte offset of `next` within the table (the kernel loads at a constant offset from it).
    pub const NEXT_OFFSET: usize = core::mem::offset_of!(Dfa, next);
}

/// The indices of a per-CPU counter map: the enum, `ALL` in index order, the count, and each
/// counter's name as status shows it.
macro_rules! counters {
    (
        $(#[$m:meta])*
        pub enum $name:ident, $count:ident {
            $($(#[$vm:meta])* $var:ident = $idx:literal => $text:literal,)*
        }
    ) => {
        $(#[$m])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vm])* $var = $idx,)*
        }
        pub const $count: u32 = [$($idx),*].len() as u32;

        impl $name {
            pub const ALL: [$name; $count as usize] = [$($name::$var),*];

            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$var => $text,)*
                }
            }
        }
    };
}

counters! {
    /// Causes of lost records, the indices of the per-CPU `LOST` map.
    pub enum LostCause, LOST_CAUSES {
        /// The lifecycle/file/network ring was full.
        RingFullEvents = 0 => "ring_full_events",
        /// The bulk output ring was full.
        RingFullOutput = 1 => "ring_full_output",
        /// A new process could not be tracked: its pid is beyond the tracking array (pid_max
        /// raised).
        TrackFull = 2 => "track_map_full",
        /// The exec argument stash was full: an exec was reported without argv.
        ExecStashFull = 3 => "exec_stash_full",
        /// User memory could not be read (the record was still sent, with `FLAG_TRUNCATED`).
        ReadFault = 4 => "read_fault",
        /// The kernel matcher's ring was full: a match was not reported (a deny still acted).
        RingFullMatches = 5 => "ring_full_matches",
    }
}

counters! {
    /// What the kernel programs did, the indices of the per-CPU `WORK` map. A benchmark checks
    /// in the same run that the work it timed happened (records captured, bytes the matcher
    /// scanned), and status shows them.
    pub enum Work, WORK_COUNTERS {
        /// Output records sent to the ring (or lost to a full one): captured writes.
        OutputRecords = 0 => "output_records",
        /// Bytes captured in them.
        CapturedBytes = 1 => "captured_bytes",
        /// Bytes the kernel matcher scanned.
        ScannedBytes = 2 => "scanned_bytes",
        /// Scans that found a literal (each one a match record, or a loss counted as such).
        Matches = 3 => "matches",
    }
}

/// Record kinds, the first field of every record.
pub const KIND_FORK: u16 = 1;
pub const KIND_EXEC: u16 = 2;
pub const KIND_EXIT: u16 = 3;
pub const KIND_OUTPUT: u16 = 4;
pub const KIND_FILE: u16 = 5;
pub const KIND_CONNECT: u16 = 6;
pub const KIND_MATCH: u16 = 7;
/// A file operation of a tracked process failed for lack of permission (its `KIND_FILE` record
/// came just before, from the same thread).
pub const KIND_FILE_REFUSED: u16 = 8;
/// The fd table of a tracked process changed (dup, close, fork, exec): sent on the OUTPUT ring,
/// in order with the writes, so what an fd points at is known at the time of each write.
/// Internal to axiomd's sensor; never an event of its own.
pub const KIND_FD: u16 = 9;
/// A tracked process opened a file for writing: the fd and the path, on the OUTPUT ring.
pub const KIND_FD_OPEN: u16 = 10;

/// `FdEvent::op`.
pub const FD_DUP: u16 = 1;
pub const FD_CLOSE: u16 = 2;
pub const FD_CLOSE_RANGE: u16 = 3;
pub const FD_FORK: u16 = 4;
pub const FD_EXEC: u16 = 5;
/// `fd` and `oldfd` are the two ends of a new pipe (`flags`: O_CLOEXEC).
pub const FD_PIPE: u16 = 6;
/// `fd` (and `oldfd` unless -1: a socketpair) are new sockets.
pub const FD_SOCKET: u16 = 7;
/// The thread (the header's `pid`) has a current directory of its own from now on
/// (`unshare(CLONE_FS)`): its chdirs move it alone, and its relative paths resolve against it.
pub const FD_OWN_FS: u16 = 8;

/// Header flag: some user memory could not be read; the payload is partial.
pub const FLAG_TRUNCATED: u16 = 1;
/// Exit flag: the exit status was observed (exit_group or a fatal signal).
pub const FLAG_STATUS_KNOWN: u16 = 2;
/// Exec flag: argv was not available (stash miss).
pub const FLAG_NO_ARGV: u16 = 4;
/// Header flag: uid, cgroup_id and comm were not filled (output records); userspace supplies them.
pub const FLAG_SLIM: u16 = 8;
/// Connect flag: the agent's connect allowlist refused it (the program returned EPERM).
pub const FLAG_DENIED: u16 = 16;

/// Destinations allowed per agent: the agent id, then the address (IPv4 mapped into IPv6).
/// An LPM key's prefix length counts the agent's 64 bits first, so a lookup never crosses agents.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetKey {
    pub agent: [u8; 8],
    pub addr: [u8; 16],
}

/// Ports allowed for one destination prefix (and every wider prefix that contains it, folded in
/// by axiomd: an LPM lookup returns the longest match only).
pub const NET_PORTS: usize = 16;
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPorts {
    /// Any port.
    pub any: u32,
    pub n: u32,
    pub ports: [u16; NET_PORTS],
}

/// Unix path sockets an agent under a connect policy may still connect or send to (axiomd's own
/// socket, for hooks; any others the config names), the same for every agent. Path sockets have
/// no address an IP allowlist could name, and a user's path sockets lead out of any sandbox
/// (the D-Bus session bus starts unconfined units, docker.sock is root): under a policy every
/// other path is refused. Abstract names are Landlock's (scoped to the agent's domain).
pub const UNIX_ALLOW_ENTRIES: u32 = 4;
/// `sun_path`'s size.
pub const UNIX_PATH_MAX: usize = 108;
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixPath {
    /// Bytes of `path` in use (0: the entry is empty); no NUL counted.
    pub len: u32,
    pub path: [u8; UNIX_PATH_MAX],
}

impl Default for UnixPath {
    fn default() -> Self {
        UnixPath {
            len: 0,
            path: [0; UNIX_PATH_MAX],
        }
    }
}

/// Output syscalls.
pub const SYS_WRITE: u16 = 1;
pub const SYS_PWRITE64: u16 = 2;
pub const SYS_WRITEV: u16 = 3;
pub const SYS_PWRITEV: u16 = 4;
pub const SYS_PWRITEV2: u16 = 5;
pub const SYS_SENDTO: u16 = 6;
pub const SYS_SENDMSG: u16 = 7;
/// Writes whose bytes the kernel copies itself (no user buffer to capture): sent with nothing
/// captured, `FLAG_TRUNCATED`, the destination fd and the length asked for; axiomd reads the
/// file when it is closed (or, for a shared writable mapping, when its process exits).
pub const SYS_SENDFILE: u16 = 8;
pub const SYS_COPY_FILE_RANGE: u16 = 9;
pub const SYS_SPLICE: u16 = 10;
pub const SYS_MMAP: u16 = 11;

/// File operations.
pub const FILE_OPEN: u16 = 1;
pub const FILE_CREAT: u16 = 2;
pub const FILE_RENAME: u16 = 3;
pub const FILE_UNLINK: u16 = 4;
pub const FILE_MKDIR: u16 = 5;
pub const FILE_RMDIR: u16 = 6;
pub const FILE_LINK: u16 = 7;
pub const FILE_SYMLINK: u16 = 8;

/// `AT_FDCWD`, the dirfd value meaning "relative to the cwd".
pub const AT_FDCWD: i32 = -100;

/// What the kernel keeps per tracked process (key: tgid) and per tracked cgroup (key: cgroup id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct Tracked {
    /// Opaque agent id assigned by axiomd, copied into every record and inherited on fork.
    pub agent: u64,
    pub flags: u64,
}

/// Common head of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct EventHeader {
    pub kind: u16,
    pub flags: u16,
    /// Process (thread group) id.
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    pub uid: u32,
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns).
    pub ts_ns: u64,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    pub agent: u64,
    pub comm: [u8; COMM_LEN],
}

/// A new process (not a thread) was created by a tracked process and is now tracked.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct ForkEvent {
    pub hdr: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
    pub clone_flags: u64,
}

/// A tracked process replaced its image.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct ExecEvent {
    pub hdr: EventHeader,
    /// The thread id before exec (a non-leader thread that execs becomes the leader).
    pub old_pid: u32,
    pub argc: u16,
    pub argv_len: u16,
    pub filename: [u8; PATH_LEN],
    /// NUL-separated arguments, `argv_len` bytes.
    pub argv: [u8; ARGV_LEN],
}

/// Scratch/stash layout for an exec's arguments between sys_enter_execve and sched_process_exec.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecArgs {
    pub argc: u16,
    pub argv_len: u16,
    /// Non-zero when argv did not fit (or could not be read): the exec record is flagged truncated.
    pub truncated: u32,
    pub argv: [u8; ARGV_LEN],
}

/// The last thread of a tracked process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct ExitEvent {
    pub hdr: EventHeader,
    /// wait(2)-style status: `code << 8` for exit_group, the signal number for a fatal signal.
    /// Valid when `FLAG_STATUS_KNOWN` is set.
    pub status: u32,
    pub _pad: u32,
}

/// Bytes a tracked process emitted through an output syscall. Followed by `captured` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct OutputEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    pub syscall: u16,
    pub _pad: u16,
    /// Bytes the process asked to write.
    pub count: u64,
    /// Bytes captured right after this struct.
    pub captured: u32,
    pub _pad2: u32,
}

/// A change to a tracked process's fd table (slim header). `FD_DUP`: `fd` is now what `oldfd`
/// is (`flags`: O_CLOEXEC); `FD_CLOSE`: `fd` closed; `FD_CLOSE_RANGE`: `fd..=oldfd as u32`
/// closed (or, with `flags` CLOSE_RANGE_CLOEXEC, marked close-on-exec); `FD_FORK`: `child` starts
/// with a copy of this process's table; `FD_EXEC`: close-on-exec fds are gone.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct FdEvent {
    pub hdr: EventHeader,
    pub op: u16,
    pub _pad: u16,
    pub fd: i32,
    pub oldfd: i32,
    pub flags: u32,
    pub child: u32,
    pub _pad2: u32,
}

/// A tracked process opened `path` (relative to `dirfd`) for writing and got `fd` (slim header);
/// with `fd` = `AT_FDCWD`, it changed its current directory to `path` (chdir). An fchdir is an
/// `FD_DUP` onto `AT_FDCWD`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct FdOpenEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    pub dirfd: i32,
    /// open flags (O_CLOEXEC among them).
    pub flags: u32,
    /// How many of `knames` are set.
    pub kdepth: u16,
    /// `KPATH_*`.
    pub kstate: u16,
    /// The path the caller passed, read from its memory at the exit (a racing thread, or a
    /// symlink changed since, can make it name another file).
    pub path: [u8; PATH_LEN],
    /// The file the kernel opened, named from its dentries (see `KNAMES`).
    pub knames: [u8; KNAMES * KNAME_LEN],
}

/// The kernel matcher reached accepting states in a write (sent on the `MATCHES` ring at once,
/// ahead of the bulk output). Slim header, like output records.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct MatchEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    /// The DFA table (1 or 2, as `CFG_DFA_ACTIVE`) whose states these are.
    pub table: u16,
    /// A deny pattern matched: the writer was sent SIGKILL before the write could land.
    pub deny: u16,
    /// Bytes the process asked to write.
    pub count: u64,
    /// Accepting states reached in this write (the first `MATCH_STATES` are listed).
    pub hits: u32,
    /// Byte offset, in this write, where the first match ends.
    pub offset: u32,
    pub states: [u16; MATCH_STATES],
}

/// Per-CPU scratch where an output record is assembled before `bpf_ringbuf_output`: the ring is
/// only touched for the exact size of the record (reserving MAX_CAPTURE per write and discarding
/// would waste the ring).
#[repr(C)]
pub struct OutputScratch {
    pub ev: OutputEvent,
    /// Twice the bound, so `offset & (MAX-1) + len & (MAX-1)` always stays inside for the verifier.
    pub data: [u8; 2 * MAX_CAPTURE],
}

/// A tracked process created, wrote, renamed, linked or removed a path.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct FileEvent {
    pub hdr: EventHeader,
    pub op: u16,
    pub _pad: u16,
    /// open flags (O_*), or renameat2/unlinkat flags.
    pub flags: u32,
    pub mode: u32,
    pub dirfd: i32,
    pub dirfd2: i32,
    pub _pad2: u32,
    pub path: [u8; PATH_LEN],
    /// Second path: rename/link target, symlink link path.
    pub path2: [u8; PATH_LEN],
}

/// A tracked process called connect().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct ConnectEvent {
    pub hdr: EventHeader,
    pub fd: i32,
    pub addrlen: u32,
    /// The raw `struct sockaddr` as passed by the process (family first, network byte order).
    pub addr: [u8; SOCKADDR_LEN],
}

/// The error of a refused file operation (EACCES, EPERM, EROFS, EXDEV).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "user", derive(FromBytes, Immutable, KnownLayout))]
pub struct FileRefusedEvent {
    pub hdr: EventHeader,
    pub errno: i32,
    pub _pad: u32,
}

/// One attach point: the program's function name and its tracepoint.
pub struct Hook {
    pub program: &'static str,
    pub category: &'static str,
    pub event: &'static str,
}

impl Hook {
    /// Legacy syscalls that newer architectures (arm64, riscv) do not have: their absence is
    /// reported, not fatal, since libc uses the `*at` forms there.
    pub fn optional(&self) -> bool {
        matches!(
            self.event,
            "sys_enter_open"
                | "sys_exit_open"
                | "sys_enter_dup2"
                | "sys_exit_dup2"
                | "sys_enter_pipe"
                | "sys_exit_pipe"
                | "sys_enter_close_range"
                | "sys_exit_creat"
                | "sys_exit_rename"
                | "sys_exit_unlink"
                | "sys_exit_mkdir"
                | "sys_exit_rmdir"
                | "sys_exit_link"
                | "sys_exit_symlink"
                | "sys_enter_creat"
                | "sys_enter_rename"
                | "sys_enter_unlink"
                | "sys_enter_mkdir"
                | "sys_enter_rmdir"
                | "sys_enter_link"
                | "sys_enter_symlink"
        )
    }
}

macro_rules! hooks {
    ($($prog:literal => $cat:literal / $ev:literal),* $(,)?) => {
        /// Every hook, in attach order: the real sensor and the empty baseline object define the
        /// same program names so benchmarks compare like with like.
        pub const HOOKS: &[Hook] = &[$(Hook { program: $prog, category: $cat, event: $ev }),*];
    };
}

hooks! {
    "task_newtask" => "task" / "task_newtask",
    "cgroup_attach" => "cgroup" / "cgroup_attach_task",
    "proc_exec" => "sched" / "sched_process_exec",
    "proc_exit" => "sched" / "sched_process_exit",
    "sig_deliver" => "signal" / "signal_deliver",
    "sig_generate" => "signal" / "signal_generate",
    "exit_group" => "syscalls" / "sys_enter_exit_group",
    "enter_execve" => "syscalls" / "sys_enter_execve",
    "enter_execveat" => "syscalls" / "sys_enter_execveat",
    "enter_write" => "syscalls" / "sys_enter_write",
    "enter_pwrite64" => "syscalls" / "sys_enter_pwrite64",
    "enter_writev" => "syscalls" / "sys_enter_writev",
    "enter_pwritev" => "syscalls" / "sys_enter_pwritev",
    "enter_pwritev2" => "syscalls" / "sys_enter_pwritev2",
    "enter_sendto" => "syscalls" / "sys_enter_sendto",
    "enter_sendmsg" => "syscalls" / "sys_enter_sendmsg",
    "enter_sendfile64" => "syscalls" / "sys_enter_sendfile64",
    "enter_copy_file_range" => "syscalls" / "sys_enter_copy_file_range",
    "enter_splice" => "syscalls" / "sys_enter_splice",
    "enter_mmap" => "syscalls" / "sys_enter_mmap",
    "enter_open" => "syscalls" / "sys_enter_open",
    "enter_openat" => "syscalls" / "sys_enter_openat",
    "enter_openat2" => "syscalls" / "sys_enter_openat2",
    "enter_creat" => "syscalls" / "sys_enter_creat",
    "enter_rename" => "syscalls" / "sys_enter_rename",
    "enter_renameat" => "syscalls" / "sys_enter_renameat",
    "enter_renameat2" => "syscalls" / "sys_enter_renameat2",
    "enter_unlink" => "syscalls" / "sys_enter_unlink",
    "enter_unlinkat" => "syscalls" / "sys_enter_unlinkat",
    "enter_mkdir" => "syscalls" / "sys_enter_mkdir",
    "enter_mkdirat" => "syscalls" / "sys_enter_mkdirat",
    "enter_rmdir" => "syscalls" / "sys_enter_rmdir",
    "enter_link" => "syscalls" / "sys_enter_link",
    "enter_linkat" => "syscalls" / "sys_enter_linkat",
    "enter_symlink" => "syscalls" / "sys_enter_symlink",
    "enter_symlinkat" => "syscalls" / "sys_enter_symlinkat",
    "exit_open" => "syscalls" / "sys_exit_open",
    "exit_openat" => "syscalls" / "sys_exit_openat",
    "exit_openat2" => "syscalls" / "sys_exit_openat2",
    "exit_creat" => "syscalls" / "sys_exit_creat",
    "exit_rename" => "syscalls" / "sys_exit_rename",
    "exit_renameat" => "syscalls" / "sys_exit_renameat",
    "exit_renameat2" => "syscalls" / "sys_exit_renameat2",
    "exit_unlink" => "syscalls" / "sys_exit_unlink",
    "exit_unlinkat" => "syscalls" / "sys_exit_unlinkat",
    "exit_mkdir" => "syscalls" / "sys_exit_mkdir",
    "exit_mkdirat" => "syscalls" / "sys_exit_mkdirat",
    "exit_rmdir" => "syscalls" / "sys_exit_rmdir",
    "exit_link" => "syscalls" / "sys_exit_link",
    "exit_linkat" => "syscalls" / "sys_exit_linkat",
    "exit_symlink" => "syscalls" / "sys_exit_symlink",
    "exit_symlinkat" => "syscalls" / "sys_exit_symlinkat",
    "enter_connect" => "syscalls" / "sys_enter_connect",
    "enter_dup" => "syscalls" / "sys_enter_dup",
    "enter_dup2" => "syscalls" / "sys_enter_dup2",
    "enter_dup3" => "syscalls" / "sys_enter_dup3",
    "enter_fcntl" => "syscalls" / "sys_enter_fcntl",
    "exit_dup" => "syscalls" / "sys_exit_dup",
    "exit_dup2" => "syscalls" / "sys_exit_dup2",
    "exit_dup3" => "syscalls" / "sys_exit_dup3",
    "exit_fcntl" => "syscalls" / "sys_exit_fcntl",
    "enter_chdir" => "syscalls" / "sys_enter_chdir",
    "exit_chdir" => "syscalls" / "sys_exit_chdir",
    "enter_fchdir" => "syscalls" / "sys_enter_fchdir",
    "exit_fchdir" => "syscalls" / "sys_exit_fchdir",
    "enter_unshare" => "syscalls" / "sys_enter_unshare",
    "enter_close" => "syscalls" / "sys_enter_close",
    "enter_close_range" => "syscalls" / "sys_enter_close_range",
    "enter_pipe" => "syscalls" / "sys_enter_pipe",
    "enter_pipe2" => "syscalls" / "sys_enter_pipe2",
    "exit_pipe" => "syscalls" / "sys_exit_pipe",
    "exit_pipe2" => "syscalls" / "sys_exit_pipe2",
    "enter_socketpair" => "syscalls" / "sys_enter_socketpair",
    "exit_socketpair" => "syscalls" / "sys_exit_socketpair",
    "exit_socket" => "syscalls" / "sys_exit_socket",
    "exit_accept" => "syscalls" / "sys_exit_accept",
    "exit_accept4" => "syscalls" / "sys_exit_accept4",
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are repr(C), Copy, and made only of integers and byte arrays.
    unsafe impl aya::Pod for super::Dfa {}
    unsafe impl aya::Pod for super::Tracked {}
    unsafe impl aya::Pod for super::NetKey {}
    unsafe impl aya::Pod for super::NetPorts {}
    unsafe impl aya::Pod for super::UnixPath {}
}
