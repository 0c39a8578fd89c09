// Kubernetes → envoy v3 resources, following gRFC A27 for proxyless gRPC clients:
// Listener named after the dial target with an ApiListener holding an HttpConnectionManager that
// points at RDS by name and ends with the router filter; a RouteConfiguration with one virtual host
// for the target; EDS Clusters; ClusterLoadAssignments with one locality per zone.
//
// Names: dial target `xds:///<service>.<namespace>:<port>` → Listener and RouteConfiguration
// `<service>.<namespace>:<port>`; each backend (Service, port) → Cluster and ClusterLoadAssignment
// `<namespace>/<service>:<port>`. Ports are endpoint (container) ports, as for `kubernetes:` targets.

import type { Endpoint } from 'grpc-kube/internal/discovery/endpoint.js';
import { KUBE_OUTLIER_DETECTION, type OutlierDetectionConfig } from 'grpc-kube/internal/balancer/outlier.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import {
  any,
  CDS,
  DOWNSTREAM_TLS,
  EDS,
  encodeAny,
  encodeMessage,
  HCM,
  LDS,
  RDS,
  ROUTER,
  TYPED_STRUCT,
  UPSTREAM_TLS,
} from './protos.js';
import { validPort, type RouteSpec } from 'grpc-kube/internal/route/spec.js';

export {
  clusterName,
  listenerName,
  parseClusterName,
  parseListenerName,
  type HeaderMatch,
  type PathMatch,
  type RouteSpec,
  type ServiceRef,
  type WeightedCluster,
} from 'grpc-kube/internal/route/spec.js';

/** Cluster-level balancing: envoy's enum policies, or one of ours through the custom-LB TypedStruct. */
export type ClusterLbPolicy = 'round_robin' | 'ring_hash' | 'grpc_kube_p2c' | 'grpc_kube_ewma';
export const CLUSTER_LB_POLICIES: readonly ClusterLbPolicy[] = [
  'round_robin',
  'ring_hash',
  'grpc_kube_p2c',
  'grpc_kube_ewma',
];

/** A resource ready for the cache: its Any bytes. */
export type EncodedResource = Uint8Array;

export function buildListener(name: string): EncodedResource {
  const hcm = {
    stat_prefix: name,
    rds: {
      config_source: { ads: {}, resource_api_version: 'V3' },
      route_config_name: name,
    },
    // A27: the router filter must be last (and here it is the only one).
    http_filters: [{ name: 'envoy.filters.http.router', typed_config: any(ROUTER, {}) }],
  };
  const listener = { name, api_listener: { api_listener: any(HCM, hcm) } };
  return encodeAny(LDS, encodeMessage(LDS, listener));
}

function routeMatch(r: RouteSpec): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  if (r.path.kind === 'prefix') m['prefix'] = r.path.value;
  else if (r.path.kind === 'exact') m['path'] = r.path.value;
  else m['safe_regex'] = { regex: r.path.value };
  if (r.headers.length > 0) {
    m['headers'] = r.headers.map((h) =>
      h.kind === 'exact'
        ? { name: h.name, string_match: { exact: h.value } }
        : { name: h.name, safe_regex_match: { regex: h.value } },
    );
  }
  return m;
}

export function buildRouteConfiguration(name: string, routes: readonly RouteSpec[]): EncodedResource {
  const rc = {
    name,
    virtual_hosts: [
      {
        name,
        // The client matches the target's authority (`svc.ns:port`) exactly.
        domains: [name],
        routes: routes.map((r) => ({
          name: r.name,
          match: routeMatch(r),
          route: {
            weighted_clusters: {
              clusters: r.clusters.map((c) => ({ name: c.cluster, weight: { value: c.weight } })),
            },
          },
        })),
      },
    ],
  };
  return encodeAny(RDS, encodeMessage(RDS, rc));
}

