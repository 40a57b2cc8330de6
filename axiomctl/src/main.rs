//! `axiomctl`: the command-line client of axiomd.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod agent_kind;
mod cmd;
mod confine;
mod doctor;
mod mcp;
mod pty;
mod render;
mod wasm;

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use axiom_proto::wire::{Body, Connection, DEFAULT_SOCKET, ErrorCode, Event, Request};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Watch and steer AI coding agents through axiomd")]
struct Cli {
    /// axiomd's control socket.
    #[arg(long, global = true, env = "AXIOM_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// One JSON object per event instead of readable lines.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Daemon status: attached programs, counters, losses by cause.
    Status,
    /// Check this host for what axiomd needs (BTF, bpffs, tracefs, lockdown, program types,
    /// Landlock, cgroup v2, D-Bus, the daemon and its storage): each PASS, WARN or FAIL with
    /// the remedy. Exit 1 when a check fails.
    Doctor,
    /// Adopt a running process and all its descendants, and show what they do live.
    Watch { pid: u32 },
    /// Run a command as an agent, in a cgroup of its own, and show what it does live. Under sudo
    /// the agent runs as the invoking user, not as root.
    Run {
        /// A name to show in `axiomctl agents`.
        #[arg(long)]
        name: Option<String>,
        /// The confinement profile: read-only, workspace-write (the default), full, or one
        /// configured in axiomd.toml. Applied before the agent starts.
        #[arg(long)]
        profile: Option<String>,
        /// The directory the agent works in (default: the current directory).
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Also print what the agent does (events), interleaved with its terminal output.
        #[arg(long)]
        watch: bool,
        /// The agent's kind (a profile of agents.toml: claude, codex, gemini, aider, opencode,
        /// generic): how interventions are typed into it. Default: from the program's name.
        #[arg(long, value_name = "KIND")]
        agent_kind: Option<String>,
        /// Do not install Claude Code hooks for the run (a Claude Code agent otherwise gets
        /// them: axiomd then refuses a dangerous Bash command before it runs and a stop while
        /// a claim is false).
        #[arg(long)]
        no_hooks: bool,
        /// Run this WebAssembly (WASI) program as the agent, with only the workspace preopened
        /// and no network; the words after `--` are its arguments.
        #[arg(long, value_name = "MODULE")]
        wasm: Option<PathBuf>,
        #[command(flatten)]
        wasm_limits: wasm::WasmLimits,
        #[arg(
            required_unless_present = "wasm",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<String>,
    },
    /// Runs a WASI module in this process (what `run --wasm` execs inside the agent's cgroup).
    #[command(hide = true)]
    WasmExec {
        #[arg(long)]
        workspace: PathBuf,
        /// The compiled-module cache directory.
        #[arg(long)]
        cache: Option<PathBuf>,
        #[command(flatten)]
        limits: wasm::WasmLimits,
        module: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the agents you may see.
    Agents,
    /// Ask an agent to end: SIGTERM to each of its processes.
    Stop { agent: u64 },
    /// Freeze every process of an agent (cgroup.freeze).
    Freeze { agent: u64 },
    /// Thaw a frozen agent.
    Thaw { agent: u64 },
    /// Kill an agent's whole process tree (cgroup.kill).
    Kill { agent: u64 },
    /// Stop tracking an agent (its processes run on, unwatched).
    Untrack { agent: u64 },
    /// Tell an agent something, as its user would (agents started with `run`): typed the way
    /// its kind reads input (its interrupt key, the message, Enter, paced) and confirmed on its
    /// screen; exits 1 when the agent's screen never showed it.
    Inject {
        agent: u64,
        /// The text; words are joined with spaces.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        text: Vec<String>,
        /// Type the text as it is, in one write: no interrupt key, no Enter, no confirmation.
        #[arg(long)]
        no_enter: bool,
    },
    /// Answers a Claude Code hook for axiomd (what `run` installs for a Claude Code agent):
    /// reads the hook's input on stdin, prints axiomd's answer. Says nothing when axiomd is
    /// unreachable (the agent goes on; the terminal channel remains).
    #[command(hide = true)]
    Hook,
    /// Stored events: the latest N of an agent, a time range, kinds, text — or read-only SQL.
    Query {
        #[arg(long)]
        agent: Option<u64>,
        /// How far back (`90s`, `10m`, `2h`, `1d`).
        #[arg(long)]
        since: Option<String>,
        /// Up to how long ago (`10m`: nothing newer than ten minutes).
        #[arg(long)]
        until: Option<String>,
        /// Only these kinds (repeat: exec, output, file, connect, violation, …).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Only events whose payload contains this text.
        #[arg(long)]
        grep: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// One read-only SQL statement over `events` (the warm tier) or `all_events` (every
        /// tier, with a `tier` column); root and the axiom group.
        #[arg(long, conflicts_with_all = ["agent", "since", "until", "kinds", "grep"])]
        sql: Option<String>,
        /// Comma-separated values instead of a table (SQL results).
        #[arg(long)]
        csv: bool,
    },
    /// Rules: list the active ones, reload them, or check and try a rule file offline.
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Manpage,
    /// Serve the Model Context Protocol (stdio; or streamable HTTP on loopback): tools for a
    /// model to spawn agents, observe them, check their status, intervene, read the principles
    /// and verify claims against what the kernel saw. Talks to axiomd as you: over D-Bus, or
    /// over its control socket where no system bus runs.
    Mcp {
        /// Where to find axiomd: `system` (the system bus; without one, the control socket),
        /// `socket` (the control socket), or a D-Bus address (`unix:path=…`).
        #[arg(long, env = "AXIOM_DBUS", default_value = "system")]
        bus: String,
        /// Serve streamable HTTP at this loopback address (e.g. 127.0.0.1:8765) instead of stdio.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// Where `--http` writes its bearer token (mode 0600; default
        /// /run/user/UID/axiom-mcp/PORT.token, hidden from confined agents).
        #[arg(long, requires = "http")]
        token_file: Option<PathBuf>,
        /// Rule files (or directories) `principles` checks text against (default: the files
        /// axiomd's active rules come from).
        #[arg(long)]
        rules: Vec<PathBuf>,
        /// Leave the agents this server started running when it ends (default: stop them).
        #[arg(long)]
        keep_agents: bool,
    },
    /// Show events (all visible to you, or one agent's).
    Events {
        #[arg(long)]
        agent: Option<u64>,
        /// Keep streaming new events.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// The rules axiomd is running.
    List,
    /// Ask axiomd to load its rule files again (the old rules stay if one has an error).
    Reload,
    /// Check rule files offline: every mistake as file:line: reason.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a sample text through rule files offline and print what matches.
    Test {
        rules: PathBuf,
        sample: PathBuf,
        /// What the sample is (terminal, output, network, file_write, exec, file, connect).
        /// A terminal sample is read through the screen model, as an agent's terminal is.
        #[arg(long, default_value = "terminal")]
        scope: String,
    },
}

/// Exit code for rule files with an error.
const EXIT_BAD_RULES: u8 = 65; // EX_DATAERR

/// Exit codes scripts can rely on.
const EXIT_UNREACHABLE: u8 = 69; // EX_UNAVAILABLE

/// Exit code for a refused request, by the reply's error code.
fn refusal_exit(code: Option<ErrorCode>) -> u8 {
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

fn connect(cli: &Cli) -> anyhow::Result<Connection> {
    Ok(Connection::connect(&cli.socket)?)
}

struct Printer {
    json: bool,
    style: render::Style,
    /// The terminal is in raw mode: end lines with CR LF.
    crlf: bool,
}

impl Printer {
    fn new(json: bool) -> Printer {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Printer {
            json,
            style: render::Style { color },
            crlf: false,
        }
    }

    fn print(&self, e: &Event) -> std::io::Result<()> {
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
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn catch_sigint() {
    let act = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_sigint),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    let _ = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGINT, &act) };
}

/// How a follow ended.
enum Followed {
    /// The agent ended (its root process exited).
    Ended(Box<Event>),
    /// Ctrl-C.
    Detached,
}

/// Streams an agent's events until it ends (or Ctrl-C); counts them by kind in `seen`.
fn follow_agent(
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
fn header(a: &axiom_proto::wire::AgentInfo, color: bool) -> String {
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
fn summary(how: &str, seen: &std::collections::BTreeMap<&'static str, u64>) -> String {
    let counts: Vec<String> = seen.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("── {how}; events: {}", counts.join(" "))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("axiomctl: {e:#}");
            if e.downcast_ref::<axiom_proto::wire::ConnectionError>()
                .is_some()
            {
                ExitCode::from(EXIT_UNREACHABLE)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn refused(what: &str, r: axiom_proto::wire::Reply) -> anyhow::Result<ExitCode> {
    eprintln!(
        "axiomctl: {what}: {}",
        r.error.as_deref().unwrap_or("refused")
    );
    Ok(ExitCode::from(refusal_exit(r.code)))
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let p = Printer::new(cli.json);
    match &cli.cmd {
        Cmd::Status => cmd::status::run(cli),
        Cmd::Watch { pid } => cmd::watch::run(cli, p, *pid),
        Cmd::Run {
            name,
            profile,
            workspace,
            watch,
            agent_kind,
            no_hooks,
            wasm,
            wasm_limits,
            command,
        } => cmd::run::run(
            cli,
            p,
            cmd::run::Launch {
                name: name.clone(),
                profile: profile.clone(),
                workspace: workspace.clone(),
                wasm: wasm.clone().map(|m| (m, wasm_limits.clone())),
                kind: agent_kind.clone(),
                hooks: !no_hooks,
            },
            *watch,
            command,
        ),
        Cmd::WasmExec {
            workspace,
            cache,
            limits,
            module,
            args,
        } => wasm::exec(module, workspace, cache.clone(), limits, args),
        Cmd::Doctor => doctor::run(&cli.socket, cli.json),
        Cmd::Mcp {
            bus,
            http,
            token_file,
            rules,
            keep_agents,
        } => mcp::run(mcp::Options {
            bus: bus.clone(),
            socket: cli.socket.clone(),
            http: *http,
            token_file: token_file.clone(),
            rules: rules.clone(),
            keep_agents: *keep_agents,
        }),
        Cmd::Agents => cmd::agents::run(cli),
        Cmd::Rules { cmd } => cmd::rules::run(cli, cmd),
        Cmd::Query {
            agent,
            since,
            until,
            kinds,
            grep,
            limit,
            sql,
            csv,
        } => cmd::query::run(
            cli,
            p,
            cmd::query::Asked {
                agent: *agent,
                since: since.clone(),
                until: until.clone(),
                kinds: kinds.clone(),
                grep: grep.clone(),
                limit: *limit,
                sql: sql.clone(),
                csv: *csv,
            },
        ),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "axiomctl", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stop { agent } => cmd::steer::steer(cli, "stop", Request::Stop { agent: *agent }),
        Cmd::Freeze { agent } => {
            cmd::steer::steer(cli, "freeze", Request::Freeze { agent: *agent })
        }
        Cmd::Thaw { agent } => cmd::steer::steer(cli, "thaw", Request::Thaw { agent: *agent }),
        Cmd::Kill { agent } => cmd::steer::steer(cli, "kill", Request::Kill { agent: *agent }),
        Cmd::Untrack { agent } => {
            cmd::steer::steer(cli, "untrack", Request::Untrack { agent: *agent })
        }
        Cmd::Inject {
            agent,
            text,
            no_enter,
        } => cmd::steer::inject(cli, *agent, &text.join(" "), *no_enter),
        Cmd::Hook => {
            cmd::hook::run(cli);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Events { agent, follow } => cmd::events::run(cli, p, *agent, *follow),
    }
}
