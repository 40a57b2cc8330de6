use std::time::Duration;

use super::held::HOLD_NS;
use super::*;

fn ev(agent: u64, body: Body) -> Event {
    Event {
        seq: 0,
        time_ns: now_ns(),
        agent,
        pid: 10,
        tgid: 10,
        ppid: 1,
        uid: 1000,
        cgroup_id: 0,
        comm: "agent".into(),
        truncated: false,
        body,
    }
}

fn out(text: &str, target: &str) -> Body {
    Body::Output {
        fd: 1,
        syscall: axiom_proto::wire::WriteCall::Write,
        read_back: false,
        count: text.len() as u64,
        target: Some(target.into()),
        text: text.into(),
        captured: text.len() as u32,
        redacted: Vec::new(),
    }
}

fn file(op: FileOp, path: &str, path2: Option<&str>) -> Body {
    Body::File {
        op,
        path: path.into(),
        path2: path2.map(Into::into),
        flags: 0,
        mode: 0,
    }
}

fn rename(from: &str, to: &str) -> Body {
    file(FileOp::Rename, from, Some(to))
}

fn started(command: &[&str]) -> Body {
    Body::AgentStarted {
        name: None,
        command: command.iter().map(|c| c.to_string()).collect(),
        workspace: None,
        profile: None,
        terminal: None,
    }
}

fn set() -> RuleSet {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/rules/default.toml");
    RuleSet::load(&[path]).expect("default rules")
}

fn ids(set: &RuleSet, f: &[Finding]) -> Vec<String> {
    f.iter().map(|f| set.rules[f.rule].id.clone()).collect()
}

#[test]
fn a_phrase_split_across_writes_matches_once() {
    let set = set();
    let mut e = Engine::default();
    let t = Instant::now();
    assert!(
        e.on_event(&set, &ev(1, out("OK. Let me p", "/dev/pts/3")), t)
            .is_empty()
    );
    let f = e.on_event(&set, &ev(1, out("lan this.\n", "/dev/pts/3")), t);
    assert_eq!(ids(&set, &f), ["stop-planning"]);
    // Cooldown: the same phrase again right away is suppressed.
    assert!(
        e.on_event(&set, &ev(1, out("let me plan", "/dev/pts/3")), t)
            .is_empty()
    );
    assert_eq!(e.suppressed, 1);
}

#[test]
fn a_reused_fd_number_is_another_file_and_no_context() {
    let set = set();
    let mut e = Engine::default();
    let t = Instant::now();
    // "TO" ends one file, "DO" starts the next one written through the same fd number.
    assert!(
        e.on_event(&set, &ev(1, out("x = 1 # TO", "/w/a.py")), t)
            .is_empty()
    );
    assert!(
        e.on_event(&set, &ev(1, out("DO: y", "/w/b.py")), t)
            .is_empty()
    );
    // In one file it is a TODO.
    let f = e.on_event(&set, &ev(1, out("DO: y", "/w/a.py")), t);
    assert!(
        f.is_empty(),
        "a.py's window was replaced by b.py's: {:?}",
        ids(&set, &f)
    );
    assert!(
        e.on_event(&set, &ev(1, out("z # TO", "/w/c.py")), t)
            .is_empty()
    );
    let f = e.on_event(&set, &ev(1, out("DO later", "/w/c.py")), t);
    assert_eq!(ids(&set, &f), ["todo-left"]);
}

#[test]
fn claims_are_checked_against_what_the_agent_did() {
    let set = set();
    let mut e = Engine::default();
    let t = Instant::now();
    let claim = || out("I've successfully implemented the parser.", "/dev/pts/1");
    assert_eq!(
        ids(&set, &e.on_event(&set, &ev(1, claim()), t)),
        ["false-completion"]
    );
    // Agent 2 wrote a file first: its claim holds.
    e.on_event(&set, &ev(2, out("fn main() {}", "/work/src/main.rs")), t);
    assert!(e.on_event(&set, &ev(2, claim()), t).is_empty());
}

