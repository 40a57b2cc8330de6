//! Helpers for the end-to-end tests: start the real `axiomd` binary on a private pin directory and
//! socket, make cgroups, spawn real processes, and read the events the daemon publishes.
//!
//! The tests need root (they load BPF programs and create cgroups); `cargo xtask test` runs them.
#![allow(clippy::unwrap_used)]

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use axiom_proto::wire::{Connection, Event, Reply, Request, Status};

pub use axiom_proto::wire::Body;

pub mod browser;
pub mod corpus;
pub mod escapes;
pub mod realagents;
pub mod users;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests load BPF programs and create cgroups: run them as root (cargo xtask test)"
    );
}

/// The directory holding the workspace's built binaries (target/<profile>).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("AXIOM_BIN_DIR") {
        return d.into();
    }
    // target/<profile>/deps/<test binary>, or target/<profile>/xtask
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn axiomd_bin() -> PathBuf {
    bin_dir().join("axiomd")
}

/// A running axiomd with its own pin directory and socket.
pub struct Daemon {
    pub child: Option<Child>,
    pub pin_dir: PathBuf,
    /// Where this daemon makes agent cgroups.
    pub cgroup_root: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// Agent state files.
    pub state_dir: PathBuf,
    args: Vec<String>,
    /// Extra environment for the daemon (NOTIFY_SOCKET, WATCHDOG_USEC, …).
    env: Vec<(String, String)>,
    /// An axiomd started elsewhere (the demo's): left running and untouched on drop.
    attached: bool,
}

impl Daemon {
    pub fn start(name: &str, extra: &[&str]) -> Daemon {
        let mut d = Daemon::new(name, extra, &[]);
        d.spawn();
        d
    }

    /// A daemon's paths and arguments, not started yet (`spawn` starts it).
    pub fn new(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        require_root();
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", unique(name)));
        let socket = std::env::temp_dir().join(format!("{}.sock", unique(name)));
        let log = std::env::temp_dir().join(format!("{}.log", unique(name)));
        let state_dir = std::env::temp_dir().join(format!("{}.state", unique(name)));
        Daemon {
            state_dir,
            child: None,
            cgroup_root: cgroup2_mount().join("axiom-tests").join(unique(name)),
            pin_dir,
            socket,
            log,
            args: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            attached: false,
        }
    }

    /// The axiomd already listening on `socket` (not ours: left as it is on drop).
    pub fn attach(socket: &Path) -> Daemon {
        Daemon {
            child: None,
            pin_dir: PathBuf::new(),
            cgroup_root: PathBuf::new(),
            socket: socket.to_path_buf(),
            log: PathBuf::new(),
            state_dir: PathBuf::new(),
            args: Vec::new(),
            env: Vec::new(),
            attached: true,
        }
    }

