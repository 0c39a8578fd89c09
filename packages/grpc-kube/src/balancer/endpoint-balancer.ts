// The grpc-js LoadBalancer contract (updateAddressList → (connectivity state, picker)) shared by
// grpc-kube's policies. One LeafLoadBalancer per endpoint, as grpc-js 1.14's own round_robin does;
// this class decides which endpoints a picker may choose from (never draining or unready ones, the
// local zone first, panic mode), tracks per-endpoint load for the pickers, and leaves the choice
// among candidates to a Scorer: fewest outstanding requests (P2C) or lowest peak-EWMA cost.

import diagnostics from 'node:diagnostics_channel';
import { connectivityState as ConnectivityState, status as Status, Metadata } from '@grpc/grpc-js';
import {
  LeafLoadBalancer,
  QueuePicker,
  UnavailablePicker,
  PickResultType,
  createChildChannelControlHelper,
  endpointToString,
  subchannelAddressToString,
  endpointInfoFrom,
  type ChannelControlHelper,
  type ChannelOptions,
  type GrpcEndpoint,
  type LoadBalancer,
  type PickArgs,
  type PickResult,
  type Picker,
  type StatusOr,
  type TypedLoadBalancingConfig,
} from '../adapter/grpc-js.js';
import type { Endpoint } from '../discovery/endpoint.js';
import { slowStartFactor, type CommonPolicyConfig, type SlowStartConfig } from './config.js';
import { policyRuntime, type PolicyRuntime } from './runtime.js';
import { accrue, OutlierState, runOutlierChecks } from './outlier.js';
import { AttemptLog, CALL_ID_METADATA_KEY } from './attempts.js';
import type { Attributes } from '../metrics/api.js';
import { counterCell, instruments, registerGauges, type CounterCell } from '../metrics/instruments.js';

/**
 * Call metadata carrying the call's absolute deadline (epoch ms), set by callInfoInterceptor():
 * grpc-js's PickArgs carry the metadata but not the deadline.
 */
export const DEADLINE_METADATA_KEY = 'grpc-kube-deadline-ms';

export const BALANCER_CHANNEL_NAME = 'grpc-kube:balancer';
const channel = diagnostics.channel(BALANCER_CHANNEL_NAME);

/** Published on 'grpc-kube:balancer' each time a policy reports a new picker. */
export interface BalancerEvent {
  readonly policy: string;
  /** READY, CONNECTING, TRANSIENT_FAILURE or IDLE. */
  readonly state: string;
  /** Endpoints the picker chooses from (0 unless READY). */
  readonly candidates: number;
  readonly endpoints: number;
  readonly panic: boolean;
  /** True when only local-zone endpoints are candidates. */
  readonly localOnly: boolean;
  /** Endpoints currently ejected by outlier detection. */
  readonly ejected: number;
  readonly error: string | null;
}

function picksCell(attributes: Attributes): CounterCell {
  const key = `${String(attributes['grpc_kube.policy'])}\0${String(attributes['grpc_kube.endpoint'])}`;
  return counterCell('grpc_kube.balancer.picks', key, attributes);
}

/** Mutable per-endpoint load, shared by every picker snapshot that lists the endpoint. */
export class EndpointStats {
  /** Calls started on this endpoint and not yet ended. */
  outstanding = 0;
  /** Calls ended on this endpoint, whatever their status: 0 means nothing is known of it yet. */
  ended = 0;
  /** Start times of those calls, oldest first (Set keeps insertion order, and time only grows). */
  readonly inflight = new Set<{ readonly startedMs: number }>();
  /** Peak-EWMA round-trip estimate, ms, as of `stampMs`. */
  rttMs: number;
  stampMs: number;
  /** Outlier-detection counts, ejection and pushback. */
  readonly outlier = new OutlierState();
  /** grpc_kube.balancer.picks for these attributes, made on the first pick with metrics on. */
  picks: CounterCell | undefined;
  constructor(
    initialRttMs: number,
    nowMs: number,
    /** The endpoint's metric attributes (policy and address). */
    readonly attributes: Attributes = {},
  ) {
    this.rttMs = initialRttMs;
    this.stampMs = nowMs;
  }
  /** How long the oldest call in flight has been running, or 0. */
  oldestInflightMs(nowMs: number): number {
    for (const call of this.inflight) return Math.max(0, nowMs - call.startedMs);
    return 0;
  }
}

