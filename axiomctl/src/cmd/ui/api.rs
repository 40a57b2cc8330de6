//! The session page's API: each answer is one or a few requests to axiomd, made as the user
//! who runs `axiomctl ui`, so axiomd's per-user authorisation decides what is shown.
use std::{collections::HashMap, path::Path};

use axiom_proto::wire::{
    AgentInfo, AgentState, Body, Connection, ErrorCode, Event, EventQuery, Reply, Request,
};
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::cmd::export::{SessionTerminal, asciicast};

pub enum Answer {
    Json(Value),
    Download { name: String, text: String },
}

pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl Refused {
    fn new(status: StatusCode, message: impl Into<String>) -> Refused {
        Refused {
            status,
            message: message.into(),
        }
    }
}

/// Events a timeline page holds at most.
const PAGE_MAX: usize = 5_000;
/// Spans a session's lanes are counted in.
const BUCKETS: u64 = 200;
/// Screens of a terminal replay at most (a screen at each pause in its output).
const FRAMES_MAX: usize = 600;
/// A pause in a terminal's output this long ends a screen of the replay: a frame at 60 Hz, so
/// each paint of a TUI (a burst of writes well under a millisecond apart) is one screen.
const FRAME_PAUSE_NS: u64 = 16_000_000;
/// Events read for a terminal replay at most (axiomd's own cap on one answer).
const TERMINAL_EVENTS: usize = 100_000;

/// The kinds a timeline shows: not forks (each exec's process is enough) nor the kernel
/// matcher's internal hits (the violation they led to is shown).
const TIMELINE_KINDS: &[&str] = &[
    "exec",
    "exit",
    "output",
    "file",
    "connect",
    "agent_started",
    "agent_exited",
    "intervention",
    "violation",
    "denied",
    "hooks_inactive",
    "hook",
];

pub fn answer(socket: &Path, path: &str, query: &str) -> Result<Answer, Refused> {
    let args: HashMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let number = |k: &str| -> Result<Option<u64>, Refused> {
        args.get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    Refused::new(StatusCode::BAD_REQUEST, format!("{k}={v}: not a number"))
                })
            })
            .transpose()
    };
    let agent = || {
        number("agent")?.ok_or_else(|| Refused::new(StatusCode::BAD_REQUEST, "agent= is required"))
    };
    let ask = |req: &Request| -> Result<Reply, Refused> {
        let r = Connection::connect(socket)
            .and_then(|mut c| c.request(req))
            .map_err(|e| Refused::new(StatusCode::BAD_GATEWAY, format!("axiomd: {e}")))?;
        if r.ok {
            return Ok(r);
        }
        let status = match r.code {
            Some(ErrorCode::NotPermitted) => StatusCode::FORBIDDEN,
            Some(ErrorCode::NoSuchAgent) => StatusCode::NOT_FOUND,
            Some(ErrorCode::BadQuery) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        Err(Refused::new(
            status,
            r.error.unwrap_or_else(|| "refused".into()),
        ))
    };
    match path {
        "/api/sessions" => sessions(&ask).map(Answer::Json),
        "/api/events" => {
            let events = query_events(
                &ask,
                EventQuery {
                    agent: Some(agent()?),
                    since_ns: number("since_ns")?,
                    kinds: TIMELINE_KINDS.iter().map(|k| k.to_string()).collect(),
                    limit: number("limit")?.map_or(1_000, |n| n as usize).min(PAGE_MAX),
                    oldest: true,
                    ..Default::default()
                },
            )?;
            Ok(Answer::Json(json!({ "events": events })))
        }
        "/api/summary" => summary(&ask, agent()?).map(Answer::Json),
        "/api/terminal" => terminal(&ask, agent()?).map(Answer::Json),
        "/api/asciicast" => {
            let a = agent()?;
            let events = terminal_events(&ask, a)?;
            let text = asciicast(&events, None)
                .map_err(|e| Refused::new(StatusCode::NOT_FOUND, format!("{e:#}")))?;
            Ok(Answer::Download {
                name: format!("agent-{a}.cast"),
                text,
            })
        }
        _ => Err(Refused::new(StatusCode::NOT_FOUND, "no such API")),
    }
}

fn query_events(
    ask: &dyn Fn(&Request) -> Result<Reply, Refused>,
    events: EventQuery,
) -> Result<Vec<Event>, Refused> {
    Ok(ask(&Request::Query { events, sql: None })?
        .events
        .unwrap_or_default())
}

