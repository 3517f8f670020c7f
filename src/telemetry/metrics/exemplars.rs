//! Exemplars of the feed latency histogram: per tenant, transport and bucket, the latest
//! sampled request's trace id, its latency and when — so that a latency panel links to the
//! trace of a slow feed. The `prometheus` crate has no exemplars; they are kept here and
//! written into the OpenMetrics exposition (`openmetrics.rs`), the only format that has them.
//! Bounded: tenants (configured) × transports × buckets.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// 32 lowercase hex digits (W3C / OpenTelemetry).
    pub trace_id: String,
    pub value: f64,
    /// Unix seconds.
    pub at: f64,
}

/// Keyed by (tenant, transport, bucket index; the index past the last bound is `+Inf`).
type Slots = HashMap<(String, String, usize), Exemplar>;

pub struct LatencyExemplars {
    bounds: Vec<f64>,
    slots: Mutex<Slots>,
}

impl LatencyExemplars {
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps `trace_id` as the exemplar of the bucket `seconds` falls in.
    pub fn record(&self, tenant: &str, transport: &str, seconds: f64, trace_id: &str) {
        let bucket = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len());
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (tenant.to_owned(), transport.to_owned(), bucket),
            Exemplar {
                trace_id: trace_id.to_owned(),
                value: seconds,
                at,
            },
        );
    }

    /// The exemplar of a bucket given by its upper bound (`f64::INFINITY`: `+Inf`).
    pub fn get(&self, tenant: &str, transport: &str, upper: f64) -> Option<Exemplar> {
        let bucket = match upper.is_infinite() {
            true => self.bounds.len(),
            false => self.bounds.iter().position(|b| *b == upper)?,
        };
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(tenant.to_owned(), transport.to_owned(), bucket))
            .cloned()
    }
}
