//! A Prometheus text endpoint (`GET /metrics`, exposition format 0.0.4) for scrapers: the same
//! counters as `axiomctl status` and the OTLP metrics, and the latency histograms.
use std::fmt::Write as _;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Histogram, LATENCY_BOUNDS, SharedCounts};

/// A label value, escaped as the format wants (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    key: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (k, v) in values {
        let _ = writeln!(out, "{name}{{{key}=\"{}\"}} {v}", label(k));
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cum = 0;
    for (b, n) in LATENCY_BOUNDS.iter().zip(h.buckets.iter()) {
        cum += n;
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

/// The whole exposition.
pub(crate) fn render(status: &super::StatusSource, counts: &SharedCounts) -> String {
    let st = status();
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "axiom_events_total",
        "counter",
        "Events published, by kind.",
        "kind",
        st.events.iter().map(|(k, v)| (k.as_str(), *v)),
    );
    family(
        &mut out,
        "axiom_events_lost_total",
        "counter",
        "Records lost, by cause.",
        "cause",
        st.lost.iter().map(|(k, v)| (k.as_str(), *v)),
    );
    if let Ok(c) = counts.lock() {
        for (name, help, key, m) in [
            (
                "axiom_violations_total",
                "Violations, by rule.",
                "rule",
                &c.violations,
            ),
            (
                "axiom_interventions_total",
                "Interventions, by action.",
                "action",
                &c.interventions,
            ),
            (
                "axiom_denied_total",
                "Refusals by the agents' confinement, by operation.",
                "op",
                &c.denied,
            ),
        ] {
            family(
                &mut out,
                name,
                "counter",
                help,
                key,
                m.iter().map(|(k, v)| (k.as_str(), *v)),
            );
        }
        histogram(
            &mut out,
            "axiom_detection_latency_seconds",
            "From the offending syscall to the violation.",
            &c.detection,
        );
        histogram(
            &mut out,
            "axiom_intervention_latency_seconds",
            "Carrying out an intervention.",
            &c.intervention,
        );
    }
    let running = st.agents_running;
    let _ = writeln!(
        out,
        "# HELP axiom_agents_tracked Agents axiomd tracks now.\n# TYPE axiom_agents_tracked gauge\naxiom_agents_tracked {running}"
    );
    let _ = writeln!(
        out,
        "# HELP axiom_tracked_processes Processes tracked in the kernel.\n# TYPE axiom_tracked_processes gauge\naxiom_tracked_processes {}",
        st.tracked_processes
    );
    out
}

/// Serves `GET /metrics` (HTTP/1.x, one request per connection).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    status: super::StatusSource,
    counts: SharedCounts,
) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let (status, counts) = (status.clone(), counts.clone());
        tokio::spawn(async move {
            let mut req = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            // The request head, at most 8 KiB, within 5 s.
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let line = String::from_utf8_lossy(&req);
            let first = line.lines().next().unwrap_or("");
            let (status, ctype, body) = match first.split_whitespace().collect::<Vec<_>>()[..] {
                ["GET", path, _] if path == "/metrics" || path.starts_with("/metrics?") => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    render(&status, &counts),
                ),
                ["GET", _, _] => ("404 Not Found", "text/plain", "try /metrics\n".into()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "GET /metrics\n".into(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_histograms_are_cumulative() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut h = Histogram::default();
        h.record(0.000_01);
        h.record(0.003);
        h.record(7.0);
        let mut out = String::new();
        histogram(&mut out, "x", "help", &h);
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
