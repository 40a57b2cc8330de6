//! Rule files: what an agent must not do, and what Axiom does when it does.
//!
//! A rule file is TOML with `[[rule]]` tables. Parsing reports `file:line: reason` for every
//! mistake (unknown key, bad regex, duplicate id, missing message for `inject`), so a reload
//! that fails names the line and keeps the old rules. The matcher (`RuleSet::scan`) is pure: it
//! runs in axiomd on live events and in `axiomctl rules test` offline, with the same result.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
mod ansi;
pub mod dfa;
mod paths;
mod plugin;
pub mod screen;
pub mod testrun;

use std::{collections::HashSet, path::Path, sync::Arc, time::Duration};

use axiom_proto::file_error::line_of;
use serde::{Deserialize, Serialize};

pub use ansi::strip_ansi;
pub use paths::{AGENT_STATE, PathFilter, is_code};
#[cfg(feature = "plugins")]
pub use plugin::{FollowUp, PLUGIN_STRIKES, Subject};
pub use plugin::{PluginLimits, RulePlugin};

/// What a rule looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// What the agent shows on its terminal: the text on screen, as a terminal emulator draws
    /// it (cursor moves read as the spaces they leave; a repaint is judged once).
    Terminal,
    /// Every write that is not to a file — terminal, pipes, sockets — as bytes, ANSI escapes
    /// stripped (secrets look here: a token is a token however it is painted).
    Output,
    /// What the agent sends over sockets (its model API requests among them).
    Network,
    /// What the agent writes into files.
    FileWrite,
    /// Commands it runs (argv joined by spaces).
    Exec,
    /// Paths it creates, renames, deletes.
    File,
    /// Where it connects (`address:port`).
    Connect,
}

pub const SCOPES: [Scope; 7] = [
    Scope::Terminal,
    Scope::Output,
    Scope::Network,
    Scope::FileWrite,
    Scope::Exec,
    Scope::File,
    Scope::Connect,
];

pub use axiom_proto::wire::Severity;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Report only.
    Alert,
    /// Type the rule's message into the agent's terminal.
    Inject,
    Freeze,
    Kill,
    /// Stop the offending syscall before it lands (kernel; until then: kill).
    Deny,
}

impl Scope {
    /// The same scope on the wire (a violation's `scope`).
    pub fn wire(self) -> axiom_proto::wire::Scope {
        axiom_proto::wire::Scope::from_name(self.name())
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Terminal => "terminal",
            Scope::Output => "output",
            Scope::Network => "network",
            Scope::FileWrite => "file_write",
            Scope::Exec => "exec",
            Scope::File => "file",
            Scope::Connect => "connect",
        }
    }

    /// The scope a rule file names, or the list of scopes in the error.
    pub fn parse(name: &str) -> Result<Scope, String> {
        SCOPES
            .iter()
            .copied()
            .find(|s| s.name() == name)
            .ok_or_else(|| format!("scope {name:?}: one of {}", SCOPE_NAMES))
    }
}

/// The scopes, for messages.
pub const SCOPE_NAMES: &str = "terminal, output, network, file_write, exec, file, connect";

impl Action {
    pub fn name(self) -> &'static str {
        self.wire().name()
    }

    /// The same action on the wire (a violation's `action`; an intervention's).
    pub fn wire(self) -> axiom_proto::wire::Action {
        match self {
            Action::Alert => axiom_proto::wire::Action::Alert,
            Action::Inject => axiom_proto::wire::Action::Inject,
            Action::Freeze => axiom_proto::wire::Action::Freeze,
            Action::Kill => axiom_proto::wire::Action::Kill,
            Action::Deny => axiom_proto::wire::Action::Deny,
        }
    }
}

/// When an inject's message is typed into the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deliver {
    /// Now: the agent's interrupt key stops its turn or tool, then the message.
    #[default]
    Interrupt,
    /// When the agent is idle (its turn ended): queued, not dropped, while the agent lives.
    Idle,
}

impl Deliver {
    pub fn name(self) -> &'static str {
        match self {
            Deliver::Interrupt => "interrupt",
            Deliver::Idle => "idle",
        }
    }
}

/// What has to be true for an agent's claim to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// The agent wrote or created at least one file.
    FilesWritten,
    /// The agent ran a test command (cargo test, pytest, npm test, go test, make test, …).
    TestsRan,
}

