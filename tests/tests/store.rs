//! The warm tier (DuckDB): every kind of event stored and read back, in order; acknowledged
//! events survive a SIGKILL of axiomd, and events in flight a clean stop; queries are scoped
//! to what the caller may see.
use std::{
    os::unix::process::CommandExt as _,
    process::Command,
    time::{Duration, Instant},
};

use axiom_proto::wire::{Body, Event, Reply, Request};
use axiom_tests::*;

const T: Duration = Duration::from_secs(15);

fn query(d: &Daemon, req: Request) -> Reply {
    d.client().request(&req)
}

fn latest(agent: u64, limit: usize) -> Request {
    axiom_tests::latest_request(agent, limit)
}

/// Waits until the store holds events of `agent` that `pred` accepts (whole list).
fn stored(d: &Daemon, agent: u64, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let t0 = Instant::now();
    loop {
        let r = query(d, latest(agent, 10_000));
        assert!(r.ok, "query: {:?}", r.error);
        let evs = r.events.unwrap_or_default();
        if pred(&evs) {
            return evs;
        }
        assert!(
            t0.elapsed() < T,
            "store never held what was expected: {evs:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_kind_round_trips_through_the_warm_tier_in_order() {
    let mut d = Daemon::start("store_kinds", &[]);
    let cg = Cgroup::new("store_kinds");
    let agent = d.track_cgroup(&cg);
    let dir = std::env::temp_dir().join(unique("store_work"));
    let script = format!(
        "for i in 1 2 3; do echo store-line-$i; done; mkdir -p {dir}; echo x > {dir}/f; \
         python3 -c 'import socket; s=socket.socket(); s.settimeout(0.2); s.connect_ex((\"127.0.0.1\", 9))'; exit 3",
        dir = dir.display()
    );
    let (_, st) = run_in(&cg, &script);
    assert_eq!(st.code(), Some(3));
    let evs = stored(&d, agent, |e| {
        e.iter().any(|e| matches!(e.body, Body::Connect { .. }))
            && e.iter()
                .any(|e| matches!(e.body, Body::Exit { code: Some(3), .. }))
    });
    for kind in ["fork", "exec", "output", "file", "connect", "exit"] {
        assert!(
            evs.iter().any(|e| e.body.kind() == kind),
            "no {kind} stored: {evs:#?}"
        );
    }
    // In the order they happened.
    let lines: Vec<&str> = evs
        .iter()
        .filter_map(output_text)
        .filter(|t| t.starts_with("store-line-"))
        .collect();
    assert_eq!(
        lines,
        ["store-line-1\n", "store-line-2\n", "store-line-3\n"]
    );
    assert!(evs.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    // Latest N: the last ones.
    let last = query(&d, latest(agent, 1)).events.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].seq, evs.last().unwrap().seq);
    // Text search and kinds.
    let r = query(
        &d,
        Request::Query {
            events: axiom_proto::wire::EventQuery {
                agent: Some(agent),
                since_ns: None,
                until_ns: None,
                kinds: vec!["output".into()],
                text: Some("store-line-2".into()),
                limit: 100,
                oldest: false,
            },
            sql: None,
        },
    );
    let hits = r.events.unwrap();
    assert_eq!(hits.len(), 1, "{hits:#?}");
    // Read-only SQL (root), and a write refused.
    let r = query(
        &d,
        sql_request(
            &format!("SELECT count(*) AS n FROM events WHERE agent = {agent} AND kind = 'exit'"),
            10,
        ),
    );
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.columns.unwrap(), ["n"]);
    assert!(r.rows.unwrap()[0][0].as_u64().unwrap() >= 1);
    let r = query(&d, sql_request("DELETE FROM events", 10));
    assert!(!r.ok);
    // What was acknowledged survives a SIGKILL.
    let before = query(&d, latest(agent, 10_000)).events.unwrap().len();
    d.kill9();
    d.spawn();
    let after = query(&d, latest(agent, 10_000)).events.unwrap().len();
    assert_eq!(before, after, "events lost across a SIGKILL");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn users_query_only_what_they_may_see() {
    let d = Daemon::start("store_authz", &[]);
    let mut roots = Command::new("/bin/sh")
        .args(["-c", "sleep 0.3; echo root-secret-line; sleep 0.3"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let agent = d.track_pid(roots.id()).agent.unwrap();
    let _ = roots.wait();
    stored(&d, agent, |e| {
        e.iter()
            .any(|e| output_text(e).is_some_and(|t| t.contains("root-secret-line")))
    });
    let ctl = |args: &[&str]| {
        Command::new(axiomctl_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let out = ctl(&["--json", "query", "--grep", "root-secret-line"]);
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("root-secret-line"),
        "nobody read root's events"
    );
    let out = ctl(&["query", "--sql", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(77));
    // Root sees them, through the CLI.
    let out = Command::new(axiomctl_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args([
            "--json",
            "query",
            "--agent",
            &agent.to_string(),
            "--kind",
            "output",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("root-secret-line"));
}

/// Admin SQL runs as root inside axiomd: it may read the store and nothing else. Each attempt
/// is judged from outside (the file it would write is absent; no secret came back).
#[test]
fn admin_sql_reads_the_store_and_reaches_nothing_else() {
    let d = Daemon::start("store_sql_locked", &["--set", "store.sql.timeout_ms=1500"]);
    let dir = std::env::temp_dir().join(unique("sql_escape"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("written-by-sql");
    let secret = dir.join("secret.txt");
    std::fs::write(&secret, "sql-escape-secret").unwrap();
    let ask = |text: &str| -> Reply { d.client().request(&sql_request(text, 100)) };
    let r = ask("SELECT count(*) FROM events");
    assert!(r.ok, "a read is answered: {:?}", r.error);
    for attack in [
        format!("EXPLAIN ANALYZE COPY events TO '{}'", out.display()),
        format!("COPY (SELECT 1) TO '{}'", out.display()),
        format!("SELECT * FROM read_text('{}')", secret.display()),
        format!("SELECT * FROM read_blob('{}')", secret.display()),
        "SELECT * FROM read_blob('/proc/self/environ')".to_string(),
        format!("SELECT * FROM read_csv('{}')", secret.display()),
        "SET enable_external_access = true".to_string(),
        "SET memory_limit = '64GB'".to_string(),
        format!("ATTACH '{}' AS x", dir.join("x.db").display()),
        "INSTALL httpfs".to_string(),
        "LOAD httpfs".to_string(),
        "DELETE FROM events".to_string(),
        "SELECT 1; DROP TABLE events".to_string(),
        format!("EXPORT DATABASE '{}'", dir.join("export").display()),
    ] {
        let r = ask(&attack);
        assert!(!r.ok, "admitted: {attack}");
        let answered = serde_json::to_string(&r).unwrap();
        assert!(
            !answered.contains("sql-escape-secret"),
            "{attack}: {answered}"
        );
    }
    assert!(!out.exists(), "SQL wrote a file as root");
    assert!(!dir.join("x.db").exists() && !dir.join("export").exists());
    // A statement past its time is stopped, and axiomd still answers.
    let r = ask("SELECT count(*) FROM range(100000000000) a");
    assert!(!r.ok, "a runaway statement was stopped");
    assert!(ask("SELECT 1").ok);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A clean stop (SIGTERM) loses nothing axiomd accepted: with batches that would not be
/// committed for ten minutes, every event in flight is in the store after the stop.
#[test]
fn a_clean_stop_stores_every_event_in_flight() {
    let mut d = Daemon::start(
        "store_clean_stop",
        &[
            "--set",
            "store.flush_ms=600000",
            "--set",
            "store.batch_events=1000000",
        ],
    );
    let cg = Cgroup::new("store_clean_stop");
    let agent = d.track_cgroup(&cg);
    let (_, st) = run_in(
        &cg,
        "for i in $(seq 1 300); do echo clean-stop-$i; done; exit 4",
    );
    assert_eq!(st.code(), Some(4));
    // Published on the bus (the exit comes after every line the process wrote)...
    let t0 = Instant::now();
    while d.status().events.get("exit").copied().unwrap_or(0) == 0 {
        assert!(t0.elapsed() < T, "the exit never reached the bus");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...and not yet committed: the events are in flight.
    let before = query(&d, latest(agent, 10_000)).events.unwrap_or_default();
    assert!(
        before.iter().filter_map(output_text).count() < 300,
        "the batch was committed before the stop: the test proves nothing"
    );
    let status = d.stop();
    assert!(status.success(), "axiomd's clean stop: {status}");
    d.set_args(&[]);
    d.spawn();
    let evs = query(&d, latest(agent, 10_000)).events.unwrap_or_default();
    let lines: Vec<&str> = evs
        .iter()
        .filter_map(output_text)
        .filter(|t| t.starts_with("clean-stop-"))
        .collect();
    assert_eq!(lines.len(), 300, "events lost at a clean stop: {lines:?}");
    assert_eq!(lines[299], "clean-stop-300\n");
    assert!(
        evs.iter()
            .any(|e| matches!(e.body, Body::Exit { code: Some(4), .. })),
        "the exit was lost at a clean stop"
    );
}

/// Agent ids are this host's and start again low once the state that numbered them is gone (a
/// reboot; here the state directory removed while the store stays). User A's agent and then,
/// after the restart, user B's get the same id: B's queries by that id show B's agent only,
/// and A still reads their own. Both run as users do: `axiomctl run` under the default profile,
/// A with a real home.
#[test]
fn a_reused_agent_id_shows_its_new_owner_nothing_of_the_agent_it_was_before() {
    let base = std::path::Path::new("/var/cache/axiom-tests").join(unique("reused_ids"));
    std::fs::create_dir_all(&base).unwrap();
    let store = base.join("events.duckdb").display().to_string();
    let mut d = Daemon::start("store_reused", &["--store-path", &store]);
    let (a_uid, a_gid, a_home) = escapes::owner();
    let secret = format!("user-a-secret-{}", std::process::id());
    // One agent of `uid`'s printing `line`, in a workspace of its own; its id.
    let run = |d: &Daemon, uid: u32, gid: u32, home: &std::path::Path, line: &str| -> u64 {
        let ws = base.join(format!("ws-{uid}"));
        std::fs::create_dir_all(&ws).unwrap();
        std::os::unix::fs::chown(&ws, Some(uid), Some(gid)).unwrap();
        let o = Command::new(axiomctl_bin())
            .arg("--socket")
            .arg(&d.socket)
            .arg("run")
            .arg("--workspace")
            .arg(&ws)
            .args(["--", "/bin/sh", "-c", &format!("echo {line}")])
            .current_dir(&ws)
            .env("HOME", home)
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        err.split("agent ")
            .filter_map(|s| s.split(' ').next()?.trim_end_matches(':').parse().ok())
            .next()
            .unwrap_or_else(|| panic!("no agent id in {err}"))
    };
    let query = |d: &Daemon, uid: u32, args: &[&str]| -> String {
        let o = Command::new(axiomctl_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(["--json", "query"])
            .args(args)
            .uid(uid)
            .gid(if uid == a_uid { a_gid } else { escapes::NOBODY })
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let a = run(&d, a_uid, a_gid, &a_home, &secret);
    stored(&d, a, |e| {
        e.iter()
            .any(|e| output_text(e).is_some_and(|t| t.contains(&secret)))
    });
    d.stop();
    // What a reboot takes: the pinned maps, the state directory, the agents' cgroups.
    let unpin = Command::new(axiomd_bin())
        .arg("--pin-dir")
        .arg(&d.pin_dir)
        .arg("unpin")
        .output()
        .unwrap();
    assert!(unpin.status.success(), "{unpin:?}");
    std::fs::remove_dir_all(&d.state_dir).unwrap();
    for e in std::fs::read_dir(&d.cgroup_root).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("agent-") {
            let _ = std::fs::remove_dir(e.path());
        }
    }
    d.spawn();
    let nobody = escapes::NOBODY;
    let b = run(&d, nobody, nobody, std::path::Path::new("/"), "user-b-line");
    assert_eq!(
        a, b,
        "the restart did not hand the id out again: nothing tested"
    );
    let id = b.to_string();
    let mine = query(&d, nobody, &["--agent", &id]);
    let t0 = Instant::now();
    let mut mine = mine;
    while !mine.contains("user-b-line") && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(200));
        mine = query(&d, nobody, &["--agent", &id]);
    }
    assert!(mine.contains("user-b-line"), "B's own agent: {mine}");
    assert!(
        !mine.contains(&secret),
        "B read A's agent {a} through the reused id"
    );
    assert!(!query(&d, nobody, &["--grep", &secret]).contains(&secret));
    assert!(
        query(&d, a_uid, &["--grep", &secret]).contains(&secret),
        "A no longer reads their own agent"
    );
    let _ = std::fs::remove_dir_all(&base);
}
