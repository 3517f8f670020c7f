//! Applying events to Redis: one Lua script call per chunk of events, atomic with the
//! chunk's deduplication.
//!
//! Redis is single-threaded and the ingestion rate's bottleneck, and what a script costs it
//! is mostly the number of calls it makes into Redis (a few µs each, whatever the command).
//! So the chunk's updates are computed here, in Rust, by the same `ItemStats::record` /
//! `Profile::record_engagement` the embedded store uses, and summed per key; Redis checks the event
//! ids and adds the sums. Where Lua must read before it writes (an item's packed stats, a
//! zset's scores, a user's history), it reads and writes each key once per chunk.
//!
//! Deduplication uses one set of event ids per tenant and time bucket (half the dedup
//! window long): a chunk checks its ids against the last three buckets (which cover at least
//! the whole window) in three calls, rather than a key per event. An id is remembered for
//! 1–1.5 windows. If any id was seen, the script writes nothing and returns the duplicates'
//! positions; the caller sums the chunk again without them and resends it. Replays are rare,
//! so the common case is one call.

use std::sync::LazyLock;

use deadpool_redis::redis;
use indexmap::{IndexMap, IndexSet};

use super::super::keys::{self, BRAND_PREFIX, CATEGORY_PREFIX, STATS_FIELD};
use super::profile;
use crate::domain::{
    AFFINITY_NAMES, Event, EventKind, HISTORY_HORIZON_SECONDS, HISTORY_IMPRESSIONS, HISTORY_ITEMS,
    Item, ItemStats, RECENT_ITEMS, UserProfile, WINDOWS, WindowCounts,
};

/// The counts of a user's profile, in the order its string holds them (and the fields of the
/// hash it was kept in before, beside the affinity names).
const USER_COUNTS: [&str; 4] = ["interactions", "price_count", "affinity_total", "price_sum"];

/// A user's item history expires this long after their last event: what bounds the purchase
/// exclusion's memory in Redis (the embedded store bounds it by `HISTORY_ITEMS` per user).
pub(super) const HISTORY_TTL_SECONDS: u64 = 30 * 86_400;

/// A user's history is swept of stale items each time it passes a multiple of this many.
const HISTORY_SWEEP_EVERY: usize = 32;

