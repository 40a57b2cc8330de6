//! `cargo xtask …`: everything beyond `cargo build` — machine setup, the full test run, the live
//! demo and the benchmarks. Integration tests need root; they run from here.
mod bench;
mod corpus;
mod demo;
mod package;
mod pins;
mod setup;
mod test;
mod units;

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install, idempotently, what a fresh Debian machine lacks (rust-src, bpf-linker, packages).
    Setup,
    /// Build every binary, optimised (the eBPF object is built by axiomd's build.rs).
    Build,
    /// Setup, build, lint, and run every test (unit and end-to-end, as root).
    Test {
        /// Skip cargo fmt/clippy.
        #[arg(long)]
        no_lint: bool,
        /// More arguments for `cargo test` (`--test tiers`, `--lib`, a name filter after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then make a Debian package (target/release/axiom_<version>_<arch>.deb).
    Package,
    /// Build and start axiomd, then run a sample agent under it and show what it does, live.
    Demo,
    /// The labelled corpus of real-agent sessions: `record` runs its cases (all, or those whose
    /// names start with the prefixes given) and writes them to tests/corpus/.
    Corpus {
        #[arg(value_parser = ["record"])]
        action: String,
        prefixes: Vec<String>,
    },
    /// Benchmarks: each prints ratios against baselines measured in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

/// The workspace root.
pub fn root() -> PathBuf {
    axiom_tests::repo_root()
}

/// The cargo that runs us, without what `cargo run` set for xtask itself. Build scripts (ring's,
/// which DuckDB's build depends on) watch `CARGO_MANIFEST_DIR` in cargo's environment: inherited
/// from here it would hold this clone's path, so every clone and every plain `cargo build` would
/// dirty them and recompile DuckDB's C++ (half an hour).
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| k.starts_with(p))
        {
            c.env_remove(k.as_ref());
        }
    }
    c
}

/// Every xtask command builds, lints and tests in this one cargo profile. DuckDB's bundled C++
/// takes half an hour to compile per profile on two cores; one profile means it is compiled once
/// (and the benchmarks, the demo and the tests all run the same optimised binaries).
pub const PROFILE_ARG: &str = "--release";

/// target/release of this workspace, where every binary lands: CARGO_TARGET_DIR, else what cargo
/// itself resolves (a `build.target-dir` in a cargo config file counts too).
pub fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let out = cargo()
                .args(["metadata", "--format-version", "1", "--no-deps"])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            v.get("target_directory")?.as_str().map(PathBuf::from)
        })
        .unwrap_or_else(|| root().join("target"));
    base.join("release")
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

pub fn build() -> anyhow::Result<()> {
    run(cargo().args([
        "build",
        PROFILE_ARG,
        "--workspace",
        "--exclude",
        "axiom-ebpf",
        "--bins",
    ]))
}

pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} loads BPF programs and creates cgroups: run it as root");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build => build(),
        Cmd::Test { no_lint, args } => {
            pins::sweep_stale();
            test::test(!no_lint, &args)
        }
        Cmd::Package => build().and_then(|()| package::package().map(drop)),
        Cmd::Demo => demo::demo(),
        Cmd::Corpus { prefixes, .. } => {
            pins::sweep_stale();
            corpus::record(&prefixes)
        }
        Cmd::Bench { which } => {
            pins::sweep_stale();
            bench::bench(which)
        }
    }
}
