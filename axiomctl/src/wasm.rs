//! `axiomctl run --wasm tool.wasm -- args`: an agent's tool as a WASI program.
//!
//! `run` starts the agent as usual (its own cgroup, the profile's Landlock rules and limits,
//! tracked by axiomd) but what it execs is this binary's hidden `wasm-exec` command, which runs
//! the module in wasmtime with only the workspace preopened. Two fences, then: the WASI one
//! (the module cannot even name a path outside the workspace, and has no sockets) inside the
//! agent's own.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use axiom_sandbox::{self as sandbox, Limits, SandboxError, wasi};
use clap::Args;

/// The limits of a WASI tool, as flags (shared by `run --wasm` and `wasm-exec`).
#[derive(Args, Clone, Debug, Default)]
pub struct WasmLimits {
    /// Linear memory the tool may use, MiB (default 256).
    #[arg(long, value_name = "MIB")]
    pub wasm_memory_mib: Option<u64>,
    /// Instructions (fuel units) the tool may run (default: unlimited).
    #[arg(long, value_name = "UNITS")]
    pub wasm_fuel: Option<u64>,
    /// Wall-clock time the tool may run, ms (default: unlimited).
    #[arg(long, value_name = "MS")]
    pub wasm_timeout_ms: Option<u64>,
}

impl WasmLimits {
    pub fn limits(&self) -> anyhow::Result<Limits> {
        let mut l = Limits::TOOL;
        if let Some(m) = self.wasm_memory_mib {
            anyhow::ensure!(
                (1..=65536).contains(&m),
                "--wasm-memory-mib must be 1..=65536"
            );
            l.memory_bytes = (m as usize) << 20;
        }
        if let Some(f) = self.wasm_fuel {
            anyhow::ensure!(f > 0, "--wasm-fuel must be > 0");
            l.fuel = Some(f);
        }
        if let Some(t) = self.wasm_timeout_ms {
            anyhow::ensure!(t > 0, "--wasm-timeout-ms must be > 0");
            l.deadline = Some(Duration::from_millis(t));
        }
        Ok(l)
    }

    /// The same flags again, for the command line of `wasm-exec`.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (flag, val) in [
            ("--wasm-memory-mib", self.wasm_memory_mib),
            ("--wasm-fuel", self.wasm_fuel),
            ("--wasm-timeout-ms", self.wasm_timeout_ms),
        ] {
            if let Some(x) = val {
                v.extend([flag.to_string(), x.to_string()]);
            }
        }
        v
    }
}

/// What the agent process execs for `run --wasm`: this binary's `wasm-exec`.
pub fn exec_argv(
    module: &Path,
    workspace: &Path,
    cache: Option<&Path>,
    limits: &WasmLimits,
    args: &[String],
) -> anyhow::Result<Vec<String>> {
    let me = std::env::current_exe().context("finding axiomctl's own binary")?;
    let module = std::fs::canonicalize(module)
        .with_context(|| format!("wasm module {}", module.display()))?;
    let mut v = vec![
        me.display().to_string(),
        "wasm-exec".into(),
        "--workspace".into(),
        workspace.display().to_string(),
    ];
    if let Some(c) = cache {
        v.extend(["--cache".into(), c.display().to_string()]);
    }
    v.extend(limits.to_args());
    v.push(module.display().to_string());
    v.push("--".into());
    v.extend(args.iter().cloned());
    Ok(v)
}

/// The compiled-module cache of the user the tool runs as (under sudo: the invoking user's,
/// not root's).
pub fn cache_for(uid: Option<nix::unistd::Uid>) -> Option<PathBuf> {
    match uid {
        Some(uid) => nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.dir.join(".cache/axiom/wasm")),
        None => sandbox::user_cache_dir(),
    }
}

/// What `wasm-exec` (the hidden command `run --wasm` execs) was asked.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    #[arg(long)]
    pub workspace: PathBuf,
    /// The compiled-module cache directory.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub limits: WasmLimits,
    pub module: PathBuf,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `wasm-exec`: runs the module in this process and exits with its exit code.
pub fn exec(a: &ExecArgs) -> anyhow::Result<ExitCode> {
    let limits = a.limits.limits()?;
    let sb = sandbox::Sandbox::new(a.cache.clone().or_else(sandbox::user_cache_dir))?;
    let tool = wasi::Tool {
        module: a.module.clone(),
        args: a.args.clone(),
        workspace: a.workspace.clone(),
        env: vec![],
        limits,
    };
    match wasi::run(&sb, &tool) {
        Ok(out) => Ok(ExitCode::from(out.code.clamp(0, 255) as u8)),
        Err(SandboxError::Fault { path, fault }) => {
            eprintln!("axiomctl: wasm tool {path} stopped: {fault}");
            // As a shell reports a process killed by SIGKILL: the sandbox ended it.
            Ok(ExitCode::from(137))
        }
        Err(e) => {
            eprintln!("axiomctl: wasm tool: {e}");
            Ok(ExitCode::from(126))
        }
    }
}
