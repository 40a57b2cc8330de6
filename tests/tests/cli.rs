//! axiomctl as scripts see it: exit codes, completions, man page.
use std::process::Command;

use axiom_tests::*;

fn axiomctl() -> Command {
    Command::new(axiomctl_bin())
}

#[test]
fn completions_are_valid_bash_and_the_man_page_is_roff() {
    let out = axiomctl().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for sub in [
        "run", "watch", "agents", "freeze", "thaw", "kill", "events", "status",
    ] {
        assert!(script.contains(sub), "completion lacks {sub}");
    }
    let path = std::env::temp_dir().join(unique("axiomctl_completion"));
    std::fs::write(&path, &script).unwrap();
    let st = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(st.success(), "bash rejects the completion script");
    let man = axiomctl().arg("manpage").output().unwrap();
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH axiomctl"));
}

/// A hook call that axiomd does not answer ends after its deadline, saying nothing on stdout
/// (Claude Code waits for its hooks with its screen frozen: the agent must carry on).
#[test]
fn a_hook_that_axiomd_does_not_answer_lets_the_agent_carry_on() {
    use std::io::Write as _;
    let sock = std::env::temp_dir().join(format!("{}.sock", unique("silent_axiomd")));
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // Accepts and reads, never answers.
    let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let t0 = std::time::Instant::now();
    let mut child = axiomctl()
        .arg("--socket")
        .arg(&sock)
        .arg("hook")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"hook_event_name":"UserPromptSubmit","prompt":"hi"}"#)
        .unwrap();
    // Before the deadline existed this call never returned: give it 30 s, then fail.
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&sock);
            panic!("axiomctl hook still waits for axiomd after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let _conn = held.join().unwrap();
    let _ = std::fs::remove_file(&sock);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not answer"),
        "{out:?}"
    );
}

#[test]
fn exit_codes_tell_scripts_what_happened() {
    // axiomd unreachable: 69.
    let st = axiomctl()
        .args(["--socket", "/nonexistent/axiomd.sock", "status"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(69));
    let d = Daemon::start("cli_codes", &[]);
    let sock = d.socket.display().to_string();
    // Each refusal: a one-line reason and its own exit code.
    let mut sleeper = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let already = sleeper.id().to_string();
    assert!(d.track_pid(sleeper.id()).ok);
    for (args, code) in [
        (vec!["watch", "4194303"], 3),
        (vec!["watch", "2"], 5), // kthreadd
        (vec!["watch", "1"], 6),
        (vec!["watch", already.as_str()], 7),
        (vec!["freeze", "999999"], 8),
        (vec!["events", "--agent", "999999"], 8),
    ] {
        let out = axiomctl()
            .args(["--socket", &sock])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    // A command that does not exist: 127, like a shell.
    let st = axiomctl()
        .args(["--socket", &sock, "run", "--", "/nonexistent/agent"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(127));
    // The agent's own code passes through.
    let st = axiomctl()
        .args(["--socket", &sock, "run", "--", "/bin/sh", "-c", "exit 42"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(42));
}

#[test]
fn watch_shows_a_running_shell_loop_live_and_ends_with_it() {
    use std::io::BufRead as _;
    let d = Daemon::start("cli_watch", &[]);
    let mut shell = Command::new("/bin/sh")
        .args([
            "-c",
            "while true; do echo loop-line; /bin/true; sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut watch = axiomctl()
        .args(["--socket", &d.socket.display().to_string()])
        .args(["watch", &shell.id().to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let (mut printed, mut ran) = (false, false);
    let t0 = std::time::Instant::now();
    while !(printed && ran) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "watch showed output={printed} child commands={ran}"
        );
        let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(100)) else {
            continue;
        };
        assert!(!l.contains('\x1b'), "colour codes on a pipe: {l:?}");
        printed |= l.contains("out fd1") && l.contains("loop-line");
        ran |= l.contains("exec /bin/true");
    }
    // The agent ends: so does watch, with a summary.
    shell.kill().unwrap();
    shell.wait().unwrap();
    let st = watch.wait().unwrap();
    assert!(st.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("command: /bin/sh -c while true"),
        "no header: {err}"
    );
    assert!(err.contains("ended: signal 9"), "no summary: {err}");
}

#[test]
fn doctor_checks_the_host_and_the_daemon_and_names_remedies() {
    // No daemon: the check fails with what to do, and so does the exit code.
    let out = axiomctl()
        .args(["--socket", "/nonexistent/axiomd.sock", "doctor"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = text
        .lines()
        .position(|l| l.starts_with("FAIL  axiomd"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        text.lines()
            .nth(fail + 1)
            .is_some_and(|l| l.contains("→ start it")),
        "{text}"
    );
    // With a daemon on this kernel: every check passes or only warns, and the kernel facts are
    // the ones measured here (BTF, Landlock ABI 7, the program types the sensor loads).
    let d = Daemon::start("cli_doctor", &[]);
    let out = axiomctl()
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "doctor"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let checks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for name in [
        "btf",
        "bpffs",
        "tracefs",
        "lockdown",
        "bpf ring buffer",
        "prog tracepoint",
        "prog cgroup_sock_addr",
        "landlock",
        "axiomd",
        "store (warm)",
    ] {
        assert_eq!(status(name), "pass", "{name}: {checks:?}");
    }
    let landlock = checks.iter().find(|c| c["name"] == "landlock").unwrap();
    assert!(
        landlock["detail"].as_str().unwrap().starts_with("ABI "),
        "{landlock}"
    );
    assert!(checks.iter().all(|c| c["status"] != "fail"), "{checks:?}");
}

#[test]
fn bad_configuration_files_each_name_the_place_and_the_reason() {
    let dir = std::env::temp_dir().join(unique("bad_config"));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: &[(&str, &str, &str)] = &[
        // (file text, where, what the reason says)
        (
            "[sensor]\ncapture_bytes = 10\nbogus = 1\n",
            ":3:1:",
            "unknown field `bogus`",
        ),
        ("[store]\nenabled = \"yes\"\n", ":2:11:", "invalid type"),
        (
            "[sensor]\ncapture_bytes = 100000\n",
            ": sensor.capture_bytes:",
            "outside 1..=8192",
        ),
        (
            "[telemetry]\notlp_protocol = \"carrier-pigeon\"\n",
            ": telemetry:",
            "grpc or http/protobuf",
        ),
        (
            "[telemetry]\nprometheus_listen = \"everywhere\"\n",
            ": telemetry:",
            "not address:port",
        ),
        ("[rules\npaths = []\n", ":1:7:", "unclosed table"),
        (
            "[confine]\nmode = \"sometimes\"\n",
            ":2:8:",
            "unknown variant `sometimes`",
        ),
    ];
    for (i, (text, at, why)) in cases.iter().enumerate() {
        let file = dir.join(format!("bad{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(axiomd_bin())
            .arg("--config")
            .arg(&file)
            .arg("check-config")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} was accepted");
        let want = format!("{}{at}", file.display());
        assert!(
            err.contains(&want) && err.contains(why),
            "{text:?}: wanted {want:?} and {why:?} in:\n{err}"
        );
    }
    // The environment is checked as strictly as the file.
    let out = Command::new(axiomd_bin())
        .args(["--config", "/dev/null", "check-config"])
        .env("AXIOMD_SENSOR__CAPTURE_BYTES", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sensor.capture_bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
