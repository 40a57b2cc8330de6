//! What axiomd says to its clients (axiomctl, tests, tools): JSON lines over the control socket.
//! One event model for every consumer, decoded once from the kernel records.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/axiom/axiomd.sock";

/// One observed event.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// Position in this daemon's stream (monotonic per daemon run).
    pub seq: u64,
    /// Wall clock, ns since the Unix epoch (from the kernel's monotonic stamp).
    pub time_ns: u64,
    pub agent: u64,
    pub pid: u32,
    pub tgid: u32,
    /// Parent process id where known (0 otherwise).
    pub ppid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    /// Part of the payload could not be read or did not fit.
    #[serde(default)]
    pub truncated: bool,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Fork {
        child_pid: u32,
    },
    Exec {
        filename: String,
        argv: Vec<String>,
        /// Read from /proc right after the event; absent if the process was already gone.
        cwd: Option<String>,
        old_pid: u32,
        /// What its standard input is (`pipe:[N]`, a file, a terminal), read with the cwd.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdin: Option<String>,
    },
    Exit {
        /// Exit code, if the process called exit.
        code: Option<i32>,
        /// Fatal signal, if one ended it.
        signal: Option<i32>,
    },
    Output {
        fd: i32,
        syscall: WriteCall,
        /// The bytes were read back from the file after the write (an `mmap`ped store, a write
        /// longer than the kernel's capture), not copied from the call.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        read_back: bool,
        /// Bytes the process asked to write.
        count: u64,
        /// What the fd pointed at (a path, `pipe:[…]`, `socket:[…]`, a tty), where it could be read.
        target: Option<String>,
        /// The captured bytes, UTF-8 with invalid sequences replaced (secrets masked); empty
        /// when they were not text (TLS records, binary IPC: `captured` says how many).
        text: String,
        /// Bytes captured (≤ count).
        captured: u32,
        /// Rules whose matches were masked in `text` before it left axiomd (secrets).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        redacted: Vec<String>,
    },
    File {
        op: FileOp,
        path: String,
        path2: Option<String>,
        flags: u32,
        mode: u32,
    },
    Connect {
        family: Family,
        address: String,
        port: u16,
    },
    /// The kernel matcher hit rule literals in a write. Internal: it goes to the rules, not to
    /// watchers (the violation it leads to does).
    KernelMatch {
        fd: i32,
        target: Option<String>,
        /// The matcher table the states belong to (1 or 2).
        table: u16,
        /// A deny pattern matched: the kernel killed the writer before the write landed.
        deny: bool,
        count: u64,
        hits: u32,
        /// Where the first match ends in the write.
        offset: u32,
        states: Vec<u16>,
    },
    /// An agent was started or adopted (`pid` is its root process).
    AgentStarted {
        name: Option<String>,
        command: Vec<String>,
        workspace: Option<String>,
        profile: Option<String>,
        /// Its own terminal, when it runs in one axiomd holds (`axiomctl run`): what its
        /// session is replayed on (`axiomctl export --asciicast`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        terminal: Option<Terminal>,
    },
    /// An agent's root process ended.
    AgentExited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Axiom acted on an agent: `stop`, `freeze`, `thaw`, `kill`, `inject`, `untrack`.
    Intervention {
        action: Action,
        /// Who asked for it (uid), or `None` when a rule did.
        by_uid: Option<u32>,
        detail: String,
        /// The rule that called for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        /// From the offending syscall to the violation, µs (rule interventions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detect_us: Option<f64>,
        /// Carrying out the action, µs (for an inject: until the agent's screen showed it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        act_us: Option<f64>,
        /// An inject: whether the agent's screen showed the message after it was typed (the
        /// agent took it as input), or not within the wait.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered: Option<bool>,
        /// How a message reached the agent: `terminal` (typed), `hook` (an agent's hooks: a
        /// refused tool call, a refused stop, context handed over), `kernel` (a write denied).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<Channel>,
        /// A message that waited for the agent to be idle: how long it waited, µs (part of
        /// `act_us`; the rest is typing it and seeing it arrive).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queued_us: Option<f64>,
    },
    /// A rule matched what an agent did.
    Violation {
        rule: String,
        severity: Severity,
        /// What the rule does about it (alert, inject, freeze, kill, deny).
        action: Action,
        /// The match in its context (secrets masked).
        detail: String,
        /// From the kernel's timestamp of the event to the finding, µs.
        latency_us: Option<f64>,
        /// Where it was seen (none for timeouts).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
        /// The file it is about (a file_write rule: the path written, after a rename of a
        /// temporary file the final one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// The agent's confinement refused something: a connect outside its allowlist, a fork at
    /// its pids limit, memory at its limit (an OOM kill inside the agent), a file outside its
    /// profile.
    Denied {
        op: DeniedOp,
        /// The address, path or limit concerned.
        target: String,
        /// What refused it (`cgroup pids limit`, `cgroup connect allowlist`, `landlock`, …).
        by: String,
        /// How many times since the last report (limits are read as counters).
        count: u64,
    },
    /// An agent run with Axiom's hooks acted (what it did was seen in the kernel, or on its
    /// screen) before any of its hooks called axiomd: they are not running (switched off in
    /// its settings, a version that ignores them, a config that failed to load). Nothing is
    /// refused before it runs; its messages are typed into its terminal instead.
    HooksInactive {
        /// What gave it away.
        reason: String,
    },
    /// An agent's hook called axiomd (`axiomctl run` installs them): a tool call it is about to
    /// make, as its hook showed it, or the message it wants to stop on. The kernel's record
    /// shows what a call then did; this is what the agent said it would do, or had done: a
    /// session replayed through the rules (`axiomctl rules test --session`) judges its claims
    /// and its tool calls from it, as axiomd did.
    Hook {
        /// The hook's event, as the agent names it (`PreToolUse`, `Stop`, Gemini CLI's
        /// `BeforeTool`, …).
        event: String,
        /// The tool, for a tool call (`Bash`, `Write`, Codex's `apply_patch`, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tool: Option<String>,
        /// The agent's id for the call (Claude Code's and Codex's `tool_use_id`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call: Option<String>,
        /// The command, what a write adds, or the last message (secrets masked; at most
        /// `HOOK_TEXT_MAX` bytes).
        text: String,
        /// What an edit replaces: text already in the file is not the call's own.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        replaced: String,
        /// The file a write goes to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// The rule that refused it, when one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
        /// Rules whose matches were masked in `text` (secrets): a replay takes them from here,
        /// as it takes an output's.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        redacted: Vec<String>,
        /// The agent's own id for its conversation (the hook's `session_id`): what traces
        /// call `gen_ai.conversation.id`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation: Option<String>,
        /// The model the agent talks to, when the hook says (Claude Code's `SessionStart`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
}

/// What a hook event of an agent marks: a tool call about to run (judged), one that has run,
/// the agent about to stop (its claims judged), or its session starting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookMark {
    ToolCall,
    ToolDone,
    Stop,
    SessionStart,
    Other,
}

