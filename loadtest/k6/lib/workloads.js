// @ts-check
// One iteration of each workload: a feed read, a batch of interaction events, a small catalog
// update. The scripts (feed.js, events.js, mixed.js) only decide how often these run.

import exec from 'k6/execution';

import { getFeed, postEvents, upsertItems } from './api.js';
import {
  envInt,
  envNumber,
  pickItem,
  pickLimit,
  pickTenant,
  pickUser,
  randomInt,
  randomToken,
} from './config.js';

/** @typedef {import('./api.js').CatalogItem} CatalogItem */
/** @typedef {import('./api.js').EventType} EventType */
/** @typedef {import('./api.js').FeedResponse} FeedResponse */
/** @typedef {import('./api.js').InteractionEvent} InteractionEvent */

/**
 * Random per VU and per run, so that ids made by this VU never collide with another VU's or
 * with an earlier run's.
 */
const RUN_TOKEN = randomToken(8);
let sequence = 0;

/**
 * A fresh id, unique across VUs and runs: `<prefix>-<run token>-<vu>-<n>`.
 * @param {string} prefix
 * @returns {string}
 */
function uniqueId(prefix) {
  sequence += 1;
  return `${prefix}-${RUN_TOKEN}-${exec.vu.idInTest}-${sequence}`;
}

/**
 * RFC 3339 timestamp (UTC, milliseconds) of `ms` since the epoch.
 * @param {number} ms
 * @returns {string}
 */
function rfc3339(ms) {
  return new Date(ms).toISOString();
}

// --- Feed ------------------------------------------------------------------------------------

/** One feed request: weighted tenant, skewed user, mixed limit. */
export function feedIteration() {
  getFeed(pickTenant(), pickUser(), pickLimit());
}

// --- Events ----------------------------------------------------------------------------------

/** Largest events batch the scripts send (the service accepts up to 1000). */
const EVENTS_MAX_BATCH = Math.min(envInt('EVENTS_MAX_BATCH', 100), 1000);
/** Share of event batches that first fetch a feed and report what it showed. */
const EVENTS_FROM_FEED = Math.min(envNumber('EVENTS_FROM_FEED', 0.2), 1);

/** Types of events that were not attributed to a feed, and their shares. */
const ORGANIC_MIX = /** @type {const} */ ([
  ['impression', 0.7],
  ['click', 0.2],
  ['add_to_cart', 0.07],
  ['purchase', 0.03],
]);

/** @returns {EventType} */
function pickEventType() {
  let r = Math.random();
  for (const [type, share] of ORGANIC_MIX) {
    r -= share;
    if (r < 0) {
      return type;
    }
  }
  return 'impression';
}

/**
 * `size` events by random users on random items within the last minute, not attributed to a
 * feed request.
 * @param {number} size
 * @returns {InteractionEvent[]}
 */
function organicEvents(size) {
  const now = Date.now();
  /** @type {InteractionEvent[]} */
  const events = [];
  for (let i = 0; i < size; i += 1) {
    events.push({
      event_id: uniqueId('ev'),
      type: pickEventType(),
      user_id: pickUser(),
      item_id: pickItem(),
      timestamp: rfc3339(now - randomInt(0, 60000)),
    });
  }
  return events;
}

/**
 * What a user did with a feed: an impression per item shown, a click on some (favouring the
 * top ranks), and for a few of those an add to cart and a purchase. Every event carries the
 * feed's `request_id`. At most `max` events: impressions of the lowest ranks go first.
 * @param {FeedResponse} feed
 * @param {number} max
 * @returns {InteractionEvent[]}
 */
function feedEvents(feed, max) {
  const shownAt = Date.now() - 30000;
  /**
   * @param {EventType} type
   * @param {string} itemId
   * @param {number} at
   * @returns {InteractionEvent}
   */
  const event = (type, itemId, at) => ({
    event_id: uniqueId('ev'),
    type,
    user_id: feed.user_id,
    item_id: itemId,
    timestamp: rfc3339(at),
    request_id: feed.request_id,
  });
  const shown = feed.items.slice(0, max);
  /** @type {InteractionEvent[]} */
  const funnel = [];
  for (const item of shown) {
    if (Math.random() < 0.25 / Math.max(1, item.rank) + 0.02) {
      funnel.push(event('click', item.item_id, shownAt + randomInt(1000, 10000)));
      if (Math.random() < 0.3) {
        funnel.push(event('add_to_cart', item.item_id, shownAt + randomInt(10000, 20000)));
        if (Math.random() < 0.3) {
          funnel.push(event('purchase', item.item_id, shownAt + randomInt(20000, 30000)));
        }
      }
    }
  }
  const impressions = shown
    .slice(0, Math.max(0, max - funnel.length))
    .map((item) => event('impression', item.item_id, shownAt));
  return [...impressions, ...funnel].slice(0, max);
}