    /// Replaces the extra arguments used by the next `spawn`.
    pub fn set_args(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Starts (again) on the same pin directory and socket.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new(axiomd_bin())
            .arg("--config")
            .arg("/dev/null")
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .arg("--state-dir")
            .arg(&self.state_dir)
            // No D-Bus unless a test brings its own bus.
            .args(
                (!self.args.iter().any(|a| a == "--dbus"))
                    .then_some(["--dbus", "off"])
                    .into_iter()
                    .flatten(),
            )
            // A store of its own.
            .args(
                (!self
                    .args
                    .iter()
                    .any(|a| a == "--store" || a == "--store-path"))
                .then(|| {
                    [
                        "--store-path".to_string(),
                        self.state_dir.join("events.duckdb").display().to_string(),
                    ]
                })
                .into_iter()
                .flatten(),
            )
            // The repository's default principles, unless a test brings its own rules.
            .args(
                (!self.args.iter().any(|a| a == "--rules"))
                    .then(|| ["--rules".to_string(), default_rules().display().to_string()])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", axiomd_bin().display()));
        self.child = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("axiomd exited with {st}: {}", self.log_text());
            }
            if self.socket.exists() && self.try_status().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("axiomd did not come up: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket)
    }

    fn try_status(&self) -> Option<Status> {
        let mut c = Client::try_connect(&self.socket)?;
        c.request(&Request::Status).status
    }

    pub fn status(&self) -> Status {
        self.client().request(&Request::Status).status.unwrap()
    }

    pub fn track_cgroup(&self, cg: &Cgroup) -> u64 {
        let r = self.client().request(&Request::TrackCgroup {
            path: cg.path.display().to_string(),
        });
        assert!(r.ok, "track_cgroup: {:?}", r.error);
        r.agent.unwrap()
    }

    /// Starts `script` (`/bin/sh -c`) under `axiomctl run --name NAME --workspace WS`, from WS,
    /// through `prefix` (a command that runs the rest as someone else, `setpriv …`; empty: as
    /// the test); returns the child (the caller waits for it) and its agent, once axiomd has it
    /// (within `within`).
    #[allow(clippy::zombie_processes)]
    pub fn run_script(
        &self,
        (name, ws): (&str, &Path),
        prefix: &[String],
        script: &str,
        within: Duration,
    ) -> (Child, u64) {
        let bin = axiomctl_bin();
        let mut argv: Vec<&std::ffi::OsStr> = prefix.iter().map(|s| s.as_ref()).collect();
        argv.push(bin.as_os_str());
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .arg("--socket")
            .arg(&self.socket)
            .args(["run", "--name", name, "--workspace"])
            .arg(ws)
            .args(["--", "/bin/sh", "-c", script])
            .current_dir(ws)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (child, self.agent_named(name, within))
    }

    /// The id of the agent named `name` (`axiomctl run --name`), once axiomd has it.
    pub fn agent_named(&self, name: &str, within: Duration) -> u64 {
        let t0 = std::time::Instant::now();
        loop {
            let agents = self
                .client()
                .request(&Request::Agents)
                .agents
                .unwrap_or_default();
            if let Some(a) = agents.iter().find(|a| a.name.as_deref() == Some(name)) {
                return a.id;
            }
            assert!(t0.elapsed() < within, "agent {name} did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn track_pid(&self, pid: u32) -> Reply {
        self.client().request(&Request::TrackPid { pid })
    }

    pub fn subscribe(&self, replay: bool) -> Subscription {
        let mut c = self.client();
        let r = c.conn.subscribe(replay, None).unwrap();
        assert!(r.ok, "subscribe: {:?}", r.error);
        Subscription {
            c,
            seen: Vec::new(),
        }
    }

    /// SIGKILL: no clean-up at all, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        c.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.attached {
            return;
        }
        self.kill9();
        let _ = Command::new(axiomd_bin())
            .arg("--config")
            .arg("/dev/null")
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("unpin")
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_dir_all(&self.state_dir);
        if let Ok(rd) = std::fs::read_dir(&self.cgroup_root) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                drop(Cgroup { path: e.path() });
            }
        }
        let _ = std::fs::remove_dir(&self.cgroup_root);
        // The groups axiomd made for limits in cgroup v1 hierarchies (hybrid hosts) mirror the
        // v2 path: empty once the agents are gone.
        if let Ok(rel) = self.cgroup_root.strip_prefix(cgroup2_mount()) {
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            for l in info.lines() {
                let Some((pre, post)) = l.split_once(" - ") else {
                    continue;
                };
                if !post.starts_with("cgroup ") {
                    continue;
                }
                let Some(m) = pre.split_whitespace().nth(4) else {
                    continue;
                };
                let dir = Path::new(m).join(rel);
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    for e in rd.flatten().filter(|e| e.path().is_dir()) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

/// The checkout being tested. `cargo run`/`cargo test` name the package's directory (`tests/` or
/// `xtask/`, both one below the root) at run time; the path baked in at compile time is only the
/// fallback, since two checkouts sharing one target directory (CI's clone and a developer's) may
/// run a binary the other one built.
pub fn repo_root() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// The repository's default rule directory (`config/rules`).
pub fn default_rules() -> PathBuf {
    repo_root().join("config/rules")
}

pub fn axiomctl_bin() -> PathBuf {
    bin_dir().join("axiomctl")
}

/// Where tests keep what they made for people to look at (a screen of `axiomctl top`), beside
/// the binaries they ran: `axiom-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let d = bin_dir().join("axiom-artifacts");
    let _ = std::fs::create_dir_all(&d);
    d
}

/// A connection to the control socket that panics on errors (tests only).
pub struct Client {
    pub conn: Connection,
}

impl Client {
    pub fn try_connect(path: &Path) -> Option<Client> {
        let conn = Connection::connect(path).ok()?;
        conn.set_timeout(Some(Duration::from_secs(10))).ok()?;
        Some(Client { conn })
    }

    pub fn connect(path: &Path) -> Client {
        Client::try_connect(path).unwrap_or_else(|| panic!("connect {}", path.display()))
    }

    pub fn request(&mut self, req: &Request) -> Reply {
        self.conn.request(req).unwrap()
    }
}

/// A live event stream; everything read is kept in `seen`.
pub struct Subscription {
    c: Client,
    pub seen: Vec<Event>,
}

impl Subscription {
    /// Reads events until `pred` matches one (returned) or `timeout` passes (panics, listing
    /// what was seen).
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            let left = timeout
                .saturating_sub(t0.elapsed())
                .max(Duration::from_millis(1));
            self.c.conn.set_timeout(Some(left)).unwrap();
            let Some(ev) = self.c.conn.next_event().unwrap() else {
                continue;
            };
            let hit = pred(&ev);
            self.seen.push(ev.clone());
            if hit {
                return ev;
            }
        }
        panic!(
            "timed out waiting for {what}; saw {} events: {:#?}",
            self.seen.len(),
            tail(&self.seen)
        );
    }

