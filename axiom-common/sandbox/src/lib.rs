//! WebAssembly sandboxes (wasmtime): rule plugins that axiomd calls with an event, and WASI
//! tools that `axiomctl run --wasm` runs in place of a native agent tool.
//!
//! Both get nothing they are not handed: a plugin may import nothing at all (no clock, no
//! files, no randomness), a WASI tool sees only its workspace, its arguments and its standard
//! streams. Both run under the same limits: fuel (instructions) and/or a wall-clock deadline, and
//! a cap on linear memory. Compiled modules are cached on disk, keyed by the module's SHA-256
//! and the engine's settings, so a repeated start deserializes instead of compiling.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
pub mod plugin;
pub mod wasi;

use std::{
    hash::{Hash as _, Hasher as _},
    io::Write as _,
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::{Path, PathBuf},
    sync::{Arc, Once, OnceLock},
    time::Duration,
};

use sha2::Digest as _;
use wasmtime::{Config, Engine, Module, ResourceLimiter, Store, Trap};

pub use plugin::Plugin;

/// How often the deadline clock ticks: a deadline is honoured to within this.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What one sandboxed run may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (about one unit per WebAssembly instruction); `None`: unlimited.
    pub fuel: Option<u64>,
    /// Bytes of linear memory, in all.
    pub memory_bytes: usize,
    /// Wall-clock time; `None`: unlimited.
    pub deadline: Option<Duration>,
    /// Growing past `memory_bytes` traps (plugins: stopped and reported at once) instead of
    /// failing the `memory.grow` (tools: `malloc` returns NULL, as a real program expects).
    pub trap_on_memory_limit: bool,
}

impl Limits {
    /// A rule plugin's defaults: 50 million instructions (tens of milliseconds), 16 MiB.
    pub const PLUGIN: Limits = Limits {
        fuel: Some(50_000_000),
        memory_bytes: 16 << 20,
        deadline: Some(Duration::from_secs(1)),
        trap_on_memory_limit: true,
    };
    /// A WASI tool's defaults: 256 MiB, no instruction or time limit (the agent's own cgroup
    /// limits still apply to the process that runs it).
    pub const TOOL: Limits = Limits {
        fuel: None,
        memory_bytes: 256 << 20,
        deadline: None,
        trap_on_memory_limit: false,
    };
}

/// Why a sandboxed call was stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("out of fuel after {0} units (wasm fuel limit)")]
    Fuel(u64),
    #[error("memory limit of {0} bytes reached (wasm memory limit)")]
    Memory(usize),
    #[error("deadline of {0:?} passed (wasm deadline)")]
    Deadline(Duration),
    #[error("trap: {0}")]
    Trap(String),
}

impl Fault {
    /// A short name of the limit that stopped it, for counters and `denied` events.
    pub fn limit(&self) -> &'static str {
        match self {
            Fault::Fuel(_) => "wasm fuel limit",
            Fault::Memory(_) => "wasm memory limit",
            Fault::Deadline(_) => "wasm deadline",
            Fault::Trap(_) => "wasm trap",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Not a valid module, or not one of the shape asked for (imports, exports).
    #[error("{path}: {reason}")]
    Module { path: String, reason: String },
    #[error("wasm engine: {0}")]
    Engine(String),
    #[error("{path}: stopped: {fault}")]
    Fault { path: String, fault: Fault },
}

/// Counts how much memory a store has and refuses growth past its limit.
pub struct Guard {
    limits: Limits,
    /// The limit was hit (even if the module then went on).
    pub memory_refused: bool,
}

impl Guard {
    pub fn new(limits: Limits) -> Guard {
        Guard {
            limits,
            memory_refused: false,
        }
    }
}

impl ResourceLimiter for Guard {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired <= self.limits.memory_bytes {
            return Ok(true);
        }
        self.memory_refused = true;
        if self.limits.trap_on_memory_limit {
            return Err(wasmtime::Error::msg("memory limit"));
        }
        Ok(false)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table entry is a pointer: count it against the same budget.
        Ok(desired.saturating_mul(8) <= self.limits.memory_bytes)
    }

    fn instances(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        4
    }
    fn memories(&self) -> usize {
        1
    }
}

/// Store data that carries a `Guard`.
pub trait Guarded: 'static {
    fn guard(&mut self) -> &mut Guard;
}

impl Guarded for Guard {
    fn guard(&mut self) -> &mut Guard {
        self
    }
}

/// One engine (compiler settings) and the on-disk cache of what it compiled.
pub struct Sandbox {
    engine: Engine,
    cache: Option<PathBuf>,
    /// Why there is no cache, when one was asked for.
    pub cache_note: Option<String>,
    /// The key part that changes with the engine's settings and version.
    engine_key: String,
    ticker: Once,
}

/// A module ready to instantiate, and whether it came from the cache.
pub struct Loaded {
    pub module: Module,
    pub cached: bool,
}

