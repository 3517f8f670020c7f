//! `POST /v1/tenants/{tenant}/events`: a batch of user events. The whole batch is validated
//! first: one invalid event rejects the batch (400, every problem listed) and nothing of it is
//! applied. A valid batch is applied before the answer (202 `{"accepted": n}`); replays of
//! `event_id`s within the dedup window are accepted and change nothing.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::auth::AuthorizedTenant;
use super::error::{ApiError, Detail};
use crate::actors::{FeedError, IngestEvents};
use crate::ingest::{self, Source};
use crate::telemetry::InternalEvent;
use crate::telemetry::events::EventsRejected;

#[derive(Deserialize)]
pub struct EventBatch {
    /// Raw values, so that a malformed event is reported by its index.
    events: Vec<Value>,
}

pub async fn post_events(
    AuthorizedTenant(tenant): AuthorizedTenant,
    body: web::Json<EventBatch>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let raw = body.into_inner().events;
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
    let events =
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
                    .map(|i| Detail {
                        index: i.index,
                        reason: i.reason,
                    })
                    .collect(),
            }
        })?;
    let accepted = events.len();
    if let Some(producer) = &state.producer {
        // Durable in Kafka before the answer; the consumer group applies it.
        let inputs: Vec<_> = events.into_iter().map(|e| e.input).collect();
        producer
            .send(&tenant.id, &inputs)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        return Ok(HttpResponse::Accepted().json(serde_json::json!({ "accepted": accepted })));
    }
    let msg = IngestEvents {
        tenant: tenant.id.clone(),
        events,
        source: Source::Http,
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
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "accepted": accepted,
        "duplicates": applied.duplicates,
        "unknown_items": applied.unknown_items,
    })))
}
