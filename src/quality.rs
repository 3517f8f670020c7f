//! Live ranking quality: each served feed is remembered for a while (its model and the items
//! in rank order), and clicks and purchases that carry its `request_id` are joined with it.
//! From the counters (`eaglerank_ranking_*`) PromQL derives CTR@k and the mean reciprocal
//! rank of the first click, per model version and tenant — offline NDCG's live counterpart.
//!
//! The memory is per process (bounded, TTL'd): with several replicas an event joins only on
//! the replica that served the feed (the Kafka path does not guarantee that), and the rest
//! are counted as `unknown_request`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::catalog::{EventKind, ItemId};
use crate::config::EventSettings;
use crate::model::ModelMetadata;
use crate::telemetry::events::{FeedInteraction, FeedRanked, InteractionUnjoined};
use crate::telemetry::{InternalEvent, Metrics};

/// The ranks CTR@k is counted at.
pub const CUTOFFS: [usize; 4] = [1, 5, 10, 20];

struct Served {
    model: Arc<ModelMetadata>,
    items: Vec<ItemId>,
    clicked: AtomicBool,
}

pub struct ServedFeeds {
    feeds: Cache<(Arc<str>, String), Arc<Served>>,
    metrics: Arc<Metrics>,
}

impl ServedFeeds {
    pub fn new(settings: &EventSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            feeds: Cache::builder()
                .max_capacity(settings.join_capacity)
                .time_to_live(Duration::from_secs(settings.join_window_seconds))
                .build(),
            metrics,
        }
    }

    /// Remembers a served feed, items in rank order.
    pub fn record(
        &self,
        tenant: &Arc<str>,
        request_id: &str,
        model: Arc<ModelMetadata>,
        items: Vec<ItemId>,
    ) {
        FeedRanked {
            tenant,
            model: &model,
        }
        .emit(&self.metrics);
        let served = Served {
            model,
            items,
            clicked: AtomicBool::new(false),
        };
        self.feeds
            .insert((tenant.clone(), request_id.to_owned()), Arc::new(served));
    }

    /// Joins one applied event with the feed it names. Impressions and carts are not
    /// outcomes here.
    pub fn join(&self, tenant: &Arc<str>, request_id: &str, kind: EventKind, item: &str) {
        if !matches!(kind, EventKind::Click | EventKind::Purchase) {
            return;
        }
        let Some(served) = self.feeds.get(&(tenant.clone(), request_id.to_owned())) else {
            InteractionUnjoined {
                reason: "unknown_request",
            }
            .emit(&self.metrics);
            return;
        };
        let Some(position) = served.items.iter().position(|i| &**i == item) else {
            InteractionUnjoined {
                reason: "not_in_feed",
            }
            .emit(&self.metrics);
            return;
        };
        let first_click = kind == EventKind::Click && !served.clicked.swap(true, Ordering::SeqCst);
        FeedInteraction {
            tenant,
            model: &served.model,
            kind,
            position,
            first_click,
        }
        .emit(&self.metrics);
    }
}
