// `grpc-kube xds bootstrap|serve` and the lab strategy `xds`: real grpc-js-xds clients in this
// process, pointed at the strategy's control plane; a second run in the same process reuses the
// pinned ADS address and the client follows it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { xdsCommand } from '@grpc-kube/cli/internal/xds.js';
import { canaryGrpcRoute, xds } from '@grpc-kube/lab/internal/lab/strategies/xds.js';
import type { LabEnv } from '@grpc-kube/lab/internal/lab/strategy.js';
import { LDS } from '@grpc-kube/xds/internal/protos.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { answers, newEchoClient, startEchoServer, type EchoServer } from '../helpers/echo.js';
import { openAds, spread } from './fixture.js';

let api: EmbeddedApiServer;
let port: number;
const servers: EchoServer[] = [];
let dir: string;

before(async () => {
  api = await startApi();
  dir = mkdtempSync(join(tmpdir(), 'gk-xds-'));
  api.store.create(RESOURCES.namespaces, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'lab' } });
  const s = await startEchoServer('hello-1', '127.0.0.21');
  port = s.port;
  servers.push(
    s,
    await startEchoServer('hello-2', '127.0.0.22', port),
    await startEchoServer('canary-1', '127.0.0.23', port),
  );
  new SliceWriter(api, 'hello', port, 'lab').put('hello-a', [{ ip: '127.0.0.21' }, { ip: '127.0.0.22' }]);
  new SliceWriter(api, 'hello-stable', port, 'lab').put('hello-stable-a', [
    { ip: '127.0.0.21' },
    { ip: '127.0.0.22' },
  ]);
  new SliceWriter(api, 'hello-canary', port, 'lab').put('hello-canary-a', [{ ip: '127.0.0.23' }]);
});

after(async () => {
  for (const s of servers) s.kill();
  await api?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('xds bootstrap prints the GRPC_XDS_BOOTSTRAP_CONFIG JSON; bad input exits 2', async () => {
  const out: string[] = [];
  const err: string[] = [];
  const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l) };
  assert.equal(
    await xdsCommand(['bootstrap', '--server', 'xds.grpc-kube:18000', '--node-id', 'n1', '--zone', 'z1'], io),
    0,
  );
  assert.deepEqual(JSON.parse(out[0] ?? ''), {
    xds_servers: [
      {
        server_uri: 'xds.grpc-kube:18000',
        channel_creds: [{ type: 'insecure' }],
        server_features: ['xds_v3'],
      },
    ],
    node: { id: 'n1', cluster: 'grpc-kube', locality: { zone: 'z1' } },
  });
  assert.equal(await xdsCommand(['bootstrap', '--node-id', 'n1'], io), 2);
  assert.match(err.join('\n'), /--server/);
  assert.equal(await xdsCommand(['bootstrap', '--server', 'nope', '--node-id', 'n1'], io), 2);
  assert.equal(await xdsCommand(['serve', '--port', 'x'], io), 2);
  assert.equal(await xdsCommand(['frobnicate'], io), 2);
});

test('xds serve answers ADS from a kubeconfig file and stops on its signal', async () => {
  const kc = join(dir, 'kubeconfig');
  writeFileSync(kc, api.kubeConfigYaml());
  const ac = new AbortController();
  let address = '';
  const out: string[] = [];
  const done = xdsCommand(['serve', '--kubeconfig', kc, '--address', '127.0.0.1', '--port', '0'], {
    out: (l) => out.push(l),
    err: () => {},
    signal: ac.signal,
    onListening: (a) => (address = a),
  });
  await until(() => address !== '');
  const s = openAds(address);
  s.send({ type: LDS, names: [`hello.lab:${port}`], nodeId: 'cli-test', namespace: 'lab' });
  const r = await s.next();
  assert.equal(r.resources.length, 1);
  s.close();
  ac.abort();
  assert.equal(await done, 0);
  assert.match(out[0] ?? '', /ADS listening on 127\.0\.0\.1:\d+/);
});

test('lab strategy xds: clients follow the control plane, GRPCRoute weights, and a second run', async () => {
  const env = {
    kubeConfigYaml: api.kubeConfigYaml(),
    namespace: 'lab',
    port,
    apps: { plain: { service: 'hello' } },
  } as unknown as LabEnv;
  const h = await xds.start(env);
  assert.equal(h.target, `xds:///hello.lab:${port}`);
  const client = newEchoClient(h.target, h.channelOptions);
  try {
    await until(() => answers(client, 2000), 60_000, 50);
    // Both pods connected first: while one is still connecting, round_robin sends all to the other.
    await until(
      async () => {
        const { by } = await spread(client, 20, 5);
        return (by['hello-1'] ?? 0) > 0 && (by['hello-2'] ?? 0) > 0;
      },
      60_000,
      20,
    );
    const even = await spread(client, 400);
    assert.equal(even.failed, 0);
    assert.ok((even.by['hello-1'] ?? 0) > 150 && (even.by['hello-2'] ?? 0) > 150, JSON.stringify(even.by));
    api.store.create(
      RESOURCES.grpcroutes,
      canaryGrpcRoute({
        namespace: 'lab',
        service: 'hello',
        port,
        stableService: 'hello-stable',
        canaryService: 'hello-canary',
        weights: { stable: 0, canary: 100 },
      }),
    );
    await until(async () => (await spread(client, 20, 5)).by['canary-1'] === 20, 30_000, 10);
  } finally {
    client.close();
    await h.close();
  }
  // Second run in the same process: same ADS address, the registered client reconnects.
  const h2 = await xds.start(env);
  const c2 = newEchoClient(h2.target, h2.channelOptions);
  try {
    await until(async () => (await spread(c2, 20, 5)).by['canary-1'] === 20, 60_000, 50);
  } finally {
    c2.close();
    await h2.close();
  }
});
