// The one module that touches @grpc/grpc-js's experimental API (resolvers, load-balancing policies,
// pickers, subchannels). That API changes between minor versions, so every other module imports these
// names from here: an upgrade is fixed in one place. The peer range starts at 1.14.0, whose resolver
// listener takes StatusOr values (1.13 has no statusOrFromValue); the package tests run the README's
// client at 1.14.0 and at the newest 1.x (test/package/consumer.test.ts).

import { experimental, type ChannelOptions } from '@grpc/grpc-js';
import type { Endpoint } from '../discovery/endpoint.js';

export const {
  registerResolver,
  registerLoadBalancerType,
  createChildChannelControlHelper,
  selectLbConfigFromList,
  parseLoadBalancingConfig,
  isLoadBalancerNameRegistered,
  statusOrFromValue,
  statusOrFromError,
  uriToString,
  splitHostPort,
  subchannelAddressToString,
  endpointToString,
  QueuePicker,
  UnavailablePicker,
  PickResultType,
  LeafLoadBalancer,
  ChildLoadBalancerHandler,
  BaseSubchannelWrapper,
  EndpointMap,
  SUBCHANNEL_ARGS_EXCLUDE_KEY_PREFIX,
} = experimental;

export type Resolver = experimental.Resolver;
export type ResolverListener = experimental.ResolverListener;
export type GrpcUri = experimental.GrpcUri;
export type GrpcEndpoint = experimental.Endpoint;
export type SubchannelAddress = experimental.SubchannelAddress;
export type LoadBalancer = experimental.LoadBalancer;
export type TypedLoadBalancingConfig = experimental.TypedLoadBalancingConfig;
export type ChannelControlHelper = experimental.ChannelControlHelper;
export type Picker = experimental.Picker;
export type PickArgs = experimental.PickArgs;
export type PickResult = experimental.PickResult;
export type SubchannelInterface = experimental.SubchannelInterface;
export type StatusOr<T> = experimental.StatusOr<T>;
export type { ChannelOptions };

/**
 * Resolver attribute carrying what the EndpointSet knows of each address (state, zone, weight, pod,
 * hints): a ReadonlyMap from endpointKey() to Endpoint. grpc-js merges resolver attributes into the
 * channel options it hands to the LB policy; the `grpc.internal.no_subchannel` prefix keeps the key out
 * of subchannel args, so a new map on each update does not make grpc-js build new subchannels.
 */
export const ENDPOINT_INFO_ATTRIBUTE = `${SUBCHANNEL_ARGS_EXCLUDE_KEY_PREFIX}.grpc_kube.endpoint_info`;

export type EndpointInfoMap = ReadonlyMap<string, Endpoint>;

/** Read the endpoint info map from the options an LB policy received, if a grpc-kube resolver sent one. */
export function endpointInfoFrom(options: ChannelOptions): EndpointInfoMap | undefined {
  const value = (options as Record<string, unknown>)[ENDPOINT_INFO_ATTRIBUTE];
  return value instanceof Map ? (value as EndpointInfoMap) : undefined;
}

/** The service config shape a resolver listener accepts (grpc-js does not export the type itself). */
export type ResolvedServiceConfig =
  NonNullable<Parameters<ResolverListener>[2]> extends StatusOr<infer C> ? C : never;
