// @ts-check
// One function per EagleRank endpoint: it sends the request with the right headers and tags,
// runs the checks on the answer, and returns what later steps need (e.g. the parsed feed).
//
// Every request is tagged `name:<endpoint>` (so metrics are grouped by URL pattern, not by
// every distinct URL) and `tenant:<id>`.

import http from 'k6/http';
import { check, fail, sleep } from 'k6';

import { BASE_URL, authHeaders, tenantUrl } from './config.js';

/** @typedef {import('./config.js').Tenant} Tenant */
/** @typedef {import('k6/http').RefinedResponse<undefined>} Response */

/**
 * One ranked item of a feed.
 * @typedef {object} FeedItem
 * @property {string} item_id
 * @property {number} score
 * @property {number} rank
 * @property {string[]} sources
 */

/**
 * The 200 answer of `GET /v1/tenants/{tenant}/feed`.
 * @typedef {object} FeedResponse
 * @property {string} tenant
 * @property {string} user_id
 * @property {string} request_id
 * @property {{ name: string, version: string }} model
 * @property {boolean} degraded
 * @property {FeedItem[]} items
 */

/** @typedef {'impression' | 'click' | 'add_to_cart' | 'purchase'} EventType */

/**
 * One interaction event, as `POST /v1/tenants/{tenant}/events` takes it.
 * @typedef {object} InteractionEvent
 * @property {string} event_id
 * @property {EventType} type
 * @property {string} user_id
 * @property {string} item_id
 * @property {string} timestamp   RFC 3339
 * @property {string} [request_id] the feed request that showed the item, when known
 */

/**
 * One catalog item, as `POST /v1/tenants/{tenant}/items` takes it.
 * @typedef {object} CatalogItem
 * @property {string} item_id
 * @property {string} category
 * @property {string} brand
 * @property {number} price
 * @property {string} [created_at] RFC 3339; the service uses the time of the call if absent
 * @property {{ [name: string]: string | number | boolean }} [attributes]
 */

/** Largest batch the service accepts for items and for events. */
export const MAX_BATCH = 1000;

// --- Error reporting -----------------------------------------------------------------------

/** Unexpected answers printed so far by this VU; a few are enough to see what is wrong. */
let errorsLogged = 0;
const MAX_ERRORS_LOGGED = 5;

/**
 * Prints the first few unexpected answers of this VU.
 * @param {string} what
 * @param {Tenant} tenant
 * @param {Response} res
 */
function logUnexpected(what, tenant, res) {
  if (errorsLogged >= MAX_ERRORS_LOGGED) {
    return;
  }
  errorsLogged += 1;
  const body = typeof res.body === 'string' ? res.body.slice(0, 300) : '';
  const transport = res.error ? ` (${res.error})` : '';
  console.warn(`${what} [${tenant.id}]: HTTP ${res.status}${transport} ${body}`);
}

// --- JSON helpers --------------------------------------------------------------------------

/**
 * The response body as JSON, or `undefined` if it is not JSON.
 * @param {Response} res
 * @returns {unknown}
 */
function jsonBody(res) {
  try {
    return res.json();
  } catch (_) {
    return undefined;
  }
}

/**
 * @param {unknown} value
 * @returns {value is { [key: string]: unknown }}
 */
function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * @param {unknown} value
 * @returns {value is FeedItem}
 */
function isFeedItem(value) {
  return (
    isObject(value) &&
    typeof value.item_id === 'string' &&
    typeof value.score === 'number' &&
    typeof value.rank === 'number' &&
    Array.isArray(value.sources)
  );
}

/**
 * Whether a parsed body has the shape of a feed answer.
 * @param {unknown} value
 * @returns {value is FeedResponse}
 */
export function isFeedResponse(value) {
  return (
    isObject(value) &&
    typeof value.tenant === 'string' &&
    typeof value.user_id === 'string' &&
    typeof value.request_id === 'string' &&
    isObject(value.model) &&
    typeof value.model.name === 'string' &&
    typeof value.model.version === 'string' &&
    typeof value.degraded === 'boolean' &&
    Array.isArray(value.items) &&
    value.items.every(isFeedItem)
  );
}

/**
 * @param {FeedItem[]} items
 * @returns {boolean}
 */
function sortedByScoreDesc(items) {
  for (let i = 1; i < items.length; i += 1) {
    if (items[i].score > items[i - 1].score) {
      return false;
    }
  }
  return true;
}