/// How a rule decides.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A match in its scope is a violation.
    Match,
    /// A match is a claim; it is a violation if the kernel's record contradicts it.
    Claim(Verify),
    /// No file written this long after the agent started.
    PlanningTimeout(Duration),
    /// No file activity for this long.
    ProgressCheck(Duration),
    /// A WebAssembly plugin decides, on what the rule's literals and regex (if any) let through.
    Plugin,
    /// A fact, not a pattern: a shell or interpreter ran code that came from a network
    /// connection (its stdin a pipe a process that connected out wrote to; its `-c` argument
    /// what such a process wrote; a file such a process wrote, executed), however spelled.
    RemoteCode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    kind: Option<String>,
    /// One scope, or a list (`scope = ["output", "file_write"]`: secrets look everywhere).
    #[serde(default)]
    scope: Option<OneOrMany>,
    #[serde(default)]
    literals: Vec<String>,
    #[serde(default)]
    regex: Option<toml::Spanned<String>>,
    #[serde(default)]
    case_insensitive: bool,
    #[serde(default = "default_severity")]
    severity: Severity,
    #[serde(default)]
    priority: i32,
    #[serde(default = "default_cooldown")]
    cooldown_secs: f64,
    #[serde(default = "default_action")]
    action: Action,
    #[serde(default)]
    message: String,
    /// When an inject's message is typed: `interrupt` (now, the agent's interrupt key first) or
    /// `idle` (queued until the agent is idle; never dropped while it lives).
    #[serde(default)]
    deliver: Deliver,
    #[serde(default)]
    verify: Option<Verify>,
    #[serde(default)]
    after_secs: Option<f64>,
    #[serde(default)]
    redact: bool,
    /// file_write rules: judge only writes to source code (by the file's extension or name, or
    /// a shebang): docs, checklists, logs and data are not code left unfinished.
    #[serde(default)]
    code_only: bool,
    /// Whether a command or write this rule matches is refused before it happens where the
    /// agent's hook shows it first (default: a command when the rule denies, kills or freezes;
    /// a write when the rule acts at all, not when it only alerts).
    #[serde(default)]
    prevent: Option<bool>,
    /// A match counts only if its secret (the regex's first group, else the match) carries at
    /// least this many bits of Shannon entropy per character: `PASSWORD=changeme` is not a
    /// secret worth a report, `API_TOKEN=9fQ2…` is.
    #[serde(default)]
    min_entropy: Option<f64>,
    /// file_write and claim rules: paths whose writes are not the agent's work (default:
    /// `AGENT_STATE`); `[]` looks everywhere.
    #[serde(default)]
    ignore_paths: Option<Vec<String>>,
    #[serde(default = "default_enabled")]
    enabled: bool,
    /// `kind = "plugin"`: the module (relative to the rule file's directory).
    #[serde(default)]
    plugin: Option<toml::Spanned<String>>,
    /// A plugin call's limits (defaults: the sandbox's `Limits::PLUGIN`).
    #[serde(default)]
    fuel: Option<u64>,
    #[serde(default)]
    memory_mib: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Scope),
    Many(Vec<Scope>),
}

/// Shannon entropy of `s`, in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

fn default_severity() -> Severity {
    Severity::Medium
}
fn default_cooldown() -> f64 {
    30.0
}
fn default_action() -> Action {
    Action::Alert
}
fn default_enabled() -> bool {
    true
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub kind: Kind,
    /// Every scope it looks at.
    pub scopes: Vec<Scope>,
    /// The least entropy (bits per character) of a match's secret.
    pub min_entropy: Option<f64>,
    pub literals: Vec<String>,
    pub case_insensitive: bool,
    pub regex: Option<regex::Regex>,
    pub severity: Severity,
    pub priority: i32,
    pub cooldown: Duration,
    pub action: Action,
    pub message: String,
    pub deliver: Deliver,
    /// Matched text is secret: report and store it redacted.
    pub redact: bool,
    /// `code_only`: writes to files that are not source code are not judged by it.
    pub code_only: bool,
    /// `prevent`: refuse what it matches at the agent's hook, before it happens (`None`: by
    /// its action, see [`Rule::prevents`]).
    pub prevent: Option<bool>,
    /// `file:line` it came from.
    pub origin: String,
    /// `kind = "plugin"`: the loaded module.
    pub plugin: Option<Arc<RulePlugin>>,
    /// Writes under these paths are not the agent's work: not matched by a file_write rule,
    /// not counted by a claim's check.
    pub ignore: PathFilter,
}

impl Rule {
    /// Whether this rule judges a write to `path` whose content (or its first bytes) is
    /// `text`: not under the paths it ignores, and source code when it asks for code only.
    pub fn judges_file(&self, path: &str, text: &str) -> bool {
        !self.ignore.matches(path) && (!self.code_only || paths::is_code(path, text))
    }

