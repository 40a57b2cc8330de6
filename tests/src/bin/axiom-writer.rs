//! A tiny, purpose-built agent stand-in for benchmarks: forks N children that each write `bytes`
//! bytes to stdout every `interval_ms` (≈1,000 chars/s with the defaults) for `seconds`, then exit.
//! Prints each child's pid, then `ready`. Usage:
//!   axiom-writer <children> [bytes=100] [interval_ms=100] [seconds=30] [text]
//! With `text`, each line starts with it (benchmarks of matching).
use std::io::Write as _;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let children = arg(1, 1);
    let bytes = arg(2, 100) as usize;
    let interval = std::time::Duration::from_millis(arg(3, 100));
    let seconds = std::time::Duration::from_secs(arg(4, 30));
    let line = {
        let mut v = vec![b'x'; bytes.max(1)];
        if let Some(t) = std::env::args().nth(5) {
            let n = t.len().min(v.len().saturating_sub(1));
            v[..n].copy_from_slice(&t.as_bytes()[..n]);
        }
        if let Some(last) = v.last_mut() {
            *last = b'\n';
        }
        v
    };
    let mut pids = Vec::new();
    for i in 0..children {
        // SAFETY: single-threaded; the child only writes, sleeps and exits.
        match unsafe { libc::fork() } {
            0 => {
                // Spread the children's writes over the interval.
                std::thread::sleep(interval * (i % 100) as u32 / 100);
                let t0 = std::time::Instant::now();
                while t0.elapsed() < seconds {
                    // SAFETY: writing a buffer we own to fd 1.
                    unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
                    std::thread::sleep(interval);
                }
                unsafe { libc::_exit(0) };
            }
            pid if pid > 0 => pids.push(pid),
            _ => {
                eprintln!("axiom-writer: fork failed after {i} children");
                break;
            }
        }
    }
    {
        let mut err = std::io::stderr().lock();
        for p in &pids {
            let _ = writeln!(err, "{p}");
        }
        let _ = writeln!(err, "ready");
    }
    for _ in &pids {
        // SAFETY: reaping our own children.
        unsafe { libc::wait(std::ptr::null_mut()) };
    }
}
