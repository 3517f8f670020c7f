//! Every error the API returns: one type, one code → status table, one JSON shape
//! `{"error":{"code","message","details"?}}` — including actix's own failures (bad JSON,
//! oversized bodies, unknown routes, wrong methods).

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::FeedError;
use crate::domain::tenants::AuthError;
use crate::store::StoreError;

/// One problem in a batch: which element, and what is wrong with it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Detail {
    pub index: usize,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidArgument {
        message: String,
        details: Vec<Detail>,
    },
    #[error(transparent)]
    Unauthenticated(AuthError),
    #[error(transparent)]
    PermissionDenied(AuthError),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("rate limit of tenant {0:?} exceeded; retry later")]
    RateLimited(String),
    #[error("{0}")]
    Unavailable(String),
    /// New model files failed their checks; the serving model is unchanged.
    #[error("model rejected, the serving model is unchanged: {0}")]
    ModelRejected(String),
    #[error("internal error")]
    Internal {
        #[source]
        source: anyhow::Error,
        /// Already logged with its request's context (the feed path's `FeedFailed`): the
        /// response must not log it a second time.
        logged: bool,
    },
}

/// Declares the error codes, each with its wire name and HTTP status in one line: a code
/// cannot exist without a status, and `Code::status` is an exhaustive `match`.
macro_rules! error_codes {
    ($($code:ident => $name:literal, $status:ident;)*) => {
        /// The API's error codes: the `code` field of every error body.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($code,)*
        }

        impl Code {
            pub const ALL: &[Code] = &[$(Code::$code,)*];

            /// The wire name, also the `status` label of the feed metrics.
            pub fn name(self) -> &'static str {
                match self {
                    $(Code::$code => $name,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(Code::$code => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    InvalidArgument => "invalid_argument", BAD_REQUEST;
    Unauthenticated => "unauthenticated", UNAUTHORIZED;
    PermissionDenied => "permission_denied", FORBIDDEN;
    NotFound => "not_found", NOT_FOUND;
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED;
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE;
    RateLimited => "rate_limited", TOO_MANY_REQUESTS;
    Unavailable => "unavailable", SERVICE_UNAVAILABLE;
    ModelRejected => "model_rejected", UNPROCESSABLE_ENTITY;
    Internal => "internal", INTERNAL_SERVER_ERROR;
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A bug: logged at ERROR with its cause chain when the response is built.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal {
            source: source.into(),
            logged: false,
        }
    }

    /// The same error, marked as logged by the caller, who had the request's context.
    pub fn logged(self) -> Self {
        match self {
            ApiError::Internal { source, .. } => ApiError::Internal {
                source,
                logged: true,
            },
            other => other,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::MethodNotAllowed => Code::MethodNotAllowed,
            ApiError::PayloadTooLarge(_) => Code::PayloadTooLarge,
            ApiError::RateLimited(_) => Code::RateLimited,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::ModelRejected(_) => Code::ModelRejected,
            ApiError::Internal { .. } => Code::Internal,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: BodyInner<'a>,
}

#[derive(Serialize)]
struct BodyInner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "<[Detail]>::is_empty")]
    details: &'a [Detail],
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal {
            source,
            logged: false,
        } = self
        {
            crate::telemetry::events::request_failed(self.code().name(), source.as_ref());
        }
        let details = match self {
            ApiError::InvalidArgument { details, .. } => details.as_slice(),
            _ => &[],
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthenticated(_) => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RateLimited(_) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            _ => {}
        }
        response.json(Body {
            error: BodyInner {
                code: self.code().name(),
                message: self.to_string(),
                details,
            },
        })
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::MissingKey | AuthError::InvalidKey => ApiError::Unauthenticated(e),
            AuthError::WrongTenant | AuthError::NotAdmin => ApiError::PermissionDenied(e),
            AuthError::UnknownTenant => ApiError::NotFound(e.to_string()),
        }
    }
}

impl From<FeedError> for ApiError {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Model(_) | FeedError::Store(StoreError::UnknownTenant(_)) => {
                ApiError::internal(e)
            }
            FeedError::DeadlineExceeded(_)
            | FeedError::Mailbox { .. }
            | FeedError::Crashed(_)
            | FeedError::Store(StoreError::Unavailable(_)) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(FeedError::Store(e))
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

/// A resource's default service: the path exists, the method does not.
pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_status() {
        let samples = [
            ApiError::invalid("x"),
            ApiError::Unauthenticated(AuthError::MissingKey),
            ApiError::PermissionDenied(AuthError::WrongTenant),
            ApiError::NotFound("x".into()),
            ApiError::ModelRejected("x".into()),
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge("x".into()),
            ApiError::RateLimited("t".into()),
            ApiError::Unavailable("x".into()),
            ApiError::internal(anyhow::anyhow!("x")),
        ];
        for e in samples {
            assert!(Code::ALL.contains(&e.code()), "{}", e.code().name());
        }
        assert_eq!(Code::ALL.len(), 10);
    }

    #[test]
    fn an_internal_error_is_logged_once() {
        use std::sync::{Arc, Mutex};

        /// The log output, captured.
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
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
        let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.matches("RequestFailed").count(), 1, "{out}");
        assert!(
            out.contains("first bug") && !out.contains("second bug"),
            "{out}"
        );
    }
}
