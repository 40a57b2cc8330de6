//! What one agent has done, as far as the rules care: the facts a claim is checked against.
use std::time::Instant;

use axiom_rules::{PathFilter, Verify};

/// A test run: a process the kernel saw execute a test runner.
#[derive(Clone, Debug)]
pub(super) struct TestRun {
    /// The runner as people name it (`pytest`, `cargo test`).
    pub(super) runner: String,
    /// Its command line (shortened).
    pub(super) line: String,
    pub(super) started: Instant,
    /// The last summary line it printed ("2 passed in 0.03s").
    pub(super) summary: Option<String>,
}

/// How a test run ended.
struct Ended {
    at: Instant,
    /// Exit status 0.
    passed: bool,
    /// Its exit status (code, or the signal that ended it), for the evidence.
    status: String,
}

/// What one agent has done, as far as the rules care.
pub(super) struct Activity {
    pub(super) started: Instant,
    /// Its workspace: the work a claim is about is there.
    pub(super) workspace: Option<String>,
    pub(super) files_written: u64,
    pub(super) last_file: Instant,
    /// Its last write to its work (a file in the workspace that is not a tool's own): when,
    /// and which file.
    pub(super) last_work: Option<(Instant, String)>,
    /// Test runs going on, by process (tgid).
    pub(super) running: std::collections::HashMap<u32, TestRun>,
    /// The last test run that ended, and how.
    last_run: Option<(TestRun, Ended)>,
    /// Its last few command lines: the evidence when a claim about tests is refused.
    pub(super) commands: std::collections::VecDeque<String>,
    /// The files it wrote (their final names; at most `WRITTEN_MAX`): a claim that names the
    /// file it created is checked against them.
    written: std::collections::HashSet<String>,
    /// What its write tools said they add, by file (the hook's view, before the write): the
    /// latest `ANNOUNCED_MAX`.
    announced: std::collections::VecDeque<(String, Instant, String)>,
    /// Its downloads, and what ran them.
    pub(super) net: super::netexec::Net,
}

/// Write-tool calls remembered per agent.
const ANNOUNCED_MAX: usize = 32;

/// How long a write tool's call speaks for the write that follows it.
const ANNOUNCED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// The file a temporary file of an atomic write becomes (`app.py.tmp.81.9f2c` → `app.py`).
fn final_name(path: &str) -> &str {
    match path.find(".tmp.") {
        Some(i) => &path[..i],
        None => path.strip_suffix(".tmp").unwrap_or(path),
    }
}

/// Files remembered per agent for claims that name them.
const WRITTEN_MAX: usize = 4096;

/// The files a claim names as what it made: file-like words (a name with an extension, or a
/// path) in the clause after its verb ("I've created `src/app.py` and tests/test_app.py"), up
/// to the end of its sentence or a comma that goes on to something else (", following the
/// style of utils.py"). A file only mentioned elsewhere in the message is not claimed.
fn files_named(after: &str) -> Vec<String> {
    let is_file = |w: &str| {
        let Some((stem, ext)) = w.rsplit_once('.') else {
            return false;
        };
        !stem.is_empty()
            && !w.contains("://")
            && (1..=8).contains(&ext.len())
            && ext.chars().all(|c| c.is_ascii_alphanumeric())
            && ext.chars().any(|c| c.is_ascii_alphabetic())
            && w.chars().all(|c| c.is_alphanumeric() || "._-/".contains(c))
    };
    let mut out = Vec::new();
    let mut after_comma = false;
    for raw in after.split_whitespace() {
        // A file's name never ends with a full stop: one after it ends the sentence.
        let ends = raw.ends_with(['.', '!', '?', ';', ':']);
        let comma = raw.ends_with(',');
        let w = raw
            .trim_end_matches(['.', ',', '!', '?', ';', ':'])
            .trim_matches(|c: char| "`'\"()[]<>*".contains(c));
        let file = is_file(w);
        // After a comma the clause goes on only with another file, or "and"/"or".
        if after_comma && !file && !matches!(w, "and" | "or") {
            break;
        }
        if file {
            out.push(w.trim_start_matches("./").to_string());
        }
        if ends || raw.contains('\n') {
            break;
        }
        after_comma = comma;
    }
    out
}

impl Activity {
    pub(super) fn new(now: Instant) -> Activity {
        Activity {
            started: now,
            workspace: None,
            files_written: 0,
            last_file: now,
            last_work: None,
            running: std::collections::HashMap::new(),
            last_run: None,
            commands: std::collections::VecDeque::new(),
            written: std::collections::HashSet::new(),
            announced: std::collections::VecDeque::new(),
            net: Default::default(),
        }
    }

    /// Its hook showed a write tool about to add `added` to `path`.
    pub(super) fn announce(&mut self, path: &str, added: &str, now: Instant) {
        self.announced.retain(|(p, ..)| p != path);
        if self.announced.len() >= ANNOUNCED_MAX {
            self.announced.pop_front();
        }
        self.announced
            .push_back((path.to_string(), now, added.to_string()));
    }

    /// Whether `matched`, found in a write to `path`, is the agent's: yes, unless its write tool
    /// said lately what it adds to that file and `matched` is not in it (an edit rewrites the
    /// whole file; the TODO it only kept was there before).
    pub(super) fn added(&self, path: &str, matched: &str, now: Instant) -> bool {
        let path = final_name(path);
        self.announced
            .iter()
            .rev()
            .find(|(p, at, _)| p == path && now.duration_since(*at) <= ANNOUNCED_FOR)
            .is_none_or(|(_, _, added)| added.contains(matched))
    }

