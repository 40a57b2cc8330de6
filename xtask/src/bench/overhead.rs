//! `cargo xtask bench overhead`: what Axiom costs real work. Three workloads run as the agent
//! user, each untracked and then under `axiomctl run` (tracked, the shipped rules loaded, and
//! confined: `workspace-write`), alternated round by round (ABBA) so drift of this shared machine
//! falls on both sides:
//!
//! - `build`: a clean `make -j2` of a generated C project (a few dozen translation units);
//! - `tests`: a Python `unittest` suite that writes, reads and prints (stdlib only);
//! - `agent_session`: the real Claude Code, interactive in a pseudo-terminal, playing scenarios
//!   of the real-agents matrix against the model stand-in, from start until the script played.
//!
//! A tracked run counts only if axiomd saw its work (the compiler execs, the suite's files);
//! otherwise the ratio would time an agent Axiom did not watch, and the bench fails.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use axiom_proto::wire::Request;
use axiom_tests::{
    Daemon, axiomctl_bin,
    realagents::{self, AGENT_USER, Agent},
    unique,
};

use super::median;
use crate::{build, require_root, setup::setup};

/// C translation units in the generated project, and functions in each.
const UNITS: usize = 32;
const FUNCTIONS: usize = 60;
/// Test cases in the generated Python suite.
const CASES: usize = 1000;

/// One C unit: functions with loops and branches, enough for the optimiser to work on.
fn c_unit(u: usize) -> String {
    let mut s = String::from("#include <stdint.h>\n#include <string.h>\n\n");
    for f in 0..FUNCTIONS {
        s.push_str(&format!(
            "uint64_t u{u}_f{f}(const uint8_t *p, size_t n, uint64_t seed) {{\n\
             \x20   uint64_t h = seed ^ {k}u;\n\
             \x20   for (size_t i = 0; i < n; i++) {{\n\
             \x20       h = (h ^ p[i]) * 1099511628211u;\n\
             \x20       if ((h & 7) == {b}) h += i * {k}u; else h ^= h >> {r};\n\
             \x20   }}\n\
             \x20   uint8_t tmp[64]; memset(tmp, (int)h, sizeof tmp);\n\
             \x20   for (int j = 0; j < 64; j++) h += tmp[j] * (uint64_t)(j + {f});\n\
             \x20   return h;\n}}\n\n",
            k = 2654435761u64 + (u * FUNCTIONS + f) as u64,
            b = f % 8,
            r = 1 + f % 31,
        ));
    }
    s
}

/// The C project: `UNITS` units, a main that calls one function of each, a Makefile.
fn c_project(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    let mut main = String::from("#include <stdint.h>\n#include <stdio.h>\n#include <stddef.h>\n");
    for u in 0..UNITS {
        std::fs::write(dir.join(format!("src/unit{u}.c")), c_unit(u))?;
        main.push_str(&format!(
            "uint64_t u{u}_f0(const unsigned char *, size_t, uint64_t);\n"
        ));
    }
    main.push_str("int main(void) {\n    uint64_t h = 0;\n");
    for u in 0..UNITS {
        main.push_str(&format!(
            "    h += u{u}_f0((const unsigned char *)\"axiom\", 5, h);\n"
        ));
    }
    main.push_str("    printf(\"%llu\\n\", (unsigned long long)h);\n    return 0;\n}\n");
    std::fs::write(dir.join("src/main.c"), main)?;
    let objs: Vec<String> = (0..UNITS)
        .map(|u| format!("build/unit{u}.o"))
        .chain(["build/main.o".to_string()])
        .collect();
    std::fs::write(
        dir.join("Makefile"),
        format!(
            "CFLAGS = -O2 -Wall\nOBJS = {}\n\nbuild/app: $(OBJS)\n\tcc -o $@ $(OBJS)\n\n\
             build/%.o: src/%.c\n\t@mkdir -p build\n\tcc $(CFLAGS) -c -o $@ $<\n\n\
             clean:\n\trm -rf build\n",
            objs.join(" ")
        ),
    )?;
    Ok(())
}

