//! Agent terminals: the pty masters that `axiomctl run` hands over (SCM_RIGHTS), so an
//! intervention can be typed into the agent, as if by its user, even after axiomctl has gone.
//!
//! While the client that started the agent is attached it reads the agent's output from the
//! same master; once it detaches axiomd drains that output (the sensor has already captured it),
//! so an agent is never blocked on a full terminal.
use std::{
    collections::HashMap,
    os::fd::{AsFd as _, OwnedFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::screens::Screens;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TerminalError {
    #[error("agent {0} has no terminal held by axiomd (it was not started by `axiomctl run`)")]
    NoTerminal(u64),
    #[error("agent {0}'s terminal is closed")]
    Closed(u64),
    #[error("agent {0} is not reading its terminal (input buffer full)")]
    Full(u64),
    #[error("writing to agent {agent}'s terminal: {source}")]
    Io { agent: u64, source: std::io::Error },
}

pub(crate) struct Terminals {
    held: Mutex<HashMap<u64, Arc<OwnedFd>>>,
    /// Told of each terminal held (the agent's own device and size) and of each released (so
    /// that whoever waits to type into it looks again).
    screens: Arc<Screens>,
    /// One typist per agent: two messages typed at once would interleave their keystrokes.
    typing: Mutex<HashMap<u64, Arc<Mutex<()>>>>,
}

/// How a message is typed into a real agent's TUI (measured on Claude Code 2.1 and Codex CLI
/// 0.171): the interrupt key, a pause, the text — as a bracketed paste when the agent asked
/// for them (`CSI ?2004h`), so a long or multi-line message is one input, not keystrokes that
/// submit it line by line or trip paste detection — a pause, then Enter. In one write the
/// interrupt key and the first letter read as Alt+letter, and a long message as a paste left
/// in the composer.
pub(crate) struct Typing<'a> {
    pub(crate) before: &'a str,
    pub(crate) text: &'a str,
    pub(crate) after: &'a str,
    pub(crate) paste: bool,
    pub(crate) gap: Duration,
}

/// Whether a descriptor handed over with `run_agent` is a pseudo-terminal's master (the
/// kernel's ptmx, character device 5:2), and nothing a caller could make block axiomd's typist
/// forever (a FUSE file, a pipe nobody reads, a socket).
pub(crate) fn is_pty_master(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && libc::major(st.st_rdev) == 5
            && libc::minor(st.st_rdev) == 2
    })
}

/// How long an injection waits for room in the agent's input buffer.
const WRITE_WAIT: Duration = Duration::from_secs(2);

impl Terminals {
    pub(crate) fn new(screens: Arc<Screens>) -> Terminals {
        Terminals {
            held: Mutex::default(),
            typing: Mutex::default(),
            screens,
        }
    }

    /// The screens this stage's terminals tell of.
    pub(crate) fn screens(&self) -> Arc<Screens> {
        self.screens.clone()
    }

    pub(crate) fn hold(&self, agent: u64, master: OwnedFd) {
        let master = Arc::new(master);
        self.screens.own(agent, &master);
        if let Ok(mut h) = self.held.lock() {
            h.insert(agent, master);
        }
    }

    pub(crate) fn has(&self, agent: u64) -> bool {
        self.held.lock().is_ok_and(|h| h.contains_key(&agent))
    }

    pub(crate) fn release(&self, agent: u64) {
        if let Ok(mut h) = self.held.lock() {
            h.remove(&agent);
        }
        if let Ok(mut t) = self.typing.lock() {
            t.remove(&agent);
        }
        self.screens.nudge();
    }

    /// Whether the agent's terminal is in canonical (line) mode: the kernel's line discipline
    /// takes a typed line as it is — there is no TUI to misread it — and echoes it itself.
    pub(crate) fn canonical(&self, agent: u64) -> bool {
        self.get(agent).is_some_and(|fd| {
            nix::sys::termios::tcgetattr(fd.as_fd()).is_ok_and(|t| {
                t.local_flags
                    .contains(nix::sys::termios::LocalFlags::ICANON)
            })
        })
    }