impl HookMark {
    /// By the hook event's name, in each agent's spelling (Claude Code's and Codex's
    /// `PreToolUse`, Gemini CLI's `BeforeTool`, …).
    pub fn of(event: &str) -> HookMark {
        match event {
            "PreToolUse" | "BeforeTool" => HookMark::ToolCall,
            "PostToolUse" | "AfterTool" => HookMark::ToolDone,
            "Stop" | "SubagentStop" | "AfterAgent" => HookMark::Stop,
            "SessionStart" => HookMark::SessionStart,
            _ => HookMark::Other,
        }
    }
}

/// The most of a hook call's text (a command, a write, a message) its `hook` event keeps.
pub const HOOK_TEXT_MAX: usize = 16 * 1024;

/// An agent's own terminal: its device (`/dev/pts/N`) and its size when it started.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Terminal {
    pub device: String,
    pub rows: u16,
    pub cols: u16,
}

/// Why a request was refused, for programs (the message beside it is for people). Stable: a
/// client matches on it; a code it does not know yet reads as `Unknown`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NoSuchProcess,
    ExitedDuringAdoption,
    KernelThread,
    Init,
    AlreadyTracked,
    NotACgroup,
    NoSuchAgent,
    NotPermitted,
    Confinement,
    Internal,
    TooManyClients,
    NoTerminal,
    TerminalClosed,
    NotAnAgent,
    NoStore,
    BadQuery,
    NoSuchProfile,
    BadRules,
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire name (what serde writes).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NoSuchProcess => "no_such_process",
            ErrorCode::ExitedDuringAdoption => "exited_during_adoption",
            ErrorCode::KernelThread => "kernel_thread",
            ErrorCode::Init => "init",
            ErrorCode::AlreadyTracked => "already_tracked",
            ErrorCode::NotACgroup => "not_a_cgroup",
            ErrorCode::NoSuchAgent => "no_such_agent",
            ErrorCode::NotPermitted => "not_permitted",
            ErrorCode::Confinement => "confinement",
            ErrorCode::Internal => "internal",
            ErrorCode::TooManyClients => "too_many_clients",
            ErrorCode::NoTerminal => "no_terminal",
            ErrorCode::TerminalClosed => "terminal_closed",
            ErrorCode::NotAnAgent => "not_an_agent",
            ErrorCode::NoStore => "no_store",
            ErrorCode::BadQuery => "bad_query",
            ErrorCode::NoSuchProfile => "no_such_profile",
            ErrorCode::BadRules => "bad_rules",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// How much a violation matters (a rule's `severity`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What was done, or is to be done, about an agent: a violation's `action` (its rule's) and an