/// The Python suite: each case writes a file, reads it back, computes, and prints a line.
fn python_suite(dir: &Path) -> anyhow::Result<()> {
    let mut s = String::from(
        "import hashlib, os, tempfile, unittest\n\n\
         class Suite(unittest.TestCase):\n",
    );
    for c in 0..CASES {
        s.push_str(&format!(
            "    def test_{c}(self):\n\
             \x20       with tempfile.NamedTemporaryFile('w+', dir='out', delete=False) as f:\n\
             \x20           f.write('case {c} ' * 200)\n\
             \x20           name = f.name\n\
             \x20       with open(name) as f:\n\
             \x20           data = f.read()\n\
             \x20       os.remove(name)\n\
             \x20       h = hashlib.sha256(data.encode() * 400).hexdigest()\n\
             \x20       n = sum(i * i % 7 for i in range(20000))\n\
             \x20       print('case {c}', h[:16], n)\n\
             \x20       self.assertEqual(len(data), {len})\n\n",
            len = format!("case {c} ").len() * 200,
        ));
    }
    std::fs::create_dir_all(dir.join("out"))?;
    std::fs::write(dir.join("test_suite.py"), s)?;
    Ok(())
}

/// Runs `script` in `ws` as the agent user, in a pseudo-terminal either way: directly (the
/// bench relays the terminal, as the user's terminal would), or under `axiomctl run` (tracked
/// and confined to the workspace, axiomctl relaying the agent's terminal) with the agent named
/// `name`. A terminal on both sides, because a program behaves differently on one (Python
/// flushes each line) and `axiomctl run` always gives the agent one. Seconds it took.
fn timed(d: Option<(&Daemon, &str)>, ws: &Path, script: &str) -> anyhow::Result<f64> {
    use std::io::Read as _;
    let (uid, gid) = realagents::uid_gid(AGENT_USER);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
        .args(["--init-groups", "--"])
        .args([
            "env",
            "-i",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "LANG=C.UTF-8",
        ])
        .arg(format!("HOME={}", ws.display()));
    let mut relay = None;
    if let Some((d, name)) = d {
        cmd.arg(axiomctl_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(["run", "--name", name, "--profile", "workspace-write"])
            .arg("--workspace")
            .arg(ws)
            .arg("--");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    } else {
        // 24×80: what `axiomctl run` gives an agent when its own stdin is no terminal.
        let (master, slave) = realagents::pty(24, 80);
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let mut master = std::fs::File::from(master);
        relay = Some(std::thread::spawn(move || {
            let (mut all, mut buf) = (Vec::new(), [0u8; 8192]);
            // EIO once every holder of the slave is gone: the end.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
            all
        }));
    }
    cmd.args(["/bin/sh", "-c", script]).current_dir(ws);
    let t0 = Instant::now();
    let child = cmd.spawn().context("setpriv")?;
    // Our copies of the terminal's slave go with the command: the relay sees the end.
    drop(cmd);
    let out = child.wait_with_output()?;
    let terminal = relay.map(|r| r.join().unwrap_or_default());
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        let said = terminal.unwrap_or(out.stdout);
        let tail = &said[said.len().saturating_sub(2000)..];
        bail!(
            "`{script}` ({}) failed: {}{}",
            if d.is_some() { "tracked" } else { "untracked" },
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(tail)
        );
    }
    Ok(secs)
}

