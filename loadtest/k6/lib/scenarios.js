// @ts-check
// Scenario builders: open-model (arrival-rate) executors, sized from environment variables.

import { envInt, envNumber, envString } from './config.js';

/** @typedef {import('k6/options').Scenario} Scenario */
/** @typedef {import('k6/options').Stage} Stage */

/**
 * VUs to pre-allocate and the most to allow for `rate` iterations per second. An iteration
 * is expected to take well under 100 ms, so `rate / 5` VUs leave ample headroom; maxVUs
 * covers a slow service without letting k6 itself run away. PRE_VUS / MAX_VUS override
 * them when `fromEnv` is set.
 * @param {number} ratePerSecond
 * @param {boolean} fromEnv
 * @returns {{ preAllocatedVUs: number, maxVUs: number }}
 */
export function vuBudget(ratePerSecond, fromEnv) {
  const defaultPre = Math.max(5, Math.ceil(ratePerSecond / 5));
  const preAllocatedVUs = fromEnv ? envInt('PRE_VUS', defaultPre) : defaultPre;
  const defaultMax = Math.max(50, preAllocatedVUs * 4);
  const maxVUs = fromEnv ? envInt('MAX_VUS', defaultMax) : defaultMax;
  return { preAllocatedVUs, maxVUs: Math.max(maxVUs, preAllocatedVUs) };
}

/**
 * Parses STAGES, e.g. `"30s:50,2m:200,5m:200,30s:0"` (duration:target rate per second).
 * @param {string} spec
 * @returns {Stage[]}
 */
export function parseStages(spec) {
  return spec.split(',').map((entry) => {
    const [duration, target] = entry.trim().split(':');
    const rate = Number(target);
    if (!duration || target === undefined || !Number.isFinite(rate) || rate < 0) {
      throw new Error(`STAGES: "${entry}" is not duration:rate (e.g. 2m:200)`);
    }
    return { duration, target: rate };
  });
}

/**
 * Seconds in a k6 duration such as `90s`, `1m30s`, `2h`, `500ms`.
 * @param {string} duration
 * @returns {number}
 */
export function seconds(duration) {
  const units = /** @type {const} */ ({ ms: 0.001, s: 1, m: 60, h: 3600 });
  let total = 0;
  let matched = '';
  for (const m of duration.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(m[1]) * units[/** @type {keyof typeof units} */ (m[2])];
    matched += m[0];
  }
  if (matched === '' || matched !== duration) {
    throw new Error(`"${duration}" is not a duration such as 30s, 2m or 1m30s`);
  }
  return total;
}

/**
 * How long a scenario built here sends load, as a k6 duration (e.g. `330s`).
 * @param {Scenario} scenario
 * @returns {string}
 */
export function loadDuration(scenario) {
  if ('duration' in scenario && typeof scenario.duration === 'string') {
    return scenario.duration;
  }
  if ('stages' in scenario && Array.isArray(scenario.stages)) {
    return `${scenario.stages.reduce((sum, stage) => sum + seconds(stage.duration), 0)}s`;
  }
  throw new Error(`cannot tell how long a ${scenario.executor} scenario runs`);
}

/**
 * A constant-arrival-rate scenario: `rate` iterations per `timeUnit` for `duration`.
 * @param {string} exec exported function to run
 * @param {number} rate
 * @param {string} timeUnit e.g. `1s`, `1m`
 * @param {string} duration
 * @param {boolean} [vusFromEnv] let PRE_VUS / MAX_VUS size this scenario
 * @returns {Scenario}
 */
export function constantRate(exec, rate, timeUnit, duration, vusFromEnv = true) {
  const perSecond = timeUnit === '1m' ? rate / 60 : rate;
  return {
    executor: 'constant-arrival-rate',
    exec,
    rate,
    timeUnit,
    duration,
    ...vuBudget(perSecond, vusFromEnv),
  };
}

/**
 * The feed scenario, chosen by MODE:
 * - `constant` (default): `rateVar` requests per second (default `defaultRate`) for
 *   DURATION (default 1m);
 * - `ramping`: from START_RATE up to PEAK_RATE (default 200) over RAMP_DURATION (2m), held
 *   for HOLD_DURATION (3m), then down over 30s; or the stages given in STAGES.
 * @param {string} exec exported function to run
 * @param {string} rateVar environment variable holding the constant rate
 * @param {number} defaultRate requests per second when `rateVar` is unset
 * @returns {Scenario}
 */
export function feedScenario(exec, rateVar, defaultRate) {
  const mode = envString('MODE', 'constant');
  if (mode === 'constant') {
    const rate = envNumber(rateVar, defaultRate, 1);
    return constantRate(exec, rate, '1s', envString('DURATION', '1m'));
  }
  if (mode === 'ramping') {
    const peak = envNumber('PEAK_RATE', 200, 1);
    const stages = __ENV.STAGES
      ? parseStages(__ENV.STAGES)
      : [
          { duration: envString('RAMP_DURATION', '2m'), target: peak },
          { duration: envString('HOLD_DURATION', '3m'), target: peak },
          { duration: '30s', target: 0 },
        ];
    const highest = Math.max(...stages.map((s) => s.target));
    return {
      executor: 'ramping-arrival-rate',
      exec,
      startRate: envNumber('START_RATE', Math.max(1, Math.round(highest / 10))),
      timeUnit: '1s',
      stages,
      ...vuBudget(highest, true),
    };
  }
  throw new Error(`MODE=${JSON.stringify(mode)}: expected "constant" or "ramping"`);
}
