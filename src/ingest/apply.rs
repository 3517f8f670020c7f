//! Event ingestion, the one code path that applies user events to features whatever their
//! source (the REST endpoint in process, or the Kafka consumer): validate a batch as a whole,
//! then write it to the store in one batched call. The store applies each `event_id` once
//! within its dedup window, atomically with the event's writes (in Redis, shared by every
//! replica), so a failed batch can be retried (at-least-once) and a replayed one — after a
//! consumer restart or rebalance, or a client's retry — changes nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::EventSettings;
use crate::domain::ids::{MAX_ID_LEN, check_id};
use crate::domain::{Event, EventKind, UnixSeconds};
use crate::ingest::feed_join::{Outcome, ServedFeeds};
use crate::store::{SharedStore, StoreError};
use crate::telemetry::events::{EventsApplied, EventsRejected};
use crate::telemetry::{InternalEvent, Metrics};

/// An event as clients send it (REST body, Kafka message value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventInput {
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    pub user_id: String,
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    pub item_id: String,
    /// RFC 3339; at most `events.max_future_skew_seconds` ahead.
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// The `request_id` of the feed the event comes from: joins it with the feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128)]
    pub request_id: Option<String>,
}

/// A validated event, ready to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    /// As received: what goes onto Kafka when the REST endpoint produces.
    pub input: EventInput,
    pub event_id: String,
    pub request_id: Option<String>,
    pub event: Event,
}

/// Where a batch came from (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Http,
    Grpc,
    Kafka,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Grpc => "grpc",
            Source::Kafka => "kafka",
        }
    }
}

/// One invalid element of a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invalid {
    pub index: usize,
    pub reason: String,
}

/// The current time as event timestamps are written (RFC 3339, UTC).
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("the current time formats as RFC 3339")
}

/// Validates one raw event; `now` bounds how far in the future a timestamp may be.
pub fn validate(
    raw: serde_json::Value,
    now: UnixSeconds,
    settings: &EventSettings,
) -> Result<ValidEvent, String> {
    let input: EventInput = serde_json::from_value(raw).map_err(|e| e.to_string())?;
    validate_input(input, now, settings)
}

/// [`validate`] for an event already in its typed form (a Kafka message).
pub fn validate_input(
    input: EventInput,
    now: UnixSeconds,
    settings: &EventSettings,
) -> Result<ValidEvent, String> {
    let original = input.clone();
    for (field, value) in [
        ("event_id", &input.event_id),
        ("user_id", &input.user_id),
        ("item_id", &input.item_id),
    ] {
        check_id(field, value)?;
    }
    if let Some(r) = &input.request_id
        && (r.is_empty() || r.len() > MAX_ID_LEN)
    {
        return Err(format!("request_id must be 1-{MAX_ID_LEN} characters"));
    }
    let at = OffsetDateTime::parse(&input.timestamp, &Rfc3339)
        .map_err(|e| format!("timestamp must be RFC 3339: {e}"))?;
    let at = at.unix_timestamp_nanos() as f64 / 1e9;
    if at > now + settings.max_future_skew.as_secs_f64() {
        return Err(format!(
            "timestamp is more than {} s in the future",
            settings.max_future_skew.as_secs()
        ));
    }
    Ok(ValidEvent {
        input: original,
        event_id: input.event_id.clone(),
        request_id: input.request_id,
        event: Event {
            event_id: Some(input.event_id.as_str().into()),
            kind: input.kind,
            user_id: input.user_id,
            item_id: input.item_id.as_str().into(),
            timestamp: at,
        },
    })
}

