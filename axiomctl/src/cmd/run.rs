//! `axiomctl run`: start a command as an agent, in a pty of its own, confined by its profile,
//! tracked from before its first instruction; relay its terminal; exit as it exits.
use std::{ffi::CString, io::IsTerminal as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use axiom_proto::{
    confine::{Applied, Confinement},
    wire::{Reply, Request},
};

use crate::{
    agent_kind, claude_config,
    client::{Global, Printer, connect, follow_agent, refused},
    confine, gemini_config, opencode_plugin, pty, wasm,
};

/// `axiomctl run`: the command (or, with `--wasm`, the module and its arguments) as an agent.
pub fn run(g: &Global, p: Printer, launch: &Launch) -> anyhow::Result<ExitCode> {
    match &launch.wasm {
        Some(module) => {
            launch.wasm_limits.limits()?;
            // What the agent is, for axiomd and `axiomctl agents`: the module and its
            // arguments.
            let mut shown = vec![module.display().to_string()];
            shown.extend(launch.command.iter().cloned());
            run_agent(g, p, launch, &shown)
        }
        None => run_agent(g, p, launch, &launch.command),
    }
}

/// Starts `command` in a pty of its own, held before exec until axiomd has put it in its agent
/// cgroup and tracks it (not a single event escapes), then relays the pty. Exits with the agent's
/// exit code (128+signal when a signal ended it).
/// What `axiomctl run` was asked: the agent it starts and how.
#[derive(clap::Args, Debug)]
pub struct Launch {
    /// A name to show in `axiomctl agents`.
    #[arg(long)]
    pub name: Option<String>,
    /// The confinement profile: read-only, workspace-write (the default), full, or one
    /// configured in axiomd.toml. Applied before the agent starts.
    #[arg(long)]
    pub profile: Option<String>,
    /// The directory the agent works in (default: the current directory).
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// Also print what the agent does (events), interleaved with its terminal output.
    #[arg(long)]
    pub watch: bool,
    /// The agent's kind (a profile of agents.toml: claude, codex, gemini, aider, opencode,
    /// generic): how interventions are typed into it. Default: from the program's name.
    #[arg(long, value_name = "KIND")]
    pub agent_kind: Option<String>,
    /// Do not install Axiom's hooks for the run (a Claude Code, Codex, Gemini CLI or opencode
    /// agent otherwise gets them: axiomd then refuses a dangerous command before it runs, a write a rule that acts
    /// on the agent would catch (a TODO left) before the file holds it, and a stop while a
    /// claim is false).
    #[arg(long)]
    pub no_hooks: bool,
    /// Run this WebAssembly (WASI) program as the agent, with only the workspace preopened
    /// and no network; the words after `--` are its arguments.
    #[arg(long, value_name = "MODULE")]
    pub wasm: Option<PathBuf>,
    /// Start nothing: show what the agent would get (its kind, the profile's writable,
    /// protected and hidden paths, the state its kind keeps writable, network, limits, the
    /// command as it would run).
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub wasm_limits: wasm::WasmLimits,
    #[arg(
        required_unless_present = "wasm",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// What a launch resolves to before anything starts.
struct Prepared {
    workspace: PathBuf,
    workspace_c: CString,
    /// The invoking user, when axiomctl runs as root under sudo: the agent runs as them.
    drop_to: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    kind: String,
    /// Axiom's hooks installed for the run.
    hooks: bool,
    /// Gemini CLI's settings for the run (its hooks).
    gemini: Option<gemini_config::RunSettings>,
    /// opencode's hooks for the run: the command its plugin calls.
    opencode: Option<String>,
    argv: Vec<CString>,
    /// What the agent must still reach in a private /tmp: axiomd's socket (its hooks call it)
    /// and its workspace.
    keep: Vec<PathBuf>,
}

fn prepare(g: &Global, launch: &Launch, command: &[String]) -> anyhow::Result<Prepared> {
    let workspace = match &launch.workspace {
        Some(w) => {
            std::fs::canonicalize(w).with_context(|| format!("workspace {}", w.display()))?
        }
        None => std::env::current_dir().context("current directory")?,
    };
    if !workspace.is_dir() {
        bail!("workspace {} is not a directory", workspace.display());
    }
    // Started from the home directory or /, the workspace (all the agent may write) would be
    // the whole home or every writable file: only when asked for by name.
    let drop_to = sudo_user();
    if launch.workspace.is_none()
        && launch.profile.as_deref() != Some("full")
        && too_wide(&workspace, drop_to.map(|(u, _)| u))
    {
        bail!(
            "the workspace would be {} (the current directory): the agent could write anywhere \
             in it. Start it from a project directory, or name it: --workspace {}",
            workspace.display(),
            workspace.display()
        );
    }
    let workspace_c = CString::new(workspace.as_os_str().as_encoded_bytes())
        .context("the workspace path contains a NUL byte")?;
    let profiles = agent_kind::profiles();
    let kind = profiles.kind(command, launch.agent_kind.as_deref());
    let mut hooks = false;
    let mut gemini = None;
    let mut opencode = None;
    // A WASI tool: the agent process execs this binary's `wasm-exec` with the module.
    let exec = match &launch.wasm {
        Some(module) => wasm::exec_argv(
            module,
            &workspace,
            wasm::cache_for(drop_to.map(|(u, _)| u)).as_deref(),
            &launch.wasm_limits,
            &command[1..],
        )?,
        None => {
            let wants_hooks = !launch.no_hooks && profiles.of(Some(&kind)).hooks;
            let hook = match std::env::current_exe() {
                Ok(exe) if wants_hooks => Some(agent_kind::hook_command(&exe, &g.socket)),
                _ => None,
            };
            let a = agent_kind::adapt(command, &kind, hook.as_deref());
            if !g.json {
                for note in &a.notes {
                    eprintln!("axiom: {note}");
                }
            }
            hooks = a.hooks;
            if let (Some(hook), "opencode") = (&hook, kind.as_str()) {
                opencode = Some(hook.clone());
                hooks = true;
                if !g.json {
                    eprintln!(
                        "axiom: opencode runs with Axiom's plugin for this run ({}): a \
                         dangerous command or a write leaving a TODO is refused before it \
                         happens",
                        opencode_plugin::ENV
                    );
                }
            }
            if let (Some(hook), "gemini") = (&hook, kind.as_str()) {
                let home = agent_home(drop_to).unwrap_or_default();
                let settings = (launch.profile.as_deref() != Some("full"))
                    .then(|| gemini_config::RunSettings::new(&home, hook));
                match settings {
                    None => eprintln!(
                        "axiom: gemini runs without Axiom's hooks under full: it takes them only \
                         from its settings files, shown to it changed only in a confined run"
                    ),
                    Some(Ok(s)) => {
                        gemini = Some(s);
                        hooks = true;
                        if !g.json {
                            eprintln!(
                                "axiom: gemini runs with Axiom's hooks for this run (its \
                                 ~/.gemini/settings.json shown to it with them, the file \
                                 unchanged): a dangerous command or a write leaving a TODO is \
                                 refused before it happens, a false claim before it stops"
                            );
                        }
                    }
                    Some(Err(e)) => eprintln!("axiom: gemini runs without Axiom's hooks: {e}"),
                }
            }
            a.argv
        }
    };
    let argv: Vec<CString> = exec
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("an argument contains a NUL byte")?;
    let keep = vec![g.socket.clone(), workspace.clone()];
    Ok(Prepared {
        workspace,
        workspace_c,
        drop_to,
        kind,
        hooks,
        gemini,
        opencode,
        argv,
        keep,
    })
}

/// The agent's side of the fork: become the invoking user, take the pty, wait at the gate for
/// the confinement axiomd resolved, apply it, exec. Reports on `err` (framed); never returns.
fn in_child(
    prep: &Prepared,
    tty: nix::pty::OpenptyResult,
    gate: std::os::fd::OwnedFd,
    err: &std::os::fd::OwnedFd,
) -> ! {
    // Drop to the invoking user before anything else: the agent never holds root, and
    // axiomd records that user as its owner.
    if let Some((uid, gid)) = prep.drop_to
        && (nix::unistd::setgroups(&[]).is_err()
            || nix::unistd::setgid(gid).is_err()
            || nix::unistd::setuid(uid).is_err())
    {
        unsafe { libc::_exit(126) };
    }
    if pty::attach_child(&tty.slave).is_err()
        || nix::unistd::chdir(prep.workspace_c.as_c_str()).is_err()
    {
        unsafe { libc::_exit(126) };
    }
    drop(tty);
    // Descriptors the launcher inherited (another terminal, a file opened for writing
    // outside the workspace, a socket) do not reach the agent: closed at exec.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only marks descriptors.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) };
    // The gate carries the resolved confinement (JSON; empty: the parent gave up) and closes.
    let mut policy = Vec::new();
    {
        use std::io::Read as _;
        if std::fs::File::from(gate).read_to_end(&mut policy).is_err() {
            unsafe { libc::_exit(126) };
        }
    }
    if policy.is_empty() {
        unsafe { libc::_exit(126) }; // the parent gave up
    }
    // A confinement this launcher cannot read (an axiomd of another version) is a refusal,
    // never a run without one.
    match serde_json::from_slice::<Confinement>(&policy) {
        Ok(c) => match confine_child(prep, &c) {
            Ok(applied) => frame(err, b'A', &serde_json::to_vec(&applied).unwrap_or_default()),
            Err(reason) => {
                frame(err, b'R', reason.as_bytes());
                unsafe { libc::_exit(126) };
            }
        },
        Err(e) => {
            let reason = format!(
                "the confinement axiomd sent cannot be read by this axiomctl ({e}); \
                 is axiomctl the same version as axiomd?"
            );
            frame(err, b'R', reason.as_bytes());
            unsafe { libc::_exit(126) };
        }
    }
    let argv = &prep.argv;
    let e = nix::unistd::execvp(&argv[0], argv).unwrap_err();
    frame(err, b'E', &(e as i32).to_ne_bytes());
    unsafe { libc::_exit(127) };
}

/// In the child, as the agent's user: Claude Code's configuration where a confined agent can
/// write it (`claude_config`), then the confinement.
fn confine_child(prep: &Prepared, c: &Confinement) -> Result<Applied, String> {
    if let Some(v) = claude_view(prep, c) {
        v.seed();
        // SAFETY: this child is single-threaded (just forked); the agent inherits it.
        unsafe { std::env::set_var(claude_config::ENV, &v.dir) };
    }
    let home = agent_home(prep.drop_to);
    if let (Some(home), Some(_)) = (&home, &c.fs) {
        agent_kind::seed_state(&prep.kind, home);
    }
    // What the run writes for the agent's hooks: opencode's plugin; Gemini CLI's settings with
    // Axiom's hooks, shown in place of the user's in the agent's mount namespace (only a
    // profile that confines the filesystem has one).
    let gemini = prep.gemini.as_ref().filter(|_| c.fs.is_some());
    let mut over = Vec::new();
    if let Some(home) = home.filter(|_| gemini.is_some() || prep.opencode.is_some()) {
        let pid = std::process::id();
        let written = agent_kind::make_run_dir(&home, pid).and_then(|dir| {
            if let Some(hook) = &prep.opencode {
                opencode_plugin::install(&dir, hook)?;
            }
            if let Some(s) = gemini {
                over.push(s.install(&dir)?);
            }
            Ok(())
        });
        if let Err(e) = written {
            return Err(format!(
                "the agent's hooks for the run could not be written in {}: {e}",
                agent_kind::run_dir(&home, pid).display()
            ));
        }
    }
    confine::apply(c, &prep.keep, &over)
}

/// What the child reported until its exec: the confinement it applied, or (as the exit code
/// to leave with) why it never ran.
fn child_report(
    err: std::os::fd::OwnedFd,
    pid: nix::unistd::Pid,
    program: &str,
) -> anyhow::Result<Result<Option<Applied>, ExitCode>> {
    let mut report = Vec::new();
    {
        use std::io::Read as _;
        std::fs::File::from(err).read_to_end(&mut report)?;
    }
    let mut applied = None;
    for (tag, body) in frames(&report) {
        match tag {
            b'A' => applied = serde_json::from_slice::<Applied>(body).ok(),
            b'R' => {
                let _ = nix::sys::wait::waitpid(pid, None);
                eprintln!(
                    "axiomctl: refusing to run {program}: {}",
                    String::from_utf8_lossy(body)
                );
                return Ok(Err(ExitCode::from(126)));
            }
            b'E' if body.len() == 4 => {
                let _ = nix::sys::wait::waitpid(pid, None);
                let e = nix::errno::Errno::from_raw(i32::from_ne_bytes(
                    body.try_into().unwrap_or_default(),
                ));
                eprintln!("axiomctl: cannot run {program}: {}", e.desc());
                return Ok(Err(ExitCode::from(if e == nix::errno::Errno::ENOENT {
                    127
                } else {
                    126
                })));
            }
            _ => {}
        }
    }
    Ok(Ok(applied))
}

/// Says the agent started, how it is confined and what is not enforced (one JSON line with
/// `--json`, which `axiomctl mcp` reads).
fn announce(json: bool, agent: u64, pid: u32, r: &Reply, applied: Option<&Applied>) {
    let how = r.confinement.as_ref().map(|c| {
        let how = match (&c.fs, applied) {
            (None, _) => "no filesystem rules".to_string(),
            (Some(_), Some(a)) => format!("Landlock ABI {}", a.landlock_abi),
            (Some(_), None) => "not applied".to_string(),
        };
        (c.profile.clone(), how)
    });
    let not_enforced: Vec<&String> = applied.iter().flat_map(|a| a.not_enforced.iter()).collect();
    let notes: Vec<&String> = r.notes.iter().flatten().collect();
    if json {
        let started = serde_json::json!({"started": {
            "agent": agent,
            "pid": pid,
            "profile": how.as_ref().map(|h| &h.0),
            "confinement": how.as_ref().map(|h| &h.1),
            "not_enforced": not_enforced,
            "notes": notes,
        }});
        eprintln!("{started}");
        return;
    }
    if let Some((profile, how)) = &how {
        eprintln!("axiomctl: profile {profile} ({how})");
    }
    for n in not_enforced {
        eprintln!("axiomctl: not enforced: {n}");
    }
    for n in notes {
        eprintln!("axiomctl: {n}");
    }
    eprintln!("axiomctl: agent {agent} started: pid {pid}");
}

fn run_agent(
    g: &Global,
    mut p: Printer,
    launch: &Launch,
    command: &[String],
) -> anyhow::Result<ExitCode> {
    use std::os::fd::AsFd as _;
    let watch = launch.watch;
    let prep = prepare(g, launch, command)?;
    if launch.dry_run {
        return dry_run(g, &p, launch, command, &prep);
    }
    let mut conn = connect(g)?;
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
            in_child(&prep, tty, gate_r, &err_w)
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(gate_r);
    drop(err_w);
    // Only the child holds the slave now: the master reads EIO once the agent's side is gone.
    drop(tty.slave);
    let master = tty.master;
    let kill = |pid| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    };
    let raw = pid.as_raw() as u32;
    let req = Request::RunAgent {
        pid: raw,
        name: launch.name.clone(),
        command: command.to_vec(),
        workspace: Some(prep.workspace.display().to_string()),
        profile: launch.profile.clone(),
        pty: true,
        kind: Some(prep.kind.clone()),
        hooks: prep.hooks,
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
    // Release the child with what it must apply before exec. axiomd sends a confinement for
    // every profile (`full` too); none is an axiomd this launcher does not understand, and the
    // agent does not run rather than run unconfined.
    let Some(confinement) = r.confinement.as_ref() else {
        kill(pid);
        anyhow::bail!(
            "axiomd sent no confinement for agent {agent}; is axiomctl the same version as axiomd?"
        );
    };
    // Gemini CLI's settings file, when absent, is made (as `{}`) to show Axiom's hooks in
    // place of; removed after the run if still so. Before `absent`: it is not the agent's.
    let gemini_made = prep.gemini.as_ref().filter(|s| !s.target.exists());
    if let Some(s) = gemini_made {
        as_agent_user(prep.drop_to, || {
            s.make_target();
        });
    }
    // What of the protected paths was absent before: undone after the agent's end.
    let absent = confinement.fs.as_ref().map(confine::absent);
    // Claude Code's global configuration, kept where a confined agent can write it.
    let claude = claude_view(&prep, confinement);
    nix::unistd::write(&gate_w, &serde_json::to_vec(confinement)?)?;
    drop(gate_w);
    let applied = match child_report(err_r, pid, &command[0])? {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    announce(p.json, agent, raw, &r, applied.as_ref());
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
    let run_dir = (prep.gemini.is_some() || prep.opencode.is_some())
        .then(|| agent_home(prep.drop_to))
        .flatten()
        .map(|h| agent_kind::run_dir(&h, raw));
    after_agent(absent.as_ref(), claude.as_ref(), prep.drop_to, || {
        if let Some(d) = &run_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        if let Some(s) = gemini_made {
            s.remove_target();
        }
    });
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

/// Runs `f` as the user the agent ran as: here, or (a root launcher under sudo) in a child
/// that drops privileges first: the agent's files are not root's to walk or write.
fn as_agent_user(drop_to: Option<(nix::unistd::Uid, nix::unistd::Gid)>, f: impl FnOnce()) {
    let Some((uid, gid)) = drop_to else {
        f();
        return;
    };
    // SAFETY: the child only drops privileges, runs `f` (file operations, writes to fd 2) and
    // exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            if nix::unistd::setgroups(&[]).is_ok()
                && nix::unistd::setgid(gid).is_ok()
                && nix::unistd::setuid(uid).is_ok()
            {
                f();
            }
            unsafe { libc::_exit(0) };
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(e) => eprintln!("axiom: nothing done after the agent as its user: {e}"),
    }
}

/// The home of the user the agent runs as (`drop_to`, else this process's), from the user
/// database: what axiomd expands `~` to.
fn agent_home(drop_to: Option<(nix::unistd::Uid, nix::unistd::Gid)>) -> Option<PathBuf> {
    let uid = drop_to.map_or_else(nix::unistd::getuid, |(u, _)| u);
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.dir)
}

/// Claude Code's configuration for this run (`claude_config::view`), in the home of the user
/// the agent runs as: the same whether asked in the launcher or in the agent's child (which
/// has already become that user).
fn claude_view(prep: &Prepared, c: &Confinement) -> Option<claude_config::View> {
    claude_config::view(&prep.kind, c.fs.as_ref(), &agent_home(prep.drop_to)?)
}

/// After the agent's end, as its user: what it planted where protected paths were absent is
/// undone (`confine::restore`), and Claude Code's configuration goes back to the home.
fn after_agent(
    absent: Option<&confine::Absent>,
    claude: Option<&claude_config::View>,
    drop_to: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    also: impl FnOnce(),
) {
    as_agent_user(drop_to, || {
        also();
        if let Some(v) = claude {
            v.keep_back();
        }
        for note in absent.map(confine::restore).unwrap_or_default() {
            // Not eprintln: another thread may have held stderr's lock at a fork.
            let _ = nix::unistd::write(std::io::stderr(), format!("axiom: {note}\n").as_bytes());
        }
    });
}

/// Whether `dir` is `/` or the home of the user the agent runs as (`uid`, else us).
fn too_wide(dir: &std::path::Path, uid: Option<nix::unistd::Uid>) -> bool {
    if dir == std::path::Path::new("/") {
        return true;
    }
    let uid = uid.unwrap_or_else(nix::unistd::getuid);
    let home = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.dir);
    home.and_then(|h| std::fs::canonicalize(h).ok())
        .is_some_and(|h| h == dir)
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

/// `--dry-run`: what axiomd would give this agent, and the command as it would run.
fn dry_run(
    g: &Global,
    p: &Printer,
    launch: &Launch,
    command: &[String],
    prep: &Prepared,
) -> anyhow::Result<ExitCode> {
    let r = connect(g)?.request(&Request::Resolve {
        command: command.to_vec(),
        workspace: prep.workspace.display().to_string(),
        profile: launch.profile.clone(),
        kind: Some(prep.kind.clone()),
    })?;
    let Some(c) = r.confinement.as_ref().filter(|_| r.ok) else {
        return refused("dry run", r);
    };
    let home = agent_home(prep.drop_to);
    let claude = claude_view(prep, c);
    let argv: Vec<String> = prep
        .argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut env: Vec<String> = claude
        .iter()
        .map(|v| format!("{}={}", claude_config::ENV, v.dir.display()))
        .collect();
    if let (Some(s), Some(_)) = (&prep.gemini, &c.fs) {
        env.push(format!(
            "(shown in place of {}: a copy with Axiom's hooks)",
            s.target.display()
        ));
    }
    if p.json {
        println!(
            "{}",
            serde_json::json!({"kind": prep.kind, "hooks": prep.hooks, "confinement": c,
                "command": argv, "environment": env, "landlock_abi": confine::kernel_abi()})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let tilde = |s: &str| match home
        .as_ref()
        .and_then(|h| s.strip_prefix(&*h.to_string_lossy()))
    {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("~{rest}"),
        _ => s.to_string(),
    };
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.iter().map(|s| tilde(s)).collect::<Vec<_>>().join(" ")
        }
    };
    println!("axiomctl: dry run, nothing started");
    println!(
        "  kind         {}{}",
        prep.kind,
        if prep.hooks {
            " (Axiom's hooks for the run)"
        } else {
            ""
        }
    );
    println!(
        "  profile      {}{} (Landlock ABI {} here)",
        c.profile,
        if c.strict { ", strict" } else { "" },
        confine::kernel_abi()
    );
    println!("  workspace    {}", prep.workspace.display());
    match &c.fs {
        None => println!("  files        everything the user may (no filesystem rules)"),
        Some(fs) => {
            println!("  writable     {}", list(&fs.write));
            println!("  its state    {}", list(&fs.state));
            println!("  readable     {}", list(&fs.read));
            println!("  protected    {}", list(&fs.protect));
            println!("  hidden       {}", list(&fs.hide));
        }
    }
    let net = if c.net.allow_all {
        "any connection".to_string()
    } else if c.net.allow.is_empty() {
        "no connection".to_string()
    } else {
        c.net
            .allow
            .iter()
            .map(|a| format!("{}:{}", a.net, a.port))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  network      {net}; path sockets: {}",
        if c.net.unix_any {
            "any"
        } else {
            "axiomd's and the configured ones only"
        }
    );
    let l = &c.limits;
    println!(
        "  limits       pids {} · memory {} · cpu {}",
        l.pids.map_or("-".into(), |n| n.to_string()),
        l.memory_bytes
            .map_or("-".into(), |b| format!("{} MiB", b >> 20)),
        l.cpu_percent.map_or("-".into(), |n| format!("{n} %"))
    );
    for e in &env {
        println!("  environment  {e} (~/.claude.json kept in step at the start and the end)");
    }
    println!("  command      {}", argv.join(" "));
    Ok(ExitCode::SUCCESS)
}
