//! WASI tools: a WebAssembly program (WASI preview 1, what `clang --target=wasm32-wasi` and
//! `cargo build --target wasm32-wasip1` make) run with only its workspace preopened.
//!
//! What the tool gets: its arguments, standard streams, the workspace (as `.` and under its
//! host path, read-write), a clock and randomness. What it does not: any other directory, the
//! environment of the caller, sockets (preview 1 can only use sockets it is handed; it is
//! handed none). `/etc/passwd` is simply not there for it.
use std::path::{Path, PathBuf};

use wasmtime::Linker;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder, p1::WasiP1Ctx};

use super::{Guard, Guarded, Limits, Sandbox, SandboxError, fault_of};

pub struct Tool {
    pub module: PathBuf,
    /// argv[1..]; argv[0] is the module's file name.
    pub args: Vec<String>,
    pub workspace: PathBuf,
    /// The only environment variables the tool sees.
    pub env: Vec<(String, String)>,
    pub limits: Limits,
}

/// How a tool ended.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    /// The module came from the compiled-module cache.
    pub cached: bool,
}

struct Host {
    wasi: WasiP1Ctx,
    guard: Guard,
}

impl Guarded for Host {
    fn guard(&mut self) -> &mut Guard {
        &mut self.guard
    }
}

/// A tool ready to start: compiled (or from the cache), linked, its context built.
pub struct Prepared {
    store: wasmtime::Store<Host>,
    pre: wasmtime::InstancePre<Host>,
    limits: Limits,
    name: String,
    pub cached: bool,
}

/// Compiles or loads the module and builds its sandbox, without running it.
pub fn prepare(sandbox: &Sandbox, tool: &Tool) -> Result<Prepared, SandboxError> {
    let name = tool.module.display().to_string();
    let module_err = |reason: String| SandboxError::Module {
        path: name.clone(),
        reason,
    };
    let loaded = sandbox.load(&tool.module)?;
    let mut linker: Linker<Host> = Linker::new(sandbox.engine());
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut Host| &mut h.wasi)
        .map_err(|e| module_err(format!("{e:#}")))?;
    let pre = linker
        .instantiate_pre(&loaded.module)
        .map_err(|e| module_err(format!("{e:#}")))?;

    let argv0 = tool
        .module
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tool.wasm".into());
    let mut args = vec![argv0];
    args.extend(tool.args.iter().cloned());
    let mut b = WasiCtxBuilder::new();
    b.args(&args).inherit_stdio();
    for (k, v) in &tool.env {
        b.env(k, v);
    }
    let ws = workspace_dir(&tool.workspace)?;
    let preopen = |b: &mut WasiCtxBuilder, guest: &str| {
        b.preopened_dir(&ws, guest, FsPerms::ReadWrite)
            .map(drop)
            .map_err(|e| SandboxError::Io {
                path: ws.display().to_string(),
                source: std::io::Error::other(format!("{e:#}")),
            })
    };
    preopen(&mut b, ".")?;
    preopen(&mut b, &ws.to_string_lossy())?;
    let store = sandbox.store(
        Host {
            wasi: b.build_p1(),
            guard: Guard::new(tool.limits),
        },
        &tool.limits,
    );
    Ok(Prepared {
        store,
        pre,
        limits: tool.limits,
        name,
        cached: loaded.cached,
    })
}

impl Prepared {
    /// Instantiates and runs `_start`; the exit code the program gave (`proc_exit`, or 0).
    pub fn run(mut self) -> Result<Outcome, SandboxError> {
        let cached = self.cached;
        let r = (|| -> wasmtime::Result<()> {
            let inst = self.pre.instantiate(&mut self.store)?;
            let start = inst.get_typed_func::<(), ()>(&mut self.store, "_start")?;
            start.call(&mut self.store, ())
        })();
        match r {
            Ok(()) => Ok(Outcome { code: 0, cached }),
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(code)) => Ok(Outcome {
                    code: *code,
                    cached,
                }),
                None => Err(SandboxError::Fault {
                    path: self.name,
                    fault: fault_of(&e, &self.store.data().guard, &self.limits),
                }),
            },
        }
    }
}

/// Runs a tool to its end.
pub fn run(sandbox: &Sandbox, tool: &Tool) -> Result<Outcome, SandboxError> {
    prepare(sandbox, tool)?.run()
}

/// The workspace as an absolute, resolved directory.
fn workspace_dir(p: &Path) -> Result<PathBuf, SandboxError> {
    let io = |source| SandboxError::Io {
        path: p.display().to_string(),
        source,
    };
    let d = std::fs::canonicalize(p).map_err(io)?;
    if !d.is_dir() {
        return Err(io(std::io::Error::other("not a directory")));
    }
    Ok(d)
}
