//! `cargo xtask bench escapes`: the escape battery (`axiom_tests::escapes`), each attempt an
//! agent run as nobody under `axiomctl run` and judged from outside, and the denial-of-service
//! figures (axiomd's descriptors and threads while one user holds 2,000 connections and after
//! 2,000 hostile requests; whether another user is still served and watched meanwhile).
use axiom_tests::escapes::{self, Verdict};

use crate::{build, require_root, setup::setup};

pub fn run() -> anyhow::Result<()> {
    require_root("bench escapes")?;
    setup()?;
    build()?;
    let d = axiom_tests::Daemon::start("bench_escapes", &[]);
    let mut w = escapes::World::new(&d);
    let results = w.run_all(escapes::battery());
    for (a, v) in &results {
        if let Verdict::Escaped(how) = v {
            let why = escapes::KNOWN_OPEN
                .iter()
                .find(|(n, _)| *n == a.name)
                .map(|(_, w)| *w)
                .unwrap_or("not known: a regression");
            println!(
                "bench escapes: escaped {} ({}): {how} — {why}",
                a.name, a.profile
            );
        }
    }
    drop(w);
    let (contained, reported, escaped) = escapes::tally(&results);
    println!(
        "bench escapes: attempts={} contained={contained} reported={reported} escaped={escaped}",
        results.len()
    );
    let dd = axiom_tests::Daemon::start("bench_escapes_dos", &[]);
    let f = escapes::dos(&dd);
    println!(
        "bench escapes: dos fds={}->{} held(2000 connections)->{} after(2000 hostile requests); threads={}->{}->{}; other_user_served={}",
        f.fds,
        f.fds_held,
        f.fds_after,
        f.threads,
        f.threads_held,
        f.threads_after,
        f.other_user_served
    );
    println!(
        "bench escapes: dos_agents attacks_ran={} forks={} rss_mib={}->{} (peak) threads_peak={} alive_and_enforcing={}",
        f.attacks_ran, f.forks, f.rss_mib, f.rss_peak_mib, f.threads_peak, f.alive_and_enforcing
    );
    Ok(())
}
