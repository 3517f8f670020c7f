// @ts-check
// Feed load test: GET /v1/tenants/{tenant}/feed at a fixed or ramping arrival rate.
//
//   k6 run feed.js                                   # 50 req/s for 1m
//   k6 run -e RATE=300 -e DURATION=5m feed.js
//   k6 run -e MODE=ramping -e PEAK_RATE=500 feed.js  # ramp up to 500 req/s and hold
//
// See README.md for every variable and what the thresholds mean.

import { waitUntilReady } from './lib/api.js';
import { SUMMARY_TREND_STATS, sharedThresholds } from './lib/config.js';
import { feedScenario } from './lib/scenarios.js';
import { feedIteration } from './lib/workloads.js';

/** @type {import('k6/options').Options} */
export const options = {
  scenarios: {
    feed: feedScenario('feed', 'RATE', 50),
  },
  thresholds: sharedThresholds(),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  waitUntilReady();
}

export function feed() {
  feedIteration();
}

export default feed;