#[test]
fn terminal_text_is_read_from_the_screen_once() {
    let set = set();
    let mut e = Engine::default();
    let t = Instant::now();
    // Claude Code paints the words with cursor moves between them.
    let f = e.on_event(
        &set,
        &ev(
            1,
            out(
                "\x1b[2;1H● Let\x1b[2;7Hme\x1b[2;10Hplan this.",
                "/dev/pts/3",
            ),
        ),
        t,
    );
    assert_eq!(ids(&set, &f), ["stop-planning"]);
    assert_eq!(f[0].scope, Some(Scope::Terminal));
    // Repainted lower down long after (no cooldown left): the same text, judged once.
    let f = e.on_event(
        &set,
        &ev(1, out("\x1b[2J\x1b[9;1H● Let me plan this.", "/dev/pts/3")),
        t + Duration::from_secs(500),
    );
    assert!(f.is_empty(), "{:?}", ids(&set, &f));
    // Bytes on a pipe are not the agent's screen.
    let mut e = Engine::default();
    let f = e.on_event(&set, &ev(1, out("Let me plan this.", "pipe:[42]")), t);
    assert!(f.is_empty());
}

#[test]
fn the_prompt_echoed_on_screen_is_not_a_claim() {
    let set = set();
    let mut e = Engine::default();
    let t = Instant::now();
    e.on_event(
        &set,
        &ev(
            1,
            started(&["claude", "add a parser and make sure the tests pass"]),
        ),
        t,
    );
    let f = e.on_event(
        &set,
        &ev(
            1,
            out(
                "\x1b[3;1H❯ add a parser and make sure the tests pass",
                "/dev/pts/3",
            ),
        ),
        t,
    );
    assert!(f.is_empty(), "{:?}", ids(&set, &f));
    let f = e.on_event(
        &set,
        &ev(1, out("\x1b[5;1H● Done: all tests pass.", "/dev/pts/3")),
        t,
    );
    assert_eq!(ids(&set, &f), ["false-tests-pass"]);
}

