//! Benchmarks. Each measures its baselines in the same run and prints ratios: absolute times on a
//! shared machine are noise, ratios measured side by side are not.
mod agents;
mod escapes;
mod mcp;
mod overhead;
mod realagents;
mod rules;
mod sandbox;
mod sensor;
mod store;
mod ui;

use clap::Subcommand;

#[derive(Subcommand, Clone)]
pub enum Which {
    /// Per-syscall cost of the sensor against no program, an empty program on the same hooks,
    /// strace and bpftrace, on a `dd bs=64` loop.
    Sensor {
        /// Rounds per mode (the median is kept).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// dd blocks per run (each block is one read and one write).
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
    },
    /// Kernel scan cost per 256 B by number of literals, detection latency, follow-up MB/s.
    Rules {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// dd blocks per scan run.
        #[arg(long, default_value_t = 500_000)]
        count: u64,
        /// Matching writes whose detection latency is measured.
        #[arg(long, default_value_t = 10_000)]
        writes: usize,
    },
    /// Warm-tier ingest events/s, Parquet export MB/s, latest 1,000 of an agent at 10M/100M rows.
    Store {
        #[arg(long, value_delimiter = ',', default_value = "10000000,100000000")]
        rows: Vec<u64>,
    },
    /// WASI tool start-up from the module cache, a plugin call, `axiomctl run` with and
    /// without a confinement profile; each against its baseline.
    Sandbox {
        /// Runs per `axiomctl run` mode (the median is kept); the in-process start-up is
        /// measured ten times as often.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
    },
    /// The MCP front end: `spawn` against `axiomctl run`, N agents in one call against N calls,
    /// event delivery through `observe` against the raw event stream.
    Mcp {
        /// Single spawns (and direct runs) measured (the median is kept).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Agents started by one `spawn` call.
        #[arg(long, default_value_t = 16)]
        parallel: usize,
    },
    /// The scenario matrix on every installed real agent (Claude Code, Codex CLI): precision
    /// and recall per rule family, detection latency from the model's turn to the violation.
    Realagents,
    /// The escape battery: attempts contained, reported and escaped; the denial-of-service
    /// cases' descriptors and threads.
    Escapes,
    /// Real work inside an agent, untracked against tracked and confined: a C build, a Python
    /// test suite, and real Claude Code sessions of the scenario matrix.
    Overhead {
        /// Runs of the build and of the suite each way (the median of the paired ratios is kept).
        #[arg(long, default_value_t = 8)]
        rounds: usize,
        /// Rounds of the agent sessions (three scenarios each way per round).
        #[arg(long, default_value_t = 2)]
        session_rounds: usize,
    },
    /// The session page in Debian's chromium: first paint and full timeline for sessions of
    /// 1k, 100k and 1M stored events (ratios to the smallest), and the open page's extra CPU
    /// in axiomd while 100 agents run.
    Ui {
        /// Writes of each session's agent (each a stored event).
        #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
        sizes: Vec<u64>,
        /// Page loads measured per session (the median is kept).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Agents running while the page's CPU cost is measured.
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Seconds of each CPU window (two without the page, two with it).
        #[arg(long, default_value_t = 20)]
        window: u64,
    },
    /// axiomd's RSS, CPU and losses with 1,000 and 10,000 concurrently running agents.
    Agents {
        /// Agent counts to measure, in order (the last is the summary line).
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        sizes: Vec<usize>,
        /// Seconds of steady state measured per size.
        #[arg(long, default_value_t = 10)]
        window: u64,
        /// An axiomd setting for the run, as `axiomd --set` takes it (repeatable):
        /// `--set store.memory_cap_mib=64` measures another configuration than the default.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

pub fn bench(w: Which) -> anyhow::Result<()> {
    // Measured as shipped: every benchmark builds the release binaries first, and the test
    // helpers that start axiomd and axiomctl look for them here.
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("AXIOM_BIN_DIR", crate::target_dir()) };
    match w {
        Which::Sensor { rounds, count } => sensor::run(rounds, count),
        Which::Agents { sizes, window, set } => agents::run(&sizes, window, &set),
        Which::Store { rows } => store::run(&rows),
        Which::Ui {
            sizes,
            rounds,
            agents,
            window,
        } => ui::run(&sizes, rounds, agents, window),
        Which::Sandbox { rounds } => sandbox::run(rounds),
        Which::Mcp { rounds, parallel } => mcp::run(rounds, parallel),
        Which::Realagents => realagents::run(),
        Which::Escapes => escapes::run(),
        Which::Overhead {
            rounds,
            session_rounds,
        } => overhead::run(rounds, session_rounds),
        Which::Rules {
            rounds,
            count,
            writes,
        } => rules::run(rounds, count, writes),
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}
