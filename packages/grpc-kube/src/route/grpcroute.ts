// GRPCRoute (gateway.networking.k8s.io/v1) → route table of one dial target, with GAMMA's mesh
// convention: a route applies to the Service named by a parentRef of kind Service (group ""), in the
// route's own namespace (producer routes). Each rule × match becomes one xDS route whose action is the
// rule's backendRefs as weighted clusters. Validation is field by field; a route with any error is
// reported (InvalidRouteError, naming the route and the field) and never reaches the config: the
// caller keeps serving that route's last good version, or nothing if it never had one.
// Ports (parentRef.port, backendRef.port) are Service ports, as the Gateway API defines them: the
// cluster `ns/svc:80` is resolved by the endpoint source, which follows Service port 80 to its
// target port (src/discovery/kube-source.ts).

import { re2Error } from '../adapter/re2.js';
import { GrpcKubeError } from '../errors.js';
import type { KubeObject } from '../kube/types.js';
import {
  clusterName,
  type HeaderMatch,
  type PathMatch,
  type RouteSpec,
  type ServiceRef,
  type WeightedCluster,
} from './spec.js';
import { DNS_LABEL } from '../discovery/service-ref.js';

export interface GrpcRouteParentRef {
  group?: string;
  kind?: string;
  namespace?: string;
  name: string;
  sectionName?: string;
  port?: number;
}

export interface GrpcMethodMatch {
  type?: 'Exact' | 'RegularExpression';
  service?: string;
  method?: string;
}

export interface GrpcHeaderMatch {
  type?: 'Exact' | 'RegularExpression';
  name: string;
  value: string;
}

export interface GrpcRouteMatch {
  method?: GrpcMethodMatch;
  headers?: GrpcHeaderMatch[];
}

export interface GrpcBackendRef {
  group?: string;
  kind?: string;
  name: string;
  namespace?: string;
  port?: number;
  weight?: number;
}

export interface GrpcRouteRule {
  name?: string;
  matches?: GrpcRouteMatch[];
  filters?: unknown[];
  backendRefs?: GrpcBackendRef[];
}

export interface GrpcRoute extends KubeObject {
  spec?: {
    parentRefs?: GrpcRouteParentRef[];
    hostnames?: string[];
    rules?: GrpcRouteRule[];
  };
}

/**
 * Why a route is not served, as a Gateway API condition reason: UnsupportedValue (Accepted=False),
 * InvalidKind and RefNotPermitted (ResolvedRefs=False).
 */
export type RouteReason = 'UnsupportedValue' | 'InvalidKind' | 'RefNotPermitted';

export class InvalidRouteError extends GrpcKubeError {
  /** `namespace/name` of the GRPCRoute. */
  readonly route: string;
  /** JSON path of the bad field, e.g. `spec.rules[0].backendRefs[1].port`. */
  readonly field: string;
  readonly reason: RouteReason;
  constructor(route: string, field: string, why: string, reason: RouteReason = 'UnsupportedValue') {
    super(
      'GK_ERR_INVALID_ROUTE',
      `GRPCRoute ${route}: ${field} ${why}; the route is not applied until fixed`,
    );
    this.route = route;
    this.field = field;
    this.reason = reason;
    this.name = 'InvalidRouteError';
  }
}

/** One validated rule × match, before it is bound to a target. */
export interface CompiledRoute {
  readonly name: string;
  readonly path: PathMatch;
  readonly headers: readonly HeaderMatch[];
  readonly clusters: readonly WeightedCluster[];
  /** Precedence (Gateway API): longer service, then longer method, then more headers. */
  readonly serviceChars: number;
  readonly methodChars: number;
}

export interface CompiledParent {
  readonly namespace: string;
  readonly service: string;
  /** undefined: every port of the Service. */
  readonly port: number | undefined;
}