    /// A write to its work at `now` (`path`). Writes while a test run goes on are the run's
    /// (caches, reports, compiled files), not a change to what it tests.
    pub(super) fn wrote(&mut self, path: &str, now: Instant) {
        if self.running.is_empty() {
            self.last_work = Some((now, path.to_string()));
        }
        if self.written.len() < WRITTEN_MAX {
            self.written.insert(path.to_string());
        }
    }

    /// Whether it wrote a file by the name a claim gives (relative to anywhere it wrote).
    fn has_written(&self, named: &str) -> bool {
        self.written
            .iter()
            .any(|p| p == named || p.strip_suffix(named).is_some_and(|d| d.ends_with('/')))
    }

    /// Process `tgid` ended: if it was a test run, it is the last one now.
    pub(super) fn ended(
        &mut self,
        tgid: u32,
        code: Option<i32>,
        signal: Option<i32>,
        now: Instant,
    ) {
        if let Some(r) = self.running.remove(&tgid) {
            let status = match (code, signal) {
                (_, Some(s)) => format!("was killed by signal {s}"),
                (Some(c), _) => format!("exited {c}"),
                _ => "ended".into(),
            };
            let passed = code == Some(0) && signal.is_none();
            self.last_run = Some((
                r,
                Ended {
                    at: now,
                    passed,
                    status,
                },
            ));
        }
    }

    /// Why a claim that the tests pass does not hold (`None`: it does): a test run must have
    /// ended successfully after the agent's last write to its work.
    fn tests_contradicted(&self) -> Option<String> {
        let quote = |r: &TestRun, e: &Ended| {
            let summary = r
                .summary
                .as_deref()
                .map_or(String::new(), |s| format!(": \"{s}\""));
            format!("`{}` {}{summary}", r.line, e.status)
        };
        if let Some(r) = self.running.values().min_by_key(|r| r.started) {
            return Some(format!(
                "the kernel saw its {} run `{}` still running",
                r.runner, r.line
            ));
        }
        let Some((r, ended)) = &self.last_run else {
            let ran: Vec<&str> = self.commands.iter().map(String::as_str).collect();
            return Some(if ran.is_empty() {
                "the kernel saw this agent run no command at all".to_string()
            } else {
                format!(
                    "the kernel saw this agent run no test command (its last commands: {})",
                    ran.join("; ")
                )
            });
        };
        if !ended.passed {
            return Some(format!(
                "the kernel saw its last test run fail: {}",
                quote(r, ended)
            ));
        }
        match &self.last_work {
            Some((at, path)) if *at > ended.at => Some(format!(
                "the kernel saw it write {path} after its last test run ({}), and no test run since",
                quote(r, ended)
            )),
            _ => None,
        }
    }

    /// What the kernel saw that contradicts a claim (`None`: the claim holds). `after`: the
    /// claim's text after its verb, where the files it says it made are named.
    pub(super) fn contradicts(&self, verify: Verify, after: &str) -> Option<String> {
        let place = self
            .workspace
            .as_deref()
            .map_or(String::new(), |w| format!(" in {w}"));
        match verify {
            Verify::FilesWritten if self.files_written == 0 => Some(format!(
                "the kernel saw this agent write no file{place} since it started"
            )),
            Verify::FilesWritten => {
                let missing: Vec<String> = files_named(after)
                    .into_iter()
                    .filter(|f| !self.has_written(f))
                    .collect();
                (!missing.is_empty()).then(|| {
                    format!(
                        "the kernel saw this agent write no file named {}",
                        missing.join(" or ")
                    )
                })
            }
            Verify::TestsRan => self.tests_contradicted(),
        }
    }

    /// Whether writing `path` is the agent's work: in its workspace (when it has one: a real
    /// agent also writes its own scratch files in /tmp, its desktop entries, its sockets), and
    /// not what its tools keep for themselves there (git's internals, caches).
    pub(super) fn is_work(&self, path: &str) -> bool {
        let inside = self.workspace.as_deref().is_none_or(|w| {
            path.strip_prefix(w.trim_end_matches('/'))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        inside && !AGENT_STATE.matches(path)
    }
}

/// What tools write for themselves (claims do not count it as the agent's work).
pub(super) static AGENT_STATE: std::sync::LazyLock<PathFilter> =
    std::sync::LazyLock::new(PathFilter::agent_state);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_a_claim_names_are_those_after_its_verb_in_its_sentence() {
        assert_eq!(
            files_named(" `src/app.py` and tests/test_app.py. It follows utils.py."),
            ["src/app.py", "tests/test_app.py"]
        );
        assert_eq!(
            files_named(" the parser in ./parser.py, as asked"),
            ["parser.py"]
        );
        assert!(files_named(" the parser module with full test coverage.").is_empty());
        assert!(files_named(" support for v1.2 and https://example.com/a.html").is_empty());
    }

    #[test]
    fn a_claim_naming_a_file_holds_only_when_that_file_was_written() {
        let now = Instant::now();
        let mut a = Activity::new(now);
        a.files_written = 1;
        a.wrote("/w/src/parser.py", now);
        assert!(
            a.contradicts(Verify::FilesWritten, " src/parser.py.")
                .is_none()
        );
        assert!(a.contradicts(Verify::FilesWritten, " parser.py.").is_none());
        let e = a
            .contradicts(Verify::FilesWritten, " parser.py and tests/test_parser.py.")
            .expect("a file it did not write");
        assert!(e.contains("tests/test_parser.py"), "{e}");
        assert!(a.contradicts(Verify::FilesWritten, " xparser.py").is_some());
    }
}
