//! The terminal side of `axiomctl run`: the agent gets a pseudo-terminal of its own (so
//! interactive agents behave as in a terminal), and axiomctl relays it: keystrokes in, output out,
//! window size changes through, the user's terminal in raw mode meanwhile and restored after.
use std::{
    io::{Read as _, Write as _},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    thread::JoinHandle,
    time::Duration,
};

use nix::{
    pty::{OpenptyResult, Winsize, openpty},
    sys::termios::{self, SetArg, Termios},
};

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, Winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

const DEFAULT_SIZE: Winsize = Winsize {
    ws_row: 24,
    ws_col: 80,
    ws_xpixel: 0,
    ws_ypixel: 0,
};

/// The window size of a terminal fd, if it is one.
fn winsize(fd: BorrowedFd<'_>) -> Option<Winsize> {
    let mut ws = DEFAULT_SIZE;
    // SAFETY: TIOCGWINSZ writes a Winsize into `ws`.
    unsafe { get_winsize(fd.as_raw_fd(), &mut ws) }.ok()?;
    Some(ws)
}

/// A new pseudo-terminal sized like the user's terminal (24×80 when there is none).
pub fn open() -> nix::Result<OpenptyResult> {
    let ws = winsize(std::io::stdin().as_fd()).unwrap_or(DEFAULT_SIZE);
    openpty(Some(&ws), None)
}

/// In the child, before exec: a new session whose controlling terminal is the pty's slave, on
/// stdin, stdout and stderr. Only async-signal-safe calls.
pub fn attach_child(slave: &OwnedFd) -> nix::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY takes an int argument.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY as _, 0) } < 0 {
        return Err(nix::errno::Errno::last());
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds of this (child) process.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(nix::errno::Errno::last());
        }
    }
    Ok(())
}

/// Puts the user's terminal in raw mode until dropped (when stdin is a terminal).
pub struct RawMode(Option<Termios>);

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return RawMode(None);
        }
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

/// Copies the agent's output to our stdout until the pty closes (every holder of the slave gone).
pub fn relay_output(master: OwnedFd) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut m = std::fs::File::from(master);
        let mut buf = [0u8; 8192];
        let mut out = std::io::stdout();
        // EIO once the slave side is closed: the end.
        while let Ok(n) = m.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    })
}

/// Copies our stdin to the agent (detached: it ends with the process).
pub fn relay_input(master: OwnedFd) {
    std::thread::spawn(move || {
        let mut m = std::fs::File::from(master);
        let mut buf = [0u8; 4096];
        let mut input = std::io::stdin();
        while let Ok(n) = input.read(&mut buf) {
            if n == 0 || m.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
}

/// Follows the user's window size: polls it and passes changes to the agent's pty (a poll rather
/// than SIGWINCH keeps signal handling out of a multi-threaded process).
pub fn relay_winsize(master: OwnedFd) {
    std::thread::spawn(move || {
        let mut last = winsize(std::io::stdin().as_fd());
        last.as_ref()?;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = winsize(std::io::stdin().as_fd());
            if let Some(ws) = now
                && last.is_none_or(|l| (l.ws_row, l.ws_col) != (ws.ws_row, ws.ws_col))
            {
                // SAFETY: TIOCSWINSZ reads a Winsize.
                if unsafe { set_winsize(master.as_raw_fd(), &ws) }.is_err() {
                    return None::<()>;
                }
                last = now;
            }
        }
    });
}