/** How a policy compares two candidates and learns from finished calls. */
export interface Scorer {
  /** Lower is better. Must not throw. */
  score(stats: EndpointStats, nowMs: number): number;
  /** A call that started at `startedMs` ended at `nowMs` with grpc status `code`. */
  observe(stats: EndpointStats, startedMs: number, nowMs: number, code: number): void;
  /** The round-trip estimate a new endpoint starts with. */
  readonly initialRttMs: number;
  /** How long a call would take there, for deadline-aware picks; absent = the policy cannot tell. */
  predictMs?(stats: EndpointStats, nowMs: number): number;
}

export interface Candidate {
  readonly name: string;
  readonly picker: Picker;
  readonly stats: EndpointStats;
  /** Endpoint weight from the resolver (1 when unknown). */
  readonly weight: number;
  /** When its slow-start ramp began, or null when it is warm. */
  readonly warmSince: number | null;
}

/**
 * Power of two choices: sample two distinct candidates (with probability proportional to weight ×
 * slow-start factor), keep the one the scorer rates lower; ties go to the first sampled. A later
 * attempt of a call (a retry or a hedge, known from the channel's AttemptLog) is not sampled: it
 * goes to the best endpoint no earlier attempt used. An immutable snapshot of the candidate list;
 * the load it reads is live.
 */
export class TwoChoicePicker implements Picker {
  private readonly uniform: boolean;
  private readonly staticWeights: Float64Array;
  private readonly staticTotal: number;
  /** Until this time some candidate is still ramping and weights must be computed per pick. */
  private readonly rampUntilMs: number;

  constructor(
    readonly candidates: readonly Candidate[],
    private readonly scorer: Scorer,
    private readonly slowStart: SlowStartConfig | undefined,
    private readonly runtime: PolicyRuntime,
    /** The channel's record of where each call's attempts went; none = every pick is a first attempt. */
    private readonly attempts?: AttemptLog,
  ) {
    this.staticWeights = new Float64Array(candidates.map((c) => c.weight));
    this.staticTotal = this.staticWeights.reduce((a, b) => a + b, 0);
    this.uniform = candidates.every((c) => c.weight === candidates[0]?.weight);
    let until = -Infinity;
    if (slowStart !== undefined) {
      for (const c of candidates) {
        if (c.warmSince !== null) until = Math.max(until, c.warmSince + slowStart.windowMs);
      }
    }
    this.rampUntilMs = until;
  }

  /** Weights as of `nowMs`; exposed for tests and the docs' examples. */
  weightsAt(nowMs: number): number[] {
    return this.candidates.map((c) => this.weightOf(c, nowMs));
  }

  private weightOf(c: Candidate, nowMs: number): number {
    if (this.slowStart === undefined || c.warmSince === null) return c.weight;
    return c.weight * slowStartFactor(nowMs - c.warmSince, this.slowStart);
  }

  /** Indexes of the two sampled candidates, in sample order. */
  sample(nowMs: number): [number, number] {
    const n = this.candidates.length;
    const rnd = this.runtime.random;
    if (nowMs >= this.rampUntilMs && this.uniform) {
      const i = Math.min(n - 1, Math.floor(rnd() * n));
      let j = Math.min(n - 2, Math.floor(rnd() * (n - 1)));
      if (j >= i) j++;
      return [i, j];
    }
    let weights: ArrayLike<number> = this.staticWeights;
    let total = this.staticTotal;
    if (nowMs < this.rampUntilMs) {
      const w = this.weightsAt(nowMs);
      weights = w;
      total = w.reduce((a, b) => a + b, 0);
    }
    const i = weightedIndex(weights, total, rnd(), -1);
    const j = weightedIndex(weights, total - (weights[i] ?? 0), rnd(), i);
    return [i, j];
  }

