// A container's spec as the kubelet reads it before it starts anything: its environment (literal
// values, the downward API's fieldRef, `$(VAR)` expansion), its command and args expanded against that
// environment, and its ports by number or by name. The rules are Kubernetes's: a value expands only
// variables defined EARLIER in the list (or given by the node: KUBERNETES_SERVICE_HOST…), `$$` is a
// literal `$`, and an undefined `$(VAR)` stays as written. Pure functions; the pod worker calls them.

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { Container, Pod, PortRef } from './controllers/kinds.js';

/** Where the pod runs: the values status.podIP and status.hostIP have once it is started. */
export interface PodPlacement {
  readonly podIP: string;
  readonly hostIP: string;
}

/** `$(VAR)` expansion as Kubernetes does it (third_party/forked/golang/expansion in kubernetes). */
export function expandVars(input: string, lookup: (name: string) => string | undefined): string {
  let out = '';
  for (let i = 0; i < input.length; i++) {
    const ch = input[i];
    if (ch !== '$' || i + 1 >= input.length) {
      out += ch;
      continue;
    }
    const next = input[i + 1];
    if (next === '$') {
      out += '$';
      i++;
    } else if (next === '(') {
      const end = input.indexOf(')', i + 2);
      if (end < 0) {
        // Unterminated: kept as written.
        out += input.slice(i);
        break;
      }
      const name = input.slice(i + 2, end);
      const value = name === '' ? undefined : lookup(name);
      out += value ?? `$(${name})`;
      i = end;
    } else {
      out += ch;
    }
  }
  return out;
}

const FIELD_PATHS =
  "metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], " +
  'spec.nodeName, spec.serviceAccountName, status.podIP, status.podIPs, status.hostIP, status.hostIPs';

/** The value of a downward-API fieldRef for `pod` placed at `at`. */
export function fieldRefValue(pod: Pod, fieldPath: string, at: PodPlacement): string {
  const m = /^metadata\.(labels|annotations)\['([^']*)'\]$/.exec(fieldPath);
  if (m) return pod.metadata[m[1] as 'labels' | 'annotations']?.[m[2] ?? ''] ?? '';
  switch (fieldPath) {
    case 'metadata.name':
      return pod.metadata.name ?? '';
    case 'metadata.namespace':
      return pod.metadata.namespace ?? 'default';
    case 'metadata.uid':
      return pod.metadata.uid ?? '';
    case 'spec.nodeName':
      return pod.spec.nodeName ?? '';
    case 'spec.serviceAccountName':
      return pod.spec.serviceAccountName ?? 'default';
    case 'status.podIP':
    case 'status.podIPs':
      return at.podIP;
    case 'status.hostIP':
    case 'status.hostIPs':
      return at.hostIP;
    default:
      throw new GrpcKubeError(
        'GK_ERR_LAB_POD_SPEC',
        `fieldRef.fieldPath "${fieldPath}" is not one the lab kubelet resolves; use one of ${FIELD_PATHS}`,
      );
  }
}

/**
 * The container's environment, in order: `base` (what the node gives every container, e.g.
 * KUBERNETES_SERVICE_HOST), then the container's `env`, each value expanded against what came before
 * it. Throws GK_ERR_LAB_POD_SPEC for an env source the lab does not run.
 */
export function containerEnv(
  pod: Pod,
  container: Container,
  at: PodPlacement,
  base: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const env = new Map<string, string>(Object.entries(base));
  for (const e of container.env ?? []) {
    let value: string;
    if (e.valueFrom !== undefined) {
      const ref = e.valueFrom.fieldRef;
      if (ref === undefined) {
        const kind = Object.keys(e.valueFrom).join(', ');
        throw new GrpcKubeError(
          'GK_ERR_LAB_POD_SPEC',
          `container "${container.name}" env ${e.name}: valueFrom ${kind} is not run by the lab kubelet; ` +
            'use fieldRef or a literal value',
        );
      }
      value = fieldRefValue(pod, ref.fieldPath, at);
    } else {
      value = expandVars(e.value ?? '', (n) => env.get(n));
    }
    // A later entry of the same name wins, as in Kubernetes; Map keeps the first position.
    env.set(e.name, value);
  }
  return Object.fromEntries(env);
}

/** `command` and `args` with `$(VAR)` expanded against the container's whole environment. */
export function expandedCommand(
  container: Container,
  env: Readonly<Record<string, string>>,
): { command?: string[]; args?: string[] } {
  const lookup = (n: string): string | undefined => (Object.hasOwn(env, n) ? env[n] : undefined);
  return {
    ...(container.command ? { command: container.command.map((s) => expandVars(s, lookup)) } : {}),
    ...(container.args ? { args: container.args.map((s) => expandVars(s, lookup)) } : {}),
  };
}

/** A port number, or the containerPort of the container's port of that name. */
export function resolvePort(container: Container, port: PortRef): number {
  if (typeof port === 'number') return port;
  if (/^\d+$/.test(port)) return Number(port);
  const p = container.ports?.find((x) => x.name === port);
  if (p === undefined) {
    const names = (container.ports ?? []).map((x) => x.name).filter((n) => n !== undefined);
    throw new GrpcKubeError(
      'GK_ERR_LAB_POD_SPEC',
      `container "${container.name}" has no port named "${port}" (it names ${names.length ? names.join(', ') : 'none'}); ` +
        'name one of its ports or give a number',
    );
  }
  return p.containerPort;
}