/** envoy.config.cluster.v3.OutlierDetection for a config (only the fields gRFC A50 reads). */
export function outlierDetectionProto(c: OutlierDetectionConfig): Record<string, unknown> {
  const duration = (ms: number) => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 });
  const u32 = (value: number) => ({ value });
  const out: Record<string, unknown> = {
    interval: duration(c.intervalMs),
    base_ejection_time: duration(c.baseEjectionTimeMs),
    max_ejection_time: duration(c.maxEjectionTimeMs),
    max_ejection_percent: u32(c.maxEjectionPercent),
    // Absent means 100 % in Envoy and A50: say 0 to switch a check off.
    enforcing_success_rate: u32(c.successRateEjection?.enforcementPercentage ?? 0),
    enforcing_failure_percentage: u32(c.failurePercentageEjection?.enforcementPercentage ?? 0),
  };
  const sr = c.successRateEjection;
  if (sr !== undefined) {
    out.success_rate_minimum_hosts = u32(sr.minimumHosts);
    out.success_rate_request_volume = u32(sr.requestVolume);
    out.success_rate_stdev_factor = u32(sr.stdevFactor);
  }
  const fp = c.failurePercentageEjection;
  if (fp !== undefined) {
    out.failure_percentage_threshold = u32(fp.threshold);
    out.failure_percentage_minimum_hosts = u32(fp.minimumHosts);
    out.failure_percentage_request_volume = u32(fp.requestVolume);
  }
  return out;
}

/** A SAN the server's certificate must carry; grpc-js-xds compares `exact` with every SAN (a DNS
 * wildcard in the certificate matches too) and the others with every SAN's value. */
export type SanMatch =
  | { readonly exact: string }
  | { readonly prefix: string }
  | { readonly suffix: string }
  | { readonly contains: string };

/**
 * gRFC A29, client side: the Cluster's `transport_socket` is an UpstreamTlsContext whose CA (and,
 * for mutual TLS, identity) come from certificate-provider instances named in the client's
 * bootstrap (`certificate_providers`, see bootstrap.ts). Only clients built with
 * XdsChannelCredentials use it; others keep their own credentials.
 */
export interface UpstreamTls {
  /** Instance whose CA file verifies the server. */
  readonly caInstance: string;
  /** Instance whose certificate and key the client presents; without it, TLS without a client cert. */
  readonly identityInstance?: string;
  /** The server must carry one of these SANs; empty: any certificate from the CA. */
  readonly subjectAltNames?: readonly SanMatch[];
}

const INSTANCE_NAME = /^[A-Za-z0-9_.-]{1,128}$/;

/** The certificate-provider instance names of `t` (options field `option`), `required` present. */
function checkInstances(
  option: string,
  t: { readonly caInstance?: string; readonly identityInstance?: string },
  required: 'caInstance' | 'identityInstance',
): void {
  if (t[required] === undefined) throw new InvalidOptionError(`${option}.${required}`, 'is required');
  for (const k of ['caInstance', 'identityInstance'] as const) {
    const v: unknown = t[k];
    if (v !== undefined && (typeof v !== 'string' || !INSTANCE_NAME.test(v)))
      throw new InvalidOptionError(
        `${option}.${k}`,
        `must be a certificate provider instance name, got "${String(v)}"`,
      );
  }
}

/** Checked once at the edge (the control plane's options), then built into every Cluster. */
export function checkUpstreamTls(t: UpstreamTls): UpstreamTls {
  checkInstances('upstreamTls', t, 'caInstance');
  const sans = t.subjectAltNames ?? [];
  for (const m of sans) {
    const keys = Object.keys(m);
    const v = (m as Record<string, unknown>)[keys[0] ?? ''];
    if (
      keys.length !== 1 ||
      !['exact', 'prefix', 'suffix', 'contains'].includes(keys[0] ?? '') ||
      typeof v !== 'string' ||
      v === ''
    )
      throw new InvalidOptionError(
        'upstreamTls.subjectAltNames',
        `each entry is one of {exact|prefix|suffix|contains: "non-empty"}, got ${JSON.stringify(m)}`,
      );
  }
  return Object.freeze({
    caInstance: t.caInstance,
    ...(t.identityInstance !== undefined ? { identityInstance: t.identityInstance } : {}),
    subjectAltNames: Object.freeze(sans.map((m) => Object.freeze({ ...m }))),
  });
}