/// KEYS: with ids to check, the id sets of the current bucket and the three before it; then
/// the keys the operations name by index. ARGV: the number of ids, the current set's expiry
/// (Unix ms), the ids, then operations, each a code, a key index and its arguments:
/// - `s packed` — add an item's counts into its `stats` field and merge its window counts,
///   as `WindowCounts::merge` does (the two must stay in step; the backend equivalence
///   tests compare them);
/// - `z n (member x)…` — each member's score raised by x (`ZMSCORE`, then one `ZADD XX`):
///   only members already listed; an item moved to another category was removed from the
///   old one, and a replica whose catalog cache still says the old category must not put it
///   back;
/// - `u hash list interactions price_count affinity_total price_sum n id… m (name x)…` — a
///   user's profile (`keys::profile`, one string as `profile::decode` reads it; `hash` and
///   `list` the keys it was kept in before, moved over once): the counts added, the chunk's
///   recent items (newest first) moved to the front, each name's sum added in the order given,
///   a new name only while the user holds fewer than `AFFINITY_NAMES`
///   (`Profile::record_touch`'s bound);
/// - `h legacy seconds n (item code t)…` — the user's history (`keys::history`, one string
///   as `keys::history_items` reads it; `legacy` the hash it was kept in before, moved over
///   once): each item as `History::record` changes it, in event order (code `i` impression
///   at t, `e` click or cart, `p` purchase), impressions past the horizon dropped per item;
///   its expiry; each time it passes a multiple of `HISTORY_SWEEP_EVERY` items, stale items
///   swept from it.
///
/// Returns an empty array when the chunk was applied, else the 1-based positions (among the
/// ids) of the ids already seen, and nothing was written.
const APPLY_EVENTS_LUA: &str = r"
local USER_FIELD = {USER_FIELDS}
local ids = tonumber(ARGV[1])
local dups, dup = {}, {}
if ids > 0 then
  local first, last = 3, 2 + ids
  for b = 1, 3 do
    local seen = redis.call('SMISMEMBER', KEYS[b], unpack(ARGV, first, last))
    for s = 1, ids do
      if seen[s] == 1 and not dup[s] then dup[s] = true; dups[#dups + 1] = s end
    end
  end
  if #dups > 0 then
    table.sort(dups)
    return dups
  end
  redis.call('SADD', KEYS[1], unpack(ARGV, first, last))
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  -- Out of the window: freed in the background, where its expiry would block Redis.
  redis.call('UNLINK', KEYS[4])
end
local i, n = 3 + ids, #ARGV
while i <= n do
  local op, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'z' then
    -- One read and one write for all of a zset's members (`ZADD XX INCR` takes one member a
    -- call): the sums are exact, as INCR's (numbers reach Redis in round-trip form).
    local count = tonumber(ARGV[i + 2])
    local members = {}
    for j = 1, count do members[j] = ARGV[i + 1 + 2 * j] end
    local scores = redis.call('ZMSCORE', key, unpack(members))
    local add = {}
    for j = 1, count do
      if scores[j] then
        add[#add + 1] = tonumber(scores[j]) + tonumber(ARGV[i + 2 + 2 * j])
        add[#add + 1] = members[j]
      end
    end
    if #add > 0 then redis.call('ZADD', key, 'XX', unpack(add)) end
    i = i + 3 + 2 * count
  elseif op == 's' then
    local d = {struct.unpack(STATS_FORMAT, ARGV[i + 2])}
    local raw = redis.call('HGET', key, 'STATS_FIELD')
    if raw and #raw == STATS_BYTES then
      local s = {struct.unpack(STATS_FORMAT, raw)}
      for j = 1, 4 do d[j] = d[j] + s[j] end
      -- Per window 9 numbers: bucket, current[4], previous[4]. Both sides move to the later
      -- bucket; a side one bucket behind contributes its current counts as previous, one
      -- further behind nothing. Written out per case (the same sums, in the same order, as
      -- a general loop; Lua spends microseconds on a function call per counter).
      for o = 4, STATS_VALUES - 9, 9 do
        local sb, db = s[o + 1], d[o + 1]
        if sb == db then
          for j = o + 2, o + 9 do d[j] = s[j] + d[j] end
        elseif sb > db then
          local behind = db == sb - 1
          for j = o + 2, o + 5 do
            d[j + 4] = behind and s[j + 4] + d[j] or s[j + 4]
            d[j] = s[j]
          end
          d[o + 1] = sb
        elseif sb == db - 1 then
          for j = o + 2, o + 5 do d[j + 4] = s[j] + d[j + 4] end
        end
      end
    end
    redis.call('HSET', key, 'STATS_FIELD', struct.pack(STATS_FORMAT, unpack(d, 1, STATS_VALUES)))
    i = i + 3
  elseif op == 'u' then
    -- A user's profile, one string (`store::redis::profile`): read, the chunk's sums added,
    -- written back — two calls a user a chunk, where a hash and a list took a call a count,
    -- a name and a recent item, and a feed's read parsed a value each.
    local old_hash, old_list = KEYS[tonumber(ARGV[i + 2])], KEYS[tonumber(ARGV[i + 3])]
    -- Edited in place: the names and recent items a chunk does not touch pass through as
    -- text (parsing and rebuilding each cost more than the calls this replaced).
    local c = {0, 0, 0, 0, 0, 0}
    local recent, names = '', ''
    local packed = redis.call('GET', key)
    if packed then
      -- Read as far as it is well formed, as the feed's read does (a hand-edited value
      -- must not fail every later chunk of the user).
      local head = string.find(packed, '\n', 1, true) or #packed + 1
      local tail = string.find(packed, '\n', head + 1, true) or #packed + 1
      local k = 0
      for x in string.gmatch(string.sub(packed, 1, head - 1), '[^ ]+') do
        k = k + 1; c[k] = tonumber(x) or 0
      end
      recent = string.sub(packed, head + 1, tail - 1)
      names = string.sub(packed, tail + 1)
    else
      -- Kept as a hash and a list before: moved over on the user's next engagement.
      local old = redis.call('HGETALL', old_hash)
      local entries = {}
      for j = 1, #old, 2 do
        local at = USER_FIELD[old[j]]
        if at then
          c[at] = tonumber(old[j + 1]) or 0
        else
          -- Escaped as `profile::escape` does (the hash held names as they are).
          local field = string.gsub(old[j], '[ ;%%]', function(b)
            return string.format('%%%02X', string.byte(b))
          end)
          entries[#entries + 1] = ';' .. field .. ' ' .. old[j + 1]
        end
      end
      names, c[6] = table.concat(entries), #entries
      local list = redis.call('LRANGE', old_list, 0, -1)
      recent, c[5] = table.concat(list, ' '), #list
      if #old > 0 or #list > 0 then redis.call('DEL', old_hash, old_list) end
    end
    for k = 1, 4 do c[k] = c[k] + tonumber(ARGV[i + 3 + k]) end
    -- The chunk's recent items (newest first) go to the front, out of where they were.
    -- Up to twice RECENT_ITEMS are kept (a feed reads the first RECENT_ITEMS), trimmed to
    -- RECENT_ITEMS when past that: one rebuild per RECENT_ITEMS new items.
    local count = tonumber(ARGV[i + 8])
    local first = i + 9
    local line = recent == '' and ' ' or ' ' .. recent .. ' '
    for j = first, first + count - 1 do
      local s, e = string.find(line, ' ' .. ARGV[j] .. ' ', 1, true)
      if s then line = string.sub(line, 1, s) .. string.sub(line, e + 1); c[5] = c[5] - 1 end
    end
    line = table.concat(ARGV, ' ', first, first + count - 1) .. string.sub(line, 1, -2)
    c[5] = c[5] + count
    if c[5] > 2 * RECENT_ITEMS then
      local kept = {}
      for id in string.gmatch(line, '[^ ]+') do
        kept[#kept + 1] = id
        if #kept == RECENT_ITEMS then break end
      end
      line, c[5] = table.concat(kept, ' '), #kept
    end
    -- Names in the order the events first touched them, each found by `;<name> ` (names
    -- are escaped: a match is a whole name); a new one only while the user has fewer than
    -- AFFINITY_NAMES (`Profile::record_touch`'s bound).
    local at = first + count
    local named = tonumber(ARGV[at])
    for j = at + 1, at + 2 * named, 2 do
      local field, x = ARGV[j], tonumber(ARGV[j + 1])
      local s, e = string.find(names, ';' .. field .. ' ', 1, true)
      if s then
        local stop = (string.find(names, ';', e + 1, true) or #names + 1) - 1
        local sum = (tonumber(string.sub(names, e + 1, stop)) or 0) + x
        names = string.sub(names, 1, e) .. string.format('%.17g', sum)
          .. string.sub(names, stop + 1)
      elseif c[6] < AFFINITY_NAMES then
        names = names .. ';' .. field .. ' ' .. string.format('%.17g', x)
        c[6] = c[6] + 1
      end
    end
    redis.call('SET', key, string.format('%.17g %.17g %.17g %.17g %d %d', unpack(c))
      .. '\n' .. line .. '\n' .. names)
    i = at + 1 + 2 * named
  elseif op == 'h' then
    -- A user's history, one string (`item value;item value…`: keys::history): read,
    -- changed in event order as `History::record` does, written back with its expiry — two
    -- calls a user a chunk, and the feed's read one string, not a hash's every field.
    local legacy, ttl, count = KEYS[tonumber(ARGV[i + 2])], ARGV[i + 3], tonumber(ARGV[i + 4])
    local first = i + 5
    local value, order = {}, {}
    local packed = redis.call('GET', key)
    if packed then
      for item, v in string.gmatch(packed, '([^ ;]+) ([^;]*)') do
        value[item] = v; order[#order + 1] = item
      end
    else
      -- Kept as a hash (one field an item) before: moved over on the user's next event.
      local old = redis.call('HGETALL', legacy)
      if #old > 0 then
        for j = 1, #old, 2 do value[old[j]] = old[j + 1]; order[#order + 1] = old[j] end
        redis.call('DEL', legacy)
      end
    end
    local held = #order
    for j = 1, count do
      local o = first + 3 * (j - 1)
      local field, code, at = ARGV[o], ARGV[o + 1], ARGV[o + 2]
      local cur = value[field]
      if cur == nil then cur = ''; order[#order + 1] = field end
      local bought = code == 'p' or string.byte(cur, 1) == 112 -- 'p'
      if code ~= 'i' then
        value[field] = bought and 'p' or ''
      elseif cur == '' or cur == 'p' then
        value[field] = cur .. at
      else
        -- The item's impressions in time order (a late one in its place, so that the last is
        -- the newest), less those past the horizon behind this one, which no fatigue window
        -- can count, and past HISTORY_IMPRESSIONS the oldest.
        local now = tonumber(at)
        local floor, times, placed = now - HISTORY_HORIZON, {}, false
        for t in string.gmatch(cur, '%d+') do
          local seen = tonumber(t)
          if seen >= floor then
            if not placed and seen > now then times[#times + 1] = at; placed = true end
            times[#times + 1] = t
          end
        end
        if not placed then times[#times + 1] = at end
        while #times > HISTORY_IMPRESSIONS do table.remove(times, 1) end
        value[field] = (bought and 'p' or '') .. table.concat(times, ',')
      end
    end
    -- Items the chunk emptied (an engagement with nothing bought) go.
    local kept = {}
    for _, item in ipairs(order) do
      if value[item] ~= '' then kept[#kept + 1] = item end
    end
    -- Each time the history passes a multiple of SWEEP_EVERY items: forget the items whose
    -- impressions are all past the horizon behind the user's newest and that were not bought
    -- (reading the history drops them anyway; this keeps them from being sent and parsed
    -- per feed). Each item's last time is its newest: times are kept in order.
    local last = {}
    local function newest_of(item)
      local t = last[item]
      if t == nil then
        t = tonumber(string.match(value[item], '%d+$') or -1)
        last[item] = t
      end
      return t
    end
    if #kept > held and math.floor(#kept / SWEEP_EVERY) > math.floor(held / SWEEP_EVERY) then
      local newest = 0
      for _, item in ipairs(kept) do newest = math.max(newest, newest_of(item)) end
      local cutoff, fresh = newest - HISTORY_HORIZON, {}
      for _, item in ipairs(kept) do
        local v = value[item]
        local stale = newest_of(item) < cutoff and string.byte(v, 1) ~= 112
        if stale then
          -- Confirmed on every time: values kept before times were in order may hold a
          -- late impression last.
          local m = -1
          for t in string.gmatch(v, '%d+') do m = math.max(m, tonumber(t)) end
          stale = m < cutoff
        end
        if not stale then fresh[#fresh + 1] = item end
      end
      kept = fresh
    end
    -- Bounded: past twice the embedded store's bound, the items seen longest ago go (those
    -- remembered only as purchases first), down to that bound; amortized, one trim per
    -- HISTORY_ITEMS new items.
    if #kept > 2 * HISTORY_ITEMS then
      local by_age = {}
      for k, item in ipairs(kept) do by_age[k] = {item, math.max(newest_of(item), 0)} end
      table.sort(by_age, function(a, b)
        if a[2] ~= b[2] then return a[2] < b[2] end
        return a[1] < b[1]
      end)
      local drop = {}
      for j = 1, #by_age - HISTORY_ITEMS do drop[by_age[j][1]] = true end
      local fresh = {}
      for _, item in ipairs(kept) do
        if not drop[item] then fresh[#fresh + 1] = item end
      end
      kept = fresh
    end
    if #kept == 0 then
      redis.call('DEL', key)
    else
      local out = {}
      for k, item in ipairs(kept) do out[k] = item .. ' ' .. value[item] end
      redis.call('SET', key, table.concat(out, ';'), 'EX', ttl)
    end
    i = first + 3 * count
  else
    return redis.error_reply('unknown operation ' .. tostring(op))
  end
end
return dups
";

/// Numbers in an item's `stats` field: its all-time counts (in `EventKind` order), then per
/// window (in `WINDOWS` order) its bucket, current[4] and previous[4] — little-endian f64,
/// which Lua's `struct` reads and writes at C speed. One field, so that an event costs its
/// item one read and one write in Redis.
const STATS_VALUES: usize = 4 + 9 * WINDOWS.len();

/// Events per script call: amortizes the call and sums repeated keys, while keeping each
/// call (which blocks the Redis thread) to a few milliseconds (~3 ms on the README's VM).
pub(super) const EVENTS_PER_CALL: usize = 200;

pub(super) static APPLY_EVENTS: LazyLock<(String, redis::Script)> = LazyLock::new(|| {
    let code = APPLY_EVENTS_LUA
        .replace("HISTORY_IMPRESSIONS", &HISTORY_IMPRESSIONS.to_string())
        .replace("HISTORY_HORIZON", &HISTORY_HORIZON_SECONDS.to_string())
        .replace("SWEEP_EVERY", &HISTORY_SWEEP_EVERY.to_string())
        .replace("HISTORY_ITEMS", &HISTORY_ITEMS.to_string())
        .replace("AFFINITY_NAMES", &AFFINITY_NAMES.to_string())
        .replace(
            "USER_FIELDS",
            &USER_COUNTS
                .iter()
                .enumerate()
                .map(|(k, f)| format!("{f} = {}", k + 1))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .replace("RECENT_ITEMS", &RECENT_ITEMS.to_string())
        .replace("STATS_FORMAT", &format!("'<{}'", "d".repeat(STATS_VALUES)))
        .replace("STATS_BYTES", &(STATS_VALUES * 8).to_string())
        .replace("STATS_VALUES", &STATS_VALUES.to_string())
        .replace("STATS_FIELD", STATS_FIELD);
    let script = redis::Script::new(&code);
    (code, script)
});

/// The `stats` field of an item's counts and windows (its trending score lives in a zset).
pub(super) fn encode_stats(stats: &ItemStats) -> Vec<u8> {
    let mut out = Vec::with_capacity(STATS_VALUES * 8);
    let counts = [
        stats.impressions,
        stats.clicks,
        stats.add_to_carts,
        stats.purchases,
    ];
    for v in counts {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for w in &stats.windows {
        for v in [w.bucket as f64]
            .iter()
            .chain(&w.current)
            .chain(&w.previous)
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// The counts and windows of an `stats` field, into `stats` (all zero if the field is
/// missing or malformed).
pub(super) fn decode_stats(raw: Option<&[u8]>, stats: &mut ItemStats) {
    let Some(raw) = raw.filter(|r| r.len() == STATS_VALUES * 8) else {
        return;
    };
    let v: Vec<f64> = raw
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    [
        stats.impressions,
        stats.clicks,
        stats.add_to_carts,
        stats.purchases,
    ] = [v[0], v[1], v[2], v[3]];
    stats.windows = std::array::from_fn(|w| {
        let o = 4 + w * 9;
        WindowCounts {
            bucket: v[o] as i64,
            current: std::array::from_fn(|k| v[o + 1 + k]),
            previous: std::array::from_fn(|k| v[o + 5 + k]),
        }
    });
}

/// The keys a call names, each once: operations refer to them by (1-based) position.
#[derive(Default)]
struct KeyTable(IndexSet<String>);

impl KeyTable {
    fn position(&mut self, key: String) -> usize {
        self.0.insert_full(key).0 + 1
    }
}

/// Where event ids are remembered, as of one instant.
pub(super) struct DedupBuckets {
    /// The current bucket's set first, then the three before it.
    sets: [String; 4],
    /// When the current set may go (Unix ms): once out of every window, plus a bucket.
    expire_at_ms: u64,
}

impl DedupBuckets {
    pub(super) fn at(tenant: &str, window: std::time::Duration, now_ms: u64) -> Self {
        let length = (window.as_millis() as u64 / 2).max(1);
        let bucket = now_ms / length;
        Self {
            sets: std::array::from_fn(|back| {
                keys::seen_set(tenant, bucket.saturating_sub(back as u64))
            }),
            expire_at_ms: (bucket + 4) * length,
        }
    }
}

/// One script call applying `events` (each with its catalog item) of `tenant`. Events with
/// an id are checked against `dedup` (none: deduplication is off); a chunk's ids must differ.
pub(super) fn invocation(
    tenant: &str,
    events: &[(&Event, &Item)],
    dedup: Option<&DedupBuckets>,
) -> redis::ScriptInvocation<'static> {
    let mut call = APPLY_EVENTS.1.prepare_invoke();
    let mut table = KeyTable::default();
    match dedup {
        Some(buckets) => {
            let ids: Vec<&str> = events
                .iter()
                .filter_map(|(e, _)| e.event_id.as_deref())
                .collect();
            call.arg(ids.len()).arg(buckets.expire_at_ms);
            if !ids.is_empty() {
                call.arg(ids);
                for set in &buckets.sets {
                    table.position(set.clone());
                }
            }
        }
        None => {
            call.arg(0).arg(0);
        }
    }

    // The chunk's sums, per item and per user, in first-seen order. Of a user the counts,
    // recent items and names; the history goes to the script event by event (below).
    let mut items: IndexMap<&str, (&Item, ItemStats)> = IndexMap::new();
    let mut users: IndexMap<&str, (UserProfile, Names)> = IndexMap::new();
    for (e, item) in events {
        let (_, stats) = items
            .entry(&*item.item_id)
            .or_insert_with(|| (item, ItemStats::default()));
        stats.record(e.kind, e.timestamp);
        let w = e.kind.affinity_weight();
        if w > 0.0 {
            let (profile, names) = users.entry(&e.user_id).or_default();
            profile.record_engagement(w, &item.item_id, item.price);
            for name in [
                (CATEGORY_PREFIX, &*item.category),
                (BRAND_PREFIX, &*item.brand),
            ] {
                *names.entry(name).or_default() += w;
            }
        }
    }

    // Zset increments per key (one read and one write each in the script), members in the
    // order the chunk first touches their items.
    let mut zsets: IndexMap<usize, Vec<(&str, f64)>> = IndexMap::new();
    let trending = table.position(keys::trending(tenant));
    for (item, stats) in items.values() {
        let key = table.position(keys::item(tenant, &item.item_id));
        call.arg("s").arg(key).arg(encode_stats(stats));
        if stats.trending > 0.0 {
            zsets
                .entry(trending)
                .or_default()
                .push((&item.item_id, stats.trending));
        }
        if stats.popularity() > 0.0 {
            let category = table.position(keys::category(tenant, &item.category));
            zsets
                .entry(category)
                .or_default()
                .push((&item.item_id, stats.popularity()));
        }
    }
    for (key, members) in zsets {
        call.arg("z").arg(key).arg(members.len());
        for (member, x) in members {
            call.arg(member).arg(x);
        }
    }
    for (user, (profile, names)) in &users {
        profile_op(&mut call, &mut table, tenant, user, profile, names);
    }
    // Item histories change in event order (an impression after a click counts, before it
    // does not): each user's events in their order, one operation per user.
    let mut histories: IndexMap<&str, Vec<(&str, &str, u32)>> = IndexMap::new();
    for (e, item) in events {
        let code = match e.kind {
            EventKind::Impression => "i",
            EventKind::Click | EventKind::AddToCart => "e",
            EventKind::Purchase => "p",
        };
        histories.entry(&e.user_id).or_default().push((
            &item.item_id,
            code,
            e.timestamp.max(0.0) as u32,
        ));
    }
    for (user, changes) in histories {
        history_op(&mut call, &mut table, tenant, user, &changes);
    }
    for key in table.0 {
        call.key(key);
    }
    call
}

/// A user's affinity names with a chunk's sums, in the order its events first touch them
/// (each event its category, then its brand): the order the embedded store admits new names
/// in under `AFFINITY_NAMES`.
type Names<'a> = IndexMap<(&'static str, &'a str), f32>;

/// Operation `u`: `profile`'s counts, recent items and `names` added to the user's profile.
fn profile_op(
    call: &mut redis::ScriptInvocation<'static>,
    table: &mut KeyTable,
    tenant: &str,
    user: &str,
    profile: &UserProfile,
    names: &Names,
) {
    // The counts in `USER_COUNTS` order, as the string holds them.
    call.arg("u")
        .arg(table.position(keys::profile(tenant, user)))
        .arg(table.position(keys::user(tenant, user)))
        .arg(table.position(keys::recent(tenant, user)))
        .arg(profile.interactions)
        .arg(profile.price_count)
        .arg(f64::from(profile.affinity_total))
        .arg(profile.price_sum)
        .arg(profile.recent_items.len());
    for id in &profile.recent_items {
        call.arg(&**id);
    }
    call.arg(names.len());
    for ((prefix, name), w) in names {
        call.arg(&*profile::escape(&format!("{prefix}{name}")))
            .arg(f64::from(*w));
    }
}

/// Operation `h`: the user's history changed by `changes` (item, code, Unix seconds) in order.
fn history_op(
    call: &mut redis::ScriptInvocation<'static>,
    table: &mut KeyTable,
    tenant: &str,
    user: &str,
    changes: &[(&str, &str, u32)],
) {
    call.arg("h")
        .arg(table.position(keys::history(tenant, user)))
        .arg(table.position(keys::legacy_history(tenant, user)))
        .arg(HISTORY_TTL_SECONDS)
        .arg(changes.len());
    for (item, code, at) in changes {
        call.arg(*item).arg(*code).arg(*at);
    }
}

/// Which of a user's keys are in a layout from before the two strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct OldKeys {
    /// `keys::user` or `keys::recent`: the profile's hash and list.
    pub profile: bool,
    /// `keys::legacy_history`: the history's hash.
    pub history: bool,
}

/// One script call moving `users`' old keys into the two strings: the operations an event
/// chunk makes, with nothing to add (the script moves a user's old keys over before it
/// applies anything). Only what a user has in the old layout is asked for: a profile
/// operation alone would write a profile of zeros.
pub(super) fn move_over(
    tenant: &str,
    users: &[(&str, OldKeys)],
) -> redis::ScriptInvocation<'static> {
    let mut call = APPLY_EVENTS.1.prepare_invoke();
    let mut table = KeyTable::default();
    call.arg(0).arg(0);
    let (nothing, no_names) = (UserProfile::default(), Names::new());
    for &(user, old) in users {
        if old.profile {
            profile_op(&mut call, &mut table, tenant, user, &nothing, &no_names);
        }
        if old.history {
            history_op(&mut call, &mut table, tenant, user, &[]);
        }
    }
    for key in table.0 {
        call.key(key);
    }
    call
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_stays_checked_for_the_whole_window_and_is_dropped_after() {
        let window = std::time::Duration::from_secs(3_600);
        let added_at = 1_800_000_123_456;
        let added_to = &DedupBuckets::at("t", window, added_at).sets[0];
        for offset_s in [0, 1, 1_799, 1_800, 3_000, 3_600] {
            let later = DedupBuckets::at("t", window, added_at + offset_s * 1_000);
            assert!(later.sets[..3].contains(added_to), "+{offset_s} s");
            assert_ne!(&later.sets[3], added_to, "+{offset_s} s");
        }
        let much_later = DedupBuckets::at("t", window, added_at + 5_400_000);
        assert!(!much_later.sets[..3].contains(added_to));
        assert!(much_later.expire_at_ms > added_at + 5_400_000);
    }

    #[test]
    fn stats_round_trip_through_their_encoding() {
        let mut stats = ItemStats::default();
        stats.record(crate::domain::EventKind::Click, 1_800_000_000.0);
        stats.record(crate::domain::EventKind::Impression, 1_800_003_700.0);
        stats.trending = 0.0;
        let encoded = encode_stats(&stats);
        assert_eq!(encoded.len(), STATS_VALUES * 8);
        let mut decoded = ItemStats::default();
        decode_stats(Some(&encoded), &mut decoded);
        assert_eq!(decoded, stats);
        let mut short = ItemStats::default();
        decode_stats(Some(&encoded[1..]), &mut short);
        assert_eq!(short, ItemStats::default());
    }
}
