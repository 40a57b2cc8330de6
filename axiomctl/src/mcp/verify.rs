//! What the kernel saw an agent do, set against what it (or the caller) says it did: each claim
//! is supported, contradicted or left unverified, with the evidence.
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::{
    journal::{Command, Facts},
    spawn::Baseline,
};

/// One file as `verify` reports it.
#[derive(Serialize, Clone, Debug)]
pub struct FileChange {
    pub path: String,
    /// created, modified, deleted, written (created or modified: the workspace was not listed
    /// before the agent started), or opened (for writing, nothing written).
    pub change: &'static str,
    pub writes: u64,
    pub bytes: u64,
    pub ops: Vec<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct ClaimCheck {
    pub claim: String,
    /// supported, contradicted or unverified.
    pub verdict: &'static str,
    pub evidence: String,
}

/// The files an agent changed, classified against the workspace as it was before it started.
pub fn files(f: &Facts, baseline: Option<&Baseline>) -> Vec<FileChange> {
    f.files
        .iter()
        .map(|(path, x)| {
            let wrote = x.writes > 0
                || x.ops.iter().any(|o| {
                    o != "open" && o != "unlink" && o != "rmdir" && !o.starts_with("rename")
                });
            let change = if x.removed {
                "deleted"
            } else if x.surely_created {
                "created"
            } else if !wrote {
                "opened"
            } else {
                match baseline.and_then(|b| b.existed(path)) {
                    Some(true) => "modified",
                    Some(false) => "created",
                    None => "written",
                }
            };
            FileChange {
                path: path.clone(),
                change,
                writes: x.writes,
                bytes: x.bytes,
                ops: x.ops.iter().cloned().collect(),
            }
        })
        .collect()
}

static SENTENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)[^\n]+?(?:[.!?]+(?:[ \t]|$)|$)").unwrap_or_else(|_| unreachable!())
});
/// A sentence that claims work was done.
static CLAIM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:i'?ve|i have|i|we'?ve|we have)\s+(?:now\s+|successfully\s+|also\s+)*(?:created|implemented|written|wrote|added|built|fixed|updated|modified|changed|ran|run|tested|deleted|removed|completed|finished)\b|\b(?:all\s+)?tests?\s+(?:now\s+)?(?:pass|passed|passing|succeed|succeeded|are\s+green)\b|\b(?:done|complete[d]?)\b")
        .unwrap_or_else(|_| unreachable!())
});
static TESTS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\btests?\b.*\b(?:pass|passed|passing|succeed|succeeded|green|ran|run)\b|\b(?:ran|run)\b.*\btests?\b")
        .unwrap_or_else(|_| unreachable!())
});
static WROTE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:created|implemented|written|wrote|added|built|fixed|updated|modified|changed|done|complete[d]?|finished)\b")
        .unwrap_or_else(|_| unreachable!())
});
static DELETED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(?:deleted|removed)\b").unwrap_or_else(|_| unreachable!()));
/// A file name or path: something with a slash, or a name with an extension.
static PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:[\w.-]*/)+[\w.-]+|\b[\w-]+\.[A-Za-z][A-Za-z0-9]{0,7}\b")
        .unwrap_or_else(|_| unreachable!())
});
/// A command quoted in backticks.
static QUOTED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"`([^`\n]+)`").unwrap_or_else(|_| unreachable!()));

/// The sentences of `text` that claim something was done.
pub fn claims_in(text: &str) -> Vec<String> {
    let text = axiom_rules::strip_ansi(text);
    let mut out: Vec<String> = SENTENCE
        .find_iter(&text)
        .map(|m| m.as_str().trim().to_string())
        .filter(|s| CLAIM.is_match(s))
        .collect();
    out.dedup();
    out
}

