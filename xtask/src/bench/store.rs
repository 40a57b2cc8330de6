//! `cargo xtask bench store`: the warm tier (DuckDB) — ingest events/s through axiomd's own
//! writer code, Parquet (ZSTD) export MB/s, and "latest 1,000 events of one agent" at 10M and
//! 100M rows; and the hot tier's pipelined XADD events/s into a redis-server started here.
use std::process::{Command, Stdio};

use anyhow::Context as _;

use crate::{build, require_root, setup::setup, target_dir};

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

pub fn run(rows: &[u64]) -> anyhow::Result<()> {
    require_root("bench store")?;
    setup()?;
    build()?;
    let rows_arg = rows
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // A Redis of the bench's own, on loopback, without persistence.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut redis = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .context("redis-server (cargo xtask setup installs it)")?;
    let url = format!("redis://127.0.0.1:{port}");
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        && t0.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = Command::new(target_dir().join("axiomd"))
        .args(["--config", "/dev/null", "bench-store", "--rows", &rows_arg])
        .args(["--redis", &url])
        .output()
        .context("axiomd bench-store");
    let _ = redis.kill();
    let _ = redis.wait();
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    if !out.status.success() {
        anyhow::bail!(
            "axiomd bench-store failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("store:")).collect();
    let redis_ev_s = lines
        .iter()
        .find_map(|l| field(l, "redis_ev_s"))
        .unwrap_or(f64::NAN);
    let first = lines
        .iter()
        .find(|l| field(l, "rows").is_some())
        .context("no result")?;
    let at = |n: u64| {
        lines
            .iter()
            .find(|l| field(l, "rows") == Some(n as f64))
            .and_then(|l| field(l, "latest1000_ms"))
            .unwrap_or(f64::NAN)
    };
    // The headline ingest: the mean of the two runs with the configured writers, measured next
    // to one writer's (the line with `writers=`).
    let writers = lines
        .iter()
        .find(|l| field(l, "writers").is_some())
        .context("no writers line")?;
    let ingest = field(writers, "ingest_ev_s").unwrap_or(f64::NAN);
    let one_writer = field(writers, "one_writer_ev_s").unwrap_or(f64::NAN);
    let size_ingest = field(first, "ingest_ev_s").unwrap_or(f64::NAN);
    let parquet = field(first, "parquet_mb_s").unwrap_or(f64::NAN);
    let (m10, m100) = (at(10_000_000), at(100_000_000));
    println!(
        "targets: duckdb ingest >= 1,000,000/s ({}), latest 1000 at 100M <= 20 ms ({})",
        if ingest >= 1e6 { "met" } else { "NOT met" },
        if m100 <= 20.0 { "met" } else { "NOT met" },
    );
    println!(
        "bench store: duckdb_ev_s={ingest:.0} duckdb_one_writer_ev_s={one_writer:.0} \
         writers_ratio={:.2} duckdb_ev_s_first_size={size_ingest:.0} redis_ev_s={redis_ev_s:.0} \
         parquet_mb_s={parquet:.1} latest1000_ms_10m={m10:.2} latest1000_ms_100m={m100:.2}",
        ingest / one_writer
    );
    Ok(())
}
