//! The ops page's data (`GET /ops/data`): what an operator wants before opening Grafana,
//! computed from the service's own state — no Prometheus needed. Per tenant over the last
//! minute: feeds/s, p50/p99 latency, error and degraded ratios (from the in-process metrics,
//! by differences between snapshots taken when the data is asked for); each actor's state and
//! restarts; Redis, Kafka, the models; the last errors.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use serde_json::{Value, json};

use super::AppState;
use super::readiness::readiness;

/// The window the rates and quantiles cover, once the page has been open that long.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Statuses that count as the service failing a feed (not the client).
const ERROR_STATUSES: [&str; 3] = ["unavailable", "deadline_exceeded", "internal"];

/// One tenant's cumulative feed counts at one instant.
#[derive(Debug, Clone, Default)]
struct TenantCounts {
    ok: u64,
    errors: u64,
    degraded: u64,
    /// The latency histogram: (upper bound in seconds, cumulative count), summed over
    /// transports.
    latency: Vec<(f64, u64)>,
    latency_count: u64,
}

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    tenants: BTreeMap<String, TenantCounts>,
}

/// Snapshots of the counters, the oldest first: at most one per second, none older than
/// the window (but the newest before it, to difference against).
pub struct OpsBoard {
    samples: Mutex<VecDeque<Sample>>,
    started: Instant,
}

impl Default for OpsBoard {
    fn default() -> Self {
        Self::new()
    }
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

impl OpsBoard {
    /// A board whose first sample is the start: all zero.
    pub fn new() -> Self {
        let started = Instant::now();
        Self {
            samples: Mutex::new(VecDeque::from([Sample {
                at: started,
                tenants: BTreeMap::new(),
            }])),
            started,
        }
    }

    fn sample(state: &AppState) -> Sample {
        let m = &state.metrics;
        let mut tenants: BTreeMap<String, TenantCounts> = BTreeMap::new();
        for family in m.feed_requests_total.collect() {
            for metric in family.get_metric() {
                let t = tenants
                    .entry(label(metric, "tenant").to_owned())
                    .or_default();
                let n = metric.get_counter().value() as u64;
                match label(metric, "status") {
                    "ok" => t.ok += n,
                    s if ERROR_STATUSES.contains(&s) => t.errors += n,
                    _ => {}
                }
            }
        }
        for family in m.feed_degraded_total.collect() {
            for metric in family.get_metric() {
                let t = tenants
                    .entry(label(metric, "tenant").to_owned())
                    .or_default();
                t.degraded += metric.get_counter().value() as u64;
            }
        }
        for family in m.feed_latency_seconds.collect() {
            for metric in family.get_metric() {
                let t = tenants
                    .entry(label(metric, "tenant").to_owned())
                    .or_default();
                let h = metric.get_histogram();
                t.latency_count += h.get_sample_count();
                for (i, b) in h.get_bucket().iter().enumerate() {
                    match t.latency.get_mut(i) {
                        Some(slot) => slot.1 += b.cumulative_count(),
                        None => t.latency.push((b.upper_bound(), b.cumulative_count())),
                    }
                }
            }
        }
        Sample {
            at: Instant::now(),
            tenants,
        }
    }

    /// Takes a sample and returns it with the one to difference against: the oldest within
    /// the window (or the newest before it).
    fn window(&self, state: &AppState) -> (Sample, Sample) {
        let now = Self::sample(state);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        while samples.len() > 1 && now.at.duration_since(samples[1].at) >= WINDOW {
            samples.pop_front();
        }
        let base = samples.front().cloned().expect("never empty");
        if samples
            .back()
            .is_none_or(|last| now.at.duration_since(last.at) >= Duration::from_secs(1))
        {
            samples.push_back(now.clone());
        }
        (base, now)
    }

