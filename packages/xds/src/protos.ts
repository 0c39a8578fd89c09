// The envoy v3 wire types the control plane speaks, loaded once from the protos that
// @grpc/grpc-js-xds ships (deps/), so server and client agree on the exact same schema.
//
// Resources are built as plain snake_case objects and encoded once into `google.protobuf.Any` bytes;
// a DiscoveryResponse is then written by hand around those bytes, so pushing one change to 1,000
// streams costs one resource encoding plus 1,000 small frames, not 1,000 full encodings.

import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import protobuf from 'protobufjs';
import type { ServiceDefinition } from '@grpc/grpc-js';
import { missingPackage } from 'grpc-kube/internal/errors.js';

export const TYPE_URL_PREFIX = 'type.googleapis.com/';
export const LDS = 'type.googleapis.com/envoy.config.listener.v3.Listener';
export const RDS = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration';
export const CDS = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
export const EDS = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
export const HCM =
  'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
export const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
export const TYPED_STRUCT = 'type.googleapis.com/xds.type.v3.TypedStruct';
export const DOWNSTREAM_TLS =
  'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext';
export const UPSTREAM_TLS =
  'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';

/** The four resource types of ADS, in the order a client needs them. */
export const RESOURCE_TYPES = [LDS, RDS, CDS, EDS] as const;
export type ResourceTypeUrl = (typeof RESOURCE_TYPES)[number];

export function isResourceTypeUrl(s: string): s is ResourceTypeUrl {
  return (RESOURCE_TYPES as readonly string[]).includes(s);
}

/** In state of the world, a Listener or Cluster left out of a response means it was deleted. */
export function allRequiredInSotw(type: ResourceTypeUrl): boolean {
  return type === LDS || type === CDS;
}

const FILES = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'xds/type/v3/typed_struct.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/service/status/v3/csds.proto',
];

let root: protobuf.Root | undefined;
let descriptorRegistered = false;

/** Directory holding the envoy, xds, googleapis and validate protos of @grpc/grpc-js-xds. */
export function protoDirs(): string[] {
  const require = createRequire(import.meta.url);
  // The package's main file is build/src/index.js; its deps/ folder sits at the package root.
  let main: string;
  try {
    main = require.resolve('@grpc/grpc-js-xds');
  } catch (err) {
    throw missingPackage('@grpc/grpc-js-xds', 'the xDS control plane (its envoy protos)', err);
  }
  const pkgRoot = path.resolve(path.dirname(main), '..', '..');
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => path.join(pkgRoot, 'deps', d));
}