function upstreamTlsSocket(t: UpstreamTls): Record<string, unknown> {
  const common: Record<string, unknown> = {
    // grpc-js-xds reads the deprecated StringMatcher list, not match_typed_subject_alt_names.
    validation_context: {
      ca_certificate_provider_instance: { instance_name: t.caInstance },
      match_subject_alt_names: t.subjectAltNames ?? [],
    },
  };
  if (t.identityInstance !== undefined)
    common['tls_certificate_provider_instance'] = { instance_name: t.identityInstance };
  return {
    name: 'envoy.transport_sockets.tls',
    typed_config: any(UPSTREAM_TLS, { common_tls_context: common }),
  };
}

/**
 * gRFC A36/A29, server side: what an XdsServer built with XdsServerCredentials serves with. The
 * server's bootstrap sets `server_listener_resource_name_template` to SERVER_LISTENER_TEMPLATE
 * (bootstrap.ts) and lists these certificate-provider instances.
 */
export interface DownstreamTls {
  /** Instance whose certificate and key the server presents. */
  readonly identityInstance: string;
  /** Instance whose CA verifies clients; with it, clients must present a certificate (mTLS). */
  readonly caInstance?: string;
}

/** Checked once at the edge, like checkUpstreamTls. */
export function checkDownstreamTls(t: DownstreamTls): DownstreamTls {
  checkInstances('serverTls', t, 'identityInstance');
  return Object.freeze({
    identityInstance: t.identityInstance,
    ...(t.caInstance !== undefined ? { caInstance: t.caInstance } : {}),
  });
}

/** The server Listener name grpc-js-xds's XdsServer asks for, `%s` being its `host:port`. */
export const SERVER_LISTENER_TEMPLATE = 'grpc/server?xds.resource.listening_address=%s';
const SERVER_LISTENER_PREFIX = SERVER_LISTENER_TEMPLATE.slice(0, -2);

/** The address of a server Listener name, or undefined when the name is not one. */
export function parseServerListenerName(name: string): { host: string; port: number } | undefined {
  if (!name.startsWith(SERVER_LISTENER_PREFIX)) return undefined;
  const m = /^(\[[0-9a-fA-F:.]+\]|[0-9.]+|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(
    name.slice(SERVER_LISTENER_PREFIX.length),
  );
  if (m === null || !validPort(Number(m[2]))) return undefined;
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

/**
 * A server Listener at `address`: one default filter chain whose inline RouteConfiguration lets
 * every RPC through (non_forwarding_action, what A36 servers require), and with `tls` a
 * DownstreamTlsContext naming the server's certificate-provider instances. The address must be the
 * one in the name: grpc-js-xds refuses a Listener for another address.
 */
export function buildServerListener(name: string, tls?: DownstreamTls): EncodedResource {
  const address = parseServerListenerName(name);
  if (address === undefined)
    throw new InvalidOptionError('name', `"${name}" is not ${SERVER_LISTENER_TEMPLATE} with a host:port`);
  const hcm = {
    stat_prefix: name,
    route_config: {
      name: 'grpc-kube-server',
      virtual_hosts: [
        { name: 'all', domains: ['*'], routes: [{ match: { prefix: '' }, non_forwarding_action: {} }] },
      ],
    },
    http_filters: [{ name: 'envoy.filters.http.router', typed_config: any(ROUTER, {}) }],
  };
  const chain: Record<string, unknown> = {
    name: 'default',
    filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: any(HCM, hcm) }],
  };
  if (tls !== undefined) {
    const common: Record<string, unknown> = {
      tls_certificate_provider_instance: { instance_name: tls.identityInstance },
    };
    if (tls.caInstance !== undefined)
      common['validation_context'] = { ca_certificate_provider_instance: { instance_name: tls.caInstance } };
    chain['transport_socket'] = {
      name: 'envoy.transport_sockets.tls',
      typed_config: any(DOWNSTREAM_TLS, {
        common_tls_context: common,
        ...(tls.caInstance !== undefined ? { require_client_certificate: { value: true } } : {}),
      }),
    };
  }
  const listener = {
    name,
    address: { socket_address: { address: address.host, port_value: address.port } },
    default_filter_chain: chain,
  };
  return encodeAny(LDS, encodeMessage(LDS, listener));
}

