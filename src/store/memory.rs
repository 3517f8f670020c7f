//! The embedded store: everything in process memory, per tenant. It is the default backend
//! (no Redis needed), the demo's home, and the reference the other backends must match.

mod index;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::FastMap;

use async_trait::async_trait;

use moka::sync::Cache;

use super::{
    ApplyOutcome, CandidateLists, CandidateQuery, Dedup, FeatureStore, StoreError, TenantUsage,
    Usage,
};
use crate::domain::budget::{Budget, Component, room};
use index::{CandidateIndex, IndexSlot, Read, Rebuild};

use crate::domain::{
    Event, Item, ItemId, ItemPatch, ItemRecord, Profile, Touched, UserProfile, table_bytes,
};

#[derive(Default)]
struct TenantState {
    budget: Budget,
    catalog: Catalog,
    /// Profiles over the catalog's slots and interned names: an item or a name mentioned is
    /// 4 bytes, not a 16-byte shared id, and most of a profile is such mentions. Readers get
    /// them resolved ([`Catalog::resolve`]).
    users: FastMap<Box<str>, Profile<u32, u32>>,
    /// What the users hold beside their table (ids and `Profile::heap_bytes`), kept as events
    /// change them: the usage reporter reads it rather than walking every profile under the
    /// read lock each round.
    users_held: usize,
    /// Sorted candidate lists: stale after events and changes of a list's members
    /// (`index.rs`).
    index: IndexSlot,
}

/// A tenant's items, each at a slot that never changes (items are updated, never removed),
/// and its category and brand names, interned.
#[derive(Default)]
struct Catalog {
    slots: FastMap<ItemId, u32>,
    records: Vec<Arc<ItemRecord>>,
    /// Per slot: its category's and its brand's interned name.
    names_of: Vec<(u32, u32)>,
    names: Vec<Arc<str>>,
    name_ids: FastMap<Arc<str>, u32>,
    /// What the records hold (`ItemRecord::approx_bytes`), kept as they are put: a record's
    /// estimate is fixed when it is built (events change its statistics in place), so the
    /// usage reporter reads this rather than visiting every record under the read lock each
    /// round (~7 ms a round for 200 000 items and 100 000 users, with the users' walk).
    held: usize,
}

impl Catalog {
    fn get(&self, id: &str) -> Option<&Arc<ItemRecord>> {
        self.slots.get(id).map(|s| &self.records[*s as usize])
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.name_ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.name_ids.insert(name, id);
        id
    }

    /// Stores `item` at its slot (a new one for a new item) with the statistics it has. A new
    /// record, never an edit: rankers may hold the old one (see `ItemRecord`). Returns whether
    /// a candidate list's members change: a new item, or a new category or listing date.
    fn put(&mut self, item: Item) -> bool {
        let names = (self.intern(&item.category), self.intern(&item.brand));
        match self.slots.get(&item.item_id) {
            Some(&slot) => {
                let slot = slot as usize;
                let old = &self.records[slot];
                let moved =
                    old.item.category != item.category || old.item.created_at != item.created_at;
                let stats = old.stats().clone();
                self.held -= old.approx_bytes();
                let record = ItemRecord::new(item, stats);
                self.held += record.approx_bytes();
                self.records[slot] = Arc::new(record);
                self.names_of[slot] = names;
                moved
            }
            None => {
                self.slots
                    .insert(item.item_id.clone(), self.records.len() as u32);
                let record = ItemRecord::new(item, Default::default());
                self.held += record.approx_bytes();
                self.records.push(Arc::new(record));
                self.names_of.push(names);
                true
            }
        }
    }

    /// A stored profile as readers see it: slots and names resolved.
    fn resolve(&self, profile: &Profile<u32, u32>) -> UserProfile {
        profile.map(
            |slot| self.records[*slot as usize].item.item_id.clone(),
            // The id's hash, computed once per record: what a served history holds.
            |slot| self.records[*slot as usize].derived().id_key,
            |name| self.names[*name as usize].clone(),
        )
    }