/// intervention's.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Report only (a rule's action; never an intervention).
    #[default]
    Alert,
    /// A message to the agent's model.
    Inject,
    Freeze,
    Thaw,
    /// SIGTERM to every process.
    Stop,
    Kill,
    /// The offending syscall stopped before it landed.
    Deny,
    /// No longer tracked (by its owner's request).
    Untrack,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Inject => "inject",
            Action::Freeze => "freeze",
            Action::Thaw => "thaw",
            Action::Stop => "stop",
            Action::Kill => "kill",
            Action::Deny => "deny",
            Action::Untrack => "untrack",
        }
    }
}

/// A typed wire value shows as its wire name, and equals it (`action == "inject"` in a client or
/// a test).
macro_rules! wire_name {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, name: &str) -> bool {
                self.name() == name
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, name: &&str) -> bool {
                self.name() == *name
            }
        }
    )*};
}
wire_name!(
    Action,
    Severity,
    Kind,
    ErrorCode,
    FileOp,
    WriteCall,
    Family,
    DeniedOp,
    Channel,
    Scope,
    AgentState,
    AgentSource
);

/// A closed set of wire names as an enum: each variant with its name on the wire (and in the
/// store, and on D-Bus); the one after `else` is what a name this build does not know reads as.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident [else $o:ident = $os:literal] { $($(#[$vm:meta])* $v:ident = $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v,)*
            #[default]
            #[serde(other, rename = $os)]
            $o,
        }
        impl $name {
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$v => $s,)*
                    $name::$o => $os,
                }
            }
            /// The variant a wire name names.
            pub fn from_name(name: &str) -> $name {
                match name {
                    $($s => $name::$v,)*
                    _ => $name::$o,
                }
            }
        }
    };
}

wire_enum!(
    /// The syscall a write came through.
    WriteCall [else Unknown = "unknown"] {
        Write = "write",
        Pwrite64 = "pwrite64",
        Writev = "writev",
        Pwritev = "pwritev",
        Pwritev2 = "pwritev2",
        Sendto = "sendto",
        Sendmsg = "sendmsg",
        Sendfile = "sendfile",
        CopyFileRange = "copy_file_range",
        Splice = "splice",
        Mmap = "mmap",
    }
);

wire_enum!(
    /// A socket address's family, as the connecting process passed it.
    Family [else Other = "other"] {
        Inet = "inet",
        Inet6 = "inet6",
        Unix = "unix",
        Unspec = "unspec",
    }
);

wire_enum!(
    /// What an agent's confinement refused.
    DeniedOp [else Other = "other"] {
        /// A connect outside its allowlist.
        Connect = "connect",
        /// A raw or ICMP socket.
        Socket = "socket",
        /// A fork at its pids limit.
        Fork = "fork",
        /// An OOM kill at its memory limit.
        Memory = "memory",
        /// A plugin stopped by its sandbox.
        Plugin = "plugin",
        Open = "open",
        Creat = "creat",
        Rename = "rename",
        Unlink = "unlink",
        Mkdir = "mkdir",
        Rmdir = "rmdir",
        Link = "link",
        Symlink = "symlink",
        /// A file operation whose record was not seen.
        File = "file",
    }
);

