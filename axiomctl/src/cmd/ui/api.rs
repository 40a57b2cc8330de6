//! The session page's API: each answer is one or a few requests to axiomd, made as the user
//! who runs `axiomctl ui`, so axiomd's per-user authorisation decides what is shown.
use std::{collections::HashMap, path::Path};

use axiom_proto::wire::{
    AgentInfo, AgentState, Body, Connection, ErrorCode, Event, EventQuery, Reply, Request,
};
use hyper::StatusCode;
use serde_json::{Value, json};

use super::replay::Replay;
use crate::cmd::export::asciicast;

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
/// Events read for an asciicast at most (axiomd's own cap on one answer).
const TERMINAL_EVENTS: usize = 100_000;
/// Events a replay reads per request, and requests per page of the replay at most: a long
/// session's replay is built over several reads of the page.
const REPLAY_PAGE: usize = 10_000;
const REPLAY_PAGES: usize = 10;
/// Agents whose replay is kept between requests.
const REPLAYS_KEPT: usize = 16;

/// The replays kept between requests, by agent.
pub type Replays = std::sync::Mutex<HashMap<u64, Replay>>;

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

pub fn answer(
    socket: &Path,
    replays: &Replays,
    path: &str,
    query: &str,
) -> Result<Answer, Refused> {
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
        "/api/terminal" => terminal(
            &ask,
            replays,
            agent()?,
            number("from")?.unwrap_or(0) as usize,
        )
        .map(Answer::Json),
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
            // The rare kinds: counting a session's writes on every refresh of the list
            // would scan all of them.
            kinds: vec!["violation".into(), "intervention".into()],
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
    // Read forward from the oldest listed start: one pass, where "the latest N" of kinds this
    // rare widens its window over the whole store first.
    let marks = query_events(
        ask,
        EventQuery {
            since_ns: agents.iter().map(|a| a.started_ns).min(),
            kinds: vec!["intervention".into(), "agent_exited".into()],
            limit: 100_000,
            oldest: true,
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
    let info = agent_info(ask, agent)?;
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

/// The caller's agent `agent`, as axiomd lists it to them.
fn agent_info(
    ask: &dyn Fn(&Request) -> Result<Reply, Refused>,
    agent: u64,
) -> Result<AgentInfo, Refused> {
    ask(&Request::Agents)?
        .agents
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.id == agent)
        .ok_or_else(|| Refused::new(StatusCode::NOT_FOUND, format!("no agent {agent} of yours")))
}

/// The agent's terminal as its user saw it: its writes fed through the screen model, a screen
/// kept at each pause, read on from where the last request stopped; the screens from `from`.
fn terminal(
    ask: &dyn Fn(&Request) -> Result<Reply, Refused>,
    replays: &Replays,
    agent: u64,
    from: usize,
) -> Result<Value, Refused> {
    let info = agent_info(ask, agent)?;
    let mut kept = replays
        .lock()
        .map_err(|_| Refused::new(StatusCode::INTERNAL_SERVER_ERROR, "replays poisoned"))?;
    if kept.len() >= REPLAYS_KEPT && !kept.contains_key(&agent) {
        kept.clear();
    }
    let r = kept
        .entry(agent)
        .or_insert_with(|| Replay::new(info.started_ns));
    // An agent id given again after a restart: another session.
    if r.start_ns != info.started_ns {
        *r = Replay::new(info.started_ns);
    }
    for _ in 0..REPLAY_PAGES {
        let events = query_events(
            ask,
            EventQuery {
                agent: Some(agent),
                since_ns: Some(r.cursor_ns),
                kinds: vec!["agent_started".into(), "output".into()],
                limit: REPLAY_PAGE,
                oldest: true,
                ..Default::default()
            },
        )?;
        r.feed(&events);
        if events.len() < REPLAY_PAGE {
            break;
        }
    }
    Ok(r.view(from))
}