    /// Whether a command (`Scope::Exec`) or write (`Scope::FileWrite`) this rule matches is
    /// refused at the agent's hook, before it happens: as `prevent` says, else a command when
    /// the rule would deny, kill or freeze it, and a write when the rule acts on the agent at
    /// all (its message now, before the file exists, rather than after). A plugin's decision
    /// needs the event, which a hook does not have.
    pub fn prevents(&self, scope: Scope) -> bool {
        if self.plugin.is_some() {
            return false;
        }
        self.prevent.unwrap_or(match scope {
            Scope::Exec => matches!(self.action, Action::Deny | Action::Kill | Action::Freeze),
            _ => self.action != Action::Alert,
        })
    }

    /// Whether a hook refuses by this rule a call in `scope` that writes `text` (to `path`, for
    /// a write): the rule prevents there, and judges that file. What the call only keeps of the
    /// file is the caller's to leave out (`added`).
    pub fn refuses(&self, scope: Scope, path: Option<&str>, text: &str) -> bool {
        self.prevents(scope)
            && (scope == Scope::Exec || path.is_none_or(|p| self.judges_file(p, text)))
    }
}

/// Whether the words at `start` in `text` are asserted, as a claim is: not in a question, and not
/// after an intent or a condition earlier in their sentence ("Then I can make sure the tests
/// pass", "once the tests pass", "I'll check that all tests pass").
pub fn asserted(text: &str, start: usize) -> bool {
    let stops = |c: char| matches!(c, '.' | '!' | '?' | '\n');
    let head = text.get(..start).unwrap_or("");
    let from = head
        .char_indices()
        .rev()
        .find(|(i, c)| stops(*c) && (*c != '.' || head[i + 1..].starts_with(char::is_whitespace)))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let before = head[from..].to_lowercase();
    let tail = text.get(start..).unwrap_or("");
    let end = tail
        .char_indices()
        .find(|(i, c)| {
            matches!(c, '!' | '?' | '\n')
                || (*c == '.' && tail[i + 1..].chars().next().is_none_or(char::is_whitespace))
        })
        .map(|(_, c)| c);
    if end == Some('?') {
        return false;
    }
    const INTENT: [&str; 20] = [
        "make sure",
        "ensure",
        "until",
        "if ",
        "once ",
        "so that",
        "will ",
        "i'll ",
        "should",
        "could",
        "would",
        "can ",
        "need to",
        "needs to",
        "want",
        "let's",
        "let me",
        "going to",
        "whether",
        "verify",
    ];
    let words = format!(" {before}");
    !INTENT.iter().any(|w| words.contains(&format!(" {w}")))
}

/// Whether `matched` is a write's own: it occurs more often in what the write puts in (`text`)
/// than in what it replaces (an edit that keeps a TODO already in the file, quoted as context,
/// adds none).
pub fn added(text: &str, replaced: &str, matched: &str) -> bool {
    matched.is_empty() || text.matches(matched).count() > replaced.matches(matched).count()
}

/// The lines of `text` that `replaced` does not hold, each line of `replaced` answering for
/// one equal line of `text`: what a write adds (a whole-file write over the file it replaces,
/// an edit's new string over its old one), where a finding is the agent's.
pub fn new_lines(text: &str, replaced: &str) -> String {
    let mut old: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for l in replaced.lines() {
        *old.entry(l).or_default() += 1;
    }
    let mut out = String::new();
    for l in text.lines() {
        match old.get_mut(l) {
            Some(n) if *n > 0 => *n -= 1,
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// A rule file's error: `file:line: reason`, or it could not be read.
pub type RuleError = axiom_proto::file_error::FileError;

/// Parses one rule file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Rule>, RuleError> {
    let src = Source { text, origin };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        src.at(offset, e.message().to_string())
    })?;
    let mut out: Vec<Rule> = Vec::new();
    for spanned in raw.rule {
        let start = spanned.span().start;
        let r = spanned.into_inner();
        if !r.enabled {
            continue;
        }
        if out.iter().any(|o| o.id == r.id) {
            return Err(src.at(start, format!("rule {:?}: duplicate id", r.id)));
        }
        out.push(compile(r, &src, start)?);
    }
    Ok(out)
}

/// The rule file being parsed, to place errors in it.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    fn at(&self, offset: usize, reason: String) -> RuleError {
        RuleError::at(self.origin, self.text, offset, reason)
    }
}

