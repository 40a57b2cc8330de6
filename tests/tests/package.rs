//! The Debian package (`cargo xtask package`, which `cargo xtask test` runs first and names in
//! `AXIOM_DEB`), installed by dpkg itself into an empty root.
use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::Command,
};

use axiom_tests::*;

#[test]
fn the_deb_installs_into_an_empty_root_with_the_expected_layout() {
    let Some(deb) = std::env::var_os("AXIOM_DEB") else {
        panic!("AXIOM_DEB is not set: run the tests through `cargo xtask test`");
    };
    let root = std::env::temp_dir().join(unique("dpkg_root"));
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    // An empty root has no libc to depend on and no shell to run scripts in: the scripts run
    // here with DPKG_ROOT set, and do nothing to this host.
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
            "-i",
        ])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg -i: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = Command::new("dpkg-query")
        .arg(format!("--root={}", root.display()))
        .args(["-W", "-f=${Status} ${Version}", "axiom"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.starts_with("install ok installed"), "{status}");
    // Each file where an operator expects it, root's, with its mode.
    let expect: &[(&str, u32)] = &[
        ("usr/bin/axiomd", 0o755),
        ("usr/bin/axiomctl", 0o755),
        ("usr/lib/systemd/system/axiomd.service", 0o644),
        ("usr/lib/tmpfiles.d/axiom.conf", 0o644),
        ("usr/lib/sysusers.d/axiom.conf", 0o644),
        ("usr/share/dbus-1/system.d/org.axiom.Axiom1.conf", 0o644),
        (
            "usr/share/dbus-1/system-services/org.axiom.Axiom1.service",
            0o644,
        ),
        ("etc/axiom/axiomd.toml", 0o644),
        ("usr/share/axiom/rules/default.toml", 0o644),
        ("usr/share/axiom/agents.toml", 0o644),
        ("usr/share/man/man1/axiomctl.1.gz", 0o644),
        ("usr/share/bash-completion/completions/axiomctl", 0o644),
        ("usr/share/zsh/vendor-completions/_axiomctl", 0o644),
        ("usr/share/fish/vendor_completions.d/axiomctl.fish", 0o644),
        ("usr/share/doc/axiom/copyright", 0o644),
    ];
    for (path, mode) in expect {
        let m = std::fs::metadata(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(m.permissions().mode() & 0o7777, *mode, "{path}");
        assert_eq!((m.uid(), m.gid()), (0, 0), "{path} is not root's");
    }
    assert!(root.join("etc/axiom/rules.d").is_dir());
    // The configuration is a conffile: an operator's edits survive upgrades.
    let conffiles =
        std::fs::read_to_string(root.join("var/lib/dpkg/info/axiom.conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/axiom/axiomd.toml");
    // The installed binaries run, and the installed config and rules are valid as shipped.
    let v = Command::new(root.join("usr/bin/axiomctl"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("axiomctl "));
    let check = Command::new(root.join("usr/bin/axiomd"))
        .arg("--config")
        .arg(root.join("etc/axiom/axiomd.toml"))
        .arg("--rules")
        .arg(root.join("usr/share/axiom/rules"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The unit points at the installed binary.
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/axiomd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/axiomd ") && unit.contains("Type=notify"));
    // Removing it takes its files back (the conffile stays until purge).
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--log=/dev/null",
            "-r",
            "axiom",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!root.join("usr/bin/axiomd").exists());
    assert!(root.join("etc/axiom/axiomd.toml").exists());
    let _ = std::fs::remove_dir_all(Path::new(&root));
}