export interface CompiledGrpcRoute {
  /** `namespace/name`. */
  readonly key: string;
  readonly creationTimestamp: string;
  readonly parents: readonly CompiledParent[];
  readonly routes: readonly CompiledRoute[];
  /** Every backend Service (weight 0 ones too), for ResolvedRefs. */
  readonly backends: ReadonlyArray<{ readonly namespace: string; readonly service: string }>;
}

/** May a GRPCRoute of `fromNamespace` send to `toNamespace/service` (a ReferenceGrant says so)? */
export type BackendPolicy = (fromNamespace: string, toNamespace: string, service: string) => boolean;

const SERVICE_RE = /^[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*$/;
const METHOD_RE = /^[A-Za-z_][A-Za-z_0-9]*$/;
const HEADER_RE = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
const MAX_WEIGHT = 1_000_000;

function isServiceKind(group: string | undefined, kind: string | undefined): boolean {
  return (group === undefined || group === '' || group === 'core') && (kind ?? 'Service') === 'Service';
}

/** Gateway API regexes are RE2 (matched in linear time, see packages/grpc-kube/src/adapter/re2.ts); others are invalid. */
function checkRegex(key: string, field: string, re: string): void {
  const why = re2Error(re);
  if (why !== undefined) {
    throw new InvalidRouteError(
      key,
      field,
      `is not a valid RE2 regular expression (${why}): ${JSON.stringify(re)}`,
    );
  }
}

function isPort(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p > 0 && p < 65536;
}

/**
 * Validate a GRPCRoute and compile it. Returns undefined for a route that names no Service parent
 * (it is for a Gateway, not for the mesh); throws InvalidRouteError for a route that is ours but wrong.
 */
export function compileGrpcRoute(
  route: GrpcRoute,
  permits: BackendPolicy = () => false,
): CompiledGrpcRoute | undefined {
  const meta = (route as { metadata?: unknown } | null)?.metadata as GrpcRoute['metadata'] | undefined;
  const key = `${String(meta?.namespace ?? 'default')}/${String(meta?.name ?? '?')}`;
  try {
    return compileChecked(route, key, permits);
  } catch (err) {
    if (err instanceof GrpcKubeError) throw err;
    // The API server validates routes against the CRD schema; a shape that slipped past it (an
    // older CRD, a hostile writer) is an invalid route like any other, not a crash.
    throw new InvalidRouteError(key, 'spec', `does not have the GRPCRoute shape (${(err as Error).message})`);
  }
}

function compileChecked(
  route: GrpcRoute,
  key: string,
  permits: BackendPolicy,
): CompiledGrpcRoute | undefined {
  const ns = route.metadata.namespace ?? 'default';
  const spec = route.spec;
  if (spec === undefined || spec === null || typeof spec !== 'object')
    throw new InvalidRouteError(key, 'spec', 'is missing');
  const parents: CompiledParent[] = [];
  for (const [i, p] of (spec.parentRefs ?? []).entries()) {
    const f = `spec.parentRefs[${i}]`;
    if (!isServiceKind(p.group, p.kind)) continue;
    if (typeof p.name !== 'string' || !DNS_LABEL.test(p.name))
      throw new InvalidRouteError(key, `${f}.name`, `must be a Service name, got ${JSON.stringify(p.name)}`);
    const pns = p.namespace ?? ns;
    if (pns !== ns)
      throw new InvalidRouteError(
        key,
        `${f}.namespace`,
        `is "${pns}": only producer routes (in the Service's own namespace) are supported`,
      );
    if (p.port !== undefined && !isPort(p.port))
      throw new InvalidRouteError(
        key,
        `${f}.port`,
        `must be a port number 1-65535, got ${JSON.stringify(p.port)}`,
      );
    parents.push({ namespace: pns, service: p.name, port: p.port });
  }
  if (parents.length === 0) return undefined;
  const rules = spec.rules ?? [];
  if (!Array.isArray(rules) || rules.length === 0)
    throw new InvalidRouteError(key, 'spec.rules', 'must list at least one rule');
  const routes: CompiledRoute[] = [];
  const backends = new Map<string, { namespace: string; service: string }>();
  for (const [ri, rule] of rules.entries()) {
    const rf = `spec.rules[${ri}]`;
    if (rule.filters !== undefined && rule.filters.length > 0)
      throw new InvalidRouteError(key, `${rf}.filters`, 'are not supported by the grpc-kube control plane');
    const refs = rule.backendRefs ?? [];
    if (refs.length === 0)
      throw new InvalidRouteError(key, `${rf}.backendRefs`, 'must list at least one backend');
    const clusters: WeightedCluster[] = [];
    for (const [bi, b] of refs.entries()) {
      const bf = `${rf}.backendRefs[${bi}]`;
      if (!isServiceKind(b.group, b.kind))
        throw new InvalidRouteError(
          key,
          `${bf}.kind`,
          `must be Service, got ${b.group ?? ''}/${b.kind ?? ''}`,
          'InvalidKind',
        );
      if (typeof b.name !== 'string' || !DNS_LABEL.test(b.name))
        throw new InvalidRouteError(
          key,
          `${bf}.name`,
          `must be a Service name, got ${JSON.stringify(b.name)}`,
        );
      const bns = b.namespace ?? ns;
      if (typeof bns !== 'string' || !DNS_LABEL.test(bns))
        throw new InvalidRouteError(
          key,
          `${bf}.namespace`,
          `must be a namespace, got ${JSON.stringify(bns)}`,
        );
      if (bns !== ns && !permits(ns, bns, b.name))
        throw new InvalidRouteError(
          key,
          `${bf}.namespace`,
          `points to Service ${bns}/${b.name}, and no ReferenceGrant in namespace ${bns} lets GRPCRoutes of ${ns} reach it`,
          'RefNotPermitted',
        );
      if (!isPort(b.port))
        throw new InvalidRouteError(
          key,
          `${bf}.port`,
          `is required for a Service backend (1-65535), got ${JSON.stringify(b.port)}`,
        );
      const w = b.weight ?? 1;
      if (!Number.isInteger(w) || w < 0 || w > MAX_WEIGHT)
        throw new InvalidRouteError(
          key,
          `${bf}.weight`,
          `must be an integer 0-${MAX_WEIGHT}, got ${JSON.stringify(b.weight)}`,
        );
      backends.set(`${bns}/${b.name}`, { namespace: bns, service: b.name });
      if (w > 0)
        clusters.push({ cluster: clusterName({ namespace: bns, service: b.name, port: b.port }), weight: w });
    }
    if (clusters.length === 0)
      throw new InvalidRouteError(key, `${rf}.backendRefs`, 'all have weight 0; at least one must be > 0');
    const matches = rule.matches && rule.matches.length > 0 ? rule.matches : [{}];
    for (const [mi, m] of matches.entries()) {
      const mf = `${rf}.matches[${mi}]`;
      let path: PathMatch = { kind: 'prefix', value: '' };
      let serviceChars = 0;
      let methodChars = 0;
      if (m.method !== undefined) {
        const { type = 'Exact', service, method } = m.method;
        if (service === undefined && method === undefined)
          throw new InvalidRouteError(key, `${mf}.method`, 'must set service, method or both');
        if (type === 'Exact') {
          if (service !== undefined && !SERVICE_RE.test(service))
            throw new InvalidRouteError(
              key,
              `${mf}.method.service`,
              `is not a gRPC service name: ${JSON.stringify(service)}`,
            );
          if (method !== undefined && !METHOD_RE.test(method))
            throw new InvalidRouteError(
              key,
              `${mf}.method.method`,
              `is not a gRPC method name: ${JSON.stringify(method)}`,
            );
          if (service !== undefined && method !== undefined)
            path = { kind: 'exact', value: `/${service}/${method}` };
          else if (service !== undefined) path = { kind: 'prefix', value: `/${service}/` };
          else path = { kind: 'regex', value: `/[^/]+/${method ?? ''}` };
        } else if (type === 'RegularExpression') {
          if (service !== undefined) checkRegex(key, `${mf}.method.service`, service);
          if (method !== undefined) checkRegex(key, `${mf}.method.method`, method);
          path = { kind: 'regex', value: `/${service ?? '[^/]+'}/${method ?? '[^/]+'}` };
        } else {
          throw new InvalidRouteError(
            key,
            `${mf}.method.type`,
            `must be Exact or RegularExpression, got ${JSON.stringify(type)}`,
          );
        }
        serviceChars = service?.length ?? 0;
        methodChars = method?.length ?? 0;
      }
      const headers: HeaderMatch[] = [];
      for (const [hi, h] of (m.headers ?? []).entries()) {
        const hf = `${mf}.headers[${hi}]`;
        if (typeof h.name !== 'string' || !HEADER_RE.test(h.name))
          throw new InvalidRouteError(key, `${hf}.name`, `is not a header name: ${JSON.stringify(h.name)}`);
        if (typeof h.value !== 'string') throw new InvalidRouteError(key, `${hf}.value`, 'must be a string');
        const type = h.type ?? 'Exact';
        if (type === 'Exact') headers.push({ name: h.name.toLowerCase(), kind: 'exact', value: h.value });
        else if (type === 'RegularExpression') {
          checkRegex(key, `${hf}.value`, h.value);
          headers.push({ name: h.name.toLowerCase(), kind: 'regex', value: h.value });
        } else
          throw new InvalidRouteError(
            key,
            `${hf}.type`,
            `must be Exact or RegularExpression, got ${JSON.stringify(type)}`,
          );
      }
      routes.push({ name: `${key}/${rf}/${mi}`, path, headers, clusters, serviceChars, methodChars });
    }
  }
  return {
    key,
    creationTimestamp: route.metadata.creationTimestamp ?? '',
    parents,
    routes,
    backends: [...backends.values()],
  };
}

function attaches(route: CompiledGrpcRoute, target: ServiceRef): boolean {
  return route.parents.some(
    (p) =>
      p.namespace === target.namespace &&
      p.service === target.service &&
      (p.port === undefined || p.port === target.port),
  );
}

function isCatchAll(r: { path: PathMatch; headers: readonly HeaderMatch[] }): boolean {
  return r.path.kind === 'prefix' && r.path.value === '' && r.headers.length === 0;
}

/**
 * The route table of one target: the rules of every route attached to it in Gateway API precedence
 * (longer service match, longer method match, more header matches, older route, name, rule order),
 * then — unless a rule already matches everything — a default route to the target Service itself.
 */
export function routesForTarget(target: ServiceRef, routes: Iterable<CompiledGrpcRoute>): RouteSpec[] {
  const attached = [...routes]
    .filter((r) => attaches(r, target))
    .sort((a, b) =>
      a.creationTimestamp !== b.creationTimestamp
        ? a.creationTimestamp < b.creationTimestamp
          ? -1
          : 1
        : a.key < b.key
          ? -1
          : a.key > b.key
            ? 1
            : 0,
    );
  const flat = attached.flatMap((r) => r.routes.map((x, i) => ({ x, order: i })));
  // Array.prototype.sort is stable, so route age / name / rule order survive equal precedence.
  flat.sort(
    (a, b) =>
      b.x.serviceChars - a.x.serviceChars ||
      b.x.methodChars - a.x.methodChars ||
      b.x.headers.length - a.x.headers.length,
  );
  const out: RouteSpec[] = flat.map(({ x }) => ({
    name: x.name,
    path: x.path,
    headers: x.headers,
    clusters: x.clusters,
  }));
  if (!out.some(isCatchAll)) {
    out.push({
      name: 'default',
      path: { kind: 'prefix', value: '' },
      headers: [],
      clusters: [{ cluster: clusterName(target), weight: 1 }],
    });
  }
  return out;
}