impl From<FileOp> for DeniedOp {
    fn from(op: FileOp) -> DeniedOp {
        DeniedOp::from_name(op.name())
    }
}

wire_enum!(
    /// How a message reached an agent.
    Channel [else Unknown = "unknown"] {
        /// Typed into its terminal.
        Terminal = "terminal",
        /// Through its hooks (a refused tool call, a refused stop, context handed over).
        Hook = "hook",
        /// The kernel refused the write.
        Kernel = "kernel",
    }
);

wire_enum!(
    /// Where a rule looks (and where a violation was seen).
    Scope [else Unknown = "unknown"] {
        Terminal = "terminal",
        Output = "output",
        Network = "network",
        FileWrite = "file_write",
        Exec = "exec",
        File = "file",
        Connect = "connect",
    }
);

wire_enum!(
    /// Where an agent is in its life.
    AgentState [else Unknown = "unknown"] {
        Running = "running",
        Frozen = "frozen",
        Exited = "exited",
    }
);

wire_enum!(
    /// How axiomd follows an agent: its cgroup (started by axiomd, or a tracked cgroup), an
    /// adopted process tree, or a record restored at start-up.
    AgentSource [else Unknown = "unknown"] {
        Cgroup = "cgroup",
        Process = "process",
        Restored = "restored",
    }
);

/// What a file event did (the syscall family the kernel saw).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    Open,
    Creat,
    Rename,
    Unlink,
    Mkdir,
    Rmdir,
    Link,
    Symlink,
    #[serde(other)]
    Unknown,
}

impl FileOp {
    pub fn name(self) -> &'static str {
        match self {
            FileOp::Open => "open",
            FileOp::Creat => "creat",
            FileOp::Rename => "rename",
            FileOp::Unlink => "unlink",
            FileOp::Mkdir => "mkdir",
            FileOp::Rmdir => "rmdir",
            FileOp::Link => "link",
            FileOp::Symlink => "symlink",
            FileOp::Unknown => "unknown",
        }
    }
}

/// An event's kind: the `kind` field on the wire, a column in the store, a key in `status`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Fork,
    Exec,
    Exit,
    Output,
    File,
    Connect,
    AgentStarted,
    AgentExited,
    Intervention,
    Violation,
    KernelMatch,
    Denied,
    HooksInactive,
    Hook,
}

impl Kind {
    /// Every kind, in the order of their discriminants (axiomd counts by `kind as usize`).
    pub const ALL: [Kind; 14] = [
        Kind::Fork,
        Kind::Exec,
        Kind::Exit,
        Kind::Output,
        Kind::File,
        Kind::Connect,
        Kind::AgentStarted,
        Kind::AgentExited,
        Kind::Intervention,
        Kind::Violation,
        Kind::KernelMatch,
        Kind::Denied,
        Kind::HooksInactive,
        Kind::Hook,
    ];

    /// The wire name (what serde writes).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fork => "fork",
            Kind::Exec => "exec",
            Kind::Exit => "exit",
            Kind::Output => "output",
            Kind::File => "file",
            Kind::Connect => "connect",
            Kind::AgentStarted => "agent_started",
            Kind::AgentExited => "agent_exited",
            Kind::Intervention => "intervention",
            Kind::Violation => "violation",
            Kind::KernelMatch => "kernel_match",
            Kind::Denied => "denied",
            Kind::HooksInactive => "hooks_inactive",
            Kind::Hook => "hook",
        }
    }

    /// The kind a wire name names.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Fork { .. } => Kind::Fork,
            Body::Exec { .. } => Kind::Exec,
            Body::Exit { .. } => Kind::Exit,
            Body::Output { .. } => Kind::Output,
            Body::File { .. } => Kind::File,
            Body::Connect { .. } => Kind::Connect,
            Body::KernelMatch { .. } => Kind::KernelMatch,
            Body::AgentStarted { .. } => Kind::AgentStarted,
            Body::AgentExited { .. } => Kind::AgentExited,
            Body::Intervention { .. } => Kind::Intervention,
            Body::Violation { .. } => Kind::Violation,
            Body::Denied { .. } => Kind::Denied,
            Body::HooksInactive { .. } => Kind::HooksInactive,
            Body::Hook { .. } => Kind::Hook,
        }
    }

    /// Agent lifecycle, interventions and violations: rare, and each one matters (D-Bus signals).
    pub fn is_notice(&self) -> bool {
        matches!(
            self,
            Body::AgentStarted { .. }
                | Body::AgentExited { .. }
                | Body::Intervention { .. }
                | Body::Violation { .. }
                | Body::Denied { .. }
                | Body::HooksInactive { .. }
        )
    }
}

