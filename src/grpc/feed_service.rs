//! `eaglerank.v1.FeedService`: decodes a call, runs it through `api/` exactly as REST does,
//! and renders the answer. Every call gets the RPC span, its metrics (`GrpcCallFinished`), and
//! the request and trace ids in the response metadata.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::error::code_name;
use super::metadata::{bearer, call_span, client_timeout, trace_id};
use super::proto::{self, feed_service_server::FeedService};
use crate::api::feed::{self, Call, FeedRequest, ServedFeed};
use crate::api::{ApiError, AppState, Transport, auth, events};
use crate::telemetry::InternalEvent;
use crate::telemetry::events::{GrpcCallFinished, InFlight};

const SERVICE: &str = super::SERVICE_NAME;

/// Every method, for the metrics' initial series.
pub const METHODS: &[&str] = &["GetFeed", "IngestEvents"];

pub struct FeedApi {
    state: Arc<AppState>,
}

impl FeedApi {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// Runs `handler` in the call's span and accounts for its outcome. Handlers answer the
    /// message or the error, and the request id when the call has one.
    async fn call<T, M, F, Fut>(
        &self,
        method: &'static str,
        request: Request<T>,
        handler: F,
    ) -> Result<Response<M>, Status>
    where
        F: FnOnce(MetadataMap, T, tracing::Span) -> Fut,
        Fut: Future<Output = (Result<M, ApiError>, Option<String>)>,
    {
        let started = Instant::now();
        let _in_flight = InFlight::start(&self.state.metrics, Transport::Grpc.as_str(), method);
        let span = call_span(request.metadata(), SERVICE, method);
        let trace = trace_id(&span);
        let (md, _, message) = request.into_parts();
        let (result, request_id) = handler(md, message, span.clone())
            .instrument(span.clone())
            .await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code().grpc(),
        };
        span.record("rpc.grpc.status_code", code as i32);
        if code != tonic::Code::Ok {
            span.record("otel.status_code", "ERROR");
        }
        let message = match &result {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        GrpcCallFinished {
            service: SERVICE,
            method,
            code: code_name(code),
            message: &message,
            duration: started.elapsed(),
        }
        .emit(&self.state.metrics);
        let mut response = result.map(Response::new).map_err(Status::from);
        let md = match &mut response {
            Ok(r) => r.metadata_mut(),
            Err(s) => s.metadata_mut(),
        };
        for (key, value) in [("x-request-id", request_id), ("x-trace-id", trace)] {
            if let Some(v) = value.and_then(|v| MetadataValue::try_from(v).ok()) {
                md.insert(key, v);
            }
        }
        response
    }
}

#[tonic::async_trait]
impl FeedService for FeedApi {
    async fn get_feed(
        &self,
        request: Request<proto::GetFeedRequest>,
    ) -> Result<Response<proto::GetFeedResponse>, Status> {
        let state = self.state.clone();
        self.call("GetFeed", request, move |md, req, span| async move {
            let request_id = uuid::Uuid::now_v7().to_string();
            span.record("request_id", request_id.as_str());
            let result = get_feed(&state, &md, req, request_id.clone(), span).await;
            (result, Some(request_id))
        })
        .await
    }

    async fn ingest_events(
        &self,
        request: Request<proto::IngestEventsRequest>,
    ) -> Result<Response<proto::IngestEventsResponse>, Status> {
        let state = self.state.clone();
        self.call("IngestEvents", request, move |md, req, _span| async move {
            (ingest_events(&state, &md, req).await, None)
        })
        .await
    }
}

async fn get_feed(
    state: &AppState,
    md: &MetadataMap,
    req: proto::GetFeedRequest,
    request_id: String,
    span: tracing::Span,
) -> Result<proto::GetFeedResponse, ApiError> {
    let tenant = auth::authorize(state, &req.tenant, bearer(md), Transport::Grpc)?;
    // proto3 has no "unset" for scalars: empty and 0 mean "not given", as a missing query
    // parameter does in REST.
    let request = FeedRequest {
        user_id: Some(req.user_id).filter(|u| !u.is_empty()),
        limit: Some(req.limit).filter(|&l| l != 0),
        explain: req.explain,
        cursor: Some(req.cursor).filter(|c| !c.is_empty()),
    }
    .validate()
    .inspect_err(|e| auth::refused(state, &tenant.id, Transport::Grpc, e))?;
    let lane = state
        .actors
        .lanes
        .next()
        .ok_or_else(|| ApiError::Unavailable("no feed lane is running".into()))?;
    let call = Call::new(state, request_id, Transport::Grpc, client_timeout(md), span);
    let served = feed::serve(state, &lane, &tenant, request, call).await?;
    Ok(response(&tenant.id, served))
}

fn response(tenant: &str, served: ServedFeed) -> proto::GetFeedResponse {
    let outcome = &served.outcome;
    proto::GetFeedResponse {
        tenant: tenant.to_owned(),
        user_id: served.user_id.clone(),
        request_id: served.request_id.clone(),
        model: Some(proto::Model {
            name: outcome.model.name.clone(),
            version: outcome.model.version.clone(),
        }),
        degraded: outcome.degraded.is_some(),
        degraded_reason: outcome.degraded.unwrap_or_default().to_owned(),
        items: outcome
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| proto::FeedItem {
                item_id: item.item_id.to_string(),
                score: item.score,
                rank: i as u32 + 1,
                sources: item.sources.iter().map(|s| s.as_str().to_owned()).collect(),
                features: served
                    .features(item)
                    .map(|f| f.map(|(k, v)| (k.to_owned(), v)).collect())
                    .unwrap_or_default(),
                model_score: item.model_score.filter(|_| served.explain),
                first_stage_score: item.first_stage_score.filter(|_| served.explain),
            })
            .collect(),
        timings_ms: served
            .timings_ms()
            .map(|t| t.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            .unwrap_or_default(),
        page: served.page,
        next_cursor: served.next_cursor.clone().unwrap_or_default(),
        rules_version: outcome.rules.version,
        first_stage: outcome.first_stage.as_ref().map(|m| proto::Model {
            name: m.name.clone(),
            version: m.version.clone(),
        }),
        experiment: served
            .assignment
            .as_ref()
            .map(|a| a.experiment.to_string())
            .unwrap_or_default(),
        arm: served
            .assignment
            .as_ref()
            .map(|a| a.arm.to_string())
            .unwrap_or_default(),
    }
}

async fn ingest_events(
    state: &AppState,
    md: &MetadataMap,
    req: proto::IngestEventsRequest,
) -> Result<proto::IngestEventsResponse, ApiError> {
    let tenant = auth::authorize(state, &req.tenant, bearer(md), Transport::Grpc)?;
    // The events as REST receives them, so that one validation (`ingest::validate_batch`)
    // judges both transports, problem for problem.
    let raw: Vec<Value> = req.events.into_iter().map(event_json).collect();
    let accepted = events::ingest(state, &tenant, raw, Transport::Grpc).await?;
    Ok(proto::IngestEventsResponse {
        accepted: accepted.accepted as u32,
        duplicates: accepted.duplicates.map(|n| n as u32),
        unknown_items: accepted.unknown_items.map(|n| n as u32),
    })
}

fn event_json(e: proto::Event) -> Value {
    let mut v = json!({
        "event_id": e.event_id,
        "type": e.r#type,
        "user_id": e.user_id,
        "item_id": e.item_id,
        "timestamp": e.timestamp,
    });
    if let Some(request_id) = e.request_id {
        v["request_id"] = Value::String(request_id);
    }
    v
}
