//! A user's profile in Redis: one string (`keys::profile`), written by the event script
//! (`apply`, op `u`) and read whole by a feed:
//!
//! ```text
//! <interactions> <price_count> <affinity_total> <price_sum> <recent> <names>\n
//! <recent item id> <recent item id>…\n
//! ;<name> <value>;<name> <value>…
//! ```
//!
//! `<recent>` and `<names>` count the entries of the next two lines. Recent items are newest
//! first; the script keeps up to twice `RECENT_ITEMS` and trims them back once past that, and
//! a reader takes the first `RECENT_ITEMS`. Names are `c:<category>` and `b:<brand>` with
//! their affinity sums. Item ids hold no space or newline (`domain::ids`), but a category or
//! brand may hold any character: a name's spaces, `;` and `%` are percent-escaped
//! ([`escape`]), so that the script finds a name by `;<name> ` and edits its value in place,
//! passing the others through as text. Numbers are as Lua's `%.17g` writes them (a double's
//! round trip).
//!
//! One string rather than a hash and a list, so that redis-rs parses one reply value a feed
//! where it parsed one per name and recent item (~0.4 k instructions each), and the event
//! script reads and writes a user with two calls a chunk.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::domain::{History, ItemId, RECENT_ITEMS, UserProfile};
use crate::store::keys::{BRAND_PREFIX, CATEGORY_PREFIX};

/// The profile a packed string holds (with the history read beside it). Malformed parts
/// read as far as they are well formed: a hand-edited key degrades a user's features, never
/// their feed.
pub(super) fn decode(packed: &str, history: History<u64>) -> UserProfile {
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
        .take(RECENT_ITEMS)
        .map(ItemId::from)
        .collect();
    for (name, value) in names(lines.next().unwrap_or_default()) {
        add_name(&mut p, &name, value.parse().unwrap_or(0.0));
    }
    p
}

/// The `;<name> <value>` entries of a profile's last line, names unescaped.
fn names(line: &str) -> impl Iterator<Item = (Cow<'_, str>, &str)> {
    line.split(';')
        .filter_map(|entry| entry.split_once(' '))
        .map(|(name, value)| (unescape(name), value))
}

/// A name as the profile string holds it: ` `, `;` and `%` as `%20`, `%3B`, `%25` (the event
/// script escapes a legacy hash's names alike).
pub(super) fn escape(name: &str) -> Cow<'_, str> {
    if !name.contains([' ', ';', '%']) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            ' ' | ';' | '%' => out.push_str(&format!("%{:02X}", c as u8)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn unescape(name: &str) -> Cow<'_, str> {
    if !name.contains('%') {
        return Cow::Borrowed(name);
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The layout before the profile string (read until the user's next engagement moves it
/// over): a hash of the counts and names, and a list of the recent items.
pub(super) fn legacy(
    fields: HashMap<String, String>,
    recent: Vec<String>,
    history: History<u64>,
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

/// One name of the profile string or the legacy hash: each holds a name once (the event
/// script finds a name before it adds one), so it is appended unsearched. A hand-edited
/// duplicate stays a second entry, which degrades that user's feature, not their feed.
fn add_name(p: &mut UserProfile, field: &str, value: f32) {
    if let Some(c) = field.strip_prefix(CATEGORY_PREFIX) {
        p.category_affinity.push_new(c.into(), value);
    } else if let Some(b) = field.strip_prefix(BRAND_PREFIX) {
        p.brand_affinity.push_new(b.into(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile at the names' bound reads back every name with its weight, in the string's
    /// order (what `Affinities::push_new` relies on the script for: one entry a name).
    #[test]
    fn a_profile_at_the_names_bound_reads_back_whole_and_in_order() {
        use crate::domain::AFFINITY_NAMES;
        let names: Vec<String> = (0..AFFINITY_NAMES)
            .map(|n| match n % 2 {
                0 => format!("c:cat {n}"),
                _ => format!("b:brand;{n}%"),
            })
            .collect();
        let line: String = names
            .iter()
            .enumerate()
            .map(|(n, name)| format!(";{} {}", escape(name), n + 1))
            .collect();
        let p = decode(
            &format!("1 1 1 1 0 {}\n\n{line}", names.len()),
            History::default(),
        );
        let read: Vec<(String, f32)> = p
            .category_affinity
            .iter()
            .map(|(c, w)| (format!("c:{c}"), w))
            .chain(p.brand_affinity.iter().map(|(b, w)| (format!("b:{b}"), w)))
            .collect();
        let mut expected: Vec<(String, f32)> = names
            .iter()
            .enumerate()
            .map(|(n, name)| (name.clone(), (n + 1) as f32))
            .collect();
        // Categories first, then brands, each in the string's order.
        expected.sort_by_key(|(name, _)| name.starts_with("b:"));
        assert_eq!(read, expected);
    }

    #[test]
    fn a_packed_profile_reads_back_names_of_any_character() {
        let odd = "a;b\n c:d é 100%";
        let packed = format!(
            "3 2 4.5 59.899999999999999 2 2\ni2 i1\n;c:shoes 3;{} 1.5",
            escape(&format!("b:{odd}"))
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
    fn names_escape_only_what_the_layout_splits_on() {
        assert!(matches!(escape("c:shoes"), Cow::Borrowed("c:shoes")));
        assert_eq!(escape("b:a b;c%d\né"), "b:a%20b%3Bc%25d\né");
        for name in ["b:a b;c%d\né", "c:%zz", "c:100%", "c:%2"] {
            assert_eq!(unescape(&escape(name)), name);
        }
        // Not written by either side, but read without a panic.
        assert_eq!(unescape("c:%zz%2"), "c:%zz%2");
    }

    #[test]
    fn a_malformed_profile_reads_as_far_as_it_is_well_formed() {
        let p = decode("1 x\n\n;c:shoes 3;nonsense;c:bags", History::default());
        assert_eq!((p.interactions, p.price_count), (1.0, 0.0));
        assert!(p.recent_items.is_empty());
        assert_eq!(p.category_affinity.get("shoes"), Some(3.0));
        assert_eq!(p.category_affinity.len(), 1);
        let many: Vec<String> = (0..2 * RECENT_ITEMS).map(|i| format!("i{i}")).collect();
        let long = decode(
            &format!("0 0 0 0\n{}\n", many.join(" ")),
            History::default(),
        );
        assert_eq!(long.recent_items.len(), RECENT_ITEMS);
        assert_eq!(long.recent_items[0], ItemId::from("i0"));
        let empty = decode("", History::default());
        assert_eq!(empty.interactions, 0.0);
    }
}
