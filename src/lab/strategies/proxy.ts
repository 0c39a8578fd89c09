// The L7 proxy strategies: clients that embed nothing of grpc-kube dial a grpc-kube proxy, which
// balances every RPC over the Service's ready pods from the lab's EndpointSlice watch.
//  - `proxy`: an ingress proxy on its own address, configured with the Service as its one target.
//  - `sidecar`: a proxy on loopback next to the clients; the client's authority names the Service
//    (`svc.ns:port`), as an application in a meshed pod dials it.
//  - `proxy-nghttpx` (opt-in: needs Debian's nghttp2-proxy): the same discovery driving nghttpx as
//    a native data plane, round robin per RPC, no GRPCRoutes.
// `proxy` and `sidecar` use P2C least-request and follow the namespace's GRPCRoutes (canary weights). The client side is plain grpc-js with pick_first: one connection to
// the proxy, which is exactly the situation that breaks balancing without an L7 hop.

import { NghttpxDataPlane } from '../../proxy/nghttpx.js';
import { GrpcProxy } from '../../proxy/server.js';
import type { LabEnv, LabStrategy, StrategyHandle } from '../strategy.js';

/** Grace a strategy's proxy gives RPCs in flight when the lab closes it. */
const CLOSE_GRACE_MS = 1000;

async function startProxy(env: LabEnv, mode: 'ingress' | 'sidecar'): Promise<GrpcProxy> {
  const service = `${env.apps.plain.service}.${env.namespace}:${env.port}`;
  const proxy = new GrpcProxy({
    mode,
    host: env.nextVip(),
    port: 0,
    registry: env.endpoints,
    defaultNamespace: env.namespace,
    policy: 'p2c',
    // Canary weights and header routes from the lab's GRPCRoutes, as the xds strategy follows them.
    grpcRoutes: { namespace: env.namespace },
    ...(mode === 'ingress' ? { target: service } : {}),
  });
  await proxy.listen();
  // Like kube-proxy having programmed its rules: the Service is known before the first client call.
  await proxy.watch(service);
  return proxy;
}

function handle(env: LabEnv, proxy: GrpcProxy, authority: string | undefined): StrategyHandle {
  return {
    target: `ipv4:${proxy.address}`,
    channelOptions: {
      ...env.clientOptions('pick_first'),
      ...(authority !== undefined ? { 'grpc.default_authority': authority } : {}),
    },
    close: () => proxy.drain(CLOSE_GRACE_MS),
  };
}

export const proxy: LabStrategy = {
  name: 'proxy',
  description: 'grpc-kube L7 proxy (ingress): one connection per client to the proxy, P2C per RPC',
  flavour: 'plain',
  canRoute: true,
  async start(env) {
    return handle(env, await startProxy(env, 'ingress'), undefined);
  },
};

export const sidecar: LabStrategy = {
  name: 'sidecar',
  description: 'grpc-kube sidecar proxy on loopback: authority = Service, P2C per RPC',
  flavour: 'plain',
  canRoute: true,
  async start(env) {
    return handle(
      env,
      await startProxy(env, 'sidecar'),
      `${env.apps.plain.service}.${env.namespace}:${env.port}`,
    );
  },
};

export const proxyNghttpx: LabStrategy = {
  name: 'proxy-nghttpx',
  description:
    'nghttpx (C) as the data plane, its backends set from the EndpointSlice watch: round robin per RPC',
  flavour: 'plain',
  canRoute: false,
  async start(env) {
    const dp = new NghttpxDataPlane({
      target: `${env.apps.plain.service}.${env.namespace}:${env.port}`,
      registry: env.endpoints,
      host: env.nextVip(),
    });
    await dp.start();
    return {
      target: `ipv4:${dp.address}`,
      channelOptions: env.clientOptions('pick_first'),
      close: () => dp.stop(CLOSE_GRACE_MS),
    };
  },
};
