//! `GET /metrics`: the registry in the classic Prometheus text format, or — when the scraper
//! asks for it (`Accept: application/openmetrics-text`, as Prometheus does) — in OpenMetrics,
//! which carries the feed latency's exemplars (trace ids of sampled feeds). One endpoint, the
//! same series either way; actix-web-prom still records the HTTP request metrics into it.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use prometheus::Encoder as _;

use crate::api::AppState;
use crate::telemetry::metrics::openmetrics;

pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let families = state.metrics.registry.gather();
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        let body = openmetrics::encode(&families, &state.metrics.feed_latency_exemplars);
        return HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, openmetrics::CONTENT_TYPE))
            .body(body);
    }
    let encoder = prometheus::TextEncoder::new();
    let mut body = Vec::with_capacity(64 * 1024);
    match encoder.encode(&families, &mut body) {
        Ok(()) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, encoder.format_type()))
            .body(body),
        Err(e) => HttpResponse::InternalServerError().body(format!("encoding the metrics: {e}")),
    }
}
