//! Which rules each tenant's feeds use now: the version stored through the API (re-read from
//! the store at most every `feed.rules_refresh_ms`, so every replica serves a `PUT` within that
//! time), else the tenant's configured rules (version 0). A feed never waits for a refresh
//! longer than its store budget, and a failed refresh keeps the rules it had.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::rules::TenantRules;
use crate::domain::rules::Rules;
use crate::store::{RulesStore, StoreError, by_deadline};

struct Entry {
    checked: Instant,
    rules: Arc<TenantRules>,
    /// When a `PUT` through this replica installed `rules`.
    put: Option<Instant>,
}

pub struct RulesBook {
    store: Arc<dyn RulesStore>,
    configured: HashMap<String, Arc<TenantRules>>,
    refresh: Duration,
    current: RwLock<HashMap<String, Entry>>,
    /// `[rules_presets.*]`, compiled: what an experiment arm may rank with instead.
    presets: RwLock<HashMap<String, Arc<TenantRules>>>,
}

/// What a refresh found, for the caller to report.
pub enum Refreshed {
    /// The version in force now, when it changed.
    Changed(Arc<TenantRules>),
    Unchanged,
    Failed(StoreError),
}

impl RulesBook {
    /// `configured`: each tenant's rules from config (already validated).
    pub fn new(
        store: Arc<dyn RulesStore>,
        configured: impl IntoIterator<Item = (String, Rules)>,
        refresh: Duration,
    ) -> Self {
        Self {
            store,
            configured: configured
                .into_iter()
                .map(|(t, r)| (t, Arc::new(TenantRules::new(0, r))))
                .collect(),
            refresh,
            current: RwLock::new(HashMap::new()),
            presets: RwLock::new(HashMap::new()),
        }
    }

    /// Replaces the presets (at start and on a config reload; already validated). A preset's
    /// version is 0, like configured rules: it is never edited through the API.
    pub fn set_presets(&self, presets: impl IntoIterator<Item = (String, Rules)>) {
        *self.presets.write().unwrap_or_else(|e| e.into_inner()) = presets
            .into_iter()
            .map(|(name, r)| (name, Arc::new(TenantRules::new(0, r))))
            .collect();
    }

    pub fn preset(&self, name: &str) -> Option<Arc<TenantRules>> {
        self.presets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn configured(&self, tenant: &str) -> Arc<TenantRules> {
        self.configured
            .get(tenant)
            .cloned()
            .unwrap_or_else(super::rules::defaults)
    }

    /// The rules in force without asking the store (the degraded path).
    pub fn cached(&self, tenant: &str) -> Arc<TenantRules> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .map(|e| e.rules.clone())
            .unwrap_or_else(|| self.configured(tenant))
    }

    /// The rules in force for `tenant`, re-read from the store first when the last read is
    /// older than the refresh interval (by one caller at a time: the others use the rules
    /// they have meanwhile). The read gives up at `deadline`.
    pub async fn get(&self, tenant: &str, deadline: Instant) -> (Arc<TenantRules>, Refreshed) {
        {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            match current.get_mut(tenant) {
                Some(e) if e.checked.elapsed() < self.refresh => {
                    return (e.rules.clone(), Refreshed::Unchanged);
                }
                Some(e) => e.checked = Instant::now(),
                None => {
                    current.insert(
                        tenant.to_owned(),
                        Entry {
                            checked: Instant::now(),
                            rules: self.configured(tenant),
                            put: None,
                        },
                    );
                }
            }
        }
        let read = by_deadline(deadline, "the rules store", self.store.rules(tenant)).await;
        let had = self.cached(tenant);
        match read {
            Err(e) => (had, Refreshed::Failed(e)),
            Ok(stored) => {
                let version = stored.as_ref().map_or(0, |s| s.version);
                if version == had.version {
                    return (had, Refreshed::Unchanged);
                }
                let rules = match stored {
                    None => self.configured(tenant),
                    Some(s) => match Rules::parse(s.document.as_bytes()) {
                        Ok(r) => Arc::new(TenantRules::new(s.version, r)),
                        // Only valid documents are stored; one that is not (written by a newer
                        // release?) must not take the rules down.
                        Err(problems) => {
                            let cause =
                                format!("stored rules v{version} are invalid: {problems:?}");
                            return (had, Refreshed::Failed(StoreError::Unavailable(cause)));
                        }
                    },
                };
                self.install(tenant, rules.clone(), false);
                (rules.clone(), Refreshed::Changed(rules))
            }
        }
    }

