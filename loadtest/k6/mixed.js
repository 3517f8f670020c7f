// @ts-check
// Mixed load test: feed reads (most of the traffic), interaction events and catalog updates,
// each its own scenario with its own executor, all running at once.
//
//   k6 run mixed.js                                  # 100 feeds/s, 10 event batches/s, 30 updates/min, 1m
//   k6 run -e FEED_RATE=400 -e EVENTS_RATE=40 -e CATALOG_RATE=120 -e DURATION=10m mixed.js
//   k6 run -e MODE=ramping -e PEAK_RATE=500 mixed.js # feeds ramp; events and catalog stay constant
//
// See README.md for every variable and what the thresholds mean.

import { waitUntilReady } from './lib/api.js';
import {
  MAX_ERROR_RATE,
  MIN_CHECK_RATE,
  SUMMARY_TREND_STATS,
  envNumber,
  envString,
  sharedThresholds,
} from './lib/config.js';
import { constantRate, feedScenario, loadDuration } from './lib/scenarios.js';
import { catalogIteration, eventsIteration, feedIteration } from './lib/workloads.js';

// Feed reads: MODE=constant (FEED_RATE per second) or MODE=ramping (PEAK_RATE...);
// PRE_VUS / MAX_VUS size this scenario only.
const feedsScenario = feedScenario('feeds', 'FEED_RATE', 100);
// Events and catalog updates run as long as the feed reads (DURATION, or the ramp's stages).
const DURATION = envString('DURATION', loadDuration(feedsScenario));

/** @type {import('k6/options').Options} */
export const options = {
  scenarios: {
    feeds: feedsScenario,
    // Interaction events: EVENTS_RATE batches per second.
    events: constantRate('events', envNumber('EVENTS_RATE', 10, 1), '1s', DURATION, false),
    // Catalog updates: CATALOG_RATE upserts of a few items per minute.
    catalog: constantRate('catalog', envNumber('CATALOG_RATE', 30, 1), '1m', DURATION, false),
  },
  thresholds: {
    ...sharedThresholds(),
    // Each scenario must meet the error and check objectives on its own: the few catalog
    // writes would otherwise vanish in the feed volume.
    'http_req_failed{scenario:feeds}': [`rate<${MAX_ERROR_RATE}`],
    'http_req_failed{scenario:events}': [`rate<${MAX_ERROR_RATE}`],
    'http_req_failed{scenario:catalog}': [`rate<${MAX_ERROR_RATE}`],
    'checks{scenario:feeds}': [`rate>${MIN_CHECK_RATE}`],
    'checks{scenario:events}': [`rate>${MIN_CHECK_RATE}`],
    'checks{scenario:catalog}': [`rate>${MIN_CHECK_RATE}`],
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  waitUntilReady();
}

export function feeds() {
  feedIteration();
}

export function events() {
  eventsIteration();
}

export function catalog() {
  catalogIteration();
}
