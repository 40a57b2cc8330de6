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

/// Copies the agent's output to our stdout until the pty closes (every holder of the slave gone),
/// less the sequences that would reach past the agent's screen (`Relay`).
pub fn relay_output(master: OwnedFd) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut m = std::fs::File::from(master);
        let mut buf = [0u8; 8192];
        let mut out = std::io::stdout();
        let mut relay = Relay::default();
        let mut passed = Vec::with_capacity(buf.len());
        // EIO once the slave side is closed: the end.
        while let Ok(n) = m.read(&mut buf) {
            passed.clear();
            relay.filter(&buf[..n], &mut passed);
            if n == 0 || out.write_all(&passed).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    })
}

/// What of the agent's output reaches the owner's terminal: all of it (a TUI needs its escape
/// sequences) but the ones that act beyond the agent's screen: OSC 52 (set or read the owner's
/// clipboard: a read is answered into the agent's input) and the window-title reports
/// (`CSI 20 t`, `CSI 21 t`: the title, which the agent set, typed back as input). A sequence
/// split across reads is held until it is whole (at most `HELD_MAX` bytes).
#[derive(Default)]
pub struct Relay {
    held: Vec<u8>,
}

/// Longest sequence held undecided; a longer one is passed on (or dropped, for OSC 52).
const HELD_MAX: usize = 64;

impl Relay {
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.held.is_empty() {
                if b == 0x1b {
                    self.held.push(b);
                } else {
                    out.push(b);
                }
                continue;
            }
            self.held.push(b);
            match self.decide() {
                Decision::Hold => {}
                Decision::Pass => out.append(&mut self.held),
                Decision::Drop => self.held.clear(),
                Decision::Dropping => {}
            }
        }
    }

    /// What to do with the sequence held so far.
    fn decide(&mut self) -> Decision {
        let h = &self.held;
        match h.get(1) {
            None => Decision::Hold,
            Some(b']') => {
                // OSC: its number decides, up to the ';' (or its end).
                let body = &h[2..];
                let number: Vec<u8> = body
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .copied()
                    .collect();
                let after = body.get(number.len());
                let clipboard = number == b"52";
                match after {
                    None if h.len() < HELD_MAX => Decision::Hold,
                    _ if clipboard => {
                        // Dropped whole: held (and discarded) until its terminator.
                        let last = h[h.len() - 1];
                        let ended = last == 0x07 || (last == b'\\' && h[h.len() - 2] == 0x1b);
                        if ended {
                            Decision::Drop
                        } else {
                            if h.len() > HELD_MAX {
                                // Keep only the tail that can end it.
                                let tail = h[h.len() - 1];
                                self.held.truncate(2);
                                self.held.extend_from_slice(b"52;");
                                self.held.push(tail);
                            }
                            Decision::Dropping
                        }
                    }
                    _ => Decision::Pass,
                }
            }
            Some(b'[') => {
                let last = h[h.len() - 1];
                if h.len() > 2 && (0x40..=0x7e).contains(&last) {
                    let params = &h[2..h.len() - 1];
                    if last == b't' && (params == b"20" || params == b"21") {
                        Decision::Drop
                    } else {
                        Decision::Pass
                    }
                } else if h.len() < HELD_MAX {
                    Decision::Hold
                } else {
                    Decision::Pass
                }
            }
            Some(_) => Decision::Pass,
        }
    }
}

enum Decision {
    Hold,
    Pass,
    Drop,
    /// Inside a sequence being dropped: nothing goes out until it ends.
    Dropping,
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

#[cfg(test)]
mod tests {
    use super::Relay;

    fn through(chunks: &[&[u8]]) -> Vec<u8> {
        let mut r = Relay::default();
        let mut out = Vec::new();
        for c in chunks {
            r.filter(c, &mut out);
        }
        out
    }

    /// The clipboard and title reports are kept from the owner's terminal, split or not; the
    /// rest of a TUI's escapes pass as they are.
    #[test]
    fn clipboard_and_title_reports_do_not_reach_the_owner() {
        assert_eq!(through(&[b"a\x1b]52;c;ZXZpbA==\x07b"]), b"ab");
        assert_eq!(through(&[b"a\x1b]5", b"2;c;?\x1b", b"\\b"]), b"ab");
        assert_eq!(through(&[b"x\x1b[21ty\x1b[2", b"0t"]), b"xy");
        let tui: &[u8] = b"\x1b[?2026h\x1b[3;1HHello\x1b[0m\x1b]0;claude\x07\x1b[?25l";
        assert_eq!(through(&[tui]), tui);
        assert_eq!(through(&[&tui[..5], &tui[5..]]), tui);
        let long = [b"\x1b]52;c;".as_slice(), &[b'A'; 5000], b"\x07ok"].concat();
        assert_eq!(through(&[&long]), b"ok");
    }
}
