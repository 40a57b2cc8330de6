//! `axiomctl`: the command-line client of axiomd.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod agent_kind;
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

use anyhow::{Context as _, bail};
use axiom_common::{
    confine::{Applied, Confinement},
    wire::{Body, Connection, DEFAULT_SOCKET, ErrorCode, Event, Request},
};
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
fn header(a: &axiom_common::wire::AgentInfo, color: bool) -> String {
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
            if e.downcast_ref::<axiom_common::wire::ConnectionError>()
                .is_some()
            {
                ExitCode::from(EXIT_UNREACHABLE)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// `axiomctl hook`: whatever goes wrong, the agent is not stopped by it (exit 0, nothing said).
fn hook(cli: &Cli) {
    use std::io::Read as _;
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        return;
    }
    let Ok(input) = serde_json::from_str::<serde_json::Value>(&input) else {
        return;
    };
    let Ok(mut conn) = connect(cli) else {
        return;
    };
    match conn.request(&Request::Hook { input }) {
        Ok(r) if r.ok => {
            if let Some(out) = r.hook {
                println!("{out}");
            }
        }
        Ok(r) => eprintln!("axiom: hook: {}", r.error.unwrap_or_default()),
        Err(e) => eprintln!("axiom: hook: {e}"),
    }
}

fn steer(cli: &Cli, what: &str, req: Request) -> anyhow::Result<ExitCode> {
    let r = connect(cli)?.request(&req)?;
    if !r.ok {
        return refused(what, r);
    }
    Ok(ExitCode::SUCCESS)
}

/// The user to run an agent as when axiomctl itself runs as root under sudo.
fn sudo_user() -> Option<(nix::unistd::Uid, nix::unistd::Gid)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    (uid != 0).then(|| {
        (
            nix::unistd::Uid::from_raw(uid),
            nix::unistd::Gid::from_raw(gid),
        )
    })
}

