//! A feed request, whatever the transport: validation, the session on a lane under the
//! request's deadline, the served feed recorded for the click join, and the one log line and
//! metrics (`FeedServed` / `FeedFailed`). REST and gRPC decode the request, call [`serve`], and
//! render the [`ServedFeed`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::error::ApiError;
use super::{AppState, Transport};
use crate::actors::{Feed, FeedError, FeedOutcome, Lane, RankedItem, StageTimings};
use crate::domain::ids::check_id;
use crate::domain::tenants::Tenant;
use crate::telemetry::InternalEvent;
use crate::telemetry::events::{FeedFailed, FeedServed};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// A feed request as a client sends it (REST: the query string).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedRequest {
    /// The user whose feed this is (required): 1-128 characters of `[A-Za-z0-9_.:-]`.
    #[param(required = true, value_type = String, pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    pub user_id: Option<String>,
    /// How many items (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Adds each item's features and the stage timings.
    #[serde(default)]
    pub explain: bool,
}

pub struct ValidFeedRequest {
    pub user_id: String,
    pub limit: u32,
    pub explain: bool,
}

impl FeedRequest {
    pub fn validate(self) -> Result<ValidFeedRequest, ApiError> {
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
        Ok(ValidFeedRequest {
            user_id,
            limit,
            explain: self.explain,
        })
    }
}

/// How the request arrived: its id, clock, deadline, transport and span.
pub struct Call {
    pub request_id: String,
    pub started: Instant,
    /// The session gives up at this instant: `server.request_deadline_ms` after `started`, or
    /// sooner when the client said so (gRPC's `grpc-timeout`).
    pub deadline: Instant,
    pub transport: Transport,
    /// The request's span: the feed session's span is its child.
    pub span: tracing::Span,
}

impl Call {
    /// A call starting now, with the service's deadline shortened to `client_timeout` if the
    /// client gave a shorter one.
    pub fn new(
        state: &AppState,
        request_id: String,
        transport: Transport,
        client_timeout: Option<Duration>,
        span: tracing::Span,
    ) -> Self {
        let started = Instant::now();
        let budget =
            client_timeout.map_or(state.request_deadline, |t| t.min(state.request_deadline));
        Self {
            request_id,
            started,
            deadline: started + budget,
            transport,
            span,
        }
    }
}

/// A feed, ranked, recorded and logged: what the transports render.
pub struct ServedFeed {
    pub request_id: String,
    pub user_id: String,
    pub outcome: FeedOutcome,
    /// From the validated request to the served feed.
    pub latency: Duration,
    pub explain: bool,
}

impl ServedFeed {
    /// An item's features by the model's names (explain only).
    pub fn features<'a>(
        &'a self,
        item: &'a RankedItem,
    ) -> Option<impl Iterator<Item = (&'a str, f32)>> {
        let names = self.outcome.model.features.as_slice();
        item.features
            .as_ref()
            .map(|values| names.iter().map(String::as_str).zip(values.iter().copied()))
    }

    /// Milliseconds per stage (explain only).
    pub fn timings_ms(&self) -> Option<BTreeMap<&'static str, f64>> {
        self.explain
            .then(|| timings_ms(&self.outcome.timings, self.latency))
    }
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

/// Serves one validated feed request on `lane` (the HTTP worker's own, or one picked for a
/// gRPC call) and logs it, served or failed.
pub async fn serve(
    state: &AppState,
    lane: &Lane,
    tenant: &Tenant,
    request: ValidFeedRequest,
    call: Call,
) -> Result<ServedFeed, ApiError> {
    call.span.record("tenant", &*tenant.id);
    let feed = Feed {
        span: call.span.clone(),
        tenant: tenant.id.clone(),
        user_id: request.user_id.clone(),
        limit: request.limit as usize,
        explain: request.explain,
        deadline: call.deadline,
        enqueued: Instant::now(),
    };
    let budget = call.deadline.saturating_duration_since(call.started);
    // Kept here too, on the caller's thread: a gRPC call waits on another thread's lane, whose
    // timer cannot fire while that thread ranks; and a client's budget may be gone already.
    let outcome = if budget.is_zero() {
        Err(ApiError::from(FeedError::DeadlineExceeded(budget)))
    } else {
        match tokio::time::timeout_at(call.deadline.into(), lane.gateway.send(feed)).await {
            Ok(Ok(result)) => result.map_err(ApiError::from),
            Ok(Err(mailbox)) => Err(ApiError::from(FeedError::Mailbox {
                actor: "gateway",
                source: mailbox,
            })),
            Err(_) => Err(ApiError::from(FeedError::DeadlineExceeded(budget))),
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            FeedFailed {
                tenant: &tenant.id,
                user: &request.user_id,
                request_id: &call.request_id,
                transport: call.transport.as_str(),
                code: e.code().name(),
                error: &e,
                latency: call.started.elapsed(),
            }
            .emit(&state.metrics);
            return Err(e.logged());
        }
    };
    // Awaited (one write, bounded by the store's timeout, its breaker and the request's
    // deadline; failures only counted): a click sent right after the response must find its
    // feed. Not for a degraded feed: the store just failed or is known down, and the write
    // would only make the feed wait for it (its clicks are counted as unjoined).
    if outcome.degraded.is_none() {
        state
            .served
            .record(
                &tenant.id,
                &call.request_id,
                &outcome.model.name,
                &outcome.model.version,
                outcome.items.iter().map(|i| i.item_id.clone()).collect(),
                call.deadline,
            )
            .await;
    }
    let latency = call.started.elapsed();
    FeedServed {
        tenant: &tenant.id,
        user: &request.user_id,
        request_id: &call.request_id,
        transport: call.transport.as_str(),
        model: &outcome.model.name,
        num_candidates: outcome.num_candidates,
        num_items: outcome.items.len(),
        latency,
        degraded: outcome.degraded,
    }
    .emit(&state.metrics);
    Ok(ServedFeed {
        request_id: call.request_id,
        user_id: request.user_id,
        outcome,
        latency,
        explain: request.explain,
    })
}
