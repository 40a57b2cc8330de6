//! `axiomctl export --asciicast AGENT`: an agent's session as an asciicast v2 recording — what
//! its own terminal showed, from the writes the kernel captured to it (secrets masked, as
//! stored), on the clock of the kernel's stamps — that `asciinema play` plays.
use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};
use axiom_proto::wire::{Body, Event, EventQuery, Request};
use serde_json::json;

use crate::client::{Global, connect, refused};

/// What `axiomctl export` was asked.
#[derive(clap::Args, Debug)]
pub struct Asked {
    /// The agent (its id, as `axiomctl agents` lists it).
    pub agent: u64,
    /// As an asciicast v2 recording (asciinema's format).
    #[arg(long, required = true)]
    pub asciicast: bool,
    /// Where to write it (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// The terminal's size, ROWSxCOLS, for an agent whose record does not give it (one that
    /// `axiomctl run` did not start).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u16, u16)>,
}

/// Events asked of the store for one session at most.
const EVENTS_MAX: usize = 2_000_000;

pub fn run(g: &Global, q: &Asked) -> anyhow::Result<ExitCode> {
    let req = Request::Query {
        events: EventQuery {
            agent: Some(q.agent),
            since_ns: None,
            until_ns: None,
            kinds: vec!["agent_started".into(), "output".into()],
            text: None,
            limit: EVENTS_MAX,
            oldest: false,
        },
        sql: None,
    };
    let r = connect(g)?.request(&req)?;
    if !r.ok {
        return refused("export", r);
    }
    let mut events = r.events.unwrap_or_default();
    if events.len() >= EVENTS_MAX {
        eprintln!(
            "axiomctl: export: the session has more than {EVENTS_MAX} events; its latest are exported"
        );
    }
    events.sort_by_key(|e| (e.time_ns, e.seq));
    let cast = asciicast(&events, q.size)
        .with_context(|| format!("agent {}: nothing to export", q.agent))?;
    match &q.output {
        Some(p) => std::fs::write(p, cast).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().lock().write_all(cast.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A session's own terminal: what it was, its size, and when the session started.
pub struct SessionTerminal<'a> {
    pub device: String,
    pub rows: u16,
    pub cols: u16,
    /// When the session started, ns since the epoch.
    pub start_ns: u64,
    /// The command it ran.
    pub command: Option<&'a [String]>,
}

impl<'a> SessionTerminal<'a> {
    /// The terminal of a session's events (its start, then its writes): the one its start
    /// names, else the one it wrote to most; at the size its start gives, else `size`.
    pub fn of(events: &'a [Event], size: Option<(u16, u16)>) -> anyhow::Result<Self> {
        let started = events.iter().find_map(|e| match &e.body {
            Body::AgentStarted {
                command, terminal, ..
            } => Some((e.time_ns, command, terminal)),
            _ => None,
        });
        let terminal = started.and_then(|(_, _, t)| t.as_ref());
        let device = match terminal {
            Some(t) => t.device.clone(),
            None => most_written_terminal(events).context("it wrote to no terminal")?,
        };
        let Some((rows, cols)) = size.or(terminal.map(|t| (t.rows, t.cols))) else {
            bail!("its record gives no terminal size: say it with --size ROWSxCOLS");
        };
        Ok(SessionTerminal {
            device,
            rows,
            cols,
            start_ns: started
                .map(|(t, ..)| t)
                .or(events.first().map(|e| e.time_ns))
                .unwrap_or(0),
            command: started.map(|(_, c, _)| c.as_slice()),
        })
    }

    /// The text each write to this terminal put there, with its time, in order.
    pub fn writes<'e>(&self, events: &'e [Event]) -> impl Iterator<Item = (u64, &'e str)> {
        let device = self.device.clone();
        events.iter().filter_map(move |e| match &e.body {
            Body::Output {
                text,
                target: Some(t),
                ..
            } if *t == device && !text.is_empty() => Some((e.time_ns, text.as_str())),
            _ => None,
        })
    }
}

/// The recording of a session's events (its start, then its writes, in order): a header line
/// (version 2, the terminal's size, when it started), then `[seconds, "o", text]` per write
/// to the agent's own terminal.
pub fn asciicast(events: &[Event], size: Option<(u16, u16)>) -> anyhow::Result<String> {
    let term = SessionTerminal::of(events, size)?;
    let mut out = json!({
        "version": 2,
        "width": term.cols,
        "height": term.rows,
        "timestamp": term.start_ns / 1_000_000_000,
        "title": term.command.map(|c| c.join(" ")).unwrap_or_default(),
        "env": {"TERM": "xterm-256color"},
    })
    .to_string();
    out.push('\n');
    for (t, text) in term.writes(events) {
        let at = t.saturating_sub(term.start_ns) as f64 / 1e9;
        out.push_str(&json!([at, "o", text]).to_string());
        out.push('\n');
    }
    Ok(out)
}

/// The terminal (`/dev/pts/N`, `/dev/ttyN`) the session wrote to most.
fn most_written_terminal(events: &[Event]) -> Option<String> {
    let mut n: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for e in events {
        if let Body::Output {
            target: Some(t), ..
        } = &e.body
            && axiom_rules::is_terminal(Some(t))
        {
            *n.entry(t).or_default() += 1;
        }
    }
    n.into_iter()
        .max_by_key(|(_, c)| *c)
        .map(|(t, _)| t.to_string())
}

/// `40x120`: rows by columns.
pub fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (r, c) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: not ROWSxCOLS"))?;
    match (r.parse(), c.parse()) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => Ok((r, c)),
        _ => Err(format!("{s:?}: not ROWSxCOLS")),
    }
}

#[cfg(test)]
mod tests {
    use axiom_proto::wire::{Body, Event, Terminal};

    fn ev(t: u64, body: Body) -> Event {
        crate::test_events::ev(t, t, body)
    }

    fn out(t: u64, to: &str, text: &str) -> Event {
        crate::test_events::out(t, t, to, text)
    }

    /// The header gives the terminal's size and start; each write to the agent's own terminal
    /// is one output line at its offset from the start, and writes elsewhere are not.
    #[test]
    fn a_session_becomes_an_asciicast_of_its_own_terminal() {
        let start = 5_000_000_000;
        let events = vec![
            ev(
                start,
                Body::AgentStarted {
                    name: None,
                    command: vec!["claude".into()],
                    workspace: None,
                    profile: None,
                    terminal: Some(Terminal {
                        device: "/dev/pts/3".into(),
                        rows: 40,
                        cols: 120,
                    }),
                },
            ),
            out(start + 500_000_000, "/dev/pts/3", "\u{1b}[2Jhello"),
            out(start + 600_000_000, "/dev/pts/9", "a command's own pty"),
            out(start + 1_500_000_000, "/dev/pts/3", "world\r\n"),
        ];
        let cast = super::asciicast(&events, None).unwrap();
        let lines: Vec<serde_json::Value> = cast
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(
            (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
            (Some(120), Some(40))
        );
        assert_eq!(lines[0]["timestamp"], 5);
        assert_eq!(lines.len(), 3, "{cast}");
        assert_eq!(lines[1], serde_json::json!([0.5, "o", "\u{1b}[2Jhello"]));
        assert_eq!(lines[2], serde_json::json!([1.5, "o", "world\r\n"]));
        // Without a terminal in the record: the one written to most, at the size given.
        let cast = super::asciicast(&events[1..], Some((24, 80))).unwrap();
        assert!(
            cast.starts_with("{") && cast.contains("\"width\":80"),
            "{cast}"
        );
        assert!(super::asciicast(&events[1..], None).is_err());
    }
}
