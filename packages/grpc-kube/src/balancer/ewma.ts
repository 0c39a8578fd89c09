// `grpc_kube_ewma`: Linkerd's peak-EWMA balancer. Each pick samples two ready endpoints and takes the
// lower cost = rtt estimate × (calls in flight + 1). The estimate jumps to any sample above it (a
// slowing pod is penalised at once), otherwise moves toward samples as a time-weighted average, and
// decays toward zero while no sample arrives, so an avoided pod is probed again after a few τ.
// Beyond Linkerd: the age of the oldest call still in flight counts as a sample already, so a pod
// that stops answering is avoided before its first slow answer arrives.

import { status as Status } from '@grpc/grpc-js';
import type { ChannelControlHelper, TypedLoadBalancingConfig } from '../adapter/grpc-js.js';
import {
  asObject,
  COMMON_FIELDS,
  commonToJson,
  parseCommon,
  readNumber,
  rejectUnknown,
  type CommonPolicyConfig,
} from './config.js';
import {
  EndpointBalancer,
  type EndpointStats,
  type PolicyDescriptor,
  type Scorer,
} from './endpoint-balancer.js';
import type { PolicyRuntime } from './runtime.js';
import type { OutlierDetectionJson } from './outlier.js';

export const EWMA_POLICY_NAME = 'grpc_kube_ewma';

/**
 * Linkerd's defaults: τ = 10 s, a new endpoint is assumed to answer in 30 ms. A call failing with
 * UNAVAILABLE or RESOURCE_EXHAUSTED counts as taking at least failurePenaltyMs, so a pod that fails
 * fast does not look fast and attract traffic.
 */
export const EWMA_DEFAULTS = Object.freeze({ decayMs: 10_000, defaultRttMs: 30, failurePenaltyMs: 1_000 });

/** Statuses that say "this server could not take the call", as opposed to application errors. */
const PENALISED = new Set<number>([Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED]);

export interface EwmaConfigJson {
  decayMs?: number;
  defaultRttMs?: number;
  failurePenaltyMs?: number;
  localZone?: string;
  panicThresholdPercent?: number;
  slowStart?: { windowMs: number; aggression?: number; minWeightPercent?: number };
  outlierDetection?: OutlierDetectionJson;
}

export class EwmaConfig implements TypedLoadBalancingConfig {
  readonly common: CommonPolicyConfig;
  readonly decayMs: number;
  readonly defaultRttMs: number;
  readonly failurePenaltyMs: number;

  constructor(
    common: CommonPolicyConfig,
    decayMs: number = EWMA_DEFAULTS.decayMs,
    defaultRttMs: number = EWMA_DEFAULTS.defaultRttMs,
    failurePenaltyMs: number = EWMA_DEFAULTS.failurePenaltyMs,
  ) {
    this.common = common;
    this.decayMs = decayMs;
    this.defaultRttMs = defaultRttMs;
    this.failurePenaltyMs = failurePenaltyMs;
    Object.freeze(this);
  }

  getLoadBalancerName(): string {
    return EWMA_POLICY_NAME;
  }

  /** The service-config form: `{ "grpc_kube_ewma": { ... } }`, defaults omitted. */
  toJsonObject(): { [EWMA_POLICY_NAME]: EwmaConfigJson } {
    const out: EwmaConfigJson = { ...(commonToJson(this.common) as EwmaConfigJson) };
    if (this.decayMs !== EWMA_DEFAULTS.decayMs) out.decayMs = this.decayMs;
    if (this.defaultRttMs !== EWMA_DEFAULTS.defaultRttMs) out.defaultRttMs = this.defaultRttMs;
    if (this.failurePenaltyMs !== EWMA_DEFAULTS.failurePenaltyMs)
      out.failurePenaltyMs = this.failurePenaltyMs;
    return { [EWMA_POLICY_NAME]: out };
  }

