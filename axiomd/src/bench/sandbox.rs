//! `axiomd bench-sandbox` (run by `cargo xtask bench sandbox`): what the WebAssembly sandboxes
//! cost, each against a baseline measured in the same process.
//!
//! - WASI tool start-up from the compiled-module cache (deserialize, build the WASI context,
//!   instantiate, run `_start` of a tool that does nothing), against compiling the module.
//! - A rule plugin's call (a fresh instance per call, the input copied in, the verdict read
//!   out), against the same check done natively in Rust.
use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use axiom_sandbox::{Limits, Plugin, Sandbox, SandboxError, wasi};

/// The medians, in ms and µs.
pub struct SandboxBench {
    pub wasm_start_ms: f64,
    pub wasm_compile_start_ms: f64,
    pub plugin_call_us: f64,
    pub native_call_us: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An output event as the engine hands it to a plugin (about 200 bytes of JSON).
const INPUT: &str = r#"{"rule":"sql-guard","scope":"output","text":"Running the cleanup now: psql -c \"DROP TABLE sessions;\" against the staging database, then the tests.\r\n","agent":7,"pid":4242,"comm":"claude"}"#;

/// What `sql_guard.c` decides, written in Rust: the native baseline of a plugin call.
fn native_check(input: &str) -> Option<String> {
    let lower = input.to_ascii_lowercase();
    let at = lower.find("drop table")?;
    if lower.contains("migration") {
        return None;
    }
    let stmt: String = input[at..]
        .chars()
        .take(60)
        .take_while(|c| !matches!(c, ';' | '\\' | '"'))
        .collect();
    Some(format!("destructive SQL outside a migration: {stmt}"))
}

/// `tool`: a WASI module that does nothing; `plugin`: `sql_guard.wasm`; `dir`: scratch space
/// (a cache directory and a workspace go below it).
pub fn run(
    tool: &Path,
    plugin: &Path,
    dir: &Path,
    rounds: usize,
    calls: usize,
) -> Result<SandboxBench, SandboxError> {
    let io = |source| SandboxError::Io {
        path: dir.display().to_string(),
        source,
    };
    let cache = dir.join("cache");
    let ws = dir.join("ws");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&ws).map_err(io)?;
    let tool_of = |module: &Path| wasi::Tool {
        module: module.to_path_buf(),
        args: vec![],
        workspace: ws.clone(),
        env: vec![],
        limits: Limits::TOOL,
    };

    // Start-up from the cache: the first start fills it, the rest are timed.
    let cached = Sandbox::new(Some(cache.clone()))?;
    wasi::run(&cached, &tool_of(tool))?;
    let mut start = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        let p = wasi::prepare(&cached, &tool_of(tool))?;
        if !p.cached {
            return Err(SandboxError::Engine(
                "the module did not come from the cache".into(),
            ));
        }
        let out = p.run()?;
        start.push(ms(t0.elapsed()));
        if out.code != 0 {
            return Err(SandboxError::Engine(format!(
                "the tool exited {}",
                out.code
            )));
        }
    }
    // Baseline: the same start with the module compiled every time.
    let uncached = Sandbox::new(None)?;
    let mut compile = Vec::with_capacity(rounds);
    for _ in 0..rounds.clamp(1, 20) {
        let t0 = Instant::now();
        wasi::run(&uncached, &tool_of(tool))?;
        compile.push(ms(t0.elapsed()));
    }

    // A plugin call, and the same check natively.
    let sb = Arc::new(Sandbox::new(Some(cache))?);
    let p = Plugin::load(sb, plugin.to_path_buf(), Limits::PLUGIN)?;
    let want = native_check(INPUT);
    let got = p
        .check(INPUT.as_bytes())
        .map_err(|fault| SandboxError::Fault {
            path: plugin.display().to_string(),
            fault,
        })?;
    if got != want {
        return Err(SandboxError::Engine(format!(
            "the plugin and the native check disagree: {got:?} vs {want:?}"
        )));
    }
    let mut call = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        let v = p.check(INPUT.as_bytes());
        call.push(t0.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(v).ok();
    }
    let mut native = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t0 = Instant::now();
        let v = native_check(std::hint::black_box(INPUT));
        native.push(t0.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(v);
    }
    Ok(SandboxBench {
        wasm_start_ms: median(start),
        wasm_compile_start_ms: median(compile),
        plugin_call_us: median(call),
        native_call_us: median(native),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_native_baseline_decides_like_the_plugin() {
        assert_eq!(
            super::native_check(super::INPUT).as_deref(),
            Some("destructive SQL outside a migration: DROP TABLE sessions")
        );
        assert_eq!(super::native_check("a migration: drop table x;"), None);
    }
}
