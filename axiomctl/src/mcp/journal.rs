//! What `axiomctl mcp` has seen axiomd report, kept so a model can read it at its own pace: the
//! recent events (with axiomd's sequence numbers as cursors), and per agent the facts the kernel
//! established — files written, commands and their exit codes, violations, interventions — kept
//! whole even after the events they came from have left the ring.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use axiom_proto::wire::{Body, Event, FileOp};
use serde::Serialize;

/// Events kept for `observe` (all agents together).
const EVENTS_KEPT: usize = 100_000;
/// Terminal output kept per agent (the tail), bytes.
const TRANSCRIPT_KEPT: usize = 1 << 20;
/// Commands kept per agent (the first ones; later ones are counted).
const COMMANDS_KEPT: usize = 10_000;
/// Files kept per agent.
const FILES_KEPT: usize = 10_000;

const O_CREAT: u32 = 0o100;
const O_EXCL: u32 = 0o200;
const O_TRUNC: u32 = 0o1000;

/// One file the agent wrote to or changed, as the kernel reported it.
#[derive(Serialize, Clone, Debug, Default)]
pub struct FileFact {
    /// Operations seen on it: open (with O_CREAT/O_TRUNC), write, creat, mkdir, rename, unlink…
    pub ops: BTreeSet<String>,
    pub writes: u64,
    pub bytes: u64,
    /// An operation that can only create (O_EXCL, mkdir, link, the target of a rename).
    #[serde(skip)]
    pub surely_created: bool,
    /// Last seen removed (unlink, rmdir, the source of a rename).
    #[serde(skip)]
    pub removed: bool,
}

/// One program an agent ran.
#[derive(Serialize, Clone, Debug)]
pub struct Command {
    pub pid: u32,
    pub argv: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    pub time_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl Command {
    /// It ended with a non-zero code or by a signal.
    pub fn failed(&self) -> bool {
        self.exit_code.is_some_and(|x| x != 0) || self.signal.is_some()
    }
}

/// A violation or an intervention, as reported.
#[derive(Serialize, Clone, Debug)]
pub struct Notice {
    pub time_ns: u64,
    #[serde(flatten)]
    pub body: Body,
}

/// What the kernel established about one agent.
#[derive(Default, Debug)]
pub struct Facts {
    pub files: BTreeMap<String, FileFact>,
    pub files_dropped: u64,
    pub commands: Vec<Command>,
    pub commands_dropped: u64,
    pub violations: Vec<Notice>,
    pub interventions: Vec<Notice>,
    pub denied: Vec<Notice>,
    pub connects: BTreeSet<String>,
    /// Bytes written to terminals and pipes (not files).
    pub output_bytes: u64,
    /// That output, the tail of it (for agents whose terminal `mcp` does not hold).
    pub output: String,
    pub exit: Option<(Option<i32>, Option<i32>)>,
    /// When its root process ended, ns since the epoch.
    pub ended_ns: Option<u64>,
}

impl Facts {
    /// How the root process ended: what axiomd's agent record says, else the exit seen here.
    pub fn exit_of(&self, a: &axiom_proto::wire::AgentInfo) -> (Option<i32>, Option<i32>) {
        (
            a.exit_code.or(self.exit.and_then(|e| e.0)),
            a.exit_signal.or(self.exit.and_then(|e| e.1)),
        )
    }

    fn file(&mut self, path: &str) -> Option<&mut FileFact> {
        if !self.files.contains_key(path) && self.files.len() >= FILES_KEPT {
            self.files_dropped += 1;
            return None;
        }
        Some(self.files.entry(path.to_string()).or_default())
    }

