// Lab strategy `xds`: proxyless @grpc/grpc-js-xds clients fed by the grpc-kube control plane, which
// watches the lab's EndpointSlices and GRPCRoutes. The xDS client of a process is pinned to one ADS
// address (its bootstrap is read once), so every run in the process reuses the first run's address.
// With --tls the control plane serves ADS over mutual TLS and the data plane to the pods is mutual
// TLS (the clients' channel credentials). grpc-js-xds 1.14 cannot reach a TLS control plane itself
// (bootstrap channel_creds: `insecure` or `google_default` only, docs/xds.md), so its client dials
// a loopback relay in this process that carries the stream over mutual TLS (src/lab/tls.ts).

import type { GrpcRoute } from 'grpc-kube/internal/route/grpcroute.js';
import { registeredXdsAddress, registerXdsClientOnce } from '@grpc-kube/xds/internal/client-registration.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import type { LabStrategy } from '../strategy.js';
import { startTlsRelay, type TlsRelay } from '../tls.js';

/** The name the relay verifies the control plane's certificate by. */
const XDS_NAME = 'grpc-kube-xds.lab.local';

export const xds: LabStrategy = {
  name: 'xds',
  description:
    'grpc-kube xDS control plane (ADS from EndpointSlices + GRPCRoute) → @grpc/grpc-js-xds, round_robin',
  flavour: 'plain',
  canRoute: true,
  async start(env) {
    const lines: string[] = [];
    const clientAddress = registeredXdsAddress() ?? '127.0.0.1:0';
    const own =
      env.tls === undefined
        ? undefined
        : await env.tls.issue('xds-control-plane', { ips: ['127.0.0.1'], dns: [XDS_NAME] });
    const cp = await XdsControlPlane.start({
      kubeConfigYaml: env.kubeConfigYaml,
      // Plaintext: where the process's xDS client dials; TLS: a port of its own behind the relay.
      address: own === undefined ? clientAddress : '127.0.0.1:0',
      ...(own !== undefined && env.tls !== undefined ? { tls: { ...own, caFile: env.tls.caFile } } : {}),
      routeNamespace: env.namespace,
      // The process has one xDS client (one node) for every run, whatever namespace a run uses.
      access: { allowNamespaces: 'all' },
      log: (l) => {
        // Kept for the handle's diagnostics; the lab report reads traffic, not logs.
        if (lines.length < 200) lines.push(l);
      },
    });
    let relay: TlsRelay | undefined;
    try {
      if (env.tls !== undefined) {
        relay = await startTlsRelay({
          listen: clientAddress,
          upstream: { host: '127.0.0.1', port: cp.port, servername: XDS_NAME },
          tls: env.tls,
        });
      }
      await registerXdsClientOnce(relay?.address ?? cp.address, 'grpc-kube-lab', 'lab');
    } catch (err) {
      await relay?.close();
      await cp.close();
      throw err;
    }
    return {
      target: `xds:///${env.apps.plain.service}.${env.namespace}:${env.port}`,
      // No service config here: the xds resolver supplies its own (xds_cluster_manager); a
      // grpc.service_config channel option would replace it.
      channelOptions: { 'grpc.enable_http_proxy': 0 },
      close: async () => {
        await relay?.close();
        await cp.close();
      },
    };
  },
};

/**
 * The GRPCRoute a canary-shift step writes: parent = the app's Service (GAMMA), backends = a stable
 * and a canary Service (each selecting its own Deployment's pods), weighted as given.
 */
export function canaryGrpcRoute(o: {
  namespace: string;
  service: string;
  port: number;
  stableService: string;
  canaryService: string;
  weights: { stable: number; canary: number };
}): GrpcRoute {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    metadata: { name: `${o.service}-canary`, namespace: o.namespace },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: o.service, port: o.port }],
      rules: [
        {
          backendRefs: [
            { name: o.stableService, port: o.port, weight: o.weights.stable },
            { name: o.canaryService, port: o.port, weight: o.weights.canary },
          ],
        },
      ],
    },
  };
}
