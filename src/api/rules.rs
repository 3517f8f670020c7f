//! A tenant's rules through the API: read the version in force, or replace the document as a
//! whole (validated first: every problem listed, nothing changed on any).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::AppState;
use super::error::{ApiError, Detail};
use crate::domain::budget::Component;
use crate::domain::rules::Rules;
use crate::domain::tenants::Tenant;
use crate::ranking::rules::TenantRules;
use crate::ranking::rules_book::Refreshed;
use crate::telemetry::InternalEvent;
use crate::telemetry::events::{QuotaRefused, RulesChanged, RulesRefreshFailed};

/// A tenant's rules and their version (0: the configured rules, never replaced).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionedRules {
    pub version: u64,
    pub rules: Rules,
}

impl From<&TenantRules> for VersionedRules {
    fn from(r: &TenantRules) -> Self {
        Self {
            version: r.version,
            rules: r.rules.clone(),
        }
    }
}

/// How long a rules read or write may take.
const STORE_BUDGET: Duration = Duration::from_secs(2);

/// The rules in force for `tenant`, as the store has them now.
pub async fn get(state: &AppState, tenant: &str) -> Result<VersionedRules, ApiError> {
    let (rules, refreshed) = state.rules.get(tenant, Instant::now() + STORE_BUDGET).await;
    // A read that failed must not pass for the version in force everywhere.
    report(state, tenant, refreshed)?;
    Ok(VersionedRules::from(&*rules))
}

/// Reports what a refresh of `tenant`'s rules found (`RulesChanged`, `RulesRefreshFailed`)
/// and hands a failed read back, for the caller to decide what it means.
pub(crate) fn report(
    state: &AppState,
    tenant: &str,
    refreshed: Refreshed,
) -> Result<(), crate::store::StoreError> {
    match refreshed {
        Refreshed::Changed(r) => {
            RulesChanged {
                tenant,
                version: r.version,
            }
            .emit(&state.metrics);
            Ok(())
        }
        Refreshed::Failed(e) => {
            RulesRefreshFailed { tenant, error: &e }.emit(&state.metrics);
            Err(e)
        }
        Refreshed::Unchanged => Ok(()),
    }
}

/// Replaces `tenant`'s rules with the document `body` (JSON): validated first, then stored as
/// the next version, which every replica serves within `feed.rules_refresh_ms`.
pub async fn put(
    state: &AppState,
    tenant: &Tenant,
    body: &[u8],
) -> Result<VersionedRules, ApiError> {
    let rules = Rules::parse(body).map_err(|problems| ApiError::InvalidArgument {
        message: format!(
            "{} problem(s) in the rules document; nothing was changed",
            problems.len()
        ),
        details: problems
            .into_iter()
            .map(|(field, reason)| Detail::field(field, reason))
            .collect(),
    })?;
    if let Some(limit) = tenant.budget.limit(Component::Rules)
        && rules.entries() as u64 > limit
    {
        let e = ApiError::QuotaExceeded {
            message: format!(
                "the rules document has {} entries (exclusions, boosts and pins); the tenant's rules budget is {limit}; nothing was changed",
                rules.entries()
            ),
            details: Vec::new(),
        };
        QuotaRefused {
            tenant: &tenant.id,
            budget: "rules",
            count: 1,
            message: &e.to_string(),
        }
        .emit(&state.metrics);
        return Err(e);
    }
    let tenant = &*tenant.id;
    let installed = state.rules.put(tenant, rules).await?;
    RulesChanged {
        tenant,
        version: installed.version,
    }
    .emit(&state.metrics);
    Ok(VersionedRules::from(&*installed))
}
