// Sidecar mode against the embedded Kubernetes API server: the authority names the Service, the
// proxy watches its EndpointSlices through the shared SourceRegistry and balances every RPC over
// the ready pods; draining pods get no new RPCs; Services without ready pods and bad authorities
// get UNAVAILABLE naming them; and a Python client (Debian's python3-grpcio) through the sidecar is
// balanced across all pods.

import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { SourceRegistry } from 'grpc-kube/internal/discovery/registry.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { seededRandom } from 'grpc-kube/internal/balancer/runtime.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import type { KubeObject } from 'grpc-kube/internal/kube/types.js';
import { GrpcProxy, type GrpcProxyOptions } from '@grpc-kube/proxy/internal/index.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { newJsonClient, startJsonServer, unary, type JsonServer } from './fixtures/json-service.js';

type T = { after(fn: () => unknown): void };

interface Env {
  api: Awaited<ReturnType<typeof startApi>>;
  pods: JsonServer[];
  port: number;
  slices: SliceWriter;
  proxy: GrpcProxy;
}

/** Three pods of `greeter` on 127.0.0.31-33, all on one port, published as one EndpointSlice. */
async function setup(
  t: T,
  policy: 'round_robin' | 'p2c' | 'ewma' = 'round_robin',
  extra: Partial<GrpcProxyOptions> = {},
): Promise<Env> {
  const api = await startApi();
  t.after(() => api.stop());
  const first = await startJsonServer('pod-0', '127.0.0.31');
  t.after(() => first.kill());
  const pods = [first];
  for (let i = 1; i < 3; i++) {
    const p = await startJsonServer(`pod-${i}`, `127.0.0.${31 + i}`, first.port);
    t.after(() => p.kill());
    pods.push(p);
  }
  const slices = new SliceWriter(api, 'greeter', first.port);
  slices.put(
    'greeter-a',
    pods.map((p, i) => ({ ip: `127.0.0.${31 + i}`, pod: p.name })),
  );
  const registry = new SourceRegistry(KubeClient.fromKubeConfigString(api.kubeConfigYaml()));
  t.after(() => registry.close());
  const proxy = new GrpcProxy({ mode: 'sidecar', registry, policy, ...extra });
  await proxy.listen();
  t.after(() => proxy.close());
  return { api, pods, port: first.port, slices, proxy };
}

/**
 * Send RPCs through `authority` until every pod has answered: the pool gives no pick to a pod whose
 * connection is still being set up, which a loaded machine can stretch over several RPCs, so exact
 * per-pod counts are taken only after this.
 */
async function warm(t: T, env: Env, authority: string): Promise<void> {
  const client = newJsonClient(env.proxy.address, { 'grpc.default_authority': authority });
  t.after(() => client.close());
  const seen = new Set<string>();
  await until(
    async () => {
      seen.add((await unary(client, {}, { deadlineMs: 30_000 })).res?.server ?? '');
      return env.pods.every((p) => seen.has(p.name));
    },
    60_000,
    0,
  );
}

test('sidecar: the authority names the Service; one client connection is balanced per RPC over its pods', async (t) => {
  const env = await setup(t);
  await warm(t, env, `greeter.default:${env.port}`);
  for (const authority of [`greeter.default:${env.port}`, `greeter.default.svc.cluster.local:${env.port}`]) {
    const client = newJsonClient(env.proxy.address, { 'grpc.default_authority': authority });
    t.after(() => client.close());
    const counts: Record<string, number> = {};
    for (let i = 0; i < 30; i++) {
      const r = await unary(client, {});
      const s = r.res?.server ?? `error ${r.err?.details}`;
      counts[s] = (counts[s] ?? 0) + 1;
    }
    assert.deepEqual(counts, { 'pod-0': 10, 'pod-1': 10, 'pod-2': 10 }, authority);
  }
  assert.equal(env.proxy.clientConnections, 3, 'the warm-up client and one per authority');
  // Both spellings are one Service, one watch.
  assert.deepEqual(Object.keys(env.proxy.services()), [`default/greeter:${env.port}`]);
});

test('sidecar: a draining pod finishes its RPCs and gets no new ones; a new pod gets traffic at once', async (t) => {
  const env = await setup(t, 'p2c');
  const client = newJsonClient(env.proxy.address, {
    'grpc.default_authority': `greeter.default:${env.port}`,
  });
  t.after(() => client.close());
  for (let i = 0; i < 6; i++) assert.equal((await unary(client, {})).err, undefined);
  const pod0 = env.pods[0] as JsonServer;
  const slow = Array.from({ length: 6 }, () => unary(client, { delayMs: 300 }));
  await until(() => pod0.inFlight >= 1);
  env.slices.put('greeter-a', [
    { ip: '127.0.0.31', pod: 'pod-0', ready: false, serving: true, terminating: true },
    { ip: '127.0.0.32', pod: 'pod-1' },
    { ip: '127.0.0.33', pod: 'pod-2' },
  ]);
  await until(() => env.proxy.services()[`default/greeter:${env.port}`]?.ready === 2);
  const after = [];
  for (let i = 0; i < 20; i++) after.push(await unary(client, {}));
  assert.ok(after.every((r) => r.err === undefined && r.res?.server !== 'pod-0'));
  assert.deepEqual(
    (await Promise.all(slow)).map((r) => r.err?.code ?? 0),
    Array(6).fill(0),
  );

  const pod3 = await startJsonServer('pod-3', '127.0.0.34', env.port);
  t.after(() => pod3.kill());
  env.slices.put('greeter-b', [{ ip: '127.0.0.34', pod: 'pod-3' }]);
  await until(() => env.proxy.services()[`default/greeter:${env.port}`]?.ready === 3);
  // Once its connection is up (no fixed number of RPCs: a loaded machine may take a while to connect).
  const more: Array<Awaited<ReturnType<typeof unary>>> = [];
  await until(
    async () => {
      more.push(await unary(client, {}, { deadlineMs: 30_000 }));
      return more.at(-1)?.res?.server === 'pod-3';
    },
    60_000,
    0,
  );
  assert.ok(more.every((r) => r.err === undefined));
});

