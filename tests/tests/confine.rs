//! Confinement: agents started with `axiomctl run --profile …` try to escape and are contained,
//! while real work in the workspace still succeeds. Real axiomd, real axiomctl, real processes
//! running as an unprivileged user (nobody), real Landlock and cgroup limits of this kernel.
use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use axiom_proto::wire::Body;
use axiom_tests::*;

const NOBODY: u32 = 65534;

/// A directory tree owned by nobody: `ws` (the workspace, with `.git/hooks`) and `outside`
/// (writable by nobody too, so only the confinement can keep the agent out of it).
struct Site {
    base: PathBuf,
    ws: PathBuf,
    outside: PathBuf,
}

impl Site {
    fn new(name: &str) -> Site {
        // Not below /tmp: workspace-write may write there.
        let base = Path::new("/var/cache/axiom-tests").join(unique(name));
        let ws = base.join("ws");
        let outside = base.join("outside");
        std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim.txt"), "original\n").unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let own = |p: &Path| std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
        for p in [
            &ws,
            &ws.join(".git"),
            &ws.join(".git/hooks"),
            &outside,
            &outside.join("victim.txt"),
        ] {
            own(p);
        }
        Site { base, ws, outside }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// `axiomctl run` of a shell script as nobody in `ws`.
fn run(d: &Daemon, profile: Option<&str>, ws: &Path, script: &str) -> Output {
    let mut c = Command::new(axiomctl_bin());
    c.arg("--socket").arg(&d.socket).arg("run");
    if let Some(p) = profile {
        c.args(["--profile", p]);
    }
    c.arg("--workspace")
        .arg(ws)
        .args(["--", "/bin/sh", "-c", script])
        .current_dir(ws)
        .env("OUT", ws.parent().unwrap().join("outside"))
        .env("TMPDIR", "/tmp")
        .uid(NOBODY)
        .gid(NOBODY);
    c.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).replace('\r', ""),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Each escape is tried in a subshell: `CONTAINED name` or `ESCAPED name`.
const ESCAPES: &str = r#"
try() { name=$1; shift; if ( "$@" ) >/dev/null 2>&1; then echo "ESCAPED $name"; else echo "CONTAINED $name"; fi; }
try write-outside sh -c 'echo x > "$OUT/escape.txt"'
try append-outside sh -c 'echo x >> "$OUT/victim.txt"'
ln -s "$OUT" link
try symlink sh -c 'echo x > link/via-symlink.txt'
try hard-link ln "$OUT/victim.txt" hardlink.txt
try rename-in mv "$OUT/victim.txt" stolen.txt
try rename-out mv inside.txt "$OUT/moved.txt"
try proc-root sh -c 'echo x > "/proc/self/root$OUT/via-proc.txt"'
try protected-write sh -c 'echo x > .git/hooks/pre-commit'
try protected-rename mv .git/hooks .git/hooks-moved
try protected-unlink-dir rm -rf .git/hooks
try chmod-outside chmod 600 "$OUT/victim.txt"
try utime-outside touch -d 2000-01-01 "$OUT/victim.txt"
try xattr-outside python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.axiom", b"1")' "$OUT/victim.txt"
try git-swap mv .git .git-orig
echo shm > /dev/shm/axiom-escape-confine 2>/dev/null
echo DONE
"#;

/// A small real project: a C library, a test program, a Makefile; built and tested in the
/// workspace (the compiler's temporary files go to /tmp).
const PROJECT: &str = r#"
mkdir -p src && cat > src/add.c <<'EOF'
int add(int a, int b) { return a + b; }
EOF
cat > src/test.c <<'EOF'
#include <stdio.h>
int add(int, int);
int main(void) { if (add(2, 3) != 5) { puts("FAIL"); return 1; } puts("ALL TESTS PASSED"); return 0; }
EOF
printf 'build/test: src/add.c src/test.c\n\tmkdir -p build\n\tcc -O2 -o $@ $^\ntest: build/test\n\t./build/test\n' > Makefile
make -s test
"#;

#[test]
fn workspace_write_contains_every_escape_and_a_real_build_still_works() {
    let d = Daemon::start("confine_ww", &[]);
    let site = Site::new("confine_ww");
    let mut sub = d.subscribe(false);
    let script = format!("echo inside > inside.txt\n{ESCAPES}\n{PROJECT}");
    let o = run(&d, None, &site.ws, &script);
    let (out, err) = text(&o);
    assert!(
        err.contains("profile workspace-write (Landlock ABI"),
        "stderr: {err}"
    );
    assert!(out.contains("DONE"), "stdout: {out}\nstderr: {err}");
    let escaped: Vec<&str> = out.lines().filter(|l| l.starts_with("ESCAPED")).collect();
    assert!(
        escaped.is_empty(),
        "escapes that worked: {escaped:?}\n{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("CONTAINED")).count(),
        14,
        "{out}"
    );
    assert!(
        out.contains("ALL TESTS PASSED"),
        "the build failed: {out}\n{err}"
    );
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    // On disk: the workspace changed, nothing outside it, the protected directory intact.
    assert_eq!(
        std::fs::read_to_string(site.ws.join("inside.txt")).unwrap(),
        "inside\n"
    );
    assert!(site.ws.join("build/test").exists());
    assert_eq!(
        std::fs::read_to_string(site.outside.join("victim.txt")).unwrap(),
        "original\n"
    );
    for f in ["escape.txt", "via-symlink.txt", "via-proc.txt", "moved.txt"] {
        assert!(!site.outside.join(f).exists(), "{f} was written outside");
    }
    // (A copy of the victim in the workspace is a read, which workspace-write allows; the
    // victim itself stayed, checked above.)
    // What Landlock does not cover, the agent's read-only view of the filesystem refused.
    let meta = std::fs::metadata(site.outside.join("victim.txt")).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(meta.mode() & 0o777, 0o644, "chmod outside the workspace");
    assert!(
        meta.mtime() > 946_684_800 + 86_400,
        "utimes outside the workspace"
    );
    assert!(
        !Command::new("getfattr")
            .args(["-n", "user.axiom"])
            .arg(site.outside.join("victim.txt"))
            .output()
            .is_ok_and(|o| o.status.success()),
        "an xattr was set outside the workspace"
    );
    assert!(site.ws.join(".git/hooks").is_dir() && !site.ws.join(".git-orig").exists());
    assert!(
        !Path::new("/dev/shm/axiom-escape-confine").exists(),
        "the agent wrote the host's /dev/shm"
    );
    assert!(!site.ws.join(".git/hooks/pre-commit").exists());
    assert!(site.ws.join(".git/hooks").is_dir());
    // Each refusal was reported with its path, and what refused it.
    let denied = |what: &'static str, path: &'static str, by: &'static str| {
        move |e: &axiom_proto::wire::Event| {
            matches!(&e.body, Body::Denied { op, target, by: b, .. }
                if op == what && target.ends_with(path) && b.contains(by))
        }
    };
    let t = Duration::from_secs(10);
    sub.wait_for(
        "the write outside",
        t,
        denied("open", "/outside/escape.txt", "read-only"),
    );
    sub.wait_for(
        "the protected write",
        t,
        denied("open", ".git/hooks/pre-commit", "read-only"),
    );
    sub.wait_for(
        "the hard link",
        t,
        denied("link", "hardlink.txt", "landlock"),
    );
}

#[test]
fn read_only_refuses_writes_and_every_tcp_connect() {
    let d = Daemon::start("confine_ro", &[]);
    let site = Site::new("confine_ro");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let script = format!(
        "if echo x > new.txt 2>/dev/null; then echo WROTE; else echo NO-WRITE; fi\n\
         cat /etc/hostname >/dev/null && echo READ-OK\n\
         if python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)' 2>/dev/null; \
         then echo CONNECTED; else echo NO-CONNECT; fi"
    );
    let o = run(&d, Some("read-only"), &site.ws, &script);
    let (out, err) = text(&o);
    assert!(err.contains("profile read-only"), "{err}");
    assert!(
        out.contains("NO-WRITE") && !out.contains("WROTE"),
        "{out}\n{err}"
    );
    assert!(out.contains("READ-OK"), "reading must still work: {out}");
    assert!(out.contains("NO-CONNECT"), "{out}\n{err}");
    assert!(
        listener.accept().is_err(),
        "a connection reached the listener"
    );
    assert!(!site.ws.join("new.txt").exists());
}

/// Untracked is not unconfined: an agent its owner (here root) untracks keeps its connect
/// policy, bound to the cgroup axiomd made for it, as it keeps its Landlock rules. UDP, which
/// Landlock does not cover: only the cgroup program stands between the agent and the listener.
#[test]
fn an_untracked_agent_keeps_its_connect_policy() {
    let d = Daemon::start("confine_untrack_net", &[]);
    let site = Site::new("confine_untrack_net");
    let listener = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let script = format!(
        "while [ ! -e go ]; do sleep 0.05; done\n\
         if python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"x\", (\"127.0.0.1\", {port}))' 2>/dev/null; \
         then echo SENT; else echo NOT-SENT; fi"
    );
    let ws = site.ws.clone();
    let sock = d.socket.clone();
    let agent = std::thread::spawn(move || {
        let mut c = Command::new(axiomctl_bin());
        c.arg("--socket")
            .arg(&sock)
            .args(["run", "--profile", "read-only", "--name", "untrack-net"])
            .arg("--workspace")
            .arg(&ws)
            .args(["--", "/bin/sh", "-c", &script])
            .current_dir(&ws)
            .uid(NOBODY)
            .gid(NOBODY);
        c.output().unwrap()
    });
    let t0 = std::time::Instant::now();
    let id = loop {
        let agents = d
            .client()
            .request(&axiom_proto::wire::Request::Agents)
            .agents
            .unwrap_or_default();
        if let Some(a) = agents
            .iter()
            .find(|a| a.name.as_deref() == Some("untrack-net"))
        {
            break a.id;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the agent never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let r = d
        .client()
        .request(&axiom_proto::wire::Request::Untrack { agent: id });
    assert!(r.ok, "{r:?}");
    std::fs::write(site.ws.join("go"), "").unwrap();
    let (out, err) = text(&agent.join().unwrap());
    assert!(out.contains("NOT-SENT"), "{out}\n{err}");
    let mut buf = [0u8; 16];
    assert!(
        listener.recv(&mut buf).is_err(),
        "a datagram reached the listener"
    );
}

#[test]
fn limits_stop_a_fork_bomb_and_a_memory_bomb_and_say_so() {
    let d = Daemon::start(
        "confine_limits",
        &[
            "--set",
            "confine.profiles.workspace-write.pids=40",
            "--set",
            "confine.profiles.workspace-write.memory_mib=64",
        ],
    );
    let site = Site::new("confine_limits");
    let mut sub = d.subscribe(false);
    // A fork bomb in slow motion: 200 children at once, far beyond 40.
    let bomb = "python3 -c '\nimport os, time\nkids, refused = [], 0\nfor i in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n        refused += 1\n        continue\n    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n    kids.append(pid)\nprint(\"STARTED\", len(kids), \"REFUSED\", refused)\nfor k in kids:\n    os.kill(k, 9)\n'; echo BOMB-DONE";
    let o = run(&d, None, &site.ws, bomb);
    let (out, err) = text(&o);
    assert!(out.contains("BOMB-DONE"), "{out}\n{err}");
    let started: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("STARTED "))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        started <= 40,
        "{started} children ran under pids.max=40: {err}"
    );
    let e = sub.wait_for(
        "a denied fork",
        Duration::from_secs(10),
        |e| matches!(&e.body, Body::Denied { op, count, .. } if op == "fork" && *count > 0),
    );
    let Body::Denied { target, .. } = &e.body else {
        unreachable!()
    };
    assert!(target.starts_with("pids.max=40"), "{target}");

    // A memory bomb: grows until the kernel kills it inside the agent.
    let o = run(
        &d,
        None,
        &site.ws,
        "python3 -c 'b = []\nwhile True: b.append(bytearray(8 << 20))'; echo EXIT $?",
    );
    let (out, err) = text(&o);
    assert!(out.contains("EXIT 137"), "not OOM-killed: {out}\n{err}");
    sub.wait_for(
        "a denied memory allocation",
        Duration::from_secs(10),
        |e| matches!(&e.body, Body::Denied { op, .. } if op == "memory"),
    );
}

#[test]
fn the_connect_allowlist_lets_listed_addresses_through_and_reports_the_rest() {
    let d = Daemon::start(
        "confine_net",
        &[
            "--set",
            r#"confine.profiles.workspace-write.network=["127.0.0.2"]"#,
        ],
    );
    let site = Site::new("confine_net");
    let allowed = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let denied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    denied.set_nonblocking(true).unwrap();
    let (pa, pd) = (
        allowed.local_addr().unwrap().port(),
        denied.local_addr().unwrap().port(),
    );
    let mut sub = d.subscribe(false);
    let probe = |host: &str, port: u16| {
        format!(
            "if python3 -c 'import socket; socket.create_connection((\"{host}\", {port}), 2)' 2>/dev/null; \
             then echo CONNECTED {host}; else echo REFUSED {host}; fi\n"
        )
    };
    let script = probe("127.0.0.2", pa) + &probe("127.0.0.1", pd);
    let o = run(&d, None, &site.ws, &script);
    let (out, err) = text(&o);
    assert!(out.contains("CONNECTED 127.0.0.2"), "{out}\n{err}");
    assert!(out.contains("REFUSED 127.0.0.1"), "{out}\n{err}");
    assert!(
        denied.accept().is_err(),
        "a refused connect reached its listener"
    );
    let want = format!("127.0.0.1:{pd}");
    sub.wait_for("the refused connect", Duration::from_secs(10), |e| {
        matches!(&e.body, Body::Denied { op, target, by, .. }
            if op == "connect" && *target == want && by.contains("allowlist"))
    });
}

/// A path Unix socket leads to its listener with the agent's own rights (the owner's D-Bus
/// session bus, docker.sock, an ssh-agent): under workspace-write only axiomd's own socket
/// answers (hooks use it), the owner's is refused and reported; the full profile reaches it.
#[test]
fn workspace_write_refuses_the_owners_path_sockets_and_still_reaches_axiomd() {
    let d = Daemon::start("confine_unix", &[]);
    let site = Site::new("confine_unix");
    let path = site.outside.join("owner.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let dpath = site.outside.join("owner.dgram");
    let dgram = std::os::unix::net::UnixDatagram::bind(&dpath).unwrap();
    std::fs::set_permissions(&dpath, std::fs::Permissions::from_mode(0o777)).unwrap();
    dgram.set_nonblocking(true).unwrap();
    let mut sub = d.subscribe(false);
    let script = format!(
        "if python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{p}\")' 2>/dev/null; \
         then echo CONNECTED; else echo REFUSED; fi\n\
         if python3 -c 'import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b\"x\", \"{dp}\")' 2>/dev/null; \
         then echo SENT; else echo NOT-SENT; fi\n\
         {axiomctl} --socket {sock} status >/dev/null && echo AXIOMD-ANSWERS",
        p = path.display(),
        dp = dpath.display(),
        axiomctl = axiomctl_bin().display(),
        sock = d.socket.display(),
    );
    let o = run(&d, None, &site.ws, &script);
    let (out, err) = text(&o);
    assert!(out.contains("REFUSED"), "{out}\n{err}");
    assert!(out.contains("NOT-SENT"), "{out}\n{err}");
    assert!(out.contains("AXIOMD-ANSWERS"), "{out}\n{err}");
    assert!(
        listener.accept().is_err(),
        "a refused connect reached the owner's socket"
    );
    assert!(
        dgram.recv(&mut [0u8; 8]).is_err(),
        "a refused datagram reached the owner's socket"
    );
    let want = format!("unix {}", path.display());
    sub.wait_for("the refused connect", Duration::from_secs(10), |e| {
        matches!(&e.body, Body::Denied { op, target, by, .. }
            if op == "connect" && *target == want && by.contains("unix socket"))
    });
    let o = run(&d, Some("full"), &site.ws, &script);
    let (out, err) = text(&o);
    assert!(
        out.contains("CONNECTED") && out.contains("SENT"),
        "{out}\n{err}"
    );
    listener.set_nonblocking(false).unwrap();
    assert!(listener.accept().is_ok());
}

/// `axiomctl run --wasm` of a module as nobody in `ws`, with `home` as its HOME (the compiled
/// module cache goes below it).
fn run_wasm(
    d: &Daemon,
    ws: &Path,
    home: &Path,
    module: &Path,
    flags: &[&str],
    args: &[&str],
) -> Output {
    let mut c = Command::new(axiomctl_bin());
    c.arg("--socket")
        .arg(&d.socket)
        .arg("run")
        .arg("--workspace")
        .arg(ws)
        .arg("--wasm")
        .arg(module)
        .args(flags)
        .arg("--")
        .args(args)
        .current_dir(ws)
        .env("HOME", home)
        .env_remove("XDG_CACHE_HOME")
        .uid(NOBODY)
        .gid(NOBODY);
    c.output().unwrap()
}

#[test]
fn a_wasi_tool_sees_only_its_workspace_and_starts_from_the_cache_the_second_time() {
    let d = Daemon::start("confine_wasi", &[]);
    let site = Site::new("confine_wasi");
    // Its HOME inside the workspace: the profile lets it write there (nobody's own home,
    // /nonexistent, is not writable), so the module cache can be written.
    let home = site.ws.join(".home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let module = build_wasm("escape", WasmKind::Wasi, &site.base);
    let mut sub = d.subscribe(false);
    let o = run_wasm(&d, &site.ws, &home, &module, &[], &["report.txt"]);
    let (out, err) = text(&o);
    // Its own exit code comes back through axiomctl.
    assert_eq!(o.status.code(), Some(3), "{out}\n{err}");
    let contained: Vec<&str> = out.lines().filter(|l| l.starts_with("CONTAINED")).collect();
    assert!(
        !out.contains("ESCAPED"),
        "escapes that worked: {out}\n{err}"
    );
    assert_eq!(contained.len(), 4, "{out}\n{err}");
    assert!(out.contains("CONTAINED read-etc-passwd"), "{out}");
    assert!(out.contains("WROTE report.txt"), "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(site.ws.join("report.txt")).unwrap(),
        "made by a wasm tool\n"
    );
    assert_eq!(
        std::fs::read_to_string(site.outside.join("victim.txt")).unwrap(),
        "original\n"
    );
    // Under the agent's own confinement too: the workspace-write profile was applied.
    assert!(err.contains("profile workspace-write"), "{err}");
    // axiomd tracked it as an agent: the module is its command, and its output was captured.
    let started = sub.wait_for("the wasm agent", Duration::from_secs(10), |e| {
        matches!(&e.body, Body::AgentStarted { command, .. }
            if command.first().is_some_and(|c| c.ends_with("escape.wasm")))
    });
    sub.wait_for("the tool's output", Duration::from_secs(10), |e| {
        e.agent == started.agent && output_text(e).is_some_and(|t| t.contains("WROTE report.txt"))
    });
    // The compiled module was cached for nobody, privately.
    let cache = home.join(".cache/axiom/wasm");
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("{}: {e}", cache.display()))
        .flatten()
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let meta = entries[0].metadata().unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), NOBODY);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let cached_at = meta.modified().unwrap();
    // The second start deserializes it (the entry is not written again).
    let o = run_wasm(&d, &site.ws, &home, &module, &[], &["again.txt"]);
    assert_eq!(o.status.code(), Some(3), "{:?}", text(&o));
    assert!(site.ws.join("again.txt").exists());
    assert_eq!(
        std::fs::metadata(entries[0].path())
            .unwrap()
            .modified()
            .unwrap(),
        cached_at
    );
}