/**
 * One events batch (1 to EVENTS_MAX_BATCH events). Now and then it first fetches a feed and
 * reports impressions and clicks on it, with the feed's `request_id`; otherwise the events
 * are unattributed.
 */
export function eventsIteration() {
  const tenant = pickTenant();
  const size = randomInt(1, EVENTS_MAX_BATCH);
  /** @type {InteractionEvent[]} */
  let events = [];
  if (Math.random() < EVENTS_FROM_FEED) {
    const feed = getFeed(tenant, pickUser(), pickLimit());
    if (feed !== null) {
      events = feedEvents(feed, size);
    }
  }
  if (events.length === 0) {
    events = organicEvents(size);
  }
  postEvents(tenant, events);
}

// --- Catalog ---------------------------------------------------------------------------------

/** Largest number of items per catalog update. */
const CATALOG_MAX_BATCH = Math.min(envInt('CATALOG_MAX_BATCH', 5), 1000);
/** Shape of the demo catalog, so that new items look like the seeded ones. */
const CATEGORIES = envInt('EAGLERANK_CATEGORIES', 24);
const BRANDS = envInt('EAGLERANK_BRANDS', 120);
const COLORS = ['black', 'white', 'red', 'blue', 'green', 'grey'];
/** Items this VU created, per tenant, so that later updates change them (price changes). */
const KEEP_PER_TENANT = 100;
/** @type {Map<string, CatalogItem[]>} */
const createdItems = new Map();

/** @returns {CatalogItem} */
function newItem() {
  return {
    item_id: uniqueId('k6-item'),
    category: `cat-${String(randomInt(0, CATEGORIES - 1)).padStart(2, '0')}`,
    brand: `brand-${String(randomInt(0, BRANDS - 1)).padStart(3, '0')}`,
    // Log-uniform between about 5 and 400.
    price: Math.round(Math.exp(1.6 + Math.random() * 4.4) * 100) / 100,
    created_at: rfc3339(Date.now()),
    attributes: { color: COLORS[randomInt(0, COLORS.length - 1)], source: 'k6' },
  };
}

/**
 * The same item with a new price (within +-15%).
 * @param {CatalogItem} item
 * @returns {CatalogItem}
 */
function repriced(item) {
  const factor = 0.85 + Math.random() * 0.3;
  return { ...item, price: Math.max(0.01, Math.round(item.price * factor * 100) / 100) };
}

/**
 * A small catalog update: 1 to CATALOG_MAX_BATCH items, mostly price changes of items this
 * VU created earlier, otherwise new arrivals. The seeded demo items (i0..) are never
 * overwritten; every item written is named `k6-item-...`.
 */
export function catalogIteration() {
  const tenant = pickTenant();
  const known = createdItems.get(tenant.id) ?? [];
  const size = randomInt(1, CATALOG_MAX_BATCH);
  /** @type {Map<string, CatalogItem>} */
  const batch = new Map();
  for (let attempt = 0; batch.size < size && attempt < size * 3; attempt += 1) {
    if (known.length > 0 && Math.random() < 0.7) {
      const item = repriced(known[randomInt(0, known.length - 1)]);
      batch.set(item.item_id, item);
    } else {
      const item = newItem();
      batch.set(item.item_id, item);
    }
  }
  const items = [...batch.values()];
  if (upsertItems(tenant, items)) {
    const byId = new Map(known.map((item) => [item.item_id, item]));
    for (const item of items) {
      byId.set(item.item_id, item);
    }
    createdItems.set(tenant.id, [...byId.values()].slice(-KEEP_PER_TENANT));
  }
}
