//! `GET /ops`: one self-contained page (no external assets) for an operator, refreshed from
//! `GET /ops/data` (`api::ops`). Served on the API's port beside `/metrics`, without a key
//! like it; `ops.enabled = false` removes both.

use actix_web::{HttpResponse, http::header, web};

use crate::api::AppState;

const PAGE: &str = include_str!("page.html");

pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        // The page runs only its own inline script and talks only to this origin.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ))
        .body(PAGE)
}

pub async fn data(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(state.ops.data(&state))
}
