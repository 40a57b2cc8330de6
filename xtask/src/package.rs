//! `cargo xtask package`: a Debian package of what `build` made — binaries, the unit, tmpfiles
//! and sysusers entries, the D-Bus policy and activation file, the default configuration (a
//! conffile) and rules, the man page and shell completions, and the maintainer scripts of
//! `packaging/deb/`.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{root, run, target_dir};

/// The package's name, and the architecture Debian calls this machine's.
pub const NAME: &str = "axiom";

fn arch() -> String {
    Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "amd64".into())
}

/// Where `package` writes the .deb.
pub fn deb_path() -> PathBuf {
    target_dir().join(format!(
        "{NAME}_{}_{}.deb",
        env!("CARGO_PKG_VERSION"),
        arch()
    ))
}

/// Copies `from` (relative to the workspace, or absolute) to `stage/to` with `mode`.
fn put(stage: &Path, from: &Path, to: &str, mode: u32) -> anyhow::Result<()> {
    let src = if from.is_absolute() {
        from.to_path_buf()
    } else {
        root().join(from)
    };
    let dst = stage.join(to.trim_start_matches('/'));
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::copy(&src, &dst).with_context(|| format!("{} -> {}", src.display(), dst.display()))?;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes `text` to `stage/to` with `mode`.
fn write(stage: &Path, to: &str, text: &[u8], mode: u32) -> anyhow::Result<()> {
    let dst = stage.join(to.trim_start_matches('/'));
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&dst, text)?;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// What the built axiomctl prints for `args` (its man page, its completions).
fn axiomctl_output(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(target_dir().join("axiomctl"))
        .args(args)
        .output()
        .context("running the built axiomctl")?;
    if !out.status.success() {
        bail!("axiomctl {args:?}: {}", out.status);
    }
    Ok(out.stdout)
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut c = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    c.stdin.take().context("gzip stdin")?.write_all(data)?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip: {}", out.status);
    }
    Ok(out.stdout)
}

pub fn package() -> anyhow::Result<PathBuf> {
    let stage = target_dir().join("deb-stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("DEBIAN"))?;
    let bins = target_dir();
    for b in ["axiomd", "axiomctl"] {
        put(&stage, &bins.join(b), &format!("/usr/bin/{b}"), 0o755)?;
        // Release binaries carry symbols: strip them as Debian does.
        run(Command::new("strip")
            .arg("--strip-unneeded")
            .arg(stage.join("usr/bin").join(b)))?;
    }
    let files: &[(&str, &str, u32)] = &[
        (
            "systemd/axiomd.service",
            "/usr/lib/systemd/system/axiomd.service",
            0o644,
        ),
        (
            "systemd/axiom.tmpfiles",
            "/usr/lib/tmpfiles.d/axiom.conf",
            0o644,
        ),
        (
            "systemd/axiom.sysusers",
            "/usr/lib/sysusers.d/axiom.conf",
            0o644,
        ),
        (
            "systemd/dbus/org.axiom.Axiom1.conf",
            "/usr/share/dbus-1/system.d/org.axiom.Axiom1.conf",
            0o644,
        ),
        (
            "systemd/dbus/org.axiom.Axiom1.service",
            "/usr/share/dbus-1/system-services/org.axiom.Axiom1.service",
            0o644,
        ),
        ("config/axiomd.toml", "/etc/axiom/axiomd.toml", 0o644),
        (
            "config/rules/default.toml",
            "/usr/share/axiom/rules/default.toml",
            0o644,
        ),
        // The shipped agent profiles (compiled into axiomd; installed as their documentation).
        ("config/agents.toml", "/usr/share/axiom/agents.toml", 0o644),
        ("README.md", "/usr/share/doc/axiom/README.md", 0o644),
    ];
    for (from, to, mode) in files {
        put(&stage, Path::new(from), to, *mode)?;
    }
    std::fs::create_dir_all(stage.join("etc/axiom/rules.d"))?;
    write(
        &stage,
        "/usr/share/man/man1/axiomctl.1.gz",
        &gzip(&axiomctl_output(&["manpage"])?)?,
        0o644,
    )?;
    for (shell, to) in [
        ("bash", "/usr/share/bash-completion/completions/axiomctl"),
        ("zsh", "/usr/share/zsh/vendor-completions/_axiomctl"),
        ("fish", "/usr/share/fish/vendor_completions.d/axiomctl.fish"),
    ] {
        write(
            &stage,
            to,
            &axiomctl_output(&["completions", shell])?,
            0o644,
        )?;
    }
    write(
        &stage,
        "/usr/share/doc/axiom/copyright",
        b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: axiom\nLicense: Apache-2.0\n",
        0o644,
    )?;
    // Every directory 0755, whatever the umask made them.
    for e in walk(&stage)? {
        if e.is_dir() {
            std::fs::set_permissions(&e, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let size_kib = walk(&stage)?
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len().div_ceil(1024))
        .sum::<u64>();
    let control = format!(
        "Package: {NAME}\nVersion: {}\nArchitecture: {}\nMaintainer: Axiom developers <axiom@localhost>\nInstalled-Size: {size_kib}\nDepends: libc6 (>= 2.34), libgcc-s1, libstdc++6\nRecommends: dbus, systemd\nSection: admin\nPriority: optional\nDescription: watches and confines AI coding agents from the kernel\n axiomd keeps eBPF programs pinned, tracks each agent as a cgroup and process\n tree, matches rules in the kernel and in userspace, intervenes, confines agents\n with Landlock, cgroup limits and cgroup-BPF network rules, and stores every\n event. axiomctl is its command-line client.\n",
        env!("CARGO_PKG_VERSION"),
        arch()
    );
    write(&stage, "/DEBIAN/control", control.as_bytes(), 0o644)?;
    write(
        &stage,
        "/DEBIAN/conffiles",
        b"/etc/axiom/axiomd.toml\n",
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        put(
            &stage,
            &Path::new("packaging/deb").join(script),
            &format!("/DEBIAN/{script}"),
            0o755,
        )?;
    }
    let deb = deb_path();
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    println!("package: {}", deb.display());
    Ok(deb)
}

/// Every path below `dir` (depth first).
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    Ok(out)
}
