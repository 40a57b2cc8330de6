//! Benchmarks. Each measures its baselines in the same run and prints ratios: absolute times on a
//! shared machine are noise, ratios measured side by side are not.
mod sensor;

use clap::Subcommand;

#[derive(Subcommand, Clone, Copy)]
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
}

pub fn bench(w: Which) -> anyhow::Result<()> {
    match w {
        Which::Sensor { rounds, count } => sensor::run(rounds, count),
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
