//! What a gRPC call's metadata says: the bearer key, the client's deadline (`grpc-timeout`),
//! and the caller's W3C trace context, which the call's span continues.

use std::time::Duration;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt as _;
use tonic::metadata::{KeyRef, MetadataMap};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::api::auth::bearer_token;

/// The token of `authorization: Bearer <token>`.
pub fn bearer(md: &MetadataMap) -> Option<&str> {
    bearer_token(md.get("authorization")?.to_str().ok()?)
}

/// What the service keeps of a client's `grpc-timeout` for the answer's way back: a tenth,
/// and at least this (tokio's timers tick in milliseconds). tonic cancels a call at the
/// client's deadline (CANCELLED); planning with less, the client gets our DEADLINE_EXCEEDED
/// or a degraded feed instead — and a budget smaller than the margin fails at once.
const MIN_MARGIN: Duration = Duration::from_millis(5);

/// The client's deadline, from `grpc-timeout` (`<at most 8 digits><H|M|S|m|u|n>`), as the
/// budget the service should plan with. None when absent or malformed (the service's own
/// deadline applies).
pub fn client_timeout(md: &MetadataMap) -> Option<Duration> {
    let value = md.get("grpc-timeout")?.to_str().ok()?;
    let timeout = parse_timeout(value)?;
    Some(timeout.saturating_sub((timeout / 10).max(MIN_MARGIN)))
}

fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The server span of one call, named and attributed by the OpenTelemetry RPC conventions,
/// child of the caller's trace when `traceparent` is given.
pub fn call_span(md: &MetadataMap, service: &'static str, method: &'static str) -> Span {
    let span = tracing::info_span!(
        "grpc.call",
        otel.name = %format!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        tenant = tracing::field::Empty,
        experiment = tracing::field::Empty,
        arm = tracing::field::Empty,
        request_id = tracing::field::Empty,
    );
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(md)));
    if parent.span().span_context().is_valid() {
        // Fails only without an OpenTelemetry layer, where there is nothing to continue.
        let _ = span.set_parent(parent);
    }
    span
}

/// The call's trace id, for the `x-trace-id` response metadata (as REST's header).
pub fn trace_id(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_the_spec() {
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "123456789m", "10x", "-1m", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }
}
