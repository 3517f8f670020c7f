//! Who is calling: the bearer key checked against the tenant named in the request, then the
//! tenant's rate limit. REST reads the key from the `Authorization` header, gRPC from the
//! `authorization` metadata; both end here.

use std::sync::Arc;

use super::error::ApiError;
use super::{AppState, Transport};
use crate::domain::tenants::Tenant;
use crate::telemetry::InternalEvent;
use crate::telemetry::events::RequestRefused;

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The tenant, if `key` is one of its keys and its rate limit admits one more request.
/// A refusal is counted for the tenant named in the request.
pub fn authorize(
    state: &AppState,
    tenant: &str,
    key: Option<&str>,
    transport: Transport,
) -> Result<Arc<Tenant>, ApiError> {
    let result = state
        .tenants
        .authorize(tenant, key)
        .map_err(ApiError::from)
        .and_then(|t| match t.admit() {
            true => Ok(t),
            false => Err(ApiError::RateLimited(t.id.to_string())),
        });
    if let Err(e) = &result {
        refused(state, tenant, transport, e);
    }
    result
}

/// Counts a request refused before any work, for the tenant it named.
pub fn refused(state: &AppState, tenant: &str, transport: Transport, error: &ApiError) {
    RequestRefused {
        tenant: state.tenants.label(tenant),
        transport: transport.as_str(),
        reason: error.code().name(),
    }
    .emit(&state.metrics);
}

/// An operator: `key` is one of the admin keys.
pub fn authorize_admin(state: &AppState, key: Option<&str>) -> Result<(), ApiError> {
    Ok(state.tenants.authorize_admin(key)?)
}