/// One rule as written (starting at byte `start`), checked and compiled.
fn compile(r: RawRule, src: &Source, start: usize) -> Result<Rule, RuleError> {
    let err = |reason: String| src.at(start, format!("rule {:?}: {reason}", r.id));
    if r.id.is_empty()
        || !r
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(err(
            "id must be non-empty letters, digits, '-' or '_'".into()
        ));
    }
    let regex = rule_regex(&r, src)?;
    let kind = rule_kind(&r).map_err(err)?;
    let scopes: Vec<Scope> = match &r.scope {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![*s],
        Some(OneOrMany::Many(v)) => v.clone(),
    };
    check_fields(&r, &kind, &scopes, regex.is_some()).map_err(err)?;
    let plugin = rule_plugin(&r, &kind, src, start)?;
    Ok(Rule {
        origin: format!("{}:{}", src.origin, line_of(src.text, start)),
        id: r.id,
        description: r.description,
        kind,
        scopes,
        min_entropy: r.min_entropy,
        literals: r.literals,
        case_insensitive: r.case_insensitive,
        regex,
        severity: r.severity,
        priority: r.priority,
        cooldown: Duration::from_secs_f64(r.cooldown_secs),
        action: r.action,
        message: r.message,
        deliver: r.deliver,
        redact: r.redact,
        prevent: r.prevent,
        code_only: r.code_only,
        plugin,
        ignore: match &r.ignore_paths {
            Some(p) => PathFilter::new(p),
            None => PathFilter::agent_state(),
        },
    })
}

/// The rule's regex, compiled (bounded in size); errors point at the regex.
fn rule_regex(r: &RawRule, src: &Source) -> Result<Option<regex::Regex>, RuleError> {
    let Some(s) = &r.regex else {
        return Ok(None);
    };
    regex::RegexBuilder::new(s.get_ref())
        .case_insensitive(r.case_insensitive)
        .size_limit(1 << 20)
        .build()
        .map(Some)
        .map_err(|e| {
            src.at(
                s.span().start,
                format!(
                    "rule {:?}: bad regex: {}",
                    r.id,
                    e.to_string().lines().last().unwrap_or("")
                ),
            )
        })
}

/// What the rule is, with what that kind needs (a claim's check, a timeout's seconds).
fn rule_kind(r: &RawRule) -> Result<Kind, String> {
    Ok(match r.kind.as_deref().unwrap_or("match") {
        "match" => Kind::Match,
        "claim" => Kind::Claim(
            r.verify
                .ok_or("a claim needs verify = \"files_written\" or \"tests_ran\"")?,
        ),
        "plugin" => Kind::Plugin,
        "remote_code" => Kind::RemoteCode,
        k @ ("planning_timeout" | "progress_check") => {
            let secs = r
                .after_secs
                .filter(|s| *s > 0.0 && s.is_finite())
                .ok_or_else(|| format!("{k} needs after_secs > 0"))?;
            let d = Duration::from_secs_f64(secs);
            if k == "planning_timeout" {
                Kind::PlanningTimeout(d)
            } else {
                Kind::ProgressCheck(d)
            }
        }
        other => {
            return Err(format!(
                "unknown kind {other:?} (match, claim, plugin, planning_timeout, progress_check, remote_code)"
            ));
        }
    })
}

/// The fields that must agree with each other and with the kind.
fn check_fields(r: &RawRule, kind: &Kind, scopes: &[Scope], regex: bool) -> Result<(), String> {
    if let Some(e) = r.min_entropy
        && !(e.is_finite() && (0.0..=8.0).contains(&e))
    {
        return Err("min_entropy must be 0..=8 bits per character".into());
    }
    if matches!(kind, Kind::Match | Kind::Claim(_) | Kind::Plugin) {
        if scopes.is_empty() {
            return Err(format!("needs a scope ({SCOPE_NAMES})"));
        }
        // A plugin sees every event of its scope unless literals or a regex narrow it.
        if *kind != Kind::Plugin && r.literals.is_empty() && !regex {
            return Err("needs literals, a regex, or both".into());
        }
        if r.literals.iter().any(|l| l.is_empty()) {
            return Err("an empty literal matches everything".into());
        }
    }
    if r.prevent == Some(true)
        && (*kind == Kind::Plugin
            || !scopes
                .iter()
                .any(|s| matches!(s, Scope::Exec | Scope::FileWrite)))
    {
        return Err(
            "prevent = true needs a pattern rule of scope exec or file_write (what hooks see)"
                .into(),
        );
    }
    if r.action == Action::Inject && r.message.trim().is_empty() {
        return Err("action inject needs a message".into());
    }
    if !(r.cooldown_secs >= 0.0 && r.cooldown_secs.is_finite()) {
        return Err("cooldown_secs must be ≥ 0".into());
    }
    Ok(())
}

/// A plugin rule's module, beside the rule file; `plugin` is for plugin rules only.
fn rule_plugin(
    r: &RawRule,
    kind: &Kind,
    src: &Source,
    start: usize,
) -> Result<Option<Arc<RulePlugin>>, RuleError> {
    match (kind, &r.plugin) {
        (Kind::Plugin, Some(file)) => {
            let at_file =
                |reason: String| src.at(file.span().start, format!("rule {:?}: {reason}", r.id));
            let limits = plugin_limits(r).map_err(at_file)?;
            let base = Path::new(src.origin).parent().unwrap_or(Path::new("."));
            let path = base.join(file.get_ref());
            Ok(Some(Arc::new(
                RulePlugin::load(path, limits).map_err(at_file)?,
            )))
        }
        (Kind::Plugin, None) => Err(src.at(
            start,
            format!("rule {:?}: kind plugin needs plugin = \"file.wasm\"", r.id),
        )),
        (_, Some(file)) => Err(src.at(
            file.span().start,
            format!("rule {:?}: plugin is only for kind = \"plugin\"", r.id),
        )),
        (_, None) => Ok(None),
    }
}

