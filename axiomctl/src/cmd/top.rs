//! `axiomctl top`: a live view of the caller's agents, one row each, the busiest first — kind,
//! state, CPU, events a second, files written, commands run, violations, and the last
//! intervention with whether it reached the agent. Keys open an agent's `watch`, freeze, thaw
//! or stop it. What axiomd shows is what the caller may see: the socket's per-user
//! authorisation decides, as for `agents` and `events`.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::IsTerminal as _,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::bail;
use axiom_proto::wire::{AgentInfo, AgentState, Body, Event, Request};
use ratatui::{
    Frame,
    crossterm::event::{self, Event as Input, KeyCode, KeyEventKind},
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Cell, Row, Table, TableState},
};

use crate::client::{Global, connect};

/// Seconds over which events a second are counted.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Files remembered per agent, to count the distinct ones it wrote.
const FILES_KEPT: usize = 10_000;
/// How often the agents and their CPU are read again.
const REFRESH: Duration = Duration::from_secs(1);

/// What the event stream told of one agent since `top` started.
#[derive(Default)]
struct Seen {
    events: u64,
    recent: VecDeque<Instant>,
    files: HashSet<String>,
    commands: u64,
    violations: u64,
    /// The last intervention: its action, its channel, and whether it arrived (`None`: the
    /// action does not say, a freeze or a kill).
    last: Option<(String, Option<String>, Option<bool>)>,
}

impl Seen {
    fn add(&mut self, e: &Event, now: Instant) {
        self.events += 1;
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
        {
            self.recent.pop_front();
        }
        match &e.body {
            Body::Exec { .. } => self.commands += 1,
            Body::Output {
                target: Some(t), ..
            } if t.starts_with('/')
                && !axiom_rules::is_terminal(Some(t))
                && !t.starts_with("/dev/")
                && self.files.len() < FILES_KEPT =>
            {
                self.files.insert(t.clone());
            }
            Body::Violation { .. } => self.violations += 1,
            Body::Intervention {
                action,
                delivered,
                channel,
                ..
            } => {
                self.last = Some((
                    action.name().to_string(),
                    channel.map(|c| c.name().to_string()),
                    *delivered,
                ));
            }
            _ => {}
        }
    }

    fn rate(&self, now: Instant) -> f64 {
        let n = self
            .recent
            .iter()
            .filter(|t| now.duration_since(**t) <= RATE_WINDOW)
            .count();
        n as f64 / RATE_WINDOW.as_secs_f64()
    }
}

/// One row of the view.
struct Shown {
    info: AgentInfo,
    cpu: f64,
    rate: f64,
    files: usize,
    commands: u64,
    violations: u64,
    last: String,
}

