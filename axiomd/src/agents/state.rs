//! Agent state files: one JSON file per agent (`<dir>/<id>.json`), written on every change, read
//! at start-up. The kernel maps say which processes belong to which agent; these files keep the
//! rest (name, command, workspace, profile, owner, start, exit) across an axiomd restart.
use std::path::PathBuf;

use super::Agent;

pub(crate) struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The directory, made root's alone (0700): the files name every user's agents, their
    /// commands and workspaces (a world-readable copy defeated `hidepid`).
    pub(crate) fn open(dir: PathBuf) -> std::io::Result<StateDir> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(StateDir { dir })
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes a file atomically (temporary file, then rename): a crash never leaves half a file.
    pub(crate) fn save(&self, a: &Agent) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{}.json.tmp", a.id));
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let body = serde_json::to_vec_pretty(a).map_err(std::io::Error::other)?;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        std::fs::rename(&tmp, self.path(a.id))
    }

    pub(crate) fn remove(&self, id: u64) {
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Every readable state file; an unreadable one is reported and skipped.
    pub(crate) fn load_all(&self) -> Vec<Agent> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Agent>(&b).map_err(|e| e.to_string()))
            {
                Ok(a) => out.push(a),
                Err(e) => tracing::warn!(file = %p.display(), "skipping agent state: {e}"),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{ExitStatus, Source};

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("axiom-state-{}", std::process::id()));
        let s = StateDir::open(dir.clone()).expect("open");
        let mut a = Agent::new(
            7,
            1000,
            Source::Cgroup {
                path: "/sys/fs/cgroup/axiom/agent-7".into(),
                ids: vec![42],
            },
            1234,
        );
        a.name = Some("claude".into());
        a.command = vec!["claude".into(), "--help".into()];
        a.exit = Some(ExitStatus {
            code: Some(3),
            signal: None,
        });
        s.save(&a).expect("save");
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &std::path::Path| {
                std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
            };
            assert_eq!(mode(&dir), 0o700, "the directory is root's alone");
            assert_eq!(
                mode(&dir.join("7.json")),
                0o600,
                "a state file is root's alone"
            );
        }
        std::fs::write(dir.join("8.json"), "{ not json").expect("write");
        let back = s.load_all();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].name.as_deref(), Some("claude"));
        assert_eq!(back[0].command, a.command);
        assert_eq!(back[0].exit, a.exit);
        assert_eq!(back[0].leader, 1234);
        s.remove(7);
        assert!(s.load_all().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
