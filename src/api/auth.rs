//! Who is calling: the bearer key checked against the tenant named in the request, then the
//! tenant's rate limit. REST reads the key from the `Authorization` header, gRPC from the
//! `authorization` metadata; both end here.

use std::sync::Arc;

use super::AppState;
use super::error::ApiError;
use crate::domain::tenants::Tenant;

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The tenant, if `key` is one of its keys and its rate limit admits one more request.
pub fn authorize(
    state: &AppState,
    tenant: &str,
    key: Option<&str>,
) -> Result<Arc<Tenant>, ApiError> {
    let tenant = state.tenants.authorize(tenant, key)?;
    if !tenant.admit() {
        return Err(ApiError::RateLimited(tenant.id.to_string()));
    }
    Ok(tenant)
}

/// An operator: `key` is one of the admin keys.
pub fn authorize_admin(state: &AppState, key: Option<&str>) -> Result<(), ApiError> {
    Ok(state.tenants.authorize_admin(key)?)
}