/**
 * @param {FeedItem[]} items
 * @returns {boolean}
 */
function noDuplicates(items) {
  return new Set(items.map((item) => item.item_id)).size === items.length;
}

// --- Endpoints -----------------------------------------------------------------------------

/**
 * `GET /v1/tenants/{tenant}/feed`, with the feed checks. Returns the parsed feed when the
 * answer is a well-formed 200, otherwise `null`.
 * @param {Tenant} tenant
 * @param {string} userId
 * @param {number} limit
 * @returns {FeedResponse | null}
 */
export function getFeed(tenant, userId, limit) {
  const url = `${tenantUrl(tenant, 'feed')}?user_id=${encodeURIComponent(userId)}&limit=${limit}`;
  const res = http.get(url, {
    headers: authHeaders(tenant),
    tags: { name: 'feed', tenant: tenant.id },
  });
  const tags = { tenant: tenant.id };
  const ok = check(res, { 'feed: status 200': (r) => r.status === 200 }, tags);
  if (!ok) {
    logUnexpected('feed', tenant, res);
    return null;
  }
  const body = jsonBody(res);
  const feed = isFeedResponse(body) ? body : null;
  check(
    feed,
    {
      'feed: items sorted by score desc': (f) => f !== null && sortedByScoreDesc(f.items),
      'feed: no duplicate item': (f) => f !== null && noDuplicates(f.items),
      'feed: at most limit items': (f) => f !== null && f.items.length <= limit,
      'feed: not degraded': (f) => f !== null && f.degraded === false,
    },
    tags,
  );
  if (feed === null) {
    logUnexpected('feed (malformed body)', tenant, res);
  }
  return feed;
}

/**
 * `POST /v1/tenants/{tenant}/events`; checks the 202 and the accepted count.
 * @param {Tenant} tenant
 * @param {InteractionEvent[]} events 1 to {@link MAX_BATCH} events
 * @returns {boolean} whether the batch was accepted
 */
export function postEvents(tenant, events) {
  const res = http.post(tenantUrl(tenant, 'events'), JSON.stringify({ events }), {
    headers: authHeaders(tenant, true),
    tags: { name: 'events', tenant: tenant.id },
  });
  const ok = check(
    res,
    {
      'events: status 202': (r) => r.status === 202,
      'events: all accepted': (r) => {
        const body = jsonBody(r);
        return isObject(body) && body.accepted === events.length;
      },
    },
    { tenant: tenant.id },
  );
  if (!ok) {
    logUnexpected('events', tenant, res);
  }
  return ok;
}

/**
 * `POST /v1/tenants/{tenant}/items`; checks the 200 and the upserted count.
 * @param {Tenant} tenant
 * @param {CatalogItem[]} items 1 to {@link MAX_BATCH} items, no item_id twice
 * @returns {boolean} whether the batch was written
 */
export function upsertItems(tenant, items) {
  const res = http.post(tenantUrl(tenant, 'items'), JSON.stringify({ items }), {
    headers: authHeaders(tenant, true),
    tags: { name: 'items', tenant: tenant.id },
  });
  const ok = check(
    res,
    {
      'items: status 200': (r) => r.status === 200,
      'items: all upserted': (r) => {
        const body = jsonBody(r);
        return isObject(body) && body.upserted === items.length;
      },
    },
    { tenant: tenant.id },
  );
  if (!ok) {
    logUnexpected('items', tenant, res);
  }
  return ok;
}

/**
 * For `setup()`: waits until `GET /readyz` answers 200, and aborts the test if it does not
 * within `timeoutSeconds`. A 503 while waiting is expected, so it is not counted as a failed
 * request (it would otherwise count against the error-rate threshold).
 * @param {number} [timeoutSeconds]
 */
export function waitUntilReady(timeoutSeconds = 30) {
  const params = {
    tags: { name: 'readyz' },
    responseCallback: http.expectedStatuses(200, 503),
  };
  const deadline = Date.now() + timeoutSeconds * 1000;
  for (;;) {
    const res = http.get(`${BASE_URL}/readyz`, params);
    if (res.status === 200) {
      return;
    }
    if (Date.now() >= deadline) {
      const body = typeof res.body === 'string' ? res.body.slice(0, 500) : '';
      fail(`${BASE_URL}/readyz did not answer 200 within ${timeoutSeconds}s: ${res.status} ${res.error} ${body}`);
    }
    sleep(1);
  }
}
