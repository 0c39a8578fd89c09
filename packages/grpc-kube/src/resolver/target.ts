// Dial-target parsing for the `kubernetes:` scheme, in the forms users know from kuberesolver and DNS:
//   kubernetes:///svc.ns:port        kubernetes:///svc.ns.svc.cluster.local:grpc
//   kubernetes:///svc:port           (namespace of the pod / kubeconfig context)
//   kubernetes://ns/svc:port
// A numeric port is the Service port when the Service has it (kube-source.ts maps it to the slice
// port of the same name), else the endpoint (container) port; a name is the Service port's name.

import { InvalidTargetError } from '../errors.js';
import type { PortSelector } from '../discovery/slices.js';

export interface KubernetesTarget {
  readonly service: string;
  /** undefined: use the client's default namespace. */
  readonly namespace: string | undefined;
  readonly port: PortSelector;
}

// RFC 1123 label, as Kubernetes validates Service and Namespace names.
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function parseKubernetesTarget(
  authority: string | undefined,
  path: string,
  raw: string,
): KubernetesTarget {
  const p = path.replace(/^\/+/, '');
  const colon = p.lastIndexOf(':');
  if (colon < 0) throw new InvalidTargetError(raw, 'the port is missing');
  const host = p.slice(0, colon);
  const portText = p.slice(colon + 1);
  const port = parsePort(raw, portText);
  const labels = host.split('.');
  let service: string;
  let namespace: string | undefined;
  if (authority) {
    if (labels.length !== 1)
      throw new InvalidTargetError(raw, 'with a namespace as authority, the path must be service:port');
    namespace = authority;
    service = host;
  } else {
    service = labels[0] ?? '';
    namespace = labels[1];
    // svc.ns.svc[.cluster.domain]: the DNS form users already dial
    if (labels.length > 2 && labels[2] !== 'svc') {
      throw new InvalidTargetError(
        raw,
        `"${host}" is not service, service.namespace or service.namespace.svc[.cluster-domain]`,
      );
    }
  }
  if (!DNS_LABEL.test(service)) throw new InvalidTargetError(raw, `"${service}" is not a valid Service name`);
  if (namespace !== undefined && !DNS_LABEL.test(namespace)) {
    throw new InvalidTargetError(raw, `"${namespace}" is not a valid namespace name`);
  }
  return { service, namespace, port };
}

function parsePort(raw: string, text: string): PortSelector {
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (n < 1 || n > 65535) throw new InvalidTargetError(raw, `port ${text} is out of range 1-65535`);
    return { kind: 'number', port: n };
  }
  if (text.length > 15 || !PORT_NAME.test(text))
    throw new InvalidTargetError(raw, `"${text}" is neither a port number nor a valid port name`);
  return { kind: 'name', name: text };
}
