// grpc-kube's public API. `setup()` registers the `kubernetes:` and `dns-poll:` resolvers with
// grpc-js; the discovery pieces are exported for consumers that want the live EndpointSet itself.
// The import graph stays as light as grpc-js's own (test/package/core-graph.test.ts): the xDS control
// plane and the L7 proxy are the packages `@grpc-kube/xds` and `@grpc-kube/proxy`.

export { setup, DNS_POLL_INTERVAL_OPTION, type SetupOptions, type GrpcKube } from './resolver/setup.js';
export { LB_POLICY_OPTION } from './resolver/endpoint-resolver.js';
export { parseKubernetesTarget, type KubernetesTarget } from './resolver/target.js';
export {
  EndpointSet,
  endpointKey,
  readyEndpoints,
  type Endpoint,
  type EndpointDiff,
  type EndpointState,
} from './discovery/endpoint.js';
export {
  KubernetesEndpointSource,
  sourceChannel,
  type EndpointListener,
  type KubeSourceOptions,
  type Subscription,
} from './discovery/kube-source.js';
export { SourceRegistry } from './discovery/registry.js';
export { DnsPollFeed, type DnsPollOptions } from './discovery/dns-source.js';
export type { PortSelector } from './discovery/slices.js';
export { KubeClient, type KubeClientOptions } from './kube/client.js';
export { loadKubeConfig, type KubeConfigSource } from './kube/config.js';
export type { KubeConfigLike } from './kube/kubeconfig.js';
export { ENDPOINT_INFO_ATTRIBUTE, endpointInfoFrom } from './adapter/grpc-js.js';
export * from './errors.js';
// Everything of the balancer but its `setup` (registerPolicies), which the resolvers' setup() above
// would shadow.
export {
  P2C_POLICY_NAME,
  P2cConfig,
  P2cLoadBalancer,
  type P2cConfigJson,
  EWMA_POLICY_NAME,
  EWMA_DEFAULTS,
  EwmaConfig,
  EwmaLoadBalancer,
  type EwmaConfigJson,
  slowStartFactor,
  type SlowStartConfig,
  type CommonPolicyConfig,
  BALANCER_CHANNEL_NAME,
  type BalancerEvent,
  setPolicyRuntime,
  seededRandom,
  ManualClock,
  type PolicyRuntime,
  POLICY_NAMES,
  type PolicyName,
  registerPolicies,
  p2cServiceConfigEntry,
  ewmaServiceConfigEntry,
} from './balancer/index.js';
export * from './client/index.js';
export * from './server/index.js';
export * from './metrics/index.js';
