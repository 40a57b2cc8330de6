//! axiomd as systemd runs it (`Type=notify`): the real axiomd against a real notify socket —
//! a datagram socket bound here, given to axiomd as `$NOTIFY_SOCKET`, as systemd does.
use std::{
    os::unix::net::UnixDatagram,
    sync::mpsc,
    time::{Duration, Instant},
};

use axiom_tests::*;

/// Every notification axiomd sends, with whether the control socket answered at that moment.
fn listen(sock: UnixDatagram, control: std::path::PathBuf) -> mpsc::Receiver<(String, bool)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let answers = Client::try_connect(&control).is_some();
            if tx.send((msg, answers)).is_err() {
                return;
            }
        }
    });
    rx
}

fn next_with(rx: &mpsc::Receiver<(String, bool)>, what: &str, key: &str) -> (String, bool) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(m) = rx.recv_timeout(Duration::from_millis(200))
            && m.0.lines().any(|l| l == key)
        {
            return m;
        }
    }
    panic!("no {what} ({key}) from axiomd");
}

#[test]
fn readiness_watchdog_reload_and_stop_reach_the_notify_socket() {
    let dir = std::env::temp_dir().join(unique("notify"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut d = Daemon::new(
        "notify",
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    // Listening before axiomd starts: each message is checked against the control socket as
    // it arrives.
    let rx = listen(sock, d.socket.clone());
    d.spawn();
    // READY=1, with a status line; by then the control socket answers.
    let (ready, answered) = next_with(&rx, "readiness", "READY=1");
    assert!(answered, "READY=1 before the control socket answered");
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS with READY: {ready:?}"));
    assert!(status.starts_with("watching 0 agents;"), "{status}");
    // WATCHDOG=1 at half the interval while the ring reader runs: several in 1.5 s.
    let t0 = Instant::now();
    let mut pings = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        if let Ok((m, _)) = rx.recv_timeout(Duration::from_millis(100))
            && m.lines().any(|l| l == "WATCHDOG=1")
        {
            pings += 1;
        }
    }
    assert!(
        pings >= 3,
        "{pings} watchdog pings in 1.5 s at WATCHDOG_USEC=400000"
    );
    // A reload (SIGHUP, as ExecReload sends it): RELOADING=1 with the monotonic clock, READY=1.
    let pid = nix::unistd::Pid::from_raw(d.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let (reloading, _) = next_with(&rx, "the reload", "RELOADING=1");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {reloading:?}"));
    assert!(usec > 0);
    next_with(&rx, "readiness after the reload", "READY=1");
    // A clean stop says so first.
    let st = d.stop();
    assert!(st.success(), "{st}");
    next_with(&rx, "the stop", "STOPPING=1");
    let _ = std::fs::remove_dir_all(&dir);
}
