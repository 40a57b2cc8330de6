//! Idempotent machine setup: each step checks before it installs, so a second run is quick.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::run;

/// Debian packages the tests and benchmarks use.
/// (dbus-daemon, dbus-bin, libglib2.0-bin and systemd: the private test bus and three D-Bus
/// clients that are not ours — dbus-monitor, gdbus, busctl; util-linux: setpriv; redis: the hot
/// tier's server and redis-cli; python3-venv: the independent Parquet reader, pyarrow; clang,
/// lld, wasi-libc and the wasm32 compiler runtime: the test plugins and WASI tools, from C;
/// make and gcc: the C build `bench overhead` runs inside an agent; chromium and
/// chromium-driver: the session page in a real browser, over WebDriver.)
const PACKAGES: &[&str] = &[
    "strace",
    "bpftrace",
    "python3",
    "procps",
    "tmux",
    "dbus-daemon",
    "dbus-bin",
    "libglib2.0-bin",
    "systemd",
    "util-linux",
    "redis-server",
    "redis-tools",
    "python3-venv",
    "clang-14",
    "lld-14",
    "wasi-libc",
    "libclang-rt-14-dev-wasm32",
    "make",
    "gcc",
    "chromium",
    "chromium-driver",
];
const BPF_LINKER: &str = "0.10.4";
/// An S3-compatible server for the cold tier's tests (a directory served over the S3 API).
const S3S_FS: &str = "0.14.1";
/// A Python of the tests' own, with pyarrow: reads the cold tier's Parquet independently.
pub const VENV: &str = "/var/cache/axiom/venv";
/// The real agent CLIs (npm, at the versions the tests were written against) and the
/// unprivileged user they run as in the tests: the tests' own definitions.
use axiom_tests::realagents::{AGENT_PACKAGES, AGENT_USER, AGENTS_DIR, AIDER_VENV, AIDER_VERSION};

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

pub fn setup() -> anyhow::Result<()> {
    // rust-src, for -Z build-std=core in the eBPF build.
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]));
    let src = std::path::Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if src.exists() {
        println!("setup: rust-src present");
    } else {
        run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    }

    let v = output(Command::new("bpf-linker").arg("--version"));
    if v.contains(BPF_LINKER) {
        println!("setup: bpf-linker {BPF_LINKER} present");
    } else {
        run(crate::cargo().args(["install", &format!("bpf-linker@{BPF_LINKER}"), "--locked"]))
            .context("installing bpf-linker")?;
    }

    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .contains("install ok installed")
        })
        .collect();
    if missing.is_empty() {
        println!("setup: packages present ({})", PACKAGES.join(" "));
    } else if quiet_ok(Command::new("apt-get").arg("--version")) {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    } else {
        anyhow::bail!("missing packages {missing:?} and no apt-get to install them");
    }

    let v = output(Command::new("s3s-fs").arg("--version"));
    if v.contains(S3S_FS) {
        println!("setup: s3s-fs {S3S_FS} present");
    } else {
        run(crate::cargo()
            .args([
                "install",
                &format!("s3s-fs@{S3S_FS}"),
                "--features",
                "binary",
                "--locked",
            ])
            .args(["--target-dir", "/var/cache/axiom/install-target"]))
        .context("installing s3s-fs")?;
    }

    // pyarrow: reads the cold tier's Parquet; rotel: a real OTLP receiver; prometheus_client:
    // the reference parser of the Prometheus text format; mcp: the official Python MCP SDK, the
    // client that drives `axiomctl mcp`; asciinema: plays `axiomctl export --asciicast`.
    let py = format!("{VENV}/bin/python");
    if quiet_ok(Command::new(&py).args([
        "-c",
        "import pyarrow, rotel, prometheus_client, mcp, asciinema, importlib.metadata as m; assert m.version('mcp') == '2.3.0'",
    ])) {
        println!("setup: pyarrow, rotel, prometheus_client, mcp, asciinema present in {VENV}");
    } else {
        if !Path::new(&py).exists() {
            run(Command::new("python3").args(["-m", "venv", VENV]))?;
        }
        run(Command::new(&py).args([
            "-m",
            "pip",
            "install",
            "-q",
            "pyarrow",
            "rotel==0.0.1a15",
            "prometheus_client",
            "mcp==2.3.0",
            "asciinema==2.4.0",
        ]))
        .context("installing pyarrow, rotel, prometheus_client, mcp, asciinema")?;
    }

    agents()?;

    // The admin group, as systemd/axiom.sysusers makes it on an installed system.
    if quiet_ok(Command::new("getent").args(["group", "axiom"])) {
        println!("setup: group axiom present");
    } else {
        run(Command::new("groupadd").args(["--system", "axiom"]))?;
    }
    Ok(())
}

/// The real agent CLIs at their pinned versions (npm, into AGENTS_DIR), and the user they run as.
fn agents() -> anyhow::Result<()> {
    let installed = |pkg: &str, version: &str| {
        let manifest = Path::new(AGENTS_DIR)
            .join("node_modules")
            .join(pkg)
            .join("package.json");
        std::fs::read_to_string(manifest)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["version"] == version)
    };
    let missing: Vec<String> = AGENT_PACKAGES
        .iter()
        .filter(|(p, v)| !installed(p, v))
        .map(|(p, v)| format!("{p}@{v}"))
        .collect();
    if missing.is_empty() {
        println!("setup: agent CLIs present in {AGENTS_DIR}");
    } else {
        std::fs::create_dir_all(AGENTS_DIR)?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix", AGENTS_DIR])
            .args(&missing))
        .context("installing the agent CLIs from the npm registry")?;
    }
    // aider, from PyPI, in an environment of its own.
    let aider = format!("{AIDER_VENV}/bin/aider");
    let debian_python = std::fs::canonicalize(format!("{AIDER_VENV}/bin/python3"))
        .is_ok_and(|p| p.starts_with("/usr/"));
    if !debian_python && Path::new(AIDER_VENV).exists() {
        std::fs::remove_dir_all(AIDER_VENV)?;
    }
    if output(Command::new(&aider).arg("--version")).contains(AIDER_VERSION) {
        println!("setup: aider {AIDER_VERSION} present in {AIDER_VENV}");
    } else {
        if !Path::new(&format!("{AIDER_VENV}/bin/python")).exists() {
            // Debian's Python: one the agent's user can run (not a root-only pyenv).
            run(Command::new("/usr/bin/python3").args(["-m", "venv", AIDER_VENV]))?;
        }
        run(Command::new(format!("{AIDER_VENV}/bin/python")).args([
            "-m",
            "pip",
            "install",
            "-q",
            &format!("aider-chat=={AIDER_VERSION}"),
        ]))
        .context("installing aider from PyPI")?;
    }
    if quiet_ok(Command::new("id").arg(AGENT_USER)) {
        println!("setup: user {AGENT_USER} present");
    } else {
        run(Command::new("useradd").args([
            "--system",
            "--create-home",
            "--shell",
            "/bin/bash",
            AGENT_USER,
        ]))?;
    }
    Ok(())
}
