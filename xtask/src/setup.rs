//! Idempotent machine setup: each step checks before it installs, so a second run is quick.
use std::process::{Command, Stdio};

use anyhow::Context as _;

use crate::run;

/// Debian packages the tests and benchmarks use.
/// (dbus-daemon, dbus-bin, libglib2.0-bin and systemd: the private test bus and three D-Bus
/// clients that are not ours — dbus-monitor, gdbus, busctl; util-linux: setpriv.)
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
];
const BPF_LINKER: &str = "0.10.4";

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

    // The admin group, as systemd/axiom.sysusers makes it on an installed system.
    if quiet_ok(Command::new("getent").args(["group", "axiom"])) {
        println!("setup: group axiom present");
    } else {
        run(Command::new("groupadd").args(["--system", "axiom"]))?;
    }
    Ok(())
}
