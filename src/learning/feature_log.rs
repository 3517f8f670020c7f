//! The served-feature log: a sampled share of served feeds, each shown item with its position,
//! the model's score and the exact feature vector it was ranked with, and the events that name
//! a logged feed. A feed never waits for it: records go into a bounded queue that one writer
//! thread drains into the sink (files or Kafka, `sinks`); when the queue is full a record is
//! dropped and counted.
//!
//! Sampling is a pure function of the request id ([`sampled_at`]): the ingestion path knows,
//! without looking anything up, which events belong to a logged feed — whichever replica
//! served it.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::records::Record;
use super::sinks::{self, Sink};
use crate::config::Settings;
use crate::telemetry::InternalEvent;
use crate::telemetry::Metrics;
use crate::telemetry::events::{FeatureLogDropped, FeatureLogWritten};

/// A stable 64-bit hash of `parts` (FNV-1a with a splitmix64 finish for well-spread high
/// bits). Stable across processes, versions and machines — unlike std's and foldhash's
/// seeded hashers — because replicas, restarts and the ingestion path must all agree on it.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// `hash` as a point of [0, 1).
pub fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether the feed `request_id` is in a sample of share `rate`.
pub fn sampled_at(rate: f64, request_id: &str) -> bool {
    rate > 0.0 && unit(stable_hash(&["feature-log", request_id])) < rate
}

pub struct FeatureLog {
    /// Per configured tenant; others use `default_rate`.
    rates: RwLock<(HashMap<String, f64>, f64)>,
    queue: Option<SyncSender<Record>>,
    metrics: Arc<Metrics>,
}

impl FeatureLog {
    /// The log the settings describe, its writer thread started (the sink opens lazily: no
    /// file or connection until a first record).
    pub fn start(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let sink = sinks::open(settings, metrics.clone())?;
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.feature_log.queue_capacity);
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("feature-log".into())
            .spawn(move || write_all(rx, sink, &writer_metrics))?;
        let log = Self {
            rates: RwLock::new(Default::default()),
            queue: Some(tx),
            metrics,
        };
        log.configure(settings);
        Ok(log)
    }

    /// A log that logs nothing (tools and tests that serve without one).
    pub fn off(metrics: Arc<Metrics>) -> Self {
        Self {
            rates: RwLock::new(Default::default()),
            queue: None,
            metrics,
        }
    }

    /// The sample rates as `settings` say (at start, and on a config reload).
    pub fn configure(&self, settings: &Settings) {
        let rates = settings
            .tenants
            .keys()
            .map(|t| (t.clone(), settings.feature_log_rate(t)))
            .collect();
        *self.rates.write().unwrap_or_else(|e| e.into_inner()) =
            (rates, settings.feature_log.sample_rate);
    }

    fn rate(&self, tenant: &str) -> f64 {
        if self.queue.is_none() {
            return 0.0;
        }
        let rates = self.rates.read().unwrap_or_else(|e| e.into_inner());
        rates.0.get(tenant).copied().unwrap_or(rates.1)
    }

    /// Whether the feed `request_id` of `tenant` is logged (and so are the events naming it).
    pub fn sampled(&self, tenant: &str, request_id: &str) -> bool {
        sampled_at(self.rate(tenant), request_id)
    }

    /// Queues a record for the writer; never waits.
    pub fn log(&self, record: Record) {
        let Some(queue) = &self.queue else { return };
        if let Err(e) = queue.try_send(record) {
            let reason = match e {
                TrySendError::Full(_) => "queue_full",
                TrySendError::Disconnected(_) => "sink_error",
            };
            FeatureLogDropped {
                reason,
                error: None,
            }
            .emit(&self.metrics);
        }
    }
}

/// The writer thread: drains the queue into the sink, flushing whenever it is idle, until every
/// sender is gone.
fn write_all(rx: Receiver<Record>, mut sink: Box<dyn Sink>, metrics: &Metrics) {
    // A failing sink fails every record: one warning per interval, every drop counted.
    let mut last_warning: Option<Instant> = None;
    let mut fail = |error: &(dyn std::error::Error + 'static)| {
        let warn = last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if warn {
            last_warning = Some(Instant::now());
        }
        FeatureLogDropped {
            reason: "sink_error",
            error: warn.then_some(error),
        }
        .emit(metrics);
    };
    let mut line = Vec::with_capacity(4096);
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = sink.idle() {
                    fail(&e);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                if let Err(e) = sink.idle() {
                    fail(&e);
                }
                return;
            }
        };
        let mut written = FeatureLogWritten {
            feeds: 0,
            outcomes: 0,
        };
        for record in std::iter::once(first).chain(rx.try_iter().take(1000)) {
            line.clear();
            serde_json::to_writer(&mut line, &record).expect("records serialize");
            match sink.write(&record.key(), &line) {
                Ok(()) => match record {
                    Record::Feed(_) => written.feeds += 1,
                    Record::Outcome(_) => written.outcomes += 1,
                },
                Err(e) => fail(&e),
            }
        }
        written.emit(metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stable_hash_does_not_change() {
        // Replicas, restarts and releases must agree: these values are part of the contract.
        assert_eq!(stable_hash(&[""]), stable_hash(&[""]));
        assert_ne!(stable_hash(&["a", "b"]), stable_hash(&["ab"]));
        assert_eq!(
            stable_hash(&["demo-a", "exp", "user-1"]),
            4_823_090_714_367_936_417
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = Arc::new(Metrics::new());
        // A writer that is behind: nothing drains the queue of two.
        let (tx, _rx) = std::sync::mpsc::sync_channel(2);
        let log = FeatureLog {
            rates: RwLock::new((HashMap::new(), 1.0)),
            queue: Some(tx),
            metrics: metrics.clone(),
        };
        let outcome = || {
            Record::Outcome(crate::learning::OutcomeRecord {
                request_id: "r".into(),
                tenant: "t".into(),
                user_id: "u".into(),
                item_id: "i".into(),
                event: "click".into(),
                ts: 0.0,
            })
        };
        let started = Instant::now();
        for _ in 0..5 {
            log.log(outcome());
        }
        assert!(started.elapsed() < Duration::from_secs(1), "never blocks");
        let dropped = metrics
            .learning
            .feature_log_dropped_total
            .with_label_values(&["queue_full"])
            .get();
        assert_eq!(dropped, 3);
    }

    #[test]
    fn sampling_takes_the_configured_share() {
        let n = 100_000;
        let hits = (0..n)
            .filter(|i| sampled_at(0.1, &format!("req-{i}")))
            .count();
        assert!((9_500..=10_500).contains(&hits), "{hits} of {n} at 0.1");
        assert!(!(0..1000).any(|i| sampled_at(0.0, &format!("req-{i}"))));
        assert!((0..1000).all(|i| sampled_at(1.0, &format!("req-{i}"))));
    }
}
