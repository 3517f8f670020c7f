//! The gRPC rendering of [`ApiError`]: the code from the one error table (`api/error.rs`), the
//! REST message (with an invalid batch's per-event problems), and the REST code in the
//! `eaglerank-error-code` metadata.

use std::fmt::Write as _;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::api::ApiError;

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.log_if_unlogged();
        let mut message = e.to_string();
        for d in e.details() {
            let _ = match (&d.index, &d.field) {
                (Some(i), _) => write!(message, "; event {i}: {}", d.reason),
                (None, Some(f)) => write!(message, "; {f}: {}", d.reason),
                (None, None) => write!(message, "; {}", d.reason),
            };
        }
        let mut status = Status::new(e.code().grpc(), message);
        status.metadata_mut().insert(
            "eaglerank-error-code",
            MetadataValue::from_static(e.code().name()),
        );
        status
    }
}

/// The canonical name of a gRPC status code (`OK`, `INVALID_ARGUMENT`, ...): a bounded metric
/// label.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Detail;

    #[test]
    fn a_status_carries_the_code_the_message_and_the_rest_code() {
        let status = Status::from(ApiError::internal(anyhow::anyhow!("a bug")).logged());
        assert_eq!(status.code(), Code::Internal);
        // The cause stays in the log, not in the answer.
        assert_eq!(status.message(), "internal error");
        assert_eq!(
            status.metadata().get("eaglerank-error-code").unwrap(),
            "internal"
        );

        let status = Status::from(ApiError::InvalidArgument {
            message: "2 invalid event(s)".into(),
            details: vec![Detail::at(0, "bad type"), Detail::at(3, "no user")],
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "2 invalid event(s); event 0: bad type; event 3: no user"
        );
    }
}
