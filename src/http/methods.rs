//! Request methods as every layer after this one sees them: the standard ones as sent, any
//! other as `_OTHER` (OpenTelemetry's value for a method outside the standard set). The HTTP
//! metrics and the request span label the method; a client inventing methods
//! (`curl -X FOO123`) must not create a series per invention. The answer is what it would have
//! been: no route takes `_OTHER`, so a known path answers 405, an unknown one 404.

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

/// The methods of RFC 9110 and PATCH (RFC 5789): what `method` labels can be, besides `_OTHER`.
pub const STANDARD: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// The label value of every other method.
pub const OTHER: &str = "_OTHER";

/// Middleware: rewrites a non-standard method to [`OTHER`]. Wraps everything else.
pub async fn bound_methods(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if !STANDARD.contains(req.method()) {
        req.head_mut().method = Method::from_bytes(OTHER.as_bytes()).expect("a valid token");
    }
    next.call(req).await
}
