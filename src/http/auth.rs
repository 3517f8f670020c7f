//! The `AuthorizedTenant` extractor: the `{tenant}` path segment, checked against the bearer
//! key, then against the tenant's rate limit.

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use super::AppState;
use super::error::ApiError;
use crate::domain::tenants::Tenant;

pub struct AuthorizedTenant(pub Arc<Tenant>);

pub(super) fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
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
    let tenant = state.tenants.authorize(tenant, bearer(req))?;
    if !tenant.admit() {
        return Err(ApiError::RateLimited(tenant.id.to_string()));
    }
    Ok(AuthorizedTenant(tenant))
}
