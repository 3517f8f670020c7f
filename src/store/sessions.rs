//! Feed sessions: the pages a user was served through one chain of cursors, so that the next
//! page repeats none of them and the same cursor gives the same page again. Embedded: in
//! process, at most `feed.session_capacity` sessions; Redis: one hash per session
//! (`er:{t}:session:<id>`, a field per page), shared by every replica, expiring with the
//! session.

use std::collections::{BTreeMap, HashMap};
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

/// The embedded store's sessions: each expiring `ttl` after its last page, and bounded per
/// tenant — a tenant's traffic evicts its own oldest sessions, never another tenant's.
pub struct MemorySessions {
    sessions: HashMap<String, Cache<String, Arc<Pages>>>,
}

impl MemorySessions {
    /// At most `capacity` sessions for each of `tenants`.
    pub fn new<'a>(
        tenants: impl IntoIterator<Item = &'a String>,
        capacity: u64,
        ttl: Duration,
    ) -> Self {
        Self {
            sessions: tenants
                .into_iter()
                .map(|t| {
                    let cache = Cache::builder()
                        .max_capacity(capacity)
                        .time_to_live(ttl)
                        .build();
                    (t.clone(), cache)
                })
                .collect(),
        }
    }

    fn of(&self, tenant: &str) -> Result<&Cache<String, Arc<Pages>>, StoreError> {
        self.sessions
            .get(tenant)
            .ok_or_else(|| StoreError::UnknownTenant(tenant.to_owned()))
    }
}

#[async_trait]
impl FeedSessions for MemorySessions {
    async fn pages(&self, tenant: &str, session: &str) -> Result<Pages, StoreError> {
        Ok(self
            .of(tenant)?
            .get(session)
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
        let sessions = self.of(tenant)?;
        let mut pages = sessions
            .get(session)
            .map(|p| (*p).clone())
            .unwrap_or_default();
        pages.insert(number, page.clone());
        sessions.insert(session.to_owned(), Arc::new(pages));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_tenant_evicts_its_own_sessions_only() {
        let tenants = ["a".to_string(), "b".to_string()];
        let sessions = MemorySessions::new(&tenants, 10, Duration::from_secs(60));
        let page = Page::default();
        sessions
            .put_page("b", "b-0", 2, &page, Duration::ZERO)
            .await
            .unwrap();
        for n in 0..1_000 {
            sessions
                .put_page("a", &format!("a-{n}"), 2, &page, Duration::ZERO)
                .await
                .unwrap();
        }
        for cache in sessions.sessions.values() {
            cache.run_pending_tasks();
        }
        assert!(sessions.of("a").unwrap().entry_count() <= 10);
        assert_eq!(sessions.pages("b", "b-0").await.unwrap().len(), 1);
        assert!(sessions.pages("c", "x").await.is_err(), "an unknown tenant");
    }

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
