//! The embedded store's candidate lists: sorted once, then shared by every feed of the tenant.
//!
//! They list catalog slots, resolved to the current records by each feed: availability,
//! price and attribute changes need nothing. Events (statistics) and catalog writes that
//! change a list's members (a new item, a category or listing date changed) make them stale:
//! stale lists are served until `list_ttl` after they were built (the bound the Redis
//! backend's list cache has), then rebuilt outside the tenant's lock — on a blocking thread,
//! claimed by one reader — while every feed goes on with the stale ones. Without that, every
//! event batch or new item made the next feed sort the whole catalog three times under the
//! write lock (~120 ms at 200 000 items, for every feed of the tenant).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::domain::ItemRecord;

/// The lists, of catalog slots (an item's slot never changes, and items are never removed,
/// so a stale index's slots are all still there): a feed resolves them to the records as
/// they are now, so an index only has to be rebuilt when an order or a list's members change
/// — events (statistics), new items, a category or listing date changed — and never for
/// availability, prices or attributes. Holding no records, it also never makes an event's
/// copy-on-write copy one.
pub(super) struct CandidateIndex {
    pub(super) trending: Vec<u32>,
    pub(super) by_category: HashMap<String, Vec<u32>>,
    pub(super) newest: Vec<u32>,
}

impl CandidateIndex {
    /// Sorts `items` (the catalog's records, by slot).
    pub(super) fn build(items: &[Arc<ItemRecord>]) -> Self {
        let record = |slot: &u32| &items[*slot as usize];
        let mut all: Vec<u32> = (0..items.len() as u32).collect();
        // Ties go to the greater id, as Redis's ZREVRANGE orders them: both backends must
        // give the same lists for the same data.
        let by_id = |a: &u32, b: &u32| record(b).item.item_id.cmp(&record(a).item.item_id);

        // The epoch-relative score sorts like the decayed one, at any time.
        all.sort_by(|a, b| {
            record(b)
                .stats()
                .trending
                .total_cmp(&record(a).stats().trending)
                .then_with(|| by_id(a, b))
        });
        let trending = all.clone();

        all.sort_by(|a, b| {
            record(b)
                .stats()
                .popularity()
                .total_cmp(&record(a).stats().popularity())
                .then_with(|| by_id(a, b))
        });
        let mut by_category: HashMap<String, Vec<u32>> = HashMap::new();
        for slot in &all {
            by_category
                .entry(record(slot).item.category.clone())
                .or_default()
                .push(*slot);
        }

        all.sort_by(|a, b| {
            record(b)
                .item
                .created_at
                .cmp(&record(a).item.created_at)
                .then_with(|| by_id(a, b))
        });

        Self {
            trending,
            by_category,
            newest: all,
        }
    }
}

/// A tenant's index, what it was built from, and whether a rebuild is under way.
#[derive(Default)]
pub(super) struct IndexSlot {
    built: Option<Built>,
    /// Changes so far that may change a list's order or members: event batches (the lists
    /// sort by statistics) and member changes (new items, categories, listing dates).
    changes: u64,
    /// Held by the one reader rebuilding a stale index (shared so that its claim outlives
    /// the read lock it was taken under).
    rebuilding: Arc<AtomicBool>,
}

struct Built {
    index: Arc<CandidateIndex>,
    /// When its records were taken.
    at: Instant,
    /// [`IndexSlot::changes`] then.
    changes: u64,
}

/// What a reader does with the slot ([`IndexSlot::read`]).
pub(super) enum Read {
    /// Serve this index: current, stale for less than the TTL, or stale while another
    /// reader rebuilds it.
    Serve(Arc<CandidateIndex>),
    /// Stale past the TTL, and this reader holds the rebuild: build from the records as they
    /// are now, then [`IndexSlot::install`].
    Rebuild(Rebuild),
    /// None to serve (never built, or dropped by a change with no TTL): build it under the
    /// write lock ([`IndexSlot::get_or_build`]).
    Missing,
}

/// A claimed rebuild; dropping it (installed, thrown away or unwound) frees the claim.
pub(super) struct Rebuild {
    /// The index it replaces, served until the new one is installed.
    pub(super) stale: Arc<CandidateIndex>,
    claim: Arc<AtomicBool>,
    at: Instant,
    changes: u64,
}

impl Drop for Rebuild {
    fn drop(&mut self) {
        self.claim.store(false, Ordering::Release);
    }
}