#[test]
fn a_wasi_tool_that_never_ends_is_stopped_at_its_deadline() {
    let d = Daemon::start("confine_wasi_burn", &[]);
    let site = Site::new("confine_wasi_burn");
    let module = build_wasm("burn", WasmKind::Wasi, &site.base);
    let o = run_wasm(
        &d,
        &site.ws,
        &site.ws,
        &module,
        &["--wasm-timeout-ms", "300"],
        &[],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(137), "{out}\n{err}");
    assert!(out.contains("burning"), "{out}");
    // The agent's own terminal says why (its stderr is the pty).
    assert!(out.contains("stopped: deadline"), "{out}\n{err}");
}

/// The default profile, as an ordinary user with a real home runs an agent: the agent kind's
/// own state (`config/agents.toml`, `writable`) is writable where it lives, and made on a first
/// run; the rest of the home stays read-only, the kind's protected settings too, and another
/// kind's state is not granted. `--dry-run` shows the same grant and starts nothing.
#[test]
fn an_agents_own_state_is_writable_where_it_lives_and_nothing_else_in_the_home() {
    let d = Daemon::start("confine_state", &[]);
    let user = axiom_tests::users::SessionUser::new();
    let ws = user.join("project");
    std::fs::create_dir_all(ws.join(".git")).unwrap();
    std::fs::create_dir_all(user.join(".gemini")).unwrap();
    std::fs::write(user.join(".gemini/settings.json"), "{}\n").unwrap();
    realagents::chown_r(&user, user.uid(), user.gid());
    // An agent of the gemini kind (by --agent-kind: a script stands in for the CLI).
    let as_user = |args: &[&str], script: &str| {
        Command::new(axiomctl_bin())
            .arg("--socket")
            .arg(&d.socket)
            .arg("run")
            .args(["--agent-kind", "gemini", "--workspace"])
            .arg(&ws)
            .args(args)
            .args(["--", "/bin/sh", "-c", script])
            .current_dir(&ws)
            .env("HOME", user.home())
            .uid(user.uid())
            .gid(user.gid())
            .output()
            .unwrap()
    };
    let dry = as_user(&["--dry-run"], "touch $HOME/ran");
    let (out, err) = text(&dry);
    assert!(dry.status.success(), "{out}{err}");
    assert!(
        out.contains("its state    ~/.gemini/") && out.contains("profile      workspace-write"),
        "{out}"
    );
    assert!(!user.join("ran").exists(), "a dry run ran the agent");
    let script = r#"
        try() { if (eval "$2") 2>/dev/null; then echo "WROTE $1"; else echo "REFUSED $1"; fi; }
        try state 'mkdir -p $HOME/.gemini/tmp && echo s > $HOME/.gemini/tmp/chat.json && mv $HOME/.gemini/tmp/chat.json $HOME/.gemini/projects.json'
        try settings 'echo x > $HOME/.gemini/settings.json'
        try home 'echo x > $HOME/notes.txt'
        try other-kind 'mkdir -p $HOME/.codex && echo x > $HOME/.codex/config.toml'
        try workspace 'echo x > ./out.txt'
    "#;
    let o = as_user(&[], script);
    let (out, err) = text(&o);
    for want in [
        "WROTE state",
        "REFUSED settings",
        "REFUSED home",
        "REFUSED other-kind",
        "WROTE workspace",
    ] {
        assert!(out.contains(want), "{want}: {out}{err}");
    }
    assert_eq!(
        std::fs::read_to_string(user.join(".gemini/projects.json")).unwrap(),
        "s\n"
    );
    assert_eq!(
        std::fs::read_to_string(user.join(".gemini/settings.json")).unwrap(),
        "{}\n"
    );
    assert!(!user.join("notes.txt").exists() && !user.join(".codex").exists());
}
