//! The systemd unit, checked by systemd's own tools: `systemd-analyze verify` (on a copy that
//! points at the binary just built, since /usr/bin/axiomd is not installed here) must pass with
//! nothing on stderr (unknown keys only warn there), and `systemd-analyze security` scores it.
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{root, target_dir};

pub fn check() -> anyhow::Result<()> {
    let unit = root().join("systemd/axiomd.service");
    let text = std::fs::read_to_string(&unit).with_context(|| unit.display().to_string())?;
    let dir = std::env::temp_dir().join(format!("axiom-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("axiomd.service");
    std::fs::write(
        &copy,
        text.replace(
            "/usr/bin/axiomd",
            &target_dir().join("axiomd").display().to_string(),
        ),
    )?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .context("systemd-analyze (cargo xtask setup installs systemd)")?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !err.trim().is_empty() {
        bail!(
            "systemd-analyze verify {}: {}{err}",
            unit.display(),
            out.status
        );
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&copy)
        .output()?;
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let score = all
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for axiomd.service: ")
                .nth(1)
        })
        .context("no score from systemd-analyze security")?;
    println!(
        "systemd: axiomd.service verifies; security exposure {}",
        score.trim()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