fn shown(c: &Command) -> String {
    let line = c.argv.join(" ");
    let ended = match (c.exit_code, c.signal) {
        (Some(code), _) => format!("exited {code}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "still running or not seen to end".into(),
    };
    format!("`{line}` (pid {}) {ended}", c.pid)
}

/// Checks one claim against the facts.
pub fn check(claim: &str, f: &Facts, changes: &[FileChange]) -> ClaimCheck {
    let verdict = |v: &'static str, evidence: String| ClaimCheck {
        claim: claim.to_string(),
        verdict: v,
        evidence,
    };
    // Commands it says it ran, quoted.
    for q in QUOTED.captures_iter(claim) {
        let wanted = q[1].trim();
        if PATH.find(wanted).is_some_and(|m| m.as_str() == wanted) {
            continue; // a file name in backticks
        }
        let runs: Vec<&Command> = f
            .commands
            .iter()
            .filter(|c| c.argv.join(" ").contains(wanted))
            .collect();
        return match runs.last() {
            None => verdict(
                "contradicted",
                format!("no command `{wanted}` was run by the agent"),
            ),
            Some(c) if c.exit_code == Some(0) => verdict("supported", shown(c)),
            Some(c) => verdict("contradicted", shown(c)),
        };
    }
    if TESTS.is_match(claim) {
        let tests: Vec<&Command> = f
            .commands
            .iter()
            .filter(|c| axiom_rules::is_test_command(&c.argv.join(" ")))
            .collect();
        return match tests.last() {
            None => verdict(
                "contradicted",
                format!("no test command ran ({} commands seen)", f.commands.len()),
            ),
            Some(c) if c.exit_code == Some(0) => verdict("supported", shown(c)),
            Some(c) => verdict("contradicted", format!("the last test run: {}", shown(c))),
        };
    }
    // Files it names.
    let named: Vec<&str> = PATH
        .find_iter(claim)
        .map(|m| m.as_str().trim_end_matches(['.', ',', ':', ';']))
        .filter(|p| !p.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .collect();
    let deleting = DELETED.is_match(claim);
    if !named.is_empty() && (WROTE.is_match(claim) || deleting) {
        let mut seen = Vec::new();
        let mut missing = Vec::new();
        for n in &named {
            let hit = changes.iter().find(|c| {
                c.path == *n
                    || c.path
                        .ends_with(&format!("/{}", n.trim_start_matches("./")))
            });
            match hit {
                Some(c) if deleting == (c.change == "deleted") && c.change != "opened" => {
                    seen.push(format!("{} {}", c.path, c.change))
                }
                Some(c) => missing.push(format!("{n}: only {}", c.change)),
                None => missing.push(format!("{n}: not touched")),
            }
        }
        return if missing.is_empty() {
            verdict("supported", seen.join("; "))
        } else {
            verdict(
                "contradicted",
                missing
                    .into_iter()
                    .chain(seen)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        };
    }
    if WROTE.is_match(claim) {
        let written: Vec<&FileChange> = changes
            .iter()
            .filter(|c| c.change != "opened" && c.change != "deleted")
            .collect();
        return if written.is_empty() {
            verdict("contradicted", "the agent wrote no file".to_string())
        } else {
            verdict(
                "supported",
                format!(
                    "{} file(s) written: {}",
                    written.len(),
                    written
                        .iter()
                        .take(5)
                        .map(|c| c.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        };
    }
    verdict(
        "unverified",
        "names no file, command or test the kernel record can confirm".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::journal::FileFact;

    fn facts() -> Facts {
        let mut f = Facts::default();
        let mut x = FileFact::default();
        x.ops.insert("open(O_CREAT)".into());
        x.ops.insert("write".into());
        x.writes = 1;
        x.bytes = 10;
        f.files.insert("/ws/src/main.py".into(), x);
        f.commands.push(Command {
            pid: 7,
            argv: vec!["pytest".into(), "-q".into()],
            cwd: None,
            time_ns: 1,
            exit_code: Some(1),
            signal: None,
        });
        f.commands.push(Command {
            pid: 8,
            argv: vec!["make".into(), "build".into()],
            cwd: None,
            time_ns: 2,
            exit_code: Some(0),
            signal: None,
        });
        f
    }

    #[test]
    fn claims_are_weighed_against_the_record() {
        let f = facts();
        let ch = files(&f, None);
        assert_eq!(ch[0].change, "written");
        let v = |c: &str| check(c, &f, &ch).verdict;
        assert_eq!(v("I've created src/main.py."), "supported");
        assert_eq!(v("I've created src/util.py."), "contradicted");
        assert_eq!(v("All tests pass."), "contradicted");
        assert_eq!(v("I ran `make build` and it worked."), "supported");
        assert_eq!(v("I ran `cargo fmt`."), "contradicted");
        assert_eq!(v("I've implemented the feature."), "supported");
        assert_eq!(v("The sky is blue."), "unverified");
        let none = Facts::default();
        assert_eq!(
            check("I've implemented it.", &none, &[]).verdict,
            "contradicted"
        );
    }

    #[test]
    fn claims_are_found_in_output() {
        let c = claims_in("Working...\nI've created hello.txt. Let me think. All tests pass!\n");
        assert_eq!(c, vec!["I've created hello.txt.", "All tests pass!"]);
    }
}
