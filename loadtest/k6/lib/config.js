// @ts-check
// Shared configuration for the EagleRank k6 scripts: where the service is, which tenants to
// use and how to weigh them, who the users are, which `limit` values to ask for, and the
// pass/fail thresholds (they mirror the production alert rules).
//
// Everything is read from environment variables (`k6 run -e NAME=value` or the process
// environment); see README.md for the full list.

/**
 * A tenant and its share of the traffic.
 * @typedef {object} Tenant
 * @property {string} id      Tenant id, as in `/v1/tenants/{id}/...`.
 * @property {string} key     API key, sent as `Authorization: Bearer <key>`.
 * @property {number} weight  Relative share of the requests (any positive number).
 */

/** @typedef {{ [metric: string]: string[] }} Thresholds */

// --- Environment helpers -----------------------------------------------------------------

/**
 * A string from the environment, or `fallback` when unset or empty.
 * @param {string} name
 * @param {string} fallback
 * @returns {string}
 */
export function envString(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

/**
 * A number from the environment, or `fallback` when unset or empty. Anything that is not a
 * finite number >= `min` aborts the test at start-up (a typo must not silently become 0).
 * @param {string} name
 * @param {number} fallback
 * @param {number} [min]
 * @returns {number}
 */
export function envNumber(name, fallback, min = 0) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min) {
    throw new Error(`${name}=${JSON.stringify(raw)}: expected a number >= ${min}`);
  }
  return value;
}

/**
 * A positive integer from the environment (see {@link envNumber}).
 * @param {string} name
 * @param {number} fallback
 * @returns {number}
 */
export function envInt(name, fallback) {
  const value = envNumber(name, fallback, 1);
  if (!Number.isInteger(value)) {
    throw new Error(`${name}=${JSON.stringify(__ENV[name])}: expected a whole number`);
  }
  return value;
}

// --- Service and tenants -------------------------------------------------------------------

/** Base URL of the service, without a trailing slash. */
export const BASE_URL = envString('EAGLERANK_URL', 'http://127.0.0.1:8080').replace(/\/+$/, '');

/** The demo tenants seeded by the default configuration, weighted 70/30. */
export const DEFAULT_TENANTS =
  'demo-a:er_demo_a_7Qk2mV9xLp4sT8wZ:70,demo-b:er_demo_b_3Hn6rB1yKc5dF0jU:30';

/** Tenant ids and user/item ids share the service's id rule. */
const ID_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * Parses `"tenant:KEY:weight,tenant:KEY:weight"`. The weight may be omitted (it is then 1).
 * @param {string} spec
 * @returns {Tenant[]}
 */
export function parseTenants(spec) {
  /** @type {Tenant[]} */
  const tenants = [];
  for (const entry of spec.split(',')) {
    const trimmed = entry.trim();
    if (trimmed === '') {
      continue;
    }
    const parts = trimmed.split(':');
    if (parts.length < 2 || parts.length > 3) {
      throw new Error(`EAGLERANK_TENANTS: "${trimmed}" is not tenant:KEY[:weight]`);
    }
    const [id, key, weightText] = parts;
    if (!ID_PATTERN.test(id) || key === '') {
      throw new Error(`EAGLERANK_TENANTS: "${trimmed}" needs a valid tenant id and a key`);
    }
    const weight = weightText === undefined || weightText === '' ? 1 : Number(weightText);
    if (!Number.isFinite(weight) || weight <= 0) {
      throw new Error(`EAGLERANK_TENANTS: weight of "${id}" must be a positive number`);
    }
    tenants.push({ id, key, weight });
  }
  if (tenants.length === 0) {
    throw new Error('EAGLERANK_TENANTS: no tenant given');
  }
  return tenants;
}

/** The tenants under test, from EAGLERANK_TENANTS (default: the two demo tenants, 70/30). */
export const TENANTS = parseTenants(envString('EAGLERANK_TENANTS', DEFAULT_TENANTS));

const TOTAL_WEIGHT = TENANTS.reduce((sum, t) => sum + t.weight, 0);

/**
 * A tenant drawn according to the weights.
 * @returns {Tenant}
 */
export function pickTenant() {
  let r = Math.random() * TOTAL_WEIGHT;
  for (const tenant of TENANTS) {
    r -= tenant.weight;
    if (r < 0) {
      return tenant;
    }
  }
  return TENANTS[TENANTS.length - 1];
}

/**
 * Request headers carrying the tenant's API key.
 * @param {Tenant} tenant
 * @param {boolean} [json] also set `Content-Type: application/json` (for request bodies)
 * @returns {{ [name: string]: string }}
 */
export function authHeaders(tenant, json = false) {
  /** @type {{ [name: string]: string }} */
  const headers = { Authorization: `Bearer ${tenant.key}` };
  if (json) {
    headers['Content-Type'] = 'application/json';
  }
  return headers;
}

