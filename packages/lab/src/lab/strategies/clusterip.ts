// `clusterip`: a Service with a virtual IP. A per-connection random L4 forwarder stands for
// kube-proxy, fed from the EndpointSlices as kube-proxy is; each client's one HTTP/2 connection
// lands on one pod and stays there.

import { ClusterIpForwarder } from '../clusterip.js';
import type { LabStrategy } from '../strategy.js';

export const clusterip: LabStrategy = {
  name: 'clusterip',
  hidesPod: true,
  description: 'ClusterIP Service: kube-proxy picks a pod per connection (L4)',
  flavour: 'plain',
  canRoute: false,
  async start(env) {
    const fwd = new ClusterIpForwarder({ host: env.nextVip(), port: env.port, random: env.random });
    await fwd.listen();
    let synced: () => void = () => {};
    const firstSync = new Promise<void>((resolve) => (synced = resolve));
    const sub = env.endpoints.subscribe(
      env.namespace,
      env.apps.plain.service,
      { kind: 'number', port: env.port },
      {
        onEndpoints: (view) => {
          fwd.setBackends(
            view.endpoints().map((e) => ({
              host: e.address,
              port: e.port,
              ready: e.state === 'ready',
              serving: e.state !== 'unready',
            })),
          );
          synced();
        },
        onError: () => {},
      },
    );
    // kube-proxy has programmed the rules before the Service is usable.
    await firstSync;
    return {
      target: `ipv4:${fwd.address}`,
      // TLS passes the L4 hop to the pod: clients verify the Service's name, which they would
      // have dialled (the pods' certificates carry it, not the virtual IP).
      ...(env.tls !== undefined
        ? { channelOptions: { 'grpc.ssl_target_name_override': env.apps.plain.dnsName } }
        : {}),
      close: async () => {
        sub.unsubscribe();
        await fwd.close();
      },
    };
  },
};
