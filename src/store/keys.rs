//! The Redis key layout. Every key of a tenant carries the hash tag `{<tenant>}`, so that on a
//! Redis Cluster all of them live in one slot and one request's reads are one pipelined round
//! trip to one node.
//!
//! | key                                 | type | content |
//! |-------------------------------------|------|---------|
//! | `er:{t}:item:<item_id>`             | hash | `item` (catalog JSON), `stats` (all-time and window counts, packed f64) |
//! | `er:{t}:trending`                   | zset | item → trending score relative to `TRENDING_EPOCH` |
//! | `er:{t}:cat:<category>`             | zset | item → all-time engagement (popularity) |
//! | `er:{t}:new`                        | zset | item → `created_at` |
//! | `er:{t}:users`                      | set  | every user id with a profile: the `users` budget's count and membership test |
//! | `er:{t}:profile:<user_id>`         | string | the user's counts, recent items and affinity names (`store::redis::profile` reads and lays it out); written by the event script, a user's engagements at a time. One string, so that a feed's read is one value to parse, not one per name and recent item |
//! | `er:{t}:user:<user_id>`             | hash | the layout before (`interactions`, `affinity_total`, `price_sum`, `price_count`, `c:<category>`, `b:<brand>`): read until the user's next engagement moves it into the profile string |
//! | `er:{t}:recent:<user_id>`           | list | the layout before: recent item ids, newest first; moved with the hash |
//! | `er:{t}:seen:<bucket>`              | set  | event ids applied in one time bucket (half the dedup window); unlinked once out of the window |
//! | `er:{t}:history:<user_id>`          | string | the user's history, `<item> <value>` per item joined by `;` (`history_items`): the value `p` if bought, then impression times since the last engagement in time order, none 168 h older than the item's newest (`RedisStore::user_profile` reads it, one pass); past 1 000 items trimmed to the 500 seen last; expires 30 days after the user's last event. One string, so that a feed's read is one value to parse, not two per item |
//! | `er:{t}:hist:<user_id>`             | hash | the layout before: item → the same value; read until the user's next event moves it into the string |
//! | `er:{t}:layout`                     | string | `2` once the tenant's users were moved out of the three layouts before (`RedisStore::move_old_layout`: `eaglerank migrate`, `load`): feeds stop reading them |
//! | `er:{t}:rules`                      | hash | `version`, `doc` (the rules document as JSON) |
//! | `er:{t}:session:<id>`               | hash | a feed session (named by its first page's request id), from its second page on: page number → its items (`store::sessions::encode_page`; the first page's are the served-feed log's); expires `feed.session_ttl_seconds` after its last page |
//! | `er:{t}:feeds:<bucket>`             | hash | served feeds of one time bucket (a thirtieth of the join window): request id (a UUID's 16 bytes) → labels id and item ids (`store::redis::feed_log`); expires a window and two buckets after its last feed |
//! | `er:{t}:feedlabels`                 | hash | labels id → model, version and experiment arm of served feeds |
//! | `er:{t}:feed:<request_id>`          | string | the layout before the buckets: a served feed as JSON; still read until it expires |
//! | `er:{t}:feedclick:<request_id>`     | string | set by the feed's first joined click; expires with the feed |

pub fn item(tenant: &str, id: &str) -> String {
    format!("er:{{{tenant}}}:item:{id}")
}

pub fn trending(tenant: &str) -> String {
    format!("er:{{{tenant}}}:trending")
}

pub fn category(tenant: &str, category: &str) -> String {
    format!("er:{{{tenant}}}:cat:{category}")
}

pub fn new_arrivals(tenant: &str) -> String {
    format!("er:{{{tenant}}}:new")
}

/// A user's counts, recent items and affinity names, one string (`store::redis::profile`).
pub fn profile(tenant: &str, user: &str) -> String {
    format!("er:{{{tenant}}}:profile:{user}")
}

/// Where a user's counts and names were kept before the profile string: read until the
/// user's next engagement moves them over.
pub fn user(tenant: &str, user: &str) -> String {
    format!("er:{{{tenant}}}:user:{user}")
}

pub fn users(tenant: &str) -> String {
    format!("er:{{{tenant}}}:users")
}

/// Where a user's recent items were kept before the profile string (see [`user`]).
pub fn recent(tenant: &str, user: &str) -> String {
    format!("er:{{{tenant}}}:recent:{user}")
}

pub fn history(tenant: &str, user: &str) -> String {
    format!("er:{{{tenant}}}:history:{user}")
}

/// A tenant's key layout, `2` once `eaglerank migrate` (or `load`) moved its users' profiles
/// and histories out of the hashes and lists they were kept in before the two strings: a
/// replica that finds it stops reading those.
pub fn layout(tenant: &str) -> String {
    format!("er:{{{tenant}}}:layout")
}

/// Where a user's history was kept before it was one string: read until the user's next
/// event moves it over (or it expires, 30 days after their last event).
pub fn legacy_history(tenant: &str, user: &str) -> String {
    format!("er:{{{tenant}}}:hist:{user}")
}

