//! Telemetry to the observability stack: a real agent session with a violation, exported over
//! OTLP (gRPC and HTTP/protobuf) to a real receiver that is not ours (rotel), and the
//! Prometheus endpoint read by the reference parser (prometheus_client, Python).
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use axiom_proto::wire::{Body, Request};
use axiom_tests::*;

const T: Duration = Duration::from_secs(30);

/// A session: plans (the default `stop-planning` rule: a violation, an inject), runs a command
/// that fails, and ends with exit code 3.
// (It lives on for the inject: the message is typed paced, ~0.6 s.)
const SCRIPT: &str = "sleep 0.3; echo 'OK. Let me plan this first.'; sleep 0.3; \
                      sh -c 'exit 7'; sleep 2; exit 3";

fn run_session(d: &Daemon, name: &str) {
    let st = Command::new(axiomctl_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["run", "--name", name, "--", "/bin/sh", "-c", SCRIPT])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(3));
}

fn daemon(name: &str, protocol: &str, endpoint: &str, prom: Option<u16>) -> Daemon {
    let mut args = vec![
        "--set".to_string(),
        "telemetry.otlp=true".into(),
        "--set".into(),
        format!("telemetry.otlp_protocol={protocol}"),
        "--set".into(),
        format!("telemetry.otlp_endpoint={endpoint}"),
        "--set".into(),
        "telemetry.metrics_interval_ms=500".into(),
    ];
    if let Some(p) = prom {
        args.extend([
            "--set".into(),
            format!("telemetry.prometheus_listen=127.0.0.1:{p}"),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(name, &args)
}

#[test]
fn a_session_with_a_violation_arrives_as_a_trace_and_metrics_over_grpc() {
    let rotel = Rotel::start("otel_grpc");
    let prom = free_port();
    let mut d = daemon(
        "otel_grpc",
        "grpc",
        &format!("http://127.0.0.1:{}", rotel.grpc_port),
        Some(prom),
    );
    let mut sub = d.subscribe(false);
    run_session(&d, "traced");
    sub.wait_for(
        "the violation",
        T,
        |e| matches!(&e.body, Body::Violation { rule, .. } if rule == "stop-planning"),
    );
    sub.wait_for("the end of the session", T, |e| {
        matches!(&e.body, Body::AgentExited { code: Some(3), .. })
    });
    let agent = d
        .client()
        .request(&Request::Agents)
        .agents
        .unwrap()
        .into_iter()
        .find(|a| a.name.as_deref() == Some("traced"))
        .unwrap()
        .id;
    // The trace: the session's root span with the GenAI agent attributes, a span per command
    // (the failing one an error, with its exit code), the guardrail span of the violation, the
    // intervention as an event; the resource names axiomd.
    let got = rotel.wait_for(
        "the session's trace",
        &[
            "invoke_agent traced",
            "gen_ai.agent.id",
            &agent.to_string(),
            "gen_ai.agent.name",
            "gen_ai.provider.name",
            "process.user.id",
            "service.instance.id",
            "exec sh",
            "process.exit.code",
            "apply_guardrail stop-planning",
            "gen_ai.guardrail.id",
            "gen_ai.guardrail.intervention",
            "service.name",
            "axiomd",
        ],
        T,
    );
    assert!(
        got.contains("exit code 7"),
        "the failing command is not an error span"
    );
    assert!(
        got.contains("exit code 3"),
        "the session's own exit is not an error"
    );
    // The metrics: events by kind, violations by rule, the detection latency histogram.
    rotel.wait_for(
        "the metrics",
        &[
            "axiom.events",
            "axiom.violations",
            "stop-planning",
            "axiom.detection.latency",
            "axiom.agents.tracked",
            "axiom.events.lost",
        ],
        T,
    );
    // The Prometheus endpoint, parsed by the reference parser.
    let py = r#"
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1]).read().decode()
for f in text_string_to_metric_families(text):
    for s in f.samples:
        print(f.type, s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())), s.value)
"#;
    let out = Command::new(python())
        .args(["-c", py, &format!("http://127.0.0.1:{prom}/metrics")])
        .output()
        .unwrap();
    let samples = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |name: &str, labels: &str| -> f64 {
        samples
            .lines()
            .find_map(|l| {
                let mut w = l.split(' ');
                let (_, n, lab, v) = (w.next()?, w.next()?, w.next()?, w.next()?);
                (n == name && lab == labels).then(|| v.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{samples}"))
    };
    assert!(value("axiom_violations_total", "rule=stop-planning") >= 1.0);
    assert!(value("axiom_events_total", "kind=exec") >= 2.0);
    assert!(value("axiom_detection_latency_seconds_count", "") >= 1.0);
    assert!(value("axiom_interventions_total", "action=inject") >= 1.0);
    assert_eq!(value("axiom_agents_tracked", ""), 0.0);
    assert!(
        samples
            .lines()
            .any(|l| l.starts_with("counter axiom_events_lost_total"))
    );
    d.stop();
}

#[test]
fn the_same_session_arrives_over_http_protobuf() {
    let rotel = Rotel::start("otel_http");
    let mut d = daemon(
        "otel_http",
        "http/protobuf",
        &format!("http://127.0.0.1:{}", rotel.http_port),
        None,
    );
    run_session(&d, "over-http");
    rotel.wait_for(
        "the trace over HTTP",
        &[
            "invoke_agent over-http",
            "apply_guardrail stop-planning",
            "axiom.violations",
        ],
        T,
    );
    d.stop();
}
