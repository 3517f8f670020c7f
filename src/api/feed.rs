//! A feed request, whatever the transport: validation, the session on a lane under the
//! request's deadline, the served feed recorded for the click join, and the one log line and
//! metrics (`FeedServed` / `FeedFailed`). REST and gRPC decode the request, call [`serve`], and
//! render the [`ServedFeed`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::cursor::Cursor;
use super::error::ApiError;
use super::{AppState, Transport};
use crate::FastSet;
use crate::actors::{Feed, FeedError, FeedOutcome, Lane, RankedItem, RulesReport, StageTimings};
use crate::domain::ids::check_id;
use crate::domain::tenants::Tenant;
use crate::domain::{ItemId, unix_now};
use crate::learning::{Assignment, FeedRecord, LoggedItem, Record};
use crate::ranking::candidates::Sources;
use crate::ranking::rules::TenantRules;
use crate::store::{Page, PageItem, Pages, StoreError, by_deadline};
use crate::telemetry::InternalEvent;
use crate::telemetry::events::{FeedFailed, FeedServed, RulesApplied, SessionWriteFailed};

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
    /// Adds each item's features, what the rules did, and the stage timings.
    #[serde(default)]
    pub explain: bool,
    /// The previous page's `next_cursor`: the next page of the same feed, with no item of an
    /// earlier page. Absent: a new feed (page 1).
    #[param(value_type = Option<String>, max_length = 128)]
    pub cursor: Option<String>,
}

pub struct ValidFeedRequest {
    pub user_id: String,
    pub limit: u32,
    pub explain: bool,
    pub cursor: Option<String>,
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
        if self.cursor.as_ref().is_some_and(|c| c.len() > 128) {
            return Err(ApiError::invalid("cursor is not valid for this feed"));
        }
        Ok(ValidFeedRequest {
            user_id,
            limit,
            explain: self.explain,
            cursor: self.cursor.filter(|c| !c.is_empty()),
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
    /// 1-based page of the feed session.
    pub page: u32,
    /// The next page's cursor; `None` on the last page.
    pub next_cursor: Option<String>,
    /// The user's experiment arm, if the tenant runs an experiment.
    pub assignment: Option<Assignment>,
}

impl ServedFeed {
    /// An item's features by the model's names (explain only).
    pub fn features<'a>(
        &'a self,
        item: &'a RankedItem,
    ) -> Option<impl Iterator<Item = (&'a str, f32)>> {
        let names = self.outcome.model.features.as_slice();
        // Kept for the served-feature log too: shown only when asked for.
        item.features
            .as_ref()
            .filter(|_| self.explain)
            .map(|values| names.iter().map(String::as_str).zip(values.iter().copied()))
    }

    /// Candidates each rule removed (explain only).
    pub fn removed(&self) -> Option<BTreeMap<&'static str, u32>> {
        self.explain.then(|| {
            self.outcome
                .rules
                .removed
                .iter()
                .map(|(r, n)| (r.as_str(), n))
                .collect()
        })
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
        ("rules", millis(t.rules)),
        ("total", millis(total)),
    ])
}

/// Where a request is in its feed session: the session, the page, and the pages before.
struct Position {
    session: String,
    page: u32,
    pages: Pages,
    /// The session's pages could not be read (store down): served without them, degraded.
    unreadable: Option<String>,
    /// The page was served before and is served again as it was.
    replayed: bool,
}

/// The session and page a request's cursor names (none: a new session's first page), with
/// the pages served so far.
///
/// A session is named by its first page's request id, and that page is not written to the
/// sessions: the served-feed log already holds its items under that id (what the click join
/// reads), and most users never ask for a second page — writing every first page twice was
/// most of a feed's bytes in Redis. Page 2 on read both.
async fn position(
    state: &AppState,
    tenant: &str,
    request: &ValidFeedRequest,
    call: &Call,
) -> Result<Position, ApiError> {
    let deadline = call.deadline;
    let Some(text) = &request.cursor else {
        return Ok(Position {
            session: call.request_id.clone(),
            page: 1,
            pages: Pages::new(),
            unreadable: None,
            replayed: false,
        });
    };
    let now = unix_now() as u64;
    let Cursor { session, page, .. } = state.cursors.verify(tenant, &request.user_id, text, now)?;
    let read = by_deadline(
        deadline,
        "the feed sessions",
        state.sessions.pages(tenant, &session),
    );
    let first = by_deadline(
        deadline,
        "the served-feed log",
        state.served.lookup(tenant, &session),
    );
    let (read, first) = futures::join!(read, first);
    // No pages although the cursor is valid: the session was evicted (the embedded store's
    // bound) or its first page served degraded and never stored; the page is served without
    // exclusions rather than refused.
    match read.map(|pages| with_first_page(pages, first)) {
        Ok(pages) => Ok(Position {
            session,
            page,
            pages,
            unreadable: None,
            replayed: false,
        }),
        Err(e) => Ok(Position {
            session,
            page,
            pages: Pages::new(),
            unreadable: Some(e.to_string()),
            replayed: false,
        }),
    }
}