impl IndexSlot {
    /// Under the read lock: serve, rebuild or build. With a `ttl` of 0 a stale index is
    /// never served. `now` is asked only of a stale index (a current one is served as is).
    pub(super) fn read(&self, now: impl FnOnce() -> Instant, ttl: Duration) -> Read {
        let Some(built) = &self.built else {
            return Read::Missing;
        };
        if built.changes == self.changes {
            return Read::Serve(built.index.clone());
        }
        let now = now();
        if now.saturating_duration_since(built.at) < ttl {
            return Read::Serve(built.index.clone());
        }
        match self
            .rebuilding
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Read::Rebuild(Rebuild {
                stale: built.index.clone(),
                claim: self.rebuilding.clone(),
                at: now,
                changes: self.changes,
            }),
            Err(_) => Read::Serve(built.index.clone()),
        }
    }

    /// Under the write lock: the rebuilt index, unless the slot holds one built from later
    /// records (then `false`, and the reader starts over: it will serve that one). A change
    /// made while it was sorting does not void it — it is still newer than the stale one,
    /// and stays stale, to be rebuilt again after the TTL: under a steady stream of catalog
    /// writes a rebuild always lands, where voiding it could starve the lists of new items.
    pub(super) fn install(&mut self, rebuild: Rebuild, index: Arc<CandidateIndex>) -> bool {
        if self
            .built
            .as_ref()
            .is_some_and(|b| b.changes > rebuild.changes)
        {
            return false;
        }
        self.built = Some(Built {
            index,
            at: rebuild.at,
            changes: rebuild.changes,
        });
        true
    }

    /// Under the write lock: the index, built from `records` if none is there (another
    /// reader may have built it while this one waited for the lock).
    pub(super) fn get_or_build(
        &mut self,
        records: &[Arc<ItemRecord>],
        now: Instant,
    ) -> Arc<CandidateIndex> {
        let changes = self.changes;
        let built = self.built.get_or_insert_with(|| Built {
            index: Arc::new(CandidateIndex::build(records)),
            at: now,
            changes,
        });
        built.index.clone()
    }

    /// An event batch is about to be applied, or a list's members changed (a new item, a
    /// category or listing date). With a `ttl` of 0 the index is dropped: the next read
    /// builds it at once (none serves a stale one).
    pub(super) fn changed(&mut self, ttl: Duration) {
        self.changes += 1;
        if ttl.is_zero() {
            self.built = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Item;

    fn records() -> Vec<Arc<ItemRecord>> {
        ["a", "b"]
            .map(|id| Arc::new(ItemRecord::new(Item::example(id), Default::default())))
            .to_vec()
    }

    fn serves(read: Read) -> Arc<CandidateIndex> {
        match read {
            Read::Serve(index) => index,
            Read::Rebuild(_) => panic!("expected an index to serve, got a rebuild"),
            Read::Missing => panic!("expected an index to serve, got none"),
        }
    }

    const TTL: Duration = Duration::from_secs(1);

    #[test]
    fn changes_leave_the_index_served_until_the_ttl_then_one_reader_rebuilds() {
        let t0 = Instant::now();
        let mut slot = IndexSlot::default();
        assert!(matches!(slot.read(|| t0, TTL), Read::Missing));
        let first = slot.get_or_build(&records(), t0);
        assert_eq!(first.trending.len(), 2);
        // Current: served however old.
        assert!(Arc::ptr_eq(
            &serves(slot.read(|| t0 + 10 * TTL, TTL)),
            &first
        ));

        // Stale since an event batch or a new item (built at t0): served until t0 + TTL.
        slot.changed(TTL);
        assert!(Arc::ptr_eq(
            &serves(slot.read(|| t0 + TTL / 2, TTL)),
            &first
        ));
        let Read::Rebuild(rebuild) = slot.read(|| t0 + TTL, TTL) else {
            panic!("a stale index past its TTL is rebuilt");
        };
        // While one reader rebuilds, the others serve the stale index.
        assert!(Arc::ptr_eq(
            &serves(slot.read(|| t0 + 2 * TTL, TTL)),
            &first
        ));
        let second = Arc::new(CandidateIndex::build(&records()));
        assert!(slot.install(rebuild, second.clone()));
        assert!(Arc::ptr_eq(
            &serves(slot.read(|| t0 + 3 * TTL, TTL)),
            &second
        ));
    }

    #[test]
    fn a_change_during_a_rebuild_leaves_the_rebuilt_index_stale_not_void() {
        let t0 = Instant::now();
        let mut slot = IndexSlot::default();
        let first = slot.get_or_build(&records(), t0);
        slot.changed(TTL);
        let Read::Rebuild(rebuild) = slot.read(|| t0 + TTL, TTL) else {
            panic!("a stale index past its TTL is rebuilt");
        };
        // A new item arrives while it sorts: the rebuild still lands (it is newer than the
        // index it replaces), and is stale itself until its TTL.
        slot.changed(TTL);
        let second = Arc::new(CandidateIndex::build(&records()));
        assert!(slot.install(rebuild, second.clone()));
        let served = serves(slot.read(|| t0 + TTL + TTL / 2, TTL));
        assert!(Arc::ptr_eq(&served, &second) && !Arc::ptr_eq(&served, &first));
        let Read::Rebuild(again) = slot.read(|| t0 + 2 * TTL, TTL) else {
            panic!("the change during the rebuild gets a rebuild of its own");
        };
        // An older rebuild never replaces a newer index.
        let third = Arc::new(CandidateIndex::build(&records()));
        assert!(slot.install(again, third.clone()));
        let stale = Rebuild {
            stale: first.clone(),
            claim: Arc::new(AtomicBool::new(true)),
            at: t0,
            changes: 1,
        };
        assert!(!slot.install(stale, first));
        assert!(Arc::ptr_eq(
            &serves(slot.read(|| t0 + 5 * TTL, TTL)),
            &third
        ));
    }

    #[test]
    fn with_no_ttl_a_change_drops_the_index() {
        let t0 = Instant::now();
        let mut slot = IndexSlot::default();
        slot.get_or_build(&records(), t0);
        slot.changed(Duration::ZERO);
        assert!(matches!(slot.read(|| t0, Duration::ZERO), Read::Missing));
    }
}