fn refused(what: &str, r: axiom_common::wire::Reply) -> anyhow::Result<ExitCode> {
    eprintln!(
        "axiomctl: {what}: {}",
        r.error.as_deref().unwrap_or("refused")
    );
    Ok(ExitCode::from(refusal_exit(r.code)))
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let p = Printer::new(cli.json);
    match &cli.cmd {
        Cmd::Status => {
            let r = connect(cli)?.request(&Request::Status)?;
            let st = r.status.context("no status in reply")?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!(
                    "axiomd {}  pins {}  ({} programs, {})",
                    st.version,
                    st.pin_dir,
                    st.attached.len(),
                    if st.reused_pins {
                        "reused at start"
                    } else {
                        "loaded at start"
                    }
                );
                println!("start-up to attached: {:.1} ms", st.startup_ms);
                println!(
                    "tracked: {} processes, {} cgroups",
                    st.tracked_processes, st.tracked_cgroups
                );
                let ev: Vec<String> = st.events.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("events: {}", ev.join(" "));
                let lost: Vec<String> = st.lost.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("lost: {}", lost.join(" "));
                if !st.store.is_empty() {
                    let store: Vec<String> =
                        st.store.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("store: {}", store.join(" "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Watch { pid } => {
            let mut conn = connect(cli)?;
            let r = conn.request(&Request::TrackPid { pid: *pid })?;
            if !r.ok {
                return refused(&format!("watch {pid}"), r);
            }
            let agent = r.agent.context("no agent id in reply")?;
            let info = conn
                .request(&Request::Agents)?
                .agents
                .unwrap_or_default()
                .into_iter()
                .find(|a| a.id == agent);
            if !cli.json {
                if let Some(a) = &info {
                    eprintln!("{}", header(a, p.style.color));
                }
                eprintln!("axiomctl: watching pid {pid} as agent {agent} (Ctrl-C to detach)");
            }
            let r = conn.subscribe(false, Some(agent))?;
            if !r.ok {
                return refused("subscribe", r);
            }
            catch_sigint();
            let mut seen = Default::default();
            let how = match follow_agent(&mut conn, &p, *pid, &mut seen)? {
                Followed::Ended(e) => match e.body {
                    Body::AgentExited { code: Some(c), .. } | Body::Exit { code: Some(c), .. } => {
                        format!("agent {agent} ended: exit {c}")
                    }
                    Body::AgentExited {
                        signal: Some(s), ..
                    }
                    | Body::Exit {
                        signal: Some(s), ..
                    } => format!("agent {agent} ended: signal {s}"),
                    _ => format!("agent {agent} ended"),
                },
                Followed::Detached => format!(
                    "detached; agent {agent} is still tracked (`axiomctl untrack {agent}` ends that)"
                ),
            };
            if !cli.json {
                eprintln!("{}", summary(&how, &seen));
            }
            Ok(ExitCode::SUCCESS)
        }
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
        } => {
            let mut launch = Launch {
                name: name.clone(),
                profile: profile.clone(),
                workspace: workspace.clone(),
                wasm: None,
                kind: agent_kind.clone(),
                hooks: !no_hooks,
            };
            match wasm {
                Some(module) => {
                    wasm_limits.limits()?;
                    launch.wasm = Some((module.clone(), wasm_limits.clone()));
                    // What the agent is, for axiomd and `axiomctl agents`: the module and its
                    // arguments.
                    let mut shown = vec![module.display().to_string()];
                    shown.extend(command.iter().cloned());
                    run_agent(cli, p, launch, *watch, &shown)
                }
                None => run_agent(cli, p, launch, *watch, command),
            }
        }
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
        Cmd::Agents => {
            let r = connect(cli)?.request(&Request::Agents)?;
            if !r.ok {
                return refused("agents", r);
            }
            let agents = r.agents.unwrap_or_default();
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
            } else {
                println!(
                    "{:>6}  {:<16} {:>6}  {:<8} {:<8} {:>5}  {:<8} {:<9} COMMAND",
                    "AGENT", "NAME", "UID", "KIND", "STATE", "PROCS", "STARTED", "EXIT"
                );
                for a in agents {
                    let exit = match (a.exit_code, a.exit_signal) {
                        (Some(c), _) => c.to_string(),
                        (_, Some(s)) => format!("signal {s}"),
                        _ if a.state == "exited" => "?".into(),
                        _ => "-".into(),
                    };
                    let cmd = render::argv(&a.command);
                    println!(
                        "{:>6}  {:<16} {:>6}  {:<8} {:<8} {:>5}  {:<8} {:<9} {}",
                        a.id,
                        render::escape(a.name.as_deref().unwrap_or("-")),
                        a.owner_uid,
                        a.kind,
                        a.state,
                        a.pids.len(),
                        render::clock(a.started_ns).get(..8).unwrap_or("-"),
                        exit,
                        if cmd.is_empty() { "-".into() } else { cmd }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Rules { cmd } => rules(cli, cmd),
        Cmd::Query {
            agent,
            since,
            until,
            kinds,
            grep,
            limit,
            sql,
            csv,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos() as u64;
            let ago = |s: &Option<String>| -> anyhow::Result<Option<u64>> {
                Ok(match s {
                    Some(s) => Some(now.saturating_sub(parse_duration(s)?.as_nanos() as u64)),
                    None => None,
                })
            };
            let req = Request::Query {
                agent: *agent,
                since_ns: ago(since)?,
                until_ns: ago(until)?,
                kinds: kinds.clone(),
                text: grep.clone(),
                limit: *limit,
                sql: sql.clone(),
            };
            // A progress line on a terminal while a large answer arrives and is written.
            let bar = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut shown = 0usize;
            let r = connect(cli)?.request_with_progress(&req, |n| {
                if bar && n >= shown + (1 << 20) {
                    shown = n;
                    eprint!("\rreceiving {:.1} MiB", n as f64 / (1 << 20) as f64);
                }
            })?;
            if bar && shown > 0 {
                eprint!("\r\x1b[K");
            }
            if !r.ok {
                return refused("query", r);
            }
            if let (Some(cols), Some(rows)) = (&r.columns, &r.rows) {
                print_rows(cols, rows, cli.json, *csv)?;
            } else {
                let events = r.events.unwrap_or_default();
                let total = events.len();
                for (i, e) in events.iter().enumerate() {
                    p.print(e)?;
                    if bar && total > 50_000 && i % 10_000 == 0 {
                        eprint!("\rwriting {i}/{total} events");
                    }
                }
                if bar && total > 50_000 {
                    eprint!("\r\x1b[K");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
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
        Cmd::Stop { agent } => steer(cli, "stop", Request::Stop { agent: *agent }),
        Cmd::Freeze { agent } => steer(cli, "freeze", Request::Freeze { agent: *agent }),
        Cmd::Thaw { agent } => steer(cli, "thaw", Request::Thaw { agent: *agent }),
        Cmd::Kill { agent } => steer(cli, "kill", Request::Kill { agent: *agent }),
        Cmd::Untrack { agent } => steer(cli, "untrack", Request::Untrack { agent: *agent }),
        Cmd::Inject {
            agent,
            text,
            no_enter,
        } => {
            let req = Request::Inject {
                agent: *agent,
                text: text.join(" "),
                raw: *no_enter,
            };
            let r = connect(cli)?.request(&req)?;
            if !r.ok {
                return refused("inject", r);
            }
            if r.delivered == Some(false) {
                eprintln!("axiomctl: inject: typed, but the agent's screen never showed it");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Hook => {
            hook(cli);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Events { agent, follow } => {
            let mut conn = connect(cli)?;
            let r = conn.subscribe(true, *agent)?;
            if !r.ok {
                return refused("events", r);
            }
            if !follow {
                // Replay only: stop once the stream goes quiet.
                conn.set_timeout(Some(std::time::Duration::from_millis(200)))?;
                while let Some(e) = conn.next_event()? {
                    p.print(&e)?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                if let Some(e) = conn.next_event()? {
                    p.print(&e)?;
                }
            }
        }
    }
}

/// Starts `command` in a pty of its own, held before exec until axiomd has put it in its agent
/// cgroup and tracks it (not a single event escapes), then relays the pty. Exits with the agent's
/// exit code (128+signal when a signal ended it).
/// What `run` says about the agent it starts.
struct Launch {
    name: Option<String>,
    profile: Option<String>,
    workspace: Option<PathBuf>,
    /// `run --wasm`: the module and its limits (the command is then its arguments).
    wasm: Option<(PathBuf, wasm::WasmLimits)>,
    /// `--agent-kind`.
    kind: Option<String>,
    /// Claude Code hooks wanted (not `--no-hooks`).
    hooks: bool,
}

fn run_agent(
    cli: &Cli,
    mut p: Printer,
    launch: Launch,
    watch: bool,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    use std::ffi::CString;
    let workspace = match &launch.workspace {
        Some(w) => {
            std::fs::canonicalize(w).with_context(|| format!("workspace {}", w.display()))?
        }
        None => std::env::current_dir().context("current directory")?,
    };
    if !workspace.is_dir() {
        bail!("workspace {} is not a directory", workspace.display());
    }
    let workspace_c = CString::new(workspace.as_os_str().as_encoded_bytes())
        .context("the workspace path contains a NUL byte")?;
    let drop_to = sudo_user();
    let profiles = agent_kind::profiles();
    let kind = agent_kind::kind(&profiles, command, launch.kind.as_deref());
    let mut hooks = false;
    // A WASI tool: the agent process execs this binary's `wasm-exec` with the module.
    let exec = match &launch.wasm {
        Some((module, limits)) => wasm::exec_argv(
            module,
            &workspace,
            wasm::cache_for(drop_to.map(|(u, _)| u)).as_deref(),
            limits,
            &command[1..],
        )?,
        None => {
            let wants_hooks = launch.hooks && profiles.of(Some(&kind)).hooks;
            let hook = match std::env::current_exe() {
                Ok(exe) if wants_hooks => Some(agent_kind::hook_command(&exe, &cli.socket)),
                _ => None,
            };
            let a = agent_kind::adapt(command, &kind, hook.as_deref());
            if !cli.json {
                for note in &a.notes {
                    eprintln!("axiom: {note}");
                }
            }
            hooks = a.hooks;
            a.argv
        }
    };
    let argv: Vec<CString> = exec
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("an argument contains a NUL byte")?;
    let mut conn = connect(cli)?;
    let tty = pty::open().context("opening a pseudo-terminal")?;
    // gate: the parent releases the child once it is tracked. err: the child reports an exec
    // failure (errno); it closes on a successful exec (CLOEXEC).
    let (gate_r, gate_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: axiomctl is single-threaded here; the child only makes async-signal-safe calls.
    let pid = match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(gate_w);
            drop(err_r);
            // Drop to the invoking user before anything else: the agent never holds root, and
            // axiomd records that user as its owner.
            if let Some((uid, gid)) = drop_to
                && (nix::unistd::setgroups(&[]).is_err()
                    || nix::unistd::setgid(gid).is_err()
                    || nix::unistd::setuid(uid).is_err())
            {
                unsafe { libc::_exit(126) };
            }
            if pty::attach_child(&tty.slave).is_err()
                || nix::unistd::chdir(workspace_c.as_c_str()).is_err()
            {
                unsafe { libc::_exit(126) };
            }
            drop(tty);
            // Descriptors the launcher inherited (another terminal, a file opened for writing
            // outside the workspace, a socket) do not reach the agent: closed at exec.
            // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only marks descriptors.
            unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) };
            // The gate carries the resolved confinement (JSON; empty: none) and closes.
            let mut policy = Vec::new();
            {
                use std::io::Read as _;
                if std::fs::File::from(gate_r)
                    .read_to_end(&mut policy)
                    .is_err()
                {
                    unsafe { libc::_exit(126) };
                }
            }
            if policy.is_empty() {
                unsafe { libc::_exit(126) }; // the parent gave up
            }
            if let Ok(Some(c)) = serde_json::from_slice::<Option<Confinement>>(&policy) {
                match confine::apply(&c) {
                    Ok(applied) => frame(
                        &err_w,
                        b'A',
                        &serde_json::to_vec(&applied).unwrap_or_default(),
                    ),
                    Err(reason) => {
                        frame(&err_w, b'R', reason.as_bytes());
                        unsafe { libc::_exit(126) };
                    }
                }
            }
            let e = nix::unistd::execvp(&argv[0], &argv).unwrap_err();
            frame(&err_w, b'E', &(e as i32).to_ne_bytes());
            unsafe { libc::_exit(127) };
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(gate_r);
    drop(err_w);
    // Only the child holds the slave now: the master reads EIO once the agent's side is gone.
    drop(tty.slave);
    let master = tty.master;
    use std::os::fd::AsFd as _;
    let kill = |pid| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    };
    let raw = pid.as_raw() as u32;
    let req = Request::RunAgent {
        pid: raw,
        name: launch.name,
        command: command.to_vec(),
        workspace: Some(workspace.display().to_string()),
        profile: launch.profile,
        pty: true,
        kind: Some(kind),
        hooks,
    };
    // axiomd keeps a copy of the terminal to type interventions into, even after we go.
    let r = conn.request_with_fd(&req, master.as_fd())?;
    if !r.ok {
        kill(pid);
        return refused("run", r);
    }
    let agent = r.agent.context("no agent id in reply")?;
    if watch {
        let r = conn.subscribe(false, Some(agent))?;
        if !r.ok {
            kill(pid);
            return refused("subscribe", r);
        }
    }
    // Release the child with what it must apply before exec.
    nix::unistd::write(&gate_w, &serde_json::to_vec(&r.confinement)?)?;
    drop(gate_w);
    let mut report = Vec::new();
    {
        use std::io::Read as _;
        std::fs::File::from(err_r).read_to_end(&mut report)?;
    }
    let mut applied = None;
    for (tag, body) in frames(&report) {
        match tag {
            b'A' => applied = serde_json::from_slice::<Applied>(body).ok(),
            b'R' => {
                let _ = nix::sys::wait::waitpid(pid, None);
                eprintln!(
                    "axiomctl: refusing to run {}: {}",
                    command[0],
                    String::from_utf8_lossy(body)
                );
                return Ok(ExitCode::from(126));
            }
            b'E' if body.len() == 4 => {
                let _ = nix::sys::wait::waitpid(pid, None);
                let e = nix::errno::Errno::from_raw(i32::from_ne_bytes(
                    body.try_into().unwrap_or_default(),
                ));
                eprintln!("axiomctl: cannot run {}: {}", command[0], e.desc());
                return Ok(ExitCode::from(if e == nix::errno::Errno::ENOENT {
                    127
                } else {
                    126
                }));
            }
            _ => {}
        }
    }
    let how = r.confinement.as_ref().map(|c| {
        let how = match (&c.fs, &applied) {
            (None, _) => "no filesystem rules".to_string(),
            (Some(_), Some(a)) => format!("Landlock ABI {}", a.landlock_abi),
            (Some(_), None) => "not applied".to_string(),
        };
        (c.profile.clone(), how)
    });
    let not_enforced: Vec<&String> = applied.iter().flat_map(|a| a.not_enforced.iter()).collect();
    let notes: Vec<&String> = r.notes.iter().flatten().collect();
    if p.json {
        // One line a program can read (`axiomctl mcp` does): the agent is tracked and released.
        let started = serde_json::json!({"started": {
            "agent": agent,
            "pid": raw,
            "profile": how.as_ref().map(|h| &h.0),
            "confinement": how.as_ref().map(|h| &h.1),
            "not_enforced": not_enforced,
            "notes": notes,
        }});
        eprintln!("{started}");
    } else {
        if let Some((profile, how)) = &how {
            eprintln!("axiomctl: profile {profile} ({how})");
        }
        for n in not_enforced {
            eprintln!("axiomctl: not enforced: {n}");
        }
        for n in notes {
            eprintln!("axiomctl: {n}");
        }
        eprintln!("axiomctl: agent {agent} started: pid {raw}");
    }
    let raw_mode = pty::RawMode::enter();
    p.crlf = std::io::stdin().is_terminal();
    let output = pty::relay_output(master.try_clone()?);
    pty::relay_input(master.try_clone()?);
    pty::relay_winsize(master.try_clone()?);
    // The connection stays open until we exit: while it is, axiomd knows we relay the terminal
    // (when it closes, axiomd drains the agent's output itself).
    let mut _held = None;
    let events = if watch {
        Some(std::thread::spawn(move || {
            let _ = follow_agent(&mut conn, &p, raw, &mut Default::default());
        }))
    } else {
        _held = Some(conn);
        None
    };
    let status = nix::sys::wait::waitpid(pid, None)?;
    // Background processes of the agent may keep the pty open: give the relay a moment only.
    finish(output, Duration::from_millis(500));
    if let Some(t) = events {
        finish(t, Duration::from_secs(2));
    }
    drop(raw_mode);
    match status {
        nix::sys::wait::WaitStatus::Exited(_, code) => Ok(ExitCode::from(code as u8)),
        nix::sys::wait::WaitStatus::Signaled(_, sig, _) => Ok(ExitCode::from(128 + sig as u8)),
        other => bail!("agent ended with {other:?}"),
    }
}

/// One message from the child to the parent on the report pipe: a tag, a length, the bytes.
fn frame(fd: &std::os::fd::OwnedFd, tag: u8, body: &[u8]) {
    let mut b = Vec::with_capacity(5 + body.len());
    b.push(tag);
    b.extend_from_slice(&(body.len() as u32).to_ne_bytes());
    b.extend_from_slice(body);
    let _ = nix::unistd::write(fd, &b);
}

fn frames(mut b: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let len = u32::from_ne_bytes([b[1], b[2], b[3], b[4]]) as usize;
        let Some(body) = b.get(5..5 + len) else { break };
        out.push((b[0], body));
        b = &b[5 + len..];
    }
    out
}

/// Waits for a thread at most `limit`.
fn finish(t: std::thread::JoinHandle<()>, limit: Duration) {
    let t0 = std::time::Instant::now();
    while !t.is_finished() && t0.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rules(cli: &Cli, cmd: &RulesCmd) -> anyhow::Result<ExitCode> {
    use axiom_common::rules::{self as r, RuleSet};
    match cmd {
        RulesCmd::List | RulesCmd::Reload => {
            let req = if matches!(cmd, RulesCmd::List) {
                Request::Rules
            } else {
                Request::ReloadRules
            };
            let rep = connect(cli)?.request(&req)?;
            if !rep.ok {
                return refused("rules", rep);
            }
            let rules = rep.rules.unwrap_or_default();
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&rules)?);
            } else {
                println!(
                    "{:<22} {:<16} {:<10} {:<9} {:>4} {:<7} DEFINED AT",
                    "RULE", "KIND", "SCOPE", "SEVERITY", "PRIO", "ACTION"
                );
                for x in rules {
                    println!(
                        "{:<22} {:<16} {:<10} {:<9} {:>4} {:<7} {}",
                        x.id,
                        x.kind,
                        x.scope.as_deref().unwrap_or("-").to_lowercase(),
                        x.severity,
                        x.priority,
                        x.action,
                        x.origin
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCmd::Check { files } => match RuleSet::load(files) {
            Ok(set) => {
                println!("ok: {} rules", set.rules.len());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(EXIT_BAD_RULES))
            }
        },
        RulesCmd::Test {
            rules,
            sample,
            scope,
        } => {
            let set = match RuleSet::load(std::slice::from_ref(rules)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(EXIT_BAD_RULES));
                }
            };
            let scope = r::Scope::parse(scope).map_err(anyhow::Error::msg)?;
            let raw = std::fs::read_to_string(sample)
                .with_context(|| format!("reading {}", sample.display()))?;
            let (text, hits) = r::scan_sample(&set, scope, &raw);
            for h in &hits {
                let rule = &set.rules[h.rule];
                println!(
                    "{}\t{:?}\t{}\t{}",
                    rule.id,
                    rule.severity,
                    rule.action.name(),
                    r::excerpt(&text, h, rule.redact)
                );
            }
            // Like grep: 0 when something matched, 1 when nothing did.
            Ok(if hits.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// `90s`, `10m`, `2h`, `1d` (a bare number is seconds).
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration (like 90s, 10m, 2h, 1d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        u => bail!("unknown unit {u:?} in {s:?} (s, m, h, d)"),
    };
    Ok(Duration::from_secs(secs))
}

/// SQL results: a table, CSV, or one JSON object per row.
fn print_rows(
    cols: &[String],
    rows: &[Vec<serde_json::Value>],
    json: bool,
    csv: bool,
) -> anyhow::Result<()> {
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    if json {
        for r in rows {
            let obj: serde_json::Map<String, serde_json::Value> =
                cols.iter().cloned().zip(r.iter().cloned()).collect();
            println!("{}", serde_json::Value::Object(obj));
        }
    } else if csv {
        let q = |s: String| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s
            }
        };
        println!(
            "{}",
            cols.iter().cloned().map(q).collect::<Vec<_>>().join(",")
        );
        for r in rows {
            println!(
                "{}",
                r.iter().map(|v| q(cell(v))).collect::<Vec<_>>().join(",")
            );
        }
    } else {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|v| render::escape(&cell(v))).collect())
            .collect();
        let widths: Vec<usize> = (0..cols.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .chain([cols[i].len()])
                    .max()
                    .unwrap_or(0)
                    .min(60)
            })
            .collect();
        let line = |v: Vec<String>| {
            v.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{:<w$}", c.chars().take(*w).collect::<String>(), w = *w))
                .collect::<Vec<_>>()
                .join("  ")
        };
        println!("{}", line(cols.to_vec()));
        for r in cells {
            println!("{}", line(r));
        }
    }
    Ok(())
}
