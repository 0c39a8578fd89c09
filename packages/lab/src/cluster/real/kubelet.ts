// What the one lab kubelet (../kubelet.ts) is given on the real control plane, and only there: pod
// addresses from the lab network's CIDR, each made reachable as a network namespace of its own, the
// node's address being the network's gateway; Node heartbeats and Leases as the real node-lifecycle
// controller expects them (the real kubelet's 10 s and 40 s); times to the second, as kube-apiserver
// keeps them; and, when asked, each pod's ServiceAccount token (TokenRequest) projected into it.

import { IpPool } from '../ip-pool.js';
import type { Kube } from '../kube-api.js';
import type { KubeletOptions } from '../kubelet.js';
import type { LabNetwork } from './netns.js';
import { ServiceAccountProjector } from './service-account.js';

/** Real-cluster pod addresses per kubelet: enough for any lab, far below a /16's. */
const POD_ADDRESSES = 4000;

export type RealNodeOptions = Pick<
  KubeletOptions,
  | 'hostIP'
  | 'ipAllocator'
  | 'podNetwork'
  | 'podEnvironment'
  | 'heartbeatMs'
  | 'leaseDurationSeconds'
  | 'timestamps'
>;

/**
 * The real cluster's node: `kube` is the kubelet's (its TokenRequests go there too). With
 * `serviceAccounts`, pods get KUBERNETES_SERVICE_HOST/PORT (a relay on the gateway to `apiUrl`), the
 * token, `caPem` and the namespace (ServiceAccountProjector); off by default: the lab's own pods take
 * their configuration from the lab.
 */
export function realNodeOptions(
  kube: Kube,
  network: LabNetwork,
  serviceAccounts?: { readonly caPem: string; readonly apiUrl: string },
): RealNodeOptions {
  const sa = serviceAccounts;
  return {
    hostIP: network.gateway,
    ipAllocator: new IpPool({ first: firstPoolAddress(network.cidr), count: POD_ADDRESSES }),
    podNetwork: network,
    heartbeatMs: 10_000,
    leaseDurationSeconds: 40,
    timestamps: 's',
    ...(sa !== undefined
      ? {
          podEnvironment: new ServiceAccountProjector({
            kube,
            caPem: sa.caPem,
            apiUrl: sa.apiUrl,
            host: network.gateway,
          }),
        }
      : {}),
  };
}

function firstPoolAddress(cidr: string): string {
  const [addr] = cidr.split('/');
  const o = (addr ?? '').split('.').map(Number);
  return `${o[0]}.${o[1]}.${o[2]}.${(o[3] ?? 0) + 1}`;
}