/// The session's pages with its first, from the served-feed log (sessions written before it
/// was kept there hold it themselves). Only its items matter: a first page is never served
/// again (no cursor names it), only kept out of the next ones.
fn with_first_page(
    mut pages: Pages,
    first: Result<Option<crate::store::ServedFeed>, StoreError>,
) -> Pages {
    if let (false, Ok(Some(feed))) = (pages.contains_key(&1), first) {
        let items = feed
            .items
            .into_iter()
            .map(|item_id| PageItem {
                item_id,
                score: f32::NAN,
                sources: 0,
            })
            .collect();
        pages.insert(1, Page { items, more: true });
    }
    pages
}

/// The rules in force for `tenant` (re-read from the store when due, within half the budget).
async fn rules(state: &AppState, tenant: &str, call: &Call) -> Arc<TenantRules> {
    // A store known down is not asked: the rules in force stay.
    if state.store_health.avoid_reason().is_some() {
        return state.rules.cached(tenant);
    }
    let now = Instant::now();
    let deadline = now + call.deadline.saturating_duration_since(now) / 2;
    let (rules, refreshed) = state.rules.get(tenant, deadline).await;
    // A failed re-read is reported; the feed is served with the rules in force.
    let _ = super::rules::report(state, tenant, refreshed);
    rules
}

/// A page served before, served again (the same cursor twice): its items in their order,
/// less any that became unavailable since.
async fn replay(
    state: &AppState,
    tenant: &str,
    arm_model: Option<&str>,
    page: &Page,
    rules: &TenantRules,
    deadline: Instant,
) -> Result<FeedOutcome, ApiError> {
    let started = Instant::now();
    let ids: Vec<ItemId> = page.items.iter().map(|i| i.item_id.clone()).collect();
    let records = by_deadline(deadline, "the store", state.store.items(tenant, &ids)).await?;
    let mut report = RulesReport {
        version: rules.version,
        more: page.more,
        ..Default::default()
    };
    let items = page
        .items
        .iter()
        .zip(records)
        .filter(|(_, r)| {
            let available = r.as_ref().is_some_and(|r| r.item.available);
            if !available {
                report.removed.0[crate::ranking::rules::Removal::Unavailable as usize] += 1;
            }
            available
        })
        .map(|(i, _)| RankedItem {
            item_id: i.item_id.clone(),
            sources: Sources::from_bits(i.sources),
            score: i.score,
            model_score: None,
            first_stage_score: None,
            features: None,
            notes: Vec::new(),
        })
        .collect::<Vec<_>>();
    // The models the page was ranked with (an experiment arm's, if the user is in one).
    let models = state.models.for_feed(tenant, arm_model);
    Ok(FeedOutcome {
        model: models.model.metadata.clone(),
        first_stage: models.first_stage.map(|f| f.model.metadata.clone()),
        num_candidates: items.len(),
        items,
        timings: StageTimings {
            features: started.elapsed(),
            ..Default::default()
        },
        degraded: None,
        rules: report,
    })
}

/// What ranks a request beyond its tenant: the user's experiment arm, and whether the feed goes
/// to the served-feature log.
struct Choice {
    assignment: Option<Assignment>,
    logged: bool,
}

