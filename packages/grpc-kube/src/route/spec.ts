// The route model that the GRPCRoute compiler produces and both the xDS server and the proxy consume:
// Service references, the names xDS gives them (listener `svc.ns:port`, cluster `ns/svc:port`), and
// one route (path and header matches → weighted clusters). No xDS encoding here, so the proxy can
// use routes without the xDS package.

export interface ServiceRef {
  readonly namespace: string;
  readonly service: string;
  readonly port: number;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function validPort(p: number): boolean {
  return Number.isInteger(p) && p > 0 && p < 65536;
}

/** `svc.ns:port` → ServiceRef, or undefined when the name is not one we serve. */
export function parseListenerName(name: string): ServiceRef | undefined {
  const m = /^([^.:/]+)\.([^.:/]+):(\d+)$/.exec(name);
  if (m === null) return undefined;
  const [, service, namespace, portText] = m as unknown as [string, string, string, string];
  const port = Number(portText);
  if (!DNS_LABEL.test(service) || !DNS_LABEL.test(namespace) || !validPort(port)) return undefined;
  return { service, namespace, port };
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
  if (!DNS_LABEL.test(service) || !DNS_LABEL.test(namespace) || !validPort(port)) return undefined;
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
