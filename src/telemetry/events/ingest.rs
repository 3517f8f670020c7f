//! Events of ingestion: catalog upserts, event batches applied or rejected, the Kafka consumer.

use std::time::Duration;

use tracing::{error, info, warn};

use super::InternalEvent;
use crate::telemetry::Metrics;

pub struct ItemsUpserted<'a> {
    pub tenant: &'a str,
    pub count: usize,
}

impl InternalEvent for ItemsUpserted<'_> {
    fn emit(self, m: &Metrics) {
        m.items_upserted_total
            .with_label_values(&[self.tenant])
            .inc_by(self.count as u64);
        info!(
            event = "ItemsUpserted",
            tenant = self.tenant,
            count = self.count as u64
        );
    }
}

/// A batch written to the store: `events` yields each written event's kind (its label) and
/// timestamp.
pub struct EventsApplied<'a, I> {
    pub tenant: &'a str,
    pub source: &'static str,
    /// The events written (duplicates excluded): (kind, Unix seconds).
    pub events: I,
    pub applied: usize,
    pub duplicates: usize,
    pub unknown_items: usize,
    pub duration: Duration,
}

impl<I: Iterator<Item = (&'static str, f64)>> InternalEvent for EventsApplied<'_, I> {
    fn emit(self, m: &Metrics) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        // Four kinds at most: a small vector beats a map.
        let mut by_kind: Vec<(&str, u64)> = Vec::with_capacity(4);
        for (kind, at) in self.events {
            match by_kind.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => by_kind.push((kind, 1)),
            }
            m.feature_freshness_seconds.observe((now - at).max(0.0));
        }
        for (kind, n) in by_kind {
            m.events_ingested_total
                .with_label_values(&[self.tenant, kind, self.source])
                .inc_by(n);
        }
        m.events_duplicates_total
            .with_label_values(&[self.tenant])
            .inc_by(self.duplicates as u64);
        m.event_apply_seconds.observe(self.duration.as_secs_f64());
        m.last_event_processed_timestamp_seconds.set(now);
        tracing::debug!(
            event = "EventsApplied",
            tenant = self.tenant,
            source = self.source,
            applied = self.applied as u64,
            duplicates = self.duplicates as u64,
            unknown_items = self.unknown_items as u64,
            duration_ms = self.duration.as_secs_f64() * 1e3
        );
    }
}

pub struct EventsRejected {
    /// Bounded: `invalid`, `unknown_item`, `unparseable`.
    pub reason: &'static str,
    pub count: usize,
}

impl InternalEvent for EventsRejected {
    fn emit(self, m: &Metrics) {
        m.events_rejected_total
            .with_label_values(&[self.reason])
            .inc_by(self.count as u64);
        if self.count > 0 {
            tracing::info!(
                event = "EventsRejected",
                reason = self.reason,
                count = self.count as u64
            );
        }
    }
}

pub struct KafkaConsumerFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for KafkaConsumerFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.recent_errors
            .push("kafka", "", "consumer_failed", self.error.to_string());
        error!(event = "KafkaConsumerFailed", error = %self.error);
    }
}

/// The consumer's lag on each partition assigned to it: (partition, messages behind).
pub struct KafkaLagMeasured<'a> {
    pub topic: &'a str,
    pub lag: &'a [(i32, i64)],
}

impl InternalEvent for KafkaLagMeasured<'_> {
    fn emit(self, m: &Metrics) {
        m.kafka_assigned_partitions.set(self.lag.len() as i64);
        // Partitions moved to another replica must not keep their last value here.
        m.kafka_consumer_lag.reset();
        for (partition, n) in self.lag {
            m.kafka_consumer_lag
                .with_label_values(&[self.topic, &partition.to_string()])
                .set(*n);
        }
    }
}

/// A message that can never apply, produced to the dead-letter topic (and committed).
pub struct EventsDeadLettered {
    /// Bounded: `unparseable`, `too_large`, `invalid`, `unknown_tenant`, `unknown_item`.
    pub reason: &'static str,
}

impl InternalEvent for EventsDeadLettered {
    fn emit(self, m: &Metrics) {
        m.events_dead_lettered_total
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// A batch the store could not take, to be retried after `backoff`.
pub struct KafkaBatchRetried<'a> {
    pub error: &'a str,
    pub attempt: u64,
    pub backoff: Duration,
}

impl InternalEvent for KafkaBatchRetried<'_> {
    fn emit(self, m: &Metrics) {
        m.kafka_batch_retries_total.inc();
        warn!(
            event = "KafkaBatchRetried",
            error = self.error,
            attempt = self.attempt,
            backoff_ms = self.backoff.as_secs_f64() * 1e3,
        );
    }
}

/// The consumer could not commit a batch's offsets; the next batch's commit covers them.
pub struct KafkaCommitFailed<'a> {
    pub error: &'a (dyn std::error::Error + 'static),
}

impl InternalEvent for KafkaCommitFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.kafka_commit_errors_total.inc();
        warn!(event = "KafkaCommitFailed", error = self.error);
    }
}