/// A user's history as one string: `<item> <value>` entries joined by `;`, the value `p` if
/// bought, then impression times in order, comma-separated (ids hold none of ` ;,`). Each
/// item goes to `item` with whether it was bought and its times, read in
/// one pass over the bytes: a Redis-backed feed decodes its user's whole history, and finding
/// the entries first and parsing their values after read every byte twice. An entry without
/// a space is skipped; a time that is not all digits or past `u32` is skipped, as
/// `History::decode` does.
pub fn history_items(packed: &str, mut item: impl FnMut(&str, bool, &[u32])) {
    let bytes = packed.as_bytes();
    let mut times = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        while at < bytes.len() && bytes[at] != b' ' && bytes[at] != b';' {
            at += 1;
        }
        if at == bytes.len() || bytes[at] == b';' {
            at += 1;
            continue;
        }
        // Split at an ASCII byte: the id stays valid UTF-8.
        let id = &packed[start..at];
        at += 1;
        let bought = bytes.get(at) == Some(&b'p');
        at += usize::from(bought);
        times.clear();
        // The usual time first: ten digits and a delimiter, read eight bytes at a time. The
        // byte loop below reads anything else, from where this stopped.
        let mut ended = false;
        while let Some(t) = ten_digit_time(bytes, at) {
            times.push(t);
            ended = bytes.get(at + 10) != Some(&b',');
            at += 11;
            if ended {
                break;
            }
        }
        if !ended {
            let (mut t, mut digits, mut valid) = (0u32, 0, true);
            loop {
                // The end of the string ends the last entry, as a `;` would.
                let b = bytes.get(at).copied().unwrap_or(b';');
                at += 1;
                match b {
                    b'0'..=b'9' => {
                        digits += 1;
                        match t
                            .checked_mul(10)
                            .and_then(|t| t.checked_add(u32::from(b - b'0')))
                        {
                            Some(next) => t = next,
                            None => valid = false,
                        }
                    }
                    b',' | b';' => {
                        if digits > 0 && valid {
                            times.push(t);
                        }
                        (t, digits, valid) = (0, 0, true);
                        if b == b';' {
                            break;
                        }
                    }
                    _ => valid = false,
                }
            }
        }
        item(id, bought, &times);
    }
}

/// The time at `bytes[at..]` when it has the shape every time has had since 2001 and will
/// have until 2286 — ten digits, then `,`, `;` or the end — and fits a `u32`; `None` for
/// anything else, which the byte-by-byte reading then handles as before. Eight digits are
/// checked and converted as one word (the usual SWAR steps: subtract '0' from every byte,
/// then combine pairs, fours and eights of digits with three multiplications), where the
/// byte loop spent ~10 instructions a digit: a heavy user's history holds thousands of them,
/// and a Redis-backed feed reads the whole string.
#[inline]
fn ten_digit_time(bytes: &[u8], at: usize) -> Option<u32> {
    let digits: &[u8; 10] = bytes.get(at..at + 10)?.try_into().ok()?;
    if !matches!(bytes.get(at + 10), None | Some(b',' | b';')) {
        return None;
    }
    let (high, low) = digits.split_at(8);
    let word = u64::from_le_bytes(high.try_into().ok()?);
    // Every byte 0x30..=0x39: its high nibble is 3, and still 3 after adding 6.
    const NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    if word & NIBBLES != ZEROS || word.wrapping_add(0x0606_0606_0606_0606) & NIBBLES != ZEROS {
        return None;
    }
    let [nine, ten] = [low[0], low[1]];
    if !nine.is_ascii_digit() || !ten.is_ascii_digit() {
        return None;
    }
    // The first byte is the most significant digit and the lowest byte of the word.
    let mut v = word - ZEROS;
    v = (v * 10) + (v >> 8); // pairs: each even byte holds two digits' value
    // Fours, then the eight in the high half: the products overflow by design (the low half
    // is discarded), hence wrapping arithmetic.
    v = ((v & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32)))
        .wrapping_add((v >> 16 & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32)))
        >> 32;
    let t = v * 100 + u64::from(nine - b'0') * 10 + u64::from(ten - b'0');
    u32::try_from(t).ok()
}

pub fn rules(tenant: &str) -> String {
    format!("er:{{{tenant}}}:rules")
}

pub fn session(tenant: &str, session: &str) -> String {
    format!("er:{{{tenant}}}:session:{session}")
}

pub fn seen_set(tenant: &str, bucket: u64) -> String {
    format!("er:{{{tenant}}}:seen:{bucket}")
}

pub fn feed(tenant: &str, request_id: &str) -> String {
    format!("er:{{{tenant}}}:feed:{request_id}")
}

pub fn feed_bucket(tenant: &str, bucket: u64) -> String {
    format!("er:{{{tenant}}}:feeds:{bucket}")
}

pub fn feed_labels(tenant: &str) -> String {
    format!("er:{{{tenant}}}:feedlabels")
}

