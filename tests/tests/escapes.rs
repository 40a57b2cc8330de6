//! The escape battery (`axiom_tests::escapes`): each attempt an agent run as nobody under
//! `axiomctl run`, judged from outside. Every attempt is contained or reported, except those
//! the README's threat model lists as open (`KNOWN_OPEN`, each with its reason); one that
//! escapes and is not on that list fails the test. Plus the denial-of-service cases: bounded,
//! and axiomd still answers and enforces for another user afterwards.
use axiom_tests::{
    escapes::{KNOWN_OPEN, Verdict, World, battery, dos, tally},
    *,
};

#[test]
fn every_escape_is_contained_or_reported() {
    let d = Daemon::start("escapes", &[]);
    let mut w = World::new(&d);
    let results = w.run_all(battery());
    for (a, v) in &results {
        println!("{:<12} {:<40} {:<16} {v:?}", a.class, a.name, a.profile);
    }
    let (contained, reported, escaped) = tally(&results);
    println!(
        "escapes: attempts={} contained={contained} reported={reported} escaped={escaped}",
        results.len()
    );
    assert!(
        results.len() >= 80,
        "the battery has {} attempts",
        results.len()
    );
    let unexpected: Vec<String> = results
        .iter()
        .filter_map(|(a, v)| match v {
            Verdict::Escaped(how) if !KNOWN_OPEN.iter().any(|(n, _)| *n == a.name) => {
                Some(format!("{} ({}): {how}", a.name, a.profile))
            }
            _ => None,
        })
        .collect();
    assert!(unexpected.is_empty(), "escaped: {unexpected:#?}");
}

#[test]
fn one_user_cannot_take_axiomd_down_for_everyone() {
    let d = Daemon::start("escapes_dos", &["--set", "api.max_clients_per_user=16"]);
    let f = dos(&d, 16);
    println!("{f:?}");
    assert!(f.fds_held <= f.fds + 16 + 8, "{f:?}");
    assert!(
        f.other_user_served,
        "another user was refused or not watched: {f:?}"
    );
    assert!(f.fds_after <= f.fds + 8, "{f:?}");
    assert!(f.threads_after <= f.threads + 8, "{f:?}");
    assert!(d.client().request(&axiom_common::wire::Request::Status).ok);
}