/// A plugin rule's limits as written (`fuel`, `memory_mib`, `timeout_ms`), checked; unset ones
/// keep the sandbox's defaults.
fn plugin_limits(r: &RawRule) -> Result<PluginLimits, String> {
    if r.fuel == Some(0) {
        return Err("fuel must be > 0".into());
    }
    if r.memory_mib.is_some_and(|m| !(1..=4096).contains(&m)) {
        return Err("memory_mib must be 1..=4096".into());
    }
    if r.timeout_ms == Some(0) {
        return Err("timeout_ms must be > 0".into());
    }
    Ok(PluginLimits {
        fuel: r.fuel,
        memory_mib: r.memory_mib,
        timeout_ms: r.timeout_ms,
    })
}

/// A hit of one rule in one text.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// Index into `RuleSet::rules`.
    pub rule: usize,
    pub start: usize,
    pub end: usize,
}

/// Literal prefilter per scope: one Aho–Corasick automaton over every rule's literals.
#[derive(Debug, Default)]
struct ScopeIndex {
    ac: Option<aho_corasick::AhoCorasick>,
    /// Rule of each automaton pattern.
    owner: Vec<usize>,
    /// Rules with a regex and no literals: always run.
    always: Vec<usize>,
    /// The longest literal's length in bytes: a match that ends past an offset starts at most
    /// this far before it.
    longest: usize,
}

/// One automaton over rules' literals, ignoring ASCII case (a case-sensitive rule checks the
/// bytes of each match itself).
fn literal_automaton<P: AsRef<[u8]>>(pats: &[P]) -> Result<aho_corasick::AhoCorasick, RuleError> {
    aho_corasick::AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .build(pats)
        .map_err(|e| RuleError::At {
            origin: "rules".into(),
            line: 0,
            reason: e.to_string(),
        })
}

/// The literals of every `redact` rule in one automaton: every write is checked for secrets
/// before it leaves the reader, and one pass over it replaced one `contains` per literal (with a
/// lowercased copy of the text per literal of a case-insensitive rule).
#[derive(Debug, Default)]
struct SecretIndex {
    ac: Option<aho_corasick::AhoCorasick>,
    /// (rule, literal) of each automaton pattern.
    owner: Vec<(usize, usize)>,
    /// `redact` rules without literals: their regex always runs.
    always: Vec<usize>,
}

impl SecretIndex {
    fn build(rules: &[Rule]) -> Result<SecretIndex, RuleError> {
        let mut ix = SecretIndex::default();
        let mut pats = Vec::new();
        for (i, r) in rules.iter().enumerate().filter(|(_, r)| r.redact) {
            if r.literals.is_empty() {
                ix.always.push(i);
            }
            for (j, l) in r.literals.iter().enumerate() {
                pats.push(l.as_str());
                ix.owner.push((i, j));
            }
        }
        if !pats.is_empty() {
            ix.ac = Some(literal_automaton(&pats)?);
        }
        Ok(ix)
    }

    /// The `redact` rules whose literal is in `text` (as each rule's case asks), and those
    /// without literals; in rule order.
    fn candidates(&self, rules: &[Rule], text: &str) -> Vec<usize> {
        let mut out = self.always.clone();
        if let Some(ac) = &self.ac {
            for m in ac.find_overlapping_iter(text) {
                let (i, j) = self.owner[m.pattern().as_usize()];
                let r = &rules[i];
                if !out.contains(&i)
                    && (r.case_insensitive
                        || text.as_bytes().get(m.range()) == Some(r.literals[j].as_bytes()))
                {
                    out.push(i);
                }
            }
        }
        out.sort_unstable();
        out
    }
}