/// A request on the control socket, one JSON object per line.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Track every process in a cgroup v2 directory, present and future.
    TrackCgroup {
        path: String,
    },
    /// Track a running process and all its descendants, present and future.
    TrackPid {
        pid: u32,
    },
    /// Stop tracking an agent's processes.
    Untrack {
        agent: u64,
    },
    /// Start an agent from a process the caller holds before exec: axiomd gives it a cgroup of
    /// its own and tracks it; the caller then lets it exec.
    RunAgent {
        pid: u32,
        #[serde(default)]
        name: Option<String>,
        /// What the process is about to exec (shown in `agents`).
        #[serde(default)]
        command: Vec<String>,
        /// The directory the agent works in.
        #[serde(default)]
        workspace: Option<String>,
        /// The confinement profile it runs under.
        #[serde(default)]
        profile: Option<String>,
        /// The agent's pty master comes with this request (SCM_RIGHTS): axiomd keeps it to type
        /// interventions into the agent, even after the client detaches.
        #[serde(default)]
        pty: bool,
        /// The agent's kind (`claude`, `codex`, …: a profile of `agents.toml`), when the
        /// launcher was told or recognised it; else axiomd recognises it from `command`.
        #[serde(default)]
        kind: Option<String>,
        /// The launcher installed Claude Code hooks that call back into axiomd (`axiomctl hook`).
        #[serde(default)]
        hooks: bool,
    },
    /// What `RunAgent` would give an agent of the caller's started with `command` in
    /// `workspace` under `profile` (`axiomctl run --dry-run`): the confinement in the reply, the
    /// kind in its notes. Nothing starts.
    Resolve {
        #[serde(default)]
        command: Vec<String>,
        workspace: String,
        #[serde(default)]
        profile: Option<String>,
        #[serde(default)]
        kind: Option<String>,
    },
    /// Types a message into an agent's terminal (agents started with a pty), the way its kind
    /// reads typed input, and says whether it arrived. `raw` types the bytes as they are.
    Inject {
        agent: u64,
        text: String,
        #[serde(default)]
        raw: bool,
    },
    /// A Claude Code hook call from inside an agent (`axiomctl hook`): the hook's input as
    /// Claude Code gave it. The agent is the caller's own (by its pid, from the kernel).
    Hook {
        input: serde_json::Value,
    },
    /// The agents visible to the caller.
    Agents,
    /// SIGTERM to every process of the agent.
    Stop {
        agent: u64,
    },
    Freeze {
        agent: u64,
    },
    Thaw {
        agent: u64,
    },
    Kill {
        agent: u64,
    },
    /// Stored events (warm tier): the latest `limit` that match, oldest first; or, with `sql`,
    /// one read-only SQL statement (root and the admin group).
    Query {
        #[serde(flatten)]
        events: EventQuery,
        #[serde(default)]
        sql: Option<String>,
    },
    /// The active rules.
    Rules,
    /// Loads the rule files again (root and the admin group); on error the old rules stay.
    ReloadRules,
    /// How many stored events match, per agent and kind, and per span of `bucket_ns` of
    /// their time when it is not 0: a session's shape (the session page's lanes, the session
    /// list's counts) without reading its events, however many there are.
    Summary {
        #[serde(flatten)]
        events: EventQuery,
        #[serde(default)]
        bucket_ns: u64,
    },
    /// Stream events as JSON lines; `replay` first sends the recent events kept in memory.
    Subscribe {
        #[serde(default)]
        replay: bool,
        #[serde(default)]
        agent: Option<u64>,
    },
}

fn default_limit() -> usize {
    1000
}

