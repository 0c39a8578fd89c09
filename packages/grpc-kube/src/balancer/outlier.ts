// Outlier detection with gRFC A50 semantics, inside grpc-kube's policies: every `intervalMs` the
// call counts of the last interval are swapped out; the success-rate check ejects endpoints whose
// success rate is below mean − stdev × stdevFactor/1000, the failure-percentage check those above
// `threshold` %; never more than maxEjectionPercent of the endpoints are out at once. An ejected
// endpoint returns after min(baseEjectionTimeMs × multiplier, max(baseEjectionTimeMs,
// maxEjectionTimeMs)); the multiplier grows by one per ejection and shrinks by one per interval spent
// in service. Unlike grpc-js's outlier_detection wrapper, time and the enforcement draw come from the
// policy runtime (so tests are exact), and only statuses that say "this server could not serve" count
// as failures: an application error (NOT_FOUND, INVALID_ARGUMENT…) says nothing about the pod.
//
// Failure accrual also honours the server's own request to back off: a call ending with
// `grpc-retry-pushback-ms` (gRFC A6) keeps its endpoint out of picks for that long (capped), and
// RESOURCE_EXHAUSTED without pushback counts as a failure like UNAVAILABLE.

import { status as Status, type Metadata } from '@grpc/grpc-js';
import { asObject, readNumber, rejectUnknown } from './config.js';

export interface SuccessRateEjection {
  readonly stdevFactor: number;
  readonly enforcementPercentage: number;
  readonly minimumHosts: number;
  readonly requestVolume: number;
}

export interface FailurePercentageEjection {
  readonly threshold: number;
  readonly enforcementPercentage: number;
  readonly minimumHosts: number;
  readonly requestVolume: number;
}

export interface OutlierDetectionConfig {
  readonly intervalMs: number;
  readonly baseEjectionTimeMs: number;
  readonly maxEjectionTimeMs: number;
  readonly maxEjectionPercent: number;
  readonly successRateEjection: SuccessRateEjection | undefined;
  readonly failurePercentageEjection: FailurePercentageEjection | undefined;
}

/** The service-config form of OutlierDetectionConfig (every field optional). */
export interface OutlierDetectionJson {
  intervalMs?: number;
  baseEjectionTimeMs?: number;
  maxEjectionTimeMs?: number;
  maxEjectionPercent?: number;
  successRateEjection?: Partial<SuccessRateEjection>;
  failurePercentageEjection?: Partial<FailurePercentageEjection>;
}

/** gRFC A50's defaults (the same as Envoy's). */
export const OUTLIER_DEFAULTS = Object.freeze({
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionTimeMs: 300_000,
  maxEjectionPercent: 10,
  successRateEjection: Object.freeze({
    stdevFactor: 1900,
    enforcementPercentage: 100,
    minimumHosts: 5,
    requestVolume: 100,
  }),
  failurePercentageEjection: Object.freeze({
    threshold: 85,
    enforcementPercentage: 100,
    minimumHosts: 5,
    requestVolume: 50,
  }),
});

/** A server asking for more than this is still honoured, but only for this long. */
export const MAX_PUSHBACK_MS = 30_000;

/** Statuses that say the endpoint could not serve the call (A50 counts every non-OK; see header). */
const FAILURES = new Set<number>([
  Status.UNAVAILABLE,
  Status.RESOURCE_EXHAUSTED,
  Status.DEADLINE_EXCEEDED,
  Status.INTERNAL,
  Status.UNKNOWN,
  Status.DATA_LOSS,
]);

/** Per-endpoint accrual, kept on the endpoint's stats so every picker snapshot shares it. */
export class OutlierState {
  successes = 0;
  failures = 0;
  lastSuccesses = 0;
  lastFailures = 0;
  /** When it was last ejected, or null while in service. */
  ejectedAtMs: number | null = null;
  multiplier = 0;
  /** Picks avoid the endpoint until then (server pushback). */
  avoidUntilMs = -Infinity;
}

/**
 * Count one finished call. CANCELLED is the caller's doing and is not counted. Pushback applies
 * whatever the status: a server may shed load with any code.
 */
export function accrue(
  state: OutlierState,
  code: number,
  trailers: Metadata | undefined,
  nowMs: number,
): void {
  if (code === Status.CANCELLED) return;
  if (FAILURES.has(code)) state.failures++;
  else state.successes++;
  const pushback = pushbackMs(trailers);
  if (pushback !== null) state.avoidUntilMs = Math.max(state.avoidUntilMs, nowMs + pushback);
}