  /**
   * May `c` take a call with `leftMs` to its deadline? Not while its server pushed back, nor when its
   * predicted latency exceeds what is left, nor while it is still answering its first call: an
   * endpoint that has finished no call yet takes one at a time (a probe), so a new pod that turns out
   * slow has one call waiting on it per client, not one per comparison it wins on an estimate that is
   * only a default. (When no candidate is usable, the scores decide as before.)
   */
  usable(c: Candidate, nowMs: number, leftMs: number): boolean {
    if (c.stats.outlier.avoidUntilMs > nowMs) return false;
    if (c.stats.ended === 0 && c.stats.outstanding > 0) return false;
    const predict = this.scorer.predictMs;
    return predict === undefined || leftMs === Infinity || predict(c.stats, nowMs) <= leftMs;
  }

  /** Time left to the call's deadline from the metadata callInfoInterceptor() set, or Infinity. */
  deadlineLeftMs(pickArgs: PickArgs): number {
    const deadline = deadlineOf(pickArgs);
    return deadline === null ? Infinity : deadline - this.wallNow();
  }

  private wallNow(): number {
    return this.runtime.wallNow?.() ?? Date.now();
  }

  pick(pickArgs: PickArgs): PickResult {
    const now = this.runtime.now();
    const callId = this.attempts === undefined ? undefined : pickArgs.metadata.get(CALL_ID_METADATA_KEY)[0];
    const call = typeof callId === 'string' ? callId : undefined;
    const tried = call === undefined ? undefined : this.attempts?.tried(call);
    let chosen: Candidate;
    if (this.candidates.length === 1) {
      chosen = this.candidates[0] as Candidate;
    } else if (tried !== undefined) {
      chosen = this.elsewhere(now, this.deadlineLeftMs(pickArgs), tried);
    } else {
      const [i, j] = this.sample(now);
      const a = this.candidates[i] as Candidate;
      const b = this.candidates[j] as Candidate;
      const left = this.deadlineLeftMs(pickArgs);
      const okA = this.usable(a, now, left);
      const okB = this.usable(b, now, left);
      if (okA !== okB) chosen = okA ? a : b;
      else chosen = this.scorer.score(b.stats, now) < this.scorer.score(a.stats, now) ? b : a;
      // Both samples unfit: look at every candidate once rather than send a call that cannot make it.
      if (!okA && !okB) chosen = this.bestUsable(now, left) ?? chosen;
    }
    const result = chosen.picker.pick(pickArgs);
    if (result.pickResultType !== PickResultType.COMPLETE) return result;
    return this.track(
      result,
      chosen,
      call === undefined ? null : { id: call, deadlineMs: deadlineOf(pickArgs) },
    );
  }

  /**
   * Where a retry or a hedge goes: every candidate is looked at, and the lowest score wins among, in
   * this order, the usable ones no earlier attempt of the call went to, the others no attempt went
   * to, the usable ones, any. A second attempt on the endpoint that holds the first only doubles the
   * wait there (in the slow-pod lab run, a hedge sampled back onto the 10× slow pod, whose estimate
   * was only the lower bound its cancelled attempts had left, missed the deadline with it).
   */
  private elsewhere(nowMs: number, leftMs: number, tried: readonly string[]): Candidate {
    let best = this.candidates[0] as Candidate;
    let bestRank = Infinity;
    let bestScore = Infinity;
    for (const c of this.candidates) {
      const rank = (tried.includes(c.name) ? 2 : 0) + (this.usable(c, nowMs, leftMs) ? 0 : 1);
      if (rank > bestRank) continue;
      const score = this.scorer.score(c.stats, nowMs);
      if (rank < bestRank || score < bestScore) {
        best = c;
        bestRank = rank;
        bestScore = score;
      }
    }
    return best;
  }

  private bestUsable(nowMs: number, leftMs: number): Candidate | undefined {
    let best: Candidate | undefined;
    let bestScore = Infinity;
    for (const c of this.candidates) {
      if (!this.usable(c, nowMs, leftMs)) continue;
      const score = this.scorer.score(c.stats, nowMs);
      if (best === undefined || score < bestScore) {
        best = c;
        bestScore = score;
      }
    }
    return best;
  }