/// Which stored events: the same on the wire (`query`) and in the store, which adds only what
/// the caller may see.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EventQuery {
    #[serde(default)]
    pub agent: Option<u64>,
    #[serde(default)]
    pub since_ns: Option<u64>,
    #[serde(default)]
    pub until_ns: Option<u64>,
    /// Event kinds (wire names); none: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Text the event's text or detail contains.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// The earliest `limit` that match, instead of the latest: a session read forward from
    /// `since_ns`, a page at a time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oldest: bool,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            agent: None,
            since_ns: None,
            until_ns: None,
            kinds: Vec::new(),
            text: None,
            limit: default_limit(),
            oldest: false,
        }
    }
}

/// The answer to a request (for `subscribe`, the first line, followed by events).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Machine-readable kind of the error (`no_such_process`, `not_permitted`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<AgentInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleInfo>>,
    /// `query`: stored events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
    /// `query` with SQL: column names and rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<Vec<serde_json::Value>>>,
    /// `run_agent`: what the launcher must apply before exec (the resolved profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<crate::confine::Confinement>,
    /// Things the caller should be told (limits the host could not apply, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<Vec<String>>,
    /// `inject`: whether the message arrived (the agent's screen showed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<bool>,
    /// `hook`: what the hook prints for Claude Code (none: nothing to say, carry on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<serde_json::Value>,
    /// `summary`: the counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Vec<Count>>,
}

/// How many stored events of one agent and kind fall in one span of time (`summary`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Count {
    pub agent: u64,
    /// The event kind's wire name (`exec`, `violation`, …).
    pub kind: String,
    /// Where its span starts, ns since the epoch (0 when the summary is not split in time).
    pub bucket_ns: u64,
    pub n: u64,
}

/// One active rule, as `rules list` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RuleInfo {
    pub id: String,
    pub description: String,
    pub kind: String,
    /// The scopes it looks at, comma-separated.
    pub scope: Option<String>,
    pub severity: Severity,
    pub priority: i32,
    pub action: Action,
    /// `file:line` it was defined at.
    pub origin: String,
}

/// One agent, as `agents` lists it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct AgentInfo {
    pub id: u64,
    pub name: Option<String>,
    pub owner_uid: u32,
    /// How axiomd follows it.
    pub kind: AgentSource,
    pub cgroup: Option<String>,
    pub state: AgentState,
    pub pids: Vec<u32>,
    /// The agent's root process.
    #[serde(default)]
    pub leader: u32,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    /// When it was started or adopted, ns since the Unix epoch.
    #[serde(default)]
    pub started_ns: u64,
    /// How its root process ended, once it has.
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub exit_signal: Option<i32>,
    /// axiomd holds its terminal: interventions can be typed into it.
    #[serde(default)]
    pub pty: bool,
    /// Its profile in `agents.toml` (`claude`, `codex`, `gemini`, …, `generic`).
    #[serde(default)]
    pub agent_kind: Option<String>,
    /// The agent's own id for its conversation (`session_id` from its hooks), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// The model it talks to, when its hooks say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// One agent as D-Bus `ListAgents` returns it (signature `(tsusus asssttiiaus)`): (id, name,
/// owner uid, state, root pid, command, workspace, profile, started ns since the epoch, exit
/// code (-1: none), fatal signal (0: none), pids, cgroup). Empty strings stand for none.
pub type AgentRecord = (
    u64,
    String,
    u32,
    String,
    u32,
    Vec<String>,
    String,
    String,
    u64,
    i32,
    i32,
    Vec<u32>,
    String,
);

impl AgentInfo {
    /// The D-Bus form (`kind` and `pty` are not part of it).
    pub fn into_record(self) -> AgentRecord {
        (
            self.id,
            self.name.unwrap_or_default(),
            self.owner_uid,
            self.state.name().into(),
            self.leader,
            self.command,
            self.workspace.unwrap_or_default(),
            self.profile.unwrap_or_default(),
            self.started_ns,
            self.exit_code.unwrap_or(-1),
            self.exit_signal.unwrap_or(0),
            self.pids,
            self.cgroup.unwrap_or_default(),
        )
    }

