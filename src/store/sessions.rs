//! Feed sessions: the pages a user was served through one chain of cursors, so that the next
//! page repeats none of them and the same cursor gives the same page again. Embedded: in
//! process, at most `feed.session_capacity` sessions; Redis: one hash per session
//! (`er:{t}:session:<id>`, a field per page), shared by every replica, expiring with the
//! session.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use super::StoreError;
use crate::domain::ItemId;

/// One served item of a page: enough to serve the page again.
#[derive(Debug, Clone, PartialEq)]
pub struct PageItem {
    pub item_id: ItemId,
    pub score: f32,
    /// The candidate sources' bits (`ranking::candidates::Sources`).
    pub sources: u8,
}

/// One served page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub items: Vec<PageItem>,
    /// Whether it had a next page (its response carried a `next_cursor`).
    pub more: bool,
}

/// A session's pages by number (1-based).
pub type Pages = BTreeMap<u32, Page>;

#[async_trait]
pub trait FeedSessions: Send + Sync + 'static {
    /// Every page stored for `session` (empty: unknown or expired).
    async fn pages(&self, tenant: &str, session: &str) -> Result<Pages, StoreError>;

    /// Stores `page` of `session`; the session expires `ttl` after its last page.
    async fn put_page(
        &self,
        tenant: &str,
        session: &str,
        number: u32,
        page: &Page,
        ttl: Duration,
    ) -> Result<(), StoreError>;
}

/// Pages as the Redis hash holds them: `more` or `last` on the first line, then
/// `id score sources` per item, one item per line.
pub fn encode_page(page: &Page) -> String {
    let mut s = String::with_capacity(page.items.len() * 24 + 5);
    s.push_str(if page.more { "more\n" } else { "last\n" });
    for i in &page.items {
        s.push_str(&i.item_id);
        s.push(' ');
        s.push_str(&i.score.to_string());
        s.push(' ');
        s.push_str(&i.sources.to_string());
        s.push('\n');
    }
    s
}

pub fn decode_page(s: &str) -> Page {
    let mut lines = s.lines();
    let more = lines.next() == Some("more");
    let items = lines
        .filter_map(|line| {
            let mut parts = line.split(' ');
            Some(PageItem {
                item_id: parts.next()?.into(),
                score: parts.next()?.parse().ok()?,
                sources: parts.next()?.parse().ok()?,
            })
        })
        .collect();
    Page { items, more }
}

/// The embedded store's sessions: bounded, each expiring `ttl` after its last page.
pub struct MemorySessions {
    sessions: Cache<(String, String), Arc<Pages>>,
}

impl MemorySessions {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            sessions: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }
}

#[async_trait]
impl FeedSessions for MemorySessions {
    async fn pages(&self, tenant: &str, session: &str) -> Result<Pages, StoreError> {
        Ok(self
            .sessions
            .get(&(tenant.to_owned(), session.to_owned()))
            .map(|p| (*p).clone())
            .unwrap_or_default())
    }

    async fn put_page(
        &self,
        tenant: &str,
        session: &str,
        number: u32,
        page: &Page,
        _: Duration,
    ) -> Result<(), StoreError> {
        let key = (tenant.to_owned(), session.to_owned());
        let mut pages = self
            .sessions
            .get(&key)
            .map(|p| (*p).clone())
            .unwrap_or_default();
        pages.insert(number, page.clone());
        self.sessions.insert(key, Arc::new(pages));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_survives_its_encoding() {
        let items = vec![
            PageItem {
                item_id: "i1".into(),
                score: 0.25,
                sources: 3,
            },
            PageItem {
                item_id: "i-2".into(),
                score: -1.5e-3,
                sources: 1,
            },
        ];
        for more in [true, false] {
            let page = Page {
                items: items.clone(),
                more,
            };
            assert_eq!(decode_page(&encode_page(&page)), page);
        }
    }
}
