//! Middleware: counts the requests being served, by endpoint (the route pattern: bounded
//! whatever paths clients send; `UNKNOWN` for no route), so that saturation shows where it is.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, web};

use crate::api::{AppState, Transport};
use crate::telemetry::events::InFlight;

pub async fn count_in_flight(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let guard = req.app_data::<web::Data<AppState>>().map(|state| {
        let endpoint = req.match_pattern();
        InFlight::start(
            &state.metrics,
            Transport::Http.as_str(),
            endpoint.as_deref().unwrap_or("UNKNOWN"),
        )
    });
    let res = next.call(req).await;
    drop(guard);
    res
}