    /// Returns whatever arrives during `d` (without keeping it in `seen`).
    pub fn next_for(&mut self, d: Duration) -> Vec<Event> {
        let mut out = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < d {
            let left = d.saturating_sub(t0.elapsed()).max(Duration::from_millis(1));
            self.c.conn.set_timeout(Some(left)).unwrap();
            if let Some(ev) = self.c.conn.next_event().unwrap() {
                out.push(ev);
            }
        }
        out
    }

    /// Reads whatever arrives during `d` (kept in `seen`).
    pub fn drain_for(&mut self, d: Duration) {
        let got = self.next_for(d);
        self.seen.extend(got);
    }
}

fn tail(v: &[Event]) -> &[Event] {
    &v[v.len().saturating_sub(20)..]
}

/// A cgroup v2 directory made for one test, removed (after killing what is left) on drop.
pub struct Cgroup {
    pub path: PathBuf,
}

pub fn cgroup2_mount() -> PathBuf {
    axiom_proto::host::cgroup2_mount().expect("no cgroup2 mount")
}

impl Cgroup {
    pub fn new(name: &str) -> Cgroup {
        let path = cgroup2_mount().join("axiom-tests").join(unique(name));
        std::fs::create_dir_all(&path).unwrap();
        Cgroup { path }
    }

    /// A command that moves itself into this cgroup before exec.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let procs = self.path.join("cgroup.procs");
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        cmd
    }

    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.path).unwrap().ino()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), b"1");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs `sh -c script` to completion in `cg`; returns its pid and exit status.