function loadRoot(): protobuf.Root {
  if (root !== undefined) return root;
  const dirs = protoDirs();
  if (!descriptorRegistered) {
    // The envoy protos import descriptor.proto (for options); protobufjs bundles it as JSON.
    const require = createRequire(import.meta.url);
    const descriptor = require('protobufjs/google/protobuf/descriptor.json') as {
      nested: { google: { nested: { protobuf: { nested: Record<string, unknown> } } } };
    };
    protobuf.common('descriptor', descriptor.nested.google.nested.protobuf.nested as never);
    descriptorRegistered = true;
  }
  const r = new protobuf.Root();
  r.resolvePath = (_origin: string, target: string): string => {
    for (const d of dirs) {
      const p = path.join(d, target);
      if (existsSync(p)) return p;
    }
    return target;
  };
  r.loadSync(FILES, { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

function lookup(fullName: string): protobuf.Type {
  return loadRoot().lookupType(fullName);
}

/** Encode a plain snake_case object as the message `typeUrl` names. */
export function encodeMessage(typeUrl: string, obj: Record<string, unknown>): Uint8Array {
  const t = lookup(typeUrl.slice(typeUrl.lastIndexOf('/') + 1));
  // fromObject (not verify): it takes enum names as strings and Buffers for bytes.
  return t.encode(t.fromObject(obj)).finish();
}

/** Decode bytes of `typeUrl` into a plain object (enums as names), for tests and diagnostics. */
export function decodeMessage(typeUrl: string, bytes: Uint8Array): Record<string, unknown> {
  const t = lookup(typeUrl.slice(typeUrl.lastIndexOf('/') + 1));
  return t.toObject(t.decode(bytes), { enums: String, longs: String, defaults: false }) as Record<
    string,
    unknown
  >;
}

/** `{type_url, value}` of a google.protobuf.Any, as a nested field of another message. */
export function any(typeUrl: string, obj: Record<string, unknown>): { type_url: string; value: Buffer } {
  return { type_url: typeUrl, value: Buffer.from(encodeMessage(typeUrl, obj)) };
}

/** One resource wrapped as the bytes of a google.protobuf.Any. */
export function encodeAny(typeUrl: string, value: Uint8Array): Uint8Array {
  const w = protobuf.Writer.create();
  w.uint32((1 << 3) | 2).string(typeUrl);
  w.uint32((2 << 3) | 2).bytes(value);
  return w.finish();
}

export interface DiscoveryRequest {
  version_info: string;
  node: {
    id?: string;
    cluster?: string;
    locality?: { region?: string; zone?: string; sub_zone?: string };
    user_agent_name?: string;
    /** google.protobuf.Struct as protobufjs decodes it: `{ fields: { key: { stringValue } } }`. */
    metadata?: unknown;
  } | null;
  resource_names: string[];
  type_url: string;
  response_nonce: string;
  error_detail: { code?: number; message?: string } | null;
}

/** What the server writes: the Any bytes are already encoded. */
export interface DiscoveryResponseFrame {
  version_info: string;
  type_url: string;
  nonce: string;
  resources: readonly Uint8Array[];
}

function serializeResponse(r: DiscoveryResponseFrame): Buffer {
  const w = protobuf.Writer.create();
  w.uint32((1 << 3) | 2).string(r.version_info);
  for (const a of r.resources) w.uint32((2 << 3) | 2).bytes(a);
  w.uint32((4 << 3) | 2).string(r.type_url);
  w.uint32((5 << 3) | 2).string(r.nonce);
  return Buffer.from(w.finish());
}

function deserializeRequest(buf: Buffer): DiscoveryRequest {
  const t = lookup('envoy.service.discovery.v3.DiscoveryRequest');
  const o = t.toObject(t.decode(buf), { enums: String, longs: String, defaults: true }) as Record<
    string,
    unknown
  >;
  return {
    version_info: typeof o['version_info'] === 'string' ? o['version_info'] : '',
    node: (o['node'] as DiscoveryRequest['node']) ?? null,
    resource_names: Array.isArray(o['resource_names']) ? (o['resource_names'] as string[]) : [],
    type_url: typeof o['type_url'] === 'string' ? o['type_url'] : '',
    response_nonce: typeof o['response_nonce'] === 'string' ? o['response_nonce'] : '',
    error_detail: (o['error_detail'] as DiscoveryRequest['error_detail']) ?? null,
  };
}

function serializeRequest(r: DiscoveryRequest): Buffer {
  return Buffer.from(
    encodeMessage('envoy.service.discovery.v3.DiscoveryRequest', r as unknown as Record<string, unknown>),
  );
}

export interface DecodedResponse {
  version_info: string;
  type_url: string;
  nonce: string;
  resources: Array<{ type_url: string; value: Uint8Array }>;
}

function deserializeResponse(buf: Buffer): DecodedResponse {
  const t = lookup('envoy.service.discovery.v3.DiscoveryResponse');
  const o = t.toObject(t.decode(buf), { defaults: true }) as Record<string, unknown>;
  return {
    version_info: String(o['version_info'] ?? ''),
    type_url: String(o['type_url'] ?? ''),
    nonce: String(o['nonce'] ?? ''),
    resources: (o['resources'] as DecodedResponse['resources'] | undefined) ?? [],
  };
}

export interface DeltaDiscoveryRequest {
  node: DiscoveryRequest['node'];
  type_url: string;
  resource_names_subscribe: string[];
  resource_names_unsubscribe: string[];
  initial_resource_versions: Record<string, string>;
  response_nonce: string;
  error_detail: DiscoveryRequest['error_detail'];
}

export interface DeltaResponseFrame {
  system_version_info: string;
  type_url: string;
  nonce: string;
  /** name, version and the resource's Any bytes. */
  resources: ReadonlyArray<{ name: string; version: string; any: Uint8Array }>;
  removed_resources: readonly string[];
}

function serializeDeltaResponse(r: DeltaResponseFrame): Buffer {
  const w = protobuf.Writer.create();
  w.uint32((1 << 3) | 2).string(r.system_version_info);
  for (const res of r.resources) {
    // envoy.service.discovery.v3.Resource: version = 1, resource (Any) = 2, name = 3.
    w.uint32((2 << 3) | 2).fork();
    w.uint32((1 << 3) | 2).string(res.version);
    w.uint32((2 << 3) | 2).bytes(res.any);
    w.uint32((3 << 3) | 2).string(res.name);
    w.ldelim();
  }
  w.uint32((4 << 3) | 2).string(r.type_url);
  w.uint32((5 << 3) | 2).string(r.nonce);
  for (const n of r.removed_resources) w.uint32((6 << 3) | 2).string(n);
  return Buffer.from(w.finish());
}

function deserializeDeltaRequest(buf: Buffer): DeltaDiscoveryRequest {
  const t = lookup('envoy.service.discovery.v3.DeltaDiscoveryRequest');
  const o = t.toObject(t.decode(buf), { enums: String, longs: String, defaults: true }) as Record<
    string,
    unknown
  >;
  const strings = (v: unknown): string[] => (Array.isArray(v) ? (v as string[]) : []);
  return {
    node: (o['node'] as DiscoveryRequest['node']) ?? null,
    type_url: typeof o['type_url'] === 'string' ? o['type_url'] : '',
    resource_names_subscribe: strings(o['resource_names_subscribe']),
    resource_names_unsubscribe: strings(o['resource_names_unsubscribe']),
    initial_resource_versions: (o['initial_resource_versions'] as Record<string, string> | undefined) ?? {},
    response_nonce: typeof o['response_nonce'] === 'string' ? o['response_nonce'] : '',
    error_detail: (o['error_detail'] as DiscoveryRequest['error_detail']) ?? null,
  };
}

function serializeDeltaRequest(r: DeltaDiscoveryRequest): Buffer {
  return Buffer.from(
    encodeMessage(
      'envoy.service.discovery.v3.DeltaDiscoveryRequest',
      r as unknown as Record<string, unknown>,
    ),
  );
}

export interface DecodedDeltaResponse {
  system_version_info: string;
  type_url: string;
  nonce: string;
  resources: Array<{ name: string; version: string; resource: { type_url: string; value: Uint8Array } }>;
  removed_resources: string[];
}

function deserializeDeltaResponse(buf: Buffer): DecodedDeltaResponse {
  const t = lookup('envoy.service.discovery.v3.DeltaDiscoveryResponse');
  const o = t.toObject(t.decode(buf), { defaults: true }) as Record<string, unknown>;
  return {
    system_version_info: String(o['system_version_info'] ?? ''),
    type_url: String(o['type_url'] ?? ''),
    nonce: String(o['nonce'] ?? ''),
    resources: (o['resources'] as DecodedDeltaResponse['resources'] | undefined) ?? [],
    removed_resources: (o['removed_resources'] as string[] | undefined) ?? [],
  };
}

export const DELTA_ADS_METHOD =
  '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources';

export const ADS_METHOD = '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources';

/** Server side of the ADS service: requests decoded, responses pre-encoded frames. */
export function adsServiceDefinition(): ServiceDefinition {
  loadRoot();
  return {
    StreamAggregatedResources: {
      path: ADS_METHOD,
      requestStream: true,
      responseStream: true,
      requestSerialize: serializeRequest,
      requestDeserialize: deserializeRequest,
      responseSerialize: serializeResponse,
      responseDeserialize: deserializeResponse,
    },
    DeltaAggregatedResources: {
      path: DELTA_ADS_METHOD,
      requestStream: true,
      responseStream: true,
      requestSerialize: serializeDeltaRequest,
      requestDeserialize: deserializeDeltaRequest,
      responseSerialize: serializeDeltaResponse,
      responseDeserialize: deserializeDeltaResponse,
    },
  } as unknown as ServiceDefinition;
}

/** Client side (benchmarks, tests): plain request objects out, decoded responses in. */
export function adsClientDefinition(): ServiceDefinition {
  return adsServiceDefinition();
}
