// One reference to a Kubernetes Service port, `svc.ns:port`, and the one parser for it, shared by
// the resolver (`kubernetes:///svc.ns:port`), the proxy (a request's `:authority`, its configured
// targets) and xDS (listener names). The callers differ only in the options below; the naming rules
// (RFC 1123 labels, IANA port names) are declared here once.

import { InvalidTargetError, type GrpcKubeError } from '../errors.js';
import type { PortSelector } from './slices.js';

export interface ServiceRef<Port = PortSelector, Namespace extends string | undefined = string> {
  readonly service: string;
  /** undefined only where the caller has no default namespace yet (the resolver). */
  readonly namespace: Namespace;
  readonly port: Port;
}

/** RFC 1123 label, as Kubernetes validates Service and Namespace names (at most 63 characters). */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** A Service port name: an IANA service name, at most 15 characters. */
const PORT_NAME = /^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/;

export function isDnsLabel(text: string): boolean {
  return DNS_LABEL.test(text);
}

export function validPort(p: number): boolean {
  return Number.isInteger(p) && p > 0 && p < 65536;
}

export interface ServiceRefRules<Namespace extends string | undefined> {
  /** The namespace when the text names none; undefined leaves it to the caller. */
  readonly defaultNamespace?: Namespace;
  /** Only `service.namespace:port` with a port number (xDS listener names): no DNS suffix, no default. */
  readonly exact?: boolean;
  /** Lower-case the host first (an HTTP `:authority` is case-insensitive). */
  readonly caseInsensitive?: boolean;
}

/**
 * Parse `svc[.ns[.svc[.<cluster domain>]]]:port`; the port is a number or a port name (a number only
 * with `exact`). Throws the error `toError` makes of the reason — by default an InvalidTargetError
 * that shows the forms to use.
 */
export function parseServiceRef<N extends string | undefined = undefined>(
  text: string,
  rules: ServiceRefRules<N> = {},
  toError: (reason: string) => GrpcKubeError = (reason) => new InvalidTargetError(text, reason),
): ServiceRef<PortSelector, string | N> {
  const ref = checkServiceRef(text, rules);
  if (typeof ref === 'string') throw toError(ref);
  return ref;
}

/** Like parseServiceRef, but undefined instead of an error (names from peers that we may not serve). */
export function tryParseServiceRef<N extends string | undefined = undefined>(
  text: string,
  rules: ServiceRefRules<N> = {},
): ServiceRef<PortSelector, string | N> | undefined {
  const ref = checkServiceRef(text, rules);
  return typeof ref === 'string' ? undefined : ref;
}

/** The ServiceRef, or the reason `text` is not one (for callers that report it per request). */
export function checkServiceRef<N extends string | undefined = undefined>(
  text: string,
  rules: ServiceRefRules<N> = {},
): ServiceRef<PortSelector, string | N> | string {
  const colon = text.lastIndexOf(':');
  if (colon < 0) return 'the port is missing (no port after the name)';
  const host = rules.caseInsensitive === true ? text.slice(0, colon).toLowerCase() : text.slice(0, colon);
  const portText = text.slice(colon + 1);
  let port: PortSelector;
  if (/^\d+$/.test(portText)) {
    const n = Number(portText);
    if (!validPort(n)) return `bad port "${portText}": out of range 1-65535`;
    port = { kind: 'number', port: n };
  } else if (rules.exact !== true && PORT_NAME.test(portText)) {
    port = { kind: 'name', name: portText };
  } else {
    return `bad port "${portText}": neither a port number nor a valid port name`;
  }
  const labels = host.split('.');
  const tooMany = rules.exact === true ? labels.length !== 2 : labels.length > 2 && labels[2] !== 'svc';
  if (tooMany) {
    return rules.exact === true
      ? `"${host}" is not service.namespace`
      : `"${host}" is not service.namespace, service.namespace.svc[.cluster-domain] or service`;
  }
  const service = labels[0] ?? '';
  const namespace: string | N = labels[1] ?? (rules.defaultNamespace as N);
  if (!DNS_LABEL.test(service)) return `"${service}" is not a valid Service name`;
  if (namespace !== undefined && !DNS_LABEL.test(namespace)) {
    return `"${namespace}" is not a valid namespace name`;
  }
  return { service, namespace, port };
}
