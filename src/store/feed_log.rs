//! The served-feed log: where feeds are kept for the join window, so that clicks and
//! purchases carrying a feed's `request_id` can be joined with it (`ingest::feed_join`). It
//! lives where the features do: in process for the embedded store, in Redis otherwise (one
//! key per feed for the join window), so that with several replicas an event joins whichever
//! replica served the feed and whichever applies the event.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::config::EventSettings;
use crate::domain::ItemId;

/// One served feed, as the join needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedFeed {
    pub model: String,
    pub version: String,
    pub items: Vec<ItemId>,
}

/// Where served feeds are kept for the join window.
#[async_trait]
pub trait FeedLog: Send + Sync + 'static {
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: &ServedFeed,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// The feeds `request_ids` name; `None` where unknown or expired.
    async fn lookup(
        &self,
        tenant: &str,
        request_ids: &[&str],
    ) -> Result<Vec<Option<ServedFeed>>, StoreError>;

    /// For each feed, whether this is its first click (claimed once, atomically).
    async fn claim_first_clicks(
        &self,
        tenant: &str,
        request_ids: &[&str],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError>;
}

/// The embedded store's log: bounded, TTL'd, in process.
pub struct MemoryFeedLog {
    feeds: Cache<(String, String), Arc<ServedFeed>>,
    clicked: Cache<(String, String), ()>,
}

impl MemoryFeedLog {
    pub fn new(settings: &EventSettings) -> Self {
        let window = settings.join_window;
        Self {
            feeds: Cache::builder()
                .max_capacity(settings.join_capacity)
                .time_to_live(window)
                .build(),
            clicked: Cache::builder()
                .max_capacity(settings.join_capacity)
                .time_to_live(window)
                .build(),
        }
    }
}

#[async_trait]
impl FeedLog for MemoryFeedLog {
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: &ServedFeed,
        _: Duration,
    ) -> Result<(), StoreError> {
        let key = (tenant.to_owned(), request_id.to_owned());
        self.feeds.insert(key, Arc::new(feed.clone()));
        Ok(())
    }

    async fn lookup(
        &self,
        tenant: &str,
        request_ids: &[&str],
    ) -> Result<Vec<Option<ServedFeed>>, StoreError> {
        Ok(request_ids
            .iter()
            .map(|r| {
                let feed = self.feeds.get(&(tenant.to_owned(), (*r).to_owned()))?;
                Some((*feed).clone())
            })
            .collect())
    }

    async fn claim_first_clicks(
        &self,
        tenant: &str,
        request_ids: &[&str],
        _: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        Ok(request_ids
            .iter()
            .map(|r| {
                let entry = self
                    .clicked
                    .entry((tenant.to_owned(), (*r).to_owned()))
                    .or_insert(());
                entry.is_fresh()
            })
            .collect())
    }
}
