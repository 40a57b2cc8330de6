//! `[sensor]`: where the programs are pinned, and the rings and capture they run with.
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SensorConfig {
    /// bpffs directory for pinned programs, maps and links (no dots: bpffs rejects them).
    pub(crate) pin_dir: PathBuf,
    /// Leave the programs attached and the maps pinned on a clean stop, so tracking never stops
    /// across restarts and upgrades. `false` detaches everything on stop.
    pub(crate) keep_sensors_on_exit: bool,
    /// Bytes captured from each output syscall (1..=8192).
    pub(crate) capture_bytes: u32,
    /// Ring for lifecycle, file and network records (power of two, ≥ 4096).
    pub(crate) events_ring_bytes: u32,
    /// Ring for captured output (power of two, ≥ 4096).
    pub(crate) output_ring_bytes: u32,
    /// Output records each CPU sends between two wakeups of axiomd; the rest wait for the
    /// `output_flush_ms` timer. Batching wakeups is what keeps capture cheap per write.
    pub(crate) output_wakeup_records: u32,
    /// Longest time captured output waits in the ring (1..=1000 ms).
    pub(crate) output_flush_ms: u32,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            pin_dir: "/sys/fs/bpf/axiom".into(),
            keep_sensors_on_exit: true,
            capture_bytes: axiom_common::DEFAULT_CAPTURE as u32,
            events_ring_bytes: 4 << 20,
            output_ring_bytes: 16 << 20,
            output_wakeup_records: axiom_common::DEFAULT_OUTPUT_WAKEUP_RECORDS as u32,
            output_flush_ms: 10,
        }
    }
}

impl SensorConfig {
    /// The key (within `[sensor]`) and the reason, for the first value that cannot run.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=axiom_common::MAX_CAPTURE as u32).contains(&self.capture_bytes) {
            return Err((
                "capture_bytes",
                format!(
                    "{} is outside 1..={}",
                    self.capture_bytes,
                    axiom_common::MAX_CAPTURE
                ),
            ));
        }
        for (key, v) in [
            ("events_ring_bytes", self.events_ring_bytes),
            ("output_ring_bytes", self.output_ring_bytes),
        ] {
            if v < 4096 || !v.is_power_of_two() {
                return Err((key, format!("{v} must be a power of two ≥ 4096")));
            }
        }
        if !(1..=1000).contains(&self.output_flush_ms) {
            return Err((
                "output_flush_ms",
                format!("{} is outside 1..=1000", self.output_flush_ms),
            ));
        }
        if !(1..=65536).contains(&self.output_wakeup_records) {
            return Err((
                "output_wakeup_records",
                format!("{} is outside 1..=65536", self.output_wakeup_records),
            ));
        }
        if self.pin_dir.to_string_lossy().contains('.') {
            return Err(("pin_dir", "bpffs rejects names containing a dot".into()));
        }
        if !self.pin_dir.starts_with("/sys/fs/bpf") {
            return Err(("pin_dir", "must be below /sys/fs/bpf".into()));
        }
        Ok(())
    }
}