    fn usage(&self) -> Usage {
        use std::mem::size_of;
        let names: usize = self.names.iter().map(|n| 16 + n.len()).sum();
        Usage {
            entries: self.records.len() as u64,
            bytes: (table_bytes(self.slots.capacity(), size_of::<(ItemId, u32)>())
                + self.records.capacity() * size_of::<Arc<ItemRecord>>()
                + self.names_of.capacity() * size_of::<(u32, u32)>()
                + table_bytes(self.name_ids.capacity(), size_of::<(Arc<str>, u32)>())
                + self.names.capacity() * size_of::<Arc<str>>()
                + names
                + self.held) as u64,
        }
    }
}

pub struct MemoryStore {
    /// Shared, so that an index rebuild on a blocking thread can install its result.
    tenants: HashMap<String, Arc<RwLock<TenantState>>>,
    /// (tenant, event id) applied within the dedup window; checked and filled under the
    /// tenant's write lock, so an id is applied once however many callers race.
    seen: Cache<(String, Arc<str>), ()>,
    /// How long lists that events or new items made stale are still served
    /// (`cache.list_ttl_ms`).
    list_ttl: Duration,
}

impl MemoryStore {
    /// A store for exactly these tenants; others are rejected as unknown.
    pub fn new<I: IntoIterator<Item = String>>(tenants: I) -> Self {
        Self::with_dedup(tenants, Dedup::default())
    }

    pub fn with_dedup<I: IntoIterator<Item = String>>(tenants: I, dedup: Dedup) -> Self {
        Self {
            tenants: tenants
                .into_iter()
                .map(|t| (t, Arc::new(RwLock::new(TenantState::default()))))
                .collect(),
            seen: Cache::builder()
                .max_capacity(dedup.capacity)
                .time_to_live(dedup.window)
                .build(),
            list_ttl: Duration::ZERO,
        }
    }

    /// Lists that events or catalog writes made stale (new items, categories or listing
    /// dates changed) are served for up to `ttl` after they were built (as a Redis-backed
    /// replica's list cache is), then rebuilt off the request path; 0 (the default): rebuilt
    /// by the next read, under the tenant's write lock.
    pub fn with_list_ttl(mut self, ttl: Duration) -> Self {
        self.list_ttl = ttl;
        self
    }

    /// Bounds each listed tenant's items and users by its budget (others: unlimited).
    pub fn with_budgets<'a>(self, budgets: impl IntoIterator<Item = (&'a str, Budget)>) -> Self {
        for (tenant, budget) in budgets {
            if let Some(state) = self.tenants.get(tenant) {
                write(state).budget = budget;
            }
        }
        self
    }

    fn tenant(&self, tenant: &str) -> Result<&Arc<RwLock<TenantState>>, StoreError> {
        self.tenants
            .get(tenant)
            .ok_or_else(|| StoreError::UnknownTenant(tenant.to_owned()))
    }

    /// The lists a query asks for, from the index (built first if there is none), each slot
    /// resolved to its record as it is now.
    fn lists(
        &self,
        tenant: &str,
        query: &CandidateQuery,
    ) -> Result<CandidateLists<Arc<ItemRecord>>, StoreError> {
        let lock = self.tenant(tenant)?;
        let index = self.index(lock);
        let state = read(lock);
        let records = &state.catalog.records;
        let head = |list: &[u32], n: usize| -> Vec<Arc<ItemRecord>> {
            list[..n.min(list.len())]
                .iter()
                .map(|slot| records[*slot as usize].clone())
                .collect()
        };
        Ok(CandidateLists {
            trending: head(&index.trending, query.trending),
            categories: query
                .categories
                .iter()
                .map(|(c, n)| {
                    index
                        .by_category
                        .get(c)
                        .map_or_else(Vec::new, |l| head(l, *n))
                })
                .collect(),
            new_arrivals: head(&index.newest, query.new_arrivals),
        })
    }

    fn index(&self, lock: &Arc<RwLock<TenantState>>) -> Arc<CandidateIndex> {
        loop {
            let (rebuild, records) = {
                let state = read(lock);
                match state.index.read(Instant::now, self.list_ttl) {
                    Read::Serve(index) => return index,
                    Read::Rebuild(rebuild) => (rebuild, state.catalog.records.clone()),
                    Read::Missing => break,
                }
            };
            // Sorted with no lock held: events and other feeds go on meanwhile. With a runtime
            // (serving), on a blocking thread, and this feed serves the stale index: no feed
            // waits for a sort (hundreds of milliseconds for a large catalog).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let stale = rebuild.stale.clone();
                let lock = lock.clone();
                runtime.spawn_blocking(move || rebuild_index(&lock, rebuild, records));
                return stale;
            }
            if let Some(index) = rebuild_index(lock, rebuild, records) {
                return index;
            }
        }
        let mut state = write(lock);
        let TenantState { catalog, index, .. } = &mut *state;
        index.get_or_build(&catalog.records, Instant::now())
    }
}