/// How many events of `kind` axiomd stored for the agent named `name`.
fn seen(d: &Daemon, name: &str, kind: &str) -> anyhow::Result<usize> {
    let agents = d
        .client()
        .request(&Request::Agents)
        .agents
        .unwrap_or_default();
    let Some(a) = agents.iter().find(|a| a.name.as_deref() == Some(name)) else {
        bail!("axiomd does not know the agent {name}");
    };
    // The store commits in batches: give it a moment.
    let t0 = Instant::now();
    loop {
        let r = d.client().request(&Request::Query {
            events: axiom_proto::wire::EventQuery {
                agent: Some(a.id),
                since_ns: None,
                until_ns: None,
                kinds: vec![kind.into()],
                text: None,
                limit: 100_000,
                oldest: false,
            },
            sql: None,
        });
        let n = r.events.map(|e| e.len()).unwrap_or(0);
        if n > 0 || t0.elapsed() > Duration::from_secs(10) {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// CPU seconds used by our reaped children (their whole trees: each waits for its own).
fn children_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let t = |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// One run's cost: seconds of wall time, CPU seconds of the work, CPU seconds of axiomd.
#[derive(Clone, Copy, Default)]
struct Cost {
    wall: f64,
    work_cpu: f64,
    axiomd_cpu: f64,
}

/// One run (`run` returns its wall seconds) with what it cost in CPU: the work's (our reaped
/// children) and axiomd's.
fn costed(d: &Daemon, run: impl FnOnce() -> anyhow::Result<f64>) -> anyhow::Result<Cost> {
    let pid = d.child.as_ref().map(|c| c.id()).context("axiomd runs")?;
    let (a0, c0) = (super::agents::proc_stat_cpu(pid)?, children_cpu());
    let wall = run()?;
    Ok(Cost {
        wall,
        work_cpu: children_cpu() - c0,
        axiomd_cpu: super::agents::proc_stat_cpu(pid)? - a0,
    })
}

/// What a workload measured: the median of the rounds' paired ratios (tracked over the
/// untracked run next to it, so drift of this shared machine between rounds cancels), for wall
/// time and for CPU (the work's plus axiomd's), and the medians of the runs.
struct Measured {
    slowdown: f64,
    cpu_ratio: f64,
    off: Cost,
    on: Cost,
}

fn measured(off: &[Cost], on: &[Cost]) -> Measured {
    let paired = |f: fn(&Cost) -> f64| {
        let mut r: Vec<f64> = off.iter().zip(on).map(|(a, b)| f(b) / f(a)).collect();
        median(&mut r)
    };
    let med = |v: &[Cost], f: fn(&Cost) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let typical = |v: &[Cost]| Cost {
        wall: med(v, |c| c.wall),
        work_cpu: med(v, |c| c.work_cpu),
        axiomd_cpu: med(v, |c| c.axiomd_cpu),
    };
    Measured {
        slowdown: paired(|c| c.wall),
        cpu_ratio: paired(|c| c.work_cpu + c.axiomd_cpu),
        off: typical(off),
        on: typical(on),
    }
}

/// One workload, `rounds` times each way in ABBA order; the tracked runs must be seen doing
/// `kind` at least `min_seen` times.
fn workload(
    d: &Daemon,
    what: &str,
    ws: &Path,
    script: &str,
    rounds: usize,
    kind: &str,
    min_seen: usize,
) -> anyhow::Result<Measured> {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    // One untimed run each way first: page cache and the compiler's files are warm for both.
    timed(None, ws, script)?;
    timed(Some((d, &unique(&format!("warm-{what}")))), ws, script)?;
    for r in 0..rounds {
        let name = unique(&format!("overhead-{what}"));
        let tracked = |on: &mut Vec<Cost>| -> anyhow::Result<()> {
            on.push(costed(d, || timed(Some((d, &name)), ws, script))?);
            let n = seen(d, &name, kind)?;
            if n < min_seen {
                bail!(
                    "bench overhead: axiomd saw {n} {kind} events of {what}, expected {min_seen}+"
                );
            }
            Ok(())
        };
        if r % 2 == 0 {
            off.push(costed(d, || timed(None, ws, script))?);
            tracked(&mut on)?;
        } else {
            tracked(&mut on)?;
            off.push(costed(d, || timed(None, ws, script))?);
        }
        let (a, b) = (off[r], on[r]);
        println!(
            "bench overhead: {what} round {}/{rounds}: untracked {:.2} s (cpu {:.2} + axiomd {:.3}), \
             tracked {:.2} s (cpu {:.2} + axiomd {:.3})",
            r + 1,
            a.wall,
            a.work_cpu,
            a.axiomd_cpu,
            b.wall,
            b.work_cpu,
            b.axiomd_cpu
        );
    }
    Ok(measured(&off, &on))
}

/// The agent-session workload: Claude Code on the basic scenarios, untracked, tracked as
/// shipped (confined, Axiom's Claude Code hooks installed), and tracked without the hooks (so
/// the note can say what the hooks cost: Claude Code runs each one as a process and waits).
/// Rotated order round by round; (as shipped, without hooks).
fn sessions(d: &Daemon, rounds: usize) -> anyhow::Result<Option<(Measured, Measured)>> {
    let agent = Agent::Claude;
    if !agent.installed() {
        println!(
            "bench overhead: Claude Code is not installed (cargo xtask setup): no agent session"
        );
        return Ok(None);
    }
    let timeout = Duration::from_secs(120);
    // 0: untracked, 1: tracked, 2: tracked without hooks.
    let mut runs: [Vec<Cost>; 3] = Default::default();
    const MODES: [(&str, &[&str]); 3] = [
        ("untracked", &[]),
        ("tracked", &["--profile", "workspace-write"]),
        (
            "tracked, no hooks",
            &["--profile", "workspace-write", "--no-hooks"],
        ),
    ];
    for r in 0..rounds {
        for sc in realagents::basic_scenarios() {
            for k in 0..3 {
                let m = (r + k) % 3;
                let (label, opts) = MODES[m];
                let dir = axiom_tests::users::SessionUser::new();
                let c = costed(d, || {
                    let tracked = (m > 0).then_some(d);
                    Ok(realagents::session_seconds(
                        tracked, agent, &sc, &dir, opts, timeout,
                    ))
                })?;
                println!(
                    "bench overhead: session {} {label}: {:.2} s (cpu {:.2} + axiomd {:.3})",
                    sc.name, c.wall, c.work_cpu, c.axiomd_cpu
                );
                runs[m].push(c);
            }
        }
        println!(
            "bench overhead: agent sessions round {}/{rounds} done",
            r + 1
        );
    }
    Ok(Some((
        measured(&runs[0], &runs[1]),
        measured(&runs[0], &runs[2]),
    )))
}

pub fn run(rounds: usize, session_rounds: usize) -> anyhow::Result<()> {
    require_root("bench overhead")?;
    setup()?;
    build()?;
    super::sensor::require_no_run_stats("bench overhead")?;
    let root: PathBuf = std::env::temp_dir().join(unique("axiom-bench-overhead"));
    let (build_ws, tests_ws) = (root.join("build"), root.join("tests"));
    c_project(&build_ws)?;
    python_suite(&tests_ws)?;
    let (uid, gid) = realagents::uid_gid(AGENT_USER);
    crate::run(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(&root),
    )?;
    crate::run(Command::new("chmod").arg("o+x").arg(&root))?;
    // The shipped rules, every action an alert (a kill or an inject would change the work).
    let d = realagents::daemon("bench_overhead");
    let result = (|| {
        let b = workload(
            &d,
            "build",
            &build_ws,
            "make clean >/dev/null && make -j2 >/dev/null && ./build/app >/dev/null",
            rounds,
            "exec",
            UNITS + 1,
        )?;
        let t = workload(
            &d,
            "tests",
            &tests_ws,
            "/usr/bin/python3 -m unittest -v test_suite 2>&1",
            rounds,
            "file",
            CASES,
        )?;
        let s = sessions(&d, session_rounds)?;
        Ok::<_, anyhow::Error>((b, t, s))
    })();
    drop(d);
    let _ = std::fs::remove_dir_all(&root);
    let (b, t, s) = result?;
    let line = |what: &str, m: &Measured| {
        println!(
            "bench overhead: {what}: untracked {:.2} s (cpu {:.2} s, axiomd {:.3} s), tracked \
             {:.2} s (cpu {:.2} s, axiomd {:.3} s); wall {:.3}x, cpu {:.3}x",
            m.off.wall,
            m.off.work_cpu,
            m.off.axiomd_cpu,
            m.on.wall,
            m.on.work_cpu,
            m.on.axiomd_cpu,
            m.slowdown,
            m.cpu_ratio
        )
    };
    line("build", &b);
    line("tests", &t);
    if let Some((s, bare)) = &s {
        line("agent session", s);
        line("agent session without Axiom's hooks", bare);
    }
    let session_r = s.as_ref().map_or(f64::NAN, |(m, _)| m.slowdown);
    let session_cpu = s.as_ref().map_or(f64::NAN, |(m, _)| m.cpu_ratio);
    let bare_r = s.as_ref().map_or(f64::NAN, |(_, m)| m.slowdown);
    let met = |r: f64| if r <= 1.03 { "met" } else { "NOT met" };
    println!(
        "targets: each slowdown <= 1.03 (build {}, tests {}, agent session {})",
        met(b.slowdown),
        met(t.slowdown),
        met(session_r)
    );
    println!(
        "bench overhead: build_slowdown={:.3} tests_slowdown={:.3} agent_session_slowdown={session_r:.3} \
         build_cpu={:.3} tests_cpu={:.3} agent_session_cpu={session_cpu:.3} \
         agent_session_nohooks_slowdown={bare_r:.3}",
        b.slowdown, t.slowdown, b.cpu_ratio, t.cpu_ratio
    );
    Ok(())
}