/// Every active rule, compiled.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    index: Vec<(Scope, ScopeIndex)>,
    secrets: SecretIndex,
    /// The literals of output rules, for the kernel (`None`: there are none).
    pub kernel: Option<dfa::KernelDfa>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> Result<RuleSet, RuleError> {
        let mut seen = HashSet::new();
        for r in &rules {
            if !seen.insert(r.id.clone()) {
                return Err(RuleError::At {
                    origin: r.origin.clone(),
                    line: 0,
                    reason: format!("rule {:?} is defined twice", r.id),
                });
            }
        }
        let mut index = Vec::new();
        for scope in SCOPES {
            let mut ix = ScopeIndex::default();
            let mut pats = Vec::new();
            for (i, r) in rules.iter().enumerate() {
                if !r.scopes.contains(&scope)
                    || !matches!(r.kind, Kind::Match | Kind::Claim(_) | Kind::Plugin)
                {
                    continue;
                }
                if r.literals.is_empty() {
                    ix.always.push(i);
                }
                for l in &r.literals {
                    pats.push(l.clone());
                    ix.owner.push(i);
                    ix.longest = ix.longest.max(l.len());
                }
            }
            if !pats.is_empty() {
                ix.ac = Some(literal_automaton(&pats)?);
            }
            index.push((scope, ix));
        }
        // What writes carry is scanned in the kernel: output and file-write literals of the
        // rules a kernel match settles on its own (no regex to run after it) and of `deny`
        // rules (the write is stopped before it lands). A literal that only prefilters a regex
        // gains nothing there: the captured bytes go through the regex anyway. Terminal rules
        // are not among them: a TUI paints a phrase with cursor moves between its words, so it
        // is never contiguous in the bytes the kernel sees.
        let patterns: Vec<dfa::Pattern> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.action == Action::Deny || r.regex.is_none())
            .filter(|(_, r)| {
                r.scopes
                    .iter()
                    .any(|s| matches!(s, Scope::Output | Scope::FileWrite))
                    && matches!(r.kind, Kind::Match | Kind::Claim(_))
            })
            .flat_map(|(i, r)| {
                r.literals.iter().map(move |l| dfa::Pattern {
                    bytes: l.as_bytes().to_vec(),
                    rule: i,
                    deny: r.action == Action::Deny,
                })
            })
            .collect();
        let kernel = if patterns.is_empty() {
            None
        } else {
            Some(
                dfa::KernelDfa::build(patterns).map_err(|reason| RuleError::At {
                    origin: "rules".into(),
                    line: 0,
                    reason,
                })?,
            )
        };
        Ok(RuleSet {
            secrets: SecretIndex::build(&rules)?,
            rules,
            index,
            kernel,
        })
    }

    /// Loads every `*.toml` in each directory (in name order; directories that do not exist
    /// are skipped) and single files.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<RuleSet, RuleError> {
        let mut rules = Vec::new();
        for p in paths {
            let p = p.as_ref();
            let files: Vec<std::path::PathBuf> = if p.is_dir() {
                let mut v: Vec<_> = std::fs::read_dir(p)
                    .map_err(|source| RuleError::Io {
                        path: p.display().to_string(),
                        source,
                    })?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                    .collect();
                v.sort();
                v
            } else if p.exists() {
                vec![p.to_path_buf()]
            } else {
                continue;
            };
            for f in files {
                let text = std::fs::read_to_string(&f).map_err(|source| RuleError::Io {
                    path: f.display().to_string(),
                    source,
                })?;
                rules.extend(parse(&text, &f.display().to_string())?);
            }
        }
        RuleSet::new(rules)
    }

    /// Whether any matching rule looks at `scope` (the screen model is not run for nothing).
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.index
            .iter()
            .any(|(s, ix)| *s == scope && (ix.ac.is_some() || !ix.always.is_empty()))
    }

    /// Rules that hit `text` in `scope`, highest priority first; at most one hit per rule.
    pub fn scan(&self, scope: Scope, text: &str) -> Vec<Hit> {
        self.scan_from(scope, text, 0)
    }

    /// The hit of the rule that refuses a call at an agent's hook, before it happens: the one
    /// of highest priority among those that prevent it (`Rule::prevents`), for a write only for
    /// what it adds (`text` and not `replaced`: an edit that keeps a TODO already in the file
    /// adds none) and outside the files the rule does not judge.
    pub fn refusal(
        &self,
        scope: Scope,
        text: &str,
        path: Option<&str>,
        replaced: &str,
    ) -> Option<Hit> {
        self.scan(scope, text)
            .into_iter()
            .filter(|h| {
                self.rules[h.rule].refuses(scope, path, text)
                    && (scope == Scope::Exec
                        || added(text, replaced, text.get(h.start..h.end).unwrap_or("")))
            })
            .max_by_key(|h| self.rules[h.rule].priority)
    }

    /// Like `scan`, for hits that end after byte `from` (text before it is context: the tail
    /// of earlier writes, already scanned).
    pub fn scan_from(&self, scope: Scope, text: &str, from: usize) -> Vec<Hit> {
        self.hits(scope, text, from, false)
    }

    /// Every hit of every rule in `text`, highest priority first, each rule's in order and not
    /// overlapping: one pass of the automaton and of each rule's regex, where asking `scan_from`
    /// again past each hit rescanned the rest of the text once per hit (a screen full of old,
    /// already judged text made that quadratic).
    pub fn scan_every(&self, scope: Scope, text: &str) -> Vec<Hit> {
        self.hits(scope, text, 0, true)
    }

    /// The hits ending after `from`: every one of each rule with `every`, else its first.
    fn hits(&self, scope: Scope, text: &str, from: usize, every: bool) -> Vec<Hit> {
        let Some((_, ix)) = self.index.iter().find(|(s, _)| *s == scope) else {
            return Vec::new();
        };
        // Each rule whose literal is in the text, with where its literals matched.
        let mut candidates: Vec<(usize, Vec<(usize, usize)>)> = Vec::new();
        if let Some(ac) = &ix.ac {
            // The context before `from` was scanned with its own write: only a match that
            // reaches past it is new, and it starts at most `longest` bytes before it.
            let start = from.saturating_sub(ix.longest).min(text.len());
            let input = aho_corasick::Input::new(text).span(start..text.len());
            for m in ac.find_overlapping_iter(input) {
                if m.end() <= from {
                    continue;
                }
                let rule = ix.owner[m.pattern().as_usize()];
                let r = &self.rules[rule];
                // The automaton ignores ASCII case; a case-sensitive rule checks the bytes.
                if !r.case_insensitive
                    && !r
                        .literals
                        .iter()
                        .any(|l| text[m.start()..].starts_with(l.as_str()))
                {
                    continue;
                }
                match candidates.iter_mut().find(|c| c.0 == rule) {
                    Some((_, spans)) => {
                        // A regex decides over the whole text: one literal is enough.
                        if every && r.regex.is_none() {
                            spans.push((m.start(), m.end()));
                        }
                    }
                    None => candidates.push((rule, vec![(m.start(), m.end())])),
                }
            }
        }
        candidates.extend(ix.always.iter().map(|r| (*r, vec![(0, 0)])));
        let mut hits = Vec::new();
        for (rule, mut spans) in candidates {
            match &self.rules[rule].regex {
                // The literal is a prefilter; the regex decides, over the whole window.
                Some(re) => {
                    let mut found = matches(&self.rules[rule], re, text)
                        .filter(|(_, e)| *e > from)
                        .map(|(start, end)| Hit { rule, start, end });
                    if every {
                        hits.extend(found);
                    } else if let Some(h) = found.next() {
                        hits.push(h);
                    }
                }
                None => {
                    // The automaton reports matches by where they end; a rule's hits are
                    // taken from the left, one after another.
                    spans.sort_unstable();
                    let mut after = 0;
                    for (start, end) in spans {
                        if start < after {
                            continue;
                        }
                        hits.push(Hit { rule, start, end });
                        after = end.max(start + 1);
                        if !every {
                            break;
                        }
                    }
                }
            }
        }
        hits.sort_by_key(|h| std::cmp::Reverse(self.rules[h.rule].priority));
        hits
    }
}