/** `grpc-retry-pushback-ms` as a bounded delay; null when absent or not a non-negative integer. */
export function pushbackMs(trailers: Metadata | undefined): number | null {
  const raw = trailers?.get('grpc-retry-pushback-ms')[0];
  if (typeof raw !== 'string' || !/^\d{1,10}$/.test(raw)) return null;
  return Math.min(Number(raw), MAX_PUSHBACK_MS);
}

/** How long an ejection with this multiplier lasts. */
export function ejectionDurationMs(config: OutlierDetectionConfig, multiplier: number): number {
  return Math.min(
    config.baseEjectionTimeMs * multiplier,
    Math.max(config.baseEjectionTimeMs, config.maxEjectionTimeMs),
  );
}

export interface OutlierEntry {
  readonly name: string;
  readonly outlier: OutlierState;
}

/**
 * One A50 interval, in A50's order: swap buckets, success-rate check, failure-percentage check, then
 * un-eject those whose time is up and cool the multiplier of those in service. Returns true when the
 * set of ejected endpoints changed.
 */
export function runOutlierChecks(
  entries: readonly OutlierEntry[],
  config: OutlierDetectionConfig,
  nowMs: number,
  random: () => number,
): boolean {
  let changed = false;
  for (const { outlier: s } of entries) {
    s.lastSuccesses = s.successes;
    s.lastFailures = s.failures;
    s.successes = 0;
    s.failures = 0;
  }
  const total = entries.length;
  let ejected = entries.filter((e) => e.outlier.ejectedAtMs !== null).length;
  const room = (): boolean => total > 0 && (ejected * 100) / total < config.maxEjectionPercent;
  const eject = (s: OutlierState, percentage: number): void => {
    if (s.ejectedAtMs !== null || random() * 100 >= percentage) return;
    s.ejectedAtMs = nowMs;
    s.multiplier++;
    ejected++;
    changed = true;
  };
  const volume = (s: OutlierState): number => s.lastSuccesses + s.lastFailures;

  const sr = config.successRateEjection;
  if (sr !== undefined) {
    const measured = entries.filter((e) => volume(e.outlier) >= sr.requestVolume);
    if (measured.length >= sr.minimumHosts && measured.length > 0) {
      const rates = measured.map((e) => e.outlier.lastSuccesses / volume(e.outlier));
      const mean = rates.reduce((a, b) => a + b, 0) / rates.length;
      const variance = rates.reduce((a, r) => a + (r - mean) * (r - mean), 0) / rates.length;
      const threshold = mean - Math.sqrt(variance) * (sr.stdevFactor / 1000);
      for (const [k, e] of measured.entries()) {
        if (!room()) break;
        if ((rates[k] as number) < threshold) eject(e.outlier, sr.enforcementPercentage);
      }
    }
  }
  const fp = config.failurePercentageEjection;
  if (fp !== undefined) {
    const measured = entries.filter((e) => volume(e.outlier) >= fp.requestVolume);
    if (measured.length >= fp.minimumHosts) {
      for (const e of measured) {
        if (!room()) break;
        const s = e.outlier;
        if ((s.lastFailures * 100) / volume(s) > fp.threshold) eject(s, fp.enforcementPercentage);
      }
    }
  }
  for (const { outlier: s } of entries) {
    if (s.ejectedAtMs === null) {
      if (s.multiplier > 0) s.multiplier--;
    } else if (nowMs >= s.ejectedAtMs + ejectionDurationMs(config, s.multiplier)) {
      s.ejectedAtMs = null;
      changed = true;
    }
  }
  return changed;
}

const TOP_FIELDS = [
  'intervalMs',
  'baseEjectionTimeMs',
  'maxEjectionTimeMs',
  'maxEjectionPercent',
  'successRateEjection',
  'failurePercentageEjection',
] as const;
const SHARED_FIELDS = ['enforcementPercentage', 'minimumHosts', 'requestVolume'] as const;

