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

/// Runs `script` in `ws` as the agent user: directly, or under `axiomctl run` (tracked and
/// confined to the workspace) with the agent named `name`. Seconds it took.
fn timed(d: Option<(&Daemon, &str)>, ws: &Path, script: &str) -> anyhow::Result<f64> {
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
    if let Some((d, name)) = d {
        cmd.arg(axiomctl_bin())
            .arg("--socket")
            .arg(&d.socket)
            .args(["run", "--name", name, "--profile", "workspace-write"])
            .arg("--workspace")
            .arg(ws)
            .arg("--");
    }
    cmd.args(["/bin/sh", "-c", script])
        .current_dir(ws)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let out = cmd.output().context("setpriv")?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "`{script}` ({}) failed: {}",
            if d.is_some() { "tracked" } else { "untracked" },
            String::from_utf8_lossy(&out.stderr)
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
            agent: Some(a.id),
            since_ns: None,
            until_ns: None,
            kinds: vec![kind.into()],
            text: None,
            limit: 100_000,
            sql: None,
        });
        let n = r.events.map(|e| e.len()).unwrap_or(0);
        if n > 0 || t0.elapsed() > Duration::from_secs(10) {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One workload, `rounds` times each way in ABBA order; the tracked runs must be seen doing
/// `kind` at least `min_seen` times. (untracked median, tracked median) in seconds.
fn workload(
    d: &Daemon,
    what: &str,
    ws: &Path,
    script: &str,
    rounds: usize,
    kind: &str,
    min_seen: usize,
) -> anyhow::Result<(f64, f64)> {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    // One untimed run each way first: page cache and the compiler's files are warm for both.
    timed(None, ws, script)?;
    timed(Some((d, &unique(&format!("warm-{what}")))), ws, script)?;
    for r in 0..rounds {
        let name = unique(&format!("overhead-{what}"));
        let tracked = |on: &mut Vec<f64>| -> anyhow::Result<()> {
            on.push(timed(Some((d, &name)), ws, script)?);
            let n = seen(d, &name, kind)?;
            if n < min_seen {
                bail!(
                    "bench overhead: axiomd saw {n} {kind} events of {what}, expected {min_seen}+"
                );
            }
            Ok(())
        };
        if r % 2 == 0 {
            off.push(timed(None, ws, script)?);
            tracked(&mut on)?;
        } else {
            tracked(&mut on)?;
            off.push(timed(None, ws, script)?);
        }
        println!(
            "bench overhead: {what} round {}/{rounds}: untracked {:.2} s, tracked {:.2} s",
            r + 1,
            off[r],
            on[r]
        );
    }
    Ok((median(&mut off), median(&mut on)))
}

/// The agent-session workload: Claude Code on the basic scenarios, untracked and tracked.
fn sessions(d: &Daemon, root: &Path, rounds: usize) -> anyhow::Result<Option<(f64, f64)>> {
    let agent = Agent::Claude;
    if !agent.installed() {
        println!(
            "bench overhead: Claude Code is not installed (cargo xtask setup): no agent session"
        );
        return Ok(None);
    }
    let timeout = Duration::from_secs(120);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        for sc in realagents::basic_scenarios() {
            let dir = |mode: &str| root.join(unique(&format!("session-{}-{mode}", sc.name)));
            let untracked = |off: &mut Vec<f64>| {
                off.push(realagents::session_seconds(
                    None,
                    agent,
                    &sc,
                    &dir("off"),
                    &[],
                    timeout,
                ))
            };
            let tracked = |on: &mut Vec<f64>| {
                on.push(realagents::session_seconds(
                    Some(d),
                    agent,
                    &sc,
                    &dir("on"),
                    &[],
                    timeout,
                ))
            };
            if r % 2 == 0 {
                untracked(&mut off);
                tracked(&mut on);
            } else {
                tracked(&mut on);
                untracked(&mut off);
            }
        }
        println!(
            "bench overhead: agent sessions round {}/{rounds} done",
            r + 1
        );
    }
    Ok(Some((median(&mut off), median(&mut on))))
}

pub fn run(rounds: usize, session_rounds: usize) -> anyhow::Result<()> {
    require_root("bench overhead")?;
    setup()?;
    build()?;
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
        let s = sessions(&d, &root, session_rounds)?;
        Ok::<_, anyhow::Error>((b, t, s))
    })();
    drop(d);
    let _ = std::fs::remove_dir_all(&root);
    let ((b_off, b_on), (t_off, t_on), s) = result?;
    let ratio = |off: f64, on: f64| on / off;
    let (build_r, tests_r) = (ratio(b_off, b_on), ratio(t_off, t_on));
    let session_r = s.map(|(off, on)| ratio(off, on)).unwrap_or(f64::NAN);
    println!(
        "bench overhead: build untracked {b_off:.2} s tracked {b_on:.2} s; tests untracked \
         {t_off:.2} s tracked {t_on:.2} s{}",
        s.map(|(off, on)| format!("; agent session untracked {off:.2} s tracked {on:.2} s"))
            .unwrap_or_default()
    );
    let met = |r: f64| if r <= 1.03 { "met" } else { "NOT met" };
    println!(
        "targets: each slowdown <= 1.03 (build {}, tests {}, agent session {})",
        met(build_r),
        met(tests_r),
        met(session_r)
    );
    println!(
        "bench overhead: build_slowdown={build_r:.3} tests_slowdown={tests_r:.3} agent_session_slowdown={session_r:.3}"
    );
    Ok(())
}