  private track(
    result: PickResult,
    chosen: Candidate,
    callInfo: { readonly id: string; readonly deadlineMs: number | null } | null,
  ): PickResult {
    const { onCallStarted, onCallEnded } = result;
    const { stats, name } = chosen;
    const runtime = this.runtime;
    const scorer = this.scorer;
    const attempts = callInfo === null ? undefined : this.attempts;
    let call: { readonly startedMs: number } | null = null;
    return {
      ...result,
      onCallStarted: () => {
        if (instruments() !== undefined) (stats.picks ??= picksCell(stats.attributes)).value++;
        call = { startedMs: runtime.now() };
        stats.outstanding++;
        stats.inflight.add(call);
        if (attempts !== undefined && callInfo !== null)
          attempts.started(callInfo.id, name, callInfo.deadlineMs, this.wallNow());
        onCallStarted?.();
      },
      onCallEnded: (code, details, metadata) => {
        if (call !== null) {
          stats.outstanding--;
          stats.ended++;
          stats.inflight.delete(call);
          const now = runtime.now();
          scorer.observe(stats, call.startedMs, now, code);
          accrue(stats.outlier, code, metadata, now);
          if (attempts !== undefined && callInfo !== null && code === Status.OK)
            attempts.answered(callInfo.id);
          call = null;
        }
        onCallEnded?.(code, details, metadata);
      },
    };
  }
}

/** The call's absolute deadline (wall-clock ms) from the metadata callInfoInterceptor() set, or null. */
function deadlineOf(pickArgs: PickArgs): number | null {
  const raw = pickArgs.metadata.get(DEADLINE_METADATA_KEY)[0];
  if (typeof raw !== 'string') return null;
  const deadline = Number(raw);
  return Number.isFinite(deadline) ? deadline : null;
}

/** Index drawn with probability ∝ weight, skipping `exclude` (whose weight `total` already omits). */
function weightedIndex(weights: ArrayLike<number>, total: number, r: number, exclude: number): number {
  let target = r * total;
  let last = -1;
  for (let k = 0; k < weights.length; k++) {
    if (k === exclude) continue;
    const w = weights[k] as number;
    if (w <= 0) continue;
    last = k;
    if (target < w) return k;
    target -= w;
  }
  // Rounding, or every weight zero: fall back to the last positive one, else any other index.
  if (last >= 0) return last;
  return exclude === 0 ? 1 : 0;
}

interface Child {
  readonly name: string;
  /** endpointKey() form of each address, to find the resolver's info. */
  readonly keys: readonly string[];
  readonly leaf: InstanceType<typeof LeafLoadBalancer>;
  readonly stats: EndpointStats;
  info: Endpoint | undefined;
  wasReady: boolean;
  lastError: string | null;
  /** False for endpoints of the first address list: they all start together, so no ramp. */
  slowStartApplies: boolean;
  warmSince: number | null;
}

export interface PolicyConfigBase extends TypedLoadBalancingConfig {
  readonly common: CommonPolicyConfig;
}

/** What to call the policy in errors, and how to tell its config apart from others. */
export interface PolicyDescriptor<C extends PolicyConfigBase> {
  readonly typeName: string;
  isConfig(config: TypedLoadBalancingConfig): config is C;
  scorer(config: C): Scorer;
}

export class EndpointBalancer<C extends PolicyConfigBase> implements LoadBalancer {
  private readonly children = new Map<string, Child>();
  private config: C | null = null;
  private scorer: Scorer | null = null;
  private state: number = ConnectivityState.IDLE;
  private updatesPaused = false;
  private destroyed = false;
  private seenEndpoints = false;
  private resolutionNote = '';
  private readonly runtime: PolicyRuntime;
  private outlierTimer: { readonly intervalMs: number; readonly timer: NodeJS.Timeout } | null = null;
  /** Where each unanswered call's attempts went, shared by this channel's successive pickers. */
  private readonly attempts = new AttemptLog();
  private readonly unregisterGauges: () => void;

