//! Zero-copy decoding of ring records into the event model.
//!
//! Records are viewed in place through the `#[repr(C)]` layouts of `axiom-common`; the only copies
//! are the strings that leave the daemon. A record that is too short for its kind, misaligned or
//! of an unknown kind is an error the caller counts and skips: never a panic.
use axiom_common::{
    ConnectEvent, EventHeader, ExecEvent, ExitEvent, FILE_CREAT, FILE_LINK, FILE_MKDIR, FILE_OPEN,
    FILE_RENAME, FILE_RMDIR, FILE_SYMLINK, FILE_UNLINK, FLAG_STATUS_KNOWN, FLAG_TRUNCATED,
    FileEvent, ForkEvent, KIND_CONNECT, KIND_EXEC, KIND_EXIT, KIND_FILE, KIND_FORK, KIND_OUTPUT,
    OutputEvent, SYS_COPY_FILE_RANGE, SYS_MMAP, SYS_PWRITE64, SYS_PWRITEV, SYS_PWRITEV2,
    SYS_SENDFILE, SYS_SENDMSG, SYS_SENDTO, SYS_SPLICE, SYS_WRITE, SYS_WRITEV,
};
use axiom_proto::wire::{Body, DeniedOp, Family, FileOp, WriteCall};
use zerocopy::FromBytes;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("record of {len} bytes is shorter than its {what} layout")]
    Short { what: &'static str, len: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
}

impl DecodeError {
    /// Counter name for the status/metrics.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            DecodeError::Short { .. } => "malformed_short",
            DecodeError::UnknownKind(_) => "malformed_kind",
        }
    }
}

/// A decoded record: the header (copied, 56 bytes), the body, and whether it was truncated.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) hdr: EventHeader,
    pub(crate) body: Body,
    pub(crate) truncated: bool,
    /// A file record's directory fds (AT_FDCWD for the cwd), its paths are relative to them.
    pub(crate) dirfds: (i32, i32),
}

fn view<'a, T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
    buf: &'a [u8],
    what: &'static str,
) -> Result<(&'a T, &'a [u8]), DecodeError> {
    // Ring records are 8-byte aligned; an unaligned or short buffer is malformed either way.
    T::ref_from_prefix(buf).map_err(|_| DecodeError::Short {
        what,
        len: buf.len(),
    })
}

/// Bytes up to the first NUL, as (lossy) UTF-8.
pub(crate) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Whether captured bytes are not text: a TLS record (content type 20–23, version 3.x), or
/// invalid UTF-8 / control bytes (other than tab, newlines, escape, backspace, bell) in more
/// than one byte of 16 of the first 512 (a write cut at the capture limit may end mid-character).
pub(crate) fn is_binary(b: &[u8]) -> bool {
    if b.len() >= 3 && (20..=23).contains(&b[0]) && b[1] == 3 && b[2] <= 4 {
        return true;
    }
    let head = &b[..b.len().min(512)];
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => return true,
    };
    let control = head[..valid]
        .iter()
        .filter(|&&c| c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r' | 0x1b | 0x08 | 0x07))
        .count();
    control * 16 > head.len()
}

/// An opened file's path as the kernel names it: its dentries' names up the mount tree.
#[derive(Debug, PartialEq, Clone)]
pub(crate) struct KernelPath {
    /// The file's own name first.
    names: Vec<String>,
    /// The names reach the root (else they are the path's end only).
    whole: bool,
}

impl KernelPath {
    fn from_record(e: &axiom_common::FdOpenEvent) -> Option<KernelPath> {
        use axiom_common::{KNAME_LEN, KNAMES, KPATH_TAIL, KPATH_WHOLE};
        if e.kstate != KPATH_WHOLE && e.kstate != KPATH_TAIL {
            return None;
        }
        let depth = usize::from(e.kdepth).min(KNAMES);
        Some(KernelPath {
            names: e.knames.chunks(KNAME_LEN).take(depth).map(cstr).collect(),
            whole: e.kstate == KPATH_WHOLE,
        })
    }

    /// The path when the kernel gave all of it (no name cut at the slot's length).
    pub(crate) fn whole(&self) -> Option<String> {
        let cut = self
            .names
            .iter()
            .any(|n| n.len() >= axiom_common::KNAME_LEN - 1);
        (self.whole && !cut).then(|| self.joined("/"))
    }

    /// What the kernel said, to name a file whose path it gave only in part: its end, after
    /// `…/`.
    pub(crate) fn partial(&self) -> String {
        self.joined(if self.whole { "/" } else { "\u{2026}/" })
    }

