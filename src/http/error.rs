//! The REST rendering of [`ApiError`]: the status from the one error table
//! (`api/error.rs`), the JSON shape `{"error":{"code","message","details"?}}`, and actix's own
//! failures (bad JSON, oversized bodies, unknown routes, wrong methods) in that shape too.

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

pub use crate::api::error::{ApiError, Code, Detail};

/// Every error's body.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct Body<'a> {
    error: BodyInner<'a>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ErrorInfo)]
struct BodyInner<'a> {
    /// The error code: `invalid_argument`, `unauthenticated`, `permission_denied`,
    /// `not_found`, `method_not_allowed`, `payload_too_large`, `rate_limited`, `quota_exceeded`, `unavailable`,
    /// `deadline_exceeded`, `model_rejected`, `internal`.
    #[schema(value_type = String)]
    code: &'a str,
    message: String,
    /// An invalid batch: every bad element by index.
    #[serde(skip_serializing_if = "<[Detail]>::is_empty")]
    #[schema(value_type = Option<Vec<Detail>>)]
    details: &'a [Detail],
}

/// The errors of the tenant endpoints, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum TenantErrors<'a> {
    /// Invalid request: query, body, or batch elements (every problem listed in `details`).
    #[response(status = 400)]
    InvalidArgument(Body<'a>),
    /// No key, or not a key of any tenant.
    #[response(status = 401)]
    Unauthenticated(Body<'a>),
    /// A key of another tenant.
    #[response(status = 403)]
    PermissionDenied(Body<'a>),
    /// No such tenant (or item).
    #[response(status = 404)]
    NotFound(Body<'a>),
    /// The body is larger than `server.max_body_bytes`.
    #[response(status = 413)]
    PayloadTooLarge(Body<'a>),
    /// The tenant's rate limit (requests, or events per second) is exhausted; retry after a
    /// second.
    #[response(status = 429)]
    RateLimited(Body<'a>),
    /// A write past one of the tenant's memory budgets (items, users, rules): refused, nothing
    /// stored was touched (`details` names the refused elements).
    #[response(status = 507)]
    QuotaExceeded(Body<'a>),
    /// A dependency is down or the request's deadline passed (`unavailable`,
    /// `deadline_exceeded`); feeds degrade instead where they can.
    #[response(status = 503)]
    Unavailable(Body<'a>),
    /// A bug: logged with its cause.
    #[response(status = 500)]
    Internal(Body<'a>),
}

/// The errors of the admin endpoints, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AdminErrors<'a> {
    /// No key, or not a key at all.
    #[response(status = 401)]
    Unauthenticated(Body<'a>),
    /// Not an admin key.
    #[response(status = 403)]
    PermissionDenied(Body<'a>),
    /// The new model files failed their checks (model reload), or the configuration read again
    /// is invalid (config reload); nothing changed.
    #[response(status = 422)]
    Rejected(Body<'a>),
    /// The model watchdog is not running.
    #[response(status = 503)]
    Unavailable(Body<'a>),
    /// A bug: logged with its cause.
    #[response(status = 500)]
    Internal(Body<'a>),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        self.log_if_unlogged();
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthenticated(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RateLimited(_) | ApiError::EventRateLimited { .. } => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            _ => {}
        }
        response.json(Body {
            error: BodyInner {
                code: self.code().name(),
                message: self.to_string(),
                details: self.details(),
            },
        })
    }
}

/// `JsonConfig` error handler: body problems become 400 or 413 in our shape.
pub fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::PayloadTooLarge(format!("request body exceeds {limit} bytes"))
        }
        JsonPayloadError::ContentType => {
            ApiError::invalid("expected a body with `Content-Type: application/json`")
        }
        JsonPayloadError::Deserialize(e) => ApiError::invalid(format!("invalid JSON body: {e}")),
        other => ApiError::invalid(format!("invalid request body: {other}")),
    }
    .into()
}

pub fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid(format!("invalid query string: {err}")).into()
}

/// The app's default service: no route matches the path.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no route for {}", req.path())))
}

/// A resource's default service: the path exists, the method does not. The answer names the
/// methods it has (`Allow`, RFC 9110).
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    actix_web::web::to(move || async move {
        let mut response = ApiError::MethodNotAllowed.error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_is_logged_once() {
        use crate::telemetry::logging::Captured;
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // Built outside the feed path: the response logs it.
            let fresh = ApiError::internal(anyhow::anyhow!("first bug"));
            assert_eq!(fresh.error_response().status(), 500);
            // The feed path logged it already (FeedFailed, with its context).
            let logged = ApiError::internal(anyhow::anyhow!("second bug")).logged();
            assert_eq!(logged.code(), Code::Internal);
            assert_eq!(logged.error_response().status(), 500);
        });
        let out = captured.text();
        assert_eq!(out.matches("RequestFailed").count(), 1, "{out}");
        assert!(
            out.contains("first bug") && !out.contains("second bug"),
            "{out}"
        );
    }
}
