//! Who is calling, and what they may do.
//!
//! Identity always comes from the kernel (SO_PEERCRED/SO_PEERGROUPS/SO_PEERPIDFD on the control
//! socket) or from the bus daemon (GetConnectionCredentials), never from what a client says.
//! Root and members of the admin group (`axiom` by default) may act on every agent; anyone else
//! only on the processes and agents they own.
//!
//! Whether a caller is inside an agent is decided once per connection, from a pidfd for the
//! process that connected, and kept with the connection: a pid read again per request named a
//! process that may have exited (a child that connects and exits left its parent a connection
//! that looked like the owner's) or been reused.
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) uid: u32,
    /// Root, or a member of the admin group.
    pub(crate) admin: bool,
    /// Where the connecting process was when the connection was placed.
    pub(crate) seat: Seat,
}

/// Where a connection's process sits relative to the agents, decided once when it is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seat {
    /// In no agent: it was alive after its agent was looked up, and in none.
    Outside,
    /// Inside this agent: the agent, not its owner.
    Agent(u64),
    /// It could not be placed (gone before it was looked up, or the look-up failed): it may
    /// have been in an agent, so it gets what every agent may do and nothing an agent may not.
    Unplaced,
}

impl Caller {
    /// axiomd itself (and tests of the agent registry).
    pub(crate) const ROOT: Caller = Caller {
        uid: 0,
        admin: true,
        seat: Seat::Outside,
    };

    /// A caller from its uid and every group it holds (primary and supplementary), not placed
    /// yet: until the transport places it, it is treated as if inside an agent.
    pub(crate) fn new(uid: u32, gids: &[u32], admin_gid: Option<u32>) -> Caller {
        Caller {
            uid,
            admin: uid == 0 || admin_gid.is_some_and(|g| gids.contains(&g)),
            seat: Seat::Unplaced,
        }
    }

    /// The agent the caller is inside, when it was placed in one.
    pub(crate) fn agent(&self) -> Option<u64> {
        match self.seat {
            Seat::Agent(a) => Some(a),
            _ => None,
        }
    }

    /// May this caller watch or steer what `owner` owns?
    pub(crate) fn may_act_for(&self, owner: u32) -> bool {
        self.admin || self.uid == owner
    }
}

/// The gid of the admin group, if it exists on this machine.
pub(crate) fn admin_gid(name: &str) -> Option<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => None,
    }
}

/// The process that made a connection, pinned by a pidfd: the pid it had then, and a
/// descriptor that names that process and no later holder of the pid.
#[derive(Debug)]
pub(crate) struct PeerProcess {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
}

impl PeerProcess {
    /// From a pidfd the kernel or the bus gave; `None` when the process has exited (its pid
    /// reads -1) or lives in a pid namespace we cannot see into (0).
    pub(crate) fn from_pidfd(pidfd: OwnedFd) -> Option<PeerProcess> {
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))?
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p != 0)?;
        Some(PeerProcess { pid, pidfd })
    }
}

/// The caller at the other end of a Unix stream socket, not placed yet, and the process that
/// connected (SO_PEERPIDFD, Linux 6.5+), if it is still there.
pub(crate) fn peer(
    sock: BorrowedFd<'_>,
    admin_gid: Option<u32>,
) -> std::io::Result<(Caller, Option<PeerProcess>)> {
    let cred = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    let mut gids = peer_groups(sock);
    gids.push(cred.gid());
    Ok((
        Caller::new(cred.uid(), &gids, admin_gid),
        peer_pidfd(sock).and_then(PeerProcess::from_pidfd),
    ))
}

/// A pidfd for the process that connected (SO_PEERPIDFD), taken at connect by the kernel:
/// never a later holder of its pid. `None` when it is gone or the kernel is older than 6.5
/// (fail closed: such a connection is not placed).
fn peer_pidfd(sock: BorrowedFd<'_>) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: fd is valid for len bytes; the kernel writes one int.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // SAFETY: a descriptor the kernel just gave us, owned by nobody else.
    (r == 0 && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Supplementary groups of a socket's peer (SO_PEERGROUPS, Linux 4.13+).
fn peer_groups(sock: BorrowedFd<'_>) -> Vec<u32> {
    let mut buf = vec![0u32; 32];
    loop {
        let mut len = (buf.len() * 4) as libc::socklen_t;
        // SAFETY: buf is valid for len bytes; the kernel writes at most len bytes.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            buf.truncate(len as usize / 4);
            return buf;
        }
        // ERANGE: len now holds the size needed.
        if nix::errno::Errno::last() == nix::errno::Errno::ERANGE && len as usize / 4 > buf.len() {
            buf.resize(len as usize / 4, 0);
            continue;
        }
        return Vec::new();
    }
}

/// The groups of a process, from /proc, if it still runs as `uid` (a bus daemon that does not
/// report group ids gives us the caller's pid instead).
pub(crate) fn process_groups(pid: u32, uid: u32) -> Vec<u32> {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    // Real, effective, saved, fs uid: all must be the caller's, or the pid was reused.
    if field("Uid:").iter().any(|u| *u != uid) {
        return Vec::new();
    }
    let mut g = field("Groups:");
    g.extend(field("Gid:").first());
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_by_root_or_group() {
        assert!(Caller::new(0, &[], None).admin);
        assert!(Caller::new(1000, &[1000, 990], Some(990)).admin);
        assert!(!Caller::new(1000, &[1000], Some(990)).admin);
        assert!(!Caller::new(1000, &[1000], None).admin);
        let c = Caller::new(1000, &[1000], None);
        assert!(c.may_act_for(1000));
        assert!(!c.may_act_for(1001));
    }

    #[test]
    fn socket_peer_is_us() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        use std::os::fd::AsFd as _;
        let (c, process) = peer(a.as_fd(), None).expect("peer");
        assert_eq!(c.uid, nix::unistd::getuid().as_raw());
        assert_eq!(c.seat, Seat::Unplaced, "placed by the transport, not here");
        assert_eq!(process.expect("pidfd").pid, std::process::id());
        let own = process_groups(std::process::id(), c.uid);
        assert!(own.contains(&nix::unistd::getgid().as_raw()));
    }

    /// A child that connects on its parent's socket and exits leaves a connection whose
    /// connector is gone: it is not there to be placed (and its pid may name another process).
    #[test]
    fn a_connector_that_exited_is_not_there() {
        use std::os::fd::AsFd as _;
        let dir = std::env::temp_dir().join(format!("axiom-authz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        // SAFETY: a new socket; the address is filled in before the fork.
        let s = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        assert!(s >= 0);
        // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, b) in addr
            .sun_path
            .iter_mut()
            .zip(path.as_os_str().as_encoded_bytes())
        {
            *d = *b as libc::c_char;
        }
        // SAFETY: the child only connects and exits (async-signal-safe calls).
        match unsafe { libc::fork() } {
            0 => unsafe {
                libc::connect(
                    s,
                    (&addr as *const libc::sockaddr_un).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                );
                libc::_exit(0);
            },
            child => {
                assert!(child > 0, "fork");
                let mut status = 0;
                // SAFETY: waits for our own child.
                unsafe { libc::waitpid(child, &mut status, 0) };
            }
        }
        let (conn, _) = l.accept().expect("accept");
        let (_, process) = peer(conn.as_fd(), None).expect("peer");
        assert!(process.is_none(), "{process:?}");
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(s) };
        let _ = std::fs::remove_dir_all(&dir);
    }
}