/// The user's sessions, newest first, each with its counts from the store.
fn sessions(ask: &dyn Fn(&Request) -> Result<Reply, Refused>) -> Result<Value, Refused> {
    let mut agents: Vec<AgentInfo> = ask(&Request::Agents)?.agents.unwrap_or_default();
    agents.sort_by_key(|a| std::cmp::Reverse(a.started_ns));
    let counts = ask(&Request::Summary {
        events: EventQuery {
            kinds: ["violation", "intervention", "exec", "output", "hook"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
        bucket_ns: 0,
    })
    .map(|r| r.summary.unwrap_or_default())
    // Without a store the list still shows the agents.
    .unwrap_or_default();
    let mut by: HashMap<(u64, &str), u64> = HashMap::new();
    for c in &counts {
        *by.entry((c.agent, c.kind.as_str())).or_default() += c.n;
    }
    // Delivered or not, and when each ended: read from their few events of those kinds.
    let marks = query_events(
        ask,
        EventQuery {
            kinds: vec!["intervention".into(), "agent_exited".into()],
            limit: 100_000,
            ..Default::default()
        },
    )
    .unwrap_or_default();
    let mut delivered: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut ended: HashMap<u64, u64> = HashMap::new();
    for e in &marks {
        match &e.body {
            Body::Intervention {
                delivered: Some(d), ..
            } => {
                let n = delivered.entry(e.agent).or_default();
                if *d {
                    n.0 += 1;
                } else {
                    n.1 += 1;
                }
            }
            Body::AgentExited { .. } => {
                ended.insert(e.agent, e.time_ns);
            }
            _ => {}
        }
    }
    let list: Vec<Value> = agents
        .iter()
        .map(|a| {
            let n = |k: &str| by.get(&(a.id, k)).copied().unwrap_or(0);
            let (arrived, missed) = delivered.get(&a.id).copied().unwrap_or_default();
            json!({
                "id": a.id,
                "name": a.name,
                "kind": a.agent_kind.as_deref().unwrap_or("generic"),
                "uid": a.owner_uid,
                "user": user_name(a.owner_uid),
                "command": a.command,
                "workspace": a.workspace,
                "profile": a.profile,
                "started_ns": a.started_ns,
                "ended_ns": if a.state == AgentState::Exited { ended.get(&a.id).copied() } else { None },
                "state": a.state.name(),
                "exit_code": a.exit_code,
                "leader": a.leader,
                "conversation": a.conversation,
                "model": a.model,
                "violations": n("violation"),
                "interventions": n("intervention"),
                "delivered": arrived,
                "undelivered": missed,
                "commands": n("exec"),
                "writes": n("output"),
                "tool_calls": n("hook"),
            })
        })
        .collect();
    Ok(json!({ "uid": nix::unistd::getuid().as_raw(), "sessions": list }))
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// A session's lanes, counted per span of its time (the whole session, however long).
fn summary(ask: &dyn Fn(&Request) -> Result<Reply, Refused>, agent: u64) -> Result<Value, Refused> {
    let info = ask(&Request::Agents)?
        .agents
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.id == agent)
        .ok_or_else(|| Refused::new(StatusCode::NOT_FOUND, format!("no agent {agent} of yours")))?;
    // Its span: from its start to its last event (or now, while it runs).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let end = match info.state {
        AgentState::Exited => query_events(
            ask,
            EventQuery {
                agent: Some(agent),
                limit: 1,
                ..Default::default()
            },
        )?
        .last()
        .map_or(now, |e| e.time_ns),
        _ => now,
    };
    let span = end.saturating_sub(info.started_ns).max(1);
    let bucket_ns = span.div_ceil(BUCKETS).max(1_000_000);
    let counts = ask(&Request::Summary {
        events: EventQuery {
            agent: Some(agent),
            since_ns: Some(info.started_ns),
            ..Default::default()
        },
        bucket_ns,
    })?
    .summary
    .unwrap_or_default();
    Ok(json!({
        "agent": agent,
        "start_ns": info.started_ns,
        "end_ns": end,
        "bucket_ns": bucket_ns,
        "counts": counts,
    }))
}

fn terminal_events(
    ask: &dyn Fn(&Request) -> Result<Reply, Refused>,
    agent: u64,
) -> Result<Vec<Event>, Refused> {
    let mut events = query_events(
        ask,
        EventQuery {
            agent: Some(agent),
            kinds: vec!["agent_started".into(), "output".into()],
            limit: TERMINAL_EVENTS,
            oldest: true,
            ..Default::default()
        },
    )?;
    events.sort_by_key(|e| (e.time_ns, e.seq));
    Ok(events)
}

/// The agent's terminal as its user saw it: its writes fed through the screen model, a
/// screen kept at each pause in them.
fn terminal(
    ask: &dyn Fn(&Request) -> Result<Reply, Refused>,
    agent: u64,
) -> Result<Value, Refused> {
    let events = terminal_events(ask, agent)?;
    let term = match SessionTerminal::of(&events, None) {
        Ok(t) => t,
        Err(e) => return Ok(json!({ "frames": [], "note": format!("{e:#}") })),
    };
    let (rows, cols, _) = axiom_rules::screen::bounded(term.rows, term.cols);
    let mut screen = axiom_rules::screen::Screen::new(rows, cols);
    let writes: Vec<(u64, &str)> = term.writes(&events).collect();
    let mut frames: Vec<(u64, String)> = Vec::new();
    for (i, (t, text)) in writes.iter().enumerate() {
        screen.feed(text.as_bytes());
        let pause = writes
            .get(i + 1)
            .is_none_or(|(next, _)| next.saturating_sub(*t) >= FRAME_PAUSE_NS);
        if pause {
            frames.push((*t, screen.contents()));
        }
    }
    // Too many pauses: every n-th screen, and always the last.
    if frames.len() > FRAMES_MAX {
        let step = frames.len().div_ceil(FRAMES_MAX);
        let last = frames.len() - 1;
        frames = frames
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i == last)
            .map(|(_, f)| f)
            .collect();
    }
    Ok(json!({
        "device": term.device,
        "rows": rows,
        "cols": cols,
        "start_ns": term.start_ns,
        "frames": frames.iter().map(|(t, s)| json!({ "time_ns": t, "screen": s })).collect::<Vec<_>>(),
    }))
}