    fn joined(&self, root: &str) -> String {
        let mut p = root.to_string();
        for (i, n) in self.names.iter().rev().enumerate() {
            if i > 0 {
                p.push('/');
            }
            p.push_str(n);
        }
        p
    }

    /// Whether the absolute `path` names the file these names do, as far as they go (a name
    /// cut at the slot's length matches by its start).
    pub(crate) fn ends(&self, path: &str) -> bool {
        let mut parts = path.split('/').filter(|p| !p.is_empty()).rev();
        for n in &self.names {
            let Some(p) = parts.next() else {
                return false;
            };
            let cut = n.len() >= axiom_common::KNAME_LEN - 1;
            if p != n && !(cut && p.starts_with(n.as_str())) {
                return false;
            }
        }
        !self.whole || parts.next().is_none()
    }
}

/// A change to a tracked process's fd table (the kernel's `KIND_FD`/`KIND_FD_OPEN` records).
#[derive(Debug, PartialEq)]
pub(crate) enum FdChange {
    /// `fd` is `path` (relative to `dirfd`), opened for writing; `kernel`, the file the kernel
    /// opened, named from its dentries (`None` for a chdir, or without BTF).
    Open {
        fd: i32,
        dirfd: i32,
        path: String,
        cloexec: bool,
        kernel: Option<KernelPath>,
    },
    /// `fd` is now what `oldfd` is.
    Dup {
        fd: i32,
        oldfd: i32,
        cloexec: bool,
    },
    Close {
        fd: i32,
    },
    /// `first..=last` closed, or (`cloexec_only`) marked close-on-exec.
    CloseRange {
        first: u32,
        last: u32,
        cloexec_only: bool,
    },
    /// `child` starts with a copy of the table.
    Fork {
        child: u32,
    },
    /// Close-on-exec fds are gone.
    Exec,
    /// The thread that sent it has a current directory of its own from now on.
    OwnFs,
    /// New fds that are pipes (`socket`: sockets); `second` is -1 for a single one.
    Pair {
        first: i32,
        second: i32,
        socket: bool,
        cloexec: bool,
    },
}

const O_CLOEXEC: u32 = 0o2000000;
const CLOSE_RANGE_CLOEXEC: u32 = 4;

