//! What every command shares: where axiomd is and how to answer (the global flags), the
//! connection, the exit codes scripts rely on, and printing and following events.
use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use axiom_proto::wire::{Body, Connection, DEFAULT_SOCKET, ErrorCode, Event};

use crate::render;

/// The flags every command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// axiomd's control socket.
    #[arg(long, global = true, env = "AXIOM_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// One JSON object per event instead of readable lines.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Exit code for rule files with an error.
pub const EXIT_BAD_RULES: u8 = 65; // EX_DATAERR

/// Exit codes scripts can rely on.
pub const EXIT_UNREACHABLE: u8 = 69; // EX_UNAVAILABLE

/// Exit code for a refused request, by the reply's error code.
pub fn refusal_exit(code: Option<ErrorCode>) -> u8 {
    match code {
        Some(ErrorCode::NoSuchProcess) => 3,
        Some(ErrorCode::ExitedDuringAdoption) => 4,
        Some(ErrorCode::KernelThread) => 5,
        Some(ErrorCode::Init) => 6,
        Some(ErrorCode::AlreadyTracked) => 7,
        Some(ErrorCode::NoSuchAgent) => 8,
        Some(ErrorCode::NotACgroup) => 9,
        Some(ErrorCode::NoTerminal) => 10,
        Some(ErrorCode::TerminalClosed) => 11,
        Some(ErrorCode::BadRules) => EXIT_BAD_RULES,
        Some(ErrorCode::NotPermitted) => 77, // EX_NOPERM
        _ => 1,
    }
}

/// The connection to axiomd's control socket.
pub fn connect(g: &Global) -> anyhow::Result<Connection> {
    Ok(Connection::connect(&g.socket)?)
}

pub struct Printer {
    pub json: bool,
    pub style: render::Style,
    /// The terminal is in raw mode: end lines with CR LF.
    pub crlf: bool,
}

impl Printer {
    pub fn new(json: bool) -> Printer {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Printer {
            json,
            style: render::Style { color },
            crlf: false,
        }
    }

    pub fn print(&self, e: &Event) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        let end = if self.crlf { "\r\n" } else { "\n" };
        if self.json {
            serde_json::to_writer(&mut out, e)?;
        } else {
            write!(out, "{}", self.style.line(e))?;
        }
        write!(out, "{end}")?;
        out.flush()
    }
}

/// Set by SIGINT: a watcher detaches instead of dying mid-line.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub fn catch_sigint() {
    let act = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_sigint),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    let _ = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGINT, &act) };
}

/// How a follow ended.
pub enum Followed {
    /// The agent ended (its root process exited).
    Ended(Box<Event>),
    /// Ctrl-C.
    Detached,
}

/// Streams an agent's events until it ends (or Ctrl-C); counts them by kind in `seen`.
pub fn follow_agent(
    conn: &mut Connection,
    p: &Printer,
    root: u32,
    seen: &mut std::collections::BTreeMap<&'static str, u64>,
) -> anyhow::Result<Followed> {
    conn.set_timeout(Some(Duration::from_millis(200)))?;
    loop {
        if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(Followed::Detached);
        }
        let Some(e) = conn.next_event()? else {
            continue;
        };
        p.print(&e)?;
        *seen.entry(e.body.kind().name()).or_default() += 1;
        let ended = matches!(e.body, Body::AgentExited { .. })
            || (e.tgid == root && matches!(e.body, Body::Exit { .. }));
        if ended {
            return Ok(Followed::Ended(Box::new(e)));
        }
    }
}

/// The status header `watch` prints before the stream: who, what, where.
pub fn header(a: &axiom_proto::wire::AgentInfo, color: bool) -> String {
    let b = |s: &str| {
        if color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    let cmd = render::argv(&a.command);
    format!(
        "{} agent {}  {}  pid {}  uid {}  {}\n  command: {}\n  workspace: {}{}",
        b("──"),
        b(&a.id.to_string()),
        a.name.as_deref().unwrap_or("-"),
        a.leader,
        a.owner_uid,
        a.state,
        if cmd.is_empty() { "-".into() } else { cmd },
        a.workspace.as_deref().unwrap_or("-"),
        a.profile
            .as_deref()
            .map(|p| format!("\n  profile: {p}"))
            .unwrap_or_default(),
    )
}

/// The line `watch` ends with: how the agent ended and what it did.
pub fn summary(how: &str, seen: &std::collections::BTreeMap<&'static str, u64>) -> String {
    let counts: Vec<String> = seen.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("── {how}; events: {}", counts.join(" "))
}

pub fn refused(what: &str, r: axiom_proto::wire::Reply) -> anyhow::Result<ExitCode> {
    eprintln!(
        "axiomctl: {what}: {}",
        r.error.as_deref().unwrap_or("refused")
    );
    Ok(ExitCode::from(refusal_exit(r.code)))
}