#[test]
fn agent_state_is_not_work_and_a_temporary_file_takes_its_final_name() {
    let set = set();
    let mut e = Engine::default();
    let t = Instant::now();
    for path in [
        "/w/.git/hooks/pre-push.sample",
        "/home/u/.claude/projects/x.jsonl",
    ] {
        let f = e.on_event(&set, &ev(1, out("# TODO: later\n", path)), t);
        assert!(f.is_empty(), "{path}: {:?}", ids(&set, &f));
    }
    // Nothing of that was work: a claim is false.
    let f = e.on_event(
        &set,
        &ev(1, out("\x1b[1;1HI've implemented it.", "/dev/pts/1")),
        t,
    );
    assert_eq!(ids(&set, &f), ["false-completion"]);
    // The Write tool's atomic write: the finding waits for the rename, then names the file.
    let tmp = "/w/src/app.py.tmp.4242.k3j2";
    assert!(
        e.on_event(&set, &ev(2, out("x = 1  # TODO: later\n", tmp)), t)
            .is_empty()
    );
    let f = e.on_event(&set, &ev(2, rename(tmp, "/w/src/app.py")), t);
    assert_eq!(ids(&set, &f), ["todo-left"]);
    assert_eq!(f[0].path.as_deref(), Some("/w/src/app.py"));
    // The rules thread fell behind: the rename is read long after the write, by its clock;
    // the sensor's mark had not passed the write's hold, so the finding was still held.
    let tmp = "/w/src/lib.py.tmp.4242.x9z8";
    let w = ev(3, out("y = 2  # TODO: later\n", tmp));
    assert!(e.on_event(&set, &w, t).is_empty());
    let late = t + Duration::from_secs(120);
    e.read_to(w.time_ns + HOLD_NS - 1);
    assert!(e.release().is_empty());
    let f = e.on_event(&set, &ev(3, rename(tmp, "/w/src/lib.py")), late);
    assert_eq!(ids(&set, &f), ["todo-left"]);
    assert_eq!(f[0].path.as_deref(), Some("/w/src/lib.py"));
    // The agent flushed the file to disk before it renamed it, seconds later on a machine
    // busy with I/O; the rules thread kept up and looked at its held findings meanwhile.
    let tmp = "/w/src/cli.py.tmp.4242.a1b2";
    let w = ev(4, out("z = 3  # TODO: later\n", tmp));
    assert!(e.on_event(&set, &w, t).is_empty());
    e.read_to(w.time_ns + 10_000_000_000);
    assert!(e.release().is_empty());
    let f = e.on_event(&set, &ev(4, rename(tmp, "/w/src/cli.py")), t);
    assert_eq!(ids(&set, &f), ["todo-left"]);
    assert_eq!(f[0].path.as_deref(), Some("/w/src/cli.py"));
    // The write's event comes after its rename (read back from the file once it was closed):
    // the rename, later in the kernel's record than the write, names it, however late.
    let tmp = "/w/src/late.py.tmp.4242.e5f6";
    let w = ev(8, out("# TODO: later\n", tmp));
    let mut r = ev(8, rename(tmp, "/w/src/late.py"));
    r.time_ns = w.time_ns + 1_000;
    assert!(e.on_event(&set, &r, t).is_empty());
    let f = e.on_event(&set, &w, t + Duration::from_secs(20));
    assert_eq!(f[0].path.as_deref(), Some("/w/src/late.py"));
    // A rename earlier than the write is another file's that had the name: it names nothing;
    // the finding waits for a rename of its own, or its hold.
    let mut w = ev(9, out("# TODO: later\n", tmp));
    w.time_ns = r.time_ns + 1_000;
    assert!(
        e.on_event(&set, &w, t).is_empty(),
        "named by an older rename"
    );
    e.read_to(w.time_ns + HOLD_NS);
    let f = e.release();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].path.as_deref(), Some(tmp));
    // Renamed relative to a directory descriptor closed before the sensor looked it up (Claude
    // Code's runtime does so): by the same process, a file of that name, in its directory.
    let tmp = "/w/config/deploy.py.tmp.4242.a0b1";
    let w = ev(10, out("# TODO: later\n", tmp));
    assert!(e.on_event(&set, &w, t).is_empty());
    let other = Event {
        tgid: 11,
        ..ev(
            10,
            rename(
                "/proc/self/fd/15/deploy.py.tmp.4242.a0b1",
                "/proc/self/fd/15/deploy.py",
            ),
        )
    };
    assert!(
        e.on_event(&set, &other, t).is_empty(),
        "another process's rename"
    );
    let f = e.on_event(
        &set,
        &ev(
            10,
            rename(
                "/proc/self/fd/15/deploy.py.tmp.4242.a0b1",
                "/proc/self/fd/15/deploy.py",
            ),
        ),
        t,
    );
    assert_eq!(f[0].path.as_deref(), Some("/w/config/deploy.py"));
    // A temporary file that stays: once the kernel's record is past its hold with no rename,
    // it is reported under the name it was written to.
    let tmp = "/w/src/keep.py.tmp";
    let w = ev(7, out("# TODO: later\n", tmp));
    assert!(e.on_event(&set, &w, t).is_empty());
    e.read_to(w.time_ns + HOLD_NS);
    let f = e.release();
    assert_eq!(ids(&set, &f), ["todo-left"]);
    assert_eq!(f[0].path.as_deref(), Some(tmp));
    // A temporary file removed, or its agent gone: no rename will come; the finding is due
    // at once, under the name the text was written to.
    let tmp = "/w/src/x.py.tmp.4242.c3d4";
    assert!(
        e.on_event(&set, &ev(5, out("# TODO: later\n", tmp)), t)
            .is_empty()
    );
    let f = e.on_event(&set, &ev(5, file(FileOp::Unlink, tmp, None)), t);
    assert_eq!(f[0].path.as_deref(), Some(tmp));
    assert!(
        e.on_event(&set, &ev(6, out("# TODO: later\n", tmp)), t)
            .is_empty()
    );
    let gone = Body::AgentExited {
        code: Some(0),
        signal: None,
    };
    let f = e.on_event(&set, &ev(6, gone), t);
    assert_eq!(ids(&set, &f), ["todo-left"]);
}

#[test]
fn planning_timeout_fires_once() {
    let set = set();
    let mut e = Engine::default();
    let t = Instant::now();
    e.on_event(&set, &ev(1, started(&[])), t);
    assert!(e.tick(&set, t + Duration::from_secs(10)).is_empty());
    let late = t + Duration::from_secs(301);
    assert_eq!(ids(&set, &e.tick(&set, late)), ["planning-timeout"]);
    assert!(
        e.tick(&set, late + Duration::from_secs(1000))
            .iter()
            .all(|f| set.rules[f.rule].id != "planning-timeout")
    );
}

#[test]
fn axioms_own_hook_calls_are_not_the_agents_commands() {
    assert!(is_axiom_hook(
        "/bin/sh -c exec '/usr/bin/axiomctl' --socket '/run/axiom/axiomd.sock' hook"
    ));
    assert!(is_axiom_hook(
        "/usr/bin/axiomctl --socket /run/axiom/axiomd.sock hook"
    ));
    assert!(!is_axiom_hook("python3 -m pytest -q"));
    assert!(!is_axiom_hook("git commit -m hook"));
}

