//! The real Claude Code and the real Codex CLI, interactive in a pseudo-terminal under
//! `axiomctl run`, against the scripted model stand-in: one session per scenario. Each session
//! must report exactly the rules the scenario planted (and, for file rules, the file the agent
//! wrote), nothing else: a TODO written by the Write tool and by a shell heredoc, a false claim
//! of completion and of passing tests, a true claim (nothing), planning talk, dangerous
//! commands, a secret written to a config file, a clean session with git (nothing), and a
//! repository with TODOs already in `.git` and in the agent's home (nothing). Gemini CLI, a
//! third agent, runs the clean, TODO and planning scenarios.
use axiom_common::wire::Body;
use axiom_tests::{realagents::*, unique};

fn matrix(agent: Agent) {
    assert!(
        agent.installed(),
        "{} is not installed in {AGENTS_DIR}: run cargo xtask setup",
        agent.name()
    );
    let d = daemon(&format!("real_{}", agent.name()));
    let mut failures = Vec::new();
    // AXIOM_SCENARIO=name runs that scenario alone (debugging).
    let only = std::env::var("AXIOM_SCENARIO").ok();
    for sc in agent
        .scenarios()
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| o == s.name))
    {
        let dir = std::env::temp_dir().join(unique(&format!("real-{}-{}", agent.name(), sc.name)));
        let s = run_session(&d, agent, &sc, &dir);
        let ws = dir.join("ws");
        let got = s.reported(&ws);
        let want = sc.expect.clone();
        // What reached the model: the agent's requests carried the prompt, and the scripted turns
        // were all served (the stand-in logs them).
        assert!(
            s.model_log.iter().any(|e| e["event"] == "request"
                && e["main"] == true
                && e["body"].to_string().contains(sc.prompt)),
            "{}/{}: the prompt never reached the model",
            agent.name(),
            sc.name
        );
        let (_, fp, fn_) = judge(&want, &got);
        if fp + fn_ > 0 {
            failures.push(format!(
                "{}/{}: reported {:?}, expected {:?}\n  details: {:?}",
                agent.name(),
                sc.name,
                got,
                want,
                s.events
                    .iter()
                    .filter_map(|e| match &e.body {
                        Body::Violation {
                            rule,
                            detail,
                            scope,
                            ..
                        } => Some(format!("{rule} [{scope:?}]: {detail}")),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            ));
        }
        // The planted file exists where the violation says.
        if let Some(path) = sc.expect.iter().find_map(|e| e.path.as_deref()) {
            let full = ws.join(path);
            assert!(
                full.exists(),
                "{}/{}: {path} was not written",
                agent.name(),
                sc.name
            );
        }
        if std::env::var_os("AXIOM_KEEP_SESSIONS").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            std::fs::write(dir.join("terminal.bin"), &s.terminal).unwrap();
            let events: Vec<String> = s
                .events
                .iter()
                .map(|e| serde_json::to_string(e).unwrap())
                .collect();
            std::fs::write(dir.join("events.jsonl"), events.join("\n")).unwrap();
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn claude_code_scenarios() {
    matrix(Agent::Claude);
}

#[test]
fn codex_scenarios() {
    matrix(Agent::Codex);
}

/// A third agent, of another UI family: the clean, TODO and planning scenarios.
#[test]
fn gemini_cli_basic_scenarios() {
    matrix(Agent::Gemini);
}

/// With the shipped actions: `stop-planning` types its message into the real TUI (ESC, a pause,
/// a bracketed paste, a pause, Enter). It reaches the model as the user's next message, and the
/// intervention says it was delivered.
#[test]
fn interventions_reach_the_model() {
    let d = axiom_tests::Daemon::start("real_delivery", &[]);
    let message = "Stop planning and start implementing. Write the code now.";
    for agent in [Agent::Claude, Agent::Codex] {
        let sc = delivery_scenario();
        let dir = std::env::temp_dir().join(unique(&format!("real-{}-delivery", agent.name())));
        let s = run_session(&d, agent, &sc, &dir);
        let reached = s.model_log.iter().any(|e| {
            e["event"] == "request" && e["main"] == true && e["body"].to_string().contains(message)
        });
        assert!(
            reached,
            "{}: the intervention never reached the model; events: {:?}",
            agent.name(),
            s.events
                .iter()
                .filter(|e| matches!(e.body, Body::Intervention { .. } | Body::Violation { .. }))
                .collect::<Vec<_>>()
        );
        let delivered = s.events.iter().find_map(|e| match &e.body {
            Body::Intervention {
                action, delivered, ..
            } if action == "inject" => Some(*delivered),
            _ => None,
        });
        assert_eq!(delivered, Some(Some(true)), "{}", agent.name());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