  constructor(
    private readonly helper: ChannelControlHelper,
    private readonly descriptor: PolicyDescriptor<C>,
    runtime?: PolicyRuntime,
  ) {
    this.runtime = runtime ?? policyRuntime();
    const policy = { 'grpc_kube.policy': descriptor.typeName };
    this.unregisterGauges = registerGauges((observe) => {
      const now = this.runtime.now();
      const slowStart = this.config?.common.slowStart;
      const panic = this.state === ConnectivityState.READY && this.lastShape.panic;
      observe('grpc_kube.balancer.panic', panic ? 1 : 0, policy);
      for (const c of this.children.values()) {
        const a = c.stats.attributes;
        observe('grpc_kube.balancer.outstanding', c.stats.outstanding, a);
        observe('grpc_kube.balancer.ewma_latency', c.stats.rttMs / 1000, a);
        const ramping = slowStart !== undefined && c.warmSince !== null;
        observe(
          'grpc_kube.balancer.slow_start_weight',
          ramping ? slowStartFactor(now - (c.warmSince ?? now), slowStart) : 1,
          a,
        );
      }
    });
  }

  updateAddressList(
    endpointList: StatusOr<GrpcEndpoint[]>,
    lbConfig: TypedLoadBalancingConfig,
    options: ChannelOptions,
    resolutionNote: string,
  ): boolean {
    if (this.destroyed || !this.descriptor.isConfig(lbConfig)) return false;
    this.config = lbConfig;
    this.scorer = this.descriptor.scorer(lbConfig);
    this.resolutionNote = resolutionNote;
    if (!endpointList.ok) {
      if (this.children.size === 0) {
        this.report(
          ConnectivityState.TRANSIENT_FAILURE,
          new UnavailablePicker(endpointList.error),
          endpointList.error.details,
        );
      }
      return true;
    }
    const info = endpointInfoFrom(options);
    const now = this.runtime.now();
    const seen = new Set<string>();
    this.updatesPaused = true;
    for (const endpoint of endpointList.value) {
      const name = endpointToString(endpoint);
      if (seen.has(name)) continue;
      seen.add(name);
      let child = this.children.get(name);
      if (child === undefined) {
        child = this.createChild(name, endpoint, options, resolutionNote, now);
        this.children.set(name, child);
        child.leaf.startConnecting();
      }
      const next = lookupInfo(info, child.keys);
      if (stateOf(child.info) === 'ready' && stateOf(next) !== 'ready') {
        // Leaving service restarts the ramp when it comes back, as Envoy does for hosts
        // returning from a failed health check.
        child.slowStartApplies = true;
        child.warmSince = null;
      }
      child.info = next;
    }
    for (const [name, child] of this.children) {
      if (!seen.has(name)) {
        child.leaf.destroy();
        this.children.delete(name);
      }
    }
    if (endpointList.value.length > 0) this.seenEndpoints = true;
    this.updatesPaused = false;
    this.scheduleOutlierChecks();
    this.recompute();
    return true;
  }

  /** One timer per policy, at the configured interval; none (and nobody ejected) when it is off. */
  private scheduleOutlierChecks(): void {
    const od = this.config?.common.outlierDetection;
    if (this.outlierTimer !== null && this.outlierTimer.intervalMs === od?.intervalMs) return;
    if (this.outlierTimer !== null) clearInterval(this.outlierTimer.timer);
    this.outlierTimer = null;
    if (od === undefined) {
      for (const child of this.children.values()) child.stats.outlier.ejectedAtMs = null;
      return;
    }
    const timer = setInterval(() => this.checkOutliers(), od.intervalMs);
    timer.unref();
    this.outlierTimer = { intervalMs: od.intervalMs, timer };
  }

  /** Run one outlier-detection interval now (the timer calls this; tests call it with a manual clock). */
  checkOutliers(): void {
    const od = this.config?.common.outlierDetection;
    if (this.destroyed || od === undefined) return;
    const entries = [...this.children.values()].map((c) => ({ name: c.name, outlier: c.stats.outlier }));
    const wasIn = entries.filter((e) => e.outlier.ejectedAtMs === null);
    if (runOutlierChecks(entries, od, this.runtime.now(), this.runtime.random)) this.recompute();
    const m = instruments();
    if (m === undefined) return;
    for (const e of wasIn) {
      const child = this.children.get(e.name);
      if (e.outlier.ejectedAtMs !== null && child !== undefined)
        m['grpc_kube.balancer.ejections'].add(1, child.stats.attributes);
    }
  }