fn exec_in(tgid: u32, argv: &[&str], cwd: Option<&str>) -> (u32, Body) {
    (
        tgid,
        Body::Exec {
            filename: argv[0].into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            cwd: cwd.map(String::from),
            old_pid: tgid,
            stdin: None,
        },
    )
}

fn of(agent: u64, (tgid, body): (u32, Body)) -> Event {
    Event {
        pid: tgid,
        tgid,
        ..ev(agent, body)
    }
}

fn exit(tgid: u32, code: i32) -> (u32, Body) {
    (
        tgid,
        Body::Exit {
            code: Some(code),
            signal: None,
        },
    )
}

#[test]
fn a_tests_pass_claim_holds_only_after_a_passing_run_since_the_last_write() {
    let set = set();
    let mut e = Engine::default();
    let t = Instant::now;
    let claim = "All tests pass.";
    let said = |e: &mut Engine| {
        e.contradicted_claims(&set, 1, claim, t())
            .into_iter()
            .map(|c| c.evidence)
            .collect::<Vec<_>>()
    };
    e.on_event(&set, &ev(1, started(&["claude"])), t());
    // Nothing ran.
    assert!(
        said(&mut e)[0].contains("no command at all"),
        "{:?}",
        said(&mut e)
    );
    e.on_event(&set, &ev(1, out("x = 1\n", "/w/app.py")), t());
    // `python3 -m unittest` ran and passed: the claim holds.
    let unittest = [
        "/usr/bin/python3",
        "-m",
        "unittest",
        "discover",
        "-s",
        "tests",
        "-v",
    ];
    e.on_event(&set, &of(1, exec_in(20, &unittest, Some("/w"))), t());
    e.on_event(
        &set,
        &of(1, (20, out("Ran 2 tests in 0.001s\n\nOK\n", "pipe:[7]"))),
        t(),
    );
    e.on_event(&set, &of(1, exit(20, 0)), t());
    assert!(said(&mut e).is_empty(), "{:?}", said(&mut e));
    // A write to the code after it: the run no longer speaks for it.
    e.on_event(&set, &ev(1, out("x = 2\n", "/w/app.py")), t());
    let ev_ = said(&mut e);
    assert!(
        ev_[0].contains("write /w/app.py after its last test run") && ev_[0].contains("OK"),
        "{ev_:?}"
    );
    // A failing run: quoted with its status and summary.
    e.on_event(
        &set,
        &of(1, exec_in(21, &["pytest", "-q"], Some("/w"))),
        t(),
    );
    e.on_event(
        &set,
        &of(
            1,
            (21, out("F.\n1 failed, 1 passed in 0.02s\n", "pipe:[7]")),
        ),
        t(),
    );
    e.on_event(&set, &of(1, exit(21, 1)), t());
    let ev_ = said(&mut e);
    assert!(
        ev_[0].contains("`pytest -q` exited 1: \"1 failed, 1 passed in 0.02s\""),
        "{ev_:?}"
    );
    // Writes by a run going on (its caches) do not make it stale; it passes.
    e.on_event(
        &set,
        &of(1, exec_in(22, &["pytest", "-q"], Some("/w"))),
        t(),
    );
    e.on_event(&set, &of(1, (22, out("cache", "/w/.pytest_cache/v"))), t());
    e.on_event(&set, &of(1, (22, out("data", "/w/report.xml"))), t());
    assert!(said(&mut e)[0].contains("still running"));
    e.on_event(&set, &of(1, exit(22, 0)), t());
    assert!(said(&mut e).is_empty(), "{:?}", said(&mut e));
}

#[test]
fn a_projects_test_script_is_a_test_run() {
    let dir = std::env::temp_dir().join(format!("axiom-testrun-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("package.json"),
        r#"{"scripts": {"verify": "node --test && eslint ."}}"#,
    )
    .expect("package.json");
    std::fs::write(dir.join("Makefile"), "ci:\n\tpytest -q\n").expect("Makefile");
    let d = dir.display().to_string();
    let p = |argv: &[&str]| {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        project_config(&argv, &d).and_then(|p| rules::testrun::test_runner(&argv, Some(&p)))
    };
    assert_eq!(p(&["make", "ci"]).as_deref(), Some("make ci"));
    assert_eq!(
        p(&["npm", "run", "verify"]).as_deref(),
        Some("npm run verify")
    );
    assert_eq!(p(&["pytest"]), None, "not read for other commands");
    assert_eq!(p(&["npm", "run", "lint"]), None);
    let _ = std::fs::remove_dir_all(&dir);
}
