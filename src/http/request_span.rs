//! The root span of every API request, and the trace id handed back to the caller.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpan, RootSpanBuilder};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Probes and scrapes are frequent and uninteresting: they get no span at all.
const UNTRACED: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// tracing-actix-web's root span (W3C `traceparent` honoured, route pattern as its name), with
/// the current OpenTelemetry HTTP attribute names alongside its older ones.
pub struct RootSpans;

impl RootSpanBuilder for RootSpans {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // Nor does any request while no layer keeps spans (OpenTelemetry off): the root span's
        // fields (connection info, user agent, route) would be computed for a disabled span.
        if UNTRACED.contains(&request.path()) || !tracing::span_enabled!(tracing::Level::INFO) {
            return Span::none();
        }
        let method = request.method().as_str().to_owned();
        let path = request.path().to_owned();
        tracing_actix_web::root_span!(
            request,
            http.request.method = %method,
            url.path = %path,
            http.response.status_code = tracing::field::Empty,
            tenant = tracing::field::Empty,
            experiment = tracing::field::Empty,
            arm = tracing::field::Empty
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let status = match outcome {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        span.record("http.response.status_code", status.as_u16());
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Adds `x-trace-id` and a W3C `traceresponse` header to traced responses, so that a caller
/// can find the trace of a slow feed.
pub async fn trace_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let root = req.extensions().get::<RootSpan>().cloned();
    let mut res = next.call(req).await?;
    if let Some(root) = root {
        let cx = root.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            let flags = if sc.is_sampled() { "01" } else { "00" };
            let headers = res.headers_mut();
            for (name, value) in [
                ("x-trace-id", sc.trace_id().to_string()),
                (
                    "traceresponse",
                    format!("00-{}-{}-{flags}", sc.trace_id(), sc.span_id()),
                ),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(HeaderName::from_static(name), v);
                }
            }
        }
    }
    Ok(res)
}
