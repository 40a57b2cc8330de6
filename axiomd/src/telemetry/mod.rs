//! Sinks for the observability stack operators already run: OTLP traces and metrics (gRPC or
//! HTTP/protobuf) and a Prometheus text endpoint.
//!
//! One task follows the bus: each agent session becomes a trace (`traces`), and the counts and
//! latencies the events carry are kept in `Counts`, which both the OTLP metrics and the
//! Prometheus endpoint read. What the bus dropped for this subscriber is counted as
//! `subscriber_lagged`, like any other subscriber's.
pub(crate) mod metrics;
pub(crate) mod prometheus;
pub(crate) mod traces;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axiom_proto::wire::{Body, Event};
use serde::Deserialize;

/// `[telemetry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TelemetryConfig {
    /// Export traces and metrics over OTLP (off by default: nothing else has to run).
    pub(crate) otlp: bool,
    /// `grpc` (a collector's port 4317) or `http/protobuf` (port 4318).
    pub(crate) otlp_protocol: String,
    /// The collector: `http://127.0.0.1:4317` for gRPC, `http://127.0.0.1:4318` for HTTP
    /// (`/v1/traces` and `/v1/metrics` are appended).
    pub(crate) otlp_endpoint: String,
    /// How often metrics are exported.
    pub(crate) metrics_interval_ms: u64,
    /// Command lines, arguments and violation details as span attributes (secrets are masked
    /// before any of it leaves axiomd). false (the default: a collector is often another
    /// team's, and what an agent ran is the user's): program names, rule ids and counts only.
    pub(crate) include_content: bool,
    /// `address:port` of a Prometheus text endpoint (`GET /metrics`); empty: off.
    pub(crate) prometheus_listen: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp: false,
            otlp_protocol: "grpc".into(),
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            metrics_interval_ms: 10_000,
            include_content: false,
            prometheus_listen: String::new(),
        }
    }
}

impl TelemetryConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !matches!(self.otlp_protocol.as_str(), "grpc" | "http/protobuf") {
            return Err(format!(
                "otlp_protocol {:?}: grpc or http/protobuf",
                self.otlp_protocol
            ));
        }
        if !(100..=3_600_000).contains(&self.metrics_interval_ms) {
            return Err(format!(
                "metrics_interval_ms {} is outside 100..=3600000",
                self.metrics_interval_ms
            ));
        }
        if !self.prometheus_listen.is_empty()
            && self
                .prometheus_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(format!(
                "prometheus_listen {:?} is not address:port",
                self.prometheus_listen
            ));
        }
        Ok(())
    }
}

/// Upper bounds of the latency histograms, seconds.
pub(crate) const LATENCY_BOUNDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// A latency histogram with `LATENCY_BOUNDS`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Histogram {
    /// Per bucket (not cumulative), and one past the last bound.
    pub(crate) buckets: [u64; LATENCY_BOUNDS.len() + 1],
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl Histogram {
    pub(crate) fn record(&mut self, secs: f64) {
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i] += 1;
        self.sum += secs;
        self.count += 1;
    }
}

/// What the telemetry task counted from the events it saw.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) violations: BTreeMap<String, u64>,
    pub(crate) interventions: BTreeMap<String, u64>,
    pub(crate) denied: BTreeMap<String, u64>,
    /// From the offending syscall to the violation.
    pub(crate) detection: Histogram,
    /// Carrying out an intervention.
    pub(crate) intervention: Histogram,
}

impl Counts {
    pub(crate) fn observe(&mut self, ev: &Event) {
        match &ev.body {
            Body::Violation {
                rule, latency_us, ..
            } => {
                *self.violations.entry(rule.clone()).or_default() += 1;
                if let Some(us) = latency_us {
                    self.detection.record(us / 1e6);
                }
            }
            Body::Intervention { action, act_us, .. } => {
                *self
                    .interventions
                    .entry(action.name().to_string())
                    .or_default() += 1;
                if let Some(us) = act_us {
                    self.intervention.record(us / 1e6);
                }
            }
            Body::Denied { op, count, .. } => {
                *self.denied.entry(op.name().to_string()).or_default() += count;
            }
            _ => {}
        }
    }
}

pub(crate) type SharedCounts = Arc<Mutex<Counts>>;

/// What telemetry reads of the daemon: the snapshot `status` answers with, taken on demand.
/// Injected by the daemon, so that telemetry (a sink) never names the API above it.
pub(crate) type StatusSource = Arc<dyn Fn() -> axiom_proto::wire::Status + Send + Sync>;

/// Starts what `[telemetry]` asks for. Returns the OTLP providers (flushed at shutdown).
pub(crate) async fn start(
    cfg: &TelemetryConfig,
    bus: Arc<crate::bus::Bus>,
    status: StatusSource,
    sup: &mut crate::supervise::Supervisor,
) -> anyhow::Result<Option<metrics::Otlp>> {
    use crate::supervise::Role;
    let counts: SharedCounts = Default::default();
    if !cfg.prometheus_listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&cfg.prometheus_listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!("telemetry.prometheus_listen {}: {e}", cfg.prometheus_listen)
            })?;
        tracing::info!(listen = %cfg.prometheus_listen, "Prometheus endpoint ready");
        sup.task(
            "prometheus",
            Role::Vital,
            prometheus::serve(listener, status.clone(), counts.clone()),
        );
    }
    let otlp = if cfg.otlp {
        let o = metrics::Otlp::start(cfg, status.clone(), counts.clone())?;
        tracing::info!(endpoint = %cfg.otlp_endpoint, protocol = %cfg.otlp_protocol, "OTLP export on");
        Some(o)
    } else {
        None
    };
    if otlp.is_some() || !cfg.prometheus_listen.is_empty() {
        let tracer = otlp
            .as_ref()
            .map(|o| traces::Sessions::new(o.tracer(), cfg.include_content));
        // Subscribed here, not in the task: an agent started before the task first runs must
        // not be missed (its session would have no start).
        let (_, rx) = bus.subscribe(false);
        let latencies = otlp.as_ref().map(|o| o.latencies.clone());
        sup.task(
            "telemetry",
            Role::Vital,
            follow(bus, rx, counts, tracer, latencies),
        );
    }
    Ok(otlp)
}

/// Follows the bus: counts, latencies and sessions as traces.
async fn follow(
    bus: Arc<crate::bus::Bus>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    counts: SharedCounts,
    mut sessions: Option<traces::Sessions>,
    latencies: Option<metrics::Latencies>,
) {
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(ev) => {
                    if let Ok(mut c) = counts.lock() {
                        c.observe(&ev);
                    }
                    if let Some(s) = sessions.as_mut() {
                        s.on_event(&ev);
                    }
                    if let Some(l) = &latencies {
                        l.record(&ev);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => bus.lagged(n),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = sweep.tick() => {
                if let Some(s) = sessions.as_mut() {
                    s.sweep();
                }
            }
        }
    }
}
