//! OTLP export: the tracer provider behind the session traces, and the meter provider whose
//! instruments read axiomd's own counters (the same ones `axiomctl status` and the Prometheus
//! endpoint show) at each export.
use std::{collections::BTreeMap, time::Duration};

use opentelemetry::{KeyValue, metrics::MeterProvider as _, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::{SdkTracer, SdkTracerProvider},
};

use super::{LATENCY_BOUNDS, SharedCounts, TelemetryConfig};

/// The running exporters.
pub(crate) struct Otlp {
    pub(crate) latencies: Latencies,
    traces: SdkTracerProvider,
    metrics: SdkMeterProvider,
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The machine's id (systemd's, from /etc/machine-id; else its host name): the host's, and,
/// one axiomd running per host, the service instance's — the same across restarts and unique
/// across hosts.
pub(crate) fn instance_id() -> String {
    match read("/etc/machine-id") {
        id if id.is_empty() => read("/proc/sys/kernel/hostname"),
        id => id,
    }
}

fn resource() -> Resource {
    let host = read("/proc/sys/kernel/hostname");
    let id = read("/etc/machine-id");
    let mut attrs = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("host.name", host),
    ];
    if !id.is_empty() {
        attrs.push(KeyValue::new("host.id", id));
    }
    attrs.push(KeyValue::new("service.instance.id", instance_id()));
    Resource::builder()
        .with_service_name("axiomd")
        .with_attributes(attrs)
        .build()
}

impl Otlp {
    /// Builds both exporters (on the tokio runtime: the gRPC client needs it) and registers the
    /// instruments.
    pub(crate) fn start(
        cfg: &TelemetryConfig,
        status: super::StatusSource,
        counts: SharedCounts,
    ) -> anyhow::Result<Otlp> {
        let ep = cfg.otlp_endpoint.trim_end_matches('/');
        let (spans, metrics) = if cfg.otlp_protocol == "grpc" {
            (
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(ep)
                    .build()?,
                opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(ep)
                    .build()?,
            )
        } else {
            (
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(format!("{ep}/v1/traces"))
                    .build()?,
                opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(format!("{ep}/v1/metrics"))
                    .build()?,
            )
        };
        let traces = SdkTracerProvider::builder()
            .with_resource(resource())
            .with_batch_exporter(spans)
            .build();
        let reader = PeriodicReader::builder(metrics)
            .with_interval(Duration::from_millis(cfg.metrics_interval_ms))
            .build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource())
            .with_reader(reader)
            .build();
        let latencies = instruments(&provider, status, counts);
        Ok(Otlp {
            latencies,
            traces,
            metrics: provider,
        })
    }

    pub(crate) fn tracer(&self) -> SdkTracer {
        self.traces.tracer("axiomd")
    }

    /// Exports what is pending (at a clean stop).
    pub(crate) fn shutdown(&self) {
        if let Err(e) = self.traces.shutdown() {
            tracing::warn!("OTLP traces at shutdown: {e}");
        }
        if let Err(e) = self.metrics.shutdown() {
            tracing::warn!("OTLP metrics at shutdown: {e}");
        }
    }
}

/// The instruments. Counters are observed, at each export, from the counters axiomd keeps
/// anyway; the latency histograms are recorded as violations and interventions arrive.
fn instruments(
    provider: &SdkMeterProvider,
    status: super::StatusSource,
    counts: SharedCounts,
) -> Latencies {
    let meter = provider.meter("axiomd");
    // Each counter: a map of label value → count, read at each export.
    let counter = |name: &'static str,
                   desc: &'static str,
                   key: &'static str,
                   read: Box<dyn Fn() -> BTreeMap<String, u64> + Send + Sync>| {
        meter
            .u64_observable_counter(name)
            .with_description(desc)
            .with_callback(move |o| {
                for (k, n) in read() {
                    o.observe(n, &[KeyValue::new(key, k)]);
                }
            })
            .build();
    };
    let s = status.clone();
    counter(
        "axiom.events",
        "Events published, by kind",
        "kind",
        Box::new(move || s().events),
    );
    let s = status.clone();
    counter(
        "axiom.events.lost",
        "Records lost, by cause (kernel ring full, shed under back-pressure, lagging subscribers)",
        "cause",
        Box::new(move || s().lost),
    );
    type Pick = fn(&super::Counts) -> BTreeMap<String, u64>;
    let by: [(&'static str, &'static str, &'static str, Pick); 3] = [
        ("axiom.violations", "Violations, by rule", "rule", |c| {
            c.violations.clone()
        }),
        (
            "axiom.interventions",
            "Interventions, by action",
            "action",
            |c| c.interventions.clone(),
        ),
        (
            "axiom.denied",
            "Refusals by the agents' confinement, by operation",
            "op",
            |c| c.denied.clone(),
        ),
    ];
    for (name, desc, key, pick) in by {
        let counts = counts.clone();
        counter(
            name,
            desc,
            key,
            Box::new(move || counts.lock().map(|c| pick(&c)).unwrap_or_default()),
        );
    }
    {
        let s = status.clone();
        meter
            .u64_observable_gauge("axiom.agents.tracked")
            .with_description("Agents axiomd tracks now")
            .with_callback(move |o| o.observe(s().agents_running, &[]))
            .build();
    }
    let histogram = |name: &'static str, desc: &'static str| {
        meter
            .f64_histogram(name)
            .with_unit("s")
            .with_description(desc)
            .with_boundaries(LATENCY_BOUNDS.to_vec())
            .build()
    };
    Latencies {
        detection: histogram(
            "axiom.detection.latency",
            "From the offending syscall to the violation",
        ),
        intervention: histogram("axiom.intervention.latency", "Carrying out an intervention"),
    }
}

/// The latency histograms, recorded by the telemetry task as violations and interventions go by.
#[derive(Clone)]
pub(crate) struct Latencies {
    detection: opentelemetry::metrics::Histogram<f64>,
    intervention: opentelemetry::metrics::Histogram<f64>,
}

impl Latencies {
    pub(crate) fn record(&self, ev: &axiom_proto::wire::Event) {
        use axiom_proto::wire::Body;
        match &ev.body {
            Body::Violation {
                rule,
                latency_us: Some(us),
                ..
            } => self
                .detection
                .record(us / 1e6, &[KeyValue::new("rule", rule.clone())]),
            Body::Intervention {
                action,
                act_us: Some(us),
                ..
            } => self
                .intervention
                .record(us / 1e6, &[KeyValue::new("action", action.name())]),
            _ => {}
        }
    }
}
