//! Agent sessions as traces, in the OpenTelemetry GenAI conventions: a root span
//! `invoke_agent <name>` per agent (`gen_ai.agent.*`, its conversation and model from its
//! hooks), a span `execute_tool <tool>` per tool call its hooks announce (from the call to the
//! hook that says it ran), a span per command it runs (`process.*`, an error when it exits
//! non-zero or is killed), nested as the kernel saw them run: under the command that started
//! it, else under the tool call open at the time, else under the session; a span per
//! connection and an event per file written, renamed or removed, under the command (or the
//! tool call) that did it. An agent without
//! hooks has each command its own process starts as an `execute_tool` span. A violation is an
//! `apply_guardrail <rule>` span under the command that broke the rule, with a
//! `gen_ai.guardrail.result` event; interventions and denials are span events. Spans carry
//! the kernel's timestamps, not the export's.
use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axiom_proto::wire::{Body, Event, HookMark};
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

/// A tool call the agent's hook announced, until its hook says it ran.
struct Tool {
    call: Option<String>,
    name: String,
    span: Span,
    cx: Context,
    /// Files the agent's own process wrote during the call (its Write, Edit…).
    written: std::collections::HashSet<String>,
}

struct Session {
    root: Span,
    /// The root's context, as the parent of every child span.
    cx: Context,
    last: SystemTime,
    /// The agent's root process: what it starts is a tool call's or the session's own.
    leader: u32,
    /// Its hooks announce its tool calls (an agent kind Axiom hooks, or a hook seen).
    hooked: bool,
    /// Tool calls announced and not yet done, the latest last.
    tools: Vec<Tool>,
    conversation: bool,
    model: bool,
}

impl Session {
    /// The context a span of this session is parented to when no command of it is: the tool
    /// call open at the time, else the session.
    fn open_cx(&self) -> Context {
        self.tools
            .last()
            .map_or_else(|| self.cx.clone(), |t| t.cx.clone())
    }

    fn end_tools(&mut self, at: SystemTime) {
        for mut t in self.tools.drain(..) {
            t.span.end_with_timestamp(at);
        }
    }
}

/// A command's span and the context its children are parented to.
struct Proc {
    agent: u64,
    span: Span,
    cx: Context,
    /// File events put on its span so far (at most `FILE_EVENTS`).
    files: usize,
    written: std::collections::HashSet<String>,
}

/// File events one command's span carries at most: a build writes thousands of files, and a
/// span is not its file list.
const FILE_EVENTS: usize = 64;

pub(crate) struct Sessions {
    tracer: SdkTracer,
    /// This axiomd's instance (the machine's id): with an agent's id and start, what makes
    /// `gen_ai.agent.id` unique across hosts and restarts (agent ids start again at 1).
    instance: String,
    content: bool,
    agents: HashMap<u64, Session>,
    /// The command span of each process (tgid) of an agent.
    procs: HashMap<u32, Proc>,
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

/// The outcome of a guardrail, as the event the GenAI conventions' guardrail proposal names
/// (`gen_ai.guardrail.result`): the rule (policy), whether it blocked, warned or stepped in,
/// Axiom's own action as its value, where it was seen, and the threat-detection fields SIEMs
/// read (`agent.threat.detection.*`).
fn guardrail_result(
    rule: &str,
    severity: &str,
    action: axiom_proto::wire::Action,
    seen: Option<&str>,
) -> Vec<KeyValue> {
    use axiom_proto::wire::Action as A;
    let kind = match action {
        A::Deny | A::Kill | A::Freeze | A::Stop => "block",
        A::Inject => "intervene",
        _ => "warn",
    };
    let mut v = vec![
        KeyValue::new("gen_ai.guardrail.policy.id", rule.to_string()),
        KeyValue::new("gen_ai.guardrail.result.type", kind),
        KeyValue::new("gen_ai.guardrail.result.value", action.name()),
        KeyValue::new("agent.threat.detection.rule.id", rule.to_string()),
        KeyValue::new("agent.threat.detection.severity", severity.to_string()),
        KeyValue::new("agent.threat.detection.action", action.name()),
    ];
    if let Some(seen) = seen {
        v.push(KeyValue::new("gen_ai.guardrail.source", seen.to_string()));
    }
    v
}

/// The version of an agent CLI that npm installed: the `version` of the `package.json` above
/// its script (read through the agent's own root: the path is the agent's). None for others.
fn agent_version(pid: u32, program: &str) -> Option<String> {
    if !program.starts_with('/') {
        return None;
    }
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    let script = std::fs::canonicalize(root.join(program.trim_start_matches('/'))).ok()?;
    for dir in script.ancestors().skip(1).take(4) {
        let f = dir.join("package.json");
        let Ok(m) = std::fs::metadata(&f) else {
            continue;
        };
        if !m.is_file() || m.len() > 256 * 1024 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).ok()?).ok()?;
        return v["version"].as_str().map(|s| s.chars().take(64).collect());
    }
    None
}

