//! Users made for one session: an ordinary user with a real home under /home, as the people
//! who run agents have. Each real-agent session gets its own, so that parallel sessions never
//! share an agent's state (Codex's database, Claude Code's `~/.claude.json`) and what the
//! default profile grants is tried where it applies: the owner's home from the user database,
//! outside the agent's private /tmp.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

/// Name prefix; the creating test process's pid follows, so that a crashed run's users are
/// found and removed by the next one.
const PREFIX: &str = "axs";

/// useradd and userdel lock the user database: one at a time in this process.
static DB: Mutex<()> = Mutex::new(());

/// A user made for a session and its home (`path`), removed with everything it owns on drop.
pub struct SessionUser {
    name: String,
    home: PathBuf,
    uid: u32,
    gid: u32,
}

impl SessionUser {
    /// A new ordinary user (not a system user: uid from the normal range, a login shell, a
    /// home made from /etc/skel).
    pub fn new() -> SessionUser {
        crate::require_root();
        let _g = DB.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale();
        let name = format!(
            "{PREFIX}{}n{}",
            std::process::id(),
            crate::unique("").rsplit('_').next().unwrap_or("0")
        );
        let st = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/bash", &name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}: {st}");
        let u = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{name} was made but is not in the user database"));
        SessionUser {
            name,
            home: u.dir,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn home(&self) -> &Path {
        &self.home
    }
    pub fn uid(&self) -> u32 {
        self.uid
    }
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// The command that runs what follows it as this user, in an ordinary user's environment
    /// (as a login gives it), with `extra_env` (`NAME=value`) added.
    pub fn prefix(&self, extra_env: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "setpriv".into(),
            "--reuid".into(),
            self.uid.to_string(),
            "--regid".into(),
            self.gid.to_string(),
            "--init-groups".into(),
            "--".into(),
            "env".into(),
            "-i".into(),
            format!("HOME={}", self.home.display()),
            format!("USER={}", self.name),
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "TERM=xterm-256color".into(),
            "LANG=C.UTF-8".into(),
        ];
        v.extend(extra_env.iter().map(|s| s.to_string()));
        v
    }
}

impl Default for SessionUser {
    fn default() -> Self {
        SessionUser::new()
    }
}

impl std::ops::Deref for SessionUser {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.home
    }
}

impl AsRef<Path> for SessionUser {
    fn as_ref(&self) -> &Path {
        &self.home
    }
}

impl Drop for SessionUser {
    fn drop(&mut self) {
        // For a look afterwards (`AXIOM_KEEP_SESSIONS=1`): the home stays, its owner's
        // processes go. The next run's stale sweep removes the user.
        if std::env::var_os("AXIOM_KEEP_SESSIONS").is_some() {
            let _ = Command::new("pkill")
                .args(["-KILL", "-u", &self.name])
                .status();
            eprintln!("kept the session's home {}", self.home.display());
            return;
        }
        let _g = DB.lock().unwrap_or_else(|e| e.into_inner());
        remove(&self.name);
    }
}

/// The owner of `home` (a session's home): its uid and gid.
pub fn owner_of(home: &Path) -> (u32, u32) {
    let m = std::fs::metadata(home).unwrap_or_else(|e| panic!("{}: {e}", home.display()));
    (m.uid(), m.gid())
}

fn remove(name: &str) {
    // Whatever the session left running (an agent's helper daemon) goes first.
    let _ = Command::new("pkill").args(["-KILL", "-u", name]).status();
    let _ = Command::new("userdel")
        .args(["--remove", "--force", name])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Session users of test processes that are gone (a crashed or killed run).
fn remove_stale() {
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return;
    };
    for line in passwd.lines() {
        let name = line.split(':').next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('n').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove(name);
        }
    }
}