pub fn feed_click(tenant: &str, request_id: &str) -> String {
    format!("er:{{{tenant}}}:feedclick:{request_id}")
}

/// The item hash field holding its counts and window counts (binary, see
/// `store::redis::apply`).
pub const STATS_FIELD: &str = "stats";
/// Prefixes of a user's affinity fields.
pub const CATEGORY_PREFIX: &str = "c:";
pub const BRAND_PREFIX: &str = "b:";

#[cfg(test)]
mod tests {
    #[test]
    fn keys_share_the_tenant_hash_tag() {
        assert_eq!(super::item("shop", "i1"), "er:{shop}:item:i1");
        assert_eq!(super::user("shop", "u1"), "er:{shop}:user:u1");
        assert_eq!(super::category("shop", "cat-01"), "er:{shop}:cat:cat-01");
    }

    fn items(packed: &str) -> Vec<(String, bool, Vec<u32>)> {
        let mut found = Vec::new();
        super::history_items(packed, |id, bought, times| {
            found.push((id.to_owned(), bought, times.to_vec()))
        });
        found
    }

    #[test]
    fn a_packed_history_splits_into_its_items() {
        assert_eq!(
            items("i1 p;i2 10,20;;bad;i3 p30;i4 7,x1,,4294967296,9"),
            [
                ("i1".to_owned(), true, vec![]),
                ("i2".to_owned(), false, vec![10, 20]),
                ("i3".to_owned(), true, vec![30]),
                ("i4".to_owned(), false, vec![7, 9]),
            ]
        );
        assert!(items("").is_empty());
    }

    /// What splitting the entries, then each value's times (`History::decode`'s parse) gives:
    /// the oracle the one-pass reading must agree with.
    fn two_passes(packed: &str) -> Vec<(String, bool, Vec<u32>)> {
        packed
            .split(';')
            .filter_map(|entry| entry.split_once(' '))
            .map(|(id, value)| {
                let (bought, times) = match value.strip_prefix('p') {
                    Some(rest) => (true, rest),
                    None => (false, value),
                };
                let times = times
                    .split(',')
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .filter_map(|t| t.parse().ok())
                    .collect();
                (id.to_owned(), bought, times)
            })
            .collect()
    }

    /// The one-pass reading gives what two passes give, on random strings of the format's
    /// bytes.
    #[test]
    fn one_pass_reads_what_two_passes_read() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let alphabet = b"ab p,;0123456789x";
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let packed: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
                .collect();
            assert_eq!(items(&packed), two_passes(&packed), "{packed:?}");
        }
    }

    /// And on histories shaped like real ones — ten-digit times, which the word-at-a-time
    /// path reads — with the near misses it must leave to the byte loop: a time past `u32`,
    /// eleven or nine digits, a stray byte inside or after the digits, the bytes just below
    /// '0' and just above '9', an empty time.
    #[test]
    fn ten_digit_times_read_as_the_bytes_say() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(22);
        let time = |rng: &mut rand::rngs::StdRng| -> String {
            let mut t = match rng.random_range(0..10) {
                0 => rng
                    .random_range(4_294_967_290u64..4_294_967_300)
                    .to_string(),
                1 => rng
                    .random_range(1_000_000_000u64..=9_999_999_999)
                    .to_string(),
                2 => rng
                    .random_range(10_000_000_000u64..20_000_000_000)
                    .to_string(),
                3 => rng.random_range(0u64..1_000_000_000).to_string(),
                4 => String::new(),
                _ => rng
                    .random_range(1_700_000_000u64..1_800_000_000)
                    .to_string(),
            };
            if !t.is_empty() && rng.random_range(0..8) == 0 {
                let at = rng.random_range(0..=t.len());
                let stray = [b'x', b'/', b':', b'p', b' '][rng.random_range(0..5)];
                t.insert(at, stray as char);
            }
            t
        };
        for _ in 0..5_000 {
            let entries: Vec<String> = (0..rng.random_range(0..6))
                .map(|e| {
                    let bought = if rng.random_range(0..4) == 0 { "p" } else { "" };
                    let times: Vec<String> = (0..rng.random_range(0..5))
                        .map(|_| time(&mut rng))
                        .collect();
                    format!("i{e} {bought}{}", times.join(","))
                })
                .collect();
            let packed = entries.join(";");
            assert_eq!(items(&packed), two_passes(&packed), "{packed:?}");
        }
        let one = |t: &str| super::ten_digit_time(t.as_bytes(), 0);
        assert_eq!(one("1733400000"), Some(1_733_400_000));
        assert_eq!(one("4294967295;x"), Some(u32::MAX));
        assert_eq!(one("0000000007,"), Some(7));
        for miss in [
            "4294967296",
            "12345678901",
            "123456789",
            "1234:67890",
            "12345678:0",
            "/234567890",
        ] {
            assert_eq!(one(miss), None, "{miss}");
        }
        assert_eq!(one("1234567890x"), None, "a stray byte after the digits");
    }
}