    /// The agent's typist: whoever types into its terminal holds it for the whole message.
    fn typist(&self, agent: u64) -> Arc<Mutex<()>> {
        self.typing
            .lock()
            .map(|mut m| m.entry(agent).or_default().clone())
            .unwrap_or_default()
    }

    /// Types a message as `Typing` says: separate writes, paced.
    pub(crate) fn type_paced(&self, agent: u64, t: &Typing) -> Result<(), TerminalError> {
        let typist = self.typist(agent);
        let _one_at_a_time = typist.lock();
        if !t.before.is_empty() {
            self.write_all(agent, t.before.as_bytes())?;
            std::thread::sleep(t.gap);
        }
        if t.paste {
            let text = format!("\x1b[200~{}\x1b[201~", t.text.replace('\x1b', ""));
            self.write_all(agent, text.as_bytes())?;
        } else {
            self.write_all(agent, t.text.as_bytes())?;
        }
        if !t.after.is_empty() {
            std::thread::sleep(t.gap);
            self.write_all(agent, t.after.as_bytes())?;
        }
        Ok(())
    }

    /// Types `text` into the agent's terminal as it is, in one go (never in the middle of a
    /// paced message).
    pub(crate) fn inject(&self, agent: u64, text: &[u8]) -> Result<(), TerminalError> {
        let typist = self.typist(agent);
        let _one_at_a_time = typist.lock();
        self.write_all(agent, text)
    }

    fn get(&self, agent: u64) -> Option<Arc<OwnedFd>> {
        self.held.lock().ok()?.get(&agent).cloned()
    }

    /// Writes `text` to the agent's terminal (blocking, bounded by WRITE_WAIT).
    fn write_all(&self, agent: u64, text: &[u8]) -> Result<(), TerminalError> {
        let fd = self.get(agent).ok_or(TerminalError::NoTerminal(agent))?;
        let mut rest = text;
        while !rest.is_empty() {
            let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
            let n = nix::poll::poll(
                &mut p,
                PollTimeout::try_from(WRITE_WAIT).unwrap_or(PollTimeout::MAX),
            )
            .map_err(|e| TerminalError::Io {
                agent,
                source: e.into(),
            })?;
            let rev = p[0].revents().unwrap_or(PollFlags::empty());
            if rev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                self.release(agent);
                return Err(TerminalError::Closed(agent));
            }
            if n == 0 {
                return Err(TerminalError::Full(agent));
            }
            // After POLLOUT a pty master takes at least some bytes without blocking.
            let chunk = &rest[..rest.len().min(256)];
            match nix::unistd::write(fd.as_fd(), chunk) {
                Ok(w) => rest = &rest[w..],
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(nix::errno::Errno::EIO) => {
                    self.release(agent);
                    return Err(TerminalError::Closed(agent));
                }
                Err(e) => {
                    return Err(TerminalError::Io {
                        agent,
                        source: e.into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The client that relayed the agent's terminal is gone: from now on axiomd reads (and
    /// discards) the agent's terminal output until the agent closes it.
    pub(crate) fn detached(self: &Arc<Self>, agent: u64) {
        let Some(fd) = self.get(agent) else { return };
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pty-drain-{agent}"))
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let mut p = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    if nix::poll::poll(&mut p, PollTimeout::from(1000u16)).is_err() {
                        break;
                    }
                    let rev = p[0].revents().unwrap_or(PollFlags::empty());
                    if rev.contains(PollFlags::POLLIN) {
                        match nix::unistd::read(fd.as_fd(), &mut buf) {
                            Ok(0) | Err(nix::errno::Errno::EIO) => break,
                            _ => continue,
                        }
                    }
                    if rev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                        break;
                    }
                    // Released (agent ended or untracked): stop holding it.
                    if !me.has(agent) {
                        break;
                    }
                }
                me.release(agent);
            });
        if let Err(e) = spawned {
            tracing::warn!(agent, "cannot drain the agent's terminal: {e}");
        }
    }
}
