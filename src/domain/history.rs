//! What a user did with the items they saw: the purchases the purchase exclusion reads and
//! the impressions impression fatigue counts. Kept as a flat log, not a table per item: most
//! items are seen once, and an entry is two integers where the store interns its item ids.

use std::borrow::Borrow;
use std::hash::Hash;

use super::event::EventKind;
use super::rules::MAX_FATIGUE_HOURS;
use super::{HISTORY_IMPRESSIONS, HISTORY_ITEMS, UnixSeconds};

/// Impressions older than this before a user's newest one are dropped: no fatigue rule can
/// count them (`fatigue.window_hours` is at most [`MAX_FATIGUE_HOURS`]).
pub const HISTORY_HORIZON_SECONDS: u32 = MAX_FATIGUE_HOURS * 3_600;

/// One user's history, over item keys of type `I`: the embedded store's interned slots, or in
/// a served profile the ids' hashes (`ProfileItem`).
#[derive(Debug, Clone)]
pub struct History<I> {
    /// (Unix seconds, item) of each impression since that item's last click, cart or
    /// purchase, oldest first; none more than [`HISTORY_HORIZON_SECONDS`] before the newest,
    /// at most [`HISTORY_IMPRESSIONS`] per item and [`HISTORY_ITEMS`] in all.
    seen: Vec<(u32, I)>,
    /// Items bought, oldest purchase first; at most [`HISTORY_ITEMS`].
    bought: Vec<I>,
}

impl<I> Default for History<I> {
    fn default() -> Self {
        Self {
            seen: Vec::new(),
            bought: Vec::new(),
        }
    }
}

/// Equal when they remember the same: the order of impressions stamped the same second, and
/// of purchases, is not part of it (Redis keeps them in a hash).
impl<I: Ord + Clone> PartialEq for History<I> {
    fn eq(&self, other: &Self) -> bool {
        fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
            let mut v = v.to_vec();
            v.sort();
            v
        }
        sorted(&self.seen) == sorted(&other.seen) && sorted(&self.bought) == sorted(&other.bought)
    }
}

fn seconds(at: UnixSeconds) -> u32 {
    at.max(0.0) as u32
}

/// The comma-separated times of a stored history value; a malformed one is skipped. A byte
/// loop rather than `split` + `parse`: a Redis-backed feed decodes its user's every time, and
/// the searches for short separators showed in its profile.
fn impression_times(times: &str) -> impl Iterator<Item = u32> + '_ {
    times.as_bytes().split(|b| *b == b',').filter_map(|digits| {
        if digits.is_empty() {
            return None;
        }
        digits.iter().try_fold(0u32, |t, b| {
            let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
            t.checked_mul(10)?.checked_add(u32::from(d))
        })
    })
}

/// A history from what a store keeps per item — bought or not, the impression times since
/// its last engagement — in any order of items: ordered and bounded at [`Self::build`] as
/// [`History::record`] keeps its own.
pub struct HistoryBuilder<I>(History<I>);

impl<I> Default for HistoryBuilder<I> {
    fn default() -> Self {
        Self(History::default())
    }
}

impl<I: Clone + Eq> HistoryBuilder<I> {
    pub fn item(&mut self, item: I, purchased: bool, times: impl IntoIterator<Item = u32>) {
        for t in times {
            self.0.seen.push((t, item.clone()));
        }
        if purchased {
            self.0.bought.push(item);
        }
    }

    pub fn build(self) -> History<I> {
        let mut history = self.0;
        history.seen.sort_by_key(|(t, _)| *t);
        history.settle();
        let over = history.bought.len().saturating_sub(HISTORY_ITEMS);
        history.bought.drain(..over);
        history
    }
}

impl<I: Clone + Eq> History<I> {
    /// Applies one event, as the Redis store's Lua does (`store::redis::apply`).
    pub fn record(&mut self, kind: EventKind, item: &I, at: UnixSeconds) {
        match kind {
            EventKind::Impression => self.seen_at(item, seconds(at)),
            EventKind::Click | EventKind::AddToCart => self.seen.retain(|(_, i)| i != item),
            EventKind::Purchase => {
                self.seen.retain(|(_, i)| i != item);
                if !self.bought.contains(item) {
                    if self.bought.len() >= HISTORY_ITEMS {
                        self.bought.remove(0);
                    }
                    self.bought.push(item.clone());
                }
            }
        }
    }