impl Sandbox {
    /// An engine with fuel and deadlines on; `cache`: a directory for compiled modules (made
    /// 0700 if absent; not used unless it belongs to this user and only they can write it).
    pub fn new(cache: Option<PathBuf>) -> Result<Sandbox, SandboxError> {
        let mut cfg = Config::new();
        cfg.consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(512 << 10)
            .parallel_compilation(true);
        let engine = Engine::new(&cfg).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{:016x}", h.finish());
        let (cache, cache_note) = match cache {
            Some(dir) => match private_dir(&dir) {
                Ok(()) => (Some(dir), None),
                Err(why) => (None, Some(format!("{}: {why}", dir.display()))),
            },
            None => (None, None),
        };
        Ok(Sandbox {
            engine,
            cache,
            cache_note,
            engine_key,
            ticker: Once::new(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_deref()
    }

    /// Reads and compiles a module (`.wasm`, or `.wat` text), or takes it from the cache.
    pub fn load(&self, path: &Path) -> Result<Loaded, SandboxError> {
        let bytes = std::fs::read(path).map_err(|source| SandboxError::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.load_bytes(&bytes, &path.display().to_string())
    }

    /// As `load`, for a module already in memory; `name` names it in errors.
    pub fn load_bytes(&self, bytes: &[u8], name: &str) -> Result<Loaded, SandboxError> {
        let bad = |e: wasmtime::Error| SandboxError::Module {
            path: name.into(),
            reason: format!("{e:#}"),
        };
        let Some(dir) = &self.cache else {
            return Ok(Loaded {
                module: Module::new(&self.engine, bytes).map_err(bad)?,
                cached: false,
            });
        };
        let digest: String = sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = format!("{digest}-{}", self.engine_key);
        let file = dir.join(format!("{key}.cwasm"));
        if owned_file(&file) {
            // SAFETY: the file is one this user wrote with `Module::serialize` into a directory
            // only this user can write (checked at `new` and just now); wasmtime checks that it
            // was made by this engine version and settings, and refuses it otherwise.
            if let Ok(module) = unsafe { Module::deserialize_file(&self.engine, &file) } {
                return Ok(Loaded {
                    module,
                    cached: true,
                });
            }
        }
        let module = Module::new(&self.engine, bytes).map_err(bad)?;
        // A cache that cannot be written costs speed, not correctness.
        if let Ok(image) = module.serialize() {
            let _ = write_private(&file, &image);
        }
        Ok(Loaded {
            module,
            cached: false,
        })
    }

    /// A store with `limits` applied: fuel, memory, deadline.
    pub fn store<T: Guarded + Send>(&self, data: T, limits: &Limits) -> Store<T> {
        let mut store = Store::new(&self.engine, data);
        store.limiter(|d| d.guard());
        // Fuel is on in the engine: a store without a budget would trap at once.
        let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        match limits.deadline {
            Some(d) => {
                self.start_ticker();
                let ticks = (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
                store.set_epoch_deadline(ticks);
            }
            // wasmtime adds this to the current epoch: far away, without wrapping around.
            None => store.set_epoch_deadline(u64::MAX / 2),
        }
        store.epoch_deadline_trap();
        store
    }

    /// The clock behind deadlines: one thread per process, started on first use.
    fn start_ticker(&self) {
        self.ticker.call_once(|| {
            let engine = self.engine.clone();
            let _ = std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                });
        });
    }
}

/// What stopped a call, from the error wasmtime returned and what the guard saw.
pub fn fault_of(e: &wasmtime::Error, guard: &Guard, limits: &Limits) -> Fault {
    if guard.memory_refused && limits.trap_on_memory_limit {
        return Fault::Memory(limits.memory_bytes);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Fault::Fuel(limits.fuel.unwrap_or(u64::MAX)),
        Some(Trap::Interrupt) => Fault::Deadline(limits.deadline.unwrap_or_default()),
        _ => Fault::Trap(format!("{e:#}").lines().next().unwrap_or("").to_string()),
    }
}

/// The process-wide sandbox (axiomd configures its cache directory at start-up; otherwise the
/// user's cache directory).
static SHARED: OnceLock<Result<Arc<Sandbox>, String>> = OnceLock::new();

/// Sets the process-wide sandbox's cache directory. Only the first call counts.
pub fn configure(cache: Option<PathBuf>) -> Result<Arc<Sandbox>, SandboxError> {
    SHARED
        .get_or_init(|| Sandbox::new(cache).map(Arc::new).map_err(|e| e.to_string()))
        .clone()
        .map_err(SandboxError::Engine)
}

/// The process-wide sandbox.
pub fn shared() -> Result<Arc<Sandbox>, SandboxError> {
    configure(user_cache_dir())
}

/// `$XDG_CACHE_HOME/axiom/wasm`, else `~/.cache/axiom/wasm`.
pub fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("axiom").join("wasm"))
}

/// Makes `dir` (0700) if absent; it must belong to this user and be writable by no one else.
fn private_dir(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| e.to_string())?;
    }
    let m = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    if !m.is_dir() {
        return Err("not a directory".into());
    }
    if m.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!("belongs to uid {}, not to this user", m.uid()));
    }
    if m.permissions().mode() & 0o022 != 0 {
        return Err("writable by others".into());
    }
    Ok(())
}

/// A regular file of this user's, writable only by them.
fn owned_file(file: &Path) -> bool {
    std::fs::symlink_metadata(file).is_ok_and(|m| {
        m.is_file()
            && m.uid() == nix::unistd::geteuid().as_raw()
            && m.permissions().mode() & 0o022 == 0
    })
}

/// Writes a cache entry whole (a temporary file, then a rename) and only for this user.
fn write_private(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let r = f.write_all(bytes).and_then(|()| f.sync_data());
    drop(f);
    match r.and_then(|()| std::fs::rename(&tmp, file)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
