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
            "axiom.intervention",
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

/// One span as rotel's detailed debug log shows it.
#[derive(Debug, Default)]
struct Span {
    id: String,
    parent: String,
    name: String,
    /// key → (rotel's type: Str, Int, Double, Bool, Array, …; value).
    attrs: std::collections::HashMap<String, (String, String)>,
    /// Its events: name, and their attributes as `key=value`.
    events: Vec<(String, Vec<String>)>,
}

/// The spans in rotel's detailed log (`Span #N`, `ID : …`, `-> key: Type(value)`).
fn spans(log: &str) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    let (mut in_span, mut in_event) = (false, false);
    for line in log.lines().map(str::trim) {
        if line.starts_with("Span #") {
            out.push(Span::default());
            (in_span, in_event) = (true, false);
            continue;
        }
        // A span's events have attributes of their own.
        if line.starts_with("SpanEvent #") && in_span {
            in_event = true;
            continue;
        }
        if line.starts_with("Metric #")
            || line.starts_with("ResourceSpans")
            || line.starts_with("SpanLink #")
        {
            (in_span, in_event) = (false, false);
        }
        let Some(s) = out.last_mut().filter(|_| in_span) else {
            continue;
        };
        if in_event {
            if let Some(name) = line.strip_prefix("-> Name: ") {
                s.events.push((name.to_string(), Vec::new()));
            } else if let Some(kv) = line.strip_prefix("-> ")
                && let Some((k, v)) = kv.split_once(": ")
                && let Some(e) = s.events.last_mut()
            {
                e.1.push(format!("{k}={v}"));
            }
            continue;
        }
        let field = |k: &str| {
            line.strip_prefix(k)
                .and_then(|r| r.trim_start().strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        if let Some(v) = field("Parent ID") {
            s.parent = v;
        } else if let Some(v) = field("ID") {
            s.id = v;
        } else if let Some(v) = field("Name") {
            s.name = v;
        } else if let Some(kv) = line.strip_prefix("-> ")
            && let Some((k, v)) = kv.split_once(": ")
            && let Some((ty, val)) = v.split_once('(')
        {
            s.attrs.insert(
                k.to_string(),
                (ty.to_string(), val.trim_end_matches(')').to_string()),
            );
        }
    }
    out
}

/// The conventions' model at the pinned commit (the extract in `tests/semconv/`).
#[derive(serde::Deserialize)]
struct Model {
    attributes: Vec<Attribute>,
    spans: Vec<SpanType>,
}

#[derive(serde::Deserialize)]
struct Attribute {
    key: String,
    #[serde(rename = "type")]
    ty: serde_yaml_ng::Value,
}

#[derive(serde::Deserialize)]
struct SpanType {
    #[serde(rename = "type")]
    ty: String,
    attributes: Vec<Ref>,
}

#[derive(serde::Deserialize)]
struct Ref {
    #[serde(rename = "ref")]
    key: String,
    requirement_level: serde_yaml_ng::Value,
}

/// What is wrong with `s` by the model's span type `ty`: a required attribute missing, a
/// gen_ai.* attribute the model does not define, or one of another type or enum value.
fn against_model(m: &Model, ty: &str, s: &Span) -> Vec<String> {
    let mut wrong = Vec::new();
    let t = m
        .spans
        .iter()
        .find(|t| t.ty == ty)
        .expect("span type in the model");
    for r in &t.attributes {
        if r.requirement_level.as_str() == Some("required") && !s.attrs.contains_key(&r.key) {
            wrong.push(format!("{}: required {} missing", s.name, r.key));
        }
    }
    for (k, (rotel, v)) in &s.attrs {
        if !k.starts_with("gen_ai.") {
            continue;
        }
        let Some(a) = m.attributes.iter().find(|a| a.key == *k) else {
            wrong.push(format!("{}: {k} is not in the model", s.name));
            continue;
        };
        let ok = match (&a.ty, rotel.as_str()) {
            (serde_yaml_ng::Value::String(t), r) => match t.as_str() {
                "string" => r == "Str",
                "int" => r == "Int",
                "double" => r == "Double",
                "boolean" => r == "Bool",
                "string[]" => r == "Array",
                "any" => true,
                _ => false,
            },
            (members, "Str") => members["members"]
                .as_sequence()
                .is_some_and(|ms| ms.iter().any(|m| m["value"].as_str() == Some(v))),
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "{}: {k} = {rotel}({v}) is not of its type {:?}",
                s.name, a.ty
            ));
        }
    }
    wrong
}

