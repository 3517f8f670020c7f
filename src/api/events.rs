//! A batch of user events, whatever the transport. The whole batch is validated first: one
//! invalid event rejects the batch (every problem listed) and nothing of it is applied. A
//! valid batch is durable before the answer: in Kafka when configured (the consumer group
//! applies it), else applied in process. Replays of `event_id`s within the dedup window are
//! accepted and change nothing.

use serde::Serialize;
use serde_json::Value;

use super::error::{ApiError, Detail};
use super::{AppState, Transport};
use crate::actors::{FeedError, IngestEvents};
use crate::domain::tenants::Tenant;
use crate::ingest::{self, Source};
use crate::telemetry::InternalEvent;
use crate::telemetry::events::{EventsRejected, QuotaRefused};

/// What was taken. `duplicates` and `unknown_items` are known only when the batch was applied
/// in process; with Kafka the consumer applies it later.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub accepted: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_items: Option<usize>,
}

/// Validates and applies (or produces) `raw`, the events as JSON values so that a malformed
/// one is reported by its index.
pub async fn ingest(
    state: &AppState,
    tenant: &Tenant,
    raw: Vec<Value>,
    transport: Transport,
) -> Result<Accepted, ApiError> {
    let events = validate(state, raw)
        .and_then(|events| admit(state, tenant, events))
        .inspect_err(|e| super::auth::refused(state, &tenant.id, transport, e))?;
    apply(state, tenant, events, transport).await
}

/// The batch, if it fits in what is left of the tenant's events per second.
fn admit(
    state: &AppState,
    tenant: &Tenant,
    events: Vec<ingest::ValidEvent>,
) -> Result<Vec<ingest::ValidEvent>, ApiError> {
    if tenant.admit_events(events.len()) {
        return Ok(events);
    }
    let e = ApiError::EventRateLimited {
        tenant: tenant.id.to_string(),
        per_second: tenant.budget.events_per_second,
        events: events.len(),
    };
    QuotaRefused {
        tenant: &tenant.id,
        budget: "events_per_second",
        count: events.len(),
        message: &e.to_string(),
    }
    .emit(&state.metrics);
    Err(e)
}

/// The whole batch, or every problem of it.
fn validate(state: &AppState, raw: Vec<Value>) -> Result<Vec<ingest::ValidEvent>, ApiError> {
    let max = state.events.max_batch;
    if raw.is_empty() || raw.len() > max {
        EventsRejected {
            reason: "invalid",
            count: raw.len(),
        }
        .emit(&state.metrics);
        return Err(ApiError::invalid(format!(
            "events must hold 1 to {max} events, got {}",
            raw.len()
        )));
    }
    ingest::validate_batch(raw, crate::domain::unix_now(), &state.events).map_err(|bad| {
        EventsRejected {
            reason: "invalid",
            count: bad.len(),
        }
        .emit(&state.metrics);
        ApiError::InvalidArgument {
            message: format!(
                "{} invalid event(s); nothing of this batch was applied",
                bad.len()
            ),
            details: bad
                .into_iter()
                .map(|i| Detail::at(i.index, i.reason))
                .collect(),
        }
    })
}

async fn apply(
    state: &AppState,
    tenant: &Tenant,
    events: Vec<ingest::ValidEvent>,
    transport: Transport,
) -> Result<Accepted, ApiError> {
    let accepted = events.len();
    if let Some(producer) = &state.producer {
        // Durable in Kafka before the answer; the consumer group applies it.
        let inputs: Vec<_> = events.into_iter().map(|e| e.input).collect();
        producer
            .send(&tenant.id, &inputs)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        return Ok(Accepted {
            accepted,
            duplicates: None,
            unknown_items: None,
        });
    }
    let msg = IngestEvents {
        tenant: tenant.id.clone(),
        events,
        source: match transport {
            Transport::Http => Source::Http,
            Transport::Grpc => Source::Grpc,
        },
        span: tracing::Span::current(),
    };
    let applied =
        state
            .actors
            .ingestor
            .send(msg)
            .await
            .map_err(|source| FeedError::Mailbox {
                actor: "ingestor",
                source,
            })??;
    if !applied.over_budget.is_empty() {
        // The others were applied: the batch may be sent again whole once there is room
        // (its applied event ids are replays then, and change nothing).
        let users = tenant.budget.users;
        return Err(ApiError::QuotaExceeded {
            message: format!(
                "{} event(s) of users new to the store refused: the tenant's users budget ({users}) is reached; the other {} event(s) of the batch were applied",
                applied.over_budget.len(),
                accepted - applied.over_budget.len(),
            ),
            details: applied
                .over_budget
                .iter()
                .map(|&i| Detail::at(i, format!("a new user past the users budget ({users})")))
                .collect(),
        });
    }
    Ok(Accepted {
        accepted,
        duplicates: Some(applied.duplicates),
        unknown_items: Some(applied.unknown_items),
    })
}
