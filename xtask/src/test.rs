//! The full test run: lint, then every unit and end-to-end test, then one summary line.
use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
};

use anyhow::bail;

use crate::{PROFILE_ARG, build, cargo, require_root, run, setup::setup, target_dir};

/// The kernel's record layouts (`axiom-common`, which the eBPF programs build `no_std`) and a
/// rule-file check (`axiom-rules` without its `plugins` feature) must not pull in wasmtime: the
/// dependency trees say so, and the plugin-less rules crate is linted and its tests run.
fn without_wasmtime(lint: bool) -> anyhow::Result<()> {
    for (pkg, features) in [
        ("axiom-common", &[][..]),
        ("axiom-rules", &["--no-default-features"][..]),
    ] {
        let out = cargo()
            .args(["tree", "-e", "normal", "--prefix", "none", "-p", pkg])
            .args(features)
            .output()?;
        if !out.status.success() {
            bail!(
                "cargo tree -p {pkg} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        if let Some(l) = tree.lines().find(|l| l.starts_with("wasmtime")) {
            bail!("{pkg} {features:?} depends on {l}: it must build without wasmtime");
        }
    }
    let plugin_less = ["-p", "axiom-rules", "--no-default-features"];
    if lint {
        run(cargo()
            .args(["clippy", PROFILE_ARG])
            .args(plugin_less)
            .args(["--all-targets", "--", "-D", "warnings"]))?;
    }
    run(cargo().args(["test", PROFILE_ARG]).args(plugin_less))
}

pub fn test(lint: bool, extra: &[String]) -> anyhow::Result<()> {
    require_root("the test suite")?;
    setup()?;
    if lint {
        run(cargo().args(["fmt", "--all", "--", "--check"]))?;
        run(cargo().args([
            "clippy",
            PROFILE_ARG,
            "--workspace",
            "--exclude",
            "axiom-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    without_wasmtime(lint)?;
    build()?;
    crate::units::check()?;
    // The package the packaging test installs into an empty root.
    let deb = crate::package::package()?;
    let mut child = cargo()
        .args([
            "test",
            PROFILE_ARG,
            "--workspace",
            "--exclude",
            "axiom-ebpf",
            "--no-fail-fast",
        ])
        .args(extra)
        .env("AXIOM_BIN_DIR", target_dir())
        .env("AXIOM_DEB", &deb)
        .stdout(Stdio::piped())
        .spawn()?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            // "test result: ok. 8 passed; 0 failed; …"
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(';') {
                    let words: Vec<&str> = part.split_whitespace().collect();
                    match words.as_slice() {
                        [.., n, "passed"] => passed += n.parse::<u64>().unwrap_or(0),
                        [n, "failed"] => failed += n.parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
    }
    let st = child.wait()?;
    println!("{passed} passed, {failed} failed");
    if !st.success() || failed > 0 {
        bail!("tests failed");
    }
    Ok(())
}
