//! Rules on real processes: the default principles fire, inject reaches the agent's stdin, a
//! phrase split across two writes is caught, claims are checked against what the kernel saw,
//! and a broken rule file on reload keeps the old rules running.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use axiom_proto::wire::{Body, Event, Request};
use axiom_tests::*;

const T: Duration = Duration::from_secs(15);

fn violation(e: &Event, agent: u64) -> Option<&str> {
    match &e.body {
        Body::Violation { rule, .. } if e.agent == agent => Some(rule.as_str()),
        _ => None,
    }
}

/// Is this an intervention of `action` on `agent`?
fn intervened(e: &Event, agent: u64, action: &str) -> bool {
    e.agent == agent && matches!(&e.body, Body::Intervention { action: a, .. } if a == action)
}

/// Starts `script` under `axiomctl run` (a pty of its own, held by axiomd); returns its agent.
/// (The caller waits for the child.)
fn run_agent(d: &Daemon, name: &str, script: &str) -> (std::process::Child, u64) {
    // The workspace holds the temporary directories its files are written to: a claim is
    // checked against the work in the agent's workspace.
    d.run_script((name, &std::env::temp_dir()), &[], script, T)
}

#[test]
fn default_principles_fire_and_inject_reaches_the_agent() {
    let d = Daemon::start("rules_defaults", &[]);
    let mut sub = d.subscribe(true);
    let dir = std::env::temp_dir().join(unique("rules_work"));
    std::fs::create_dir_all(&dir).unwrap();
    // (The file is written through an fd that stays open: axiomd learns what an fd points at from
    // /proc when it reads the record, so a redirection undone within the same millisecond is
    // seen as the terminal — until the kernel reports the file type itself.)
    // Plans (split across two writes), reads what Axiom types, leaves a TODO, claims (truly)
    // that it implemented something, claims (falsely) that tests pass, force-pushes.
    let script = format!(
        "sleep 0.3; printf 'OK. Let me p'; sleep 0.2; printf 'lan this first.\\n'; \
         read reply; echo \"heard:$reply\"; \
         (printf 'x = 1  # TODO: later\\n'; sleep 0.3) > {dir}/a.py; \
         echo \"I've successfully implemented it and all tests pass.\"; \
         sh -c 'true git push --force origin main'; sleep 0.5",
        dir = dir.display()
    );
    let (mut child, agent) = run_agent(&d, "principled", &script);
    for rule in [
        "stop-planning",
        "todo-left",
        "false-tests-pass",
        "git-force-push",
    ] {
        sub.wait_for(rule, T, |e| violation(e, agent) == Some(rule));
    }
    // The injection (ESC, the message, Enter) arrived on the agent's stdin.
    sub.wait_for("the agent's echo of the injected message", T, |e| {
        e.agent == agent
            && output_text(e).is_some_and(|t| t.contains("heard:") && t.contains("Stop planning"))
    });
    sub.wait_for("the inject intervention", T, |e| {
        e.agent == agent
            && matches!(&e.body, Body::Intervention {
                action, by_uid: None, rule: Some(r), detect_us: Some(_), act_us: Some(_), ..
            } if action == "inject" && r == "stop-planning")
    });
    let _ = child.wait();
    sub.drain_for(Duration::from_millis(300));
    // Its claim of an implementation held (it wrote a file first): no false-completion.
    assert!(
        !sub.seen
            .iter()
            .any(|e| violation(e, agent) == Some("false-completion")),
        "a true claim was reported as false"
    );
    // Violations carry their detection latency.
    let lat = sub
        .seen
        .iter()
        .find_map(|e| match &e.body {
            Body::Violation { latency_us, .. } if e.agent == agent => *latency_us,
            _ => None,
        })
        .expect("a latency");
    assert!(lat > 0.0 && lat < 5e6, "latency {lat} µs");

    // An agent that claims without writing anything is reported.
    let (mut liar, agent2) = run_agent(
        &d,
        "liar",
        "sleep 0.3; echo \"I've successfully created the module.\"; sleep 0.3",
    );
    sub.wait_for("false-completion", T, |e| {
        violation(e, agent2) == Some("false-completion")
    });
    let _ = liar.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dangerous_commands_are_stopped() {
    let d = Daemon::start("rules_danger", &[]);
    let mut sub = d.subscribe(false);
    // `curl … | sh` freezes the agent (the rule's action); nothing after it runs.
    let (mut child, agent) = run_agent(
        &d,
        "danger",
        "sleep 0.3; sh -c 'curl -s http://127.0.0.1:9/x | sh'; echo after-the-pipe; sleep 5",
    );
    sub.wait_for("curl-pipe-shell", T, |e| {
        violation(e, agent) == Some("curl-pipe-shell")
    });
    sub.wait_for("the freeze", T, |e| intervened(e, agent, "freeze"));
    let t0 = std::time::Instant::now();
    loop {
        let agents = d.client().request(&Request::Agents).agents.unwrap();
        if agents.iter().any(|a| a.id == agent && a.state == "frozen") {
            break;
        }
        assert!(t0.elapsed() < T, "the agent was not frozen");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.client().request(&Request::Kill { agent }).ok);
    let _ = child.wait();
}

/// A script served on loopback (an installer), and the port it is on.
struct Served {
    server: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Served {
    fn start() -> Served {
        use std::io::BufRead as _;
        let dir = std::env::temp_dir().join(unique("served"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("install.sh"),
            "#!/bin/sh\n# An installer, as the web serves them.\necho installed-from-the-net\nsleep 5\n",
        )
        .unwrap();
        let mut server = Command::new("/usr/bin/python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Served { server, port, dir }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Code from the network, run, is found by what the kernel saw, however it is spelled (and the
/// rule's freeze stops it): an installer fetched by wget into bash's stdin inside another
/// shell, by curl into `bash -c "$(…)"` as installers are pasted (each through a variable, so
/// no command line names the tool and the pipe together), and downloaded to a file that is then
/// run. A download that is only saved, and a pipe into a shell from a process that never
/// connected, are not.
#[test]
fn code_from_the_network_run_is_found_however_spelled() {
    let d = Daemon::start("rules_remote_code", &[]);
    let mut sub = d.subscribe(false);
    let s = Served::start();
    let url = format!("http://127.0.0.1:{}/install.sh", s.port);
    let dl = std::env::temp_dir().join(unique("dl.sh"));
    for (name, script) in [
        // Spelled so that no command line says it (the pattern rule, which would freeze the
        // agent before anything ran, does not see it): only the facts do.
        (
            "piped",
            format!("sleep 0.3; F=wget; $F -qO- {url} | bash; sleep 5"),
        ),
        (
            "substituted",
            format!("sleep 0.3; C=curl; /bin/bash -c \"$($C -fsSL {url})\"; sleep 5"),
        ),
        (
            "saved-and-run",
            format!(
                "sleep 0.3; curl -fsS -o {dl} {url} && chmod +x {dl} && {dl}; sleep 5",
                dl = dl.display()
            ),
        ),
    ] {
        let (mut child, agent) = run_agent(&d, name, &script);
        let v = sub.wait_for(name, T, |e| violation(e, agent) == Some("remote-code-exec"));
        let Body::Violation { detail, .. } = &v.body else {
            unreachable!()
        };
        assert!(
            detail.contains("connected out") && detail.contains(&format!("127.0.0.1:{}", s.port)),
            "{name}: {detail}"
        );
        sub.wait_for("the freeze", T, |e| intervened(e, agent, "freeze"));
        assert!(d.client().request(&Request::Kill { agent }).ok);
        let _ = child.wait();
    }
    // Saved only, a shell fed by a process that never connected, and a download piped into an
    // interpreter that runs its own code (not its stdin) or into a program: nothing.
    let (mut child, agent) = run_agent(
        &d,
        "quiet",
        &format!(
            "sleep 0.3; curl -fsS -o {dl}.kept {url}; printf 'echo hi\\n' | sh; curl -fsS {url} | python3 -c 'import sys; sys.stdin.read()'; curl -fsS {url} | grep -c echo; sleep 0.5",
            dl = dl.display()
        ),
    );
    let _ = child.wait();
    sub.drain_for(Duration::from_millis(500));
    assert!(
        !sub.seen
            .iter()
            .any(|e| violation(e, agent) == Some("remote-code-exec")),
        "a download that never ran was reported"
    );
    let _ = std::fs::remove_file(&dl);
    let _ = std::fs::remove_file(format!("{}.kept", dl.display()));
}

#[test]
fn a_broken_rule_file_on_reload_keeps_the_old_rules() {
    let dir = std::env::temp_dir().join(unique("rules_reload"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mine.toml");
    std::fs::write(
        &file,
        "[[rule]]\nid = \"marker\"\nscope = \"output\"\nliterals = [\"axiom-marker\"]\n",
    )
    .unwrap();
    let d = Daemon::start("rules_reload", &["--rules", &dir.display().to_string()]);
    let ctl = |args: &[&str]| {
        Command::new(axiomctl_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .unwrap()
    };
    // Broken: a bad regex on line 5.
    std::fs::write(
        &file,
        "[[rule]]\nid = \"marker2\"\nscope = \"output\"\nliterals = [\"x\"]\nregex = '(unclosed'\n",
    )
    .unwrap();
    let out = ctl(&["rules", "reload"]);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5: rule \"marker2\": bad regex",
            file.display()
        )),
        "{err}"
    );
    // The offline check says the same.
    let out = Command::new(axiomctl_bin())
        .args(["rules", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    // The old rule is still listed, and still fires.
    let out = ctl(&["--json", "rules", "list"]);
    let listed: Vec<axiom_proto::wire::RuleInfo> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "marker");
    let mut sub = d.subscribe(false);
    let mut p = Command::new("/bin/sh")
        .args(["-c", "sleep 0.3; echo axiom-marker; sleep 0.3"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let agent = d.track_pid(p.id()).agent.unwrap();
    sub.wait_for("the old rule", T, |e| violation(e, agent) == Some("marker"));
    let _ = p.wait();
    // SIGHUP with the broken file: still the old rules, and the log says why.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.as_ref().unwrap().id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.log_text().contains("old ones stay"), "{}", d.log_text());
    assert_eq!(
        d.client().request(&Request::Rules).rules.unwrap()[0].id,
        "marker"
    );
    // Fixed: the reload takes.
    std::fs::write(
        &file,
        "[[rule]]\nid = \"marker2\"\nscope = \"output\"\nliterals = [\"y\"]\n",
    )
    .unwrap();
    assert!(ctl(&["rules", "reload"]).status.success());
    assert_eq!(
        d.client().request(&Request::Rules).rules.unwrap()[0].id,
        "marker2"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rules_test_runs_offline() {
    let sample = std::env::temp_dir().join(unique("sample"));
    std::fs::write(&sample, "\x1b[1mLet me plan\x1b[0m this, then: rm -rf /").unwrap();
    let out = Command::new(axiomctl_bin())
        .args(["rules", "test"])
        .arg(default_rules().join("default.toml"))
        .arg(&sample)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("stop-planning\t"), "{text}");
    let out = Command::new(axiomctl_bin())
        .args(["rules", "test", "--scope", "exec"])
        .arg(default_rules().join("default.toml"))
        .arg(&sample)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("rm-rf-root"));
    let _ = std::fs::remove_file(&sample);
}

/// A rules directory with one deny rule on a marker.
fn deny_rules() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("rules_deny"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("deny.toml"),
        "[[rule]]\nid = \"forbidden\"\nscope = \"file_write\"\nliterals = [\"FORBIDDEN-PAYLOAD\"]\n\
         action = \"deny\"\nseverity = \"critical\"\ncooldown_secs = 0\n",
    )
    .unwrap();
    dir
}

/// Runs `script` (writing to `$F`) as a tracked process; returns its exit status and agent.
fn tracked_writer(
    d: &Daemon,
    file: &std::path::Path,
    script: &str,
) -> (std::process::ExitStatus, u64) {
    let mut p = Command::new("/bin/sh")
        .args(["-c", &format!("read go; {script}")])
        .env("F", file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let agent = d.track_pid(p.id()).agent.unwrap();
    {
        use std::io::Write as _;
        writeln!(p.stdin.take().unwrap(), "go").unwrap();
    }
    (p.wait().unwrap(), agent)
}

#[test]
fn deny_stops_the_write_before_it_lands() {
    let rules = deny_rules();
    let d = Daemon::start("rules_deny", &["--rules", &rules.display().to_string()]);
    let mut sub = d.subscribe(false);
    let file = std::env::temp_dir().join(unique("denied"));
    // Three writes by one process into one file; the second carries the forbidden bytes.
    let (st, agent) = tracked_writer(
        &d,
        &file,
        "exec 3>\"$F\"; printf 'before\\n' >&3; printf 'xx FORBIDDEN-PAYLOAD yy\\n' >&3; printf 'after\\n' >&3",
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(9),
        "the writer was not killed"
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, "before\n", "denied bytes (or later ones) landed");
    let v = sub.wait_for("the deny violation", T, |e| {
        violation(e, agent) == Some("forbidden")
    });
    assert!(matches!(&v.body, Body::Violation { action, .. } if action == "deny"));
    sub.wait_for("the in-kernel intervention", T, |e| {
        e.agent == agent
            && matches!(&e.body, Body::Intervention { action, detail, .. }
                if action == "deny" && detail.contains("killed in the kernel"))
    });
    assert!(d.status().events.get("kernel_match").copied().unwrap_or(0) >= 1);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&rules);
}

#[test]
fn the_kernel_matcher_carries_state_across_writes() {
    let rules = deny_rules();
    let d = Daemon::start("rules_split", &["--rules", &rules.display().to_string()]);
    let file = std::env::temp_dir().join(unique("split"));
    // The literal is split over two writes of the same fd: the second write is the one stopped.
    let (st, _) = tracked_writer(
        &d,
        &file,
        "exec 3>\"$F\"; printf 'FORBIDDEN-' >&3; printf 'PAYLOAD and more' >&3",
    );
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "FORBIDDEN-");
    // An untracked process writing the same bytes is left alone.
    let st = Command::new("/bin/sh")
        .args(["-c", "printf 'FORBIDDEN-PAYLOAD' > \"$F\""])
        .env("F", &file)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "FORBIDDEN-PAYLOAD");
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&rules);
}

#[test]
fn the_kernel_matcher_finds_a_literal_anywhere_in_a_long_write() {
    // A long write is scanned as two halves at once (the second warmed up from the longest
    // literal's length before its start), 128 bytes per step, a step that saw an accept scanned
    // again byte by byte: a literal in either half, across a step's end, across the middle, at
    // the very end, or split from the end of a long write into the next one is stopped the same.
    let rules = deny_rules();
    let d = Daemon::start("rules_long", &["--rules", &rules.display().to_string()]);
    let lit = "FORBIDDEN-PAYLOAD";
    let write = |before: usize, after: usize| -> String {
        format!(
            "os.write(fd, b'x' * {before} + b'{lit}' + b'y' * {after})",
            lit = lit
        )
    };
    let cases = [
        ("first half", write(10, 3973)),
        ("across a scan step's end", write(120, 3863)),
        ("across the middle", write(1992, 1991)),
        ("second half", write(3000, 983)),
        ("at the end", write(3983, 0)),
        (
            "split from a long write into the next",
            "os.write(fd, b'x' * 3990 + b'FORBIDDEN-'); os.write(fd, b'PAYLOAD')".into(),
        ),
    ];
    for (what, code) in cases {
        let file = std::env::temp_dir().join(unique("long"));
        let (st, _) = tracked_writer(
            &d,
            &file,
            &format!(
                "exec python3 -c \"import os; fd = os.open(os.environ['F'], os.O_WRONLY | os.O_CREAT, 0o600); {code}\""
            ),
        );
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(9),
            "{what}: the writer was not stopped"
        );
        let _ = std::fs::remove_file(&file);
    }
    // A long write without the literal passes.
    let file = std::env::temp_dir().join(unique("long_clean"));
    let (st, _) = tracked_writer(
        &d,
        &file,
        "exec python3 -c \"import os; fd = os.open(os.environ['F'], os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, b'FORBIDDEN-' * 400)\"",
    );
    assert!(st.success(), "a clean long write was stopped: {st:?}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 4000);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&rules);
}

/// Runs `script` in a shell that waits until it is tracked (its writes to a pipe); its agent id,
/// once the shell has ended.
fn tracked_script(d: &Daemon, script: &str) -> u64 {
    let mut p = Command::new("/bin/sh")
        .args(["-c", &format!("read go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = d.track_pid(p.id()).agent.unwrap();
    {
        use std::io::Write as _;
        writeln!(p.stdin.take().unwrap(), "go").unwrap();
    }
    let _ = p.wait();
    agent
}

#[test]
fn secrets_are_masked_before_they_leave_axiomd() {
    let d = Daemon::start("rules_secrets", &[]);
    let mut sub = d.subscribe(false);
    let agent = tracked_script(
        &d,
        "echo 'export KEY=AKIAABCDEFGHIJKLMNOP # deploy'; sleep 0.2",
    );
    let e = sub.wait_for("the masked write", T, |e| {
        e.agent == agent && output_text(e).is_some_and(|t| t.contains("export KEY="))
    });
    let Body::Output { text, redacted, .. } = &e.body else {
        unreachable!()
    };
    assert_eq!(text, "export KEY=[REDACTED] # deploy\n");
    assert_eq!(redacted, &["aws-access-key"]);
    let v = sub.wait_for("the secret's violation", T, |e| {
        violation(e, agent) == Some("aws-access-key")
    });
    assert!(!format!("{v:?}").contains("ABCDEFGHIJKLMNOP"), "{v:?}");
    // Nothing that left axiomd carries the key.
    sub.drain_for(Duration::from_millis(200));
    let leaked: Vec<String> = sub
        .seen
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .filter(|j| j.contains("ABCDEFGHIJKLMNOP"))
        .collect();
    assert!(leaked.is_empty(), "the secret leaked: {leaked:?}");
}

/// The texts of `agent`'s writes as they left axiomd, once one holding `last` has (and a
/// moment after, for any still on the way).
fn outputs_until(sub: &mut Subscription, agent: u64, last: &str) -> Vec<String> {
    sub.wait_for(last, T, |e| {
        e.agent == agent && output_text(e).is_some_and(|t| t.contains(last))
    });
    sub.drain_for(Duration::from_millis(300));
    sub.seen
        .iter()
        .filter(|e| e.agent == agent)
        .filter_map(|e| output_text(e).map(str::to_string))
        .collect()
}

/// A key written in three parts (three writes by one process, as `printf` thrice): no part
/// alone, nor two together, is a secret, so each write's own masking leaves it; the stream's
/// last bytes are kept over its writes, and every part is masked before any leaves axiomd.
#[test]
fn a_secret_split_across_three_writes_is_masked_in_each() {
    let d = Daemon::start("rules_split_secret", &[]);
    let mut sub = d.subscribe(false);
    let agent = tracked_script(
        &d,
        "printf 'export KEY=AKIAQRSTU'; printf 'VWXYZ2'; printf '34567 # deploy\\n'; sleep 0.2",
    );
    let texts = outputs_until(&mut sub, agent, "# deploy");
    let joined = texts.concat();
    assert!(joined.contains("export KEY="), "{texts:?}");
    for half in ["QRSTU", "VWXYZ2", "34567"] {
        assert!(
            !joined.contains(half),
            "a half of the key was kept: {texts:?}"
        );
    }
    assert!(joined.contains("[REDACTED]"), "{texts:?}");
}

/// A private key printed a line at a time (a write per line, as a shell loop does): its body
/// lines, each no secret alone, are masked through to its END line, and what follows is not.
#[test]
fn a_private_key_written_line_by_line_is_masked_to_its_end() {
    let d = Daemon::start("rules_key_lines", &[]);
    let mut sub = d.subscribe(false);
    let body: Vec<String> = (0..24)
        .map(|i| {
            format!("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2{i:02}")
        })
        .collect();
    let key = std::env::temp_dir().join(unique("id_test"));
    std::fs::write(
        &key,
        format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            body.join("\n")
        ),
    )
    .unwrap();
    let agent = tracked_script(
        &d,
        &format!(
            "while IFS= read -r l; do printf '%s\\n' \"$l\"; done < {}; echo after-the-key; sleep 0.2",
            key.display()
        ),
    );
    let texts = outputs_until(&mut sub, agent, "after-the-key");
    let _ = std::fs::remove_file(&key);
    let joined = texts.concat();
    assert!(texts.len() >= 20, "not a write per line: {texts:?}");
    for line in &body {
        assert!(
            !joined.contains(line.as_str()),
            "a body line was kept: {texts:?}"
        );
    }
    assert!(joined.contains("after-the-key"), "{texts:?}");
}

#[test]
fn the_remaining_default_principles_fire_on_real_processes() {
    let d = Daemon::start("rules_rest", &[]);
    let mut sub = d.subscribe(false);
    // Research talk, options, a private key, chmod 777 — then `rm -rf /` (as an argument to
    // `true`, so nothing is deleted), which kills the agent.
    let (mut child, agent) = run_agent(
        &d,
        "rest",
        "sleep 0.3; echo 'Let me research how the cache works.'; \
         echo 'Option 1: a hash map. Option 2: a B-tree.'; \
         echo '-----BEGIN OPENSSH PRIVATE KEY-----'; \
         sh -c 'true chmod -R 777 .'; sleep 0.3; \
         sh -c 'true rm -rf /'; sleep 5; echo survived",
    );
    for rule in [
        "stop-researching",
        "pick-one",
        "private-key",
        "chmod-777-recursive",
        "rm-rf-root",
    ] {
        sub.wait_for(rule, T, |e| violation(e, agent) == Some(rule));
    }
    sub.wait_for("the kill", T, |e| intervened(e, agent, "kill"));
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(128 + 9), "the agent was not killed");
    assert!(
        !sub.seen
            .iter()
            .any(|e| e.agent == agent && output_text(e).is_some_and(|t| t.contains("survived"))),
        "the agent ran on after rm -rf /"
    );
}

#[test]
fn timeouts_fire_on_an_idle_agent() {
    let dir = std::env::temp_dir().join(unique("rules_timeouts"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("timeouts.toml"),
        "[[rule]]\nid = \"planning\"\nkind = \"planning_timeout\"\nafter_secs = 1\n\n\
         [[rule]]\nid = \"progress\"\nkind = \"progress_check\"\nafter_secs = 2\ncooldown_secs = 60\n",
    )
    .unwrap();
    let d = Daemon::start("rules_timeouts", &["--rules", &dir.display().to_string()]);
    let mut sub = d.subscribe(false);
    let (mut child, agent) = run_agent(&d, "idle", "sleep 6");
    let p = sub.wait_for("planning timeout", T, |e| {
        violation(e, agent) == Some("planning")
    });
    assert!(
        matches!(&p.body, Body::Violation { detail, .. } if detail.contains("no file written"))
    );
    sub.wait_for("progress check", T, |e| {
        violation(e, agent) == Some("progress")
    });
    // Once each (planning: once per agent; progress: cooldown 60 s).
    sub.drain_for(Duration::from_millis(1500));
    let n = |id: &str| {
        sub.seen
            .iter()
            .filter(|e| violation(e, agent) == Some(id))
            .count()
    };
    assert_eq!((n("planning"), n("progress")), (1, 1));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rule file with three WebAssembly plugins (built from tests/wasm/*.c) and a plain rule.
fn plugin_rules(dir: &std::path::Path) -> std::path::PathBuf {
    build_wasm("sql_guard", WasmKind::Plugin, dir);
    build_wasm("spin", WasmKind::Plugin, dir);
    build_wasm("hog", WasmKind::Plugin, dir);
    let file = dir.join("plugins.toml");
    std::fs::write(
        &file,
        r#"[[rule]]
id = "sql-guard"
kind = "plugin"
scope = "output"
literals = ["drop table"]
case_insensitive = true
plugin = "sql_guard.wasm"
severity = "high"
cooldown_secs = 0

[[rule]]
id = "spin"
kind = "plugin"
scope = "output"
literals = ["SPIN-ME"]
plugin = "spin.wasm"
fuel = 2000000
cooldown_secs = 0

[[rule]]
id = "hog"
kind = "plugin"
scope = "output"
literals = ["HOG-ME"]
plugin = "hog.wasm"
memory_mib = 4
cooldown_secs = 0

[[rule]]
id = "still-watching"
scope = "output"
literals = ["STILL-WATCHING"]
"#,
    )
    .unwrap();
    file
}

#[test]
fn plugins_judge_output_and_runaway_ones_are_stopped_and_reported() {
    let dir = std::env::temp_dir().join(unique("rules_plugins"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = plugin_rules(&dir);
    let cache = dir.join("cache");
    let d = Daemon::start(
        "rules_plugins",
        &[
            "--rules",
            &file.display().to_string(),
            "--set",
            &format!("rules.plugin_cache={}", cache.display()),
        ],
    );
    let mut sub = d.subscribe(false);
    let script = "sleep 0.3; echo 'psql -c \"DROP TABLE users;\"'; sleep 0.2; \
                  echo 'in the migration: drop table old_users;'; sleep 0.2; \
                  for i in 1 2 3 4; do echo SPIN-ME; sleep 0.1; done; echo HOG-ME; sleep 0.2; \
                  echo STILL-WATCHING; sleep 0.3";
    let (mut child, agent) = run_agent(&d, "plugged", script);
    // The plugin's verdict, with its own detail.
    let v = sub.wait_for("the sql-guard finding", T, |e| {
        violation(e, agent) == Some("sql-guard")
    });
    let Body::Violation {
        detail, severity, ..
    } = &v.body
    else {
        unreachable!()
    };
    assert_eq!(
        detail, "destructive SQL outside a migration: DROP TABLE users",
        "the plugin's own detail"
    );
    assert_eq!(severity, "high");
    // The endless loop: stopped by fuel, reported, and switched off after three strikes.
    let plugin_denied = |rule: &'static str, by: &'static str| {
        move |e: &Event| {
            e.agent == agent
                && matches!(&e.body, Body::Denied { op, target, by: b, .. }
                    if op == "plugin" && target.starts_with(&format!("rule {rule} (")) && b.contains(by))
        }
    };
    sub.wait_for(
        "the spin plugin's fuel fault",
        T,
        plugin_denied("spin", "fuel limit"),
    );
    sub.wait_for(
        "the spin plugin switched off",
        T,
        plugin_denied("spin", "switched off for this agent after 3"),
    );
    sub.wait_for(
        "the hog plugin's memory fault",
        T,
        plugin_denied("hog", "memory limit"),
    );
    // axiomd kept judging this agent's output afterwards.
    sub.wait_for("a rule after the faults", T, |e| {
        violation(e, agent) == Some("still-watching")
    });
    let _ = child.wait();
    sub.drain_for(Duration::from_millis(300));
    let count = |f: &dyn Fn(&Event) -> bool| sub.seen.iter().filter(|e| f(e)).count();
    // The migration line passed the plugin: one finding, not two.
    assert_eq!(count(&|e| violation(e, agent) == Some("sql-guard")), 1);
    // Four SPIN-ME lines, three calls: the fourth found the plugin switched off.
    assert_eq!(count(&plugin_denied("spin", "fuel limit")), 3);
    // Compiled once, into the configured cache.
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 3);
    let listed = d.client().request(&Request::Rules).rules.unwrap();
    assert!(
        listed
            .iter()
            .any(|r| r.id == "sql-guard" && r.kind == "plugin")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plugin_that_asks_for_authority_is_refused_with_its_line() {
    let dir = std::env::temp_dir().join(unique("rules_plugin_bad"));
    std::fs::create_dir_all(&dir).unwrap();
    // A WASI program imports the system interface: not allowed for a plugin.
    build_wasm("escape", WasmKind::Wasi, &dir);
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[[rule]]\nid = \"greedy\"\nkind = \"plugin\"\nscope = \"output\"\nplugin = \"escape.wasm\"\n",
    )
    .unwrap();
    let out = Command::new(axiomctl_bin())
        .args(["rules", "check"])
        .arg(&file)
        .env("HOME", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:5: rule \"greedy\": plugin", file.display()))
            && err.contains("imports wasi_snapshot_preview1.")
            && err.contains("a plugin may import nothing"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
