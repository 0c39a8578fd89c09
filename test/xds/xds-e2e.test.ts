// Real @grpc/grpc-js-xds clients against our control plane, fed by an embedded API server, with real
// grpc-js servers on 127.0.0.x: route splits, live GRPCRoute edits, endpoint changes, a NACK, and a
// control-plane restart — all without restarting a client.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import { CDS, EDS, LDS, RDS, encodeAny, encodeMessage } from '@grpc-kube/xds/internal/protos.js';
import { buildCluster } from '@grpc-kube/xds/internal/resources.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { answers, newEchoClient, startEchoServer, type Echo, type EchoServer } from '../helpers/echo.js';
import { nextEvent, putRoute, registerXdsClient, routeObject, spread } from './fixture.js';

type GenericWho = {
  who(
    req: object,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: { server: string }) => void,
  ): void;
};

let api: EmbeddedApiServer;
let cp: XdsControlPlane;
let client: Echo;
let port: number;
let stable: SliceWriter;
let canary: SliceWriter;
const servers: EchoServer[] = [];
const logs: string[] = [];

function share(by: Record<string, number>, names: string[], total: number): number {
  return (100 * names.reduce((n, k) => n + (by[k] ?? 0), 0)) / total;
}

/** Apply a change and wait until the test client ACKs a newer version of `type`. */
async function applied(type: string, change: () => void): Promise<number> {
  const before = Number(cp.cache.version(type as typeof RDS));
  const acked = nextEvent(cp, (e) => e.kind === 'ack' && e.type === type && Number(e.version) > before);
  const t0 = performance.now();
  change();
  await acked;
  return performance.now() - t0;
}

before(async () => {
  api = await startApi();
  const s1 = await startEchoServer('stable-1', '127.0.0.11');
  port = s1.port;
  servers.push(
    s1,
    await startEchoServer('stable-2', '127.0.0.12', port),
    await startEchoServer('canary-1', '127.0.0.13', port),
    await startEchoServer('canary-2', '127.0.0.14', port),
  );
  stable = new SliceWriter(api, 'stable', port);
  canary = new SliceWriter(api, 'canary', port);
  stable.put('stable-a', [{ ip: '127.0.0.11' }, { ip: '127.0.0.12' }]);
  canary.put('canary-a', [{ ip: '127.0.0.13' }]);
  putRoute(
    api,
    routeObject('app', 'app', port, [
      { service: 'stable', weight: 95 },
      { service: 'canary', weight: 5 },
    ]),
  );
  cp = await XdsControlPlane.start({ kubeConfigYaml: api.kubeConfigYaml(), log: (l) => logs.push(l) });
  await registerXdsClient(cp.address, 'e2e-node');
  client = newEchoClient(`xds:///app.default:${port}`);
  await until(() => answers(client), 60_000, 50);
  // Every endpoint connected before the split is measured: while one is still connecting (a loaded
  // machine can take a while), round_robin sends its share to the others.
  await until(
    async () => {
      const { by } = await spread(client, 200, 20);
      return ['stable-1', 'stable-2', 'canary-1'].every((s) => (by[s] ?? 0) > 0);
    },
    60_000,
    20,
  );
});

after(async () => {
  client?.close();
  await cp?.close();
  for (const s of servers) s.kill();
  await api?.stop();
});

test('a 95/5 GRPCRoute split holds within ±2 points over 10,000 RPCs', async () => {
  const { by, failed } = await spread(client, 10_000, 250);
  assert.equal(failed, 0);
  const canaryShare = share(by, ['canary-1'], 10_000);
  console.log(`95/5 split: canary ${canaryShare.toFixed(2)}% of 10000 (${JSON.stringify(by)})`);
  assert.ok(Math.abs(canaryShare - 5) <= 2, `canary share ${canaryShare}%`);
  // Within the stable cluster round_robin spreads evenly.
  assert.ok(Math.abs((by['stable-1'] ?? 0) - (by['stable-2'] ?? 0)) < 0.1 * 9500, JSON.stringify(by));
});

test('changing the GRPCRoute to 50/50 and then 0/100 takes effect without a restart', async (t) => {
  const ms50 = await applied(RDS, () =>
    putRoute(
      api,
      routeObject('app', 'app', port, [
        { service: 'stable', weight: 50 },
        { service: 'canary', weight: 50 },
      ]),
    ),
  );
  const half = await spread(client, 2000);
  assert.equal(half.failed, 0);
  const canaryHalf = share(half.by, ['canary-1'], 2000);
  assert.ok(Math.abs(canaryHalf - 50) <= 5, `canary share ${canaryHalf}%`);
  const ms100 = await applied(RDS, () =>
    putRoute(
      api,
      routeObject('app', 'app', port, [
        { service: 'stable', weight: 0 },
        { service: 'canary', weight: 100 },
      ]),
    ),
  );
  const all = await spread(client, 500);
  assert.deepEqual(all, { by: { 'canary-1': 500 }, failed: 0 });
  // How fast the edits land depends on the machine: a figure to read, not a claim.
  t.diagnostic(
    `route edits applied (client ACK) in ${ms50.toFixed(0)} ms and ${ms100.toFixed(0)} ms; 50/50 gave ${canaryHalf.toFixed(1)}% canary`,
  );
});

