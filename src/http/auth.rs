//! The `AuthorizedTenant` extractor: the `{tenant}` path segment and the `Authorization`
//! header, checked by `api::auth`.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use super::error::ApiError;
use crate::api::{AppState, Transport, auth};
use crate::domain::tenants::Tenant;

pub struct AuthorizedTenant(pub Arc<Tenant>);

pub(super) fn bearer(req: &HttpRequest) -> Option<&str> {
    auth::bearer_token(req.headers().get(header::AUTHORIZATION)?.to_str().ok()?)
}

impl FromRequest for AuthorizedTenant {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req))
    }
}

fn authorize(req: &HttpRequest) -> Result<AuthorizedTenant, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("application state missing")))?;
    let tenant = req.match_info().get("tenant").unwrap_or_default();
    auth::authorize(state, tenant, bearer(req), Transport::Http).map(AuthorizedTenant)
}
