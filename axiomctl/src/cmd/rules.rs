//! `axiomctl rules list|reload|check|test`: the active rules, and rule files offline.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use axiom_proto::wire::Request;

use crate::client::{EXIT_BAD_RULES, Global, connect, refused};

#[derive(clap::Subcommand, Debug)]
pub enum RulesCmd {
    /// The rules axiomd is running.
    List,
    /// Ask axiomd to load its rule files again (the old rules stay if one has an error).
    Reload,
    /// Check rule files offline: every mistake as file:line: reason.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a sample text, or a recorded session, through rule files offline and print what
    /// they find.
    Test {
        rules: PathBuf,
        /// A text; with `--session`, a session's events as JSON lines (what
        /// `axiomctl --json query --agent N` prints).
        sample: PathBuf,
        /// What the sample text is (terminal, output, network, file_write, exec, file, connect).
        /// A terminal sample is read through the screen model, as an agent's terminal is.
        #[arg(long, default_value = "terminal", conflicts_with = "session")]
        scope: String,
        /// The sample is a recorded session: its events replayed through the rules engine on
        /// their own clock, its hook calls judged as axiomd judged them. Prints one line per
        /// finding: rule, how it was found (event, hook, stop), file, detail.
        #[arg(long)]
        session: bool,
        /// The agent's terminal size in the session, ROWSxCOLS (for rules that read the screen).
        #[arg(long, requires = "session", value_parser = parse_size)]
        size: Option<(u16, u16)>,
    },
}

pub fn run(g: &Global, cmd: &RulesCmd) -> anyhow::Result<ExitCode> {
    use axiom_rules::{self as r, RuleSet};
    match cmd {
        RulesCmd::List | RulesCmd::Reload => {
            let req = if matches!(cmd, RulesCmd::List) {
                Request::Rules
            } else {
                Request::ReloadRules
            };
            let rep = connect(g)?.request(&req)?;
            if !rep.ok {
                return refused("rules", rep);
            }
            let rules = rep.rules.unwrap_or_default();
            if g.json {
                println!("{}", serde_json::to_string_pretty(&rules)?);
            } else {
                println!(
                    "{:<22} {:<16} {:<10} {:<9} {:>4} {:<7} DEFINED AT",
                    "RULE", "KIND", "SCOPE", "SEVERITY", "PRIO", "ACTION"
                );
                for x in rules {
                    println!(
                        "{:<22} {:<16} {:<10} {:<9} {:>4} {:<7} {}",
                        x.id,
                        x.kind,
                        x.scope.as_deref().unwrap_or("-").to_lowercase(),
                        x.severity,
                        x.priority,
                        x.action,
                        x.origin
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCmd::Check { files } => match RuleSet::load(files) {
            Ok(set) => {
                println!("ok: {} rules", set.rules.len());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(EXIT_BAD_RULES))
            }
        },
        RulesCmd::Test {
            rules,
            sample,
            scope,
            session,
            size,
        } => {
            let set = match RuleSet::load(std::slice::from_ref(rules)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(EXIT_BAD_RULES));
                }
            };
            if *session {
                return replay(g, &set, sample, *size);
            }
            let scope = r::Scope::parse(scope).map_err(anyhow::Error::msg)?;
            let raw = std::fs::read_to_string(sample)
                .with_context(|| format!("reading {}", sample.display()))?;
            let (text, hits) = r::scan_sample(&set, scope, &raw);
            for h in &hits {
                let rule = &set.rules[h.rule];
                println!(
                    "{}\t{:?}\t{}\t{}",
                    rule.id,
                    rule.severity,
                    rule.action.name(),
                    r::excerpt(&text, h, rule.redact)
                );
            }
            // Like grep: 0 when something matched, 1 when nothing did.
            Ok(if hits.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// `ROWSxCOLS`.
fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (r, c) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?}: expected ROWSxCOLS, e.g. 40x120"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{s:?}: {v:?} is not a size"))
    };
    Ok((n(r)?, n(c)?))
}

/// The events of a recorded session (JSON lines, gzipped or not; blank lines skipped), each
/// error at its line.
fn read_session(path: &std::path::Path) -> anyhow::Result<Vec<axiom_proto::wire::Event>> {
    use std::io::Read as _;
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_string(&mut text)
            .with_context(|| format!("reading {} (gzip)", path.display()))?;
    } else {
        text = String::from_utf8(raw)
            .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    }
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ev = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an event", path.display(), i + 1))?;
        events.push(ev);
    }
    Ok(events)
}

/// `rules test --session`: a recorded session through the rules, what they find printed.
fn replay(
    g: &Global,
    set: &axiom_rules::RuleSet,
    path: &std::path::Path,
    size: Option<(u16, u16)>,
) -> anyhow::Result<ExitCode> {
    let events = read_session(path)?;
    let found = axiomd::replay(set, &events, size);
    for f in &found {
        if g.json {
            println!(
                "{}",
                serde_json::json!({
                    "time_ns": f.time_ns, "agent": f.agent, "rule": f.rule, "by": f.by,
                    "path": f.path, "detail": f.detail,
                })
            );
        } else {
            println!(
                "{}\t{}\t{}\t{}",
                f.rule,
                f.by,
                f.path.as_deref().unwrap_or("-"),
                crate::render::escape(&f.detail)
            );
        }
    }
    Ok(if found.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