/** Parse `outlierDetection` (camelCase A50 fields); an absent ejection kind is off, as in A50. */
export function parseOutlierDetection(value: unknown, field: string): OutlierDetectionConfig {
  const obj = asObject(value, field);
  rejectUnknown(obj, TOP_FIELDS, field);
  const d = OUTLIER_DEFAULTS;
  const ms = (key: string, fallback: number): number =>
    readNumber(obj, key, field, { min: 0, minExclusive: true }, fallback);
  const shared = (
    o: Record<string, unknown>,
    f: string,
    dd: { enforcementPercentage: number; minimumHosts: number; requestVolume: number },
  ) => ({
    enforcementPercentage: readNumber(
      o,
      'enforcementPercentage',
      f,
      { min: 0, max: 100 },
      dd.enforcementPercentage,
    ),
    minimumHosts: readNumber(o, 'minimumHosts', f, { min: 1 }, dd.minimumHosts),
    requestVolume: readNumber(o, 'requestVolume', f, { min: 1 }, dd.requestVolume),
  });
  let successRateEjection: SuccessRateEjection | undefined;
  if (obj.successRateEjection !== undefined) {
    const f = `${field}.successRateEjection`;
    const o = asObject(obj.successRateEjection, f);
    rejectUnknown(o, ['stdevFactor', ...SHARED_FIELDS], f);
    const dd = d.successRateEjection;
    successRateEjection = Object.freeze({
      stdevFactor: readNumber(o, 'stdevFactor', f, { min: 0 }, dd.stdevFactor),
      ...shared(o, f, dd),
    });
  }
  let failurePercentageEjection: FailurePercentageEjection | undefined;
  if (obj.failurePercentageEjection !== undefined) {
    const f = `${field}.failurePercentageEjection`;
    const o = asObject(obj.failurePercentageEjection, f);
    rejectUnknown(o, ['threshold', ...SHARED_FIELDS], f);
    const dd = d.failurePercentageEjection;
    failurePercentageEjection = Object.freeze({
      threshold: readNumber(o, 'threshold', f, { min: 0, max: 100 }, dd.threshold),
      ...shared(o, f, dd),
    });
  }
  return Object.freeze({
    intervalMs: ms('intervalMs', d.intervalMs),
    baseEjectionTimeMs: ms('baseEjectionTimeMs', d.baseEjectionTimeMs),
    maxEjectionTimeMs: ms('maxEjectionTimeMs', d.maxEjectionTimeMs),
    maxEjectionPercent: readNumber(
      obj,
      'maxEjectionPercent',
      field,
      { min: 0, max: 100 },
      d.maxEjectionPercent,
    ),
    successRateEjection,
    failurePercentageEjection,
  });
}

/** The JSON form, every field spelled out so the round trip is exact. */
export function outlierDetectionToJson(c: OutlierDetectionConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {
    intervalMs: c.intervalMs,
    baseEjectionTimeMs: c.baseEjectionTimeMs,
    maxEjectionTimeMs: c.maxEjectionTimeMs,
    maxEjectionPercent: c.maxEjectionPercent,
  };
  if (c.successRateEjection !== undefined) out.successRateEjection = { ...c.successRateEjection };
  if (c.failurePercentageEjection !== undefined)
    out.failurePercentageEjection = { ...c.failurePercentageEjection };
  return out;
}

/**
 * Outlier detection for pods behind a Service: the xDS control plane puts it in every Cluster, and
 * clientDefaults({ outlierDetection: true }) in the service config. A pod failing more than half its
 * calls over 10 s is ejected for 30 s (growing with each ejection) as soon as 3 pods have 20 calls
 * to compare; the success-rate check keeps Envoy's defaults (5 hosts, 100 calls, mean − 1.9 stdev).
 * At most a fifth of the pods are out.
 */
export const KUBE_OUTLIER_DETECTION: OutlierDetectionConfig = parseOutlierDetection(
  {
    intervalMs: 10_000,
    baseEjectionTimeMs: 30_000,
    maxEjectionTimeMs: 300_000,
    maxEjectionPercent: 20,
    successRateEjection: {},
    failurePercentageEjection: { threshold: 50, minimumHosts: 3, requestVolume: 20 },
  },
  'KUBE_OUTLIER_DETECTION',
);

/**
 * The same settings as grpc-js's own `outlier_detection` policy config (A50's snake_case service
 * config), wrapping `childPolicy`: how round_robin gets outlier detection.
 */
export function grpcOutlierDetectionEntry(
  c: OutlierDetectionConfig,
  childPolicy: Record<string, unknown>,
): { outlier_detection: Record<string, unknown> } {
  // grpc-js reads these durations in their protobuf JSON object form, not as "10s" strings.
  const seconds = (ms: number) => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 });
  const od: Record<string, unknown> = {
    interval: seconds(c.intervalMs),
    base_ejection_time: seconds(c.baseEjectionTimeMs),
    max_ejection_time: seconds(c.maxEjectionTimeMs),
    max_ejection_percent: c.maxEjectionPercent,
    child_policy: [childPolicy],
  };
  if (c.successRateEjection !== undefined) od.success_rate_ejection = snakeCase(c.successRateEjection);
  if (c.failurePercentageEjection !== undefined)
    od.failure_percentage_ejection = snakeCase(c.failurePercentageEjection);
  return { outlier_detection: od };
}

function snakeCase(o: object): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(o).map(([k, v]) => [k.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`), v]),
  );
}
