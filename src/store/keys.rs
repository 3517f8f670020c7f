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
//! | `er:{t}:history:<user_id>`          | string | the user's history, `<item> <value>` per item joined by `;` (`history_entries`): the value `p` if bought, then impression times since the last engagement in time order, none 168 h older than the item's newest (`History::decode` reads it); past 1 000 items trimmed to the 500 seen last; expires 30 days after the user's last event. One string, so that a feed's read is one value to parse, not two per item |
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
/// bought, then impression times in order, comma-separated (ids hold none of ` ;,`).
pub fn history_entries(packed: &str) -> impl Iterator<Item = (&str, &str)> {
    // `split` on a char searches with memchr, which costs more than it saves on entries
    // this short (~15 bytes): a byte scan, once per feed over the user's whole history.
    let bytes = packed.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < bytes.len() {
            let start = at;
            let mut space = None;
            while at < bytes.len() && bytes[at] != b';' {
                if space.is_none() && bytes[at] == b' ' {
                    space = Some(at);
                }
                at += 1;
            }
            let end = at;
            at += 1;
            if let Some(space) = space {
                // Split at ASCII bytes: both sides stay valid UTF-8.
                return Some((&packed[start..space], &packed[space + 1..end]));
            }
        }
        None
    })
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

    #[test]
    fn a_packed_history_splits_into_its_entries() {
        let entries: Vec<_> = super::history_entries("i1 p;i2 10,20;;bad;i3 p30;").collect();
        assert_eq!(entries, [("i1", "p"), ("i2", "10,20"), ("i3", "p30")]);
        assert_eq!(super::history_entries("").count(), 0);
    }
}