  private createChild(
    name: string,
    endpoint: GrpcEndpoint,
    options: ChannelOptions,
    note: string,
    now: number,
  ): Child {
    // The child record is referenced from its own helper, so build the helper around a holder.
    const holder: { child: Child | null } = { child: null };
    const childHelper = createChildChannelControlHelper(this.helper, {
      updateState: (state, _picker, errorMessage) => {
        const child = holder.child;
        if (this.destroyed || child === null || this.children.get(child.name) !== child) return;
        if (errorMessage !== null && errorMessage !== '') child.lastError = errorMessage;
        if (child.wasReady && state !== ConnectivityState.READY) this.helper.requestReresolution();
        child.wasReady = state === ConnectivityState.READY;
        this.recompute();
      },
    });
    const keys = endpoint.addresses.map(subchannelAddressToString);
    const child: Child = {
      name,
      keys,
      leaf: new LeafLoadBalancer(endpoint, childHelper, options, note),
      stats: new EndpointStats(this.scorer?.initialRttMs ?? 0, now, {
        'grpc_kube.policy': this.descriptor.typeName,
        'grpc_kube.endpoint': keys.join(','),
      }),
      info: undefined,
      wasReady: false,
      lastError: null,
      slowStartApplies: this.seenEndpoints,
      warmSince: null,
    };
    holder.child = child;
    return child;
  }

  private recompute(): void {
    if (this.updatesPaused || this.destroyed || this.config === null || this.scorer === null) return;
    const common = this.config.common;
    const name = this.descriptor.typeName;
    const now = this.runtime.now();
    if (this.children.size === 0) {
      const msg = `${name}: the resolver returned no endpoints${this.resolutionNote ? ` (${this.resolutionNote})` : ''}`;
      this.report(ConnectivityState.TRANSIENT_FAILURE, unavailable(msg), msg);
      return;
    }
    const eligible: Child[] = [];
    let draining = 0;
    let unready = 0;
    for (const child of this.children.values()) {
      const s = stateOf(child.info);
      if (s === 'draining') draining++;
      else if (s === 'unready') unready++;
      else eligible.push(child);
      const ready = s === 'ready' && child.leaf.getConnectivityState() === ConnectivityState.READY;
      if (ready && child.warmSince === null && child.slowStartApplies) child.warmSince = now;
    }
    for (const child of eligible) {
      if (child.leaf.getConnectivityState() === ConnectivityState.IDLE) child.leaf.exitIdle();
    }
    if (eligible.length === 0) {
      const msg =
        `${name}: none of the ${this.children.size} endpoints may take new RPCs ` +
        `(${draining} draining, ${unready} unready); waiting for the resolver to list ready ones`;
      this.report(ConnectivityState.TRANSIENT_FAILURE, unavailable(msg), msg);
      return;
    }
    const isReady = (c: Child): boolean => c.leaf.getConnectivityState() === ConnectivityState.READY;
    let pool = eligible;
    if (common.localZone !== undefined) {
      const local = localSubset(eligible, common.localZone);
      if (local.some(isReady)) pool = local;
    }
    let readyPool = pool.filter(isReady);
    // Ejected endpoints sit out while any endpoint in service can take the calls.
    const inService = readyPool.filter((c) => c.stats.outlier.ejectedAtMs === null);
    const ejected = readyPool.length - inService.length;
    if (inService.length > 0) readyPool = inService;
    if (readyPool.length > 0) {
      const panic =
        common.panicThresholdPercent > 0 &&
        readyPool.length * 100 < common.panicThresholdPercent * pool.length;
      const chosen = panic ? pool : readyPool;
      this.lastShape = { candidates: chosen.length, panic, localOnly: pool !== eligible, ejected };
      const candidates: Candidate[] = chosen.map((c) => ({
        name: c.name,
        picker: c.leaf.getPicker(),
        stats: c.stats,
        weight: weightOf(c.info),
        warmSince: common.slowStart === undefined ? null : c.warmSince,
      }));
      this.report(
        ConnectivityState.READY,
        new TwoChoicePicker(candidates, this.scorer, common.slowStart, this.runtime, this.attempts),
        null,
      );
      return;
    }
    const connecting = eligible.some((c) => {
      const s = c.leaf.getConnectivityState();
      return s === ConnectivityState.CONNECTING || s === ConnectivityState.IDLE;
    });
    if (connecting) {
      this.report(ConnectivityState.CONNECTING, new QueuePicker(this), null);
      return;
    }
    const lastError = eligible.map((c) => c.lastError).find((e) => e !== null) ?? 'unknown';
    const msg = `${name}: could not connect to any of ${eligible.length} ready endpoints; last error: ${lastError}`;
    this.report(ConnectivityState.TRANSIENT_FAILURE, unavailable(msg), msg);
  }