/// The scope of a write's bytes, from what its fd points at: a file (a path, not a device), or
/// output (terminal, pipe, socket).
pub fn write_scope(target: Option<&str>) -> Scope {
    if target.is_some_and(|t| t.starts_with('/') && !t.starts_with("/dev/")) {
        Scope::FileWrite
    } else {
        Scope::Output
    }
}

/// A terminal device: a pseudo-terminal or a console.
pub fn is_terminal(target: Option<&str>) -> bool {
    target.is_some_and(|t| t.starts_with("/dev/pts/") || t.starts_with("/dev/tty"))
}

/// What the sensor names a pipe the agent made itself (seen in the kernel): a channel between
/// its own processes, `pipe:[agent:N]`, numbered in the order the sensor saw pipes made, so
/// that the process writing a pipe and the one reading it are known to share it (a download
/// piped into a shell). Records from before pipes were numbered name them all `pipe:[agent]`.
/// A pipe or socket the agent inherited is named as /proc names it (`pipe:[inode]`): it may
/// lead out of the agent.
pub const LOCAL_PIPE: &str = "pipe:[agent";
/// What the sensor names a socketpair the agent made itself.
pub const LOCAL_SOCKET: &str = "socket:[agent]";

/// The name of the `n`th pipe the agent made (see `LOCAL_PIPE`).
pub fn local_pipe(n: u64) -> String {
    format!("{LOCAL_PIPE}:{n}]")
}

/// A pipe whose name tells it apart from the agent's other pipes: numbered (`pipe:[agent:N]`)
/// or named by its inode (`pipe:[N]`), not the unnumbered `pipe:[agent]` of older records.
pub fn is_known_pipe(target: &str) -> bool {
    target.starts_with("pipe:[") && target != "pipe:[agent]"
}

/// A socket (its payload is network scope), not a socketpair between the agent's processes.
pub fn is_socket(target: Option<&str>) -> bool {
    target.is_some_and(|t| t.starts_with("socket:") && t != LOCAL_SOCKET)
}

