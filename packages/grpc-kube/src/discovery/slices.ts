// EndpointSlice → Endpoint conversion for one Service port, following the API's rules:
// `ready: null` means ready; `serving && terminating` is draining (no new RPCs, streams finish);
// anything else not ready is unready. Ports match by number (the endpoint's port) or by name.

import type { EndpointSlice, SliceEndpoint } from '../kube/types.js';
import type { Endpoint, EndpointState } from './endpoint.js';

export type PortSelector =
  { readonly kind: 'number'; readonly port: number } | { readonly kind: 'name'; readonly name: string };

export function portSelectorKey(p: PortSelector): string {
  return p.kind === 'number' ? `#${p.port}` : `@${p.name}`;
}

export function portSelectorText(p: PortSelector): string {
  return p.kind === 'number' ? String(p.port) : `"${p.name}"`;
}

export function endpointState(ep: SliceEndpoint): EndpointState {
  const c = ep.conditions ?? {};
  if (c.serving === true && c.terminating === true) return 'draining';
  if (c.ready === false) return 'unready';
  if (c.terminating === true) return 'unready';
  return 'ready';
}

/**
 * The port number this slice serves for the selector, or undefined when the slice has no such port.
 * A slice without ports (a headless Service with no ports) serves any numbered port.
 */
export function slicePort(slice: EndpointSlice, sel: PortSelector): number | undefined {
  const ports = Array.isArray(slice.ports) ? slice.ports : [];
  if (ports.length === 0) return sel.kind === 'number' ? sel.port : undefined;
  for (const p of ports) {
    // Only a real port number counts: what the watch hands us is JSON from the network.
    const port = p?.port;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) continue;
    if (sel.kind === 'number' ? port === sel.port : (p.name ?? '') === sel.name) return port;
  }
  return undefined;
}

/** Ports a slice offers, for error messages ("has 8080 (http), 9090 (grpc)"). */
export function slicePortsText(slices: Iterable<EndpointSlice>): string {
  const seen = new Set<string>();
  for (const s of slices) {
    for (const p of s.ports ?? []) seen.add(p.name ? `${p.port} (${p.name})` : String(p.port));
  }
  return seen.size === 0 ? 'no ports' : [...seen].sort().join(', ');
}

/** Endpoints of one slice on the selected port; FQDN slices carry no IPs and give none. */
export function sliceEndpoints(slice: EndpointSlice, sel: PortSelector): Endpoint[] {
  if (slice === null || typeof slice !== 'object' || slice.addressType === 'FQDN') return [];
  const port = slicePort(slice, sel);
  if (port === undefined) return [];
  const out: Endpoint[] = [];
  for (const ep of Array.isArray(slice.endpoints) ? slice.endpoints : []) {
    if (ep === null || typeof ep !== 'object' || !Array.isArray(ep.addresses)) continue;
    const state = endpointState(ep);
    const hints = Array.isArray(ep.hints?.forZones) ? ep.hints.forZones.map((z) => z?.name) : undefined;
    for (const address of ep.addresses) {
      if (typeof address !== 'string' || address === '') continue;
      out.push({
        address,
        port,
        state,
        pod: ep.targetRef?.kind === 'Pod' ? ep.targetRef.name : undefined,
        node: ep.nodeName,
        zone: ep.zone,
        hostname: ep.hostname,
        zoneHints: hints,
      });
    }
  }
  return out;
}

/** Why an EndpointSlice from the API cannot be read (undefined when it can): checked before use. */
export function sliceProblem(slice: EndpointSlice): string | undefined {
  const s = slice as unknown as Record<string, unknown>;
  if (typeof s.addressType !== 'string') return 'addressType is not a string';
  if (s.endpoints !== null && s.endpoints !== undefined && !Array.isArray(s.endpoints))
    return 'endpoints is not a list';
  for (const ep of (s.endpoints as unknown[] | null | undefined) ?? []) {
    if (ep === null || typeof ep !== 'object') return 'an endpoint is not an object';
    const e = ep as Record<string, unknown>;
    if (!Array.isArray(e.addresses) || !e.addresses.every((a) => typeof a === 'string'))
      return 'an endpoint has no addresses list';
    if (e.conditions !== undefined && (e.conditions === null || typeof e.conditions !== 'object'))
      return 'an endpoint has bad conditions';
  }
  if (s.ports !== null && s.ports !== undefined) {
    if (!Array.isArray(s.ports)) return 'ports is not a list';
    for (const p of s.ports as unknown[])
      if (p === null || typeof p !== 'object') return 'a port is not an object';
  }
  return undefined;
}
