// Dial-target parsing for the `kubernetes:` scheme, in the forms users know from kuberesolver and DNS:
//   kubernetes:///svc.ns:port        kubernetes:///svc.ns.svc.cluster.local:grpc
//   kubernetes:///svc:port           (namespace of the pod / kubeconfig context)
//   kubernetes://ns/svc:port
// A numeric port is the Service port when the Service has it (kube-source.ts maps it to the slice
// port of the same name), else the endpoint (container) port; a name is the Service port's name.

import { InvalidTargetError } from '../errors.js';
import type { PortSelector } from '../discovery/slices.js';
import { parseServiceRef, type ServiceRef } from '../discovery/service-ref.js';

/** A ServiceRef whose namespace is undefined when the target names none (the client's default). */
export type KubernetesTarget = ServiceRef<PortSelector, string | undefined>;

export function parseKubernetesTarget(
  authority: string | undefined,
  path: string,
  raw: string,
): KubernetesTarget {
  const p = path.replace(/^\/+/, '');
  if (authority && p.slice(0, Math.max(0, p.lastIndexOf(':'))).includes('.'))
    throw new InvalidTargetError(raw, 'with a namespace as authority, the path must be service:port');
  return parseServiceRef(
    p,
    { defaultNamespace: authority || undefined },
    (why) => new InvalidTargetError(raw, why),
  );
}
