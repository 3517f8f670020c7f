//! Events of live ranking quality: feeds logged for the join, clicks and purchases joined with them.

use super::InternalEvent;
use crate::telemetry::Metrics;

/// The ranks CTR@k is counted at (`eaglerank_ranking_clicks_at_k_total`'s `k`).
pub const CUTOFFS: [usize; 4] = [1, 5, 10, 20];

/// A feed remembered for the live-quality join.
pub struct FeedRanked<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    pub version: &'a str,
}

impl InternalEvent for FeedRanked<'_> {
    fn emit(self, m: &Metrics) {
        m.ml.ranking_feeds_total
            .with_label_values(&[self.model, self.version, self.tenant])
            .inc();
    }
}

/// A click or purchase joined with the feed it came from, `position` 0-based.
pub struct FeedInteraction<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    pub version: &'a str,
    /// `click` or `purchase`.
    pub kind: &'static str,
    pub position: usize,
    pub first_click: bool,
}

impl InternalEvent for FeedInteraction<'_> {
    fn emit(self, m: &Metrics) {
        let (name, version) = (self.model, self.version);
        let kind = self.kind;
        for k in CUTOFFS {
            if self.position < k {
                m.ml.ranking_interactions_total
                    .with_label_values(&[name, version, self.tenant, kind, &k.to_string()])
                    .inc();
            }
        }
        if self.first_click {
            m.ml.ranking_reciprocal_rank_sum
                .with_label_values(&[name, version, self.tenant])
                .inc_by(1.0 / (self.position + 1) as f64);
        }
    }
}

/// The served-feed log could not be written or read (Redis down): those feeds and events are
/// not joined, and the live quality figures undercount until it recovers.
pub struct FeedLogFailed<'a> {
    pub error: &'a (dyn std::error::Error + 'static),
    /// The feeds (a write) or the lookups (a join) lost.
    pub feeds: usize,
}

impl InternalEvent for FeedLogFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.ml.ranking_unjoined_total
            .with_label_values(&["feed_log_unavailable"])
            .inc_by(self.feeds as u64);
        tracing::warn!(event = "FeedLogFailed", feeds = self.feeds, error = %self.error);
    }
}

/// A batch of served feeds written to Redis's log (or tried: a failure is also a
/// [`FeedLogFailed`]).
pub struct FeedLogWritten {
    pub feeds: usize,
    pub duration: std::time::Duration,
}

impl InternalEvent for FeedLogWritten {
    fn emit(self, m: &Metrics) {
        m.feed_log_batch_feeds.observe(self.feeds as f64);
        m.feed_log_write_seconds
            .observe(self.duration.as_secs_f64());
    }
}

pub struct InteractionUnjoined {
    pub reason: &'static str,
}

impl InternalEvent for InteractionUnjoined {
    fn emit(self, m: &Metrics) {
        m.ml.ranking_unjoined_total
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// The in-process served-feed log's size, reported as a segment closes, and the feeds it had to
/// drop before their join window ended.
pub struct FeedLogSized {
    pub entries: usize,
    pub bytes: usize,
    pub evicted: usize,
}

impl InternalEvent for FeedLogSized {
    fn emit(self, m: &Metrics) {
        m.feed_log_entries.set(self.entries as i64);
        m.feed_log_bytes.set(self.bytes as i64);
        if self.evicted > 0 {
            m.feed_log_evicted_total.inc_by(self.evicted as u64);
            tracing::warn!(
                event = "FeedLogEvicted",
                evicted = self.evicted as u64,
                entries = self.entries as u64,
                "served feeds dropped before their join window ended: raise events.join_capacity"
            );
        }
    }
}
