// @ts-check
// Events load test: POST /v1/tenants/{tenant}/events with batches of 1-100 events. About one
// batch in five first fetches a feed and reports impressions/clicks carrying its request_id.
//
//   k6 run events.js                                 # 10 batches/s for 1m
//   k6 run -e RATE=50 -e DURATION=5m events.js
//
// See README.md for every variable and what the thresholds mean.

import { waitUntilReady } from './lib/api.js';
import {
  MAX_ERROR_RATE,
  SUMMARY_TREND_STATS,
  envNumber,
  envString,
  sharedThresholds,
} from './lib/config.js';
import { constantRate } from './lib/scenarios.js';
import { eventsIteration } from './lib/workloads.js';

/** @type {import('k6/options').Options} */
export const options = {
  scenarios: {
    events: constantRate('events', envNumber('RATE', 10, 1), '1s', envString('DURATION', '1m')),
  },
  thresholds: {
    ...sharedThresholds(),
    // The event posts on their own, apart from the feed requests made along the way.
    'http_req_failed{name:events}': [`rate<${MAX_ERROR_RATE}`],
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  waitUntilReady();
}

export function events() {
  eventsIteration();
}

export default events;
