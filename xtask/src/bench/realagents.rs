//! `cargo xtask bench realagents`: the scenario matrix on every installed real agent (Claude
//! Code and Codex CLI: all scenarios; Gemini CLI, opencode and aider: the basic ones), each
//! session under `axiomctl run` against the model stand-in, as an ordinary user under the
//! default profile.
//! Prints, per rule family, precision and recall over the matrix, and the detection latency
//! from the model starting the turn that planted a violation to axiomd's violation event. Then,
//! with the shipped actions, how many rule interventions reached the model (the stand-in got
//! the message in a request) and how long from axiomd's decision until it did.
use anyhow::bail;
use axiom_tests::realagents::{self, AGENTS, Score};

use super::median;
use crate::{build, require_root, setup::setup};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// One agent's share of the run, for its own line.
#[derive(Default)]
struct PerAgent {
    score: Score,
    families: Vec<(&'static str, Score)>,
    prevented: usize,
    preventable: usize,
    delivered: usize,
    interventions: usize,
}

pub fn run() -> anyhow::Result<()> {
    require_root("bench realagents")?;
    setup()?;
    build()?;
    let mut total = Score::default();
    let mut families: Vec<(&'static str, Score)> = Vec::new();
    let mut latencies = Vec::new();
    let mut sessions = 0usize;
    let mut agents = 0usize;
    let mut per: std::collections::BTreeMap<&'static str, PerAgent> = Default::default();
    for agent in AGENTS {
        if !agent.installed() {
            println!(
                "bench realagents: {} is not installed, skipped",
                agent.name()
            );
            continue;
        }
        agents += 1;
        let d = realagents::daemon(&format!("bench_real_{}", agent.name()));
        for sc in agent.scenarios() {
            let dir = axiom_tests::users::SessionUser::new();
            let s = realagents::run_session(&d, agent, &sc, &dir);
            let ws = dir.join("ws");
            let got = s.reported(&ws);
            sessions += 1;
            total.add(&sc.expect, &got);
            let mine = per.entry(agent.name()).or_default();
            mine.score.add(&sc.expect, &got);
            // Per family: the expectations and reports of that family.
            realagents::add_by_family(&mut families, &sc.expect, &got);
            realagents::add_by_family(&mut mine.families, &sc.expect, &got);
            let (tp, fp, fn_) = realagents::judge(&sc.expect, &got);
            let lat = s.detection_ms();
            let (ev_min, text_min, bin_min) = s.volume_per_minute();
            println!(
                "  {:6} {:18} tp={tp} fp={fp} fn={fn_} {:.1} s  events/min={ev_min:.0} text_kb/min={:.1} binary_kb/min={:.1}  reported={:?}  detect_ms={:?}",
                agent.name(),
                sc.name,
                s.elapsed.as_secs_f64(),
                text_min / 1024.0,
                bin_min / 1024.0,
                got.iter().map(|g| g.rule.as_str()).collect::<Vec<_>>(),
                lat.iter()
                    .map(|(r, ms)| format!("{r}:{ms:.0}"))
                    .collect::<Vec<_>>()
            );
            for (rule, ms) in lat {
                if sc.expect.iter().any(|e| e.rule == rule) {
                    latencies.push(ms);
                }
            }
        }
    }
    if sessions == 0 {
        bail!("no real agent is installed: run cargo xtask setup");
    }
    // Delivery: sessions with the shipped actions, whose rules intervene (an interrupting
    // message, and one that waits for the agent to be idle).
    let (mut delivered, mut interventions, mut deliver_ms) = (0usize, 0usize, Vec::new());
    // Per channel: through the agent's hooks, typed into its terminal.
    let (mut hook_ms, mut typed_ms) = (Vec::new(), Vec::new());
    for agent in AGENTS
        .into_iter()
        .filter(|a| a.installed() && a.interactive())
    {
        let d = axiom_tests::Daemon::start(&format!("bench_deliver_{}", agent.name()), &[]);
        for sc in [
            realagents::delivery_scenario(),
            realagents::idle_claim_scenario(),
        ] {
            let dir = axiom_tests::users::SessionUser::new();
            let (_, got) = realagents::delivery_session(
                &d,
                agent,
                &sc,
                &dir,
                std::time::Duration::from_secs(60),
            );
            println!(
                "  {:6} {:18} interventions={:?}",
                agent.name(),
                sc.name,
                got
            );
            let mine = per.entry(agent.name()).or_default();
            for (ok, ms, channel) in got {
                interventions += 1;
                mine.interventions += 1;
                if let (true, Some(ms)) = (ok, ms) {
                    delivered += 1;
                    mine.delivered += 1;
                    deliver_ms.push(ms);
                    match channel {
                        axiom_proto::wire::Channel::Hook => hook_ms.push(ms),
                        _ => typed_ms.push(ms),
                    }
                }
            }
        }
    }
    // Prevented: with the shipped rules, the violations an agent's hooks could stop before their
    // effect (a dangerous command; a TODO and a secret written by its write tool: Claude Code's
    // Write, Codex's apply_patch, Gemini CLI's write_file, opencode's write) — stopped: refused
    // through the hook, and the command never ran, the file never held the text.
    let (mut prevented, mut preventable) = (0usize, 0usize);
    for agent in [
        realagents::Agent::Claude,
        realagents::Agent::Codex,
        realagents::Agent::Gemini,
        realagents::Agent::OpenCode,
    ] {
        let scenarios = [
            realagents::hook_dangerous_scenario(),
            realagents::hook_write_scenario(),
        ];
        if !agent.installed() {
            continue;
        }
        let d = axiom_tests::Daemon::start(&format!("bench_hooks_{}", agent.name()), &[]);
        for sc in scenarios {
            let dir = axiom_tests::users::SessionUser::new();
            let s = realagents::run_session(&d, agent, &sc, &dir);
            let stopped = |rule: &str| {
                s.events.iter().any(|e| {
                    matches!(&e.body, axiom_proto::wire::Body::Intervention {
                        action: axiom_proto::wire::Action::Deny,
                        rule: Some(r),
                        channel: Some(axiom_proto::wire::Channel::Hook),
                        ..
                    } if r == rule)
                })
            };
            let rules: Vec<&str> = sc.expect.iter().map(|e| e.rule.as_str()).collect();
            // And its effect never came: no exec of the refused command, no write of the TODO,
            // no write at all to the secret's file (the sensor's record of the session).
            let took_effect = s.events.iter().any(|e| match &e.body {
                axiom_proto::wire::Body::Exec { argv, .. } => argv.join(" ").contains("install.sh"),
                axiom_proto::wire::Body::Output {
                    text,
                    target: Some(t),
                    ..
                } => (t.contains("parser.py") && text.contains("TODO")) || t.contains("deploy.env"),
                _ => false,
            });
            let k = if took_effect {
                0
            } else {
                rules.iter().filter(|r| stopped(r)).count()
            };
            println!(
                "  {:6} {:18} prevented={k}/{}",
                agent.name(),
                sc.name,
                rules.len()
            );
            prevented += k;
            preventable += rules.len();
            let mine = per.entry(agent.name()).or_default();
            mine.prevented += k;
            mine.preventable += rules.len();
        }
    }
    families.sort_by_key(|(f, _)| *f);
    // The labelled corpus, replayed offline through the shipped rules (`axiomctl rules test
    // --session`), per family; then the live matrix and the corpus together.
    let corpus = axiom_tests::corpus::score();
    for v in corpus.cases.iter().filter(|v| v.fp > 0 || v.fn_ > 0) {
        println!(
            "  corpus {}: tp={} fp={} fn={} expected={:?} found={:?}",
            v.case, v.tp, v.fp, v.fn_, v.expected, v.found
        );
    }
    for (f, s) in &corpus.families {
        println!(
            "bench realagents: corpus family={f} precision={:.3} recall={:.3} (tp={} fp={} fn={})",
            s.precision(),
            s.recall(),
            s.true_pos,
            s.false_pos,
            s.false_neg
        );
    }
    println!(
        "bench realagents: corpus cases={} unrecorded={}",
        corpus.cases.len(),
        corpus.missing.len()
    );
    for (f, s) in &corpus.families {
        match families.iter_mut().find(|(n, _)| n == f) {
            Some((_, t)) => {
                t.true_pos += s.true_pos;
                t.false_pos += s.false_pos;
                t.false_neg += s.false_neg;
            }
            None => families.push((f, *s)),
        }
    }
    families.sort_by_key(|(f, _)| *f);
    for (f, s) in &families {
        println!(
            "bench realagents: family={f} (matrix and corpus) precision={:.3} recall={:.3} (tp={} fp={} fn={})",
            s.precision(),
            s.recall(),
            s.true_pos,
            s.false_pos,
            s.false_neg
        );
    }
    // Per agent: its matrix, each family's precision/recall, what its hooks stopped, what of
    // its messages arrived.
    for (name, a) in &mut per {
        a.families.sort_by_key(|(f, _)| *f);
        let fams: Vec<String> = a
            .families
            .iter()
            .map(|(f, s)| format!("{f}:{:.3}/{:.3}", s.precision(), s.recall()))
            .collect();
        println!(
            "bench realagents: agent={name} precision={:.3} recall={:.3} prevented={}/{} delivered={}/{} families={}",
            a.score.precision(),
            a.score.recall(),
            a.prevented,
            a.preventable,
            a.delivered,
            a.interventions,
            fams.join(",")
        );
    }
    let p50 = median(&mut latencies.clone());
    let p99 = percentile(&mut latencies, 0.99);
    let d50 = median(&mut deliver_ms.clone());
    let d99 = percentile(&mut deliver_ms, 0.99);
    let (hooked, typed) = (hook_ms.len(), typed_ms.len());
    let h50 = median(&mut hook_ms);
    let t50 = median(&mut typed_ms);
    println!(
        "bench realagents: agents={agents} sessions={sessions} prevented={prevented}/{preventable} precision={:.3} recall={:.3} detect_p50_ms={p50:.1} detect_p99_ms={p99:.1} delivered={delivered}/{interventions} deliver_p50_ms={d50:.1} deliver_p99_ms={d99:.1} deliver_hook={hooked} deliver_hook_p50_ms={h50:.1} deliver_typed={typed} deliver_typed_p50_ms={t50:.1}",
        total.precision(),
        total.recall()
    );
    Ok(())
}
