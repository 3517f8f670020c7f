//! Candidate generation: which store lists to ask for (the plan), and how to merge what comes
//! back into one deduplicated, capped list in which every item remembers its sources.

use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::Arc;

use crate::FastMap;

use serde::Serialize;

use crate::config::CandidateLimits;
use crate::domain::{ItemId, ItemRecord, UserProfile};
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

/// A record as a map key: its id, hashed by the id's precomputed key.
pub struct RecordId<'a>(&'a ItemRecord);

impl Hash for RecordId<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.derived().id_key);
    }
}

impl PartialEq for RecordId<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.item.item_id == other.0.item.item_id
    }
}

impl Eq for RecordId<'_> {}

/// What a candidate list holds: ids, or the items' records.
pub trait Listed {
    /// What the merge dedups by.
    type Key<'a>: Hash + Eq
    where
        Self: 'a;
    fn key(&self) -> Self::Key<'_>;
    fn candidate(&self, sources: Sources) -> Candidate;
}

/// Ids from different lists are different strings: deduped by their text.
impl Listed for ItemId {
    type Key<'a> = &'a str;
    fn key(&self) -> &str {
        self
    }
    fn candidate(&self, sources: Sources) -> Candidate {
        Candidate {
            item_id: self.clone(),
            sources,
            record: None,
        }
    }
}

/// Records are deduped by their id too, but hashed by the key computed once per record
/// ([`ItemRecord::derived`]): no string is hashed per feed, and one is compared only for an
/// item listed twice.
impl Listed for Arc<ItemRecord> {
    type Key<'a> = RecordId<'a>;
    fn key(&self) -> RecordId<'_> {
        RecordId(self)
    }
    fn candidate(&self, sources: Sources) -> Candidate {
        Candidate {
            item_id: self.item.item_id.clone(),
            sources,
            record: Some(self.clone()),
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
    let mut sourced: Vec<(Source, Vec<T>)> = Vec::with_capacity(2 + lists.categories.len());
    sourced.push((Source::Trending, lists.trending));
    sourced.extend(lists.categories.into_iter().map(|l| (Source::Affinity, l)));
    sourced.push((Source::NewArrivals, lists.new_arrivals));

    let longest = sourced.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    let total: usize = sourced.iter().map(|(_, l)| l.len()).sum();
    let mut out: Vec<Candidate> = Vec::with_capacity(max.min(total));
    // Keyed by the lists' own entries: one lookup per listed item, and a reference count
    // touched only for the items kept.
    let mut position: FastMap<T::Key<'_>, usize> =
        FastMap::with_capacity_and_hasher(max.min(total), Default::default());

    for i in 0..longest {
        for (source, list) in &sourced {
            let Some(listed) = list.get(i) else { continue };
            let next = out.len();
            match position.entry(listed.key()) {
                Entry::Occupied(at) => out[*at.get()].sources.insert(*source),
                Entry::Vacant(slot) if next < max => {
                    slot.insert(next);
                    let mut sources = Sources::default();
                    sources.insert(*source);
                    out.push(listed.candidate(sources));
                }
                Entry::Vacant(_) => {}
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
