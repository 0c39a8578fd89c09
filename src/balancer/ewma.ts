// `grpc_kube_ewma`: Linkerd's peak-EWMA balancer. Each pick samples two ready endpoints and takes the
// lower cost = rtt estimate × (calls in flight + 1). The estimate jumps to any sample above it (a
// slowing pod is penalised at once), otherwise moves toward samples as a time-weighted average, and
// decays toward zero while no sample arrives, so an avoided pod is probed again after a few τ.

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

export const EWMA_POLICY_NAME = 'grpc_kube_ewma';

/** Linkerd's defaults: τ = 10 s, a new endpoint is assumed to answer in 30 ms. */
export const EWMA_DEFAULTS = Object.freeze({ decayMs: 10_000, defaultRttMs: 30 });

export interface EwmaConfigJson {
  decayMs?: number;
  defaultRttMs?: number;
  localZone?: string;
  panicThresholdPercent?: number;
  slowStart?: { windowMs: number; aggression?: number; minWeightPercent?: number };
}

export class EwmaConfig implements TypedLoadBalancingConfig {
  readonly common: CommonPolicyConfig;
  readonly decayMs: number;
  readonly defaultRttMs: number;

  constructor(
    common: CommonPolicyConfig,
    decayMs: number = EWMA_DEFAULTS.decayMs,
    defaultRttMs: number = EWMA_DEFAULTS.defaultRttMs,
  ) {
    this.common = common;
    this.decayMs = decayMs;
    this.defaultRttMs = defaultRttMs;
    Object.freeze(this);
  }

  getLoadBalancerName(): string {
    return EWMA_POLICY_NAME;
  }

  toJsonObject(): { [EWMA_POLICY_NAME]: EwmaConfigJson } {
    const out: EwmaConfigJson = { ...(commonToJson(this.common) as EwmaConfigJson) };
    if (this.decayMs !== EWMA_DEFAULTS.decayMs) out.decayMs = this.decayMs;
    if (this.defaultRttMs !== EWMA_DEFAULTS.defaultRttMs) out.defaultRttMs = this.defaultRttMs;
    return { [EWMA_POLICY_NAME]: out };
  }

  static createFromJson(json: unknown): EwmaConfig {
    const obj = asObject(json, EWMA_POLICY_NAME);
    rejectUnknown(obj, [...COMMON_FIELDS, 'decayMs', 'defaultRttMs'], EWMA_POLICY_NAME);
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
    return new EwmaConfig(parseCommon(obj, EWMA_POLICY_NAME), decayMs, defaultRttMs);
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
  const { decayMs, defaultRttMs } = config;
  return Object.freeze({
    initialRttMs: defaultRttMs,
    score: (stats: EndpointStats, nowMs: number) =>
      decayedRttMs(stats, decayMs, nowMs) * (stats.outstanding + 1),
    observe: (stats: EndpointStats, startedMs: number, nowMs: number) =>
      observeRtt(stats, Math.max(0, nowMs - startedMs), decayMs, nowMs),
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