/// An fd-table record: (tgid, tid, change), `None` for any other kind of record.
pub(crate) fn fd_change(buf: &[u8]) -> Result<Option<(u32, u32, FdChange)>, DecodeError> {
    let (hdr, _) = view::<EventHeader>(buf, "header")?;
    let change = match hdr.kind {
        axiom_common::KIND_FD_OPEN => {
            let (e, _) = view::<axiom_common::FdOpenEvent>(buf, "fd open")?;
            FdChange::Open {
                fd: e.fd,
                dirfd: e.dirfd,
                path: cstr(&e.path),
                cloexec: e.flags & O_CLOEXEC != 0,
                kernel: KernelPath::from_record(e),
            }
        }
        axiom_common::KIND_FD => {
            let (e, _) = view::<axiom_common::FdEvent>(buf, "fd")?;
            match e.op {
                axiom_common::FD_DUP => FdChange::Dup {
                    fd: e.fd,
                    oldfd: e.oldfd,
                    cloexec: e.flags & O_CLOEXEC != 0,
                },
                axiom_common::FD_CLOSE => FdChange::Close { fd: e.fd },
                axiom_common::FD_CLOSE_RANGE => FdChange::CloseRange {
                    first: e.fd as u32,
                    last: e.oldfd as u32,
                    cloexec_only: e.flags & CLOSE_RANGE_CLOEXEC != 0,
                },
                axiom_common::FD_FORK => FdChange::Fork { child: e.child },
                axiom_common::FD_EXEC => FdChange::Exec,
                axiom_common::FD_OWN_FS => FdChange::OwnFs,
                op @ (axiom_common::FD_PIPE | axiom_common::FD_SOCKET) => FdChange::Pair {
                    first: e.fd,
                    second: e.oldfd,
                    socket: op == axiom_common::FD_SOCKET,
                    cloexec: e.flags & O_CLOEXEC != 0,
                },
                k => return Err(DecodeError::UnknownKind(k)),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some((hdr.tgid, hdr.pid, change)))
}

/// The "current directory" dirfd of the *at syscalls.
pub(crate) const AT_FDCWD: i32 = -100;

pub(crate) fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
    let (hdr, _) = view::<EventHeader>(buf, "header")?;
    let truncated = hdr.flags & FLAG_TRUNCATED != 0;
    let mut dirfds = (AT_FDCWD, AT_FDCWD);
    let body = match hdr.kind {
        KIND_FORK => {
            let (e, _) = view::<ForkEvent>(buf, "fork")?;
            Body::Fork {
                child_pid: e.child_pid,
            }
        }
        KIND_EXEC => {
            let (e, _) = view::<ExecEvent>(buf, "exec")?;
            let n = (e.argv_len as usize).min(e.argv.len());
            let argv = e.argv[..n]
                .split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            Body::Exec {
                filename: cstr(&e.filename),
                argv,
                cwd: None,
                old_pid: e.old_pid,
                stdin: None,
            }
        }
        KIND_EXIT => {
            let (e, _) = view::<ExitEvent>(buf, "exit")?;
            let (code, signal) = if hdr.flags & FLAG_STATUS_KNOWN == 0 {
                (None, None)
            } else if e.status & 0x7f == 0 {
                (Some(((e.status >> 8) & 0xff) as i32), None)
            } else {
                (None, Some((e.status & 0x7f) as i32))
            };
            Body::Exit { code, signal }
        }
        KIND_OUTPUT => {
            let (e, rest) = view::<OutputEvent>(buf, "output")?;
            let n = e.captured as usize;
            let data = rest.get(..n).ok_or(DecodeError::Short {
                what: "output payload",
                len: buf.len(),
            })?;
            Body::Output {
                fd: e.fd,
                syscall: write_call(e.syscall),
                read_back: false,
                count: e.count,
                target: None,
                // Bytes that are not text (TLS records, binary IPC) are no text for a rule or a
                // reader: the event keeps its size (`captured`), not the bytes.
                text: if is_binary(data) {
                    String::new()
                } else {
                    String::from_utf8_lossy(data).into_owned()
                },
                captured: e.captured,
                redacted: Vec::new(),
            }
        }
        KIND_FILE => {
            let (e, _) = view::<FileEvent>(buf, "file")?;
            dirfds = (e.dirfd, e.dirfd2);
            let path2 = cstr(&e.path2);
            Body::File {
                op: file_op(e.op),
                path: cstr(&e.path),
                path2: (!path2.is_empty()).then_some(path2),
                flags: e.flags,
                mode: e.mode,
            }
        }
        axiom_common::KIND_MATCH => {
            let (e, _) = view::<axiom_common::MatchEvent>(buf, "match")?;
            let listed = (e.hits as usize).min(e.states.len());
            Body::KernelMatch {
                fd: e.fd,
                target: None,
                table: e.table,
                deny: e.deny != 0,
                count: e.count,
                hits: e.hits,
                offset: e.offset,
                states: e.states[..listed].to_vec(),
            }
        }
        KIND_CONNECT => {
            let (e, _) = view::<ConnectEvent>(buf, "connect")?;
            let (family, address, port) = sockaddr(&e.addr, e.addrlen as usize);
            if e.hdr.flags & axiom_common::FLAG_DENIED != 0 && e.addrlen == 2 {
                // The socket itself refused (an ICMP or raw socket under a connect policy):
                // only its family is known.
                Body::Denied {
                    op: DeniedOp::Socket,
                    target: format!("{family} icmp or raw socket"),
                    by: "cgroup socket policy".into(),
                    count: 1,
                }
            } else if e.hdr.flags & axiom_common::FLAG_DENIED != 0 && family == Family::Unix {
                Body::Denied {
                    op: DeniedOp::Connect,
                    target: format!("unix {address}"),
                    by: "cgroup unix socket policy".into(),
                    count: 1,
                }
            } else if e.hdr.flags & axiom_common::FLAG_DENIED != 0 {
                Body::Denied {
                    op: DeniedOp::Connect,
                    target: if family == Family::Inet6 {
                        format!("[{address}]:{port}")
                    } else {
                        format!("{address}:{port}")
                    },
                    by: "cgroup connect allowlist".into(),
                    count: 1,
                }
            } else {
                Body::Connect {
                    family,
                    address,
                    port,
                }
            }
        }
        axiom_common::KIND_FILE_REFUSED => {
            let (e, _) = view::<axiom_common::FileRefusedEvent>(buf, "file refusal")?;
            // The pipeline fills in the operation and path from the thread's file record.
            Body::Denied {
                op: DeniedOp::File,
                target: String::new(),
                by: refused_by(e.errno).into(),
                count: 1,
            }
        }
        k => return Err(DecodeError::UnknownKind(k)),
    };
    Ok(Decoded {
        hdr: *hdr,
        body,
        truncated,
        dirfds,
    })
}

pub(crate) fn write_call(id: u16) -> WriteCall {
    match id {
        SYS_WRITE => WriteCall::Write,
        SYS_PWRITE64 => WriteCall::Pwrite64,
        SYS_WRITEV => WriteCall::Writev,
        SYS_PWRITEV => WriteCall::Pwritev,
        SYS_PWRITEV2 => WriteCall::Pwritev2,
        SYS_SENDTO => WriteCall::Sendto,
        SYS_SENDMSG => WriteCall::Sendmsg,
        SYS_SENDFILE => WriteCall::Sendfile,
        SYS_COPY_FILE_RANGE => WriteCall::CopyFileRange,
        SYS_SPLICE => WriteCall::Splice,
        SYS_MMAP => WriteCall::Mmap,
        _ => WriteCall::Unknown,
    }
}

pub(crate) fn file_op(op: u16) -> FileOp {
    match op {
        FILE_OPEN => FileOp::Open,
        FILE_CREAT => FileOp::Creat,
        FILE_RENAME => FileOp::Rename,
        FILE_UNLINK => FileOp::Unlink,
        FILE_MKDIR => FileOp::Mkdir,
        FILE_RMDIR => FileOp::Rmdir,
        FILE_LINK => FileOp::Link,
        FILE_SYMLINK => FileOp::Symlink,
        _ => FileOp::Unknown,
    }
}

/// What an errno of a refused file operation says about who refused it.
pub(crate) fn refused_by(errno: i32) -> &'static str {
    match errno {
        30 => "read-only mount (the agent's view: outside its writable paths, or protected)",
        18 => "landlock (link or rename across the sandbox's boundary)",
        13 => "landlock or file permissions (EACCES)",
        1 => "not permitted (EPERM)",
        _ => "kernel",
    }
}