/// Sorts `records` (taken when `rebuild` was claimed) and installs the index, unless one built
/// from later records was installed meanwhile (then `None`: the caller starts over).
fn rebuild_index(
    lock: &RwLock<TenantState>,
    rebuild: Rebuild,
    records: Vec<Arc<ItemRecord>>,
) -> Option<Arc<CandidateIndex>> {
    let index = Arc::new(CandidateIndex::build(&records));
    // The snapshot's hold on the records ends before the write lock is taken.
    drop(records);
    write(lock)
        .index
        .install(rebuild, index.clone())
        .then_some(index)
}

// A poisoned lock means a writer panicked mid-update; the maps themselves stay structurally
// valid (every write replaces whole entries), so serving on is better than failing forever.
fn read(lock: &RwLock<TenantState>) -> std::sync::RwLockReadGuard<'_, TenantState> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write(lock: &RwLock<TenantState>) -> std::sync::RwLockWriteGuard<'_, TenantState> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl FeatureStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn user_profile(
        &self,
        tenant: &str,
        user_id: &str,
    ) -> Result<Option<Arc<UserProfile>>, StoreError> {
        let state = read(self.tenant(tenant)?);
        Ok(state
            .users
            .get(user_id)
            .map(|p| Arc::new(state.catalog.resolve(p))))
    }

    async fn candidate_lists(
        &self,
        tenant: &str,
        query: &CandidateQuery,
    ) -> Result<CandidateLists, StoreError> {
        Ok(self
            .lists(tenant, query)?
            .map(|list| list.iter().map(|r| r.item.item_id.clone()).collect()))
    }

    async fn candidate_records(
        &self,
        tenant: &str,
        query: &CandidateQuery,
    ) -> Result<Option<CandidateLists<Arc<ItemRecord>>>, StoreError> {
        self.lists(tenant, query).map(Some)
    }

    async fn items(
        &self,
        tenant: &str,
        ids: &[ItemId],
    ) -> Result<Vec<Option<Arc<ItemRecord>>>, StoreError> {
        let state = read(self.tenant(tenant)?);
        Ok(ids
            .iter()
            .map(|id| state.catalog.get(id).cloned())
            .collect())
    }

    async fn upsert_items(&self, tenant: &str, items: Vec<Item>) -> Result<(), StoreError> {
        let mut state = write(self.tenant(tenant)?);
        let limit = state.budget.limit(Component::Items);
        if limit.is_some() {
            let new: crate::FastSet<&str> = items
                .iter()
                .map(|i| &*i.item_id)
                .filter(|id| state.catalog.get(id).is_none())
                .collect();
            if new.len() > room(limit, state.catalog.len()) {
                return Err(StoreError::QuotaExceeded {
                    tenant: tenant.to_owned(),
                    component: Component::Items,
                    limit: limit.unwrap_or_default(),
                    held: state.catalog.len(),
                    adding: new.len(),
                });
            }
        }
        let mut moved = false;
        for item in items {
            moved |= state.catalog.put(item);
        }
        if moved {
            state.index.changed(self.list_ttl);
        }
        Ok(())
    }

    async fn patch_item(
        &self,
        tenant: &str,
        item_id: &str,
        patch: &ItemPatch,
    ) -> Result<Option<Item>, StoreError> {
        let mut state = write(self.tenant(tenant)?);
        let Some(record) = state.catalog.get(item_id) else {
            return Ok(None);
        };
        let mut item = record.item.clone();
        patch.apply(&mut item);
        // A patch changes no list's members (availability, price, attributes): the lists
        // resolve to the new record.
        state.catalog.put(item.clone());
        Ok(Some(item))
    }

    async fn apply_events(
        &self,
        tenant: &str,
        events: &[Event],
    ) -> Result<ApplyOutcome, StoreError> {
        let mut state = write(self.tenant(tenant)?);
        let TenantState {
            budget,
            catalog,
            users,
            users_held,
            index,
        } = &mut *state;
        let user_limit = budget.limit(Component::Users);
        index.changed(self.list_ttl);
        let mut outcome = ApplyOutcome::default();
        // The profile of the previous event's user: a batch often holds runs of one user's
        // events (a session; demo seeding, user by user), and each lookup hashes the id.
        let mut current: Option<(&str, &mut Profile<u32, u32>)> = None;
        // Every item looked up first: independent lookups, whose cache misses the CPU
        // overlaps, where one per event ahead of its updates waits for each in turn.
        let slots: Vec<Option<u32>> = events
            .iter()
            .map(|e| catalog.slots.get(&e.item_id).copied())
            .collect();
        for (i, (event, slot)) in events.iter().zip(slots).enumerate() {
            let Some(slot) = slot else {
                outcome.unknown_items.push(i);
                continue;
            };
            let same_user = matches!(&current, Some((id, _)) if *id == event.user_id);
            if !same_user {
                current = None;
                // Checked before the dedup: a refused event may be sent again once there is
                // room.
                if room(user_limit, users.len()) == 0 && !users.contains_key(&*event.user_id) {
                    outcome.over_budget.push(i);
                    continue;
                }
            }
            if let Some(id) = &event.event_id {
                let key = (tenant.to_owned(), id.clone());
                if self.seen.contains_key(&key) {
                    outcome.duplicates.push(i);
                    continue;
                }
                self.seen.insert(key, ());
            }
            // Copy-on-write: readers holding the old Arc keep a consistent record.
            let record = Arc::make_mut(&mut catalog.records[slot as usize]);
            record.stats_mut().record(event.kind, event.timestamp);
            let (category, brand) = &catalog.names_of[slot as usize];
            let touched = Touched {
                item: &slot,
                category,
                brand,
                price: record.item.price,
            };
            if current.is_none() {
                if !users.contains_key(&*event.user_id) {
                    users.insert(event.user_id.as_str().into(), Profile::default());
                    *users_held += event.user_id.len();
                }
                current = users
                    .get_mut(&*event.user_id)
                    .map(|profile| (event.user_id.as_str(), profile));
            }
            let Some((_, profile)) = &mut current else {
                unreachable!("the profile was looked up or added above")
            };
            let before = profile.heap_bytes();
            profile.record_touch(event.kind, touched, event.timestamp);
            *users_held = *users_held + profile.heap_bytes() - before;
        }
        Ok(outcome)
    }

    async fn usage(&self, tenant: &str) -> Result<TenantUsage, StoreError> {
        let state = read(self.tenant(tenant)?);
        Ok(TenantUsage {
            items: state.catalog.usage(),
            users: Usage {
                entries: state.users.len() as u64,
                bytes: (table_bytes(
                    state.users.capacity(),
                    std::mem::size_of::<(Box<str>, Profile<u32, u32>)>(),
                ) + state.users_held) as u64,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;

    fn item(id: &str, category: &str, created_at: i64) -> Item {
        Item {
            item_id: id.into(),
            category: category.into(),
            brand: "b".into(),
            price: 5.0,
            created_at,
            attributes: Default::default(),
            available: true,
            seller_id: None,
        }
    }

    fn event(kind: EventKind, user: &str, item: &str) -> Event {
        Event {
            event_id: None,
            kind,
            user_id: user.into(),
            item_id: item.into(),
            timestamp: crate::domain::unix_now(),
        }
    }

    /// The usage reporter's totals, kept as items are put and events applied, equal what a
    /// walk over every record and profile counts: through new items, items replaced by
    /// longer and shorter ones, new users, and histories that grow past their bounds.
    #[actix_rt::test]
    async fn kept_usage_totals_equal_a_full_count() {
        let store = MemoryStore::new(["t".to_string()]);
        let recount = |store: &MemoryStore| {
            let state = read(store.tenant("t").unwrap());
            let items: usize = state.catalog.records.iter().map(|r| r.approx_bytes()).sum();
            let users: usize = state
                .users
                .iter()
                .map(|(id, p)| id.len() + p.heap_bytes())
                .sum();
            assert_eq!((state.catalog.held, state.users_held), (items, users));
            (items, users)
        };
        let kinds = [
            EventKind::Impression,
            EventKind::Impression,
            EventKind::Click,
            EventKind::AddToCart,
            EventKind::Purchase,
        ];
        let mut seen = Vec::new();
        for round in 0..6_usize {
            let items: Vec<Item> = (0..40)
                .map(|n| {
                    let mut i = item(&format!("i{n}"), &"c".repeat(1 + (n + round) % 7), 1);
                    i.brand = "b".repeat(round % 3);
                    if (n + round) % 4 == 0 {
                        i.attributes
                            .insert("size".into(), serde_json::json!([40, round]));
                        i.seller_id = Some(format!("s{round}"));
                    }
                    i
                })
                .collect();
            store.upsert_items("t", items).await.unwrap();
            let events: Vec<Event> = (0..600)
                .map(|n| {
                    let user = format!("user-{}", (n * 7 + round) % (13 + round * 5));
                    let kind = kinds[(n + round) % kinds.len()];
                    let mut e = event(kind, &user, &format!("i{}", (n * 11 + round) % 40));
                    e.timestamp += (round * 600 + n) as f64;
                    e
                })
                .collect();
            store.apply_events("t", &events).await.unwrap();
            seen.push(recount(&store));
        }
        // Totals that moved both ways across the rounds (not a constant equal by chance).
        assert!(
            seen.windows(2).any(|w| w[1].0 < w[0].0) && seen.windows(2).any(|w| w[1].0 > w[0].0)
        );
        assert!(seen.last().unwrap().1 > seen[0].1);
        let usage = store.usage("t").await.unwrap();
        assert_eq!(usage.users.entries, 13 + 5 * 5);
    }

    #[actix_rt::test]
    async fn lists_follow_events_and_upserts() {
        let store = MemoryStore::new(["t".to_string()]);
        store
            .upsert_items(
                "t",
                vec![item("a", "x", 1), item("b", "x", 3), item("c", "y", 2)],
            )
            .await
            .unwrap();
        let outcome = store
            .apply_events(
                "t",
                &[
                    event(EventKind::Purchase, "u", "c"),
                    event(EventKind::Click, "u", "a"),
                    event(EventKind::Click, "u", "nope"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(outcome.unknown_items, [2]);
        assert!(outcome.duplicates.is_empty());
        let q = CandidateQuery {
            trending: 2,
            categories: vec![("x".into(), 5), ("none".into(), 5)],
            new_arrivals: 1,
        };
        let lists = store.candidate_lists("t", &q).await.unwrap();
        let ids = |l: &[ItemId]| l.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&lists.trending), ["c", "a"]);
        // "b" has no engagement; ties go to the greater id.
        assert_eq!(ids(&lists.categories[0]), ["a", "b"]);
        assert!(lists.categories[1].is_empty());
        assert_eq!(ids(&lists.new_arrivals), ["b"]);

        // Upserting keeps statistics, and a new item becomes a candidate at once (no list TTL).
        store
            .upsert_items("t", vec![item("c", "y", 2), item("d", "y", 9)])
            .await
            .unwrap();
        let recs = store.items("t", &["c".into(), "zz".into()]).await.unwrap();
        assert_eq!(recs[0].as_ref().unwrap().stats().purchases, 1.0);
        assert!(recs[1].is_none());
        let lists = store.candidate_lists("t", &q).await.unwrap();
        assert_eq!(ids(&lists.new_arrivals), ["d"]);

        let profile = store.user_profile("t", "u").await.unwrap().unwrap();
        assert_eq!(profile.interactions, 2.0);
        assert!(store.user_profile("t", "other").await.unwrap().is_none());
        assert!(matches!(
            store.user_profile("nope", "u").await,
            Err(StoreError::UnknownTenant(_))
        ));
    }

    /// Tenant `t`'s lists as soon as `done` holds of them (read every 10 ms, for up to 2 s:
    /// stale lists are rebuilt on a blocking thread), or as they are then.
    async fn lists_once(
        store: &MemoryStore,
        q: &CandidateQuery,
        done: impl Fn(&CandidateLists<Arc<ItemRecord>>) -> bool,
    ) -> CandidateLists<Arc<ItemRecord>> {
        let mut lists = store.lists("t", q).unwrap();
        for _ in 0..200 {
            if done(&lists) {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
            lists = store.lists("t", q).unwrap();
        }
        lists
    }

    /// With a list TTL, events and new items show in the lists once the index is that old
    /// (feeds under event traffic or a catalog import share one index instead of each sorting
    /// the catalog again); a patch shows at once.
    #[actix_rt::test]
    async fn with_a_list_ttl_events_and_new_items_show_after_it_and_patches_at_once() {
        const TTL: Duration = Duration::from_millis(500);
        let store = MemoryStore::new(["t".to_string()]).with_list_ttl(TTL);
        store
            .upsert_items("t", vec![item("a", "x", 1), item("b", "x", 3)])
            .await
            .unwrap();
        let q = CandidateQuery {
            trending: 2,
            categories: Vec::new(),
            new_arrivals: 1,
        };
        let trending = |lists: CandidateLists<Arc<ItemRecord>>| -> Vec<String> {
            lists
                .trending
                .iter()
                .map(|r| r.item.item_id.to_string())
                .collect()
        };
        let built = Instant::now();
        // No engagement yet: ties go to the greater id.
        assert_eq!(trending(store.lists("t", &q).unwrap()), ["b", "a"]);
        let click = [event(EventKind::Click, "u", "a")];
        store.apply_events("t", &click).await.unwrap();
        let stale = store.lists("t", &q).unwrap();
        if built.elapsed() < TTL {
            assert_eq!(
                trending(stale),
                ["b", "a"],
                "within the TTL: the index as built"
            );
            // The item itself is read as it is now.
            let now = store.items("t", &["a".into()]).await.unwrap();
            assert_eq!(now[0].as_ref().unwrap().stats().clicks, 1.0);
        }
        actix_rt::time::sleep(TTL.saturating_sub(built.elapsed())).await;
        // The first read past the TTL starts the rebuild (on a blocking thread) and is served
        // the stale index; a later one the rebuilt.
        let rebuilt = trending(
            lists_once(&store, &q, |l| {
                l.trending.iter().map(|r| &*r.item.item_id).eq(["a", "b"])
            })
            .await,
        );
        assert_eq!(rebuilt, ["a", "b"], "after the TTL, rebuilt");

        let purchases = [
            event(EventKind::Purchase, "u", "b"),
            event(EventKind::Purchase, "v", "b"),
        ];
        store.apply_events("t", &purchases).await.unwrap();
        // A new item changes the lists' members: like an event, it shows within the TTL (a
        // bulk import must not make the next feed sort the catalog under the write lock).
        store
            .upsert_items("t", vec![item("c", "y", 9)])
            .await
            .unwrap();
        let newest = |lists: &CandidateLists<Arc<ItemRecord>>| {
            lists.new_arrivals[0].item.item_id.to_string()
        };
        let lists = lists_once(&store, &q, |l| newest(l) == "c").await;
        assert_eq!(newest(&lists), "c", "a new item: within the TTL");
        assert_eq!(trending(lists)[0], "b", "with the events before it");

        // A patch needs no rebuild: the lists keep their order and resolve to the new record.
        let unavailable = ItemPatch {
            available: Some(false),
            ..Default::default()
        };
        store.patch_item("t", "b", &unavailable).await.unwrap();
        let lists = store.lists("t", &q).unwrap();
        assert_eq!(lists.trending[0].item.item_id.to_string(), "b");
        assert!(
            !lists.trending[0].item.available,
            "the patched record, at once"
        );
    }

    #[actix_rt::test]
    async fn an_event_id_is_applied_once_per_tenant() {
        let store = MemoryStore::new(["t".to_string(), "s".to_string()]);
        for tenant in ["t", "s"] {
            store
                .upsert_items(tenant, vec![item("a", "x", 1)])
                .await
                .unwrap();
        }
        let click = Event {
            event_id: Some("e1".into()),
            ..event(EventKind::Click, "u", "a")
        };
        let batch = [click.clone(), click.clone()];
        let outcome = store.apply_events("t", &batch).await.unwrap();
        assert_eq!(outcome.duplicates, [1]);
        let again = store.apply_events("t", &batch).await.unwrap();
        assert_eq!(again.duplicates, [0, 1]);
        // Ids are the tenant's own: another shop may use the same.
        let other = store.apply_events("s", &batch[..1]).await.unwrap();
        assert_eq!(other.applied(1), 1);
        let rec = store.items("t", &["a".into()]).await.unwrap();
        assert_eq!(rec[0].as_ref().unwrap().stats().clicks, 1.0);
    }

    /// The store keeps profiles over interned slots and names; read back, they must be what
    /// `UserProfile::record` builds from the same events (two weeks of them: the history's
    /// horizon drops the oldest impressions on both sides).
    #[actix_rt::test]
    async fn stored_profiles_read_back_as_their_events_build_them() {
        let store = MemoryStore::new(["t".to_string()]);
        let items: Vec<Item> = (0..30)
            .map(|i| Item {
                brand: format!("b{}", i % 7),
                ..item(&format!("i{i}"), ["x", "y", "z"][i % 3], i as i64)
            })
            .collect();
        store.upsert_items("t", items.clone()).await.unwrap();
        let kinds = [
            EventKind::Impression,
            EventKind::Impression,
            EventKind::Impression,
            EventKind::Click,
            EventKind::AddToCart,
            EventKind::Purchase,
        ];
        let start = crate::domain::unix_now() - 20.0 * 86_400.0;
        let mut x = 7_u64;
        let events: Vec<Event> = (0..3_000)
            .map(|n| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                Event {
                    timestamp: start + f64::from(n) * 500.0,
                    ..event(
                        kinds[(x >> 50) as usize % kinds.len()],
                        &format!("u{}", (x >> 33) % 4),
                        &format!("i{}", (x >> 40) % 30),
                    )
                }
            })
            .collect();
        for chunk in events.chunks(700) {
            store.apply_events("t", chunk).await.unwrap();
        }
        let mut expected: HashMap<String, UserProfile> = HashMap::new();
        for e in &events {
            let item = items.iter().find(|i| i.item_id == e.item_id).unwrap();
            expected
                .entry(e.user_id.clone())
                .or_default()
                .record(e.kind, item, e.timestamp);
        }
        assert_eq!(expected.len(), 4);
        for (user, profile) in &expected {
            let stored = store.user_profile("t", user).await.unwrap().unwrap();
            assert_eq!(*stored, *profile, "{user}");
            assert!(!profile.history.seen().is_empty() && !profile.history.bought().is_empty());
        }
        // An item moved to another category is counted there from then on.
        let moved = Item {
            category: "w".into(),
            ..items[0].clone()
        };
        store.upsert_items("t", vec![moved]).await.unwrap();
        store
            .apply_events("t", &[event(EventKind::Click, "u0", "i0")])
            .await
            .unwrap();
        let p = store.user_profile("t", "u0").await.unwrap().unwrap();
        assert!(p.category_affinity.get("w").is_some());
        assert!(p.category_affinity.get("x").is_some());
    }
}
