//! Pseudo-terminals as the kernel tells of them, from a master axiomd holds.
use std::os::fd::{AsRawFd as _, OwnedFd};

/// The terminal device of a pty master (`/dev/pts/N`) and its size (rows, cols).
pub(crate) fn describe(master: &OwnedFd) -> Option<(String, u16, u16)> {
    let mut n: libc::c_uint = 0;
    // SAFETY: winsize is plain integers; all-zero is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGPTN and TIOCGWINSZ write one c_uint / one winsize through the pointer,
    // into values that live for the call.
    let ok = unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) == 0
            && libc::ioctl(master.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0
    };
    ok.then(|| (format!("/dev/pts/{n}"), ws.ws_row, ws.ws_col))
}
