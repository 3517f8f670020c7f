//! Tenants and their API keys. Keys exist only as SHA-256 digests (config holds digests, a
//! request's key is hashed and looked up), so neither config nor logs ever hold a key.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::budget::Budget;

pub struct Tenant {
    pub id: Arc<str>,
    pub display_name: String,
    limiter: Option<DefaultDirectRateLimiter>,
    pub budget: Budget,
    /// `budget.events_per_second`, as a limiter.
    event_limiter: Option<DefaultDirectRateLimiter>,
}

impl Tenant {
    /// Takes one request from the tenant's budget; false when it is exhausted.
    pub fn admit(&self) -> bool {
        self.limiter.as_ref().is_none_or(|l| l.check().is_ok())
    }

    /// Takes `events` from the tenant's events-per-second budget; false when they do not fit
    /// (a batch larger than a second's budget never does).
    pub fn admit_events(&self, events: usize) -> bool {
        let Some(limiter) = &self.event_limiter else {
            return true;
        };
        let n = NonZeroU32::new(events.min(u32::MAX as usize) as u32);
        n.is_none_or(|n| matches!(limiter.check_n(n), Ok(Ok(()))))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer <api key>`")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("no such tenant")]
    UnknownTenant,
    #[error("this API key does not belong to the requested tenant")]
    WrongTenant,
    #[error("this API key is not an admin key")]
    NotAdmin,
}

pub struct Tenants {
    by_id: HashMap<Arc<str>, Arc<Tenant>>,
    by_key: HashMap<[u8; 32], Arc<str>>,
    admin_keys: Vec<[u8; 32]>,
}

fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let mut d = [0u8; 32];
    // Config validation already checked the digests are 64 hex chars.
    hex::decode_to_slice(hex_digest, &mut d).ok().map(|()| d)
}

pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// One tenant as configured (`[tenants.<id>]`).
pub struct TenantSpec<'a> {
    pub id: &'a str,
    pub display_name: &'a str,
    /// Hex SHA-256 digests of the tenant's API keys (several allow rotation).
    pub api_key_sha256: &'a [String],
    /// 0 = unlimited.
    pub rate_limit_per_second: u32,
    pub budget: Budget,
}

/// The metric label of every tenant that is not configured.
pub const UNKNOWN_TENANT: &str = "_unknown";

impl Tenants {
    /// The registry of `tenants`; `admin_key_sha256`: hex digests of the admin keys.
    pub fn new<'a>(
        tenants: impl IntoIterator<Item = TenantSpec<'a>>,
        admin_key_sha256: &[String],
    ) -> Self {
        let mut by_id = HashMap::new();
        let mut by_key = HashMap::new();
        for t in tenants {
            let id: Arc<str> = t.id.into();
            let limiter = NonZeroU32::new(t.rate_limit_per_second)
                .map(|rps| RateLimiter::direct(Quota::per_second(rps)));
            by_id.insert(
                id.clone(),
                Arc::new(Tenant {
                    id: id.clone(),
                    display_name: t.display_name.to_owned(),
                    limiter,
                    budget: t.budget,
                    event_limiter: NonZeroU32::new(t.budget.events_per_second)
                        .map(|eps| RateLimiter::direct(Quota::per_second(eps))),
                }),
            );
            for d in t.api_key_sha256.iter().filter_map(|h| parse_digest(h)) {
                by_key.insert(d, id.clone());
            }
        }
        let admin_keys = admin_key_sha256
            .iter()
            .filter_map(|h| parse_digest(h))
            .collect();
        Self {
            by_id,
            by_key,
            admin_keys,
        }
    }

    /// Checks an admin key. A tenant's key is valid, but not for this.
    pub fn authorize_admin(&self, key: Option<&str>) -> Result<(), AuthError> {
        let key = key.filter(|k| !k.is_empty()).ok_or(AuthError::MissingKey)?;
        let digest = key_digest(key);
        if self.admin_keys.contains(&digest) {
            Ok(())
        } else if self.by_key.contains_key(&digest) {
            Err(AuthError::NotAdmin)
        } else {
            Err(AuthError::InvalidKey)
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = &Arc<str>> {
        self.by_id.keys()
    }

    /// `tenant` as a metric label: a configured tenant's id, else `_unknown` (label values stay
    /// bounded whatever clients send).
    pub fn label<'a>(&self, tenant: &'a str) -> &'a str {
        if self.by_id.contains_key(tenant) {
            tenant
        } else {
            UNKNOWN_TENANT
        }
    }

    /// Checks `key` for `tenant`. The key is checked first, so that a caller without a
    /// valid key learns nothing about which tenants exist.
    pub fn authorize(&self, tenant: &str, key: Option<&str>) -> Result<Arc<Tenant>, AuthError> {
        let key = key.filter(|k| !k.is_empty()).ok_or(AuthError::MissingKey)?;
        let owner = self
            .by_key
            .get(&key_digest(key))
            .ok_or(AuthError::InvalidKey)?;
        let requested = self.by_id.get(tenant).ok_or(AuthError::UnknownTenant)?;
        if **owner != *tenant {
            return Err(AuthError::WrongTenant);
        }
        Ok(requested.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_key_then_tenant() {
        // The demo keys documented in the README.
        let a = "er_demo_a_7Qk2mV9xLp4sT8wZ";
        let digests = |key: &str| vec![hex::encode(key_digest(key))];
        let (a_keys, b_keys) = (digests(a), digests("er_demo_b_3Hn6rB1yKc5dF0jU"));
        let spec = |id, keys| TenantSpec {
            id,
            display_name: id,
            api_key_sha256: keys,
            rate_limit_per_second: 0,
            budget: Budget::default(),
        };
        let tenants = Tenants::new([spec("demo-a", &a_keys), spec("demo-b", &b_keys)], &[]);
        assert_eq!(&*tenants.authorize("demo-a", Some(a)).unwrap().id, "demo-a");
        assert_eq!(
            tenants.authorize("demo-a", None).err(),
            Some(AuthError::MissingKey)
        );
        assert_eq!(
            tenants.authorize("demo-a", Some("x")).err(),
            Some(AuthError::InvalidKey)
        );
        assert_eq!(
            tenants.authorize("nope", Some("x")).err(),
            Some(AuthError::InvalidKey)
        );
        assert_eq!(
            tenants.authorize("nope", Some(a)).err(),
            Some(AuthError::UnknownTenant)
        );
        assert_eq!(
            tenants.authorize("demo-b", Some(a)).err(),
            Some(AuthError::WrongTenant)
        );
    }

    #[test]
    fn events_are_taken_from_the_tenant_s_events_per_second() {
        let keys = vec![];
        let limited = TenantSpec {
            id: "a",
            display_name: "a",
            api_key_sha256: &keys,
            rate_limit_per_second: 0,
            budget: Budget {
                events_per_second: 10,
                ..Budget::default()
            },
        };
        let tenants = Tenants::new([limited], &[]);
        let a = tenants.by_id.get("a").unwrap();
        assert!(a.admit_events(8));
        // Two are left this second; a batch larger than a whole second never fits.
        assert!(!a.admit_events(8));
        assert!(a.admit_events(2));
        assert!(!a.admit_events(11));
        // Requests are a separate budget: unlimited here.
        assert!(a.admit());
    }
}
