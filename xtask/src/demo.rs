//! The README's first command: build, start axiomd (embedded defaults) if it is not running, and
//! run the real Claude Code under it — driven by the scripted model stand-in, offline, without an
//! API key — printing live what axiomd sees, what it tells the agent and what reached the model.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use axiom_proto::wire::{Body, DEFAULT_SOCKET, Event};
use axiom_tests::{
    Daemon,
    realagents::{self, AGENT_PACKAGES, Agent, Live, requests_with},
};

use crate::{build, require_root, root, setup::setup, target_dir};

const LOG: &str = "/var/log/axiom/axiomd.log";

fn reachable() -> bool {
    std::os::unix::net::UnixStream::connect(DEFAULT_SOCKET).is_ok()
}

fn start_axiomd() -> anyhow::Result<()> {
    std::fs::create_dir_all(Path::new(LOG).parent().context("log dir")?)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG)?;
    // The default principles from this checkout (an installed axiomd reads /usr/share/axiom).
    let child = Command::new(target_dir().join("axiomd"))
        .arg("--rules")
        .arg(root().join("config/rules"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting axiomd")?;
    let t0 = Instant::now();
    while !reachable() {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("axiomd did not start; see {LOG}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("demo: started axiomd (pid {}), log {LOG}", child.id());
    Ok(())
}

/// One line for an event worth showing (what the agent ran, what axiomd found and did).
fn line(e: &Event) -> Option<String> {
    match &e.body {
        Body::Exec { argv, .. } if argv.first().is_some_and(|a| a.ends_with("python3")) => {
            Some(format!("  ran       {}", argv.join(" ")))
        }
        Body::Violation { rule, detail, .. } => Some(format!("  VIOLATION {rule}: {detail}")),
        Body::Intervention {
            action,
            detail,
            delivered,
            channel,
            ..
        } => Some(format!(
            "  TOLD      {action} via {} ({}): {detail}",
            channel.map_or("-", |c| c.name()),
            match delivered {
                Some(true) => "delivered",
                Some(false) => "NOT delivered",
                None => "done",
            }
        )),
        _ => None,
    }
}

pub fn demo() -> anyhow::Result<()> {
    require_root("the demo (axiomd)")?;
    setup()?;
    build()?;
    if reachable() {
        println!("demo: axiomd is already running on {DEFAULT_SOCKET}");
    } else {
        start_axiomd()?;
    }
    if !Agent::Claude.installed() {
        bail!("Claude Code is not installed: cargo xtask setup installs it");
    }
    // SAFETY: single-threaded here; the session helpers read it to find axiomctl.
    unsafe { std::env::set_var("AXIOM_BIN_DIR", target_dir()) };
    let version = AGENT_PACKAGES
        .iter()
        .find(|(p, _)| p.contains("claude-code"))
        .map_or("?", |(_, v)| v);
    let dir = axiom_tests::users::SessionUser::new();
    println!(
        "demo: the real Claude Code {version} (from npm) runs under `axiomctl run` with the \
         default profile, as the ordinary user {} (made for the demo, home {}),\n      in a \
         terminal of its own. Its model is a SCRIPTED STAND-IN on 127.0.0.1 \
         (tests/model/standin.py): no network, no API key. The model's words are scripted;\n      \
         what Claude Code does with them, and what Axiom sees and tells it, are real.\n",
        dir.name(),
        dir.display()
    );
    let d = Daemon::attach(Path::new(DEFAULT_SOCKET));
    let sc = realagents::demo_scenario();
    let mut live = Live::start(&d, Agent::Claude, &sc, &dir);
    println!(
        "demo: agent {} started: claude \"{}\"",
        live.agent, sc.prompt
    );
    let (mut shown, mut asked) = (0, 0);
    let t0 = Instant::now();
    let mut done = false;
    while !done && t0.elapsed() < Duration::from_secs(120) {
        live.sub.drain_for(Duration::from_millis(200));
        for e in live.sub.seen[shown..]
            .iter()
            .filter(|e| e.agent == live.agent)
        {
            if let Some(l) = line(e) {
                println!("{l}");
            }
        }
        shown = live.sub.seen.len();
        let log = live.model_log();
        let turns: Vec<_> = log.iter().filter(|e| e["event"] == "turn").collect();
        for t in &turns[asked..] {
            let i = t["turn"].as_u64().unwrap_or(0) as usize;
            let said = (sc.turns)(&dir.join("ws"), &dir)["turns"][i]["text"]
                .as_str()
                .unwrap_or("")
                .to_string();
            println!("  model     (scripted turn {i}) \"{said}\"");
        }
        asked = turns.len();
        done = log.iter().any(|e| e["event"] == "script_done");
    }
    live.sub.drain_for(Duration::from_secs(3));
    for e in live.sub.seen[shown..]
        .iter()
        .filter(|e| e.agent == live.agent)
    {
        if let Some(l) = line(e) {
            println!("{l}");
        }
    }
    let ws = dir.join("ws");
    let s = live.finish(&d);
    // What the model read from Axiom: the TODO message as the user's turn, the refused stop.
    let todo_told = !requests_with(&s.model_log, "You left a TODO/FIXME in the code.").is_empty();
    let stop_refused = !requests_with(
        &s.model_log,
        "the kernel saw this agent run no test command",
    )
    .is_empty();
    let fixed = std::fs::read_to_string(ws.join("greet.py"))
        .is_ok_and(|t| !t.contains("TODO") && t.contains("def greet"));
    let reported = s.reported(&ws);
    println!(
        "\ndemo: reported {:?}\ndemo: the TODO message reached the model: {todo_told}; the file was \
         fixed: {fixed}; the false \"tests pass\" was refused at Stop with the evidence: {stop_refused}",
        reported.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>()
    );
    println!(
        "demo: axiomd keeps running: try `{0}/axiomctl status`, `{0}/axiomctl agents`, \
         `{0}/axiomctl query --agent {1}` or `{0}/axiomctl run -- <your agent>`.",
        target_dir().display(),
        s.agent
    );
    let _ = std::fs::remove_dir_all(&dir);
    if !(done && todo_told && fixed && stop_refused) {
        bail!("the demo did not go as scripted (see above)");
    }
    Ok(())
}
