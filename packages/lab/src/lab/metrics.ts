// The lab's measures (docs/figures.md, `grpc-kube lab --json`): pure functions from the RPC records of a run
// and its pod timeline to the run record, plus the per-client and per-pod views the report draws.
// No clocks, no I/O: every number here can be checked by hand in test/lab/metrics.test.ts.

import type { HarnessRecord } from './harness.js';

/** gRPC status names by code (the wire codes 0..16). */
export const STATUS_NAMES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
] as const;

export type StatusName = (typeof STATUS_NAMES)[number];

export function statusName(code: number): string {
  return STATUS_NAMES[code] ?? `CODE_${code}`;
}

/** The RPCs of a run, column-wise. Row i: started at tMs[i] (ms from run start), answered by
 *  podNames[pod[i]] (pod[i] = -1 when it failed), ended with status code[i] after latencyMs[i]. */
export interface RpcRecordsView {
  readonly length: number;
  readonly tMs: ArrayLike<number>;
  readonly latencyMs: ArrayLike<number>;
  readonly code: ArrayLike<number>;
  readonly pod: ArrayLike<number>;
  readonly client: ArrayLike<number>;
  readonly podNames: readonly string[];
}

/** One pod's life during a run, in ms from run start; null = did not happen during the run. */
export interface PodTimeline {
  name: string;
  readyAtMs: number | null;
  terminatingAtMs: number | null;
  goneAtMs: number | null;
  /** Created during the run (scale-up, rolling update, replacement), as opposed to there at start. */
  isNew: boolean;
}

export interface Percentiles {
  p50: number | null;
  p99: number | null;
}

/** The lab record of one (scenario, strategy) run, keys and order as in docs/figures.md. */
export interface LabRunRecord {
  scenario: string;
  strategy: string;
  cluster: string;
  /** Pods served mutual TLS and every hop spoke TLS (`lab --tls`). */
  tls: boolean;
  /** `lab --manifests`: the deploy/ overlay this run's pods, Services and helpers came from. */
  overlay?: string;
  rpcs: number;
  failed: number;
  failedByCode: Record<string, number>;
  /** Over new pods that served; null when none did. */
  readyToFirstRpcMs: Percentiles;
  newPodsNeverServed: number;
  /** null when no pod was Ready for the whole steady window or no RPC succeeded in it. */
  balanceMaxOverMean: number | null;
  /** Of successful RPCs; null when none succeeded. */
  latencyMs: Percentiles;
  successRate: number;
  durationMs: number;
  /** Requests the pods received from this strategy's clients (every retry and hedge counts);
   *  null when the pods do not count (`--pod-command`). Set by the lab runner. */
  attempts?: number | null;
  /** (attempts − rpcs) / rpcs in %: the extra load retries and hedges put on the pods. */
  retryLoadPct?: number | null;
  /** canary-shift: the canary's share of the RPCs per weight phase (src/lab/canary.ts); set by the lab runner. */
  canary?: import('./canary.js').CanaryFigures;
  /** The blackhole scenario's figures (src/lab/blackhole.ts); set by the lab runner. */
  blackhole?: import('./blackhole.js').BlackholeFigures;
  /** How loaded the lab itself was (present in every record the lab writes; see harness.ts). */
  harness?: HarnessRecord;
}

/** One RPC as a row, for building records by hand (tests, imports). */
export interface RpcRow {
  tMs: number;
  pod: string;
  code: string | number;
  latencyMs: number;
  client?: number;
}

/** Build an RpcRecordsView from rows (tests and small inputs; the workload's RpcLog is the fast path). */
export function recordsFromRows(rows: readonly RpcRow[]): RpcRecordsView {
  const podNames: string[] = [];
  const index = new Map<string, number>();
  const codeOf = (c: string | number): number => {
    if (typeof c === 'number') return c;
    const i = (STATUS_NAMES as readonly string[]).indexOf(c);
    if (i < 0) throw new RangeError(`unknown status name ${c}`);
    return i;
  };
  const pod = rows.map((r) => {
    if (r.pod === '') return -1;
    let i = index.get(r.pod);
    if (i === undefined) {
      i = podNames.length;
      podNames.push(r.pod);
      index.set(r.pod, i);
    }
    return i;
  });
  return {
    length: rows.length,
    tMs: rows.map((r) => r.tMs),
    latencyMs: rows.map((r) => r.latencyMs),
    code: rows.map((r) => codeOf(r.code)),
    pod,
    client: rows.map((r) => r.client ?? 0),
    podNames,
  };
}

