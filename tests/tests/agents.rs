//! Agents started with `axiomctl run`: a cgroup of their own, the invoking user's identity, and
//! freeze / thaw / kill of the whole tree. Real axiomd, real axiomctl, real processes.
use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use axiom_proto::wire::Request;
use axiom_tests::*;

const T: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;

fn axiomctl(d: &Daemon) -> Command {
    let mut c = Command::new(axiomctl_bin());
    c.arg("--socket").arg(&d.socket).arg("--json");
    c
}

/// Waits until the agent named `name` runs at least `procs` processes; returns its id.
fn wait_for_agent(d: &Daemon, name: &str, procs: usize) -> u64 {
    let t0 = Instant::now();
    loop {
        let agents = d.client().request(&Request::Agents).agents.unwrap();
        if let Some(a) = agents
            .iter()
            .find(|a| a.name.as_deref() == Some(name) && a.pids.len() >= procs)
        {
            return a.id;
        }
        assert!(t0.elapsed() < T, "agent {name} never ran {procs} processes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_puts_the_agent_in_its_own_cgroup_as_the_invoking_user() {
    let d = Daemon::start("agents_run", &[]);
    let out = axiomctl(&d)
        .args(["run", "--watch", "--name", "probe", "--", "/bin/sh", "-c"])
        .arg("id -u; cat /proc/self/cgroup; test -t 0 && test -t 1 && echo in-a-tty; exit 3")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The agent's terminal output (CR LF, through its pty) is interleaved with the JSON events.
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(
        text.lines().any(|l| l == "in-a-tty"),
        "the agent has no terminal: {text}"
    );
    assert!(text.lines().any(|l| l == NOBODY.to_string()), "{text}");
    let cg_line = text
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap_or_else(|| panic!("{text}"));
    let root = d.cgroup_root.to_string_lossy().into_owned();
    let mount = cgroup2_mount().to_string_lossy().into_owned();
    let rel = root.strip_prefix(&mount).unwrap();
    assert!(
        cg_line.starts_with(&format!("0::{rel}/agent-")),
        "{cg_line} not under {rel}"
    );
    // The exec was seen: nothing ran before tracking.
    assert!(text.contains(r#""kind":"exec""#), "{text}");
    let agents = d.client().request(&Request::Agents).agents.unwrap();
    let a = agents
        .iter()
        .find(|a| a.name.as_deref() == Some("probe"))
        .unwrap();
    assert_eq!(
        (a.owner_uid, a.kind.name(), a.state.name()),
        (NOBODY, "cgroup", "exited")
    );
}

#[test]
fn freeze_stops_output_thaw_resumes_and_kill_ends_the_tree() {
    let d = Daemon::start("agents_steer", &[]);
    let mut run = axiomctl(&d)
        .args(["run", "--name", "ticker", "--", "/bin/sh", "-c"])
        .arg("( while true; do echo child-tick; sleep 0.05; done ) & while true; do echo tick; sleep 0.05; done")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = wait_for_agent(&d, "ticker", 2);
    let mut sub = d.subscribe(false);
    let ticks = |sub: &Subscription, from: usize| {
        sub.seen[from..]
            .iter()
            .filter(|e| e.agent == agent && output_text(e).is_some_and(|t| t.contains("tick")))
            .count()
    };
    sub.wait_for("ticks", T, |e| {
        e.agent == agent && output_text(e) == Some("tick\n")
    });

    assert!(d.client().request(&Request::Freeze { agent }).ok);
    sub.drain_for(Duration::from_millis(300)); // let in-flight output arrive
    let frozen_at = sub.seen.len();
    sub.drain_for(Duration::from_millis(500));
    assert_eq!(ticks(&sub, frozen_at), 0, "a frozen agent kept printing");
    let agents = d.client().request(&Request::Agents).agents.unwrap();
    assert_eq!(
        agents.iter().find(|a| a.id == agent).unwrap().state,
        "frozen"
    );

    assert!(d.client().request(&Request::Thaw { agent }).ok);
    let thawed_at = sub.seen.len();
    sub.drain_for(Duration::from_millis(500));
    assert!(ticks(&sub, thawed_at) >= 2, "a thawed agent did not resume");

    assert!(d.client().request(&Request::Kill { agent }).ok);
    let st = run.wait().unwrap();
    assert_eq!(
        st.code(),
        Some(128 + 9),
        "axiomctl passes the agent's SIGKILL through"
    );
    let t0 = Instant::now();
    loop {
        let agents = d.client().request(&Request::Agents).agents.unwrap();
        let a = agents.iter().find(|a| a.id == agent).unwrap();
        if a.pids.is_empty() {
            assert_eq!(a.state, "exited");
            break;
        }
        assert!(t0.elapsed() < T, "kill left {:?} alive", a.pids);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its stdout saw the ticks it printed before the kill.
    let lines: Vec<String> = BufReader::new(run.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(lines.iter().any(|l| l.trim_end_matches('\r') == "tick"));
}

#[test]
fn another_user_may_not_steer_or_watch_what_is_not_theirs() {
    let d = Daemon::start("agents_authz", &[]);
    let mut root_proc = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    // axiomctl as nobody: watch a root process → refused with the "refused" exit code.
    let out = axiomctl(&d)
        .args(["watch", &root_proc.id().to_string()])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77));
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    // Root's agent cannot be frozen by nobody.
    let r = d.track_pid(root_proc.id());
    let agent = r.agent.unwrap();
    let out = axiomctl(&d)
        .args(["freeze", &agent.to_string()])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77));
    // Nor listed for them.
    let out = axiomctl(&d)
        .arg("agents")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let listed: Vec<axiom_proto::wire::AgentInfo> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(listed.iter().all(|a| a.id != agent));
    let _ = root_proc.kill();
    let _ = root_proc.wait();
}

/// tmux on a private server: a real terminal that can be typed into, resized and read.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, what: &str) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(t0.elapsed() < T, "no {what:?} on screen:\n{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

#[test]
fn run_relays_a_real_terminal_keys_resize_and_exit_code() {
    let d = Daemon::start("agents_pty", &[]);
    let tm = Tmux {
        socket: unique("axiom_pty"),
    };
    let run = format!(
        "{} --socket {} run -- /bin/bash --norc; echo EXIT=$?; sleep 60",
        axiomctl_bin().display(),
        d.socket.display()
    );
    assert!(
        tm.cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "100",
                "-y",
                "30",
                &run
            ])
            .status()
            .unwrap()
            .success()
    );
    tm.wait_for("started: pid");
    tm.cmd()
        .args([
            "send-keys",
            "-t",
            "t",
            "echo size-$(stty size | tr ' ' x)",
            "Enter",
        ])
        .status()
        .unwrap();
    tm.wait_for("size-30x100");
    tm.cmd()
        .args(["resize-window", "-t", "t", "-x", "120", "-y", "40"])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    tm.cmd()
        .args([
            "send-keys",
            "-t",
            "t",
            "echo size-$(stty size | tr ' ' x); exit 5",
            "Enter",
        ])
        .status()
        .unwrap();
    tm.wait_for("size-40x120");
    tm.wait_for("EXIT=5");
}

