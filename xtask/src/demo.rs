//! The README's first command: build, start axiomd (embedded defaults) if it is not running, and
//! run a sample agent under it, printing what the kernel saw, live.
use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use axiom_common::wire::DEFAULT_SOCKET;

use crate::{build, require_root, root, setup::setup, target_dir};

const LOG: &str = "/var/log/axiom/axiomd.log";

fn reachable() -> bool {
    std::os::unix::net::UnixStream::connect(DEFAULT_SOCKET).is_ok()
}

pub fn demo() -> anyhow::Result<()> {
    require_root("the demo (axiomd)")?;
    setup()?;
    build()?;
    let bin = target_dir();
    if reachable() {
        println!("demo: axiomd is already running on {DEFAULT_SOCKET}");
    } else {
        std::fs::create_dir_all(Path::new(LOG).parent().context("log dir")?)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(LOG)?;
        // The default principles from this checkout (an installed axiomd reads /usr/share/axiom).
        let child = Command::new(bin.join("axiomd"))
            .arg("--rules")
            .arg(crate::root().join("config/rules"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting axiomd")?;
        let t0 = Instant::now();
        while !reachable() {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("axiomd did not start; see {LOG}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("demo: started axiomd (pid {}), log {LOG}", child.id());
    }
    println!("demo: running tests/agents/sample-agent.sh under Axiom:\n");
    let mut cmd = Command::new(bin.join("axiomctl"));
    cmd.args(["run", "--watch", "--name", "sample-agent", "--"])
        .arg(root().join("tests/agents/sample-agent.sh"));
    // The agent runs as the user who invoked sudo, never as root.
    if let (Ok(uid), Ok(gid)) = (std::env::var("SUDO_UID"), std::env::var("SUDO_GID"))
        && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
    {
        cmd.uid(uid).gid(gid);
    }
    let st = cmd.status()?;
    println!(
        "\ndemo: the agent exited with {st}. axiomd keeps running: try `{0}/axiomctl status`, \
         `{0}/axiomctl watch <pid>` or `{0}/axiomctl run -- <your agent>`.",
        bin.display()
    );
    Ok(())
}
