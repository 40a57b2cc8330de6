//! The hot (Redis Streams) and cold (Parquet in a directory or S3) tiers, with the warm tier
//! (DuckDB) between them, against a real redis-server and a real S3-compatible server.
use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use axiom_proto::wire::{Event, Reply, Request};
use axiom_tests::*;

const T: Duration = Duration::from_secs(30);

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

fn stream() -> String {
    format!("axiom:{{{}}}:events", host())
}

fn query(d: &Daemon, agent: Option<u64>, text: Option<&str>, limit: usize) -> Vec<Event> {
    query_kinds(d, agent, &[], text, limit)
}

fn query_kinds(
    d: &Daemon,
    agent: Option<u64>,
    kinds: &[&str],
    text: Option<&str>,
    limit: usize,
) -> Vec<Event> {
    let r: Reply = d.client().request(&Request::Query {
        events: axiom_proto::wire::EventQuery {
            agent,
            since_ns: None,
            until_ns: None,
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            text: text.map(String::from),
            limit,
            oldest: false,
        },
        sql: None,
    });
    assert!(r.ok, "query: {:?}", r.error);
    r.events.unwrap_or_default()
}

fn sql(d: &Daemon, text: &str) -> Vec<Vec<serde_json::Value>> {
    let r: Reply = d.client().request(&sql_request(text, 100_000));
    assert!(r.ok, "sql {text}: {:?}", r.error);
    r.rows.unwrap_or_default()
}

fn count(d: &Daemon, text: &str) -> u64 {
    sql(d, text)[0][0].as_u64().unwrap()
}