/// A real Claude Code session's trace, checked against the GenAI conventions' model at the
/// pinned commit: the session's `invoke_agent` span and each tool call's `execute_tool` span
/// carry every required attribute, and every gen_ai.* attribute they carry is one the model
/// defines, of its type; the session has its conversation id, model and agent version from
/// the hooks and the CLI's package; and the tool call that ran a command contains, as the
/// kernel saw it, the exec span of that command.
#[test]
fn a_real_claude_code_trace_follows_the_genai_conventions_with_its_commands_in_its_tool_calls() {
    use axiom_tests::realagents::{Agent, demo_scenario, run_session};
    let model: Model = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("semconv/gen-ai-002c8a6.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let rotel = Rotel::start("otel_claude");
    let d = daemon(
        "otel_claude",
        "grpc",
        &format!("http://127.0.0.1:{}", rotel.grpc_port),
        None,
    );
    let user = axiom_tests::users::SessionUser::new();
    let s = run_session(&d, Agent::Claude, &demo_scenario(), user.home());
    let _ = d.client().request(&Request::Kill { agent: s.agent });
    let got = rotel.wait_for(
        "the Claude Code session's trace",
        &[
            "execute_tool Bash",
            "gen_ai.tool.call.id",
            "gen_ai.conversation.id",
            "exec python3",
            "invoke_agent claude-demo",
        ],
        Duration::from_secs(60),
    );
    std::fs::write(artifacts_dir().join("otlp-claude.log"), &got).unwrap();
    let spans = spans(&got);
    let by_id: std::collections::HashMap<&str, &Span> =
        spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let op = |s: &Span| s.attrs.get("gen_ai.operation.name").map(|(_, v)| v.clone());
    let root = spans
        .iter()
        .find(|s| s.name.starts_with("invoke_agent claude-demo"))
        .expect("the session's span");
    let tools: Vec<&Span> = spans
        .iter()
        .filter(|s| op(s).as_deref() == Some("execute_tool"))
        .collect();
    assert!(
        tools.len() >= 3,
        "tool spans: {:?}",
        tools.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    let mut wrong = against_model(&model, "gen_ai.invoke_agent.internal", root);
    for t in &tools {
        wrong.extend(against_model(&model, "gen_ai.execute_tool.internal", t));
    }
    assert!(wrong.is_empty(), "against the model: {wrong:#?}");
    for (k, want) in [
        ("gen_ai.provider.name", Some("anthropic")),
        ("gen_ai.conversation.id", None),
        ("gen_ai.request.model", None),
        ("gen_ai.agent.version", None),
    ] {
        let v = root.attrs.get(k).map(|(_, v)| v.as_str());
        assert!(
            v.is_some_and(|v| !v.is_empty() && want.is_none_or(|w| w == v)),
            "the session's {k} is {v:?}"
        );
    }
    // The Bash tool call (its id from the hook) contains the python3 the kernel saw it run.
    let bash = tools
        .iter()
        .find(|t| {
            t.name == "execute_tool Bash"
                && t.attrs
                    .get("gen_ai.tool.call.id")
                    .is_some_and(|(_, v)| v.starts_with("toolu_"))
        })
        .expect("the Bash tool call's span");
    let under = |s: &Span, ancestor: &str| {
        let mut p = s.parent.as_str();
        for _ in 0..32 {
            if p == ancestor {
                return true;
            }
            match by_id.get(p) {
                Some(x) => p = x.parent.as_str(),
                None => return false,
            }
        }
        false
    };
    assert!(
        spans
            .iter()
            .any(|s| s.name == "exec python3" && under(s, &bash.id)),
        "no exec python3 under the Bash tool call's span"
    );
    assert!(
        under(bash, &root.id),
        "the tool call is not in the session's trace"
    );
    // The fixed greet.py, written by Claude Code's own process for its Write tool call: an
    // event of that call's span. The connection to the model: a span in the session's trace.
    assert!(
        tools.iter().any(|t| t.name == "execute_tool Write"
            && t.events.iter().any(
                |(n, a)| n == "axiom.file.write" && a.iter().any(|kv| kv.contains("greet.py"))
            )),
        "no write of greet.py on a Write tool call's span"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.name.starts_with("connect 127.0.0.1:") && under(s, &root.id)),
        "no connection span in the session's trace"
    );
}
