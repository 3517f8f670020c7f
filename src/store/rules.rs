//! Where each tenant's rules document lives once edited through the API: in the store, so
//! that every replica serves the same version (`ranking::rules_book` re-reads it). Embedded:
//! in process; Redis: one hash per tenant (`er:{t}:rules`: `version`, `doc`).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::StoreError;

/// A stored rules document (JSON) and its version (1 for the first `PUT`, then +1 each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRules {
    pub version: u64,
    pub document: String,
}

#[async_trait]
pub trait RulesStore: Send + Sync + 'static {
    /// The tenant's stored document; `None` until the first `PUT` (the config's rules apply).
    async fn rules(&self, tenant: &str) -> Result<Option<StoredRules>, StoreError>;

    /// Stores `document` as the tenant's next version, atomically, and returns that version.
    async fn put_rules(&self, tenant: &str, document: &str) -> Result<u64, StoreError>;
}

/// The embedded store's rules: in process.
#[derive(Default)]
pub struct MemoryRules(Mutex<HashMap<String, StoredRules>>);

#[async_trait]
impl RulesStore for MemoryRules {
    async fn rules(&self, tenant: &str) -> Result<Option<StoredRules>, StoreError> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned())
    }

    async fn put_rules(&self, tenant: &str, document: &str) -> Result<u64, StoreError> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let version = all.get(tenant).map_or(0, |r| r.version) + 1;
        all.insert(
            tenant.to_owned(),
            StoredRules {
                version,
                document: document.to_owned(),
            },
        );
        Ok(version)
    }
}