test('endpoints added, draining and removed reach the clients', async (t) => {
  const c1 = servers[2] as EchoServer;
  const c2 = servers[3] as EchoServer;
  // Time from the EndpointSlice write to the first RPC the new endpoint serves (the client must
  // also connect to it), with RPCs flowing.
  const t0 = performance.now();
  const added = await applied(EDS, () =>
    canary.put('canary-a', [{ ip: '127.0.0.13' }, { ip: '127.0.0.14' }]),
  );
  await until(
    async () => {
      await spread(client, 20, 5);
      return c2.served > 0;
    },
    30_000,
    1,
  );
  const firstRpcMs = performance.now() - t0;
  let r = await spread(client, 400);
  assert.equal(r.failed, 0);
  assert.ok((r.by['canary-2'] ?? 0) > 100 && (r.by['canary-1'] ?? 0) > 100, JSON.stringify(r.by));
  // Terminating but serving: DRAINING, so no new RPCs once the client has the update.
  const drained = await applied(EDS, () =>
    canary.put('canary-a', [
      { ip: '127.0.0.13', ready: false, serving: true, terminating: true },
      { ip: '127.0.0.14' },
    ]),
  );
  const c1Before = c1.served;
  r = await spread(client, 300);
  assert.deepEqual(r, { by: { 'canary-2': 300 }, failed: 0 });
  assert.equal(c1.served, c1Before);
  const removed = await applied(EDS, () => canary.put('canary-a', [{ ip: '127.0.0.14' }]));
  r = await spread(client, 100);
  assert.deepEqual(r, { by: { 'canary-2': 100 }, failed: 0 });
  t.diagnostic(
    `EDS changes ACKed by the client in ${added.toFixed(0)} / ${drained.toFixed(0)} / ${removed.toFixed(0)} ms; ` +
      `new endpoint served its first RPC ${firstRpcMs.toFixed(0)} ms after the slice write`,
  );
});

test('a NACKed update is logged with the client error and the last good config stays', async () => {
  const name = `default/canary:${port}`;
  const before = Number(cp.cache.version(CDS));
  const nack = nextEvent(cp, (e) => e.kind === 'nack' && e.type === CDS);
  // One bad version: an EDS cluster without eds_cluster_config (A27 requires it).
  cp.cache.set(CDS, name, encodeAny(CDS, encodeMessage(CDS, { name, type: 'EDS' })));
  const e = await nack;
  assert.equal(e.kind, 'nack');
  if (e.kind !== 'nack') return;
  assert.equal(Number(e.version), before + 1);
  assert.match(e.error, /eds_cluster_config/);
  assert.ok(Number(e.keptVersion) <= before);
  assert.ok(logs.some((l) => l.startsWith('NACK from e2e-node') && l.includes('eds_cluster_config')));
  const r = await spread(client, 300);
  assert.deepEqual(r, { by: { 'canary-2': 300 }, failed: 0 });
  // The next good version is accepted.
  await applied(CDS, () => cp.cache.set(CDS, name, buildCluster(name)));
});

test('a control-plane restart leaves clients serving on their last config, and they resubscribe', async (t) => {
  const address = cp.address;
  const target = `app.default:${port}`;
  await cp.close();
  const down = await spread(client, 300);
  assert.deepEqual(down, { by: { 'canary-2': 300 }, failed: 0 });
  // While it is down the endpoints change; the restarted control plane must deliver that.
  canary.put('canary-a', [{ ip: '127.0.0.13' }, { ip: '127.0.0.14' }]);
  const t0 = performance.now();
  cp = await XdsControlPlane.start({
    kubeConfigYaml: api.kubeConfigYaml(),
    address,
    log: (l) => logs.push(l),
  });
  await until(
    () =>
      cp.ads.subscribed(LDS).has(target) &&
      cp.ads.subscribed(CDS).has(`default/canary:${port}`) &&
      cp.ads.subscribed(EDS).has(`default/canary:${port}`),
    60_000,
    20,
  );
  const resubscribedMs = performance.now() - t0;
  await until(
    async () => {
      const r = await spread(client, 50, 10);
      return (r.by['canary-1'] ?? 0) > 0;
    },
    30_000,
    20,
  );
  const r = await spread(client, 400);
  assert.equal(r.failed, 0);
  assert.ok((r.by['canary-1'] ?? 0) > 100 && (r.by['canary-2'] ?? 0) > 100, JSON.stringify(r.by));
  t.diagnostic(`client resubscribed ${resubscribedMs.toFixed(0)} ms after the control plane came back`);
});

test('a GRPCRoute header match sends only matching RPCs to the canary', async () => {
  await applied(RDS, () =>
    putRoute(
      api,
      routeObject(
        'app',
        'app',
        port,
        [
          { service: 'stable', weight: 100 },
          { service: 'canary', weight: 0 },
        ],
        [
          {
            matches: [{ headers: [{ name: 'x-canary', value: 'yes' }] }],
            backendRefs: [{ name: 'canary', port }],
          },
        ],
      ),
    ),
  );
  const call = (canary: boolean): Promise<string> =>
    new Promise((resolve, reject) => {
      const md = new grpc.Metadata();
      if (canary) md.set('x-canary', 'yes');
      (client as unknown as GenericWho).who({}, md, { deadline: Date.now() + 5000 }, (err, res) =>
        err ? reject(err) : resolve(res?.server ?? ''),
      );
    });
  // The stable cluster was not referenced before this edit: the client switches once its CDS and
  // EDS are in (make before break), a few ms after the RDS ACK.
  await until(async () => (await call(false)).startsWith('stable-'), 30_000, 5);
  const plain = await Promise.all(Array.from({ length: 200 }, () => call(false)));
  const tagged = await Promise.all(Array.from({ length: 200 }, () => call(true)));
  assert.ok(
    plain.every((s) => s.startsWith('stable-')),
    JSON.stringify([...new Set(plain)]),
  );
  assert.ok(
    tagged.every((s) => s.startsWith('canary-')),
    JSON.stringify([...new Set(tagged)]),
  );
});
