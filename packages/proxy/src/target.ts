// Which Service an RPC goes to. Sidecar mode reads the request's `:authority` the way a client in
// the cluster writes it (`svc.ns:port`, `svc.ns.svc.cluster.local:port`, `svc:port` in the proxy's
// namespace); ingress mode has one configured target and optional routes matched on the authority,
// the method path prefix or a header. A numeric port is the endpoint (container) port, as in
// `kubernetes:///svc.ns:port`; a port name selects the Service port of that name.

import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
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

export interface CompiledRoute {
  readonly match: RouteMatch;
  readonly target: ServiceTarget;
}

export function compileRoutes(
  routes: readonly ProxyRoute[],
  defaultNamespace: string,
): readonly CompiledRoute[] {
  return Object.freeze(
    routes.map((r, i) => {
      const field = `routes[${i}]`;
      if (typeof r !== 'object' || r === null) throw new InvalidOptionError(field, 'must be an object');
      const m = r.match ?? {};
      if (m.authority === undefined && m.pathPrefix === undefined && m.header === undefined) {
        throw new InvalidOptionError(`${field}.match`, 'needs authority, pathPrefix or header');
      }
      if (m.pathPrefix !== undefined && !m.pathPrefix.startsWith('/')) {
        throw new InvalidOptionError(
          `${field}.match.pathPrefix`,
          `must start with "/", got "${m.pathPrefix}"`,
        );
      }
      const header =
        m.header === undefined
          ? undefined
          : Object.freeze({ name: m.header.name.toLowerCase(), value: m.header.value });
      return Object.freeze({
        match: Object.freeze({
          authority: m.authority?.toLowerCase(),
          pathPrefix: m.pathPrefix,
          header,
        }),
        target: parseServiceTarget(r.target, defaultNamespace, `${field}.target`),
      });
    }),
  );
}

export function routeMatches(
  m: RouteMatch,
  authority: string,
  path: string,
  header: (name: string) => string | undefined,
): boolean {
  if (m.authority !== undefined && m.authority !== authority.toLowerCase()) return false;
  if (m.pathPrefix !== undefined && !path.startsWith(m.pathPrefix)) return false;
  if (m.header !== undefined && header(m.header.name) !== m.header.value) return false;
  return true;
}