fn store_status(d: &Daemon) -> BTreeMap<String, u64> {
    d.status().store
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Output lines starting with `prefix`, in the order the query gave them.
fn lines(evs: &[Event], prefix: &str) -> Vec<String> {
    evs.iter()
        .filter_map(output_text)
        .filter(|t| t.starts_with(prefix))
        .map(|t| t.trim_end().to_string())
        .collect()
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

/// Output lines starting with `prefix` that the Redis stream holds (entries' `e` field is the
/// event as JSON).
fn in_stream(redis: &Redis, prefix: &str) -> Vec<String> {
    redis
        .cli(&["XRANGE", &stream(), "-", "+"])
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .filter_map(|e| output_text(&e).map(|t| t.trim_end().to_string()))
        .filter(|t| t.starts_with(prefix))
        .collect()
}

/// A shell script started in the cgroup, its output discarded.
fn shell_in(cg: &Cgroup, script: &str) -> std::process::Child {
    cg.command("/bin/sh")
        .args(["-c", script])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn hot_args(redis: &Redis) -> Vec<String> {
    vec![
        "--set".into(),
        "store.hot.enabled=true".into(),
        "--set".into(),
        format!("store.hot.url={}", redis.url()),
        "--set".into(),
        // Small batches, so an outage catches events mid-stream.
        "store.hot.batch_events=64".into(),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every kind of event an agent makes goes through Redis into DuckDB once; with Redis down for
/// 30 s in the middle of a stream, events are spooled and arrive, in order, each once.
#[test]
fn hot_tier_round_trip_and_a_30s_redis_outage() {
    let mut redis = Redis::start("tiers_redis");
    let a = hot_args(&redis);
    let d = Daemon::start("tiers_hot", &args(&a));
    let cg = Cgroup::new("tiers_hot");
    let agent = d.track_cgroup(&cg);
    let dir = std::env::temp_dir().join(unique("tiers_work"));
    let script = format!(
        "echo hot-kinds; mkdir -p {dir}; echo x > {dir}/f; (printf '// TODO later\\n'; sleep 0.3) > {dir}/g.rs; \
         python3 -c 'import socket; s=socket.socket(); s.settimeout(0.2); s.connect_ex((\"127.0.0.1\", 9))'; exit 4",
        dir = dir.display()
    );
    let (_, st) = run_in(&cg, &script);
    assert_eq!(st.code(), Some(4));
    let mut seen = Vec::new();
    let t0 = Instant::now();
    let ok = loop {
        let kinds: Vec<String> = sql(
            &d,
            &format!("SELECT DISTINCT kind FROM events WHERE agent = {agent}"),
        )
        .into_iter()
        .map(|r| r[0].as_str().unwrap_or_default().to_string())
        .collect();
        if [
            "fork",
            "exec",
            "output",
            "file",
            "connect",
            "exit",
            "violation",
        ]
        .iter()
        .all(|k| kinds.iter().any(|x| x == k))
        {
            break true;
        }
        seen = kinds;
        if t0.elapsed() > T {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        ok,
        "kinds moved into DuckDB: {seen:?}; status {:?}; log {}",
        store_status(&d),
        d.log_text()
    );
    // They went through Redis: the stream holds them, under this host's key.
    let xlen: u64 = redis.cli(&["XLEN", &stream()]).parse().unwrap();
    assert!(xlen > 0, "stream {} is empty", stream());
    let st = store_status(&d);
    assert!(st["hot_sent"] > 0 && st["hot_moved"] > 0, "{st:?}");
    // Each event once, in the warm tier and in the merged answer.
    assert_eq!(
        count(
            &d,
            &format!(
                "SELECT count(*) - count(DISTINCT (host, run, seq)) FROM events WHERE agent = {agent}"
            )
        ),
        0
    );
    let evs = query(&d, Some(agent), None, 10_000);
    assert_eq!(lines(&evs, "hot-kinds"), ["hot-kinds"]);

    // The outage: 300 lines over ~45 s; Redis stopped for 30 s of it.
    let mut writer = shell_in(
        &cg,
        "for i in $(seq 1 300); do echo outage-$i; sleep 0.15; done",
    );
    std::thread::sleep(Duration::from_secs(3));
    redis.stop();
    let stopped = Instant::now();
    wait("events spooled while redis is down", T, || {
        store_status(&d)["hot_spooled"] > 0
    });
    // Meanwhile the warm tier still answers.
    assert!(!query(&d, Some(agent), Some("outage-"), 10).is_empty());
    std::thread::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed()));
    let spooled = store_status(&d)["hot_spooled"];
    redis.spawn();
    assert!(writer.wait().unwrap().success());
    let want = numbered("outage-", 300);
    wait(
        "all 300 lines after redis returned",
        Duration::from_secs(60),
        || lines(&query(&d, Some(agent), Some("outage-"), 10_000), "outage-") == want,
    );
    wait("the spool drained", T, || {
        store_status(&d)["hot_spooled"] == 0
    });
    // Exactly once in DuckDB (nothing doubled by the spool), and once in Redis.
    wait("all moved into DuckDB", T, || {
        count(
            &d,
            "SELECT count(*) FROM events WHERE kind = 'output' AND text LIKE 'outage-%'",
        ) == 300
    });
    assert_eq!(
        count(
            &d,
            "SELECT count(DISTINCT text) FROM events WHERE kind = 'output' AND text LIKE 'outage-%'"
        ),
        300
    );
    assert_eq!(
        in_stream(&redis, "outage-"),
        want,
        "the stream, in order, each once"
    );
    assert!(spooled > 0, "nothing was spooled during the outage");
    let _ = std::fs::remove_dir_all(&dir);
}

/// axiomd killed (SIGKILL) while an agent writes: after the restart, every event Redis had
/// acknowledged is in DuckDB exactly once — none lost, none doubled by redelivery.
#[test]
fn a_crash_mid_ingest_loses_nothing_acknowledged() {
    let redis = Redis::start("tiers_crash_redis");
    let a = hot_args(&redis);
    let mut d = Daemon::start("tiers_crash", &args(&a));
    let cg = Cgroup::new("tiers_crash");
    let agent = d.track_cgroup(&cg);
    let mut writer = shell_in(
        &cg,
        "for i in $(seq 1 2000); do echo crash-$i; [ $((i % 50)) = 0 ] && sleep 0.05; done; sleep 1",
    );
    wait("ingest under way", T, || {
        store_status(&d).get("hot_moved").copied().unwrap_or(0) > 200
    });
    d.kill9();
    let _ = writer.wait();
    // What Redis acknowledged before the crash.
    let acked = in_stream(&redis, "crash-");
    assert!(!acked.is_empty());
    d.spawn();
    let _ = agent;
    wait("the acknowledged events moved after the restart", T, || {
        let stored = count(
            &d,
            "SELECT count(*) FROM events WHERE kind = 'output' AND text LIKE 'crash-%'",
        );
        stored >= acked.len() as u64
    });
    let rows = sql(
        &d,
        "SELECT text, count(*) AS n FROM events WHERE kind = 'output' AND text LIKE 'crash-%' \
         GROUP BY text HAVING count(*) > 1",
    );
    assert!(rows.is_empty(), "events doubled: {rows:?}");
    let stored: Vec<String> = sql(
        &d,
        "SELECT text FROM events WHERE kind = 'output' AND text LIKE 'crash-%'",
    )
    .into_iter()
    .map(|r| r[0].as_str().unwrap().trim_end().to_string())
    .collect();
    for line in &acked {
        assert!(
            stored.contains(line),
            "{line} acknowledged by redis but lost"
        );
    }
}

/// Old partitions leave DuckDB for Parquet in an S3 bucket; queries still find them; pyarrow
/// reads the files back through the S3 API on its own.
#[test]
fn cold_tier_in_s3_round_trips_and_reads_back_independently() {
    let s3 = S3::start("tiers_s3");
    let mut a = s3.settings();
    for s in [
        "store.cold.after_secs=3",
        "store.cold.partition_secs=2",
        "store.cold.interval_secs=1",
    ] {
        a.extend(["--set".to_string(), s.to_string()]);
    }
    let d = Daemon::start("tiers_cold", &args(&a));
    let cg = Cgroup::new("tiers_cold");
    let agent = d.track_cgroup(&cg);
    let dir = std::env::temp_dir().join(unique("tiers_cold_work"));
    let script = format!(
        "for i in $(seq 1 40); do echo cold-$i; done; mkdir -p {dir}; \
         echo x > {dir}/f; (printf '// TODO cold\\n'; sleep 0.3) > {dir}/g.rs; sleep 2.5; for i in $(seq 41 80); do echo cold-$i; done; exit 5",
        dir = dir.display()
    );
    let (_, st) = run_in(&cg, &script);
    assert_eq!(st.code(), Some(5));
    wait("the agent's exit stored", T, || {
        query(&d, Some(agent), None, 10_000)
            .iter()
            .any(|e| matches!(e.body, Body::Exit { code: Some(5), .. }))
    });
    // Whatever follows the exit (a violation settled a moment later) has arrived too.
    std::thread::sleep(Duration::from_millis(500));
    let before = query(&d, Some(agent), None, 10_000);
    assert_eq!(lines(&before, "cold-"), numbered("cold-", 80));
    for kind in ["fork", "exec", "output", "file", "violation", "exit"] {
        assert!(
            before.iter().any(|e| e.body.kind() == kind),
            "no {kind} before the export"
        );
    }
    wait("every event of the agent exported", T, || {
        count(
            &d,
            &format!("SELECT count(*) FROM events WHERE agent = {agent}"),
        ) == 0
    });
    let st = store_status(&d);
    assert!(st["cold_parts"] >= 2, "one part per partition: {st:?}");
    // The same answer, now from the cold tier.
    let after = query(&d, Some(agent), None, 10_000);
    assert_eq!(
        after.iter().map(|e| (e.seq, e.time_ns)).collect::<Vec<_>>(),
        before
            .iter()
            .map(|e| (e.seq, e.time_ns))
            .collect::<Vec<_>>()
    );
    assert_eq!(after, before);
    // SQL over every tier.
    assert_eq!(
        count(
            &d,
            &format!("SELECT count(*) FROM all_events WHERE agent = {agent}")
        ),
        before.len() as u64
    );
    // pyarrow, through the S3 API: the manifest's parts hold the agent's events.
    let script = format!(
        r#"
import json, pyarrow.fs as fs, pyarrow.parquet as pq
s3 = fs.S3FileSystem(access_key="{key}", secret_key="{secret}", endpoint_override="127.0.0.1:{port}", scheme="http", region="us-east-1")
root = "{bucket}/axiom/{host}"
with s3.open_input_stream(root + "/manifest.json") as f:
    m = json.load(f)
texts, rows = [], 0
for p in m["parts"]:
    t = pq.read_table(root + "/" + p["key"], filesystem=s3)
    assert t.num_rows == p["rows"], (t.num_rows, p)
    assert pq.ParquetFile(s3.open_input_file(root + "/" + p["key"])).metadata.row_group(0).column(0).compression == "ZSTD"
    rows += t.num_rows
    d = t.to_pydict()
    texts += [(tm, x) for a, k, tm, x in zip(d["agent"], d["kind"], d["time_ns"], d["text"]) if a == {agent} and k == "output" and x.startswith("cold-")]
print(rows)
for tm, x in sorted(texts):
    print(x.strip())
"#,
        key = S3_KEY,
        secret = S3_SECRET,
        port = s3.port,
        bucket = s3.bucket,
        host = host(),
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.lines();
    let rows: u64 = it.next().unwrap().parse().unwrap();
    assert!(rows >= before.len() as u64);
    assert_eq!(
        it.map(String::from).collect::<Vec<_>>(),
        numbered("cold-", 80)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One query answered from all three tiers at once: the oldest events from Parquet, the
/// next from DuckDB, the newest still in Redis, in order, each once.
#[test]
fn a_query_spans_hot_warm_and_cold() {
    let redis = Redis::start("tiers_span_redis");
    let mut base = hot_args(&redis);
    base.extend(["--set".into(), "store.cold.interval_secs=1".into()]);
    let with = |extra: &[&str]| -> Vec<String> {
        let mut v = base.clone();
        for s in extra {
            v.extend(["--set".to_string(), s.to_string()]);
        }
        v
    };
    // Cold: exported two seconds after they happen.
    let a = with(&["store.cold.after_secs=2"]);
    let mut d = Daemon::start("tiers_span", &args(&a));
    let script = |p: &str| format!("for i in $(seq 1 20); do echo {p}$i; done");
    let run = |script: &str| {
        Command::new("/bin/sh")
            .args(["-c", &format!("sleep 0.3; {script}; sleep 0.3")])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut c = run(&script("span-a-"));
    d.track_pid(c.id());
    c.wait().unwrap();
    let tier = |d: &Daemon, tier: &str, p: &str| {
        count(
            d,
            &format!(
                "SELECT count(*) FROM all_events WHERE tier = '{tier}' AND kind = 'output' \
                 AND text LIKE '{p}%'"
            ),
        )
    };
    let t0 = Instant::now();
    while tier(&d, "cold", "span-a-") != 20 {
        assert!(
            t0.elapsed() < T,
            "first events not exported: by tier {:?}; status {:?}; log {}",
            sql(
                &d,
                "SELECT tier, count(*) FROM all_events WHERE text LIKE 'span-%' GROUP BY tier"
            ),
            store_status(&d),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Warm: a retention long enough that they stay.
    d.stop();
    let a = with(&["store.cold.after_secs=3600"]);
    d.set_args(&args(&a));
    d.spawn();
    let mut c = run(&script("span-b-"));
    d.track_pid(c.id());
    c.wait().unwrap();
    wait("the second events in DuckDB", T, || {
        tier(&d, "warm", "span-b-") == 20
    });
    // Hot: no mover here, so they wait in Redis.
    d.stop();
    let a = with(&["store.cold.after_secs=3600", "store.hot.mover=false"]);
    d.set_args(&args(&a));
    d.spawn();
    let mut c = run(&script("span-c-"));
    d.track_pid(c.id());
    c.wait().unwrap();
    wait("the third events in redis", T, || {
        tier(&d, "hot", "span-c-") == 20
    });
    assert_eq!(tier(&d, "warm", "span-c-"), 0);
    assert_eq!(tier(&d, "cold", "span-a-"), 20);
    assert_eq!(tier(&d, "warm", "span-b-"), 20);
    assert_eq!(in_stream(&redis, "span-c-"), numbered("span-c-", 20));
    let mut want = numbered("span-a-", 20);
    want.extend(numbered("span-b-", 20));
    want.extend(numbered("span-c-", 20));
    // Outputs only: the text also matches the shells' argv, and whether a shell's exec is
    // recorded depends on whether tracking lands before the kernel's exec tracepoint (the
    // spawner resumes when the old image is released, a moment before it).
    let got = query_kinds(&d, None, &["output"], Some("span-"), 10_000);
    assert_eq!(lines(&got, "span-"), want);
    assert!(got.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    // The newest 25: the last five of the warm tier and the hot tier's twenty.
    let got = query_kinds(&d, None, &["output"], Some("span-"), 25);
    assert_eq!(
        lines(&got, "span-"),
        want[35..].to_vec(),
        "the newest 25 held other events: {:?}",
        got.iter()
            .filter(|e| !output_text(e).is_some_and(|t| t.starts_with("span-")))
            .collect::<Vec<_>>()
    );
    // SQL over every tier.
    assert_eq!(
        count(
            &d,
            "SELECT count(*) FROM all_events WHERE kind = 'output' AND text LIKE 'span-%'"
        ),
        60
    );
}
