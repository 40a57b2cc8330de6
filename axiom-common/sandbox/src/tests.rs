use std::{path::PathBuf, sync::Arc};

use super::*;

/// A plugin's boilerplate around a body of `axiom_check` (params $p $n, result i64).
fn plugin_wat(body: &str) -> String {
    format!(
        r#"(module
  (memory (export "memory") 1)
  (data (i32.const 16) "flagged: forbidden")
  (func (export "axiom_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "axiom_check") (param $p i32) (param $n i32) (result i64)
    {body}))"#
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write module");
    p
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("axiom-sandbox-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

/// Returns "flagged: forbidden" when the input's first byte is 'X', else nothing.
const FIRST_BYTE_X: &str = r#"
    (if (result i64) (i32.eq (i32.load8_u (local.get $p)) (i32.const 88))
      (then (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 18)))
      (else (i64.const 0)))"#;

#[test]
fn a_plugin_reports_what_it_finds_and_nothing_else() {
    let d = tmp("verdict");
    let sb = Arc::new(Sandbox::new(None).expect("engine"));
    let p = Plugin::load(
        sb,
        write(&d, "x.wat", &plugin_wat(FIRST_BYTE_X)),
        Limits::PLUGIN,
    )
    .expect("load");
    assert_eq!(
        p.check(b"X marks the spot").expect("call"),
        Some("flagged: forbidden".into())
    );
    assert_eq!(p.check(b"nothing here").expect("call"), None);
}

/// A plugin whose check never returns, under `limits`.
fn endless(tag: &str, limits: Limits) -> Plugin {
    let d = tmp(tag);
    let sb = Arc::new(Sandbox::new(None).expect("engine"));
    let wat = plugin_wat("(loop $l (br $l)) (i64.const 0)");
    Plugin::load(sb, write(&d, "loop.wat", &wat), limits).expect("load")
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let p = endless(
        "loop",
        Limits {
            fuel: Some(1_000_000),
            ..Limits::PLUGIN
        },
    );
    assert_eq!(p.check(b"{}"), Err(Fault::Fuel(1_000_000)));
    // The next call starts afresh, and is stopped the same way.
    assert_eq!(p.check(b"{}"), Err(Fault::Fuel(1_000_000)));
}

#[test]
fn a_loop_without_fuel_meets_its_deadline() {
    let p = endless(
        "deadline",
        Limits {
            fuel: None,
            deadline: Some(std::time::Duration::from_millis(50)),
            ..Limits::PLUGIN
        },
    );
    assert_eq!(
        p.check(b"{}"),
        Err(Fault::Deadline(std::time::Duration::from_millis(50)))
    );
}

#[test]
fn unbounded_growth_stops_at_the_memory_limit() {
    let d = tmp("grow");
    let sb = Arc::new(Sandbox::new(None).expect("engine"));
    let body =
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) (i64.const 0)";
    let p =
        Plugin::load(sb, write(&d, "grow.wat", &plugin_wat(body)), Limits::PLUGIN).expect("load");
    assert_eq!(p.check(b"{}"), Err(Fault::Memory(16 << 20)));
}

#[test]
fn a_plugin_that_imports_anything_is_refused_at_load() {
    let d = tmp("import");
    let sb = Arc::new(Sandbox::new(None).expect("engine"));
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "axiom_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "axiom_check") (param i32 i32) (result i64) (i64.const 0)))"#;
    let e = Plugin::load(sb.clone(), write(&d, "imp.wat", wat), Limits::PLUGIN)
        .expect_err("imports are refused");
    let msg = e.to_string();
    assert!(
        msg.contains("imp.wat") && msg.contains("wasi_snapshot_preview1.fd_write"),
        "{msg}"
    );
    let e = Plugin::load(
        sb,
        write(&d, "shape.wat", "(module (memory (export \"memory\") 1))"),
        Limits::PLUGIN,
    )
    .expect_err("the contract's exports are required");
    assert!(e.to_string().contains("exports no axiom_alloc"), "{e}");
}

#[test]
fn compiled_modules_come_from_the_cache_the_second_time() {
    let d = tmp("cache");
    let cache = d.join("cache");
    let m = write(&d, "x.wat", &plugin_wat(FIRST_BYTE_X));
    let sb = Arc::new(Sandbox::new(Some(cache.clone())).expect("engine"));
    assert!(sb.cache_note.is_none(), "{:?}", sb.cache_note);
    let first = Plugin::load(sb.clone(), m.clone(), Limits::PLUGIN).expect("load");
    assert!(!first.cached);
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .expect("cache dir")
        .flatten()
        .collect();
    assert_eq!(entries.len(), 1, "one compiled module in the cache");
    let mode = entries[0].metadata().expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A new engine (a new process, as far as the cache knows) finds it.
    let sb2 = Arc::new(Sandbox::new(Some(cache.clone())).expect("engine"));
    let second = Plugin::load(sb2, m.clone(), Limits::PLUGIN).expect("load");
    assert!(second.cached);
    assert_eq!(
        second.check(b"X").expect("call"),
        Some("flagged: forbidden".into())
    );
    // A changed module is a different key: compiled, not confused with the old one.
    std::fs::write(&m, plugin_wat("(i64.const 0)")).expect("rewrite");
    let sb3 = Arc::new(Sandbox::new(Some(cache)).expect("engine"));
    let third = Plugin::load(sb3, m, Limits::PLUGIN).expect("load");
    assert!(!third.cached);
    assert_eq!(third.check(b"X").expect("call"), None);
}

#[test]
fn a_cache_directory_others_can_write_is_not_used() {
    let d = tmp("opencache");
    let cache = d.join("cache");
    std::fs::create_dir(&cache).expect("mkdir");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let sb = Sandbox::new(Some(cache)).expect("engine");
    assert!(sb.cache_dir().is_none());
    assert!(
        sb.cache_note
            .as_deref()
            .is_some_and(|n| n.contains("writable by others"))
    );
}

#[test]
fn a_wasi_tool_sees_only_its_workspace() {
    let d = tmp("wasi");
    let ws = d.join("ws");
    std::fs::create_dir(&ws).expect("ws");
    // path_open(fd 3 = the first preopen, "." ) of "../../../../etc/passwd": must fail; exit with
    // the errno it got. Then write "ok" into ./made.txt inside the workspace.
    let wat = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "../../../../../../etc/passwd")
  (data (i32.const 200) "made.txt")
  (data (i32.const 300) "ok")
  (func (export "_start")
    (local $e i32)
    (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 28)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 0)))
    (if (i32.eqz (local.get $e)) (then (call $exit (i32.const 99))))
    ;; O_CREAT(1) | O_TRUNC(8); rights: fd_write (64)
    (if (call $open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 8)
          (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 4))
      (then (call $exit (i32.const 98))))
    ;; iovec at 8: {ptr 300, len 2}
    (i32.store (i32.const 8) (i32.const 300))
    (i32.store (i32.const 12) (i32.const 2))
    (drop (call $write (i32.load (i32.const 4)) (i32.const 8) (i32.const 1) (i32.const 16)))
    (call $exit (local.get $e))))"#;
    let m = write(&d, "tool.wat", wat);
    let sb = Sandbox::new(None).expect("engine");
    let out = wasi::run(
        &sb,
        &wasi::Tool {
            module: m,
            args: vec![],
            workspace: ws.clone(),
            env: vec![],
            limits: Limits::TOOL,
        },
    )
    .expect("runs");
    // 63: EPERM, wasmtime's answer to a path that leaves the preopen (44, ENOENT, would mean it
    // looked for the file outside).
    assert_eq!(out.code, 63, "exit code is the errno of the escape attempt");
    assert_eq!(
        std::fs::read_to_string(ws.join("made.txt")).expect("made"),
        "ok"
    );
}

#[test]
fn no_deadline_stays_no_deadline_once_the_clock_runs() {
    // A store with a deadline starts the clock; one without must not then be interrupted at
    // once (the "no deadline" distance added to a non-zero epoch must not wrap around).
    let d = tmp("clock");
    let sb = Arc::new(Sandbox::new(None).expect("engine"));
    let timed = Limits {
        fuel: None,
        deadline: Some(std::time::Duration::from_millis(30)),
        ..Limits::PLUGIN
    };
    let wat = plugin_wat("(loop $l (br $l)) (i64.const 0)");
    let spin = Plugin::load(sb.clone(), write(&d, "loop.wat", &wat), timed).expect("load");
    assert!(matches!(spin.check(b"{}"), Err(Fault::Deadline(_))));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let untimed = Limits {
        deadline: None,
        ..Limits::PLUGIN
    };
    let p = Plugin::load(sb, write(&d, "x.wat", &plugin_wat(FIRST_BYTE_X)), untimed).expect("load");
    assert_eq!(
        p.check(b"X").expect("not interrupted"),
        Some("flagged: forbidden".into())
    );
}
