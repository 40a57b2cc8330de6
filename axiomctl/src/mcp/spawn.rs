//! Starting agents for the model. Each one is an `axiomctl run --json` of its own: that process
//! forks the agent held before exec until axiomd has it in its cgroup, applies the profile, and
//! relays the agent's terminal — here into the journal's transcript. A child process rather than
//! a fork from this (multi-threaded) server, where the child could not safely allocate before
//! exec.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};

use super::journal::Journal;

/// How long an agent may take to be tracked and released.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Workspace entries recorded before an agent starts (to tell files it created from files it
/// changed).
const BASELINE_MAX: usize = 200_000;

/// One agent to start (as `spawn`'s arguments give it).
#[derive(Clone, Debug, serde::Deserialize, rmcp::schemars::JsonSchema)]
pub struct Spec {
    /// The program and its arguments, e.g. ["claude", "-p", "fix the tests"] or
    /// ["bash", "-c", "make && make test"].
    pub command: Vec<String>,
    /// The directory the agent works in (absolute, or relative to the server's). Default: the
    /// server's working directory.
    pub workspace: Option<String>,
    /// Confinement profile: read-only, workspace-write (axiomd's default), full, or one
    /// configured in axiomd.toml.
    pub profile: Option<String>,
    /// A name to tell it by.
    pub name: Option<String>,
}

/// An agent started.
#[derive(Serialize, Clone, Debug)]
pub struct Started {
    pub agent: u64,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub workspace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confinement: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_enforced: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The files a workspace held before its agent started.
pub struct Baseline {
    pub root: PathBuf,
    pub existed: HashSet<PathBuf>,
    /// False when the workspace was too large to list whole.
    pub complete: bool,
}

impl Baseline {
    fn take(root: &Path) -> Baseline {
        let mut existed = HashSet::new();
        let mut stack = vec![root.to_path_buf()];
        let mut complete = true;
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                if existed.len() >= BASELINE_MAX {
                    complete = false;
                    break;
                }
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p.clone());
                }
                existed.insert(p);
            }
        }
        Baseline {
            root: root.to_path_buf(),
            existed,
            complete,
        }
    }

    /// Whether `path` existed before the agent started: `None` when it cannot be told.
    pub fn existed(&self, path: &str) -> Option<bool> {
        let p = Path::new(path);
        if !p.starts_with(&self.root) {
            return None;
        }
        if self.existed.contains(p) {
            return Some(true);
        }
        self.complete.then_some(false)
    }
}

pub struct Launcher {
    /// This binary (`axiomctl`).
    exe: PathBuf,
    socket: PathBuf,
    journal: Arc<Journal>,
    baselines: Mutex<HashMap<u64, Arc<Baseline>>>,
    /// The agents started here, in order.
    spawned: Mutex<Vec<u64>>,
}

impl Launcher {
    pub fn new(socket: PathBuf, journal: Arc<Journal>) -> std::io::Result<Launcher> {
        Ok(Launcher {
            exe: std::env::current_exe()?,
            socket,
            journal,
            baselines: Mutex::default(),
            spawned: Mutex::default(),
        })
    }

    pub fn baseline(&self, agent: u64) -> Option<Arc<Baseline>> {
        self.baselines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&agent)
            .cloned()
    }

    pub fn spawned(&self) -> Vec<u64> {
        self.spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Checks what can be checked before starting anything: the command and the workspace.
    pub fn resolve(spec: &Spec) -> Result<PathBuf, String> {
        if spec.command.first().is_none_or(|c| c.is_empty()) {
            return Err("command is empty: give the program and its arguments, e.g. [\"bash\", \"-c\", \"make test\"]".into());
        }
        let ws = match &spec.workspace {
            Some(w) => PathBuf::from(w),
            None => std::env::current_dir().map_err(|e| format!("current directory: {e}"))?,
        };
        let ws =
            std::fs::canonicalize(&ws).map_err(|e| format!("workspace {}: {e}", ws.display()))?;
        if !ws.is_dir() {
            return Err(format!("workspace {} is not a directory", ws.display()));
        }
        Ok(ws)
    }

    /// Starts one agent and waits until axiomd tracks it; the reason when it could not.
    pub async fn spawn(&self, spec: Spec) -> Result<Started, String> {
        let ws = Self::resolve(&spec)?;
        let baseline = {
            let ws = ws.clone();
            tokio::task::spawn_blocking(move || Baseline::take(&ws))
                .await
                .map_err(|e| e.to_string())?
        };
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("--json")
            .arg("--socket")
            .arg(&self.socket)
            .arg("run")
            .arg("--workspace")
            .arg(&ws);
        if let Some(n) = &spec.name {
            cmd.arg("--name").arg(n);
        }
        if let Some(p) = &spec.profile {
            cmd.arg("--profile").arg(p);
        }
        cmd.arg("--")
            .args(&spec.command)
            .current_dir(&ws)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.exe.display()))?;
        let mut stderr = tokio::io::BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
        let mut said = Vec::new();
        let started = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = stderr.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && let Some(s) = v.get("started")
                {
                    return Some(s.clone());
                }
                said.push(line);
            }
            None
        })
        .await;
        let Ok(Some(s)) = started else {
            let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Ok(Ok(st)) => format!("; {st}"),
                _ => {
                    let _ = child.start_kill();
                    "; gave up waiting".to_string()
                }
            };
            let said = said
                .iter()
                .map(|l| l.trim_start_matches("axiomctl: "))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(if said.is_empty() {
                format!("the agent did not start{status}")
            } else {
                format!("{said}{status}")
            });
        };
        let strings = |k: &str| -> Vec<String> {
            s.get(k)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let started = Started {
            agent: s
                .get("agent")
                .and_then(|v| v.as_u64())
                .ok_or("no agent id")?,
            pid: s.get("pid").and_then(|v| v.as_u64()).unwrap_or(0) as u32,
            name: spec.name.clone(),
            workspace: ws.display().to_string(),
            profile: s.get("profile").and_then(|v| v.as_str()).map(String::from),
            confinement: s
                .get("confinement")
                .and_then(|v| v.as_str())
                .map(String::from),
            not_enforced: strings("not_enforced"),
            notes: strings("notes"),
        };
        let agent = started.agent;
        self.baselines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent, Arc::new(baseline));
        self.spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(agent);
        // The terminal, into the transcript; the rest of stderr is not the agent's.
        if let Some(mut out) = child.stdout.take() {
            let journal = self.journal.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = out.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    journal.add_transcript(agent, &buf[..n]);
                }
            });
        }
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        // The agent's stdin stays open (held by the child's relay) for as long as it runs.
        tokio::spawn(async move {
            let _stdin = child.stdin.take();
            let _ = child.wait().await;
        });
        Ok(started)
    }
}