/** Every Cluster carries KUBE_OUTLIER_DETECTION unless told otherwise (grpc-js-xds wraps the
 * cluster's policy in its outlier_detection balancer). */
export function buildCluster(
  name: string,
  policy: ClusterLbPolicy = 'round_robin',
  outlierDetection: OutlierDetectionConfig | null = KUBE_OUTLIER_DETECTION,
  upstreamTls?: UpstreamTls,
): EncodedResource {
  const cluster: Record<string, unknown> = {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' } },
    connect_timeout: { seconds: 5 },
  };
  if (outlierDetection !== null) cluster['outlier_detection'] = outlierDetectionProto(outlierDetection);
  if (upstreamTls !== undefined) cluster['transport_socket'] = upstreamTlsSocket(upstreamTls);
  if (policy === 'round_robin') cluster['lb_policy'] = 'ROUND_ROBIN';
  else if (policy === 'ring_hash') cluster['lb_policy'] = 'RING_HASH';
  else {
    // Custom LB (gRFC A52): the client maps the TypedStruct's type_url tail to a registered policy
    // name, so the process must have registered grpc_kube_p2c / grpc_kube_ewma with grpc-js.
    cluster['load_balancing_policy'] = {
      policies: [
        {
          typed_extension_config: {
            name: policy,
            typed_config: any(TYPED_STRUCT, {
              type_url: `type.googleapis.com/${policy}`,
              value: { fields: {} },
            }),
          },
        },
      ],
    };
  }
  return encodeAny(CDS, encodeMessage(CDS, cluster));
}

const HEALTH: Record<Endpoint['state'], string | undefined> = {
  ready: 'HEALTHY',
  draining: 'DRAINING',
  unready: undefined,
};

/**
 * One locality per zone; its weight is its count of ready endpoints (at least 1, since a locality
 * without a weight is ignored by gRPC clients), so traffic spreads per endpoint, not per zone.
 * Ready → HEALTHY, draining → DRAINING (clients stop picking them), unready → left out.
 */
export function buildClusterLoadAssignment(name: string, endpoints: readonly Endpoint[]): EncodedResource {
  const zones = new Map<string, { ready: number; lb: Array<Record<string, unknown>> }>();
  const sorted = [...endpoints].sort((a, b) =>
    a.address === b.address ? a.port - b.port : a.address < b.address ? -1 : 1,
  );
  for (const e of sorted) {
    const health = HEALTH[e.state];
    if (health === undefined || e.port === 0) continue;
    const zone = e.zone ?? '';
    let z = zones.get(zone);
    if (z === undefined) {
      z = { ready: 0, lb: [] };
      zones.set(zone, z);
    }
    if (e.state === 'ready') z.ready++;
    z.lb.push({
      endpoint: { address: { socket_address: { address: e.address, port_value: e.port } } },
      health_status: health,
      ...(e.weight !== undefined && e.weight !== 1 ? { load_balancing_weight: { value: e.weight } } : {}),
    });
  }
  const cla = {
    cluster_name: name,
    endpoints: [...zones.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([zone, z]) => ({
        locality: { zone },
        load_balancing_weight: { value: Math.max(1, z.ready) },
        lb_endpoints: z.lb,
      })),
  };
  return encodeAny(EDS, encodeMessage(EDS, cla));
}
