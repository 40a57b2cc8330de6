//! `axiomctl query`: stored events (or, for root and the admin group, one read-only SQL
//! statement), as lines, JSON, a table or CSV.
use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use axiom_proto::wire::Request;

use crate::{
    client::{Global, Printer, connect, refused},
    render,
};

/// What `axiomctl query` was asked.
#[derive(clap::Args, Debug)]
pub struct Asked {
    #[arg(long)]
    pub agent: Option<u64>,
    /// How far back (`90s`, `10m`, `2h`, `1d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Up to how long ago (`10m`: nothing newer than ten minutes).
    #[arg(long)]
    pub until: Option<String>,
    /// Only these kinds (repeat: exec, output, file, connect, violation, …).
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
    /// Only events whose payload contains this text.
    #[arg(long)]
    pub grep: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// One read-only SQL statement over `events` (the warm tier) or `all_events` (every
    /// tier, with a `tier` column); root and the axiom group.
    #[arg(long, conflicts_with_all = ["agent", "since", "until", "kinds", "grep"])]
    pub sql: Option<String>,
    /// Comma-separated values instead of a table (SQL results).
    #[arg(long)]
    pub csv: bool,
}

pub fn run(g: &Global, p: Printer, q: &Asked) -> anyhow::Result<ExitCode> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let ago = |s: &Option<String>| -> anyhow::Result<Option<u64>> {
        Ok(match s {
            Some(s) => Some(now.saturating_sub(parse_duration(s)?.as_nanos() as u64)),
            None => None,
        })
    };
    let req = Request::Query {
        events: axiom_proto::wire::EventQuery {
            agent: q.agent,
            since_ns: ago(&q.since)?,
            until_ns: ago(&q.until)?,
            kinds: q.kinds.clone(),
            text: q.grep.clone(),
            limit: q.limit,
            oldest: false,
        },
        sql: q.sql.clone(),
    };
    // A progress line on a terminal while a large answer arrives and is written.
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut shown = 0usize;
    let r = connect(g)?.request_with_progress(&req, |n| {
        if bar && n >= shown + (1 << 20) {
            shown = n;
            eprint!("\rreceiving {:.1} MiB", n as f64 / (1 << 20) as f64);
        }
    })?;
    if bar && shown > 0 {
        eprint!("\r\x1b[K");
    }
    if !r.ok {
        return refused("query", r);
    }
    if let (Some(cols), Some(rows)) = (&r.columns, &r.rows) {
        print_rows(cols, rows, g.json, q.csv)?;
    } else {
        let events = r.events.unwrap_or_default();
        let total = events.len();
        for (i, e) in events.iter().enumerate() {
            p.print(e)?;
            if bar && total > 50_000 && i % 10_000 == 0 {
                eprint!("\rwriting {i}/{total} events");
            }
        }
        if bar && total > 50_000 {
            eprint!("\r\x1b[K");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `90s`, `10m`, `2h`, `1d` (a bare number is seconds).
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration (like 90s, 10m, 2h, 1d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        u => bail!("unknown unit {u:?} in {s:?} (s, m, h, d)"),
    };
    Ok(Duration::from_secs(secs))
}

/// SQL results: a table, CSV, or one JSON object per row.
fn print_rows(
    cols: &[String],
    rows: &[Vec<serde_json::Value>],
    json: bool,
    csv: bool,
) -> anyhow::Result<()> {
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    if json {
        for r in rows {
            let obj: serde_json::Map<String, serde_json::Value> =
                cols.iter().cloned().zip(r.iter().cloned()).collect();
            println!("{}", serde_json::Value::Object(obj));
        }
    } else if csv {
        // Control and format characters escaped (a CSV is read on terminals too); a cell a
        // spreadsheet would take for a formula is quoted as text (OWASP's CSV injection).
        let q = |s: String, text: bool| {
            let mut s = render::clean(&s);
            if text && s.starts_with(['=', '+', '-', '@']) {
                s.insert(0, '\'');
            }
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s
            }
        };
        println!(
            "{}",
            cols.iter()
                .map(|c| q(c.clone(), true))
                .collect::<Vec<_>>()
                .join(",")
        );
        for r in rows {
            println!(
                "{}",
                r.iter()
                    .map(|v| q(cell(v), v.is_string()))
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
    } else {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|v| render::escape(&cell(v))).collect())
            .collect();
        let widths: Vec<usize> = (0..cols.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .chain([cols[i].len()])
                    .max()
                    .unwrap_or(0)
                    .min(60)
            })
            .collect();
        let line = |v: Vec<String>| {
            v.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{:<w$}", c.chars().take(*w).collect::<String>(), w = *w))
                .collect::<Vec<_>>()
                .join("  ")
        };
        println!("{}", line(cols.to_vec()));
        for r in cells {
            println!("{}", line(r));
        }
    }
    Ok(())
}
