// `grpc_kube_p2c`: least-request by power of two choices. Each pick samples two ready endpoints and
// takes the one with fewer calls in flight (counted through the pick result's onCallStarted /
// onCallEnded hooks), so a pod that slows down accumulates calls and stops winning comparisons.

import type { ChannelControlHelper, TypedLoadBalancingConfig } from '../adapter/grpc-js.js';
import {
  asObject,
  COMMON_FIELDS,
  commonToJson,
  parseCommon,
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

export const P2C_POLICY_NAME = 'grpc_kube_p2c';

export interface P2cConfigJson {
  localZone?: string;
  panicThresholdPercent?: number;
  slowStart?: { windowMs: number; aggression?: number; minWeightPercent?: number };
  outlierDetection?: OutlierDetectionJson;
}

export class P2cConfig implements TypedLoadBalancingConfig {
  readonly common: CommonPolicyConfig;

  constructor(common: CommonPolicyConfig) {
    this.common = common;
    Object.freeze(this);
  }

  getLoadBalancerName(): string {
    return P2C_POLICY_NAME;
  }

  /** The service-config form: `{ "grpc_kube_p2c": { ... } }`. */
  toJsonObject(): { [P2C_POLICY_NAME]: P2cConfigJson } {
    return { [P2C_POLICY_NAME]: commonToJson(this.common) as P2cConfigJson };
  }

  /** Parse the inner object of `{ "grpc_kube_p2c": {...} }`; throws InvalidOptionError naming the field. */
  static createFromJson(json: unknown): P2cConfig {
    const obj = asObject(json, P2C_POLICY_NAME);
    rejectUnknown(obj, COMMON_FIELDS, P2C_POLICY_NAME);
    return new P2cConfig(parseCommon(obj, P2C_POLICY_NAME));
  }
}

const leastRequest: Scorer = Object.freeze({
  initialRttMs: 0,
  score: (stats: EndpointStats) => stats.outstanding,
  observe: () => {},
});

const descriptor: PolicyDescriptor<P2cConfig> = {
  typeName: P2C_POLICY_NAME,
  isConfig: (c): c is P2cConfig => c instanceof P2cConfig,
  scorer: () => leastRequest,
};

export class P2cLoadBalancer extends EndpointBalancer<P2cConfig> {
  constructor(helper: ChannelControlHelper, runtime?: PolicyRuntime) {
    super(helper, descriptor, runtime);
  }
}
