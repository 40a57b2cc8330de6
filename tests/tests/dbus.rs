//! The D-Bus API against a real dbus-daemon that enforces the project's policy file, driven by
//! D-Bus clients that are not ours (gdbus, busctl, dbus-monitor) — and by zbus for the one
//! thing those cannot do (read from a passed file descriptor).
use std::{
    io::BufRead as _,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use axiom_tests::{Daemon, TestBus, axiomctl_bin, unique};

const DEST: &str = "org.axiom.Axiom1";
const PATH: &str = "/org/axiom/Axiom1";
const NOBODY: &str = "65534";

/// A daemon on its own private bus, with its name owned.
fn start(name: &str) -> (TestBus, Daemon) {
    TestBus::with_daemon(name)
}

/// `setpriv` arguments that run a command as nobody, with the given supplementary groups.
fn as_nobody(groups: Option<&str>) -> Vec<String> {
    let mut v = vec![
        "setpriv".to_string(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
    ];
    match groups {
        Some(g) => v.push(format!("--groups={g}")),
        None => v.push("--clear-groups".into()),
    }
    v
}

/// gdbus call, optionally prefixed (to run as another user).
fn gdbus(bus: &TestBus, prefix: &[String], method: &str, args: &[&str]) -> Output {
    let (prog, pre) = match prefix.split_first() {
        Some((p, rest)) => (p.as_str(), rest.to_vec()),
        None => ("gdbus", Vec::new()),
    };
    let mut cmd = Command::new(prog);
    cmd.args(pre);
    if !prefix.is_empty() {
        cmd.arg("gdbus");
    }
    cmd.args(["call", "--address", &bus.address, "--dest", DEST])
        .args(["--object-path", PATH, "--method"])
        .arg(format!("{DEST}.{method}"))
        .args(args)
        .env("HOME", "/nonexistent")
        .output()
        .expect("gdbus (cargo xtask setup installs libglib2.0-bin)")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The agent id in gdbus's `(uint64 N,)`.
fn agent_id(o: &Output) -> u64 {
    assert!(o.status.success(), "call failed: {}", text(o));
    let s = String::from_utf8_lossy(&o.stdout);
    s.trim()
        .trim_start_matches("(uint64 ")
        .trim_end_matches(",)")
        .parse()
        .unwrap_or_else(|_| panic!("no agent id in {s:?}"))
}

fn sleeper(prefix: &[String]) -> Child {
    let mut cmd = match prefix.split_first() {
        Some((p, rest)) => {
            let mut c = Command::new(p);
            c.args(rest).arg("sleep");
            c
        }
        None => Command::new("sleep"),
    };
    cmd.arg("300").spawn().expect("sleep")
}

fn admin_gid() -> String {
    let o = Command::new("getent")
        .args(["group", "axiom"])
        .output()
        .expect("getent");
    let s = String::from_utf8_lossy(&o.stdout);
    s.split(':')
        .nth(2)
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .expect("group axiom (cargo xtask setup creates it)")
}

#[test]
fn introspection_shows_the_api() {
    let (bus, _d) = start("dbus_introspect");
    let o = Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args(["introspect", DEST, PATH])
        .output()
        .expect("busctl");
    let t = text(&o);
    for member in [
        ".WatchPid",
        ".RunAgent",
        ".ListAgents",
        ".Subscribe",
        ".Freeze",
        ".Thaw",
        ".Kill",
        ".Inject",
        ".AgentStarted",
        ".AgentExited",
        ".Violation",
        ".Intervention",
        ".Version",
        ".AgentCount",
    ] {
        assert!(
            t.contains(member),
            "{member} missing from introspection:\n{t}"
        );
    }
    // Properties read by an unprivileged client (read-only methods are open to all).
    let o = gdbus(&bus, &as_nobody(None), "Status", &[]);
    assert!(o.status.success(), "Status as nobody: {}", text(&o));
    assert!(text(&o).contains("tracked_processes"), "{}", text(&o));
    let o = Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args(["get-property", DEST, PATH, DEST, "Version"])
        .output()
        .expect("busctl");
    assert!(text(&o).contains(env!("CARGO_PKG_VERSION")), "{}", text(&o));
}

#[test]
fn callers_are_authorised_by_uid() {
    let (bus, d) = start("dbus_authz");
    let nobody = as_nobody(None);
    let mut roots = sleeper(&[]);
    let mut theirs = sleeper(&nobody);
    std::thread::sleep(Duration::from_millis(100));
    let root_pid = roots.id().to_string();
    let their_pid = theirs.id().to_string();

    // Another user's process: refused, with the standard D-Bus error.
    let o = gdbus(&bus, &nobody, "WatchPid", &[&root_pid]);
    assert!(!o.status.success(), "nobody adopted root's process");
    assert!(
        text(&o).contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        text(&o)
    );
    // Their own: allowed.
    let own = agent_id(&gdbus(&bus, &nobody, "WatchPid", &[&their_pid]));
    // A member of the admin group may adopt anyone's.
    let admin = as_nobody(Some(&admin_gid()));
    let roots_agent = agent_id(&gdbus(&bus, &admin, "WatchPid", &[&root_pid]));
    assert_ne!(own, roots_agent);

    // nobody lists only their own agent; may not steer root's; may steer their own.
    let o = gdbus(&bus, &nobody, "ListAgents", &[]);
    let t = text(&o);
    assert!(t.contains(&format!("(uint64 {own}, ")), "{t}");
    assert!(!t.contains(&format!("(uint64 {roots_agent}, ")), "{t}");
    let o = gdbus(&bus, &nobody, "Freeze", &[&roots_agent.to_string()]);
    assert!(
        text(&o).contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        text(&o)
    );
    let o = gdbus(&bus, &nobody, "Kill", &[&own.to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    let st = theirs.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(9),
        "their agent was not killed"
    );
    // Bad input gets a named error.
    let o = gdbus(&bus, &[], "WatchPid", &["1"]);
    assert!(
        text(&o).contains("org.axiom.Axiom1.Error.Init"),
        "{}",
        text(&o)
    );
    let o = gdbus(&bus, &[], "Kill", &["999999"]);
    assert!(
        text(&o).contains("org.axiom.Axiom1.Error.NoSuchAgent"),
        "{}",
        text(&o)
    );
    let _ = roots.kill();
    let _ = roots.wait();
    drop(d);
}

/// A process inside an agent that calls over the bus is that agent, not its owner: it lists
/// its own agent alone and may not steer a sibling agent of the same owner.
#[test]
fn an_agent_on_the_bus_is_its_agent_not_its_owner() {
    use std::os::unix::{fs::PermissionsExt as _, process::CommandExt as _};
    let (bus, d) = start("dbus_inside");
    let nobody = as_nobody(None);
    let mut sib = sleeper(&nobody);
    std::thread::sleep(Duration::from_millis(100));
    let sibling = agent_id(&gdbus(&bus, &nobody, "WatchPid", &[&sib.id().to_string()]));
    let ws = std::path::Path::new("/var/cache/axiom-tests").join(unique("dbus_inside"));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o777)).unwrap();
    let call = |method: &str| {
        format!(
            "gdbus call --address '{}' --dest {DEST} --object-path {PATH} --method {DEST}.{method}",
            bus.address
        )
    };
    let script = format!(
        "{}; echo; {} {sibling}; echo END",
        call("ListAgents"),
        call("Kill")
    );
    let o = Command::new(axiomctl_bin())
        .arg("--socket")
        .arg(&d.socket)
        // `full`: this private bus lives below /tmp, which a confined agent's own /tmp hides
        // (the system bus, /run/dbus, is reached under every profile); being inside an agent
        // is what is tested, whatever its profile.
        .args(["run", "--profile", "full", "--name", "dbus-inside", "--"])
        .args(["/bin/sh", "-c", &script])
        .current_dir(&ws)
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(out.contains("END"), "{out}");
    assert!(!out.contains(&format!("(uint64 {sibling}, ")), "{out}");
    assert!(
        out.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{out}"
    );
    assert!(sib.try_wait().unwrap().is_none(), "the sibling was killed");
    let _ = sib.kill();
    let _ = sib.wait();
    let _ = std::fs::remove_dir_all(&ws);
}

#[test]
fn signals_reach_a_plain_monitor() {
    let (bus, _d) = start("dbus_signals");
    let mut mon = Command::new("dbus-monitor")
        .args(["--address", &bus.address])
        .arg(format!("type='signal',interface='{DEST}'"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-monitor (cargo xtask setup installs dbus-bin)");
    let out = mon.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // The monitor is listening once it has printed its own NameAcquired.
    let t0 = Instant::now();
    while rx
        .recv_timeout(Duration::from_millis(200))
        .map(|l| !l.contains("NameLost"))
        .unwrap_or(true)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "dbus-monitor did not start"
        );
    }
    let mut child = sleeper(&[]);
    let agent = agent_id(&gdbus(&bus, &[], "WatchPid", &[&child.id().to_string()]));
    let o = Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args(["call", DEST, PATH, DEST, "Kill", "t", &agent.to_string()])
        .output()
        .expect("busctl");
    assert!(o.status.success(), "{}", text(&o));
    let _ = child.wait();
    // The intervention and the exit race each other (the exit may be announced first).
    let agent_line = format!("uint64 {agent}");
    let wanted = [
        "member=AgentStarted",
        "member=Intervention",
        "string \"kill\"",
        "member=AgentExited",
        agent_line.as_str(),
        "int32 9",
    ];
    let mut seen = String::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) && !wanted.iter().all(|w| seen.contains(w)) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push_str(&l);
            seen.push('\n');
        }
    }
    let _ = mon.kill();
    let _ = mon.wait();
    for want in wanted {
        assert!(
            seen.contains(want),
            "{want:?} not seen by dbus-monitor:\n{seen}"
        );
    }
    // Signals reach every user on the bus: they name the agent, never its command line.
    assert!(
        !seen.contains("string \"300\""),
        "a signal carried the agent's command line:\n{seen}"
    );
}

