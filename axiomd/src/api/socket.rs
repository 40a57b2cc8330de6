//! The control socket: JSON lines over a Unix stream socket, one request per line; a request may
//! carry a file descriptor (SCM_RIGHTS), as `run_agent` does with the agent's pty.
use std::{
    collections::VecDeque,
    io::IoSliceMut,
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::fs::PermissionsExt as _,
    },
    path::Path,
    sync::Arc,
};

use axiom_proto::wire::{Reply, Request};
use tokio::{
    io::Interest,
    net::{UnixListener, UnixStream, unix::OwnedReadHalf},
};

use super::{Shared, error, write_line};

pub(crate) fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    // Open to all local users: authorisation is per call, from the peer's credentials.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

pub(crate) async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = client(stream, shared).await {
                        tracing::debug!("client: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads lines and the descriptors that come with them.
struct FdLines {
    r: OwnedReadHalf,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    eof: bool,
}

/// At most this many descriptors per message; more are closed on arrival.
const MAX_FDS: usize = 4;
const MAX_LINE: usize = 1 << 20;

impl FdLines {
    fn recv(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16384];
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let sock = self.r.as_ref();
        let (n, fds) = sock.try_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(&mut chunk)];
            let m = nix::sys::socket::recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            let mut fds = Vec::new();
            for c in m.cmsgs().map_err(std::io::Error::from)? {
                if let nix::sys::socket::ControlMessageOwned::ScmRights(v) = c {
                    fds.extend(v);
                }
            }
            Ok((m.bytes, fds))
        })?;
        for fd in fds {
            // SAFETY: SCM_RIGHTS gave us these descriptors; nothing else owns them.
            self.fds.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        while self.fds.len() > MAX_FDS {
            self.fds.pop_front();
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next line (without its newline); `None` at end of stream.
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..i]).into_owned()));
            }
            if self.eof {
                return Ok(None);
            }
            if self.buf.len() > MAX_LINE {
                return Err(std::io::Error::other("request line too long"));
            }
            self.r.as_ref().readable().await?;
            match self.recv() {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

async fn client(stream: UnixStream, shared: Arc<Shared>) -> std::io::Result<()> {
    // Placed once, here: what the connecting process was is what the connection stays.
    let (caller, process) = crate::authz::peer(stream.as_fd(), shared.admin_gid)?;
    let caller = shared.place(caller, process.as_ref());
    drop(process);
    let (r, mut w) = stream.into_split();
    let _slot = match shared.clients.admit(caller) {
        Ok(s) => s,
        Err(refusal) => return write_line(&mut w, &refusal.reply()).await,
    };
    let mut lines = FdLines {
        r,
        buf: Vec::new(),
        fds: VecDeque::new(),
        eof: false,
    };
    // Agents whose terminal this client relays: axiomd takes over when it goes.
    let mut relayed = Vec::new();
    let result = async {
        while let Some(line) = lines.next_line().await? {
            let req: Request = match serde_json::from_str(&line) {
                Ok(r) => r,
                Err(e) => {
                    write_line(&mut w, &error(format!("bad request: {e}"))).await?;
                    continue;
                }
            };
            match req {
                Request::Subscribe { replay, agent } => {
                    if let Err(e) = shared.may_subscribe(caller, agent) {
                        return write_line(&mut w, &super::refusal(e)).await;
                    }
                    // Subscribed before the answer: an event published after the caller
                    // reads "ok" (even before this task runs again) must reach it.
                    let subscription = shared.bus.subscribe(replay);
                    let ok = Reply {
                        ok: true,
                        ..Default::default()
                    };
                    write_line(&mut w, &ok).await?;
                    // Ends when the client goes, even if no event comes to notice it by.
                    let gone = async {
                        while lines.next_line().await?.is_some() {}
                        Ok(())
                    };
                    return tokio::select! {
                        r = super::stream_subscribed(&mut w, &shared, caller, agent, subscription) => r,
                        r = gone => r,
                    };
                }
                other => {
                    let fd = match &other {
                        Request::RunAgent { pty: true, .. } => lines.fds.pop_front(),
                        _ => None,
                    };
                    let has_pty = fd.is_some();
                    // Queries may read files and Redis: off the async workers.
                    let reply = tokio::task::block_in_place(|| shared.handle(caller, other, fd));
                    if has_pty && let (true, Some(a)) = (reply.ok, reply.agent) {
                        relayed.push(a);
                    }
                    write_line(&mut w, &reply).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    for a in relayed {
        shared.actions.terminals.detached(a);
    }
    result
}
