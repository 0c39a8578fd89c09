// The xDS control plane's public surface.

export { XdsControlPlane, routeErrorChannel, type XdsControlPlaneOptions } from './control-plane.js';
export {
  AdsServer,
  adsChannel,
  type AdsEvent,
  type AdsServerOptions,
  type XdsNodeInfo,
} from './ads-server.js';
export { SnapshotCache } from './cache.js';
export {
  compileGrpcRoute,
  routesForTarget,
  InvalidRouteError,
  type GrpcRoute,
  type GrpcRouteRule,
  type GrpcBackendRef,
  type CompiledGrpcRoute,
} from 'grpc-kube/internal/route/grpcroute.js';
export { GrpcRouteWatcher } from 'grpc-kube/internal/route/route-watcher.js';
export { registerXdsClientOnce, registeredXdsAddress } from './client-registration.js';
export { xdsBootstrap, xdsBootstrapJson, type BootstrapOptions, type XdsBootstrap } from './bootstrap.js';
export {
  buildCluster,
  buildClusterLoadAssignment,
  buildListener,
  buildRouteConfiguration,
  clusterName,
  listenerName,
  parseClusterName,
  parseListenerName,
  type ClusterLbPolicy,
  type RouteSpec,
  type ServiceRef,
} from './resources.js';
export {
  CDS,
  EDS,
  LDS,
  RDS,
  adsClientDefinition,
  decodeMessage,
  encodeAny,
  encodeMessage,
} from './protos.js';