    fn seen_at(&mut self, item: &I, t: u32) {
        let newest = self.seen.last().map_or(t, |(last, _)| t.max(*last));
        let floor = newest.saturating_sub(HISTORY_HORIZON_SECONDS);
        if t < floor {
            return;
        }
        let at = self.seen.partition_point(|(s, _)| *s <= t);
        if self.seen.len() == self.seen.capacity() {
            // A quarter more, not double: most of a profile's memory is this log, and a
            // user's log grows for days; the amortized cost of growing stays constant.
            self.seen.reserve_exact((self.seen.len() / 4).max(4));
        }
        self.seen.insert(at, (t, item.clone()));
        if self.seen.iter().filter(|(_, i)| i == item).count() > HISTORY_IMPRESSIONS {
            // The item's oldest impression goes (the log is in time order).
            if let Some(first) = self.seen.iter().position(|(_, i)| i == item) {
                self.seen.remove(first);
            }
        }
        self.settle();
    }

    /// The bounds, after the log changed: the horizon behind the newest impression, then the
    /// total.
    fn settle(&mut self) {
        let Some((newest, _)) = self.seen.last() else {
            return;
        };
        let floor = newest.saturating_sub(HISTORY_HORIZON_SECONDS);
        let stale = self.seen.partition_point(|(s, _)| *s < floor);
        let over = self.seen.len().saturating_sub(HISTORY_ITEMS);
        let drop = stale.max(over);
        if drop > 0 {
            self.seen.drain(..drop);
            // A burst of impressions leaves its capacity behind when it ages out.
            let len = self.seen.len();
            if self.seen.capacity() > len + len / 2 + 4 {
                self.seen.shrink_to(len + len / 4);
            }
        }
    }

    /// The history Redis kept as a hash: per item, `p` if bought, then impression times,
    /// comma-separated. Ordered and bounded as [`Self::record`] keeps its own.
    pub fn decode<S: AsRef<str>>(items: impl IntoIterator<Item = (I, S)>) -> Self {
        let mut history = HistoryBuilder::default();
        for (item, value) in items {
            let value = value.as_ref();
            let (purchased, times) = match value.strip_prefix('p') {
                Some(rest) => (true, rest),
                None => (false, value),
            };
            history.item(item, purchased, impression_times(times));
        }
        history.build()
    }

    /// The same history over other ids (the embedded store's slots resolved to item ids).
    pub fn map<J>(&self, mut f: impl FnMut(&I) -> J) -> History<J> {
        History {
            seen: self.seen.iter().map(|(t, i)| (*t, f(i))).collect(),
            bought: self.bought.iter().map(&mut f).collect(),
        }
    }

    /// Impressions since each item's last engagement, oldest first.
    pub fn seen(&self) -> &[(u32, I)] {
        &self.seen
    }

    /// Items bought, oldest purchase first.
    pub fn bought(&self) -> &[I] {
        &self.bought
    }

    pub fn purchased<Q: ?Sized + PartialEq>(&self, item: &Q) -> bool
    where
        I: Borrow<Q>,
    {
        self.bought.iter().any(|i| i.borrow() == item)
    }

    /// Impressions of `item` at or after `since` (Unix seconds) since its last engagement.
    pub fn impressions_since<Q: ?Sized + PartialEq>(&self, item: &Q, since: u32) -> usize
    where
        I: Borrow<Q>,
    {
        self.recent(since).filter(|i| (*i).borrow() == item).count()
    }

    fn recent(&self, since: u32) -> impl Iterator<Item = &I> {
        let from = self.seen.partition_point(|(t, _)| *t < since);
        self.seen[from..].iter().map(|(_, i)| i)
    }

    /// Items shown at least `max` times at or after `since` without an engagement since.
    pub fn fatigued(&self, since: u32, max: usize) -> Vec<&I>
    where
        I: Hash,
    {
        let mut counts: crate::FastMap<&I, usize> = crate::FastMap::default();
        let mut out = Vec::new();
        for i in self.recent(since) {
            let n = counts.entry(i).or_default();
            *n += 1;
            if *n == max {
                out.push(i);
            }
        }
        out
    }