/**
 * `/v1/tenants/{tenant}/<resource>` as a full URL.
 * @param {Tenant} tenant
 * @param {string} resource e.g. `feed`, `items`, `events`
 * @returns {string}
 */
export function tenantUrl(tenant, resource) {
  return `${BASE_URL}/v1/tenants/${encodeURIComponent(tenant.id)}/${resource}`;
}

// --- Users, items and request shapes ---------------------------------------------------------

/** Users known to the service: u0 .. u{USERS-1} (the demo store seeds 2000 per tenant). */
export const USERS = envInt('EAGLERANK_USERS', 2000);

/** Items known to the service: i0 .. i{ITEMS-1} (the demo store seeds 5000 per tenant). */
export const ITEMS = envInt('EAGLERANK_ITEMS', 5000);

/** The hot set: the first 20% of the known users... */
const HOT_USERS = Math.max(1, Math.round(USERS * 0.2));
/** ...receive 80% of the requests. */
const HOT_SHARE = 0.8;
/** Requests for users the service has never seen (cold start). */
const NEW_USER_SHARE = 0.05;
// The remaining 15% go to the long tail: the other 80% of the known users.

/**
 * `n` random characters of [a-z0-9].
 * @param {number} n
 * @returns {string}
 */
export function randomToken(n) {
  let s = '';
  while (s.length < n) {
    s += Math.floor(Math.random() * 36).toString(36);
  }
  return s;
}

/**
 * A uniformly random integer in [lo, hi].
 * @param {number} lo
 * @param {number} hi
 * @returns {number}
 */
export function randomInt(lo, hi) {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}

/**
 * A user id with a realistic skew: 80% of the draws come from the hot 20% of the users,
 * 15% from the long tail, and 5% are users the service has never seen.
 * @returns {string}
 */
export function pickUser() {
  const r = Math.random();
  if (r < NEW_USER_SHARE) {
    return `k6-new-${randomToken(12)}`;
  }
  if (r < NEW_USER_SHARE + HOT_SHARE || HOT_USERS >= USERS) {
    return `u${randomInt(0, HOT_USERS - 1)}`;
  }
  return `u${randomInt(HOT_USERS, USERS - 1)}`;
}

/**
 * A known item id, uniformly.
 * @returns {string}
 */
export function pickItem() {
  return `i${randomInt(0, ITEMS - 1)}`;
}

/** `limit` values and their shares: mostly the default page of 20. */
const LIMIT_MIX = [
  { limit: 20, share: 0.7 },
  { limit: 10, share: 0.15 },
  { limit: 50, share: 0.1 },
  { limit: 100, share: 0.05 },
];

/**
 * A `limit` for a feed request, drawn from the mix above.
 * @returns {number}
 */
export function pickLimit() {
  let r = Math.random();
  for (const { limit, share } of LIMIT_MIX) {
    r -= share;
    if (r < 0) {
      return limit;
    }
  }
  return 20;
}

// --- Thresholds ------------------------------------------------------------------------------
// These mirror the alert rules (monitoring/prometheus/rules/alerts.yml): a run that would page
// or ticket someone fails (k6 exits non-zero).
//   EagleRankFeedLatencyHigh:     per tenant, p99 of the feed latency > 100 ms
//   EagleRankFeedErrorRatioHigh:  per tenant, feed error ratio > 1%
// The alert leaves client errors (4xx, 429 included) out of the ratio; k6's http_req_failed
// counts them, which is stricter and right for a load test that only sends valid requests.

/** p(99) of the feed request duration, in milliseconds. */
export const FEED_P99_MS = 100;
/** Largest acceptable share of failed requests (k6 counts any status outside 200-399). */
export const MAX_ERROR_RATE = 0.01;
/** Smallest acceptable share of passing checks. */
export const MIN_CHECK_RATE = 0.99;

/**
 * The feed objectives, overall and per tenant (so that one slow or failing tenant cannot
 * hide behind a healthy one): p(99) latency and error rate. Feed requests are tagged
 * `name:feed` and `tenant:<id>`.
 * @returns {Thresholds}
 */
export function feedThresholds() {
  /** @type {Thresholds} */
  const thresholds = { 'http_req_duration{name:feed}': [`p(99)<${FEED_P99_MS}`] };
  for (const tenant of TENANTS) {
    thresholds[`http_req_duration{name:feed,tenant:${tenant.id}}`] = [`p(99)<${FEED_P99_MS}`];
    thresholds[`http_req_failed{name:feed,tenant:${tenant.id}}`] = [`rate<${MAX_ERROR_RATE}`];
  }
  return thresholds;
}

/**
 * The thresholds every script shares: the feed objectives, the overall error rate, checks.
 * @returns {Thresholds}
 */
export function sharedThresholds() {
  return {
    ...feedThresholds(),
    http_req_failed: [`rate<${MAX_ERROR_RATE}`],
    checks: [`rate>${MIN_CHECK_RATE}`],
  };
}

/** Show p(99) in the end-of-test summary, since that is what the thresholds judge. */
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'];