/// A channel between the agent's own processes (a pipe, a socketpair): what crosses it has not
/// left the agent.
pub fn is_local_channel(target: Option<&str>) -> bool {
    target.is_some_and(|t| t.starts_with(LOCAL_PIPE) || t == LOCAL_SOCKET)
}

/// What an offline check (`axiomctl rules test`, the MCP `principles` tool) matches for a sample
/// of `scope`: a terminal sample goes through the screen model, output through the ANSI
/// stripper, anything else as it is. Returns the text matched and the hits.
pub fn scan_sample(set: &RuleSet, scope: Scope, raw: &str) -> (String, Vec<Hit>) {
    let text = match scope {
        Scope::Terminal => {
            let mut s = screen::Screen::default();
            // A sample file's lines end in \n alone: the terminal's line discipline adds \r.
            s.feed(raw.replace('\n', "\r\n").as_bytes()).text
        }
        Scope::Output | Scope::Network => strip_ansi(raw),
        _ => raw.to_string(),
    };
    let hits = set.scan(scope, &text);
    (text, hits)
}

/// The (start, end) of each match of a rule's regex in `text`. With `min_entropy`, only those
/// whose secret (the first group, else the match) carries that much; without it the plain
/// search (no capture groups to resolve: the hot path).
fn matches<'t>(
    r: &Rule,
    re: &'t regex::Regex,
    text: &'t str,
) -> Box<dyn Iterator<Item = (usize, usize)> + 't> {
    match r.min_entropy {
        None => Box::new(re.find_iter(text).map(|m| (m.start(), m.end()))),
        Some(min) => Box::new(re.captures_iter(text).filter_map(move |c| {
            let all = c.get(0)?;
            let secret = c.get(1).unwrap_or(all).as_str();
            (entropy(secret) >= min).then_some((all.start(), all.end()))
        })),
    }
}

/// The mask put where a secret was.
pub const MASK: &str = "[REDACTED]";

impl RuleSet {
    /// Masks every match of a `redact` rule of `scope` in `text`. Returns the masked text and
    /// the ids of the rules that matched, or `None` when nothing matched (the common case: the
    /// rules' literals are checked first).
    /// `scope: None` applies every `redact` rule, whatever its scope (command lines).
    pub fn redact(&self, scope: Option<Scope>, text: &str) -> Option<(String, Vec<String>)> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut ids = Vec::new();
        for r in self
            .secrets
            .candidates(&self.rules, text)
            .into_iter()
            .map(|i| &self.rules[i])
            .filter(|r| scope.is_none_or(|s| r.scopes.contains(&s)))
        {
            let before = spans.len();
            match &r.regex {
                Some(re) => spans.extend(matches(r, re, text)),
                None => {
                    for l in &r.literals {
                        spans.extend(
                            text.match_indices(l.as_str())
                                .map(|(i, m)| (i, i + m.len())),
                        );
                    }
                }
            }
            // A secret an earlier (more specific) rule already found is that rule's: a generic
            // rule that overlaps it masks, but does not report it again.
            let (known, found) = spans.split_at(before);
            if found
                .iter()
                .any(|(s, e)| !known.iter().any(|(ks, ke)| s < ke && ks < e))
            {
                ids.push(r.id.clone());
            }
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (s, e) in spans {
            if e <= at {
                continue;
            }
            out.push_str(&text[at..s.max(at)]);
            out.push_str(MASK);
            at = e;
        }
        out.push_str(&text[at..]);
        Some((out, ids))
    }
}

/// Whether a command line (argv joined by spaces) runs tests: [`testrun::test_runner`] on its
/// words (the rules' claim check and `axiomctl mcp`'s verify use the same recognition).
pub fn is_test_command(line: &str) -> bool {
    testrun::test_runner(&line.split_whitespace().collect::<Vec<_>>(), None).is_some()
}

/// What a hit looks like in a report: the match with some context, secrets masked.
pub fn excerpt(text: &str, hit: &Hit, redact: bool) -> String {
    let lo = floor_char(text, hit.start.saturating_sub(60));
    let hi = ceil_char(text, (hit.end + 60).min(text.len()));
    let (s, e) = (floor_char(text, hit.start), ceil_char(text, hit.end));
    let matched = if redact {
        let m = &text[s..e];
        let keep: String = m.chars().take(4).collect();
        format!(
            "{keep}…[redacted {} chars]",
            m.chars().count().saturating_sub(4)
        )
    } else {
        text[s..e].to_string()
    };
    format!("{}«{}»{}", &text[lo..s], matched, &text[e..hi]).replace(['\n', '\r'], " ")
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

#[cfg(test)]
mod tests;