impl Sessions {
    pub(crate) fn new(tracer: SdkTracer, content: bool) -> Sessions {
        Sessions {
            tracer,
            instance: super::metrics::instance_id(),
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
        let instance = &self.instance;
        self.agents.entry(ev.agent).or_insert_with(|| {
            let label = format!("agent-{}", ev.agent);
            let root = tracer
                .span_builder(format!("invoke_agent {label}"))
                .with_kind(SpanKind::Internal)
                .with_start_time(at(ev))
                .with_attributes([
                    KeyValue::new("gen_ai.operation.name", "invoke_agent"),
                    // The first event seen of it stands for its start (an agent's start is
                    // its first event; one adopted before axiomd ran has an earlier start).
                    KeyValue::new(
                        "gen_ai.agent.id",
                        format!("{instance}-{}-{}", ev.time_ns, ev.agent),
                    ),
                    KeyValue::new("axiom.agent.id", ev.agent as i64),
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
                leader: 0,
                hooked: false,
                tools: Vec::new(),
                conversation: false,
                model: false,
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
                // A thread's end is not its process's.
                if ev.pid != ev.tgid {
                    return;
                }
                if let Some(mut p) = self.procs.remove(&ev.tgid) {
                    let (attrs, status) = exit_status(code, signal);
                    p.span.set_attributes(attrs);
                    if let Some(st) = status {
                        p.span.set_status(st);
                    }
                    p.span.end_with_timestamp(at(ev));
                }
            }
            Body::Hook { .. } => self.hook(ev),
            Body::Connect { .. } => self.connect(ev),
            Body::Output {
                target: Some(path), ..
            } if path.starts_with('/') && !path.starts_with("/dev/") => {
                self.file(ev, "write", path, None)
            }
            Body::File {
                op, path, path2, ..
            } if !matches!(op, axiom_proto::wire::FileOp::Open) => {
                self.file(ev, op.name(), path, path2.as_deref())
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
        let program = command.first().map_or("", String::as_str);
        let version = agent_version(ev.tgid, program);
        let s = self.session(ev);
        s.leader = ev.tgid;
        s.hooked = matches!(
            axiom_proto::agent_cli::agent_cli(program),
            Some("claude" | "codex" | "gemini" | "opencode")
        );
        s.root
            .set_attribute(KeyValue::new("gen_ai.provider.name", provider(program)));
        if let Some(v) = version {
            s.root
                .set_attribute(KeyValue::new("gen_ai.agent.version", v));
        }
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

    /// What a hook said: the conversation and model on the session, a tool call's span begun
    /// (ended at once when a rule refused it: it never ran) or ended, every open one ended at
    /// the agent's stop.
    fn hook(&mut self, ev: &Event) {
        let Body::Hook {
            event,
            tool,
            call,
            text,
            refused,
            conversation,
            model,
            ..
        } = &ev.body
        else {
            return;
        };
        let content = self.content;
        let tracer = self.tracer.clone();
        let s = self.session(ev);
        s.hooked = true;
        if let Some(c) = conversation
            && !s.conversation
        {
            s.conversation = true;
            s.root
                .set_attribute(KeyValue::new("gen_ai.conversation.id", c.clone()));
        }
        if let Some(m) = model
            && !s.model
        {
            s.model = true;
            s.root
                .set_attribute(KeyValue::new("gen_ai.request.model", m.clone()));
        }
        match (HookMark::of(event), tool) {
            (HookMark::ToolCall, Some(name)) => {
                let mut attrs = vec![
                    KeyValue::new("gen_ai.operation.name", "execute_tool"),
                    KeyValue::new("gen_ai.tool.name", name.clone()),
                    KeyValue::new("gen_ai.tool.type", "function"),
                ];
                if let Some(id) = call {
                    attrs.push(KeyValue::new("gen_ai.tool.call.id", id.clone()));
                }
                if content {
                    // Opt-in, and masked as stored.
                    attrs.push(KeyValue::new("gen_ai.tool.call.arguments", text.clone()));
                }
                let mut span = tracer
                    .span_builder(format!("execute_tool {name}"))
                    .with_kind(SpanKind::Internal)
                    .with_start_time(at(ev))
                    .with_attributes(attrs)
                    .start_with_context(&tracer, &s.cx);
                if let Some(rule) = refused {
                    span.set_attribute(KeyValue::new("error.type", "refused"));
                    span.set_status(Status::error(format!("refused by {rule}")));
                    span.end_with_timestamp(at(ev));
                    return;
                }
                let cx = Context::new().with_remote_span_context(span.span_context().clone());
                s.tools.push(Tool {
                    call: call.clone(),
                    name: name.clone(),
                    span,
                    cx,
                    written: Default::default(),
                });
            }
            (HookMark::ToolDone, _) => {
                // The call it names, else the latest of that tool.
                let i = s
                    .tools
                    .iter()
                    .rposition(|t| call.is_some() && t.call == *call)
                    .or_else(|| s.tools.iter().rposition(|t| Some(&t.name) == tool.as_ref()));
                if let Some(i) = i {
                    let mut t = s.tools.remove(i);
                    t.span.end_with_timestamp(at(ev));
                }
            }
            (HookMark::Stop, _) => s.end_tools(at(ev)),
            _ => {}
        }
    }

    /// The context a span of `ev`'s process is parented to: the command of `parent` (its
    /// process's, or the one that started it), unless that is the agent itself; else the
    /// tool call open at the time; else the session.
    fn parent_cx(&mut self, ev: &Event, parent: u32) -> Context {
        let leader = self.session(ev).leader;
        if parent != leader
            && let Some(p) = self.procs.get(&parent)
            && p.agent == ev.agent
        {
            return p.cx.clone();
        }
        self.session(ev).open_cx()
    }

    /// A command's span; an exec replaces the process's program, so its previous one ends here.
    fn exec(&mut self, ev: &Event) {
        let Body::Exec { filename, argv, .. } = &ev.body else {
            return;
        };
        if let Some(mut old) = self.procs.remove(&ev.tgid) {
            old.span.end_with_timestamp(at(ev));
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
        let parent = self.parent_cx(ev, ev.ppid);
        let s = self.session(ev);
        s.last = at(ev);
        // An agent without hooks: each command its own process starts is a tool call.
        let name = if !s.hooked && ev.ppid == s.leader && ev.tgid != s.leader {
            attrs.extend([
                KeyValue::new("gen_ai.operation.name", "execute_tool"),
                KeyValue::new("gen_ai.tool.name", exe.clone()),
                KeyValue::new("gen_ai.tool.type", "function"),
            ]);
            format!("execute_tool {exe}")
        } else {
            format!("exec {exe}")
        };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(at(ev))
            .with_attributes(attrs)
            .start_with_context(&tracer, &parent);
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        self.procs.insert(
            ev.tgid,
            Proc {
                agent: ev.agent,
                span,
                cx,
                files: 0,
                written: Default::default(),
            },
        );
    }

    /// A connection, as a span of its own under the command that made it (else the tool call
    /// open at the time, else the session).
    fn connect(&mut self, ev: &Event) {
        let Body::Connect {
            family,
            address,
            port,
        } = &ev.body
        else {
            return;
        };
        let tracer = self.tracer.clone();
        let parent = self.parent_cx(ev, ev.tgid);
        let mut attrs = vec![
            KeyValue::new("network.peer.address", address.clone()),
            KeyValue::new("process.pid", ev.tgid as i64),
        ];
        let name = match family {
            axiom_proto::wire::Family::Unix => {
                attrs.push(KeyValue::new("network.transport", "unix"));
                format!("connect {address}")
            }
            f => {
                attrs.push(KeyValue::new("network.peer.port", i64::from(*port)));
                let ipv = if matches!(f, axiom_proto::wire::Family::Inet6) {
                    "ipv6"
                } else {
                    "ipv4"
                };
                attrs.push(KeyValue::new("network.type", ipv));
                format!("connect {address}:{port}")
            }
        };
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(at(ev))
            .with_attributes(attrs)
            .start_with_context(&tracer, &parent);
        span.end_with_timestamp(at(ev));
    }

    /// What a command did to a file, as an event on its span (a file's first write, each
    /// rename, unlink, creat, mkdir…; at most `FILE_EVENTS` a command). The agent's own
    /// process writes files for its tools (Claude Code's Write and Edit): during a tool call,
    /// those go on the call's span.
    fn file(&mut self, ev: &Event, op: &str, path: &str, to: Option<&str>) {
        let mut attrs = vec![KeyValue::new("file.path", path.to_string())];
        if let Some(t) = to {
            attrs.push(KeyValue::new("axiom.file.to", t.to_string()));
        }
        if let Some(s) = self.agents.get_mut(&ev.agent)
            && s.leader == ev.tgid
            && let Some(t) = s.tools.last_mut()
        {
            if t.written.len() < FILE_EVENTS && (op != "write" || t.written.insert(path.into())) {
                t.span
                    .add_event_with_timestamp(format!("axiom.file.{op}"), at(ev), attrs);
            }
            return;
        }
        let Some(p) = self
            .procs
            .get_mut(&ev.tgid)
            .filter(|p| p.agent == ev.agent && p.files < FILE_EVENTS)
        else {
            return;
        };
        if op == "write" && !p.written.insert(path.to_string()) {
            return;
        }
        p.files += 1;
        p.span
            .add_event_with_timestamp(format!("axiom.file.{op}"), at(ev), attrs);
    }

    /// A guardrail span from the write that broke the rule to the violation.
    fn violation(&mut self, ev: &Event) {
        let Body::Violation {
            rule,
            severity,
            action,
            detail,
            latency_us,
            scope,
            ..
        } = &ev.body
        else {
            return;
        };
        let content = self.content;
        let tracer = self.tracer.clone();
        let parent = self.parent_cx(ev, ev.tgid);
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
            .start_with_context(&tracer, &parent);
        span.add_event_with_timestamp(
            "gen_ai.guardrail.result",
            at(ev),
            guardrail_result(rule, severity.name(), *action, scope.map(|s| s.name())),
        );
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
            delivered,
            channel,
            ..
        } = &ev.body
        else {
            return;
        };
        let content = self.content;
        let s = self.session(ev);
        let mut attrs = vec![KeyValue::new("axiom.intervention.action", action.name())];
        if let Some(c) = channel {
            attrs.push(KeyValue::new("axiom.intervention.channel", c.name()));
        }
        if let Some(d) = delivered {
            attrs.push(KeyValue::new("axiom.intervention.delivered", *d));
        }
        if let Some(r) = rule {
            attrs.push(KeyValue::new("axiom.rule.id", r.clone()));
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
            .add_event_with_timestamp("axiom.intervention", at(ev), attrs);
    }

    /// The session ends; whatever of the agent still runs ends with it, as far as its trace is
    /// concerned.
    fn agent_exited(&mut self, ev: &Event, code: &Option<i32>, signal: &Option<i32>) {
        let open: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.agent == ev.agent)
            .map(|(p, _)| *p)
            .collect();
        for p in open {
            if let Some(mut p) = self.procs.remove(&p) {
                p.span.end_with_timestamp(at(ev));
            }
        }
        if let Some(mut s) = self.agents.remove(&ev.agent) {
            s.end_tools(at(ev));
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
                s.end_tools(SystemTime::now());
                s.root.end();
            }
        }
    }
}
