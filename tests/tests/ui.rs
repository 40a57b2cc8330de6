//! The session page (`axiomctl ui`) in a real browser: Debian's chromium, driven over
//! WebDriver (Debian's chromium-driver), showing a real Claude Code session to the ordinary
//! user who ran it, and not another user's.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use axiom_proto::wire::{Body, EventQuery, Request};
use axiom_tests::{
    browser::{Killed, browser, chromedriver, ui_server, wait_for},
    realagents::{Agent, demo_scenario, run_session},
    users::SessionUser,
    *,
};
use fantoccini::Locator;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// The timeline's rows as the page shows them.
const ROWS: &str = "return [...document.querySelectorAll('#timeline li')].map(li => ({\
    kind: li.dataset.kind || '', lane: li.dataset.lane || '', path: li.dataset.path || '', \
    rule: li.dataset.rule || '', delivered: li.dataset.delivered || '', text: li.textContent }));";

/// After a real Claude Code session (a TODO caught, the message delivered through its hook,
/// the file fixed, the false "tests pass" refused at its stop), its user opens the page: the
/// session is listed with its counts, another user's is not, and its timeline shows the write,
/// the violation, the intervention marked delivered and the fix, in that order; a write opens
/// to its content as written; the terminal replay shows the model's words.
#[test]
fn the_session_page_shows_a_real_claude_code_session_to_its_user_only() {
    require_root();
    let d = Daemon::start("ui_page", &[]);
    // Another user's agent, running while the page is open.
    let other = SessionUser::new();
    let ows = other.home().join("ws");
    std::fs::create_dir_all(&ows).unwrap();
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", other.uid(), other.gid()))
        .arg(&ows)
        .status()
        .unwrap();
    assert!(st.success());
    let (other_child, other_agent) = d.run_script(
        ("ui-other", &ows),
        &other.prefix(&[]),
        "echo theirs > theirs.txt; sleep 120",
        T,
    );
    let _other = Killed(other_child);

    let user = SessionUser::new();
    let s = run_session(&d, Agent::Claude, &demo_scenario(), user.home());
    let rules: Vec<String> = s
        .events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Violation { rule, .. } => Some(rule.clone()),
            _ => None,
        })
        .collect();
    assert!(
        rules.iter().any(|r| r == "todo-left") && rules.iter().any(|r| r == "false-tests-pass"),
        "the session did not go as the demo's: {rules:?}"
    );
    // The store has the session's end before the page is opened.
    let t0 = Instant::now();
    loop {
        let r = d.client().request(&Request::Query {
            events: EventQuery {
                agent: Some(s.agent),
                kinds: vec!["agent_exited".into()],
                ..Default::default()
            },
            sql: None,
        });
        if r.events.is_some_and(|e| !e.is_empty()) {
            break;
        }
        assert!(t0.elapsed() < T, "the store did not get the session's end");
        std::thread::sleep(Duration::from_millis(300));
    }

    // `axiomctl ui` as the session's user: it prints the page's address with its token.
    let (ui, url) = ui_server(&d.socket, &user);
    // Without its token the API refuses.
    let base = url
        .split('#')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let o = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{base}/api/sessions"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "401",
        "the API answered without the token"
    );

    let (_driver, driver_url) = chromedriver();
    let profile = std::env::temp_dir().join(unique("ui-chromium"));
    std::fs::create_dir_all(&profile).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&driver_url, &profile).await;
        c.goto(&url).await.unwrap();
        // The list: this user's session with its counts, not the other user's.
        let listed = wait_for(
            &c,
            "the session is not listed",
            "return [...document.querySelectorAll('#session-list tbody tr')].map(r => \
             [r.dataset.agent, ...[...r.cells].map(c => c.textContent)]);",
            |v| {
                v.as_array().is_some_and(|rows| {
                    rows.iter()
                        .any(|r| r[0].as_str() == Some(&s.agent.to_string()))
                })
            },
        )
        .await;
        let rows = listed.as_array().unwrap();
        assert!(
            !rows
                .iter()
                .any(|r| r[0].as_str() == Some(&other_agent.to_string())),
            "another user's agent is listed: {listed}"
        );
        let mine = rows
            .iter()
            .find(|r| r[0].as_str() == Some(&s.agent.to_string()))
            .unwrap();
        // Agent, kind, user, workspace, started, duration, state, violations, interventions,
        // delivered.
        assert_eq!(mine[2], "claude", "{mine}");
        assert_eq!(mine[3].as_str(), Some(user.name()), "{mine}");
        assert!(mine[7].as_str().is_some_and(|s| s.starts_with("exited")), "{mine}");
        let n = |i: usize| mine[i].as_str().unwrap_or("").split(' ').next().unwrap_or("").parse::<u64>().unwrap_or(0);
        assert!(n(8) >= 2 && n(9) >= 2 && n(10) >= 1, "counts: {mine}");

        // The session's timeline, in the order things happened.
        c.find(Locator::Css(&format!("#session-list tr[data-agent=\"{}\"]", s.agent)))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let file = user.home().join("ws/greet.py").display().to_string();
        // The whole session read (the page reads on until a page comes back short).
        wait_for(
            &c,
            "the timeline was not read to its end",
            "return document.getElementById('timeline-note').textContent;",
            |v| v.as_str().is_some_and(|t| t.contains("entries") && !t.contains("more")),
        )
        .await;
        let rows = c.execute(ROWS, vec![]).await.unwrap();
        let rows = rows.as_array().unwrap().clone();
        let at = |from: usize, what: &str, ok: &dyn Fn(&Value) -> bool| -> usize {
            from + rows[from..].iter().position(ok).unwrap_or_else(|| {
                panic!(
                    "no {what} after row {from}; the timeline:\n{}",
                    rows.iter()
                        .map(|r| r["text"].as_str().unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })
        };
        // Claude Code's Write with the TODO, refused at its hook (the file is not written),
        // the violation, the message delivered, then the fixed file as the kernel saw it
        // written, and the false claim at its stop.
        let asked = at(0, "the Write tool call for greet.py", &|r| {
            r["kind"] == "hook"
                && r["text"].as_str().is_some_and(|t| t.contains("Write") && t.contains(&file))
        });
        let violation = at(asked, "todo-left violation", &|r| {
            r["kind"] == "violation" && r["rule"] == "todo-left"
        });
        let told = at(violation, "delivered intervention", &|r| {
            r["kind"] == "intervention"
                && r["delivered"] == "true"
                && r["text"].as_str().is_some_and(|t| t.contains("todo-left"))
        });
        let fixed = at(told + 1, "the fix (greet.py written)", &|r| {
            r["kind"] == "write" && r["path"] == *file
        });
        at(fixed, "the refused false claim", &|r| {
            r["kind"] == "violation" && r["rule"] == "false-tests-pass"
        });
        let tree = c
            .execute("return document.getElementById('tree').textContent;", vec![])
            .await
            .unwrap();
        assert!(
            tree.as_str().is_some_and(|t| t.contains("python3") && t.contains("exit 0")),
            "the process tree: {tree}"
        );

        // A write opens to its content as written: the fixed function.
        c.find(Locator::Css(&format!(
            "#timeline li[data-kind=\"write\"][data-path=\"{file}\"]"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        let content = wait_for(
            &c,
            "the write's content is not shown",
            "return document.getElementById('content').open ? \
             document.getElementById('content-text').textContent : null;",
            |v| v.is_string(),
        )
        .await;
        assert!(
            content.as_str().unwrap().contains("if not name:")
                && !content.as_str().unwrap().contains("TODO"),
            "{content}"
        );
        std::fs::write(
            artifacts_dir().join("ui-content.png"),
            c.screenshot().await.unwrap(),
        )
        .unwrap();
        c.execute("document.getElementById('content').close();", vec![])
            .await
            .unwrap();

        // The terminal replayed: some screen of it, reached with the page's slider, shows the
        // model's words as Claude Code painted them.
        let found = wait_for(
            &c,
            "no screen of the replay shows the model's words",
            "const s = document.getElementById('scrub'); \
             for (let i = 0; i <= +s.max; i++) { s.value = i; \
               s.dispatchEvent(new Event('input')); \
               if (document.getElementById('screen').textContent.includes('Writing greet.py')) return i; } \
             return null;",
            |v| v.is_number(),
        )
        .await;
        assert!(found.as_u64().is_some(), "{found}");
        c.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
        std::fs::write(artifacts_dir().join("ui.png"), c.screenshot().await.unwrap()).unwrap();

        // Live: a session of the user's that starts while the page is open is listed, and its
        // timeline grows as it writes, without a reload.
        let ws = user.home().join("ws");
        let (live_child, live) = d.run_script(
            ("ui-live", &ws),
            &user.prefix(&[]),
            "i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo $i > live$i.txt; sleep 1; done",
            T,
        );
        let _live_child = Killed(live_child);
        let row = format!("#session-list tr[data-agent=\"{live}\"]");
        wait_for(
            &c,
            "the new session is not listed",
            &format!("return !!document.querySelector('{row}');"),
            |v| v == &Value::Bool(true),
        )
        .await;
        c.find(Locator::Css(&row)).await.unwrap().click().await.unwrap();
        // The highest file number its timeline shows.
        let newest = "return Math.max(0, ...[...document.querySelectorAll('#timeline li[data-kind=\"write\"]')]\
                      .map(li => +((/\\/live(\\d+)\\.txt$/.exec(li.dataset.path) || [])[1] || 0)));";
        let first = wait_for(&c, "no live file on the timeline", newest, |v| {
            v.as_u64().is_some_and(|n| n >= 1)
        })
        .await
        .as_u64()
        .unwrap();
        assert!(first < 28, "the session ended before the page read it ({first})");
        wait_for(&c, "the timeline did not grow while the session ran", newest, |v| {
            v.as_u64().is_some_and(|n| n >= first + 3)
        })
        .await;
        c.close().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&profile);
    drop(ui);
}