    /// `cwd`: the process's working directory as far as known (relative paths are joined to it).
    fn apply(&mut self, ev: &Event, cwd: Option<&str>) {
        let abs = |p: &str| -> String {
            match cwd {
                Some(c) if !p.starts_with('/') && !p.is_empty() => {
                    let rel = p.trim_start_matches("./");
                    format!("{}/{rel}", c.trim_end_matches('/'))
                }
                _ => p.to_string(),
            }
        };
        match &ev.body {
            Body::Exec {
                argv,
                filename,
                cwd,
                ..
            } => {
                if self.commands.len() >= COMMANDS_KEPT {
                    self.commands_dropped += 1;
                    return;
                }
                self.commands.push(Command {
                    pid: ev.tgid,
                    argv: if argv.is_empty() {
                        vec![filename.clone()]
                    } else {
                        argv.clone()
                    },
                    cwd: cwd.clone(),
                    time_ns: ev.time_ns,
                    exit_code: None,
                    signal: None,
                });
            }
            Body::Exit { code, signal } if ev.pid == ev.tgid => {
                if let Some(c) = self.commands.iter_mut().rev().find(|c| c.pid == ev.tgid) {
                    c.exit_code = *code;
                    c.signal = *signal;
                }
            }
            Body::Output {
                target,
                count,
                text,
                ..
            } => match target.as_deref().filter(|t| is_file(t)) {
                Some(path) => {
                    if let Some(f) = self.file(path) {
                        f.ops.insert("write".into());
                        f.writes += 1;
                        f.bytes += count;
                        f.removed = false;
                    }
                }
                None => {
                    self.output_bytes += count;
                    self.output.push_str(text);
                    if self.output.len() > TRANSCRIPT_KEPT {
                        let cut = self.output.len() - TRANSCRIPT_KEPT / 2;
                        let cut = (cut..self.output.len())
                            .find(|i| self.output.is_char_boundary(*i))
                            .unwrap_or(self.output.len());
                        self.output.drain(..cut);
                    }
                }
            },
            Body::File {
                op,
                path,
                path2,
                flags,
                ..
            } => {
                if path.is_empty() {
                    return; // the kernel could not read it
                }
                let (path, path2) = (abs(path), path2.as_deref().map(abs));
                let op_name = match op {
                    FileOp::Open if flags & O_CREAT != 0 => "open(O_CREAT)",
                    FileOp::Open if flags & O_TRUNC != 0 => "open(O_TRUNC)",
                    o => o.name(),
                }
                .to_string();
                let removes = matches!(op, FileOp::Unlink | FileOp::Rmdir | FileOp::Rename);
                let creates = match op {
                    FileOp::Open => flags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL,
                    FileOp::Mkdir | FileOp::Creat | FileOp::Symlink | FileOp::Link => true,
                    _ => false,
                };
                if let Some(f) = self.file(&path) {
                    f.ops.insert(op_name.clone());
                    f.removed = removes;
                    f.surely_created |= creates && op != "creat";
                }
                // rename and link: the second path is the one that comes to be.
                if let Some(p2) = path2
                    && let Some(f) = self.file(&p2)
                {
                    f.ops.insert(format!("{op}(target)"));
                    f.removed = false;
                    f.surely_created = true;
                }
            }
            Body::Connect { address, port, .. } => {
                self.connects.insert(format!("{address}:{port}"));
            }
            Body::Violation { .. } => self.violations.push(notice(ev)),
            Body::Intervention { .. } => self.interventions.push(notice(ev)),
            Body::Denied { .. } | Body::HooksInactive { .. } => self.denied.push(notice(ev)),
            Body::AgentExited { code, signal } => {
                self.exit = Some((*code, *signal));
                self.ended_ns = Some(ev.time_ns);
            }
            _ => {}
        }
    }
}

fn notice(ev: &Event) -> Notice {
    Notice {
        time_ns: ev.time_ns,
        body: ev.body.clone(),
    }
}

/// A write target that is a file (not a terminal, pipe, socket or device).
pub fn is_file(target: &str) -> bool {
    target.starts_with('/') && !target.starts_with("/dev/")
}

#[derive(Default)]
struct Inner {
    events: VecDeque<Arc<Event>>,
    /// The last sequence number this journal gave (its own: cursors stay monotonic when axiomd
    /// restarts and numbers its stream from the start again).
    last_seq: Option<u64>,
    /// The axiomd instance the stream comes from (its bus name) and the last of its sequence
    /// numbers taken: a replay after subscribing again repeats events already taken.
    source: Option<String>,
    source_seq: Option<u64>,
    facts: HashMap<u64, Facts>,
    /// Each process's working directory as last learnt (exec, inherited at fork, the agent's
    /// workspace for its root): `cd` in a shell is not seen.
    cwds: HashMap<u32, String>,
    /// The terminal output of agents `mcp` started (what the pty showed, raw).
    transcripts: HashMap<u64, Vec<u8>>,
}

/// The events in a page of `observe`.
pub struct Page {
    pub events: Vec<Arc<Event>>,
    /// The cursor to continue from.
    pub next: u64,
    /// Events between the cursor asked for and the oldest kept (they left the ring).
    pub skipped: u64,
}

pub struct Journal {
    inner: Mutex<Inner>,
    /// The last sequence number recorded (for waiting on new events).
    latest: tokio::sync::watch::Sender<u64>,
    /// Agent lifecycle, violations and interventions, for notifications.
    notices: tokio::sync::broadcast::Sender<Arc<Event>>,
    connected: AtomicBool,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            inner: Mutex::default(),
            latest: tokio::sync::watch::channel(0).0,
            notices: tokio::sync::broadcast::channel(1024).0,
            connected: AtomicBool::new(false),
        }
    }
}