test('sidecar: no ready pod, an unknown Service and a bad authority are UNAVAILABLE with a message naming them', async (t) => {
  const env = await setup(t);
  const empty = new SliceWriter(env.api, 'idle', env.port);
  empty.put('idle-a', [{ ip: '127.0.0.41', ready: false }]);
  const call = async (authority: string): Promise<grpc.ServiceError | undefined> => {
    const c = newJsonClient(env.proxy.address, { 'grpc.default_authority': authority });
    t.after(() => c.close());
    return (await unary(c, {}, { deadlineMs: 30_000 })).err;
  };
  const idle = await call(`idle.default:${env.port}`);
  assert.equal(idle?.code, grpc.status.UNAVAILABLE);
  assert.match(idle?.details ?? '', new RegExp(`Service default/idle:${env.port} has no ready endpoint`));

  const none = await call(`nosuch.default:${env.port}`);
  assert.equal(none?.code, grpc.status.UNAVAILABLE);
  assert.match(none?.details ?? '', /default\/nosuch/);

  const bad = await call('Not_A_Service:80');
  assert.equal(bad?.code, grpc.status.UNAVAILABLE);
  assert.match(bad?.details ?? '', /not a valid Service name/);
});

test('sidecar with GRPCRoutes: header match and weighted backends, changed live', async (t) => {
  const random = seededRandom(5);
  const env = await setup(t, 'round_robin', {
    grpcRoutes: { namespace: 'default' },
    runtime: { now: () => performance.now(), random },
  });
  const canary = await startJsonServer('canary-0', '127.0.0.35', env.port);
  t.after(() => canary.kill());
  new SliceWriter(env.api, 'greeter-canary', env.port).put('greeter-canary-a', [
    { ip: '127.0.0.35', pod: 'canary-0' },
  ]);
  const route = (canaryWeight: number): KubeObject =>
    ({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'GRPCRoute',
      metadata: { name: 'greeter', namespace: 'default' },
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'greeter', port: env.port }],
        rules: [
          {
            matches: [{ headers: [{ name: 'x-canary', value: 'yes' }] }],
            backendRefs: [{ name: 'greeter-canary', port: env.port }],
          },
          {
            backendRefs: [
              { name: 'greeter', port: env.port, weight: 3 },
              { name: 'greeter-canary', port: env.port, weight: canaryWeight },
            ],
          },
        ],
      },
    }) as unknown as KubeObject;
  const v0 = env.proxy.routeVersion;
  env.api.store.create(RESOURCES.grpcroutes, route(1));
  await until(() => env.proxy.routeVersion > v0);
  const client = newJsonClient(env.proxy.address, {
    'grpc.default_authority': `greeter.default:${env.port}`,
  });
  t.after(() => client.close());
  const tagged = new grpc.Metadata();
  tagged.set('x-canary', 'yes');
  for (let i = 0; i < 20; i++)
    assert.equal((await unary(client, {}, { metadata: tagged })).res?.server, 'canary-0');
  let toCanary = 0;
  for (let i = 0; i < 400; i++) if ((await unary(client, {})).res?.server === 'canary-0') toCanary++;
  assert.ok(toCanary > 60 && toCanary < 140, `${toCanary} of 400 went to the canary (weight 1 of 4)`);

  const v1 = env.proxy.routeVersion;
  const existing = env.api.store.get<KubeObject>(RESOURCES.grpcroutes, 'default', 'greeter');
  env.api.store.update(RESOURCES.grpcroutes, { ...route(0), metadata: existing?.metadata } as KubeObject);
  await until(() => env.proxy.routeVersion > v1);
  for (let i = 0; i < 40; i++) assert.notEqual((await unary(client, {})).res?.server, 'canary-0');
});

const PY_CLIENT = fileURLToPath(new URL('../../../test/proxy/fixtures/py_client.py', import.meta.url));

function pythonGrpcSkip(): string | false {
  if (!existsSync('/usr/bin/python3')) return 'python3 not found: apt-get install -y python3-grpcio';
  try {
    // Synchronous probe at load time, so the skip reason shows in the test output.
    execFileSync('/usr/bin/python3', ['-c', 'import grpc'], { stdio: 'ignore' });
    return false;
  } catch {
    return "Python's grpc module is missing: apt-get install -y python3-grpcio";
  }
}

test('sidecar: a Python grpcio client is balanced across all pods', { skip: pythonGrpcSkip() }, async (t) => {
  const env = await setup(t);
  await warm(t, env, `greeter.default:${env.port}`);
  const connectionsBefore = env.proxy.stats.connections;
  const { stdout } = await promisify(execFile)(
    '/usr/bin/python3',
    [PY_CLIENT, env.proxy.address, `greeter.default:${env.port}`, '60'],
    { timeout: 120_000, env: { ...process.env, no_proxy: '*', http_proxy: '', https_proxy: '' } },
  );
  const out = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as {
    counts: Record<string, number>;
    failures: Record<string, number>;
  };
  assert.deepEqual(out.failures, {});
  assert.deepEqual(out.counts, { 'pod-0': 20, 'pod-1': 20, 'pod-2': 20 });
  // One Python channel = one HTTP/2 connection to the sidecar.
  assert.equal(env.proxy.stats.connections - connectionsBefore, 1);
});