    /// The page's data.
    pub fn data(&self, state: &AppState) -> Value {
        let (base, now) = self.window(state);
        let seconds = now.at.duration_since(base.at).as_secs_f64().max(1e-3);
        let empty = TenantCounts::default();
        let tenants: Vec<Value> = state
            .tenants
            .ids()
            .map(|id| {
                let n = now.tenants.get(&**id).unwrap_or(&empty);
                let b = base.tenants.get(&**id).unwrap_or(&empty);
                let ok = n.ok - b.ok.min(n.ok);
                let errors = n.errors - b.errors.min(n.errors);
                let degraded = n.degraded - b.degraded.min(n.degraded);
                let feeds = ok + errors;
                let ratio = |x: u64| (feeds > 0).then(|| x as f64 / feeds as f64);
                let delta: Vec<(f64, u64)> = n
                    .latency
                    .iter()
                    .enumerate()
                    .map(|(i, (le, c))| {
                        let before = b.latency.get(i).map_or(0, |x| x.1);
                        (*le, c - before.min(*c))
                    })
                    .collect();
                let count = n.latency_count - b.latency_count.min(n.latency_count);
                json!({
                    "tenant": &**id,
                    "feeds": feeds,
                    "feeds_per_second": feeds as f64 / seconds,
                    "p50_ms": quantile(0.5, &delta, count).map(|s| s * 1e3),
                    "p99_ms": quantile(0.99, &delta, count).map(|s| s * 1e3),
                    "error_ratio": ratio(errors),
                    "degraded_ratio": ratio(degraded),
                })
            })
            .collect();
        let ready = readiness(state);
        let m = &state.metrics;
        let last_event = m.last_event_processed_timestamp_seconds.get();
        let now_unix = crate::domain::unix_now();
        let lag: i64 = m
            .kafka_consumer_lag
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().iter().map(|x| x.get_gauge().value() as i64))
            .sum();
        let models: Vec<Value> = state
            .models
            .slots()
            .iter()
            .map(|slot| {
                let model = slot.current();
                let name = &model.metadata.name;
                let psi = |g: &prometheus::GaugeVec, feature: bool| {
                    g.collect()
                        .iter()
                        .flat_map(|f| f.get_metric().iter())
                        .filter(|x| label(x, "model") == name)
                        .map(|x| {
                            (
                                x.get_gauge().value(),
                                feature.then(|| label(x, "feature").to_owned()),
                            )
                        })
                        .max_by(|a, b| a.0.total_cmp(&b.0))
                };
                let worst = psi(&m.ml.feature_drift_psi, true);
                json!({
                    "slot": slot.name,
                    "name": name,
                    "version": model.metadata.version,
                    "canary_ok": slot.canary_ok(),
                    "score_psi": psi(&m.ml.score_drift_psi, false).map(|p| p.0),
                    "max_feature_psi": worst.as_ref().map(|p| p.0),
                    "max_feature_psi_feature": worst.and_then(|p| p.1),
                })
            })
            .collect();
        json!({
            "ready": ready.ready,
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "window_seconds": seconds,
            "tenants": tenants,
            "actors": ready.components["actors"],
            "store": ready.components["store"],
            "store_circuit_open": m.redis_circuit_open.get() == 1,
            "kafka": {
                "enabled": state.producer.is_some(),
                "lag": lag,
                "assigned_partitions": m.kafka_assigned_partitions.get(),
                "last_event_age_seconds": (last_event > 0.0).then(|| (now_unix - last_event).max(0.0)),
            },
            "models": models,
            "recent_errors": m.recent_errors.list(),
        })
    }
}

/// The `q` quantile of a histogram's counts (cumulative, by upper bound), interpolated
/// linearly inside its bucket as Prometheus' `histogram_quantile` does; `None` without
/// observations. Beyond the last finite bound: that bound.
fn quantile(q: f64, buckets: &[(f64, u64)], count: u64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(upper, cumulative) in buckets {
        if cumulative as f64 >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let inside = (cumulative - below) as f64;
            let share = if inside > 0.0 {
                (rank - below as f64) / inside
            } else {
                1.0
            };
            return Some(lower + (upper - lower) * share);
        }
        (lower, below) = (upper, cumulative);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_interpolate_inside_their_bucket_like_prometheus() {
        let b = [(0.001, 10), (0.002, 30), (0.005, 40), (f64::INFINITY, 40)];
        assert_eq!(quantile(0.5, &b, 40), Some(0.0015));
        assert_eq!(quantile(0.25, &b, 40), Some(0.001));
        assert!((quantile(0.99, &b, 40).unwrap() - 0.00488).abs() < 1e-9);
        assert_eq!(quantile(0.5, &b, 0), None);
        // Everything above the last finite bound: that bound.
        assert_eq!(quantile(0.5, &[(0.1, 0), (f64::INFINITY, 5)], 5), Some(0.1));
    }
}
