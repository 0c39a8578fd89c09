// Which Service an RPC goes to. Sidecar mode reads the request's `:authority` the way a client in
// the cluster writes it (`svc.ns:port`, `svc.ns.svc.cluster.local:port`, `svc:port` in the proxy's
// namespace); ingress mode has one configured target and optional routes matched on the authority,
// the method path prefix or a header. A numeric port is the endpoint (container) port, as in
// `kubernetes:///svc.ns:port`; a port name selects the Service port of that name.

import { re2FullMatch } from 'grpc-kube/internal/adapter/re2.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import type { HeaderMatch, PathMatch, RouteSpec } from 'grpc-kube/internal/route/spec.js';
import {
  checkServiceRef,
  parseServiceRef,
  type ServiceRef,
} from 'grpc-kube/internal/discovery/service-ref.js';

export type ServiceTarget = ServiceRef;

/** `ns/svc:port`, the one spelling used in logs and status messages. */
export function targetName(t: ServiceTarget): string {
  return `${t.namespace}/${t.service}:${t.port.kind === 'number' ? t.port.port : t.port.name}`;
}

/**
 * Parse `svc[.ns[.svc[.<cluster domain>]]]:port`. Returns a reason string instead of throwing,
 * because in sidecar mode a bad authority is a per-RPC status, not a configuration error.
 */
export function parseServiceAuthority(authority: string, defaultNamespace: string): ServiceTarget | string {
  const t = checkServiceRef(authority, { defaultNamespace, caseInsensitive: true });
  return typeof t === 'string' ? `authority "${authority}": ${t}; dial service.namespace:port` : t;
}

/** Like parseServiceAuthority, for configuration: throws InvalidOptionError naming `field`. */
export function parseServiceTarget(text: string, defaultNamespace: string, field: string): ServiceTarget {
  return parseServiceRef(
    text,
    { defaultNamespace, caseInsensitive: true },
    (why) => new InvalidOptionError(field, `"${text}": ${why}; use service.namespace:port`),
  );
}

export interface RouteMatch {
  /** Exact `:authority` (case-insensitive). */
  readonly authority?: string;
  /** Prefix of `:path`, e.g. `/hello.Greeter/`. */
  readonly pathPrefix?: string;
  /** A request header that must have exactly this value. */
  readonly header?: { readonly name: string; readonly value: string };
}

export interface ProxyRoute {
  readonly match: RouteMatch;
  /** `svc.ns:port`. */
  readonly target: string;
}

/**
 * The static routes as the route type the GRPCRoute compiler produces (RouteSpec), so both kinds of
 * route are matched by the same code. An authority match is a header match on `:authority`; each
 * route has one cluster, named targetName(target), which `targets` maps back to the Service (port
 * names kept).
 */
export interface StaticRoutes {
  readonly specs: readonly RouteSpec[];
  readonly targets: ReadonlyMap<string, ServiceTarget>;
}

export const AUTHORITY_HEADER = ':authority';

export function compileRoutes(routes: readonly ProxyRoute[], defaultNamespace: string): StaticRoutes {
  const targets = new Map<string, ServiceTarget>();
  const specs = routes.map((r, i): RouteSpec => {
    const field = `routes[${i}]`;
    if (typeof r !== 'object' || r === null) throw new InvalidOptionError(field, 'must be an object');
    const m = r.match ?? {};
    if (m.authority === undefined && m.pathPrefix === undefined && m.header === undefined) {
      throw new InvalidOptionError(`${field}.match`, 'needs authority, pathPrefix or header');
    }
    if (m.pathPrefix !== undefined && !m.pathPrefix.startsWith('/')) {
      throw new InvalidOptionError(`${field}.match.pathPrefix`, `must start with "/", got "${m.pathPrefix}"`);
    }
    const headers: HeaderMatch[] = [];
    if (m.authority !== undefined) {
      headers.push({ name: AUTHORITY_HEADER, kind: 'exact', value: m.authority.toLowerCase() });
    }
    if (m.header !== undefined) {
      headers.push({ name: m.header.name.toLowerCase(), kind: 'exact', value: m.header.value });
    }
    const target = parseServiceTarget(r.target, defaultNamespace, `${field}.target`);
    const cluster = targetName(target);
    targets.set(cluster, target);
    return Object.freeze({
      name: field,
      // No pathPrefix: every path (the empty prefix).
      path: Object.freeze({ kind: 'prefix', value: m.pathPrefix ?? '' }),
      headers: Object.freeze(headers.map((h) => Object.freeze(h))),
      clusters: Object.freeze([Object.freeze({ cluster, weight: 1 })]),
    });
  });
  return Object.freeze({ specs: Object.freeze(specs), targets });
}

/** The Service of the first static route that matches, if any. */
export function staticRoute(
  routes: StaticRoutes,
  path: string,
  header: (name: string) => string | undefined,
): ServiceTarget | undefined {
  for (const r of routes.specs) {
    const cluster = r.clusters[0]?.cluster;
    if (cluster !== undefined && routeMatches(r, path, header)) return routes.targets.get(cluster);
  }
  return undefined;
}

/** Whether an RPC matches a route's path and all its headers (regular expressions are RE2). */
export function routeMatches(
  r: RouteSpec,
  path: string,
  header: (name: string) => string | undefined,
): boolean {
  return pathMatches(r.path, path) && r.headers.every((h) => headerMatches(h, header));
}

function pathMatches(m: PathMatch, path: string): boolean {
  if (m.kind === 'prefix') return path.startsWith(m.value);
  if (m.kind === 'exact') return path === m.value;
  return re2FullMatch(m.value, path);
}

function headerMatches(m: HeaderMatch, header: (name: string) => string | undefined): boolean {
  const v = header(m.name);
  if (v === undefined) return false;
  return m.kind === 'exact' ? v === m.value : re2FullMatch(m.value, v);
}
