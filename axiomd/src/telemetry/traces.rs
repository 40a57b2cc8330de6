//! Agent sessions as traces, in the OpenTelemetry GenAI conventions: a root span
//! `invoke_agent <name>` per agent (`gen_ai.agent.*`), a child span per command it runs
//! (`process.*`, an error when it exits non-zero or is killed), a child span
//! `apply_guardrail <rule>` per violation (`gen_ai.guardrail.*`), and span events for
//! interventions and denials. Spans carry the kernel's timestamps, not the export's.
use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axiom_proto::wire::{Body, Event};
use opentelemetry::{
    Context, KeyValue, Value,
    trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _},
};
use opentelemetry_sdk::trace::{SdkTracer, Span};

/// Processes with an open span, at most (beyond, commands are not traced; counted).
const MAX_OPEN: usize = 100_000;

fn at(ev: &Event) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ev.time_ns)
}

struct Session {
    root: Span,
    /// The root's context, as the parent of every child span.
    cx: Context,
    last: SystemTime,
}

pub(crate) struct Sessions {
    tracer: SdkTracer,
    content: bool,
    agents: HashMap<u64, Session>,
    /// The command span of each process (tgid) of an agent.
    procs: HashMap<u32, (u64, Span)>,
    /// Commands not traced because `MAX_OPEN` spans were open.
    pub(crate) untraced: u64,
}

fn exit_status(code: &Option<i32>, signal: &Option<i32>) -> (Vec<KeyValue>, Option<Status>) {
    match (code, signal) {
        (Some(0), _) => (vec![KeyValue::new("process.exit.code", 0i64)], None),
        (Some(c), _) => (
            vec![KeyValue::new("process.exit.code", *c as i64)],
            Some(Status::error(format!("exit code {c}"))),
        ),
        (_, Some(s)) => (
            vec![KeyValue::new("axiom.exit.signal", *s as i64)],
            Some(Status::error(format!("killed by signal {s}"))),
        ),
        _ => (Vec::new(), None),
    }
}

/// `gen_ai.provider.name` of an agent started as `program`: the provider its CLI talks to
/// (the conventions' well-known values), `unknown` for a CLI that can talk to several.
fn provider(program: &str) -> &'static str {
    match axiom_proto::agent_cli::agent_cli(program) {
        Some("claude") => "anthropic",
        Some("codex") => "openai",
        Some("gemini") => "gcp.gemini",
        _ => "unknown",
    }
}

impl Sessions {
    pub(crate) fn new(tracer: SdkTracer, content: bool) -> Sessions {
        Sessions {
            tracer,
            content,
            agents: HashMap::new(),
            procs: HashMap::new(),
            untraced: 0,
        }
    }

    /// The agent's session, begun at this event if none is open: its start may not have been
    /// seen (adopted before axiomd ran), or one of its processes' events overtook it on the bus.
    /// `agent_started` names it either way.
    fn session(&mut self, ev: &Event) -> &mut Session {
        let tracer = &self.tracer;
        self.agents.entry(ev.agent).or_insert_with(|| {
            let label = format!("agent-{}", ev.agent);
            let root = tracer
                .span_builder(format!("invoke_agent {label}"))
                .with_kind(SpanKind::Internal)
                .with_start_time(at(ev))
                .with_attributes([
                    KeyValue::new("gen_ai.operation.name", "invoke_agent"),
                    KeyValue::new("gen_ai.agent.id", ev.agent.to_string()),
                    KeyValue::new("gen_ai.agent.name", label),
                    // Required; the agent's start names it (`agent_started`).
                    KeyValue::new("gen_ai.provider.name", "unknown"),
                    KeyValue::new("process.user.id", i64::from(ev.uid)),
                ])
                .start_with_context(tracer, &Context::new());
            let cx = Context::new().with_remote_span_context(root.span_context().clone());
            Session {
                root,
                cx,
                last: at(ev),
            }
        })
    }

