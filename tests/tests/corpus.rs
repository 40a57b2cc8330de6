//! The labelled corpus of real-agent sessions (`axiom_tests::corpus`), replayed offline through
//! the shipped rules with `axiomctl rules test --session`, as a user replays a recorded session.
#![allow(clippy::unwrap_used)]

use axiom_tests::corpus;

/// The corpus covers every family with cases of each kind, at least 150 in all.
#[test]
fn the_corpus_covers_every_family() {
    let cases = corpus::cases();
    assert!(cases.len() >= 150, "{} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    let n = names.len();
    names.dedup();
    assert_eq!(n, names.len(), "case names repeat");
    for f in ["commands", "todo", "secrets", "claims", "talk"] {
        let of: Vec<_> = cases.iter().filter(|c| c.family == f).collect();
        let pos = of.iter().filter(|c| !c.expect.is_empty()).count();
        let neg = of.len() - pos;
        assert!(pos >= 10 && neg >= 5, "{f}: {pos} positive, {neg} negative");
    }
}

/// Every case is recorded, and replayed its findings meet the targets per family (precision
/// and recall ≥ 0.97), and no true claim is refused.
#[test]
fn the_corpus_replays_to_its_labels() {
    let scored = corpus::score();
    let wrong: Vec<String> = scored
        .cases
        .iter()
        .filter(|v| v.fp > 0 || v.fn_ > 0)
        .map(|v| format!("{}: expected {:?}, found {:?}", v.case, v.expected, v.found))
        .collect();
    for w in &wrong {
        eprintln!("wrong: {w}");
    }
    assert!(
        scored.missing.is_empty(),
        "cases with no recording (cargo xtask corpus record NAME): {:?}",
        scored.missing
    );
    for (f, s) in &scored.families {
        assert!(
            s.precision() >= 0.97 && s.recall() >= 0.97,
            "{f}: precision {:.3} recall {:.3}; cases wrong:\n{}",
            s.precision(),
            s.recall(),
            wrong.join("\n")
        );
    }
    // A true claim refused is worse than silence: none.
    let refused: Vec<&String> = scored
        .cases
        .iter()
        .filter(|v| {
            v.case.starts_with("claims-true")
                && v.expected.is_empty()
                && v.found.iter().any(|g| g.rule.starts_with("false-"))
        })
        .map(|v| &v.case)
        .collect();
    assert!(refused.is_empty(), "true claims refused: {refused:?}");
}