pub fn run_in(cg: &Cgroup, script: &str) -> (u32, std::process::ExitStatus) {
    let mut c = cg
        .command("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = c.id();
    (pid, c.wait().unwrap())
}

pub fn output_text(e: &Event) -> Option<&str> {
    match &e.body {
        Body::Output { text, .. } => Some(text),
        _ => None,
    }
}

/// A private system-style D-Bus daemon that enforces the project's own policy file
/// (`systemd/dbus/`), with the default deny rules of a system bus.
pub struct TestBus {
    child: Child,
    dir: PathBuf,
    pub address: String,
}

impl TestBus {
    pub fn start(name: &str) -> TestBus {
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        // Unprivileged test clients must reach the socket.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let sock = dir.join("bus");
        let policy = repo_root().join("systemd/dbus");
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <includedir>{policy}</includedir>
</busconfig>
"#,
                sock = sock.display(),
                policy = policy.display()
            ),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .spawn()
            .expect("dbus-daemon (cargo xtask setup installs it)");
        let t0 = Instant::now();
        while !sock.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "dbus-daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        TestBus {
            child,
            dir,
            address: format!("unix:path={}", sock.display()),
        }
    }

    /// A bus and a daemon on it, once the daemon owns its name there.
    pub fn with_daemon(name: &str) -> (TestBus, Daemon) {
        const DEST: &str = "org.axiom.Axiom1";
        let bus = TestBus::start(name);
        let d = Daemon::start(name, &["--dbus", &bus.address]);
        let t0 = Instant::now();
        loop {
            let o = Command::new("busctl")
                .arg(format!("--address={}", bus.address))
                .args(["status", DEST])
                .output()
                .expect("busctl");
            if o.status.success() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{DEST} never appeared on the bus: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (bus, d)
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, what: &str) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to a server and wait for it.
fn end_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = c.wait();
    }
}

/// A real redis-server on loopback, persisting to an append-only file in its own directory, so
/// a stop and start keeps its data as a production Redis would.
pub struct Redis {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub fn start(name: &str) -> Redis {
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            port: free_port(),
            dir,
            child: None,
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data.
    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--dir", &self.dir.display().to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (cargo xtask setup installs it)");
        self.child = Some(child);
        wait_port(self.port, "redis-server");
    }

    /// A clean shutdown (SIGTERM: the append-only file is flushed).
    pub fn stop(&mut self) {
        end_child(&mut self.child);
    }

    /// One redis-cli command's output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real S3-compatible server (s3s-fs: a directory served over the S3 API, with signed
/// requests checked against its one key pair), with one bucket.
pub struct S3 {
    pub port: u16,
    pub dir: PathBuf,
    pub bucket: String,
    child: Option<Child>,
}

pub const S3_KEY: &str = "AXIOMTESTKEY";
pub const S3_SECRET: &str = "axiom-test-secret-key";

