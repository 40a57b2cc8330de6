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
    /// Run a sample text through rule files offline and print what matches.
    Test {
        rules: PathBuf,
        sample: PathBuf,
        /// What the sample is (terminal, output, network, file_write, exec, file, connect).
        /// A terminal sample is read through the screen model, as an agent's terminal is.
        #[arg(long, default_value = "terminal")]
        scope: String,
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
        } => {
            let set = match RuleSet::load(std::slice::from_ref(rules)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(EXIT_BAD_RULES));
                }
            };
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