/// Validates a whole batch: all valid, or the list of what is not.
pub fn validate_batch(
    raw: Vec<serde_json::Value>,
    now: UnixSeconds,
    settings: &EventSettings,
) -> Result<Vec<ValidEvent>, Vec<Invalid>> {
    let mut valid = Vec::with_capacity(raw.len());
    let mut invalid = Vec::new();
    for (index, value) in raw.into_iter().enumerate() {
        match validate(value, now, settings) {
            Ok(v) => valid.push(v),
            Err(reason) => invalid.push(Invalid { index, reason }),
        }
    }
    if invalid.is_empty() {
        Ok(valid)
    } else {
        Err(invalid)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Applied {
    /// Events written to the store.
    pub applied: usize,
    /// Replays of events seen within the dedup window: not applied again.
    pub duplicates: usize,
    /// Events on items the store does not know: counted, not applied.
    pub unknown_items: usize,
    /// Which ones, by index in the batch (the Kafka consumer dead-letters them).
    #[serde(skip)]
    pub unknown_item_indices: Vec<usize>,
    /// Events of new users past the tenant's `users` budget, by index: not applied.
    #[serde(skip)]
    pub over_budget: Vec<usize>,
}

/// Applies validated events. Shared by the in-process path and the Kafka consumer.
pub struct Ingestor {
    store: SharedStore,
    metrics: Arc<Metrics>,
    /// Applied clicks and purchases are joined with the feeds they name.
    served: Arc<ServedFeeds>,
}

impl Ingestor {
    pub fn new(store: SharedStore, metrics: Arc<Metrics>, served: Arc<ServedFeeds>) -> Self {
        Self {
            store,
            metrics,
            served,
        }
    }

    pub async fn apply(
        &self,
        tenant: &Arc<str>,
        events: Vec<ValidEvent>,
        source: Source,
    ) -> Result<Applied, StoreError> {
        let started = Instant::now();
        let total = events.len();
        let (request_ids, batch): (Vec<Option<String>>, Vec<Event>) =
            events.into_iter().map(|e| (e.request_id, e.event)).unzip();
        let outcome = self.store.apply_events(tenant, &batch).await?;
        let unknown_items = outcome.unknown_items.len();
        let applied = Applied {
            applied: outcome.applied(total),
            duplicates: outcome.duplicates.len(),
            unknown_items,
            unknown_item_indices: outcome.unknown_items.clone(),
            over_budget: outcome.over_budget.clone(),
        };
        // Metrics count what was written: events on unknown items are rejections only.
        let skipped: HashSet<usize> = outcome
            .unknown_items
            .iter()
            .chain(&outcome.duplicates)
            .chain(&outcome.over_budget)
            .copied()
            .collect();
        let written: Vec<Event> = batch
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| (!skipped.contains(&i)).then_some(e))
            .collect();
        let joinable = request_ids
            .iter()
            .enumerate()
            .filter(|(i, _)| !skipped.contains(i))
            .map(|(_, r)| r);
        let outcomes: Vec<Outcome<'_>> = written
            .iter()
            .zip(joinable)
            .filter_map(|(e, r)| {
                Some(Outcome {
                    request_id: r.as_deref()?,
                    kind: e.kind,
                    item_id: &e.item_id,
                    user_id: &e.user_id,
                    timestamp: e.timestamp,
                })
            })
            .collect();
        self.served.join(tenant, &outcomes).await;
        EventsApplied {
            tenant,
            source: source.as_str(),
            events: written.iter().map(|e| (e.kind.as_str(), e.timestamp)),
            applied: applied.applied,
            duplicates: applied.duplicates,
            unknown_items: applied.unknown_items,
            duration: started.elapsed(),
        }
        .emit(&self.metrics);
        for (reason, count) in [
            ("unknown_item", unknown_items),
            ("quota_exceeded", outcome.over_budget.len()),
        ] {
            if count > 0 {
                EventsRejected { reason, count }.emit(&self.metrics);
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn settings() -> EventSettings {
        EventSettings {
            dedup_window: Duration::from_secs(60),
            dedup_capacity: 100,
            max_future_skew: Duration::from_secs(300),
            max_batch: 1000,
            join_window: Duration::from_secs(60),
            join_capacity: 100,
            feed_log_flush: Duration::ZERO,
        }
    }

    #[test]
    fn validation_reports_each_bad_event() {
        let now = 1_790_000_000.0;
        let ok = json!({"event_id": "e1", "type": "click", "user_id": "u1", "item_id": "i1",
                        "timestamp": "2026-09-21T14:13:20Z"});
        let v = validate(ok.clone(), now, &settings()).unwrap();
        assert_eq!(v.event.kind, EventKind::Click);
        assert_eq!(v.event.timestamp, 1_790_000_000.0);
        let mut bad_type = ok.clone();
        bad_type["type"] = json!("like");
        let mut future = ok.clone();
        future["timestamp"] = json!("2027-01-01T00:00:00Z");
        let mut bad_user = ok.clone();
        bad_user["user_id"] = json!("a b");
        let err = validate_batch(
            vec![ok, bad_type, future, bad_user, json!(5)],
            now,
            &settings(),
        )
        .unwrap_err();
        assert_eq!(
            err.iter().map(|i| i.index).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert!(err[0].reason.contains("like"), "{}", err[0].reason);
        assert!(err[1].reason.contains("future"));
    }
}
