//! Candidate generation: which store lists to ask for (the plan), and how to merge what comes
//! back into one deduplicated, capped list in which every item remembers its sources.

use std::sync::Arc;

use hashbrown::HashTable;

use serde::Serialize;

use crate::config::CandidateLimits;
use crate::domain::{ItemId, ItemRecord, UserProfile, key_hash};
use crate::store::{CandidateLists, CandidateQuery};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Trending,
    Affinity,
    NewArrivals,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Trending, Source::Affinity, Source::NewArrivals];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Trending => "trending",
            Source::Affinity => "affinity",
            Source::NewArrivals => "new_arrivals",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Source`]s, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources(u8);

impl Sources {
    pub fn insert(&mut self, s: Source) {
        self.0 |= s.bit();
    }

    pub fn contains(self, s: Source) -> bool {
        self.0 & s.bit() != 0
    }

    /// The bits, as a feed session stores them.
    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> Self {
        Self(bits & ((1 << Source::ALL.len()) - 1))
    }

    pub fn iter(self) -> impl Iterator<Item = Source> {
        Source::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl Serialize for Sources {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// In the API: the array of the sources' names.
impl utoipa::PartialSchema for Sources {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(Source::ALL.map(Source::as_str))),
            )
            .unique_items(true)
            .description(Some("The candidate sources that proposed the item."))
            .into()
    }
}

impl utoipa::ToSchema for Sources {}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub item_id: ItemId,
    pub sources: Sources,
    /// Its record, when the lists brought it (the embedded store); `None`: read by id.
    pub record: Option<Arc<ItemRecord>>,
}

/// What a candidate list holds: ids, or the items' records.
pub trait Listed {
    /// What the merge dedups by: the item id.
    fn id(&self) -> &ItemId;
    /// The id's [`key_hash`].
    fn key(&self) -> u64;
    /// Moved into its candidate: no reference count is touched for an item kept.
    fn into_candidate(self, sources: Sources) -> Candidate;
}

/// Ids are hashed per listing.
impl Listed for ItemId {
    fn id(&self) -> &ItemId {
        self
    }
    fn key(&self) -> u64 {
        key_hash(self)
    }
    fn into_candidate(self, sources: Sources) -> Candidate {
        Candidate {
            item_id: self,
            sources,
            record: None,
        }
    }
}

/// Records are hashed by the key computed once per record ([`ItemRecord::derived`]): no
/// string is hashed per feed.
impl Listed for Arc<ItemRecord> {
    fn id(&self) -> &ItemId {
        &self.item.item_id
    }
    fn key(&self) -> u64 {
        self.derived().id_key
    }
    fn into_candidate(self, sources: Sources) -> Candidate {
        Candidate {
            item_id: self.item.item_id.clone(),
            sources,
            record: Some(self),
        }
    }
}

/// The store lists to read for this user. A user without history (cold start) gets
/// trending and new arrivals only.
pub fn plan(limits: &CandidateLimits, user: Option<&UserProfile>) -> CandidateQuery {
    let categories = user
        .map(|u| u.top_categories(limits.affinity_categories))
        .unwrap_or_default();
    let per_category = if categories.is_empty() {
        0
    } else {
        limits.affinity.div_ceil(categories.len())
    };
    CandidateQuery {
        trending: limits.trending,
        categories: categories
            .into_iter()
            .map(|c| (c.to_owned(), per_category))
            .collect(),
        new_arrivals: limits.new_arrivals,
    }
}

/// Interleaves the lists round-robin (so that no source starves the others under the cap),
/// keeps the first occurrence of each item and records every source that proposed it.
pub fn merge<T: Listed>(lists: CandidateLists<T>, max: usize) -> Vec<Candidate> {
    let mut sourced: Vec<(Source, std::vec::IntoIter<T>)> =
        Vec::with_capacity(2 + lists.categories.len());
    sourced.push((Source::Trending, lists.trending.into_iter()));
    sourced.extend(
        lists
            .categories
            .into_iter()
            .map(|l| (Source::Affinity, l.into_iter())),
    );
    sourced.push((Source::NewArrivals, lists.new_arrivals.into_iter()));

    let longest = sourced.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    let total: usize = sourced.iter().map(|(_, l)| l.len()).sum();
    let kept = max.min(total);
    let mut out: Vec<Candidate> = Vec::with_capacity(kept);
    // (id key, position in `out`) of every item kept: the key is the hash, and an id is
    // compared only when two keys are equal (the same item, or a 64-bit collision). At most
    // `kept` entries, so the table never grows.
    let mut position: HashTable<(u64, u32)> = HashTable::with_capacity(kept);

    for _ in 0..longest {
        for (source, list) in &mut sourced {
            let Some(listed) = list.next() else { continue };
            let key = listed.key();
            let same = |&(k, at): &(u64, u32)| {
                let kept = &out[at as usize].item_id;
                k == key && (Arc::ptr_eq(kept, listed.id()) || kept == listed.id())
            };
            match position.find(key, same) {
                Some(&(_, at)) => out[at as usize].sources.insert(*source),
                None if out.len() < max => {
                    position.insert_unique(key, (key, out.len() as u32), |&(k, _)| k);
                    let mut sources = Sources::default();
                    sources.insert(*source);
                    out.push(listed.into_candidate(sources));
                }
                None => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, Item};

    fn ids(v: &[&str]) -> Vec<ItemId> {
        v.iter().map(|s| ItemId::from(*s)).collect()
    }

    #[test]
    fn merge_dedups_caps_and_keeps_sources() {
        let lists = CandidateLists {
            trending: ids(&["a", "b", "c"]),
            categories: vec![ids(&["b", "d"])],
            new_arrivals: ids(&["e", "a"]),
        };
        let merged = merge(lists.clone(), 10);
        let got: Vec<&str> = merged.iter().map(|c| &*c.item_id).collect();
        assert_eq!(got, ["a", "b", "e", "d", "c"]);
        let a = &merged[0];
        assert!(a.sources.contains(Source::Trending) && a.sources.contains(Source::NewArrivals));
        assert!(!a.sources.contains(Source::Affinity));
        assert_eq!(
            serde_json::to_value(merged[1].sources).unwrap(),
            serde_json::json!(["trending", "affinity"])
        );

        let capped = merge(lists, 3);
        assert_eq!(capped.len(), 3);
    }

    /// Lists of records merge as lists of their ids do, and the candidates carry the records.
    #[test]
    fn records_merge_as_their_ids() {
        use crate::domain::ItemStats;
        let record = |id: &str| Arc::new(ItemRecord::new(Item::example(id), ItemStats::default()));
        let [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(record);
        // An item's record in two lists need not be one allocation (a cache may have
        // refreshed it between the lists' fills): "a" is listed twice as two records.
        let records = CandidateLists {
            trending: vec![a.clone(), b.clone(), c.clone()],
            categories: vec![vec![b.clone(), d.clone()]],
            new_arrivals: vec![e.clone(), record("a")],
        };
        let ids = CandidateLists {
            trending: ids(&["a", "b", "c"]),
            categories: vec![ids(&["b", "d"])],
            new_arrivals: ids(&["e", "a"]),
        };
        for max in [10, 3] {
            let from_records = merge(records.clone(), max);
            let from_ids = merge(ids.clone(), max);
            let key = |c: &Candidate| (c.item_id.clone(), c.sources);
            assert_eq!(
                from_records.iter().map(key).collect::<Vec<_>>(),
                from_ids.iter().map(key).collect::<Vec<_>>()
            );
            for c in &from_records {
                assert_eq!(c.record.as_ref().unwrap().item.item_id, c.item_id);
            }
        }
    }

    #[test]
    fn cold_start_plans_without_affinity() {
        let limits = CandidateLimits {
            max_candidates: 50,
            trending: 30,
            affinity: 20,
            affinity_categories: 2,
            new_arrivals: 10,
        };
        let q = plan(&limits, None);
        assert!(q.categories.is_empty());
        assert_eq!((q.trending, q.new_arrivals), (30, 10));

        let mut user = UserProfile::default();
        for (id, cat) in [("1", "x"), ("2", "y"), ("3", "y"), ("4", "z")] {
            let item = Item {
                category: cat.into(),
                ..Item::example(id)
            };
            user.record(EventKind::Click, &item, 0.0);
        }
        let q = plan(&limits, Some(&user));
        assert_eq!(
            q.categories,
            vec![("y".to_string(), 10), ("x".to_string(), 10)]
        );
    }
}