#[test]
fn subscribe_passes_an_event_stream() {
    let (bus, _d) = start("dbus_subscribe");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut child = Command::new("sh")
        .args(["-c", "read go; echo dbus-stream-marker; sleep 0.2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sh");
    let agent = agent_id(&gdbus(&bus, &[], "WatchPid", &[&child.id().to_string()]));
    let fd: std::os::fd::OwnedFd = rt.block_on(async {
        let conn = zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .expect("connect");
        let reply = conn
            .call_method(Some(DEST), PATH, Some(DEST), "Subscribe", &(agent, false))
            .await
            .expect("Subscribe");
        let fd: zbus::OwnedFd = reply.body().deserialize().expect("an fd");
        fd.into()
    });
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "go").expect("go");
    }
    let _ = child.wait();
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut kinds = Vec::new();
    let mut marker = false;
    for line in std::io::BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let ev: axiom_proto::wire::Event = serde_json::from_str(&line).expect("an event");
        assert_eq!(ev.agent, agent, "another agent's event on this stream");
        if axiom_tests::output_text(&ev).is_some_and(|t| t.contains("dbus-stream-marker")) {
            marker = true;
        }
        kinds.push(ev.body.kind().name());
        if kinds.contains(&"agent_exited") {
            break;
        }
    }
    assert!(
        marker,
        "the output never came through the passed fd: {kinds:?}"
    );
    assert!(kinds.contains(&"exec"), "{kinds:?}");
    assert!(kinds.contains(&"agent_exited"), "{kinds:?}");
}