impl Journal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn notices(&self) -> tokio::sync::broadcast::Receiver<Arc<Event>> {
        self.notices.subscribe()
    }

    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// A (new) stream from the axiomd that owns `source` on the bus: when that is another
    /// instance than before (axiomd restarted), its sequence numbers start again.
    pub fn begin_stream(&self, source: &str) {
        let mut g = self.lock();
        if g.source.as_deref() != Some(source) {
            g.source = Some(source.to_string());
            g.source_seq = None;
        }
    }

    /// Takes one event from axiomd (numbered again in this journal's sequence); one seen already
    /// (a replay after subscribing again) is ignored.
    pub fn record(&self, ev: Event) {
        if matches!(ev.body, Body::KernelMatch { .. }) {
            return;
        }
        let mut ev = Arc::new(ev);
        {
            let mut g = self.lock();
            if g.source_seq.is_some_and(|s| ev.seq <= s) {
                return;
            }
            g.source_seq = Some(ev.seq);
            let seq = g.last_seq.map_or(1, |s| s + 1);
            g.last_seq = Some(seq);
            Arc::make_mut(&mut ev).seq = seq;
            match &ev.body {
                Body::Fork { child_pid } => {
                    if let Some(c) = g.cwds.get(&ev.tgid).cloned() {
                        g.cwds.insert(*child_pid, c);
                    }
                }
                Body::Exec { cwd: Some(c), .. } => {
                    g.cwds.insert(ev.tgid, c.clone());
                }
                Body::AgentStarted {
                    workspace: Some(w), ..
                } => {
                    g.cwds.entry(ev.tgid).or_insert_with(|| w.clone());
                }
                _ => {}
            }
            let cwd = g.cwds.get(&ev.tgid).cloned();
            if matches!(ev.body, Body::Exit { .. }) && ev.pid == ev.tgid {
                g.cwds.remove(&ev.tgid);
            }
            g.facts
                .entry(ev.agent)
                .or_default()
                .apply(&ev, cwd.as_deref());
            if g.events.len() >= EVENTS_KEPT {
                g.events.pop_front();
            }
            g.events.push_back(ev.clone());
        }
        self.latest.send_replace(ev.seq);
        if ev.body.is_notice() {
            let _ = self.notices.send(ev);
        }
    }

    /// Events after `cursor` (of one agent, of some kinds), at most `limit`.
    pub fn page(&self, agent: Option<u64>, kinds: &[String], cursor: u64, limit: usize) -> Page {
        let g = self.lock();
        let skipped = match g.events.front() {
            Some(f) if cursor < f.seq => f.seq - cursor,
            _ => 0,
        };
        let start = g.events.partition_point(|e| e.seq < cursor);
        let mut next = cursor;
        let mut full = false;
        let mut events = Vec::new();
        for e in g.events.range(start..) {
            if events.len() >= limit {
                full = true;
                break;
            }
            next = e.seq + 1;
            if agent.is_some_and(|a| a != e.agent) {
                continue;
            }
            if !kinds.is_empty() && !kinds.iter().any(|k| k == e.body.kind().name()) {
                continue;
            }
            events.push(e.clone());
        }
        if !full {
            next = next.max(g.last_seq.map_or(0, |s| s + 1));
        }
        Page {
            events,
            next,
            skipped,
        }
    }

    /// The agent's facts, read under the lock.
    /// (An agent nothing has been seen of has empty facts.)
    pub fn with_facts<T>(&self, agent: u64, f: impl FnOnce(&Facts) -> T) -> T {
        match self.lock().facts.get(&agent) {
            Some(x) => f(x),
            None => f(&Facts::default()),
        }
    }

    /// Terminal output of an agent `mcp` started.
    pub fn add_transcript(&self, agent: u64, bytes: &[u8]) {
        let mut g = self.lock();
        let t = g.transcripts.entry(agent).or_default();
        t.extend_from_slice(bytes);
        if t.len() > TRANSCRIPT_KEPT {
            let cut = t.len() - TRANSCRIPT_KEPT / 2;
            t.drain(..cut);
        }
    }

    /// What the agent's terminal showed (agents `mcp` started), or else what it wrote to
    /// terminals and pipes as the kernel captured it.
    pub fn transcript(&self, agent: u64) -> Option<String> {
        let g = self.lock();
        if let Some(t) = g.transcripts.get(&agent) {
            return Some(String::from_utf8_lossy(t).into_owned());
        }
        g.facts.get(&agent).map(|f| f.output.clone())
    }
}
