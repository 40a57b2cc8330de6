//! `axiomctl`: the command-line client of axiomd.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod agent_kind;
mod claude_config;
mod client;
mod cmd;
mod confine;
mod doctor;
mod gemini_config;
mod loopback;
mod mcp;
mod opencode_plugin;
mod pty;
mod render;
#[cfg(test)]
mod test_events;
mod wasm;

use std::process::ExitCode;

use axiom_proto::wire::Request;
use clap::{Parser, Subcommand};
use client::{EXIT_UNREACHABLE, Global, Printer};

#[derive(Parser)]
#[command(version, about = "Watch and steer AI coding agents through axiomd")]
struct Cli {
    #[command(flatten)]
    global: Global,
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
    Run(cmd::run::Launch),
    /// Runs a WASI module in this process (what `run --wasm` execs inside the agent's cgroup).
    #[command(hide = true)]
    WasmExec(wasm::ExecArgs),
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
    Inject(cmd::steer::InjectArgs),
    /// Answers a Claude Code hook for axiomd (what `run` installs for a Claude Code agent):
    /// reads the hook's input on stdin, prints axiomd's answer. Says nothing when axiomd is
    /// unreachable (the agent goes on; the terminal channel remains).
    #[command(hide = true)]
    Hook,
    /// Stored events: the latest N of an agent, a time range, kinds, text — or read-only SQL.
    Query(cmd::query::Asked),
    /// A live view of your agents, the busiest first: keys to watch, freeze, thaw, stop.
    Top,
    /// The session page on loopback: your agents' sessions, each a timeline of its tool calls,
    /// commands, files, connections, violations and interventions, and its terminal replayed.
    /// Prints the page's address (with its access token) and serves until stopped.
    Ui(cmd::ui::Args),
    /// An agent's session in another format: `--asciicast`, its terminal as asciinema plays
    /// it.
    Export(cmd::export::Asked),
    /// Rules: list the active ones, reload them, or check and try a rule file offline.
    Rules {
        #[command(subcommand)]
        cmd: cmd::rules::RulesCmd,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Manpage,
    /// Serve the Model Context Protocol (stdio; or streamable HTTP on loopback): tools for a
    /// model to spawn agents, observe them, check their status, intervene, read the principles
    /// and verify claims against what the kernel saw. Talks to axiomd as you: over D-Bus, or
    /// over its control socket where no system bus runs.
    Mcp(mcp::Args),
    /// Show events (all visible to you, or one agent's).
    Events {
        #[arg(long)]
        agent: Option<u64>,
        /// Keep streaming new events.
        #[arg(long, short)]
        follow: bool,
    },
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

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    let p = Printer::new(g.json);
    match &cli.cmd {
        Cmd::Status => cmd::status::run(g),
        Cmd::Watch { pid } => cmd::watch::run(g, p, *pid),
        Cmd::Run(launch) => cmd::run::run(g, p, launch),
        Cmd::WasmExec(a) => wasm::exec(a),
        Cmd::Doctor => doctor::run(&g.socket, g.json),
        Cmd::Mcp(a) => mcp::run(a, &g.socket),
        Cmd::Agents => cmd::agents::run(g),
        Cmd::Rules { cmd } => cmd::rules::run(g, cmd),
        Cmd::Query(q) => cmd::query::run(g, p, q),
        Cmd::Export(q) => cmd::export::run(g, q),
        Cmd::Top => cmd::top::run(g),
        Cmd::Ui(a) => cmd::ui::run(g, a),
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
        Cmd::Stop { agent } => cmd::steer::steer(g, "stop", Request::Stop { agent: *agent }),
        Cmd::Freeze { agent } => cmd::steer::steer(g, "freeze", Request::Freeze { agent: *agent }),
        Cmd::Thaw { agent } => cmd::steer::steer(g, "thaw", Request::Thaw { agent: *agent }),
        Cmd::Kill { agent } => cmd::steer::steer(g, "kill", Request::Kill { agent: *agent }),
        Cmd::Untrack { agent } => {
            cmd::steer::steer(g, "untrack", Request::Untrack { agent: *agent })
        }
        Cmd::Inject(a) => cmd::steer::inject(g, a),
        Cmd::Hook => {
            cmd::hook::run(g);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Events { agent, follow } => cmd::events::run(g, p, *agent, *follow),
    }
}