    /// Bytes of its two lists (capacity, not length: what the allocator holds).
    pub fn heap_bytes(&self) -> usize {
        self.seen.capacity() * std::mem::size_of::<(u32, I)>()
            + self.bought.capacity() * std::mem::size_of::<I>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_800_000_000.0;

    #[test]
    fn impressions_count_until_an_engagement_and_purchases_stay() {
        let mut h = History::<u32>::default();
        for k in 0..3 {
            h.record(EventKind::Impression, &1, T0 + f64::from(k));
        }
        h.record(EventKind::Impression, &2, T0);
        assert_eq!(h.impressions_since(&1, T0 as u32), 3);
        assert_eq!(h.impressions_since(&1, T0 as u32 + 1), 2);
        assert_eq!(h.fatigued(T0 as u32, 3), [&1]);
        // A click resets fatigue for that item only.
        h.record(EventKind::Click, &1, T0 + 10.0);
        assert_eq!(h.impressions_since(&1, 0), 0);
        assert_eq!(h.impressions_since(&2, 0), 1);
        for k in 0..20 {
            h.record(EventKind::Impression, &1, T0 + 20.0 + f64::from(k));
        }
        assert_eq!(h.impressions_since(&1, 0), HISTORY_IMPRESSIONS);
        // The newest 16 stay.
        assert_eq!(h.impressions_since(&1, T0 as u32 + 24), HISTORY_IMPRESSIONS);
        h.record(EventKind::Purchase, &1, T0 + 50.0);
        assert!(h.purchased(&1) && h.impressions_since(&1, 0) == 0);
        h.record(EventKind::Purchase, &1, T0 + 51.0);
        assert_eq!(h.bought(), [1]);
    }

    #[test]
    fn impressions_older_than_any_fatigue_window_are_forgotten() {
        let mut h = History::<u32>::default();
        h.record(EventKind::Impression, &1, T0);
        h.record(EventKind::Purchase, &9, T0);
        let horizon = f64::from(HISTORY_HORIZON_SECONDS);
        h.record(EventKind::Impression, &2, T0 + horizon);
        assert_eq!(h.seen().len(), 2, "exactly at the horizon it still counts");
        h.record(EventKind::Impression, &3, T0 + horizon + 1.0);
        assert_eq!(
            h.seen(),
            [
                (T0 as u32 + HISTORY_HORIZON_SECONDS, 2),
                (T0 as u32 + HISTORY_HORIZON_SECONDS + 1, 3)
            ]
        );
        // A late impression behind the horizon is not kept; one within it lands in order.
        h.record(EventKind::Impression, &4, T0);
        h.record(EventKind::Impression, &5, T0 + horizon + 0.5);
        assert_eq!(
            h.seen().iter().map(|(_, i)| *i).collect::<Vec<_>>(),
            [2, 5, 3]
        );
        // Purchases have no horizon.
        assert!(h.purchased(&9));
    }

    #[test]
    fn the_log_is_bounded_oldest_first() {
        let mut h = History::<u32>::default();
        let n = HISTORY_ITEMS as u32 + 10;
        for i in 0..n {
            h.record(EventKind::Impression, &i, T0 + f64::from(i));
            h.record(EventKind::Purchase, &(1_000 + i), T0 + f64::from(i));
        }
        assert_eq!(h.seen().len(), HISTORY_ITEMS);
        assert_eq!(h.seen()[0].1, 10);
        assert_eq!(h.bought().len(), HISTORY_ITEMS);
        assert!(!h.purchased(&1_000) && h.purchased(&(1_000 + n - 1)));
    }

    #[test]
    fn decoding_what_redis_keeps_gives_the_same_history() {
        let mut recorded = History::<String>::default();
        let (a, b) = ("a".to_string(), "b".to_string());
        recorded.record(EventKind::Impression, &a, T0);
        recorded.record(EventKind::Purchase, &b, T0 + 1.0);
        recorded.record(EventKind::Impression, &b, T0 + 2.0);
        recorded.record(EventKind::Impression, &a, T0 + 3.0);
        let decoded = History::decode([
            (b.clone(), format!("p{}", T0 as u32 + 2)),
            (a.clone(), format!("{},{}", T0 as u32, T0 as u32 + 3)),
        ]);
        assert_eq!(decoded, recorded);
        assert_eq!(decoded.map(|s| s.len()).seen().len(), 3);
    }

    #[test]
    fn stored_times_parse_as_u32_does_and_malformed_ones_are_skipped() {
        let parsed: Vec<u32> =
            impression_times("1796050120,7,,x1,4294967295,4294967296,12a").collect();
        assert_eq!(parsed, [1_796_050_120, 7, u32::MAX]);
        assert_eq!(impression_times("").count(), 0);
    }
}
