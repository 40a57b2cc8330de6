//! `axiomd`: the daemon binary.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use std::path::PathBuf;

use anyhow::Context as _;
use axiomd::Config;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Watches and confines AI coding agents from the kernel"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short, default_value = axiomd::DEFAULT_PATH, global = true)]
    config: PathBuf,
    /// Override sensor.pin_dir.
    #[arg(long, global = true)]
    pin_dir: Option<PathBuf>,
    /// Override api.socket.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Override sensor.keep_sensors_on_exit.
    #[arg(long)]
    keep_sensors_on_exit: Option<bool>,
    /// Override sensor.output_ring_bytes.
    #[arg(long)]
    output_ring_bytes: Option<u32>,
    /// Override sensor.capture_bytes.
    #[arg(long)]
    capture_bytes: Option<u32>,
    /// Override agents.cgroup_root.
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// Override agents.state_dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Override dbus.bus (`system`, `off` or an address).
    #[arg(long)]
    dbus: Option<String>,
    /// Override store.enabled.
    #[arg(long)]
    store: Option<bool>,
    /// Override store.path.
    #[arg(long)]
    store_path: Option<PathBuf>,
    /// Override any setting: `--set store.hot.enabled=true` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
    /// Override rules.paths (repeat for several files or directories).
    #[arg(long)]
    rules: Vec<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon (the default).
    Run,
    /// Validate the configuration file and exit.
    CheckConfig,
    /// Detach and unpin everything under the pin directory.
    Unpin,
    /// Benchmark baseline: attach empty programs to the sensor's hooks until SIGTERM/SIGINT.
    #[command(hide = true)]
    Baseline,
    /// Benchmark: warm-tier ingest, Parquet export and "latest 1,000 of an agent" at each size.
    #[command(hide = true)]
    BenchStore {
        /// Table sizes (rows), in order.
        #[arg(long, value_delimiter = ',', default_value = "10000000")]
        rows: Vec<u64>,
        /// Where the scratch databases go.
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
        /// A Redis to measure the hot tier's XADD rate against.
        #[arg(long)]
        redis: Option<String>,
    },
    /// Benchmark: WASI tool start-up from the module cache, and a rule plugin's call.
    #[command(hide = true)]
    BenchSandbox {
        /// A WASI module that does nothing.
        #[arg(long)]
        tool: PathBuf,
        /// The sql_guard plugin (tests/wasm/sql_guard.c).
        #[arg(long)]
        plugin: PathBuf,
        /// Scratch space.
        #[arg(long, default_value = "/var/tmp/axiom-bench-sandbox")]
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
    },
    /// Benchmark: the rules engine's follow-up over agent-like output, in MB/s.
    #[command(hide = true)]
    BenchFollowup {
        /// Megabytes of output to match.
        #[arg(long, default_value_t = 64)]
        mb: usize,
    },
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    // The environment's settings first, then the flags', so the command line's win; each flag
    // is the `--set` of its setting, held to the same checks as the file.
    let mut sets = Config::env_overrides(std::env::vars());
    sets.extend(flag_sets(cli));
    sets.extend(cli.set.iter().cloned());
    Ok(Config::load_with(&cli.config, &sets)?)
}

/// The flags that each name one setting, as `--set KEY=VALUE` overrides.
fn flag_sets(cli: &Cli) -> Vec<String> {
    use toml::Value;
    let path = |p: &PathBuf| Value::String(p.display().to_string());
    let settings: [(&str, Option<Value>); 11] = [
        ("sensor.pin_dir", cli.pin_dir.as_ref().map(path)),
        ("api.socket", cli.socket.as_ref().map(path)),
        (
            "sensor.keep_sensors_on_exit",
            cli.keep_sensors_on_exit.map(Value::Boolean),
        ),
        (
            "sensor.output_ring_bytes",
            cli.output_ring_bytes.map(|n| Value::Integer(n.into())),
        ),
        (
            "sensor.capture_bytes",
            cli.capture_bytes.map(|n| Value::Integer(n.into())),
        ),
        ("agents.cgroup_root", cli.cgroup_root.as_ref().map(path)),
        ("agents.state_dir", cli.state_dir.as_ref().map(path)),
        ("dbus.bus", cli.dbus.clone().map(Value::String)),
        ("store.enabled", cli.store.map(Value::Boolean)),
        ("store.path", cli.store_path.as_ref().map(path)),
        (
            "rules.paths",
            (!cli.rules.is_empty()).then(|| Value::Array(cli.rules.iter().map(path).collect())),
        ),
    ];
    settings
        .into_iter()
        .filter_map(|(key, v)| v.map(|v| format!("{key}={v}")))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = load_config(&cli)?;
    // Before any thread exists: every runtime thread inherits the niceness.
    // SAFETY: setpriority on the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, cfg.nice()) } != 0 {
        eprintln!(
            "axiomd: cannot set niceness {}: {}",
            cfg.nice(),
            std::io::Error::last_os_error()
        );
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async_main(cli, cfg))
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to its device and inode.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd as _;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr().as_fd())
        .is_ok_and(|st| st.st_dev.to_string() == dev && st.st_ino.to_string() == ino)
}

