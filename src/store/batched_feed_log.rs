//! The served-feed log's writes, batched (`events.feed_log_flush_ms`, Redis only): a feed is
//! queued in process and returned at once; every interval the feeds queued since are written in
//! one round trip per tenant.
//!
//! Why: with a write awaited per feed, the log was one of a Redis-backed feed's two round
//! trips, and a round trip, not its commands, is what costs Redis and the service: without the
//! write Redis's CPU per feed fell by 43 % and the service's by 4.5 % (`loadtest/alternate
//! --redis`, README, Performance), where dropping the `EXPIRE` of each write saved 3 %.
//!
//! What a batch changes, and what keeps the join whole:
//! - A feed is in Redis an interval (and its write) after its response. This replica sees it at
//!   once: its lookups (a click's join, a session's next page) read the queued and
//!   in-flight feeds before Redis. Another replica sees it once written; a join or a next page
//!   there that misses a feed served a moment ago looks again after the flush
//!   ([`crate::ingest::feed_join::ServedFeeds`]).
//! - A failed batch is counted per feed (`eaglerank_ranking_unjoined_total{reason=
//!   "feed_log_unavailable"}`), as a failed awaited write was: the feeds were served, only their
//!   joins are lost. A process killed loses at most the last interval's feeds the same way; one
//!   stopped writes its queue first ([`FeedLog::flush`], after the servers stop).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{FeedLog, LoggedFeed, ServedFeed, StoreError, Usage, fill_missing};
use crate::telemetry::events::{FeedLogFailed, FeedLogWritten};
use crate::telemetry::{InternalEvent, Metrics};

pub struct BatchedFeedLog {
    inner: Arc<dyn FeedLog>,
    every: Duration,
    metrics: Arc<Metrics>,
    pending: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    /// Recorded since the last flush began, oldest first.
    queued: Vec<LoggedFeed>,
    /// Batches being written, oldest first: looked up here until their write ends.
    writing: Vec<Arc<Vec<LoggedFeed>>>,
    /// A flush is due: the first feed queued after a flush schedules the next.
    scheduled: bool,
    ttl: Duration,
}

impl Pending {
    /// The newest feed queued or being written as `request_id`.
    fn find(&self, tenant: &str, request_id: &str) -> Option<&ServedFeed> {
        self.queued
            .iter()
            .rev()
            .chain(self.writing.iter().rev().flat_map(|b| b.iter().rev()))
            .find(|f| f.request_id == request_id && f.tenant == tenant)
            .map(|f| &f.feed)
    }
}

/// A scheduled flush, which keeps the queue whole whenever it ends: dropped while it waits (its
/// runtime shutting down), the next feed or [`FeedLog::flush`] schedules or writes the queue;
/// dropped while it writes, its batch goes back to the queue's front (written twice at worst:
/// the same fields, the same values).
struct Flush {
    pending: Arc<Mutex<Pending>>,
    batch: Option<Arc<Vec<LoggedFeed>>>,
    ended: bool,
}

impl Drop for Flush {
    fn drop(&mut self) {
        let mut p = lock(&self.pending);
        let Some(batch) = self.batch.take() else {
            p.scheduled = false;
            return;
        };
        p.writing.retain(|b| !Arc::ptr_eq(b, &batch));
        if !self.ended {
            p.queued.splice(0..0, batch.iter().cloned());
        }
    }
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

impl BatchedFeedLog {
    /// Writes to `inner` every `every` (not zero: zero means no batching, `inner` itself).
    pub fn new(inner: Arc<dyn FeedLog>, every: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            every,
            metrics,
            pending: Arc::default(),
        }
    }

    /// Waits for the interval, then writes what was queued meanwhile.
    async fn flush_later(
        inner: Arc<dyn FeedLog>,
        pending: Arc<Mutex<Pending>>,
        every: Duration,
        metrics: Arc<Metrics>,
    ) {
        let mut flush = Flush {
            pending,
            batch: None,
            ended: false,
        };
        tokio::time::sleep(every).await;
        let ttl = {
            let mut p = lock(&flush.pending);
            p.scheduled = false;
            let batch = Arc::new(std::mem::take(&mut p.queued));
            p.writing.push(batch.clone());
            flush.batch = Some(batch);
            p.ttl
        };
        let batch = flush.batch.clone().expect("taken above");
        write(&*inner, &batch, ttl, &metrics).await;
        flush.ended = true;
    }
}

/// Writes a batch; a failure is counted per feed, the feeds' joins lost.
async fn write(inner: &dyn FeedLog, batch: &[LoggedFeed], ttl: Duration, metrics: &Metrics) {
    if batch.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let written = inner.record_many(batch, ttl).await;
    FeedLogWritten {
        feeds: batch.len(),
        duration: started.elapsed(),
    }
    .emit(metrics);
    if let Err(error) = written {
        FeedLogFailed {
            error: &error,
            feeds: batch.len(),
        }
        .emit(metrics);
    }
}

#[async_trait]
impl FeedLog for BatchedFeedLog {
    /// Queued, never awaited: the write is the next flush's.
    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        feed: ServedFeed,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut p = lock(&self.pending);
        p.queued.push(LoggedFeed {
            tenant: tenant.to_owned(),
            request_id: request_id.to_owned(),
            feed,
        });
        p.ttl = ttl;
        if !std::mem::replace(&mut p.scheduled, true) {
            drop(p);
            tokio::spawn(Self::flush_later(
                self.inner.clone(),
                self.pending.clone(),
                self.every,
                self.metrics.clone(),
            ));
        }
        Ok(())
    }

    async fn record_many(&self, feeds: &[LoggedFeed], ttl: Duration) -> Result<(), StoreError> {
        self.inner.record_many(feeds, ttl).await
    }

    /// What is queued, written now (a stopping replica's last feeds).
    async fn flush(&self) {
        let (batch, ttl) = {
            let mut p = lock(&self.pending);
            (std::mem::take(&mut p.queued), p.ttl)
        };
        write(&*self.inner, &batch, ttl, &self.metrics).await;
    }

    /// The feeds not written yet from here, the others from the log.
    async fn lookup(
        &self,
        tenant: &str,
        request_ids: &[&str],
    ) -> Result<Vec<Option<ServedFeed>>, StoreError> {
        let mut found: Vec<Option<ServedFeed>> = {
            let p = lock(&self.pending);
            request_ids
                .iter()
                .map(|id| p.find(tenant, id).cloned())
                .collect()
        };
        fill_missing(&*self.inner, tenant, request_ids, &mut found, |_| true).await?;
        Ok(found)
    }

    async fn claim_first_clicks(
        &self,
        tenant: &str,
        request_ids: &[&str],
        ttl: Duration,
    ) -> Result<Vec<bool>, StoreError> {
        self.inner
            .claim_first_clicks(tenant, request_ids, ttl)
            .await
    }

    async fn held(&self, tenant: &str) -> Result<Option<Usage>, StoreError> {
        self.inner.held(tenant).await
    }

    async fn trim(&self, tenant: &str, max: u64) -> Result<u64, StoreError> {
        self.inner.trim(tenant, max).await
    }
}
