// The route model that the GRPCRoute compiler produces and both the xDS server and the proxy consume:
// Service references, the names xDS gives them (listener `svc.ns:port`, cluster `ns/svc:port`), and
// one route (path and header matches → weighted clusters). No xDS encoding here, so the proxy can
// use routes without the xDS package.

import {
  isDnsLabel,
  tryParseServiceRef,
  validPort,
  type ServiceRef as AnyServiceRef,
} from '../discovery/service-ref.js';

export { validPort };

/** A Service port by number: xDS names carry numbers only. */
export type ServiceRef = AnyServiceRef<number>;

/** `svc.ns:port` → ServiceRef, or undefined when the name is not one we serve. */
export function parseListenerName(name: string): ServiceRef | undefined {
  const ref = tryParseServiceRef(name, { exact: true });
  if (ref?.namespace === undefined || ref.port.kind !== 'number') return undefined;
  return { service: ref.service, namespace: ref.namespace, port: ref.port.port };
}

export function listenerName(ref: ServiceRef): string {
  return `${ref.service}.${ref.namespace}:${ref.port}`;
}

export function clusterName(ref: ServiceRef): string {
  return `${ref.namespace}/${ref.service}:${ref.port}`;
}

export function parseClusterName(name: string): ServiceRef | undefined {
  const m = /^([^/]+)\/([^:]+):(\d+)$/.exec(name);
  if (m === null) return undefined;
  const [, namespace, service, portText] = m as unknown as [string, string, string, string];
  const port = Number(portText);
  if (!isDnsLabel(service) || !isDnsLabel(namespace) || !validPort(port)) return undefined;
  return { namespace, service, port };
}

export interface WeightedCluster {
  readonly cluster: string;
  readonly weight: number;
}

export type PathMatch =
  | { readonly kind: 'prefix'; readonly value: string }
  | { readonly kind: 'exact'; readonly value: string }
  | { readonly kind: 'regex'; readonly value: string };

export interface HeaderMatch {
  readonly name: string;
  readonly kind: 'exact' | 'regex';
  readonly value: string;
}

export interface RouteSpec {
  /** For diagnostics: `namespace/route#rule.match`, or `default`. */
  readonly name: string;
  readonly path: PathMatch;
  readonly headers: readonly HeaderMatch[];
  /** Non-empty; every weight > 0. */
  readonly clusters: readonly WeightedCluster[];
}
