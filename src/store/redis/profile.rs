//! A user's profile in Redis: one string (`keys::profile`), written by the event script
//! (`apply`, op `u`) and read whole by a feed:
//!
//! ```text
//! <interactions> <price_count> <affinity_total> <price_sum>\n
//! <recent item id> <recent item id>…\n
//! <length>:<name> <value>;<length>:<name> <value>;…
//! ```
//!
//! Recent items newest first; names are `c:<category>` and `b:<brand>` with their affinity
//! sums. Item ids hold no space or newline (`domain::ids`), but a category or brand may hold
//! any character: a name goes by its length in bytes. Numbers are as Lua's `%.17g` writes
//! them (a double's round trip).
//!
//! One string rather than a hash and a list, so that redis-rs parses one reply value a feed
//! where it parsed one per name and recent item (~0.4 k instructions each), and the event
//! script reads and writes a user with two calls a chunk.

use std::collections::HashMap;

use crate::domain::{History, ItemId, UserProfile};
use crate::store::keys::{BRAND_PREFIX, CATEGORY_PREFIX};

/// The profile a packed string holds (with the history read beside it). Malformed parts
/// read as far as they are well formed: a hand-edited key degrades a user's features, never
/// their feed.
pub(super) fn decode(packed: &str, history: History<ItemId>) -> UserProfile {
    let mut lines = packed.splitn(3, '\n');
    let mut counts = lines
        .next()
        .unwrap_or_default()
        .split(' ')
        .map(|x| x.parse::<f64>().unwrap_or(0.0));
    let mut count = || counts.next().unwrap_or(0.0);
    let mut p = UserProfile {
        history,
        interactions: count(),
        price_count: count(),
        affinity_total: count() as f32,
        price_sum: count(),
        ..Default::default()
    };
    p.recent_items = lines
        .next()
        .unwrap_or_default()
        .split(' ')
        .filter(|id| !id.is_empty())
        .map(ItemId::from)
        .collect();
    for (name, value) in names(lines.next().unwrap_or_default()) {
        add_name(&mut p, name, value.parse().unwrap_or(0.0));
    }
    p
}

/// The `<length>:<name> <value>;` entries of a profile's last line.
fn names(mut rest: &str) -> impl Iterator<Item = (&str, &str)> {
    std::iter::from_fn(move || {
        let (length, after) = rest.split_once(':')?;
        let length: usize = length.parse().ok()?;
        let name = after.get(..length)?;
        let (value, next) = after.get(length..)?.strip_prefix(' ')?.split_once(';')?;
        rest = next;
        Some((name, value))
    })
}

/// The layout before the profile string (read until the user's next engagement moves it
/// over): a hash of the counts and names, and a list of the recent items.
pub(super) fn legacy(
    fields: HashMap<String, String>,
    recent: Vec<String>,
    history: History<ItemId>,
) -> UserProfile {
    let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let mut p = UserProfile {
        history,
        interactions: number("interactions"),
        affinity_total: number("affinity_total") as f32,
        price_sum: number("price_sum"),
        price_count: number("price_count"),
        recent_items: recent.into_iter().map(ItemId::from).collect(),
        ..Default::default()
    };
    for (field, value) in &fields {
        add_name(&mut p, field, value.parse().unwrap_or(0.0));
    }
    p
}

fn add_name(p: &mut UserProfile, field: &str, value: f32) {
    if let Some(c) = field.strip_prefix(CATEGORY_PREFIX) {
        p.category_affinity.add(c, value, || c.into());
    } else if let Some(b) = field.strip_prefix(BRAND_PREFIX) {
        p.brand_affinity.add(b, value, || b.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_profile_reads_back_names_of_any_character() {
        let odd = "a;b\n c:d é";
        let packed = format!(
            "3 2 4.5 59.899999999999999\ni2 i1\n7:c:shoes 3;{}:b:{odd} 1.5;",
            odd.len() + 2
        );
        let p = decode(&packed, History::default());
        assert_eq!(
            (p.interactions, p.price_count, p.affinity_total, p.price_sum),
            (3.0, 2.0, 4.5, 59.9)
        );
        assert_eq!(p.recent_items, ["i2", "i1"].map(ItemId::from));
        assert_eq!(p.category_affinity.get("shoes"), Some(3.0));
        assert_eq!(p.brand_affinity.get(odd), Some(1.5));
    }

    #[test]
    fn a_malformed_profile_reads_as_far_as_it_is_well_formed() {
        let p = decode("1 x\n\n7:c:shoes 3;99:c:short 1;", History::default());
        assert_eq!((p.interactions, p.price_count), (1.0, 0.0));
        assert!(p.recent_items.is_empty());
        assert_eq!(p.category_affinity.get("shoes"), Some(3.0));
        assert_eq!(p.category_affinity.len(), 1);
        let empty = decode("", History::default());
        assert_eq!(empty.interactions, 0.0);
        // A length that ends inside a multi-byte character is refused, not a panic.
        assert_eq!(
            decode("0 0 0 0\n\n3:c:é 1;", History::default())
                .category_affinity
                .len(),
            0
        );
    }
}