    /// One event into the agent's trace: its session (root span), a span per command, a span
    /// per violation, span events for interventions and refusals.
    pub(crate) fn on_event(&mut self, ev: &Event) {
        if ev.agent == 0 {
            return;
        }
        match &ev.body {
            Body::AgentStarted { .. } => self.agent_started(ev),
            Body::Exec { .. } => self.exec(ev),
            Body::Exit { code, signal } => {
                if let Some((_, mut span)) = self.procs.remove(&ev.tgid) {
                    let (attrs, status) = exit_status(code, signal);
                    span.set_attributes(attrs);
                    if let Some(st) = status {
                        span.set_status(st);
                    }
                    span.end_with_timestamp(at(ev));
                }
            }
            Body::Violation { .. } => self.violation(ev),
            Body::Intervention { .. } => self.intervention(ev),
            Body::Denied {
                op,
                target,
                by,
                count,
            } => {
                let s = self.session(ev);
                s.root.add_event_with_timestamp(
                    "axiom.denied",
                    at(ev),
                    vec![
                        KeyValue::new("axiom.denied.op", op.name()),
                        KeyValue::new("axiom.denied.target", target.clone()),
                        KeyValue::new("axiom.denied.by", by.clone()),
                        KeyValue::new("axiom.denied.count", *count as i64),
                    ],
                );
            }
            Body::AgentExited { code, signal } => self.agent_exited(ev, code, signal),
            _ => {}
        }
    }

    /// Names the session and says what it runs (the command line only with content on).
    fn agent_started(&mut self, ev: &Event) {
        let Body::AgentStarted {
            name,
            command,
            workspace,
            profile,
            ..
        } = &ev.body
        else {
            return;
        };
        let content = self.content;
        let s = self.session(ev);
        s.root.set_attribute(KeyValue::new(
            "gen_ai.provider.name",
            provider(command.first().map_or("", String::as_str)),
        ));
        if let Some(n) = name {
            s.root.update_name(format!("invoke_agent {n}"));
            s.root
                .set_attribute(KeyValue::new("gen_ai.agent.name", n.clone()));
        }
        s.root
            .set_attribute(KeyValue::new("process.pid", ev.tgid as i64));
        if content && !command.is_empty() {
            s.root
                .set_attribute(KeyValue::new("process.command_line", command.join(" ")));
        }
        if let Some(w) = workspace {
            s.root
                .set_attribute(KeyValue::new("axiom.agent.workspace", w.clone()));
        }
        if let Some(p) = profile {
            s.root
                .set_attribute(KeyValue::new("axiom.agent.profile", p.clone()));
        }
    }