impl S3 {
    pub fn start(name: &str) -> S3 {
        let dir = std::env::temp_dir().join(unique(name));
        let bucket = "axiom-cold".to_string();
        std::fs::create_dir_all(dir.join(&bucket)).unwrap();
        let mut s = S3 {
            port: free_port(),
            dir,
            bucket,
            child: None,
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let child = Command::new("s3s-fs")
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs (cargo xtask setup installs it)");
        self.child = Some(child);
        wait_port(self.port, "s3s-fs");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// axiomd settings that put the cold tier in this bucket.
    pub fn settings(&self) -> Vec<String> {
        [
            format!("store.cold.url=s3://{}/axiom", self.bucket),
            format!(
                "store.cold.options.aws_endpoint=http://127.0.0.1:{}",
                self.port
            ),
            "store.cold.options.aws_region=us-east-1".into(),
            // Quoted: the options are strings.
            "store.cold.options.aws_allow_http=\"true\"".into(),
            format!("store.cold.options.aws_access_key_id={S3_KEY}"),
            format!("store.cold.options.aws_secret_access_key={S3_SECRET}"),
        ]
        .into_iter()
        .flat_map(|s| ["--set".to_string(), s])
        .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The tests' own Python with pyarrow (cargo xtask setup makes it).
pub fn python() -> PathBuf {
    PathBuf::from("/var/cache/axiom/venv/bin/python")
}

/// A `query` request for one read-only SQL statement.
pub fn sql_request(sql: &str, limit: usize) -> Request {
    Request::Query {
        events: axiom_proto::wire::EventQuery {
            limit,
            ..Default::default()
        },
        sql: Some(sql.into()),
    }
}

/// A `query` request for an agent's latest `limit` stored events.
pub fn latest_request(agent: u64, limit: usize) -> Request {
    Request::Query {
        events: axiom_proto::wire::EventQuery {
            agent: Some(agent),
            limit,
            ..Default::default()
        },
        sql: None,
    }
}

/// How a test WebAssembly module is built from its C source in `tests/wasm/`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A rule plugin: no libc, no imports; exports `axiom_alloc` and `axiom_check`.
    Plugin,
    /// A WASI program (wasi-libc), with `_start`.
    Wasi,
}

/// Compiles `tests/wasm/<name>.c` with Debian's clang (wasm32) into `out/<name>.wasm`.
pub fn build_wasm(name: &str, kind: WasmKind, out: &Path) -> PathBuf {
    let src = repo_root().join("tests/wasm").join(format!("{name}.c"));
    let dst = out.join(format!("{name}.wasm"));
    let mut c = Command::new("clang-14");
    match kind {
        WasmKind::Plugin => c.args([
            "--target=wasm32",
            "-nostdlib",
            "-Wl,--no-entry",
            "-Wl,--export=axiom_alloc",
            "-Wl,--export=axiom_check",
        ]),
        WasmKind::Wasi => c.args(["--target=wasm32-unknown-wasi", "--sysroot=/usr"]),
    };
    let o = c
        .arg("-O2")
        .arg("-o")
        .arg(&dst)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("clang-14 (cargo xtask setup installs it): {e}"));
    assert!(
        o.status.success(),
        "building {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    dst
}

/// A real OTLP receiver that is not ours: rotel (a Rust collector, from PyPI), listening for
/// gRPC and HTTP on loopback and writing what it receives (traces and metrics, in detail) to
/// its log.
pub struct Rotel {
    pub grpc_port: u16,
    pub http_port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Rotel {
    /// The receiver's binary, in the tests' Python environment (`cargo xtask setup`).
    pub fn binary() -> PathBuf {
        let lib = Path::new("/var/cache/axiom/venv/lib");
        std::fs::read_dir(lib)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("rotel-agent is not installed below {}", lib.display()))
    }

    pub fn start(name: &str) -> Rotel {
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        // A port picked free can be taken again before rotel binds it (other tests connect out
        // all the time): a rotel that exits at start is tried again on other ports.
        for _ in 0..3 {
            let (grpc_port, http_port) = (free_port(), free_port());
            let log = std::fs::File::create(dir.join("received.log")).unwrap();
            let mut child = Command::new(Rotel::binary())
                .arg("start")
                .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
                .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
                .args(["--exporter", "blackhole"])
                .args(["--debug-log", "traces", "--debug-log", "metrics"])
                .args(["--debug-log-verbosity", "detailed"])
                // Files of its own: two receivers run side by side.
                .arg("--log-file")
                .arg(dir.join("agent.log"))
                .arg("--pid-file")
                .arg(dir.join("rotel.pid"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("rotel-agent");
            let t0 = Instant::now();
            let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            while !(up(grpc_port) && up(http_port)) {
                if let Ok(Some(st)) = child.try_wait() {
                    eprintln!(
                        "rotel exited at start ({st}): {}",
                        std::fs::read_to_string(dir.join("received.log")).unwrap_or_default()
                    );
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "rotel did not listen on {grpc_port} and {http_port}: {}",
                    std::fs::read_to_string(dir.join("received.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                return Rotel {
                    grpc_port,
                    http_port,
                    dir,
                    child: Some(child),
                };
            }
        }
        panic!("rotel did not start in three tries");
    }

    /// Everything it has logged of what it received.
    pub fn received(&self) -> String {
        let mut s = std::fs::read_to_string(self.dir.join("received.log")).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default());
        s
    }

    /// Waits until what it received contains every one of `needles`.
    pub fn wait_for(&self, what: &str, needles: &[&str], within: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let got = self.received();
            if needles.iter().all(|n| got.contains(n)) {
                return got;
            }
            if t0.elapsed() > within {
                let missing: Vec<&&str> = needles.iter().filter(|n| !got.contains(**n)).collect();
                let mut names: Vec<&str> = got
                    .lines()
                    .filter(|l| l.contains("Name") || l.contains("name:"))
                    .map(str::trim)
                    .collect();
                names.sort();
                names.dedup();
                panic!(
                    "rotel did not receive {what}: missing {missing:?}; names it received:\n{}",
                    names.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        end_child(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
