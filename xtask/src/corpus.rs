//! `cargo xtask corpus record [NAME-PREFIX…]`: records the labelled corpus's sessions (every
//! case, or those whose names start with a prefix given) on the real agent CLIs against the
//! model stand-in, each as a new ordinary user under the default profile, into
//! `tests/corpus/`. Recorded once and committed; the benchmark and the tests replay them.
use axiom_tests::{corpus, realagents};

use crate::{build, require_root, setup::setup};

pub fn record(only: &[String]) -> anyhow::Result<()> {
    require_root("corpus record")?;
    // The helpers that start axiomd and axiomctl look for the release binaries here.
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("AXIOM_BIN_DIR", crate::target_dir()) };
    setup()?;
    build()?;
    std::fs::create_dir_all(corpus::dir())?;
    let mut index = corpus::index();
    let d = realagents::daemon("corpus");
    // Without prefixes, the cases not recorded yet; with them, those named (again).
    let cases: Vec<_> = corpus::cases()
        .into_iter()
        .filter(|c| {
            if only.is_empty() {
                !c.recording().exists()
            } else {
                only.iter().any(|p| c.name.starts_with(p.as_str()))
            }
        })
        .filter(|c| c.agent.installed())
        .collect();
    let mut failed = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let t = std::time::Instant::now();
        // A session that does not play out (the agent stuck at a question of its own) is
        // reported and left unrecorded; the rest go on.
        let s = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            corpus::record(&d, case, &mut index)
        }));
        match s {
            Ok(s) => println!(
                "corpus: {}/{} {} ({}) {} events in {:.1} s",
                i + 1,
                cases.len(),
                case.name,
                case.agent.name(),
                s.events.len(),
                t.elapsed().as_secs_f64()
            ),
            Err(_) => {
                println!("corpus: {} ({}) NOT recorded", case.name, case.agent.name());
                failed.push(case.name.clone());
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("not recorded: {failed:?}");
    }
    Ok(())
}
