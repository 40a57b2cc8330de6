//! `axiomctl mcp` driven by the official Python MCP SDK — a client that is not ours — against a
//! real axiomd on a private D-Bus that enforces the project's policy, with the server running as
//! an unprivileged user (nobody): spawn two agents in parallel, observe them, see the
//! violation, intervene, verify, read the transcript, receive the notifications; and the same
//! server over streamable HTTP behind its token.
use std::{
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use axiom_proto::wire::Request;
use axiom_tests::{TestBus, axiomctl_bin, free_port, python, unique};

const NOBODY: u32 = 65534;

fn driver() -> PathBuf {
    axiom_tests::repo_root().join("tests/mcp/drive.py")
}

/// An empty directory nobody owns (the agents work in it as nobody).
fn workspace(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn run_driver(args: &[String], what: &str) -> String {
    let out = Command::new(python())
        .arg(driver())
        .args(args)
        .output()
        .expect("python (cargo xtask setup makes the venv with mcp)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: the MCP client failed:\n{text}"
    );
    println!("{text}");
    text
}

/// Where no system bus runs (containers, CI runners, this machine) `axiomctl mcp` starts all
/// the same and talks to axiomd over its control socket, with the same per-user authorisation:
/// the whole stdio flow (spawn, observe, intervene — the typed message delivered —, freeze,
/// verify) as nobody.
#[test]
fn an_mcp_client_works_without_a_system_bus() {
    let d = axiom_tests::Daemon::start("mcp_nobus", &["--dbus", "off"]);
    // `system` falls back to the socket when there is no system bus to connect to; on a host
    // that has one, ask for the socket by name.
    let bus = if std::path::Path::new("/run/dbus/system_bus_socket").exists() {
        "socket"
    } else {
        "system"
    };
    let ws1 = workspace("mcp_nobus_ws1");
    let ws2 = workspace("mcp_nobus_ws2");
    let text = run_driver(
        &[
            "stdio".into(),
            "--axiomctl".into(),
            axiomctl_bin().display().to_string(),
            "--bus".into(),
            bus.into(),
            "--socket".into(),
            d.socket.display().to_string(),
            "--ws1".into(),
            ws1.display().to_string(),
            "--ws2".into(),
            ws2.display().to_string(),
            "--uid".into(),
            NOBODY.to_string(),
        ],
        "stdio without a bus",
    );
    assert!(text.contains("MCP-OK"), "{text}\n{}", d.log_text());
}

#[test]
fn an_mcp_client_spawns_observes_steers_and_verifies_agents() {
    let (bus, d) = TestBus::with_daemon("mcp_stdio");
    // The control socket is how `axiomctl run` (which the server runs) reaches axiomd.
    let ws1 = workspace("mcp_ws1");
    let ws2 = workspace("mcp_ws2");
    let text = run_driver(
        &[
            "stdio".into(),
            "--axiomctl".into(),
            axiomctl_bin().display().to_string(),
            "--bus".into(),
            bus.address.clone(),
            "--socket".into(),
            d.socket.display().to_string(),
            "--ws1".into(),
            ws1.display().to_string(),
            "--ws2".into(),
            ws2.display().to_string(),
            "--uid".into(),
            NOBODY.to_string(),
        ],
        "stdio",
    );
    assert!(text.contains("MCP-OK"), "{text}\n{}", d.log_text());
    // What the agents did is on disk, made by nobody.
    let hello = ws1.join("hello.py");
    let meta = std::fs::metadata(&hello).expect("agent A's hello.py");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), NOBODY);
    assert!(ws2.join("data/out.txt").exists());
    // The agent left running when the client went was stopped by the server on its way out.
    let linger: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("LINGER "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no LINGER line: {text}"));
    let t0 = Instant::now();
    loop {
        let agents = d
            .client()
            .request(&Request::Agents)
            .agents
            .unwrap_or_default();
        let a = agents
            .iter()
            .find(|a| a.id == linger)
            .expect("the lingering agent");
        assert_eq!(a.owner_uid, NOBODY, "the MCP caller's agents are nobody's");
        if a.state == "exited" {
            let evs = d
                .client()
                .request(&Request::Query {
                    events: axiom_proto::wire::EventQuery {
                        agent: Some(linger),
                        since_ns: None,
                        until_ns: None,
                        kinds: vec![],
                        text: None,
                        limit: 100,
                        oldest: false,
                    },
                    sql: None,
                })
                .events
                .unwrap_or_default();
            assert_eq!(a.exit_signal, Some(15), "{a:?}\n{evs:#?}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "agent {linger} still {} after the MCP client left",
            a.state
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
    let _ = std::fs::remove_dir_all(&ws1);
    let _ = std::fs::remove_dir_all(&ws2);
}

#[test]
fn mcp_over_http_serves_only_the_token_holder() {
    let (bus, d) = TestBus::with_daemon("mcp_http");
    let ws = workspace("mcp_http_ws");
    let dir = workspace("mcp_http_token");
    let token = dir.join("token");
    let port = free_port();
    let mut server = Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
        ])
        .arg(axiomctl_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["mcp", "--bus", &bus.address, "--http"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--token-file")
        .arg(&token)
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("axiomctl mcp --http");
    let t0 = Instant::now();
    while !token.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = server.try_wait() {
            let mut err = String::new();
            let _ = server.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("axiomctl mcp --http exited ({st}): {err}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the HTTP server did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The token is the server's user's alone.
    let meta = std::fs::metadata(&token).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), NOBODY);
    let out = Command::new(python())
        .arg(driver())
        .args(["http", "--url"])
        .arg(format!("http://127.0.0.1:{port}/mcp"))
        .arg("--token-file")
        .arg(&token)
        .arg("--ws1")
        .arg(&ws)
        .output()
        .unwrap();
    let _ = server.kill();
    let mut err = String::new();
    let _ = server.stderr.take().map(|mut e| e.read_to_string(&mut err));
    let _ = server.wait();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("MCP-HTTP-OK"),
        "{text}\nserver: {err}\n{}",
        d.log_text()
    );
    let _ = std::fs::remove_dir_all(&ws);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mcp_refuses_a_non_loopback_address() {
    let out = Command::new(axiomctl_bin())
        .args([
            "mcp",
            "--bus",
            "unix:path=/nonexistent",
            "--http",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only a loopback address"), "{err}");
}

#[test]
fn mcp_follows_axiomd_through_a_restart() {
    use std::io::BufRead as _;
    let (bus, mut d) = TestBus::with_daemon("mcp_restart");
    let ws = workspace("mcp_restart_ws");
    let flag = ws.with_extension("restarted");
    let mut client = Command::new(python())
        .arg(driver())
        .args(["restart", "--axiomctl"])
        .arg(axiomctl_bin())
        .args(["--bus", &bus.address, "--socket"])
        .arg(&d.socket)
        .arg("--ws1")
        .arg(&ws)
        .arg("--flag")
        .arg(&flag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = Vec::new();
    let out = std::io::BufReader::new(client.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        if line == "RESTART" {
            // A crash, not a clean stop: axiomd comes back on its pins and state files.
            d.kill9();
            d.spawn();
            std::fs::write(&flag, b"").unwrap();
        }
        said.push(line);
    }
    let st = client.wait().unwrap();
    let mut err = String::new();
    let _ = client.stderr.take().map(|mut e| e.read_to_string(&mut err));
    let said = said.join("\n");
    assert!(
        st.success() && said.contains("MCP-RESTART-OK"),
        "{said}\n{err}\n{}",
        d.log_text()
    );
    let _ = std::fs::remove_dir_all(&ws);
    let _ = std::fs::remove_file(&flag);
}