/// CPU time (clock ticks) of a process, from /proc (readable for any process).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state is field 3; utime and stime are 14, 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn run(g: &Global) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        bail!("top draws on a terminal; `axiomctl agents` and `axiomctl events` print lines");
    }
    let seen: Arc<Mutex<HashMap<u64, Seen>>> = Arc::default();
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let mut stream = connect(g)?;
        let r = stream.subscribe(false, None)?;
        if !r.ok {
            bail!("events: {}", r.error.as_deref().unwrap_or("refused"));
        }
        let (seen, lost) = (seen.clone(), lost.clone());
        std::thread::spawn(move || {
            while let Ok(Some(e)) = stream.next_event() {
                if let Ok(mut m) = seen.lock() {
                    m.entry(e.agent).or_default().add(&e, Instant::now());
                }
            }
            lost.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut term = ratatui::init();
    let out = view(g, &mut term, &seen, &lost, color);
    ratatui::restore();
    out
}

/// The view's loop: read the agents every `REFRESH`, draw, answer keys.
fn view(
    g: &Global,
    term: &mut ratatui::DefaultTerminal,
    seen: &Mutex<HashMap<u64, Seen>>,
    lost: &std::sync::atomic::AtomicBool,
    color: bool,
) -> anyhow::Result<ExitCode> {
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks: HashMap<u64, (Instant, u64)> = HashMap::new();
    let mut rows: Vec<Shown> = Vec::new();
    let mut state = TableState::default().with_selected(Some(0));
    let mut note = String::new();
    let mut read_at = Instant::now() - REFRESH;
    loop {
        let now = Instant::now();
        if now.duration_since(read_at) >= REFRESH {
            read_at = now;
            let r = connect(g)?.request(&Request::Agents)?;
            let agents = r.agents.unwrap_or_default();
            let m = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            rows = agents
                .into_iter()
                .filter(|a| a.state != AgentState::Exited)
                .map(|info| {
                    let t: u64 = info.pids.iter().filter_map(|p| cpu_ticks(*p)).sum();
                    let cpu = match ticks.insert(info.id, (now, t)) {
                        Some((at, before)) if now > at => {
                            t.saturating_sub(before) as f64
                                / hz
                                / now.duration_since(at).as_secs_f64()
                                * 100.0
                        }
                        _ => 0.0,
                    };
                    let s = m.get(&info.id);
                    Shown {
                        cpu,
                        rate: s.map_or(0.0, |s| s.rate(now)),
                        files: s.map_or(0, |s| s.files.len()),
                        commands: s.map_or(0, |s| s.commands),
                        violations: s.map_or(0, |s| s.violations),
                        last: s.and_then(|s| s.last.as_ref()).map_or_else(
                            String::new,
                            |(a, ch, d)| {
                                let how = ch.as_deref().map_or(String::new(), |c| format!(" {c}"));
                                match d {
                                    Some(true) => format!("{a}{how} delivered"),
                                    Some(false) => format!("{a}{how} NOT delivered"),
                                    None => format!("{a}{how}"),
                                }
                            },
                        ),
                        info,
                    }
                })
                .collect();
            drop(m);
            // The busiest first; the older agent first among equals.
            rows.sort_by(|a, b| {
                b.rate
                    .total_cmp(&a.rate)
                    .then(b.cpu.total_cmp(&a.cpu))
                    .then(a.info.id.cmp(&b.info.id))
            });
            if lost.load(std::sync::atomic::Ordering::Relaxed) {
                note = "the event stream from axiomd ended: counts no longer move".into();
            }
        }
        if state.selected().is_some_and(|i| i >= rows.len()) {
            state.select(Some(rows.len().saturating_sub(1)));
        }
        term.draw(|f| draw(f, &rows, &mut state, &note, color))?;
        if !event::poll(Duration::from_millis(250))? {
            continue;
        }
        let Input::Key(k) = event::read()? else {
            continue;
        };
        if k.kind != KeyEventKind::Press {
            continue;
        }
        let chosen = state
            .selected()
            .and_then(|i| rows.get(i))
            .map(|r| r.info.id);
        let leader = state
            .selected()
            .and_then(|i| rows.get(i))
            .map(|r| r.info.leader);
        let act = |what: &str, req: Request| -> String {
            match connect(g).and_then(|mut c| Ok(c.request(&req)?)) {
                Ok(r) if r.ok => format!("{what}: done"),
                Ok(r) => format!("{what}: {}", r.error.as_deref().unwrap_or("refused")),
                Err(e) => format!("{what}: {e:#}"),
            }
        };
        match (k.code, chosen) {
            (KeyCode::Char('q') | KeyCode::Esc, _) => return Ok(ExitCode::SUCCESS),
            (KeyCode::Down | KeyCode::Char('j'), _) => state.select_next(),
            (KeyCode::Up | KeyCode::Char('k'), _) => state.select_previous(),
            (KeyCode::Char('f'), Some(a)) => {
                note = act(&format!("freeze {a}"), Request::Freeze { agent: a });
                read_at = Instant::now() - REFRESH;
            }
            (KeyCode::Char('t'), Some(a)) => {
                note = act(&format!("thaw {a}"), Request::Thaw { agent: a });
                read_at = Instant::now() - REFRESH;
            }
            (KeyCode::Char('s'), Some(a)) => {
                note = act(&format!("stop {a}"), Request::Stop { agent: a });
                read_at = Instant::now() - REFRESH;
            }
            (KeyCode::Enter, Some(a)) => {
                // The agent's `watch` (of its root process), on this terminal until it ends
                // (Ctrl-C), then back.
                let pid = leader.unwrap_or(0).to_string();
                ratatui::restore();
                let st = std::process::Command::new(std::env::current_exe()?)
                    .arg("--socket")
                    .arg(&g.socket)
                    .args(["watch", &pid])
                    .status();
                *term = ratatui::init();
                note = match st {
                    Ok(_) => String::new(),
                    Err(e) => format!("watch {a}: {e}"),
                };
            }
            _ => {}
        }
    }
}

fn draw(f: &mut Frame, rows: &[Shown], state: &mut TableState, note: &str, color: bool) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(
        Line::from(format!(
            "axiomctl top — {} agents · ↑↓ select · enter watch · f freeze · t thaw · s stop · q quit",
            rows.len()
        )),
        head,
    );
    let paint = |s: Style| if color { s } else { Style::default() };
    let header = Row::new([
        "ID",
        "KIND",
        "STATE",
        "CPU%",
        "EV/S",
        "FILES",
        "CMDS",
        "VIOL",
        "LAST INTERVENTION",
        "COMMAND",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let table_rows = rows.iter().map(|r| {
        let state_style = match r.info.state {
            AgentState::Frozen => paint(Style::default().fg(Color::Cyan)),
            _ => Style::default(),
        };
        let viol_style = if r.violations > 0 {
            paint(Style::default().fg(Color::Red))
        } else {
            Style::default()
        };
        Row::new([
            Cell::from(r.info.id.to_string()),
            Cell::from(r.info.agent_kind.clone().unwrap_or_else(|| "-".into())),
            Cell::from(r.info.state.name()).style(state_style),
            Cell::from(format!("{:.1}", r.cpu)),
            Cell::from(format!("{:.1}", r.rate)),
            Cell::from(r.files.to_string()),
            Cell::from(r.commands.to_string()),
            Cell::from(r.violations.to_string()).style(viol_style),
            Cell::from(r.last.clone()),
            Cell::from(r.info.command.join(" ")),
        ])
    });
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(5),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(26),
            Constraint::Min(10),
        ],
    )
    .header(header)
    // Reverse video marks the selection: readable without colour.
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(table, body, state);
    f.render_widget(Line::from(note.to_string()), foot);
}