/// Structured logs: to the journal (each span and event field a journal field) when systemd
/// runs axiomd, else lines on stderr. `RUST_LOG` filters; the default is `info`. No log line
/// carries captured agent content: events go to the bus and the store, not to the log.
fn init_logs() {
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journal = stderr_is_journal()
        .then(|| tracing_journald::layer().ok())
        .flatten();
    let registry = tracing_subscriber::registry().with(filter);
    match journal {
        Some(j) => registry
            .with(j.with_syslog_identifier("axiomd".into()))
            .init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
}

async fn async_main(cli: Cli, cfg: Config) -> anyhow::Result<()> {
    init_logs();
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Run => axiomd::run(cfg).await,
        Cmd::CheckConfig => {
            let set = axiom_rules::RuleSet::load(cfg.rule_paths())?;
            println!(
                "{}: ok; {} rules from {:?}",
                cli.config.display(),
                set.rules.len(),
                cfg.rule_paths()
            );
            Ok(())
        }
        Cmd::Unpin => {
            let pins = cfg.pins();
            pins.remove_all()
                .with_context(|| format!("unpinning {}", pins.root().display()))?;
            println!("unpinned {}", pins.root().display());
            Ok(())
        }
        Cmd::BenchStore { rows, dir, redis } => {
            if let Some(url) = redis {
                let ev_s = axiomd::bench::store::redis(&url, 1_000_000)?;
                println!("store: redis_ev_s={ev_s:.0}");
            }
            let path = dir.join(format!("axiom-bench-store-{}.duckdb", std::process::id()));
            let sizes = cfg.store_batches();
            let (one, many) = axiomd::bench::store::writers(&path, sizes)?;
            println!(
                "store: writers={} ingest_ev_s={many:.0} one_writer_ev_s={one:.0} writers_ratio={:.2}",
                sizes.1,
                many / one
            );
            for (i, n) in rows.iter().enumerate() {
                let r = axiomd::bench::store::run(&path, *n, i == 0, sizes)?;
                println!(
                    "store: rows={} ingest_ev_s={:.0} latest1000_ms={:.2} parquet_mb_s={:.1} parquet_out_mb_s={:.1} db_mib={:.0}",
                    r.rows,
                    r.ingest_ev_s,
                    r.latest1000_ms,
                    r.parquet_mb_s,
                    r.parquet_out_mb_s,
                    r.db_bytes as f64 / (1 << 20) as f64
                );
            }
            Ok(())
        }
        Cmd::BenchSandbox {
            tool,
            plugin,
            dir,
            rounds,
            calls,
        } => {
            let r = axiomd::bench::sandbox::run(&tool, &plugin, &dir, rounds, calls)?;
            println!(
                "sandbox: wasm_start_ms={:.3} wasm_compile_start_ms={:.3} plugin_call_us={:.2} native_call_us={:.3}",
                r.wasm_start_ms, r.wasm_compile_start_ms, r.plugin_call_us, r.native_call_us
            );
            Ok(())
        }
        Cmd::BenchFollowup { mb } => {
            let set = axiom_rules::RuleSet::load(cfg.rule_paths())?;
            let (bytes, secs, findings) = axiomd::bench::followup::bench(&set, mb << 20);
            println!(
                "followup: {bytes} bytes in {secs:.3} s, {findings} findings; followup_mb_s={:.1}",
                bytes as f64 / secs / 1e6
            );
            Ok(())
        }
        Cmd::Baseline => {
            let _ebpf = axiomd::load_empty()?;
            tracing::info!("baseline programs attached");
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            Ok(())
        }
    }
}