    /// Validated `rules` stored as the tenant's next version, and in force here at once.
    pub async fn put(&self, tenant: &str, rules: Rules) -> Result<Arc<TenantRules>, StoreError> {
        let document = serde_json::to_string(&rules)
            .map_err(|e| StoreError::Unavailable(format!("encoding the rules: {e}")))?;
        let version = self.store.put_rules(tenant, &document).await?;
        let installed = Arc::new(TenantRules::new(version, rules));
        self.install(tenant, installed.clone(), true);
        Ok(installed)
    }

    /// The store is the truth: what a refresh read replaces what is here, even an older
    /// version (the store lost its rules: a flush, an old snapshot) — except just after a
    /// `PUT` through this replica, when a read that began before it may still land.
    fn install(&self, tenant: &str, rules: Arc<TenantRules>, put: bool) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let entry = current.entry(tenant.to_owned()).or_insert_with(|| Entry {
            checked: Instant::now(),
            rules: rules.clone(),
            put: None,
        });
        let fresh_put = entry.put.is_some_and(|t| t.elapsed() < self.refresh);
        if put || rules.version >= entry.rules.version || !fresh_put {
            entry.rules = rules;
            entry.put = put.then(Instant::now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::store::StoredRules;

    /// A store whose content the test sets, as another replica or a Redis restore would.
    #[derive(Default)]
    struct Fixed(Mutex<Option<StoredRules>>);

    #[async_trait]
    impl RulesStore for Fixed {
        async fn rules(&self, _: &str) -> Result<Option<StoredRules>, StoreError> {
            Ok(self.0.lock().unwrap().clone())
        }

        async fn put_rules(&self, _: &str, document: &str) -> Result<u64, StoreError> {
            let mut s = self.0.lock().unwrap();
            let version = s.as_ref().map_or(0, |r| r.version) + 1;
            *s = Some(StoredRules {
                version,
                document: document.to_owned(),
            });
            Ok(version)
        }
    }

    fn stored(version: u64, json: &str) -> Option<StoredRules> {
        Some(StoredRules {
            version,
            document: json.to_owned(),
        })
    }

    #[actix_rt::test]
    async fn the_store_decides_which_version_is_served() {
        let store = Arc::new(Fixed::default());
        let configured = Rules {
            exclude_purchased: false,
            ..Default::default()
        };
        let book = RulesBook::new(store.clone(), [("t".into(), configured)], Duration::ZERO);
        let far = Instant::now() + Duration::from_secs(5);
        let (rules, _) = book.get("t", far).await;
        assert_eq!((rules.version, rules.rules.exclude_purchased), (0, false));
        // Another replica's PUT.
        *store.0.lock().unwrap() = stored(3, r#"{"exclude": {"items": ["i1"]}}"#);
        let (rules, refreshed) = book.get("t", far).await;
        assert_eq!(rules.version, 3);
        assert!(matches!(refreshed, Refreshed::Changed(_)));
        // The store lost its rules and started again: its version is served, not the higher.
        *store.0.lock().unwrap() = stored(1, "{}");
        assert_eq!(book.get("t", far).await.0.version, 1);
        // A stored document this release cannot read leaves the rules in force.
        *store.0.lock().unwrap() = stored(2, r#"{"future_rule": true}"#);
        let (rules, refreshed) = book.get("t", far).await;
        assert_eq!(rules.version, 1);
        assert!(matches!(refreshed, Refreshed::Failed(_)));
        // A PUT here is in force here at once.
        let put = book.put("t", Rules::default()).await.unwrap();
        assert_eq!(put.version, 3);
        assert_eq!(book.cached("t").version, 3);
    }
}
