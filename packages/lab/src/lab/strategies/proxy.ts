// The L7 proxy strategies: clients that embed nothing of grpc-kube dial a grpc-kube proxy, which
// balances every RPC over the Service's ready pods from the lab's EndpointSlice watch.
//  - `proxy`: an ingress proxy on its own address, configured with the Service as its one target.
//  - `sidecar`: a proxy on loopback next to the clients; the client's authority names the Service
//    (`svc.ns:port`), as an application in a meshed pod dials it.
//  - `proxy-nghttpx` (opt-in: needs Debian's nghttp2-proxy): the same discovery driving nghttpx as
//    a native data plane, round robin per RPC, no GRPCRoutes.
// `proxy` and `sidecar` run `grpc-kube proxy` as a process of its own (as deployed), use P2C
// least-request and follow the namespace's GRPCRoutes (canary weights). The client side is plain
// grpc-js with pick_first: one connection to the proxy, which is exactly the situation that breaks
// balancing without an L7 hop.

import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { onProcessExit, startProcess, tailFile } from '../../cluster/real/processes.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { NghttpxDataPlane } from '@grpc-kube/proxy/internal/nghttpx.js';
import type { LabEnv, LabStrategy, StrategyHandle } from '../strategy.js';
import type { LabTls } from '../tls.js';

/** Grace a strategy's proxy gives RPCs in flight when the lab closes it. */
const CLOSE_GRACE_MS = 1000;
const CLI = fileURLToPath(new URL('../../../../../cli/dist/src/main.js', import.meta.url));
const SETPRIV = '/usr/bin/setpriv';
const START_TIMEOUT_MS = 20_000;

/**
 * `grpc-kube proxy` as a process of its own, as it is deployed (a sidecar container, an ingress
 * Deployment): its event loop is not the one driving the lab's clients, so neither one's load shows
 * up in the other's latency. It reads the lab's API with a kubeconfig file, balances with P2C and
 * follows the namespace's GRPCRoutes (canary weights), as the xds strategy does.
 */
async function startProxy(
  env: LabEnv,
  mode: 'ingress' | 'sidecar',
): Promise<{ address: string; close(): Promise<void> }> {
  const service = `${env.apps.plain.service}.${env.namespace}:${env.port}`;
  const dir = await mkdtemp(join(tmpdir(), `grpc-kube-lab-${mode}-`));
  const kubeconfig = join(dir, 'kubeconfig');
  await writeFile(kubeconfig, env.kubeConfigYaml, { mode: 0o600 });
  const host = env.nextVip();
  const args = [
    CLI,
    'proxy',
    '--mode',
    mode,
    '--listen',
    `${host}:0`,
    '--kubeconfig',
    kubeconfig,
    '--namespace',
    env.namespace,
    '--policy',
    'p2c',
    '--grpc-routes',
    '--grace-ms',
    String(CLOSE_GRACE_MS),
    ...(mode === 'ingress' ? ['--target', service] : []),
    ...(env.tls !== undefined ? await tlsArgs(env.tls, mode, host) : []),
  ];
  const log = join(dir, 'proxy.log');
  // With the lab's process: a lab killed by a signal takes its proxies with it (as its pods).
  const [exe, argv] = existsSync(SETPRIV)
    ? [SETPRIV, ['--pdeathsig', 'KILL', '--', process.execPath, ...args]]
    : [process.execPath, args];
  const proc = startProcess(`proxy-${mode}`, exe, argv, log);
  const unhook = onProcessExit(() => proc.killNow());
  const cleanup = async (): Promise<void> => {
    unhook();
    await rm(dir, { recursive: true, force: true });
  };
  const end = Date.now() + START_TIMEOUT_MS;
  let address: string | undefined;
  while (address === undefined) {
    const m = /listening on (\S+)/.exec(await readFile(log, 'utf8').catch(() => ''));
    if (m !== null) address = m[1] as string;
    else if (proc.hasExited() || Date.now() > end) {
      const tail = await tailFile(log);
      await proc.stop(0);
      await cleanup();
      throw new GrpcKubeError(
        'GK_ERR_LAB',
        `the ${mode} proxy did not start within ${START_TIMEOUT_MS} ms; its log:\n${tail}`,
      );
    } else await delay(20);
  }
  return {
    address,
    close: async () => {
      await proc.stop(CLOSE_GRACE_MS + 5000);
      // Its last lines say how the RPCs ended and where their time went (queue, connect, first byte).
      const tail = (await tailFile(log, 2)).split('\n').filter((l) => l.includes('grpc-kube proxy:'));
      for (const l of tail) env.log(`  ${mode}: ${l.replace('grpc-kube proxy: ', '')}`);
      await cleanup();
    },
  };
}

/**
 * With --tls the proxy terminates mutual TLS (a certificate for its address and its name) and
 * originates it to the pods, presenting the same certificate and verifying them against the lab CA.
 */
async function tlsArgs(tls: LabTls, mode: 'ingress' | 'sidecar', host: string): Promise<string[]> {
  const own = await tls.issue(`proxy-${mode}`, { ips: [host], dns: [proxyName(mode)] });
  return [
    ...['--tls-cert', own.certFile, '--tls-key', own.keyFile, '--tls-ca', tls.caFile],
    ...['--backend-tls-cert', own.certFile, '--backend-tls-key', own.keyFile, '--backend-tls-ca', tls.caFile],
  ];
}

/** The name clients verify a lab proxy by (an IP as TLS server name is not allowed, RFC 6066). */
function proxyName(mode: 'ingress' | 'sidecar'): string {
  return `grpc-kube-${mode}.lab.local`;
}

async function proxyHandle(
  env: LabEnv,
  mode: 'ingress' | 'sidecar',
  authority: string | undefined,
): Promise<StrategyHandle> {
  const p = await startProxy(env, mode);
  return {
    target: `ipv4:${p.address}`,
    channelOptions: {
      ...env.clientOptions('pick_first'),
      ...(authority !== undefined ? { 'grpc.default_authority': authority } : {}),
      ...(env.tls !== undefined ? { 'grpc.ssl_target_name_override': proxyName(mode) } : {}),
    },
    close: () => p.close(),
  };
}

export const proxy: LabStrategy = {
  name: 'proxy',
  hidesPod: true,
  description: 'grpc-kube L7 proxy (ingress): one connection per client to the proxy, P2C per RPC',
  flavour: 'plain',
  canRoute: true,
  start: (env) => proxyHandle(env, 'ingress', undefined),
};

export const sidecar: LabStrategy = {
  name: 'sidecar',
  hidesPod: true,
  description: 'grpc-kube sidecar proxy on loopback: authority = Service, P2C per RPC',
  flavour: 'plain',
  canRoute: true,
  start: (env) => proxyHandle(env, 'sidecar', `${env.apps.plain.service}.${env.namespace}:${env.port}`),
};

export const proxyNghttpx: LabStrategy = {
  name: 'proxy-nghttpx',
  hidesPod: true,
  description:
    'nghttpx (C) as the data plane, its backends set from the EndpointSlice watch: round robin per RPC',
  flavour: 'plain',
  canRoute: false,
  noTls:
    "the lab's NghttpxDataPlane has a plaintext frontend and h2c backends (TLS in nghttpx is measured by `npm run bench -- proxy`)",
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
