// Registers grpc-kube's load-balancing policies with grpc-js and re-exports what users and the lab
// need: policy names, typed configs, and helpers to build the service-config entry.

import { registerLoadBalancerType, isLoadBalancerNameRegistered } from '../adapter/grpc-js.js';
import { EWMA_POLICY_NAME, EwmaConfig, EwmaLoadBalancer, type EwmaConfigJson } from './ewma.js';
import { P2C_POLICY_NAME, P2cConfig, P2cLoadBalancer, type P2cConfigJson } from './p2c.js';

export { P2C_POLICY_NAME, P2cConfig, P2cLoadBalancer, type P2cConfigJson } from './p2c.js';
export {
  EWMA_POLICY_NAME,
  EWMA_DEFAULTS,
  EwmaConfig,
  EwmaLoadBalancer,
  type EwmaConfigJson,
} from './ewma.js';
export { slowStartFactor, type SlowStartConfig, type CommonPolicyConfig } from './config.js';
export { BALANCER_CHANNEL_NAME, type BalancerEvent } from './endpoint-balancer.js';
export { setPolicyRuntime, seededRandom, ManualClock, type PolicyRuntime } from './runtime.js';

export const POLICY_NAMES = Object.freeze([P2C_POLICY_NAME, EWMA_POLICY_NAME] as const);
export type PolicyName = (typeof POLICY_NAMES)[number];

/** Register grpc_kube_p2c and grpc_kube_ewma with grpc-js. Idempotent; runs on import of this module too. */
export function registerPolicies(): void {
  if (!isLoadBalancerNameRegistered(P2C_POLICY_NAME)) {
    registerLoadBalancerType(P2C_POLICY_NAME, P2cLoadBalancer, P2cConfig);
  }
  if (!isLoadBalancerNameRegistered(EWMA_POLICY_NAME)) {
    registerLoadBalancerType(EWMA_POLICY_NAME, EwmaLoadBalancer, EwmaConfig);
  }
}

// Importing this module registers the policies, as grpc-js registers its own on load: a channel
// naming grpc_kube_p2c must never fall over because nobody called registerPolicies() first.
registerPolicies();

/** grpc-js naming: the same function as `setup()` in its own policy modules. */
export const setup = registerPolicies;

/**
 * A `loadBalancingConfig` entry for a service config, validated now (throws InvalidOptionError on a
 * bad field) rather than when the channel first resolves.
 */
export function p2cServiceConfigEntry(config: P2cConfigJson = {}): { [P2C_POLICY_NAME]: P2cConfigJson } {
  return P2cConfig.createFromJson(config).toJsonObject();
}

export function ewmaServiceConfigEntry(config: EwmaConfigJson = {}): { [EWMA_POLICY_NAME]: EwmaConfigJson } {
  return EwmaConfig.createFromJson(config).toJsonObject();
}