/// Decodes a raw `struct sockaddr` (as the process passed it) into family, address and port.
pub(crate) fn sockaddr(a: &[u8], addrlen: usize) -> (Family, String, u16) {
    let fam = u16::from_le_bytes([a[0], a[1]]);
    let port = u16::from_be_bytes([a[2], a[3]]);
    match fam {
        2 => {
            let ip = std::net::Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            (Family::Inet, ip.to_string(), port)
        }
        10 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&a[8..24]);
            (Family::Inet6, std::net::Ipv6Addr::from(b).to_string(), port)
        }
        1 => {
            let end = addrlen.clamp(2, a.len());
            let path = &a[2..end];
            let s = if path.first() == Some(&0) {
                format!("@{}", cstr(&path[1..]))
            } else {
                cstr(path)
            };
            (Family::Unix, s, 0)
        }
        0 => (Family::Unspec, String::new(), 0),
        _ => (Family::Other, String::new(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axiom_common::{COMM_LEN, SOCKADDR_LEN};

    #[repr(C, align(8))]
    struct Aligned<const N: usize>([u8; N]);

    #[test]
    fn a_kernel_path_is_whole_or_an_end_that_must_match() {
        let k = |names: &[&str], whole| KernelPath {
            names: names.iter().map(|n| n.to_string()).collect(),
            whole,
        };
        let p = k(&["app.py", "ws", "home"], true);
        assert_eq!(p.whole().as_deref(), Some("/home/ws/app.py"));
        assert!(p.ends("/home/ws/app.py"));
        assert!(!p.ends("/home/ws/.cache/up/app.py"));
        assert!(!p.ends("/x/home/ws/app.py"));
        let tail = k(&["app.py", "ws"], false);
        assert_eq!(tail.whole(), None);
        assert_eq!(tail.partial(), "\u{2026}/ws/app.py");
        assert!(tail.ends("/deep/down/ws/app.py"));
        assert!(!tail.ends("/deep/down/.cache/app.py"));
        let long = "n".repeat(axiom_common::KNAME_LEN - 1);
        let cut = k(&[&long, "ws"], true);
        assert_eq!(cut.whole(), None);
        assert!(cut.ends(&format!("/ws/{long}-and-more")));
        assert!(!cut.ends("/ws/other"));
        assert_eq!(k(&[], true).whole().as_deref(), Some("/"));
    }

    fn hdr(kind: u16) -> EventHeader {
        EventHeader {
            kind,
            flags: 0,
            tgid: 10,
            pid: 11,
            uid: 1000,
            ts_ns: 5,
            cgroup_id: 7,
            agent: 3,
            comm: [b'x'; COMM_LEN],
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a repr(C) value as bytes.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
    }

    fn aligned(v: &[u8]) -> Box<Aligned<4096>> {
        let mut a = Box::new(Aligned([0u8; 4096]));
        a.0[..v.len()].copy_from_slice(v);
        a
    }

    /// Decodes a record laid out as `v`, from an 8-aligned buffer like a ring's.
    fn decode_value<T>(v: &T) -> Decoded {
        let b = bytes_of(v);
        let a = aligned(&b);
        decode(&a.0[..b.len()]).unwrap()
    }

    #[test]
    fn tls_records_and_binary_ipc_are_not_text() {
        assert!(is_binary(&[0x17, 0x03, 0x03, 0x01, 0x20, 0xde, 0xad]));
        assert!(is_binary(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01]));
        assert!(is_binary(
            b"\x00\x00\x00\x10\x01\x02\x03\x04abcdefgh\xff\xfe"
        ));
        assert!(!is_binary(
            "● Let me plan this.\r\n\x1b[1mdone\x1b[0m".as_bytes()
        ));
        assert!(!is_binary(b"{\"model\":\"x\",\"messages\":[]}\n"));
        // Cut at the capture limit in the middle of a character: still text.
        assert!(!is_binary(&"é".repeat(10).as_bytes()[..19]));
    }

    #[test]
    fn short_and_unknown_records_are_errors_not_panics() {
        let a = aligned(&[1, 0, 0]);
        assert!(matches!(decode(&a.0[..3]), Err(DecodeError::Short { .. })));
        let h = bytes_of(&hdr(99));
        let a = aligned(&h);
        assert_eq!(
            decode(&a.0[..h.len()]).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
        // A fork header without its body is short.
        let h = bytes_of(&hdr(KIND_FORK));
        let a = aligned(&h);
        assert!(matches!(
            decode(&a.0[..h.len()]),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn output_payload_is_bounded_by_the_record() {
        let ev = OutputEvent {
            hdr: hdr(KIND_OUTPUT),
            fd: 1,
            syscall: SYS_WRITE,
            _pad: 0,
            count: 5,
            captured: 5,
            _pad2: 0,
        };
        let mut v = bytes_of(&ev);
        v.extend_from_slice(b"hello");
        let a = aligned(&v);
        let d = decode(&a.0[..v.len()]).unwrap();
        assert!(matches!(d.body, Body::Output { ref text, .. } if text == "hello"));
        // Claims more captured bytes than the record holds: malformed.
        assert!(matches!(
            decode(&a.0[..v.len() - 2]),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn exec_argv_and_exit_status() {
        let mut e = ExecEvent {
            hdr: hdr(KIND_EXEC),
            old_pid: 11,
            argc: 3,
            argv_len: 0,
            filename: [0; axiom_common::PATH_LEN],
            argv: [0; axiom_common::ARGV_LEN],
        };
        e.filename[..7].copy_from_slice(b"/bin/sh");
        let args = b"sh\0-c\0echo hi\0";
        e.argv[..args.len()].copy_from_slice(args);
        e.argv_len = args.len() as u16;
        match decode_value(&e).body {
            Body::Exec { filename, argv, .. } => {
                assert_eq!(filename, "/bin/sh");
                assert_eq!(argv, ["sh", "-c", "echo hi"]);
            }
            b => panic!("{b:?}"),
        }
        let mut x = ExitEvent {
            hdr: hdr(KIND_EXIT),
            status: 7 << 8,
            _pad: 0,
        };
        x.hdr.flags = FLAG_STATUS_KNOWN;
        assert_eq!(
            decode_value(&x).body,
            Body::Exit {
                code: Some(7),
                signal: None
            }
        );
        x.status = 9;
        assert_eq!(
            decode_value(&x).body,
            Body::Exit {
                code: None,
                signal: Some(9)
            }
        );
    }

    #[test]
    fn sockaddr_families() {
        let mut a = [0u8; SOCKADDR_LEN];
        a[..2].copy_from_slice(&2u16.to_le_bytes());
        a[2..4].copy_from_slice(&8080u16.to_be_bytes());
        a[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(sockaddr(&a, 16), (Family::Inet, "127.0.0.1".into(), 8080));
        let mut u = [0u8; SOCKADDR_LEN];
        u[..2].copy_from_slice(&1u16.to_le_bytes());
        u[2..11].copy_from_slice(b"/tmp/sock");
        assert_eq!(sockaddr(&u, 11), (Family::Unix, "/tmp/sock".into(), 0));
    }
}
