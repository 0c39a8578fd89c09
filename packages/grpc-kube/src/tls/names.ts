// The DNS names a Kubernetes Service's pods answer for, as certificates for them carry them
// (cert-manager's usual dnsNames, and the lab's pod certificates).

/** `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`. */
export function serviceDnsNames(service: string, namespace: string): string[] {
  return [
    service,
    `${service}.${namespace}`,
    `${service}.${namespace}.svc`,
    `${service}.${namespace}.svc.cluster.local`,
  ];
}