  /** Parse the inner object of `{ "grpc_kube_ewma": {...} }`; throws InvalidOptionError naming the field. */
  static createFromJson(json: unknown): EwmaConfig {
    const obj = asObject(json, EWMA_POLICY_NAME);
    rejectUnknown(obj, [...COMMON_FIELDS, 'decayMs', 'defaultRttMs', 'failurePenaltyMs'], EWMA_POLICY_NAME);
    const decayMs = readNumber(
      obj,
      'decayMs',
      EWMA_POLICY_NAME,
      { min: 0, minExclusive: true },
      EWMA_DEFAULTS.decayMs,
    );
    const defaultRttMs = readNumber(
      obj,
      'defaultRttMs',
      EWMA_POLICY_NAME,
      { min: 0 },
      EWMA_DEFAULTS.defaultRttMs,
    );
    const failurePenaltyMs = readNumber(
      obj,
      'failurePenaltyMs',
      EWMA_POLICY_NAME,
      { min: 0 },
      EWMA_DEFAULTS.failurePenaltyMs,
    );
    return new EwmaConfig(parseCommon(obj, EWMA_POLICY_NAME), decayMs, defaultRttMs, failurePenaltyMs);
  }
}

/** The estimate as of `nowMs`: it decays toward zero while no call ends. */
export function decayedRttMs(stats: EndpointStats, decayMs: number, nowMs: number): number {
  const elapsed = Math.max(0, nowMs - stats.stampMs);
  return stats.rttMs * Math.exp(-elapsed / decayMs);
}

/** Fold one sample into the estimate: a peak replaces it, anything else is averaged in by elapsed time. */
export function observeRtt(stats: EndpointStats, rttMs: number, decayMs: number, nowMs: number): void {
  const elapsed = Math.max(0, nowMs - stats.stampMs);
  const keep = Math.exp(-elapsed / decayMs);
  const current = stats.rttMs * keep;
  stats.rttMs = rttMs >= current ? rttMs : current + rttMs * (1 - keep);
  stats.stampMs = nowMs;
}

export function ewmaScorer(config: EwmaConfig): Scorer {
  const { decayMs, defaultRttMs, failurePenaltyMs } = config;
  return Object.freeze({
    initialRttMs: defaultRttMs,
    // A call still running longer than the estimate is a latency peak known before it ends: a pod
    // that has just stopped answering (or a new one that is slow) is avoided without waiting for
    // its first slow response.
    score: (stats: EndpointStats, nowMs: number) =>
      Math.max(decayedRttMs(stats, decayMs, nowMs), stats.oldestInflightMs(nowMs)) * (stats.outstanding + 1),
    // What a new call should expect: the estimate, or longer if a call there is already taking longer.
    predictMs: (stats: EndpointStats, nowMs: number) =>
      Math.max(decayedRttMs(stats, decayMs, nowMs), stats.oldestInflightMs(nowMs)),
    observe: (stats: EndpointStats, startedMs: number, nowMs: number, code: number) => {
      let rtt = Math.max(0, nowMs - startedMs);
      // A cancelled call (a lost hedge, an impatient caller) only says the server had not answered
      // yet: a lower bound, which counts when it is above the estimate and is ignored otherwise.
      if (code === Status.CANCELLED) {
        if (rtt > decayedRttMs(stats, decayMs, nowMs)) observeRtt(stats, rtt, decayMs, nowMs);
        return;
      }
      if (PENALISED.has(code)) rtt = Math.max(rtt, failurePenaltyMs);
      observeRtt(stats, rtt, decayMs, nowMs);
    },
  });
}

const descriptor: PolicyDescriptor<EwmaConfig> = {
  typeName: EWMA_POLICY_NAME,
  isConfig: (c): c is EwmaConfig => c instanceof EwmaConfig,
  scorer: ewmaScorer,
};

export class EwmaLoadBalancer extends EndpointBalancer<EwmaConfig> {
  constructor(helper: ChannelControlHelper, runtime?: PolicyRuntime) {
    super(helper, descriptor, runtime);
  }
}