    /// A command's span; an exec replaces the process's program, so its previous one ends here.
    fn exec(&mut self, ev: &Event) {
        let Body::Exec { filename, argv, .. } = &ev.body else {
            return;
        };
        if let Some((_, mut old)) = self.procs.remove(&ev.tgid) {
            old.end_with_timestamp(at(ev));
        }
        if self.procs.len() >= MAX_OPEN {
            self.untraced += 1;
            return;
        }
        let exe = filename.rsplit('/').next().unwrap_or(filename).to_string();
        let mut attrs = vec![
            KeyValue::new("process.pid", ev.tgid as i64),
            KeyValue::new("process.parent_pid", ev.ppid as i64),
            KeyValue::new("process.executable.name", exe.clone()),
            KeyValue::new("process.executable.path", filename.clone()),
            KeyValue::new("process.user.id", i64::from(ev.uid)),
        ];
        if self.content {
            let args: Vec<opentelemetry::StringValue> =
                argv.iter().map(|a| a.clone().into()).collect();
            attrs.push(KeyValue::new(
                "process.command_args",
                Value::Array(args.into()),
            ));
        }
        let tracer = self.tracer.clone();
        let s = self.session(ev);
        s.last = at(ev);
        let span = tracer
            .span_builder(format!("exec {exe}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(at(ev))
            .with_attributes(attrs)
            .start_with_context(&tracer, &s.cx);
        self.procs.insert(ev.tgid, (ev.agent, span));
    }

    /// A guardrail span from the write that broke the rule to the violation.
    fn violation(&mut self, ev: &Event) {
        let Body::Violation {
            rule,
            severity,
            action,
            detail,
            latency_us,
            ..
        } = &ev.body
        else {
            return;
        };
        let content = self.content;
        let tracer = self.tracer.clone();
        let s = self.session(ev);
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", "apply_guardrail"),
            KeyValue::new("gen_ai.guardrail.id", rule.clone()),
            KeyValue::new("gen_ai.guardrail.name", rule.clone()),
            KeyValue::new("gen_ai.guardrail.severity", severity.name()),
            KeyValue::new("gen_ai.guardrail.action", action.name()),
            KeyValue::new("gen_ai.guardrail.decision", "violation"),
            KeyValue::new("process.pid", ev.tgid as i64),
        ];
        if let Some(us) = latency_us {
            attrs.push(KeyValue::new("axiom.detection_latency_us", *us));
        }
        if content {
            attrs.push(KeyValue::new("gen_ai.guardrail.detail", detail.clone()));
        }
        let start = at(ev) - Duration::from_micros(latency_us.unwrap_or(0.0) as u64);
        let mut span = tracer
            .span_builder(format!("apply_guardrail {rule}"))
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(&tracer, &s.cx);
        span.set_status(Status::error(format!("violation of {rule}")));
        span.end_with_timestamp(at(ev));
    }

    /// An intervention, as an event on the session's root span.
    fn intervention(&mut self, ev: &Event) {
        let Body::Intervention {
            action,
            by_uid,
            detail,
            rule,
            act_us,
            ..
        } = &ev.body
        else {
            return;
        };
        let content = self.content;
        let s = self.session(ev);
        let mut attrs = vec![KeyValue::new(
            "gen_ai.guardrail.intervention",
            action.name(),
        )];
        if let Some(r) = rule {
            attrs.push(KeyValue::new("gen_ai.guardrail.id", r.clone()));
        }
        if let Some(u) = by_uid {
            // Who asked for it (a user's request, not the agent's process).
            attrs.push(KeyValue::new("axiom.intervention.by_uid", i64::from(*u)));
        }
        if let Some(us) = act_us {
            attrs.push(KeyValue::new("axiom.act_us", *us));
        }
        if content {
            attrs.push(KeyValue::new("axiom.detail", detail.clone()));
        }
        s.root
            .add_event_with_timestamp("gen_ai.guardrail.intervention", at(ev), attrs);
    }

    /// The session ends; whatever of the agent still runs ends with it, as far as its trace is
    /// concerned.
    fn agent_exited(&mut self, ev: &Event, code: &Option<i32>, signal: &Option<i32>) {
        let open: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, (a, _))| *a == ev.agent)
            .map(|(p, _)| *p)
            .collect();
        for p in open {
            if let Some((_, mut span)) = self.procs.remove(&p) {
                span.end_with_timestamp(at(ev));
            }
        }
        if let Some(mut s) = self.agents.remove(&ev.agent) {
            let (attrs, status) = exit_status(code, signal);
            s.root.set_attributes(attrs);
            if let Some(st) = status {
                s.root.set_status(st);
            }
            s.root.end_with_timestamp(at(ev));
        }
    }

    /// Ends sessions whose agent was forgotten without an exit event (untracked): after a day
    /// without a command, their root span is ended so it is exported.
    pub(crate) fn sweep(&mut self) {
        let now = SystemTime::now();
        let stale: Vec<u64> = self
            .agents
            .iter()
            .filter(|(_, s)| {
                now.duration_since(s.last).unwrap_or_default() > Duration::from_secs(86_400)
            })
            .map(|(a, _)| *a)
            .collect();
        for a in stale {
            if let Some(mut s) = self.agents.remove(&a) {
                s.root.end();
            }
        }
    }
}