    /// Back from the D-Bus form (`kind` unknown, `pty` false: the record does not say).
    pub fn from_record(r: AgentRecord) -> AgentInfo {
        let (
            id,
            name,
            owner_uid,
            state,
            leader,
            command,
            workspace,
            profile,
            started_ns,
            code,
            sig,
            pids,
            cgroup,
        ) = r;
        let some = |s: String| (!s.is_empty()).then_some(s);
        AgentInfo {
            id,
            name: some(name),
            owner_uid,
            kind: AgentSource::Unknown,
            cgroup: some(cgroup),
            state: AgentState::from_name(&state),
            pids,
            leader,
            command,
            workspace: some(workspace),
            profile: some(profile),
            started_ns,
            exit_code: (code != -1).then_some(code),
            exit_signal: (sig != 0).then_some(sig),
            pty: false,
            agent_kind: None,
            conversation: None,
            model: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Status {
    pub version: String,
    pub pin_dir: String,
    /// The running programs were found pinned and reused at start-up.
    pub reused_pins: bool,
    pub startup_ms: f64,
    pub attached: Vec<String>,
    pub skipped: Vec<String>,
    pub tracked_processes: u64,
    pub tracked_cgroups: u64,
    /// Agents with a process alive.
    #[serde(default)]
    pub agents_running: u64,
    pub events: BTreeMap<String, u64>,
    /// Every loss, by cause: the kernel's (ring full, map full, read fault) and userspace's
    /// (malformed records, slow subscribers).
    pub lost: BTreeMap<String, u64>,
    /// What the kernel programs did since they were loaded (`output_records`,
    /// `captured_bytes`, `scanned_bytes`, `matches`): benchmarks check that what they timed
    /// happened.
    #[serde(default)]
    pub kernel_work: BTreeMap<String, u64>,
    /// The event store's writer: events stored (acknowledged), batches, failed batches.
    #[serde(default)]
    pub store: BTreeMap<String, u64>,
    /// What one agent or user can make axiomd hold, at most (what a bound cut is counted in
    /// `lost`): clients, agents, screens and their size, fd table entries, messages in flight.
    #[serde(default)]
    pub bounds: BTreeMap<String, u64>,
}

/// A blocking JSON-lines connection to the control socket (axiomctl, tests, tools).
pub struct Connection {
    r: std::io::BufReader<std::os::unix::net::UnixStream>,
    w: std::os::unix::net::UnixStream,
    /// A line cut short by a read timeout, completed by the next read.
    pending: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("cannot reach axiomd at {path} (is it running?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("axiomd closed the connection")]
    Closed,
    #[error("undecodable line from axiomd: {0}")]
    Json(#[from] serde_json::Error),
}

impl Connection {
    pub fn connect(path: &std::path::Path) -> Result<Connection, ConnectionError> {
        let s = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
            ConnectionError::Connect {
                path: path.display().to_string(),
                source,
            }
        })?;
        let w = s.try_clone()?;
        Ok(Connection {
            r: std::io::BufReader::new(s),
            w,
            pending: String::new(),
        })
    }

    pub fn send(&mut self, req: &Request) -> Result<(), ConnectionError> {
        use std::io::Write as _;
        let mut s = serde_json::to_vec(req)?;
        s.push(b'\n');
        self.w.write_all(&s)?;
        Ok(())
    }

    /// Sends a request with a file descriptor attached (SCM_RIGHTS) and reads its reply.
    pub fn request_with_fd(
        &mut self,
        req: &Request,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Reply, ConnectionError> {
        use std::os::fd::AsRawFd as _;
        let mut s = serde_json::to_vec(req)?;
        s.push(b'\n');
        let fds = [fd.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let mut sent = 0;
        while sent < s.len() {
            let iov = [std::io::IoSlice::new(&s[sent..])];
            // The fd rides on the first chunk only.
            let c: &[nix::sys::socket::ControlMessage<'_>] = if sent == 0 { &cmsg } else { &[] };
            sent += nix::sys::socket::sendmsg::<()>(
                self.w.as_raw_fd(),
                &iov,
                c,
                nix::sys::socket::MsgFlags::empty(),
                None,
            )
            .map_err(std::io::Error::from)?;
        }
        loop {
            if let Some(l) = self.read_line()? {
                return Ok(serde_json::from_str(&l)?);
            }
        }
    }

    /// Sets how long a read may wait (`None`: forever).
    pub fn set_timeout(&self, t: Option<std::time::Duration>) -> Result<(), ConnectionError> {
        self.w.set_read_timeout(t)?;
        Ok(())
    }

    /// The next whole line; `Ok(None)` when a read timed out (a partial line is kept).
    pub fn read_line(&mut self) -> Result<Option<String>, ConnectionError> {
        use std::io::BufRead as _;
        match self.r.read_line(&mut self.pending) {
            Ok(0) => Err(ConnectionError::Closed),
            Ok(_) if self.pending.ends_with('\n') => Ok(Some(std::mem::take(&mut self.pending))),
            Ok(_) => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a request and reads its reply.
    pub fn request(&mut self, req: &Request) -> Result<Reply, ConnectionError> {
        self.send(req)?;
        loop {
            if let Some(l) = self.read_line()? {
                return Ok(serde_json::from_str(&l)?);
            }
        }
    }

    /// Sends a request and reads its reply, telling `progress` the bytes received so far (a
    /// large query answer can take a while).
    pub fn request_with_progress(
        &mut self,
        req: &Request,
        mut progress: impl FnMut(usize),
    ) -> Result<Reply, ConnectionError> {
        use std::io::BufRead as _;
        self.send(req)?;
        let mut buf = std::mem::take(&mut self.pending).into_bytes();
        loop {
            let chunk = match self.r.fill_buf() {
                Ok(c) => c,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if chunk.is_empty() {
                return Err(ConnectionError::Closed);
            }
            if let Some(i) = chunk.iter().position(|b| *b == b'\n') {
                buf.extend_from_slice(&chunk[..=i]);
                self.r.consume(i + 1);
                break;
            }
            let n = chunk.len();
            buf.extend_from_slice(chunk);
            self.r.consume(n);
            progress(buf.len());
        }
        Ok(serde_json::from_slice(&buf)?)
    }

    /// Starts a subscription: the reply (which may be an error), then events via `next_event`.
    pub fn subscribe(
        &mut self,
        replay: bool,
        agent: Option<u64>,
    ) -> Result<Reply, ConnectionError> {
        self.request(&Request::Subscribe { replay, agent })
    }

    /// The next event; `Ok(None)` on a read timeout.
    pub fn next_event(&mut self) -> Result<Option<Event>, ConnectionError> {
        Ok(match self.read_line()? {
            Some(l) => Some(serde_json::from_str(&l)?),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_query_reads_the_same_on_the_wire_with_its_fields_flat() {
        let q: Request =
            serde_json::from_str(r#"{"op":"query","agent":3,"kinds":["output"]}"#).unwrap();
        let Request::Query { events, sql } = &q else {
            panic!("{q:?}")
        };
        assert_eq!(
            (events.agent, events.kinds.as_slice(), events.limit, sql),
            (Some(3), &["output".to_string()][..], 1000, &None)
        );
        let back = serde_json::to_value(&q).unwrap();
        assert_eq!(back["agent"], 3);
        assert_eq!(back["limit"], 1000);
    }
    use super::*;

    fn wire<T: Serialize>(v: T) -> String {
        serde_json::to_value(v)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn typed_fields_keep_their_wire_names() {
        for (i, k) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "Kind::ALL out of order at {k}");
            assert_eq!(wire(k), k.name());
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        let actions = [
            Action::Alert,
            Action::Inject,
            Action::Freeze,
            Action::Thaw,
            Action::Stop,
            Action::Kill,
            Action::Deny,
            Action::Untrack,
        ];
        for a in actions {
            assert_eq!(wire(a), a.name());
        }
        for s in [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ] {
            assert_eq!(wire(s), s.name());
        }
        for c in [
            ErrorCode::NotPermitted,
            ErrorCode::NoSuchAgent,
            ErrorCode::NotACgroup,
        ] {
            assert_eq!(wire(c), c.name());
        }
        // What an older or newer peer sends.
        let v: Body = serde_json::from_str(
            r#"{"kind":"violation","rule":"r","severity":"high","action":"inject","detail":"","latency_us":null}"#,
        )
        .unwrap();
        assert!(matches!(
            v,
            Body::Violation {
                severity: Severity::High,
                action: Action::Inject,
                ..
            }
        ));
        let r: Reply = serde_json::from_str(r#"{"ok":false,"code":"a_code_from_later"}"#).unwrap();
        assert_eq!(r.code, Some(ErrorCode::Unknown));
    }
}
