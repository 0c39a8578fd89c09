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
import { any, CDS, EDS, encodeAny, encodeMessage, HCM, LDS, RDS, ROUTER, TYPED_STRUCT } from './protos.js';
import type { RouteSpec } from 'grpc-kube/internal/route/spec.js';

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

/** Every Cluster carries KUBE_OUTLIER_DETECTION unless told otherwise (grpc-js-xds wraps the
 * cluster's policy in its outlier_detection balancer). */
export function buildCluster(
  name: string,
  policy: ClusterLbPolicy = 'round_robin',
  outlierDetection: OutlierDetectionConfig | null = KUBE_OUTLIER_DETECTION,
): EncodedResource {
  const cluster: Record<string, unknown> = {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' } },
    connect_timeout: { seconds: 5 },
  };
  if (outlierDetection !== null) cluster['outlier_detection'] = outlierDetectionProto(outlierDetection);
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
