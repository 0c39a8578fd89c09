// grpc-kube's public API. `setup()` registers the `kubernetes:` and `dns-poll:` resolvers with
// grpc-js; the discovery pieces are exported for consumers that want the live EndpointSet itself.

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
export { KubeClient } from './kube/client.js';
export { ENDPOINT_INFO_ATTRIBUTE, endpointInfoFrom } from './adapter/grpc-js.js';
export * from './errors.js';
export * from './balancer/index.js';
export * from './client/index.js';
export * from './server/index.js';
export * from './xds/index.js';
export * from './metrics/index.js';