/// The served feed as the served-feature log keeps it: each item's model score and features.
fn feature_record(
    tenant: &str,
    user_id: &str,
    request_id: &str,
    page: u32,
    outcome: &FeedOutcome,
    assignment: Option<&Assignment>,
) -> FeedRecord {
    FeedRecord {
        request_id: request_id.to_owned(),
        tenant: tenant.to_owned(),
        user_id: user_id.to_owned(),
        ts: unix_now(),
        model: outcome.model.name.clone(),
        version: outcome.model.version.clone(),
        experiment: assignment.map(|a| a.experiment.to_string()),
        arm: assignment.map(|a| a.arm.to_string()),
        page,
        features: outcome.model.features.clone(),
        items: outcome
            .items
            .iter()
            .enumerate()
            .map(|(position, item)| LoggedItem {
                item_id: item.item_id.to_string(),
                position: position as u32,
                score: item.model_score.unwrap_or(item.score),
                features: item.features.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// Runs the feed session on `lane` under the call's deadline.
async fn rank(
    lane: &Lane,
    tenant: &Tenant,
    request: &ValidFeedRequest,
    call: &Call,
    rules: Arc<TenantRules>,
    position: &Position,
    choice: &Choice,
) -> Result<FeedOutcome, ApiError> {
    let seen: FastSet<ItemId> = position
        .pages
        .range(..position.page)
        .flat_map(|(_, p)| p.items.iter().map(|i| i.item_id.clone()))
        .collect();
    let feed = Feed {
        span: call.span.clone(),
        tenant: tenant.id.clone(),
        user_id: request.user_id.clone(),
        limit: request.limit as usize,
        explain: request.explain,
        keep_features: choice.logged,
        model: choice.assignment.as_ref().map(|a| a.model.clone()),
        rules,
        seen: Arc::new(seen),
        page: position.page,
        deadline: call.deadline,
        enqueued: Instant::now(),
    };
    let budget = call.deadline.saturating_duration_since(call.started);
    // Kept here too, on the caller's thread: a gRPC call waits on another thread's lane, whose
    // timer cannot fire while that thread ranks; and a client's budget may be gone already.
    if budget.is_zero() {
        return Err(ApiError::from(FeedError::DeadlineExceeded(budget)));
    }
    match tokio::time::timeout_at(call.deadline.into(), lane.gateway.send(feed)).await {
        Ok(Ok(result)) => result.map_err(ApiError::from),
        Ok(Err(mailbox)) => Err(ApiError::from(FeedError::Mailbox {
            actor: "gateway",
            source: mailbox,
        })),
        Err(_) => Err(ApiError::from(FeedError::DeadlineExceeded(budget))),
    }
}

/// Serves one validated feed request on `lane` (the HTTP worker's own, or one picked for a
/// gRPC call) and logs it, served or failed: the page its cursor names (a new session's first
/// without one), ranked under the tenant's rules without the session's earlier items — or the
/// stored page again, for a cursor used before.
pub async fn serve(
    state: &AppState,
    lane: &Lane,
    tenant: &Tenant,
    request: ValidFeedRequest,
    call: Call,
) -> Result<ServedFeed, ApiError> {
    call.span.record("tenant", &*tenant.id);
    let choice = Choice {
        assignment: state.experiments.assign(&tenant.id, &request.user_id),
        logged: state.feature_log.sampled(&tenant.id, &call.request_id),
    };
    if let Some(a) = &choice.assignment {
        call.span.record("experiment", &*a.experiment);
        call.span.record("arm", &*a.arm);
    }
    let outcome = async {
        let position = position(state, &tenant.id, &request, &call).await?;
        let rules = rules(state, &tenant.id, &call).await;
        // An experiment arm may be arranged by a preset instead of the tenant's rules.
        let rules = choice
            .assignment
            .as_ref()
            .and_then(|a| a.rules.as_deref())
            .and_then(|preset| state.rules.preset(preset))
            .unwrap_or(rules);
        let mut position = position;
        let outcome = match position.pages.get(&position.page) {
            Some(page) => {
                position.replayed = true;
                let arm_model = choice.assignment.as_ref().map(|a| &*a.model);
                replay(state, &tenant.id, arm_model, page, &rules, call.deadline).await?
            }
            None => {
                let mut outcome =
                    rank(lane, tenant, &request, &call, rules, &position, &choice).await?;
                if let Some(cause) = &position.unreadable {
                    outcome.degraded.get_or_insert("session_unavailable");
                    tracing::warn!(tenant = %tenant.id, error = %cause, "feed session unreadable: served without its earlier pages");
                }
                outcome
            }
        };
        Ok::<_, ApiError>((position, outcome))
    }
    .await;
    let (position, outcome) = match outcome {
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
    // feed. With Redis the write is queued for the next batch (`events.feed_log_flush_ms`) and
    // the click finds it in the queue here, or after the lag on another replica
    // (`ServedFeeds::lookup`). Not for a degraded feed: the store just failed or is known
    // down, and the write would only make the feed wait for it (its clicks are counted as
    // unjoined).
    // The session's page is written beside it, concurrently.
    let arm = choice
        .assignment
        .as_ref()
        .map(|a| (&*a.experiment, &*a.arm));
    // What the model saw, for retraining: a fresh ranking (not a replayed page), not degraded
    // (the fallback ranks without the user's features).
    let feature_logged = choice.logged && !position.replayed && outcome.degraded.is_none();
    if feature_logged {
        state.feature_log.log(Record::Feed(feature_record(
            &tenant.id,
            &request.user_id,
            &call.request_id,
            position.page,
            &outcome,
            choice.assignment.as_ref(),
        )));
    }
    let record = async {
        if outcome.degraded.is_none() {
            state
                .served
                .record(
                    &tenant.id,
                    &call.request_id,
                    crate::store::ServedFeed {
                        model: outcome.model.name.clone(),
                        version: outcome.model.version.clone(),
                        items: outcome.items.iter().map(|i| i.item_id.clone()).collect(),
                        arm: arm.map(|(e, a)| (e.to_owned(), a.to_owned())),
                    },
                    call.deadline,
                )
                .await;
        }
    };
    let keep = async {
        // A degraded feed's store just failed: its page is not kept (a cursor whose session
        // has no pages is served without exclusions).
        if !position.replayed && outcome.degraded.is_none() {
            store_page(state, &tenant.id, &position, &outcome, call.deadline).await;
        }
    };
    futures::join!(record, keep);
    let next_cursor = outcome.rules.more.then(|| {
        let next = Cursor {
            session: position.session.clone(),
            page: position.page + 1,
            issued: unix_now() as u64,
        };
        state.cursors.sign(&tenant.id, &request.user_id, &next)
    });
    let latency = call.started.elapsed();
    RulesApplied {
        tenant: &tenant.id,
        removed: outcome.rules.removed.iter().map(|(r, n)| (r.as_str(), n)),
        relaxations: outcome.rules.relaxations,
        pins: outcome.rules.pins,
        page: position.page,
    }
    .emit(&state.metrics);
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
        page: position.page,
        rules_version: outcome.rules.version,
        trace_id: sampled_trace_id(&call.span).as_deref(),
        experiment: arm.map(|a| a.0),
        arm: arm.map(|a| a.1),
        feature_logged,
    }
    .emit(&state.metrics);
    Ok(ServedFeed {
        request_id: call.request_id,
        user_id: request.user_id,
        outcome,
        latency,
        explain: request.explain,
        page: position.page,
        next_cursor,
        assignment: choice.assignment,
    })
}

/// The request's trace id if its trace is sampled (exported): an exemplar must lead to a
/// trace that exists.
fn sampled_trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id().to_string())
}

/// Keeps a served page for the session's next pages (and for its cursor used again). Bounded
/// by the deadline; a failure is logged and counted, and the feed is served anyway — its next
/// page may then repeat items of this one.
async fn store_page(
    state: &AppState,
    tenant: &str,
    position: &Position,
    outcome: &FeedOutcome,
    deadline: Instant,
) {
    // A first page is the served-feed log's (see `position`).
    if position.page == 1 {
        return;
    }
    let page = Page {
        items: outcome
            .items
            .iter()
            .map(|i| PageItem {
                item_id: i.item_id.clone(),
                score: i.score,
                sources: i.sources.bits(),
            })
            .collect(),
        more: outcome.rules.more,
    };
    let write = state.sessions.put_page(
        tenant,
        &position.session,
        position.page,
        &page,
        state.session_ttl,
    );
    if let Err(e) = by_deadline(deadline, "the feed sessions", write).await {
        SessionWriteFailed { tenant, error: &e }.emit(&state.metrics);
    }
}