/** Nearest-rank percentile of an ascending array: the smallest value with at least p% at or below it. */
export function percentile(sortedAsc: ArrayLike<number>, p: number): number | null {
  const n = sortedAsc.length;
  if (n === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * n));
  return sortedAsc[Math.min(rank, n) - 1] as number;
}

function percentiles(values: number[] | Float64Array): Percentiles {
  const sorted = Float64Array.from(values).sort();
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

/** Earliest start time of a successful RPC per pod name. */
export function firstServedAtMs(records: RpcRecordsView): Map<string, number> {
  const first = new Float64Array(records.podNames.length).fill(Infinity);
  for (let i = 0; i < records.length; i++) {
    const p = records.pod[i] as number;
    if (p < 0 || records.code[i] !== 0) continue;
    const t = records.tMs[i] as number;
    if (t < (first[p] as number)) first[p] = t;
  }
  const out = new Map<string, number>();
  records.podNames.forEach((name, i) => {
    const t = first[i] as number;
    if (t !== Infinity) out.set(name, t);
  });
  return out;
}

/** Ready-to-first-RPC delay of every new pod that turned Ready and served; the pods that never did. */
export function readyToFirstRpc(
  records: RpcRecordsView,
  timeline: readonly PodTimeline[],
): { delaysMs: number[]; neverServed: string[] } {
  const first = firstServedAtMs(records);
  const delaysMs: number[] = [];
  const neverServed: string[] = [];
  for (const pod of timeline) {
    if (!pod.isNew || pod.readyAtMs === null) continue;
    const t = first.get(pod.name);
    if (t === undefined) neverServed.push(pod.name);
    // An RPC can start a hair before the Ready mark the lab took (the pick happens after the
    // endpoint update, the mark is taken on another path): count that as 0, not negative.
    else delaysMs.push(Math.max(0, t - pod.readyAtMs));
  }
  return { delaysMs, neverServed };
}

/** Pods Ready for all of [fromMs, toMs): ready at or before fromMs, not terminating or gone before toMs. */
export function podsReadyThroughout(
  timeline: readonly PodTimeline[],
  fromMs: number,
  toMs: number,
): string[] {
  return timeline
    .filter(
      (p) =>
        p.readyAtMs !== null &&
        p.readyAtMs <= fromMs &&
        (p.terminatingAtMs === null || p.terminatingAtMs >= toMs) &&
        (p.goneAtMs === null || p.goneAtMs >= toMs),
    )
    .map((p) => p.name);
}

/** Successful RPCs started in [fromMs, toMs) per pod name (pods with none are absent). */
export function rpcsPerPod(
  records: RpcRecordsView,
  fromMs = -Infinity,
  toMs = Infinity,
): Map<string, number> {
  const counts = new Float64Array(records.podNames.length);
  for (let i = 0; i < records.length; i++) {
    const p = records.pod[i] as number;
    if (p < 0 || records.code[i] !== 0) continue;
    const t = records.tMs[i] as number;
    if (t >= fromMs && t < toMs) counts[p]!++;
  }
  const out = new Map<string, number>();
  records.podNames.forEach((name, i) => {
    if ((counts[i] as number) > 0) out.set(name, counts[i] as number);
  });
  return out;
}

/**
 * Largest per-pod share ÷ mean share, over the pods Ready for the whole window: 1.0 is even, one of
 * five pods taking everything is 5.0. RPCs answered by other pods (e.g. one leaving) do not count.
 */
export function balanceMaxOverMean(
  records: RpcRecordsView,
  timeline: readonly PodTimeline[],
  window: readonly [number, number],
): number | null {
  const pods = podsReadyThroughout(timeline, window[0], window[1]);
  if (pods.length === 0) return null;
  const counts = rpcsPerPod(records, window[0], window[1]);
  let total = 0;
  let max = 0;
  for (const name of pods) {
    const c = counts.get(name) ?? 0;
    total += c;
    if (c > max) max = c;
  }
  if (total === 0) return null;
  return (max * pods.length) / total;
}

export interface RunRecordInput {
  scenario: string;
  strategy: string;
  cluster?: string;
  /** Default false. */
  tls?: boolean;
  records: RpcRecordsView;
  timeline: readonly PodTimeline[];
  /** The steady part of the run for balanceMaxOverMean, [fromMs, toMs). */
  steadyWindowMs: readonly [number, number];
  /** Wall duration of the run; default: from the first RPC start to the last RPC end. */
  durationMs?: number;
  /** The harness figures and verdict measured during the run. */
  harness?: HarnessRecord;
}

/** The docs/figures.md record of one run. */
export function computeRunRecord(input: RunRecordInput): LabRunRecord {
  const { records } = input;
  const failedByCode: Record<string, number> = {};
  const okLatencies: number[] = [];
  let failed = 0;
  let firstStart = Infinity;
  let lastEnd = -Infinity;
  for (let i = 0; i < records.length; i++) {
    const code = records.code[i] as number;
    const t = records.tMs[i] as number;
    const lat = records.latencyMs[i] as number;
    if (t < firstStart) firstStart = t;
    if (t + lat > lastEnd) lastEnd = t + lat;
    if (code === 0) {
      okLatencies.push(lat);
    } else {
      failed++;
      const name = statusName(code);
      failedByCode[name] = (failedByCode[name] ?? 0) + 1;
    }
  }
  const { delaysMs, neverServed } = readyToFirstRpc(records, input.timeline);
  const rpcs = records.length;
  return {
    scenario: input.scenario,
    strategy: input.strategy,
    cluster: input.cluster ?? 'embedded',
    tls: input.tls ?? false,
    rpcs,
    failed,
    failedByCode: sortKeys(failedByCode),
    readyToFirstRpcMs: percentiles(delaysMs),
    newPodsNeverServed: neverServed.length,
    balanceMaxOverMean: balanceMaxOverMean(records, input.timeline, input.steadyWindowMs),
    latencyMs: percentiles(okLatencies),
    successRate: rpcs === 0 ? 0 : (rpcs - failed) / rpcs,
    durationMs: input.durationMs ?? (rpcs === 0 ? 0 : lastEnd - firstStart),
    ...(input.harness !== undefined ? { harness: { ...input.harness } } : {}),
  };
}

function sortKeys(o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * Per client index, the pods its successful RPCs reached and how many each: the clusterip finding
 * ("each client's RPCs go to one pod") is `every client has size 1`.
 */
export function podsPerClient(
  records: RpcRecordsView,
  fromMs = -Infinity,
  toMs = Infinity,
): Map<number, Map<string, number>> {
  const out = new Map<number, Map<string, number>>();
  for (let i = 0; i < records.length; i++) {
    const p = records.pod[i] as number;
    const t = records.tMs[i] as number;
    if (p < 0 || records.code[i] !== 0 || t < fromMs || t >= toMs) continue;
    const c = records.client[i] as number;
    let m = out.get(c);
    if (!m) out.set(c, (m = new Map()));
    const name = records.podNames[p] as string;
    m.set(name, (m.get(name) ?? 0) + 1);
  }
  return out;
}

/** Number of distinct pods each client reached, ordered by client index (clients with no success: 0). */
export function distinctPodsPerClient(
  records: RpcRecordsView,
  clients: number,
  fromMs?: number,
  toMs?: number,
): number[] {
  const per = podsPerClient(records, fromMs, toMs);
  return Array.from({ length: clients }, (_, c) => per.get(c)?.size ?? 0);
}

export interface RateSeries {
  bucketMs: number;
  startMs: number;
  /** Number of buckets; bucket b covers [startMs + b·bucketMs, startMs + (b+1)·bucketMs). */
  buckets: number;
  /** Successful RPCs per second per pod, by bucket; pods in order of first appearance in the timeline, then others. */
  pods: { pod: string; rps: number[] }[];
  /** Failed RPCs per second, by bucket. */
  failedRps: number[];
}

/** Per-pod RPC rate over time (by RPC start), for the report's plots. */
export function podRateSeries(
  records: RpcRecordsView,
  options: { bucketMs?: number; startMs?: number; endMs: number; podOrder?: readonly string[] },
): RateSeries {
  const bucketMs = options.bucketMs ?? 250;
  const startMs = options.startMs ?? 0;
  if (!(bucketMs > 0) || !(options.endMs > startMs))
    throw new RangeError('need bucketMs > 0 and endMs > startMs');
  const buckets = Math.ceil((options.endMs - startMs) / bucketMs);
  const perPod = records.podNames.map(() => new Float64Array(buckets));
  const failed = new Float64Array(buckets);
  for (let i = 0; i < records.length; i++) {
    const b = Math.floor(((records.tMs[i] as number) - startMs) / bucketMs);
    if (b < 0 || b >= buckets) continue;
    const p = records.pod[i] as number;
    if (records.code[i] !== 0 || p < 0) failed[b]!++;
    else perPod[p]![b]!++;
  }
  const scale = 1000 / bucketMs;
  const order = [...(options.podOrder ?? [])];
  for (const n of records.podNames) if (!order.includes(n)) order.push(n);
  const pods = order.map((pod) => {
    const idx = records.podNames.indexOf(pod);
    const counts = idx >= 0 ? (perPod[idx] as Float64Array) : new Float64Array(buckets);
    return { pod, rps: Array.from(counts, (c) => c * scale) };
  });
  return { bucketMs, startMs, buckets, pods, failedRps: Array.from(failed, (c) => c * scale) };
}

/** Per-endpoint balancer gauges sampled during a run (src/lab/gauge-sampler.ts). */
export interface GaugeSample {
  /** ms from run start. */
  readonly tMs: number;
  readonly points: ReadonlyArray<{
    readonly name: string;
    readonly value: number;
    readonly attributes: Readonly<Record<string, unknown>>;
  }>;
}

/** Outstanding RPCs and latency estimate per endpoint over time, for the report's plots. */
export interface EndpointSeries {
  /** The balancing policy whose gauges these are (grpc_kube.policy). */
  policy: string;
  /** Sample times, ms from run start. */
  tMs: number[];
  /**
   * One entry per endpoint, labelled with its pod when known: RPCs outstanding on it summed over
   * the policy's balancers (one per client channel), and their mean latency estimate (peak EWMA),
   * ms; null where the endpoint was not in the balancers at that sample, and throughout for a
   * policy that keeps no estimate (all zero).
   */
  endpoints: {
    endpoint: string;
    label: string;
    outstanding: (number | null)[];
    latencyMs: (number | null)[];
  }[];
}

/** The load-balancing policy a channel's options configure (first loadBalancingConfig entry). */
export function policyOf(channelOptions: Readonly<Record<string, unknown>>): string | undefined {
  const raw = channelOptions['grpc.service_config'];
  if (typeof raw !== 'string') return undefined;
  try {
    const config = JSON.parse(raw) as { loadBalancingConfig?: Array<Record<string, unknown>> };
    const first = config.loadBalancingConfig?.[0];
    return first === undefined ? undefined : Object.keys(first)[0];
  } catch {
    return undefined;
  }
}

/**
 * The series of one policy's endpoints from the samples (undefined when no sample has any): for
 * every sample, grpc_kube.balancer.outstanding summed and grpc_kube.balancer.ewma_latency averaged
 * over the balancers reporting the endpoint. Endpoints in order of first appearance.
 */
export function endpointSeries(
  samples: readonly GaugeSample[],
  options: { policy: string; label?: (endpoint: string) => string | undefined },
): EndpointSeries | undefined {
  const order: string[] = [];
  const rows = samples.map((s) => {
    const out = new Map<string, { outstanding: number; latencySumS: number; latencyN: number }>();
    for (const p of s.points) {
      if (p.attributes['grpc_kube.policy'] !== options.policy) continue;
      const endpoint = p.attributes['grpc_kube.endpoint'];
      if (typeof endpoint !== 'string') continue;
      let e = out.get(endpoint);
      if (e === undefined) {
        e = { outstanding: 0, latencySumS: 0, latencyN: 0 };
        out.set(endpoint, e);
        if (!order.includes(endpoint)) order.push(endpoint);
      }
      if (p.name === 'grpc_kube.balancer.outstanding') e.outstanding += p.value;
      else if (p.name === 'grpc_kube.balancer.ewma_latency') {
        e.latencySumS += p.value;
        e.latencyN++;
      }
    }
    return out;
  });
  if (order.length === 0) return undefined;
  // A policy without a latency estimate (P2C least-request) reports 0 throughout: say "none".
  const estimates = rows.some((r) => [...r.values()].some((e) => e.latencySumS > 0));
  return {
    policy: options.policy,
    tMs: samples.map((s) => s.tMs),
    endpoints: order.map((endpoint) => ({
      endpoint,
      label: options.label?.(endpoint) ?? endpoint,
      outstanding: rows.map((r) => r.get(endpoint)?.outstanding ?? null),
      latencyMs: rows.map((r) => {
        const e = r.get(endpoint);
        return !estimates || e === undefined || e.latencyN === 0 ? null : (e.latencySumS / e.latencyN) * 1000;
      }),
    })),
  };
}
