//! The systemd notify protocol (`Type=notify`): READY once the control socket answers, STATUS
//! lines an operator sees in `systemctl status`, RELOADING/READY around a rules reload,
//! STOPPING on the way out, and WATCHDOG pings while the ring reader is alive.
//!
//! Datagrams to `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace), as
//! sd_notify(3) sends them; without the variable every call is a no-op, so axiomd run by hand
//! or by another supervisor behaves the same.
use std::{
    os::unix::net::UnixDatagram,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    #[error("NOTIFY_SOCKET {addr}: {source}")]
    Socket {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where notifications go.
pub(crate) struct Notifier {
    sock: UnixDatagram,
    addr: String,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when axiomd is not run by systemd with `Type=notify`.
    pub(crate) fn from_env() -> Result<Option<Notifier>, NotifyError> {
        let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let addr = addr.to_string_lossy().into_owned();
        let err = |source| NotifyError::Socket {
            addr: addr.clone(),
            source,
        };
        let sock = UnixDatagram::unbound().map_err(err)?;
        // Connected once: a send needs no address, and a socket that is gone says so at once.
        match addr.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .map_err(err)?;
                sock.connect_addr(&sa).map_err(err)?;
            }
            None => sock.connect(&addr).map_err(err)?,
        }
        Ok(Some(Notifier { sock, addr }))
    }

    /// Sends one notification (`KEY=VALUE` lines). A lost notification is logged, not fatal:
    /// systemd's own timeouts then tell the operator.
    pub(crate) fn send(&self, msg: &str) {
        if let Err(e) = self.sock.send(msg.as_bytes()) {
            tracing::warn!(socket = %self.addr, "sd_notify {msg:?}: {e}");
        }
    }
}

/// `$WATCHDOG_USEC` when it is meant for this process (`$WATCHDOG_PID`, if set, is ours).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    let us: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (us > 0).then(|| Duration::from_micros(us))
}

/// CLOCK_MONOTONIC in µs, for `RELOADING=1` (systemd ≥ 253 wants `MONOTONIC_USEC` with it).
pub(crate) fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// A counter the ring reader bumps on every pass of its loop: the watchdog pings only while it
/// moves, so a wedged reader (the one thread axiomd cannot do without) gets axiomd restarted.
#[derive(Clone, Default)]
pub(crate) struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    pub(crate) fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Pings WATCHDOG=1 at half the interval while `beat` moves, and refreshes STATUS.
pub(crate) async fn watchdog(
    n: Arc<Notifier>,
    every: Duration,
    beat: Heartbeat,
    status: impl Fn() -> String + Send + 'static,
) {
    let mut tick = tokio::time::interval(every / 2);
    let mut last = beat.get();
    loop {
        tick.tick().await;
        let now = beat.get();
        if now != last {
            n.send(&format!("WATCHDOG=1\nSTATUS={}", status()));
        } else {
            tracing::error!(
                "the ring reader made no progress for {:?}: no watchdog ping",
                every / 2
            );
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_datagram_socket_path_and_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("axiom-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).expect("bind");
        // SAFETY: this test is the only one in the process that touches NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        let n = Notifier::from_env().expect("socket").expect("configured");
        n.send("READY=1\nSTATUS=up");
        let mut buf = [0u8; 256];
        let k = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..k], b"READY=1\nSTATUS=up");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("axiom-notify-test-{}", std::process::id());
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let rx2 = UnixDatagram::bind_addr(&sa).expect("bind abstract");
        unsafe { std::env::set_var("NOTIFY_SOCKET", format!("@{name}")) };
        let n = Notifier::from_env().expect("socket").expect("configured");
        n.send("WATCHDOG=1");
        let k = rx2.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..k], b"WATCHDOG=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        assert!(Notifier::from_env().expect("no error").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
