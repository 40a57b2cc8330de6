//! `axiomd bench-followup` (run by `cargo xtask bench followup`): the rules engine's follow-up
//! (regexes, the screen model, claims) over agent-like terminal output.
use std::time::Instant;

use axiom_proto::wire::{Body, Event};
use axiom_rules::RuleSet;

use crate::{agents::now_ns, rules::engine::Engine};

/// Feeds about `bytes` of agent-like terminal output (prose, code, colour codes, now and then a
/// phrase the default rules catch) through the engine in 200-byte writes of several agents.
/// Returns (bytes matched, seconds, findings).
pub fn bench(set: &RuleSet, bytes: usize) -> (usize, f64, usize) {
    const LINES: [&str; 8] = [
        "\x1b[1mReading\x1b[0m src/main.rs to see how the parser is wired together.\n",
        "    let tokens = lexer.tokenize(&input)?; // split into tokens first\n",
        "fn parse(tokens: &[Token]) -> Result<Ast, ParseError> { parse_items(tokens) }\n",
        "\x1b[32m✓\x1b[0m 42 tests compiled; running the integration suite next.\n",
        "Now I'll update the error type so callers can tell a syntax error from an I/O error.\n",
        "Let me plan the refactor before touching the module boundaries.\n",
        "The build finished in 12.3s with 0 warnings; checking the benchmarks as well.\n",
        "diff --git a/src/lib.rs b/src/lib.rs\n@@ -10,7 +10,9 @@ impl Parser {\n",
    ];
    let mut text = String::new();
    while text.len() < 64 << 10 {
        for l in LINES {
            text.push_str(l);
        }
    }
    let chunks: Vec<&str> = {
        let mut v = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let mut j = (i + 200).min(text.len());
            while !text.is_char_boundary(j) {
                j += 1;
            }
            v.push(&text[i..j]);
            i = j;
        }
        v
    };
    let events: Vec<Event> = chunks
        .iter()
        .enumerate()
        .map(|(n, c)| Event {
            seq: 0,
            time_ns: now_ns(),
            agent: 1 + (n % 8) as u64,
            pid: 100 + (n % 8) as u32,
            tgid: 100 + (n % 8) as u32,
            ppid: 1,
            uid: 1000,
            cgroup_id: 0,
            comm: "agent".into(),
            truncated: false,
            body: Body::Output {
                fd: 1,
                syscall: axiom_proto::wire::WriteCall::Write,
                read_back: false,
                count: c.len() as u64,
                target: Some("/dev/pts/1".into()),
                text: (*c).to_string(),
                captured: c.len() as u32,
                redacted: Vec::new(),
            },
        })
        .collect();
    let mut e = Engine::default();
    let (mut done, mut findings) = (0usize, 0usize);
    let t0 = Instant::now();
    while done < bytes {
        for ev in &events {
            findings += e.on_event(set, ev, Instant::now()).len();
            if let Body::Output { text, .. } = &ev.body {
                done += text.len();
            }
        }
    }
    (done, t0.elapsed().as_secs_f64(), findings)
}