  private lastShape = { candidates: 0, panic: false, localOnly: false, ejected: 0 };

  private report(state: number, picker: Picker, errorMessage: string | null): void {
    this.state = state;
    const shape =
      state === ConnectivityState.READY
        ? this.lastShape
        : { candidates: 0, panic: false, localOnly: false, ejected: 0 };
    if (channel.hasSubscribers) {
      const event: BalancerEvent = {
        policy: this.descriptor.typeName,
        state: ConnectivityState[state] ?? String(state),
        endpoints: this.children.size,
        error: errorMessage,
        ...shape,
      };
      channel.publish(event);
    }
    this.helper.updateState(state, picker, errorMessage);
  }

  /** Current aggregate connectivity state (a grpc-js connectivityState value). */
  getState(): number {
    return this.state;
  }

  exitIdle(): void {
    for (const child of this.children.values()) {
      if (stateOf(child.info) === 'ready' && child.leaf.getConnectivityState() === ConnectivityState.IDLE) {
        child.leaf.exitIdle();
      }
    }
  }

  resetBackoff(): void {
    // The per-endpoint pick_first children own their backoff; grpc-js does not expose a reset.
  }

  destroy(): void {
    this.destroyed = true;
    this.unregisterGauges();
    if (this.outlierTimer !== null) clearInterval(this.outlierTimer.timer);
    this.outlierTimer = null;
    for (const child of this.children.values()) child.leaf.destroy();
    this.children.clear();
  }

  getTypeName(): string {
    return this.descriptor.typeName;
  }
}

function stateOf(info: Endpoint | undefined): Endpoint['state'] {
  return info?.state ?? 'ready';
}

function weightOf(info: Endpoint | undefined): number {
  const w = info?.weight;
  return w !== undefined && Number.isFinite(w) && w > 0 ? w : 1;
}

function lookupInfo(
  info: ReadonlyMap<string, Endpoint> | undefined,
  keys: readonly string[],
): Endpoint | undefined {
  if (info === undefined) return undefined;
  // A dual-stack endpoint has several addresses; the least ready copy wins, so that draining on
  // either family keeps new RPCs off the pod.
  let found: Endpoint | undefined;
  for (const k of keys) {
    const e = info.get(k);
    if (e === undefined) continue;
    if (found === undefined || (found.state === 'ready' && e.state !== 'ready')) found = e;
  }
  return found;
}

/**
 * kube-proxy's rule for topology hints: they are used only when every endpoint carries them; then an
 * endpoint is local when hinted for our zone. Without complete hints, its own zone decides.
 */
function localSubset(eligible: readonly Child[], zone: string): Child[] {
  const allHinted = eligible.every((c) => (c.info?.zoneHints?.length ?? 0) > 0);
  if (allHinted) return eligible.filter((c) => c.info?.zoneHints?.includes(zone) === true);
  return eligible.filter((c) => c.info?.zone === zone);
}

function unavailable(details: string): Picker {
  return new UnavailablePicker({ code: Status.UNAVAILABLE, details, metadata: new Metadata() });
}