#[test]
fn stop_asks_every_process_of_the_agent_to_end() {
    let d = Daemon::start("agents_stop", &[]);
    let mut run = axiomctl(&d)
        .args([
            "run",
            "--name",
            "sleeper",
            "--",
            "/bin/sh",
            "-c",
            "sleep 30 & sleep 30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = wait_for_agent(&d, "sleeper", 3);
    let out = axiomctl(&d)
        .args(["stop", &agent.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run.wait().unwrap().code(), Some(128 + 15));
    let t0 = Instant::now();
    while !d
        .client()
        .request(&Request::Agents)
        .agents
        .unwrap()
        .iter()
        .any(|a| a.id == agent && a.pids.is_empty())
    {
        assert!(t0.elapsed() < T, "stop left processes behind");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn interventions_are_typed_into_the_agent_even_after_axiomctl_detaches() {
    let mut d = Daemon::start("agents_inject", &[]);
    let mut sub = d.subscribe(false);
    let script = "while read line; do echo \"got:$line\"; done";
    let mut run = axiomctl(&d)
        .args([
            "run",
            "--name",
            "typed",
            "--profile",
            "read-only",
            "--workspace",
            "/tmp",
        ])
        .args(["--", "/bin/sh", "-c", script])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = wait_for_agent(&d, "typed", 1);
    // The terminal is held right after the agent is registered (its first process is still
    // held before exec then, so nothing it writes can precede it): a listing in between sees
    // none yet.
    let t0 = Instant::now();
    let a = loop {
        let agents = d.client().request(&Request::Agents).agents.unwrap();
        let a = agents.into_iter().find(|a| a.id == agent).unwrap();
        if a.pty || t0.elapsed() > T {
            break a;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(a.command, ["/bin/sh", "-c", script]);
    assert_eq!(a.workspace.as_deref(), Some("/tmp"));
    assert_eq!(a.profile.as_deref(), Some("read-only"));
    assert_eq!(a.owner_uid, NOBODY);
    assert!(a.pty, "axiomd does not hold the agent's terminal");
    assert!(a.started_ns > 0 && a.exit_code.is_none());

    // The owner types into it through axiomd; the agent reads it from its terminal.
    let socket = d.socket.clone();
    let inject = |text: &str, uid: u32| {
        Command::new(axiomctl_bin())
            .arg("--socket")
            .arg(&socket)
            .args(["inject", &agent.to_string(), text])
            .uid(uid)
            .gid(uid)
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(inject("first-note", NOBODY), Some(0));
    let said = |want: &'static str| {
        move |e: &axiom_proto::wire::Event| {
            e.agent == agent && output_text(e).is_some_and(|t| t.contains(want))
        }
    };
    sub.wait_for(
        "the agent's answer to the injection",
        T,
        said("got:first-note"),
    );
    sub.wait_for("the intervention event", T, |e| {
        matches!(&e.body, axiom_proto::wire::Body::Intervention { action, .. } if action == "inject")
            && e.agent == agent
    });
    // Another (unprivileged) user may not type into it.
    assert_eq!(inject("intruder", 1), Some(77));

    // axiomctl goes away: the agent keeps its terminal, axiomd keeps typing into it.
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(inject("after-detach", NOBODY), Some(0));
    sub.wait_for(
        "an answer after axiomctl detached",
        T,
        said("got:after-detach"),
    );

    // It ends: the exit is recorded, announced, and survives an axiomd restart.
    assert!(d.client().request(&Request::Kill { agent }).ok);
    sub.wait_for("agent_exited", T, |e| {
        e.agent == agent
            && matches!(
                e.body,
                axiom_proto::wire::Body::AgentExited {
                    signal: Some(9),
                    ..
                }
            )
    });
    d.kill9();
    d.spawn();
    let agents = d.client().request(&Request::Agents).agents.unwrap();
    let a = agents
        .iter()
        .find(|a| a.id == agent)
        .expect("the agent is known after a restart");
    assert_eq!(a.name.as_deref(), Some("typed"));
    assert_eq!(a.profile.as_deref(), Some("read-only"));
    assert_eq!(a.exit_signal, Some(9));
    assert_eq!(a.state, "exited");
    assert_eq!(a.owner_uid, NOBODY);
    // A terminal that is gone gets a clear refusal.
    assert_eq!(inject("too-late", NOBODY), Some(10));
}

/// A process killed by a signal is reported with that signal, not the SIGKILL the kernel turns a
/// fatal signal into when it is sent (a group exit): SIGTERM is 15, SIGINT 2, SIGKILL 9.
#[test]
fn the_signal_a_process_dies_of_is_the_one_sent() {
    use nix::sys::signal::{Signal, kill};
    let d = Daemon::start("exit_signals", &[]);
    let cg = Cgroup::new("exit_signals");
    d.track_cgroup(&cg);
    let mut sub = d.subscribe(false);
    let sigs = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGKILL,
        Signal::SIGUSR1,
    ];
    // Each sleep starts with the default disposition of the signal it gets: a test run from a
    // background job inherits SIGINT and SIGQUIT ignored (sh does that without job control),
    // and an ignored SIGINT would not end the sleep at all.
    let mut children: Vec<_> = sigs
        .iter()
        .map(|_| {
            let mut c = cg.command("sleep");
            c.arg("100");
            // SAFETY: between fork and exec only async-signal-safe calls (signal(2)).
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut c, || {
                    for s in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1] {
                        libc::signal(s, libc::SIG_DFL);
                    }
                    Ok(())
                });
            }
            c.spawn().unwrap()
        })
        .collect();
    for c in &children {
        let pid = c.id();
        sub.wait_for("the sleep's exec", T, |e| {
            e.tgid == pid && matches!(e.body, axiom_proto::wire::Body::Exec { .. })
        });
    }
    for (c, sig) in children.iter().zip(sigs) {
        kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).unwrap();
    }
    for (c, sig) in children.iter().zip(sigs) {
        let pid = c.id();
        let e = sub.wait_for("the sleep's exit", T, |e| {
            e.tgid == pid && matches!(e.body, axiom_proto::wire::Body::Exit { .. })
        });
        assert_eq!(
            e.body,
            axiom_proto::wire::Body::Exit {
                code: None,
                signal: Some(sig as i32)
            },
            "{sig}"
        );
    }
    for c in &mut children {
        let _ = c.wait();
    }
}

/// An agent is not its owner: from inside it, `axiomctl untrack` and `freeze` of itself (the same
/// uid as its owner) are refused, and it stays tracked; outside, its owner may still.
#[test]
fn an_agent_cannot_untrack_or_steer_itself_through_axiomd() {
    let d = Daemon::start("agents_inside", &[]);
    let ctl = axiomctl_bin();
    let script = format!(
        "{c} --socket {s} untrack 1; echo untrack=$?; {c} --socket {s} freeze 1; echo freeze=$?; \
         {c} --socket {s} status >/dev/null; echo status=$?",
        c = ctl.display(),
        s = d.socket.display()
    );
    let out = axiomctl(&d)
        .args(["run", "--name", "inside", "--", "/bin/sh", "-c"])
        .arg(&script)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    for want in ["untrack=77", "freeze=77", "status=0"] {
        assert!(
            text.lines().any(|l| l == want),
            "{want}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let agents = d.client().request(&Request::Agents).agents.unwrap();
    let a = agents
        .iter()
        .find(|a| a.name.as_deref() == Some("inside"))
        .expect("the agent is still tracked");
    assert_eq!(a.id, 1);
    assert_ne!(a.state, "frozen");
}
