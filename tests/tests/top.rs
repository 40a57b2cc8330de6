//! `axiomctl top` as a user runs it: an ordinary user's view in a real terminal (tmux), driven
//! by its keys.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use axiom_proto::wire::{AgentState, Request};
use axiom_tests::{users::SessionUser, *};

const T: Duration = Duration::from_secs(30);

/// An agent under `axiomctl run` that writes a file and runs a command every 100 ms.
fn busy_agent(d: &Daemon, name: &str, prefix: &[String], ws: &Path) -> (std::process::Child, u64) {
    let script = "i=0; while [ $i -lt 900 ]; do i=$((i+1)); echo $i > f$i.txt; ls > /dev/null; sleep 0.1; done";
    d.run_script((name, ws), prefix, script, T)
}

/// tmux on a server of its own (`-L`), killed on drop.
struct Tmux(String);

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.0]);
        c
    }
    fn screen(&self) -> String {
        let o = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    /// The screen once `ok` holds of it.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(t0.elapsed() < T, "{what}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// The row of agent `id` on the screen, split into its columns.
fn row(screen: &str, id: u64) -> Option<Vec<String>> {
    screen
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|w| w.first().map(String::as_str) == Some(&id.to_string()))
}

/// An ordinary user's `top`, without colour: their agent's row appears and its counts move; a
/// root agent running beside it is not listed; `f` on the row freezes the agent (the kernel's
/// cgroup says so), `t` thaws it. The screen is kept as the test's artefact.
#[test]
fn top_shows_the_users_agents_live_and_freezes_from_the_view() {
    let d = Daemon::start("top", &[]);
    let user = SessionUser::new();
    let ws = user.home().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let (uid, gid) = (user.uid(), user.gid());
    assert!(
        Command::new("chown")
            .arg(format!("{uid}:{gid}"))
            .arg(&ws)
            .status()
            .unwrap()
            .success()
    );
    let (mut mine, agent) = busy_agent(&d, "top-mine", &user.prefix(&[]), &ws);
    let other_ws = std::env::temp_dir().join(unique("top_other"));
    std::fs::create_dir_all(&other_ws).unwrap();
    let (mut other, other_agent) = busy_agent(&d, "top-other", &[], &other_ws);

    let t = Tmux(unique("axiom_top"));
    let mut top = user.prefix(&["NO_COLOR=1"]);
    top.push(axiomctl_bin().display().to_string());
    top.extend([
        "--socket".into(),
        d.socket.display().to_string(),
        "top".into(),
    ]);
    assert!(
        t.cmd()
            .args(["new-session", "-d", "-s", "top", "-x", "160", "-y", "24"])
            .args(&top)
            .status()
            .unwrap()
            .success()
    );
    let first = t.wait("the agent's row never appeared", |s| {
        row(s, agent).is_some()
    });
    let files = |s: &str| -> u64 {
        row(s, agent)
            .and_then(|r| r.get(5)?.parse().ok())
            .unwrap_or(0)
    };
    let before = files(&first);
    let moved = t.wait("the agent's counts did not move", |s| files(s) > before + 3);
    assert!(
        row(&moved, other_agent).is_none(),
        "another user's agent is listed:\n{moved}"
    );
    let r = row(&moved, agent).unwrap();
    assert_eq!(r.get(2).map(String::as_str), Some("running"), "{moved}");
    assert!(!moved.contains("\u{1b}["), "colour despite NO_COLOR");
    std::fs::write(artifacts_dir().join("top.txt"), &moved).unwrap();

    // Freeze from the view: the agent's cgroup is frozen.
    assert!(
        t.cmd()
            .args(["send-keys", "-t", "top", "f"])
            .status()
            .unwrap()
            .success()
    );
    let state = |want: AgentState| {
        let t0 = Instant::now();
        loop {
            let agents = d.client().request(&Request::Agents).agents.unwrap();
            if agents.iter().any(|a| a.id == agent && a.state == want) {
                return;
            }
            assert!(t0.elapsed() < T, "agent {agent} never {want:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    state(AgentState::Frozen);
    t.wait("the view does not say frozen", |s| {
        row(s, agent).is_some_and(|r| r.get(2).map(String::as_str) == Some("frozen"))
    });
    assert!(
        t.cmd()
            .args(["send-keys", "-t", "top", "t"])
            .status()
            .unwrap()
            .success()
    );
    state(AgentState::Running);
    assert!(
        t.cmd()
            .args(["send-keys", "-t", "top", "q"])
            .status()
            .unwrap()
            .success()
    );
    for (c, a) in [(&mut mine, agent), (&mut other, other_agent)] {
        assert!(d.client().request(&Request::Kill { agent: a }).ok);
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&other_ws);
}
