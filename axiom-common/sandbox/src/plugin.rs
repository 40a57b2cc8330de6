//! Rule plugins: follow-up analyzers written by users, compiled to WebAssembly.
//!
//! The contract (documented in the README, under Rules):
//! - the module imports nothing — no WASI, no host functions: it can compute, nothing else;
//! - it exports `memory`, `axiom_alloc(len: i32) -> i32` (room for the input) and
//!   `axiom_check(ptr: i32, len: i32) -> i64`;
//! - the input is one JSON object (`scope`, `text`, `agent`, `pid`, `comm`, `rule`);
//! - `axiom_check` returns 0 for "nothing to report", or `(ptr << 32) | len` of a UTF-8 text in
//!   its memory: the finding's detail.
//!
//! Every call gets a fresh instance (no state leaks from one agent's event to the next) with
//! the rule's fuel, memory and time limits; a call that exceeds one is stopped and reported.
use std::{path::PathBuf, sync::Arc};

use wasmtime::{ExternType, InstancePre, Linker, Module, ValType};

use super::{Fault, Guard, Limits, Sandbox, SandboxError, fault_of};

/// Bytes of a verdict read back from a plugin.
const VERDICT_MAX: usize = 4096;

pub struct Plugin {
    pub path: PathBuf,
    pub limits: Limits,
    /// Came from the compiled-module cache.
    pub cached: bool,
    sandbox: Arc<Sandbox>,
    pre: InstancePre<Guard>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Plugin {
    /// Compiles (or takes from the cache) and checks the contract, so a bad plugin is an error
    /// when its rule file loads, not when an event reaches it.
    pub fn load(
        sandbox: Arc<Sandbox>,
        path: PathBuf,
        limits: Limits,
    ) -> Result<Plugin, SandboxError> {
        let name = path.display().to_string();
        let loaded = sandbox.load(&path)?;
        check_shape(&loaded.module).map_err(|reason| SandboxError::Module {
            path: name.clone(),
            reason,
        })?;
        let linker: Linker<Guard> = Linker::new(sandbox.engine());
        let pre = linker
            .instantiate_pre(&loaded.module)
            .map_err(|e| SandboxError::Module {
                path: name,
                reason: format!("{e:#}"),
            })?;
        Ok(Plugin {
            path,
            limits,
            cached: loaded.cached,
            sandbox,
            pre,
        })
    }

    /// Runs the plugin on one input: `Ok(None)` nothing to report, `Ok(Some(detail))` a
    /// finding, `Err` the call was stopped (fuel, memory, deadline, or the module trapped).
    pub fn check(&self, input: &[u8]) -> Result<Option<String>, Fault> {
        let mut store = self.sandbox.store(Guard::new(self.limits), &self.limits);
        let run = |store: &mut wasmtime::Store<Guard>| -> wasmtime::Result<Option<String>> {
            let inst = self.pre.instantiate(&mut *store)?;
            let memory = inst
                .get_memory(&mut *store, "memory")
                .ok_or_else(|| wasmtime::Error::msg("no memory export"))?;
            let alloc = inst.get_typed_func::<i32, i32>(&mut *store, "axiom_alloc")?;
            let check = inst.get_typed_func::<(i32, i32), i64>(&mut *store, "axiom_check")?;
            let len = i32::try_from(input.len())?;
            let ptr = alloc.call(&mut *store, len)?;
            memory.write(&mut *store, ptr as u32 as usize, input)?;
            let r = check.call(&mut *store, (ptr, len))?;
            if r == 0 {
                return Ok(None);
            }
            let (at, n) = ((r as u64 >> 32) as usize, (r as u64 & 0xffff_ffff) as usize);
            let mut buf = vec![0u8; n.min(VERDICT_MAX)];
            memory.read(&*store, at, &mut buf)?;
            let detail = String::from_utf8_lossy(&buf).trim().to_string();
            Ok(Some(if detail.is_empty() {
                "the plugin reported a finding".into()
            } else {
                detail
            }))
        };
        run(&mut store).map_err(|e| fault_of(&e, store.data(), &self.limits))
    }
}

/// The contract: no imports; `memory`, `axiom_alloc` and `axiom_check` of the right types.
fn check_shape(m: &Module) -> Result<(), String> {
    if let Some(i) = m.imports().next() {
        return Err(format!(
            "imports {}.{}: a plugin may import nothing (no ambient authority)",
            i.module(),
            i.name()
        ));
    }
    let func = |name: &str, params: &[ValType], results: &[ValType]| -> Result<(), String> {
        match m.get_export(name) {
            Some(ExternType::Func(f))
                if f.params().map(|p| format!("{p}")).collect::<Vec<_>>()
                    == params.iter().map(|p| format!("{p}")).collect::<Vec<_>>()
                    && f.results().map(|p| format!("{p}")).collect::<Vec<_>>()
                        == results.iter().map(|p| format!("{p}")).collect::<Vec<_>>() =>
            {
                Ok(())
            }
            Some(_) => Err(format!("export {name} has the wrong type")),
            None => Err(format!("exports no {name}")),
        }
    };
    match m.get_export("memory") {
        Some(ExternType::Memory(_)) => {}
        _ => return Err("exports no memory".into()),
    }
    func("axiom_alloc", &[ValType::I32], &[ValType::I32])?;
    func(
        "axiom_check",
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
    )?;
    Ok(())
}
