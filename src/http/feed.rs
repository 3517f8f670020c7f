//! `GET /v1/tenants/{tenant}/feed`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use tracing_actix_web::RequestId;

use super::AppState;
use super::auth::AuthorizedTenant;
use super::error::ApiError;
use crate::actors::{Feed, FeedOutcome, Lane, StageTimings};
use crate::domain::ids::check_id;
use crate::ranking::candidates::Sources;
use crate::telemetry::InternalEvent;
use crate::telemetry::events::{FeedFailed, FeedServed};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    user_id: Option<String>,
    limit: Option<u32>,
    #[serde(default)]
    explain: bool,
}

struct ValidFeedQuery {
    user_id: String,
    limit: u32,
    explain: bool,
}

impl FeedQuery {
    fn validate(self) -> Result<ValidFeedQuery, ApiError> {
        let user_id = self
            .user_id
            .ok_or_else(|| ApiError::invalid("user_id is required"))?;
        check_id("user_id", &user_id).map_err(ApiError::invalid)?;
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        Ok(ValidFeedQuery {
            user_id,
            limit,
            explain: self.explain,
        })
    }
}

#[derive(Serialize)]
struct ModelRef<'a> {
    name: &'a str,
    version: &'a str,
}

#[derive(Serialize)]
struct FeedItem<'a> {
    item_id: &'a str,
    score: f32,
    rank: usize,
    sources: Sources,
    #[serde(skip_serializing_if = "Option::is_none")]
    features: Option<BTreeMap<&'a str, f32>>,
}

#[derive(Serialize)]
struct FeedResponse<'a> {
    tenant: &'a str,
    user_id: &'a str,
    request_id: String,
    model: ModelRef<'a>,
    degraded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded_reason: Option<&'static str>,
    items: Vec<FeedItem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timings_ms: Option<BTreeMap<&'static str, f64>>,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn timings_ms(t: &StageTimings, total: Duration) -> BTreeMap<&'static str, f64> {
    BTreeMap::from([
        ("user_profile", millis(t.user)),
        ("candidates", millis(t.candidates)),
        ("item_features", millis(t.features)),
        ("feature_assembly", millis(t.assemble)),
        ("model_inference", millis(t.inference)),
        ("ranking", millis(t.ranking)),
        ("total", millis(total)),
    ])
}

pub async fn get_feed(
    AuthorizedTenant(tenant): AuthorizedTenant,
    query: web::Query<FeedQuery>,
    request_id: RequestId,
    state: web::Data<AppState>,
    // This worker's lane: the feed never leaves the thread that received it.
    lane: web::Data<Lane>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let q = query.into_inner().validate()?;
    let request_id = request_id.to_string();
    let span = tracing::Span::current();
    span.record("tenant", &*tenant.id);
    let feed = Feed {
        span,
        tenant: tenant.id.clone(),
        user_id: q.user_id.clone(),
        limit: q.limit as usize,
        explain: q.explain,
        deadline: started + state.request_deadline,
    };
    let outcome: Result<FeedOutcome, ApiError> = match lane.gateway.send(feed).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(mailbox) => Err(ApiError::from(crate::actors::FeedError::Mailbox {
            actor: "gateway",
            source: mailbox,
        })),
    };
    let latency = started.elapsed();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            FeedFailed {
                tenant: &tenant.id,
                user: &q.user_id,
                request_id: &request_id,
                code: e.code().name(),
                error: &e,
                latency,
            }
            .emit(&state.metrics);
            return Err(e.logged());
        }
    };

    let names = outcome.model.features.as_slice();
    let items = outcome
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| FeedItem {
            item_id: &item.item_id,
            score: item.score,
            rank: i + 1,
            sources: item.sources,
            features: item.features.as_ref().map(|values| {
                names
                    .iter()
                    .map(String::as_str)
                    .zip(values.iter().copied())
                    .collect()
            }),
        })
        .collect();
    // Awaited (one write, bounded by the store's timeout, its breaker and the request's
    // deadline; failures only counted): a click sent right after the response must find its
    // feed. Not for a degraded feed: the store just failed or is known down, and the write
    // would only make the feed wait for it (its clicks are counted as unjoined).
    if outcome.degraded.is_none() {
        state
            .served
            .record(
                &tenant.id,
                &request_id,
                &outcome.model.name,
                &outcome.model.version,
                outcome.items.iter().map(|i| i.item_id.clone()).collect(),
                started + state.request_deadline,
            )
            .await;
    }
    FeedServed {
        tenant: &tenant.id,
        user: &q.user_id,
        request_id: &request_id,
        model: &outcome.model.name,
        num_candidates: outcome.num_candidates,
        num_items: outcome.items.len(),
        latency,
        degraded: outcome.degraded,
    }
    .emit(&state.metrics);
    Ok(HttpResponse::Ok().json(FeedResponse {
        tenant: &tenant.id,
        user_id: &q.user_id,
        request_id,
        model: ModelRef {
            name: &outcome.model.name,
            version: &outcome.model.version,
        },
        degraded: outcome.degraded.is_some(),
        degraded_reason: outcome.degraded,
        items,
        timings_ms: q.explain.then(|| timings_ms(&outcome.timings, latency)),
    }))
}
