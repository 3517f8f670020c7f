//! Every error the API returns, whatever the transport: one type, and one table giving each
//! code its wire name, its HTTP status and its gRPC status code. REST renders it as
//! `{"error":{"code","message","details"?}}` (`http/error.rs`), gRPC as a `Status` with the
//! message (`grpc/error.rs`); neither decides a status of its own.

use actix_web::http::StatusCode;
use serde::Serialize;

use crate::actors::FeedError;
use crate::domain::tenants::AuthError;
use crate::store::StoreError;

/// One problem of a request: which element of a batch (`index`) or which field of a document
/// (`field`, a path such as `boosts[1].factor`), and what is wrong with it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Detail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
}

impl Detail {
    /// A problem with the batch element at `index`.
    pub fn at(index: usize, reason: impl Into<String>) -> Self {
        Self {
            index: Some(index),
            field: None,
            reason: reason.into(),
        }
    }

    /// A problem with the document's `field`.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            index: None,
            field: Some(field.into()),
            reason: reason.into(),
        }
    }
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
    /// The batch's events do not fit in what is left of the tenant's events per second.
    #[error(
        "events budget of tenant {tenant:?} ({per_second} events/s) exceeded by a batch of {events}; nothing was applied, retry later"
    )]
    EventRateLimited {
        tenant: String,
        per_second: u32,
        events: usize,
    },
    /// A write past one of the tenant's memory budgets (`[tenants.<id>.budget]`): refused,
    /// and nothing already stored is touched. Retrying does not help until the budget is
    /// raised or entries are removed.
    #[error("{message}")]
    QuotaExceeded {
        message: String,
        details: Vec<Detail>,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// New model files failed their checks; the serving model is unchanged.
    #[error("model rejected, the serving model is unchanged: {0}")]
    ModelRejected(String),
    /// The configuration read again is invalid, or asks for what only a restart does; the
    /// running configuration is unchanged.
    #[error("configuration rejected, nothing changed: {0}")]
    ConfigRejected(String),
    #[error("internal error")]
    Internal {
        #[source]
        source: anyhow::Error,
        /// Already logged with its request's context (the feed path's `FeedFailed`): the
        /// response must not log it a second time.
        logged: bool,
    },
}

/// Declares the error codes, each with its wire name, HTTP status and gRPC code in one line: a
/// code cannot exist without them, and `Code::status` / `Code::grpc` are exhaustive `match`es.
macro_rules! error_codes {
    ($($code:ident => $name:literal, $status:ident, $grpc:ident;)*) => {
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

            pub fn grpc(self) -> tonic::Code {
                match self {
                    $(Code::$code => tonic::Code::$grpc,)*
                }
            }
        }
    };
}

error_codes! {
    InvalidArgument => "invalid_argument", BAD_REQUEST, InvalidArgument;
    Unauthenticated => "unauthenticated", UNAUTHORIZED, Unauthenticated;
    PermissionDenied => "permission_denied", FORBIDDEN, PermissionDenied;
    NotFound => "not_found", NOT_FOUND, NotFound;
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED, Unimplemented;
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE, ResourceExhausted;
    RateLimited => "rate_limited", TOO_MANY_REQUESTS, ResourceExhausted;
    // A memory budget of the tenant: 507 rather than 429, because waiting does not help.
    QuotaExceeded => "quota_exceeded", INSUFFICIENT_STORAGE, ResourceExhausted;
    Unavailable => "unavailable", SERVICE_UNAVAILABLE, Unavailable;
    // The request's deadline (server.request_deadline_ms, or a gRPC client's shorter
    // grpc-timeout) passed before the feed was ranked.
    DeadlineExceeded => "deadline_exceeded", SERVICE_UNAVAILABLE, DeadlineExceeded;
    ModelRejected => "model_rejected", UNPROCESSABLE_ENTITY, FailedPrecondition;
    ConfigRejected => "config_rejected", UNPROCESSABLE_ENTITY, FailedPrecondition;
    Internal => "internal", INTERNAL_SERVER_ERROR, Internal;
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A bug: logged at ERROR with its cause chain when the response is built (unless
    /// [`ApiError::logged`]).
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

    /// The details of an invalid batch or a refused write (empty for every other error).
    pub fn details(&self) -> &[Detail] {
        match self {
            ApiError::InvalidArgument { details, .. } | ApiError::QuotaExceeded { details, .. } => {
                details
            }
            _ => &[],
        }
    }

    /// Logs an internal error nobody logged yet (with its cause chain); called by the
    /// transports when they render the error, so that it is logged exactly once.
    pub fn log_if_unlogged(&self) {
        if let ApiError::Internal {
            source,
            logged: false,
        } = self
        {
            crate::telemetry::events::request_failed(self.code().name(), source.as_ref());
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
            ApiError::RateLimited(_) | ApiError::EventRateLimited { .. } => Code::RateLimited,
            ApiError::QuotaExceeded { .. } => Code::QuotaExceeded,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ApiError::ModelRejected(_) => Code::ModelRejected,
            ApiError::ConfigRejected(_) => Code::ConfigRejected,
            ApiError::Internal { .. } => Code::Internal,
        }
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
            // A feed writes nothing a budget bounds: a quota error here is a bug.
            FeedError::Model(_)
            | FeedError::Store(StoreError::UnknownTenant(_) | StoreError::QuotaExceeded { .. }) => {
                ApiError::internal(e)
            }
            FeedError::DeadlineExceeded(_) => ApiError::DeadlineExceeded(e.to_string()),
            FeedError::Mailbox { .. }
            | FeedError::Crashed(_)
            | FeedError::Store(StoreError::Unavailable(_)) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::QuotaExceeded { .. } => ApiError::QuotaExceeded {
                message: e.to_string(),
                details: Vec::new(),
            },
            other => ApiError::from(FeedError::Store(other)),
        }
    }
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
            ApiError::ConfigRejected("x".into()),
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge("x".into()),
            ApiError::RateLimited("t".into()),
            ApiError::EventRateLimited {
                tenant: "t".into(),
                per_second: 1,
                events: 2,
            },
            ApiError::QuotaExceeded {
                message: "x".into(),
                details: vec![],
            },
            ApiError::Unavailable("x".into()),
            ApiError::DeadlineExceeded("x".into()),
            ApiError::internal(anyhow::anyhow!("x")),
        ];
        for e in samples {
            assert!(Code::ALL.contains(&e.code()), "{}", e.code().name());
        }
        assert_eq!(Code::ALL.len(), 13);
    }

    #[test]
    fn the_grpc_codes_are_the_ones_the_proto_documents() {
        use tonic::Code as G;
        let table = [
            (Code::InvalidArgument, G::InvalidArgument, 400),
            (Code::Unauthenticated, G::Unauthenticated, 401),
            (Code::PermissionDenied, G::PermissionDenied, 403),
            (Code::NotFound, G::NotFound, 404),
            (Code::RateLimited, G::ResourceExhausted, 429),
            (Code::QuotaExceeded, G::ResourceExhausted, 507),
            (Code::PayloadTooLarge, G::ResourceExhausted, 413),
            (Code::Unavailable, G::Unavailable, 503),
            (Code::DeadlineExceeded, G::DeadlineExceeded, 503),
            (Code::Internal, G::Internal, 500),
        ];
        for (code, grpc, http) in table {
            assert_eq!(code.grpc(), grpc, "{}", code.name());
            assert_eq!(code.status().as_u16(), http, "{}", code.name());
        }
    }
}
