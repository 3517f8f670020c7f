//! Times every call into a backend: `eaglerank_feature_store_request_seconds{backend,op}`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    ApplyOutcome, CandidateLists, CandidateQuery, FeatureStore, SharedStore, StoreError,
    TenantUsage,
};
use crate::domain::{Event, Item, ItemId, ItemPatch, ItemRecord, UserProfile};
use crate::telemetry::events::{QuotaRefused, StoreCalled};
use crate::telemetry::{InternalEvent, Metrics};

pub struct Instrumented {
    inner: SharedStore,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn new(inner: SharedStore, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(&self, op: &str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.called(op, started);
        out
    }

    fn called(&self, op: &str, started: Instant) {
        StoreCalled {
            backend: self.inner.backend(),
            op,
            duration: started.elapsed(),
        }
        .emit(&self.metrics);
    }
}

#[async_trait]
impl FeatureStore for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn user_profile(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Option<Arc<UserProfile>>, StoreError> {
        self.timed("user_profile", self.inner.user_profile(tenant, user_id))
            .await
    }

    async fn candidate_lists(
        &self,
        tenant: &str,
        query: &CandidateQuery,
    ) -> Result<CandidateLists, StoreError> {
        self.timed("candidate_lists", self.inner.candidate_lists(tenant, query))
            .await
    }

    /// Timed as `candidate_lists` when the backend answers (it is the same call for the
    /// feed); a backend without records answers `None` at once, and is not timed.
    async fn candidate_records(
        &self,
        tenant: &str,
        query: &CandidateQuery,
    ) -> Result<Option<CandidateLists<Arc<ItemRecord>>>, StoreError> {
        let started = Instant::now();
        let answer = self.inner.candidate_records(tenant, query).await;
        if !matches!(answer, Ok(None)) {
            self.called("candidate_lists", started);
        }
        answer
    }

    async fn items(
        &self,
        tenant: &str,
        ids: &[ItemId],
    ) -> Result<Vec<Option<Arc<ItemRecord>>>, StoreError> {
        self.timed("items", self.inner.items(tenant, ids)).await
    }

    async fn upsert_items(&self, tenant: &str, items: Vec<Item>) -> Result<(), StoreError> {
        let result = self
            .timed("upsert_items", self.inner.upsert_items(tenant, items))
            .await;
        if let Err(e @ StoreError::QuotaExceeded { adding, .. }) = &result {
            QuotaRefused {
                tenant,
                budget: "items",
                count: *adding,
                message: &e.to_string(),
            }
            .emit(&self.metrics);
        }
        result
    }

    async fn patch_item(
        &self,
        tenant: &str,
        item_id: &str,
        patch: &ItemPatch,
    ) -> Result<Option<Item>, StoreError> {
        self.timed("patch_item", self.inner.patch_item(tenant, item_id, patch))
            .await
    }

    async fn apply_events(
        &self,
        tenant: &str,
        events: &[Event],
    ) -> Result<ApplyOutcome, StoreError> {
        let result = self
            .timed("apply_events", self.inner.apply_events(tenant, events))
            .await;
        if let Ok(outcome) = &result
            && !outcome.over_budget.is_empty()
        {
            QuotaRefused {
                tenant,
                budget: "users",
                count: outcome.over_budget.len(),
                message: "events of new users past the tenant's users budget were not applied",
            }
            .emit(&self.metrics);
        }
        result
    }

    async fn usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        self.timed("usage", self.inner.usage(tenant)).await
    }
}
