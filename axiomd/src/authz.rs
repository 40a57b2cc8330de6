//! Who is calling, and what they may do.
//!
//! Identity always comes from the kernel (SO_PEERCRED/SO_PEERGROUPS on the control socket) or
//! from the bus daemon (GetConnectionCredentials), never from what a client says. Root and
//! members of the admin group (`axiom` by default) may act on every agent; anyone else only on
//! the processes and agents they own.
use std::os::fd::{AsRawFd, BorrowedFd};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// Root, or a member of the admin group.
    pub admin: bool,
    /// The calling process, when the transport's kernel or bus said (SO_PEERCRED's pid): a
    /// hook call is about the caller's own agent, found from this pid.
    pub pid: Option<u32>,
}

impl Caller {
    /// axiomd itself (and tests of the agent registry).
    pub const ROOT: Caller = Caller {
        uid: 0,
        admin: true,
        pid: None,
    };

    /// A caller from its uid and every group it holds (primary and supplementary).
    pub fn new(uid: u32, gids: &[u32], admin_gid: Option<u32>) -> Caller {
        Caller {
            uid,
            admin: uid == 0 || admin_gid.is_some_and(|g| gids.contains(&g)),
            pid: None,
        }
    }

    /// May this caller watch or steer what `owner` owns?
    pub fn may_act_for(&self, owner: u32) -> bool {
        self.admin || self.uid == owner
    }
}

/// The gid of the admin group, if it exists on this machine.
pub fn admin_gid(name: &str) -> Option<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => None,
    }
}

/// The caller at the other end of a Unix stream socket.
pub fn peer(sock: BorrowedFd<'_>, admin_gid: Option<u32>) -> std::io::Result<Caller> {
    let cred = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    let mut gids = peer_groups(sock);
    gids.push(cred.gid());
    let pid = u32::try_from(cred.pid()).ok().filter(|p| *p != 0);
    Ok(Caller {
        pid,
        ..Caller::new(cred.uid(), &gids, admin_gid)
    })
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
pub fn process_groups(pid: u32, uid: u32) -> Vec<u32> {
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
        let c = peer(a.as_fd(), None).expect("peer");
        assert_eq!(c.uid, nix::unistd::getuid().as_raw());
        let own = process_groups(std::process::id(), c.uid);
        assert!(own.contains(&nix::unistd::getgid().as_raw()));
    }
}
