//! `GET /v1/tenants/{tenant}/feed`: `api::feed` served on this worker's lane, as JSON.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use tracing_actix_web::RequestId;
use utoipa::ToSchema;

use super::auth::AuthorizedTenant;
use super::error::{ApiError, TenantErrors};
use crate::actors::Lane;
use crate::api::feed::{self, Call, FeedRequest, ServedFeed};
use crate::api::{AppState, Transport, auth};
use crate::ranking::candidates::Sources;
use crate::ranking::rules::Note;

mod json;

/// The model that ranked the feed.
#[derive(Serialize, ToSchema)]
pub(super) struct ModelRef<'a> {
    name: &'a str,
    version: &'a str,
}

#[derive(Serialize, ToSchema)]
pub(super) struct FeedItem<'a> {
    item_id: &'a str,
    score: f32,
    /// 1-based.
    #[schema(minimum = 1)]
    rank: usize,
    sources: Sources,
    /// `explain=true` only: the model's score, before boosts (absent when a two-stage
    /// cascade's first stage did not pass the item on).
    #[serde(skip_serializing_if = "Option::is_none")]
    model_score: Option<f32>,
    /// `explain=true` only, with a two-stage cascade: the first stage's score.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_stage_score: Option<f32>,
    /// `explain=true` only: what the business rules did to it (boosts, pin, diversity).
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<&'a [Note]>,
    /// `explain=true` only: the model's input, by feature name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, f32>>)]
    features: Option<BTreeMap<&'a str, f32>>,
}

/// A ranked feed.
#[derive(Serialize, ToSchema)]
pub(super) struct FeedResponse<'a> {
    tenant: &'a str,
    user_id: &'a str,
    /// Send it back with the events of this feed (clicks, purchases) to join them.
    request_id: &'a str,
    model: ModelRef<'a>,
    /// The tenant's two-stage cascade: the cheap model that scored every candidate before
    /// `model` re-scored the best of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_stage: Option<ModelRef<'a>>,
    /// Served from the popularity fallback (the store is down or slow).
    degraded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    degraded_reason: Option<&'static str>,
    items: Vec<FeedItem<'a>>,
    /// 1-based page of this feed session.
    page: u32,
    /// Send it as `cursor` for the next page (no item of this or an earlier page again);
    /// absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<&'a str>,
    /// The version of the tenant's business rules that arranged the page (0: configured).
    rules_version: u64,
    /// The tenant's running experiment (null without one).
    experiment: Option<&'a str>,
    /// The user's arm of it, which chose the model (null without an experiment).
    arm: Option<&'a str>,
    /// `explain=true` only: candidates each rule kept out (unavailable, seen, excluded,
    /// own_item, purchased, fatigue).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, u32>>)]
    rules_removed: Option<BTreeMap<&'static str, u32>>,
    /// `explain=true` only: milliseconds per stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, f64>>)]
    timings_ms: Option<BTreeMap<&'static str, f64>>,
}

/// A user's ranked feed.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/feed",
    tag = "feeds",
    params(("tenant" = String, Path, description = "The tenant (marketplace) id."), FeedRequest),
    responses(
        (status = 200, description = "The feed; `degraded` when served from the popularity fallback.", body = FeedResponse),
        TenantErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn get_feed(
    AuthorizedTenant(tenant): AuthorizedTenant,
    query: web::Query<FeedRequest>,
    request_id: RequestId,
    state: web::Data<AppState>,
    // This worker's lane: the feed never leaves the thread that received it.
    lane: web::Data<Lane>,
) -> Result<HttpResponse, ApiError> {
    let request = query
        .into_inner()
        .validate()
        .inspect_err(|e| auth::refused(&state, &tenant.id, Transport::Http, e))?;
    let call = Call::new(
        &state,
        request_id.to_string(),
        Transport::Http,
        None,
        tracing::Span::current(),
    );
    let served = feed::serve(&state, &lane, &tenant, request, call).await?;
    // As `HttpResponseBuilder::json` does, with the response's own writer (`json`).
    Ok(match response(&tenant.id, &served).to_json() {
        Ok(body) => HttpResponse::Ok()
            .content_type(actix_web::http::header::ContentType::json())
            .body(body),
        Err(e) => HttpResponse::from_error(actix_web::error::JsonPayloadError::Serialize(e)),
    })
}

fn response<'a>(tenant: &'a str, served: &'a ServedFeed) -> FeedResponse<'a> {
    let outcome = &served.outcome;
    FeedResponse {
        tenant,
        user_id: &served.user_id,
        request_id: &served.request_id,
        model: ModelRef {
            name: &outcome.model.name,
            version: &outcome.model.version,
        },
        first_stage: outcome.first_stage.as_ref().map(|m| ModelRef {
            name: &m.name,
            version: &m.version,
        }),
        degraded: outcome.degraded.is_some(),
        degraded_reason: outcome.degraded,
        items: outcome
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| FeedItem {
                item_id: &item.item_id,
                score: item.score,
                rank: i + 1,
                sources: item.sources,
                model_score: item.model_score.filter(|_| served.explain),
                first_stage_score: item.first_stage_score.filter(|_| served.explain),
                rules: served.explain.then_some(item.notes.as_slice()),
                features: served.features(item).map(Iterator::collect),
            })
            .collect(),
        page: served.page,
        next_cursor: served.next_cursor.as_deref(),
        rules_version: outcome.rules.version,
        experiment: served.assignment.as_ref().map(|a| &*a.experiment),
        arm: served.assignment.as_ref().map(|a| &*a.arm),
        rules_removed: served.removed(),
        timings_ms: served.timings_ms(),
    }
}
