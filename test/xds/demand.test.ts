// Demand-driven targets: a Listener is built when the first stream subscribes, shared by later
// streams, and dropped with its Clusters and EndpointSlice watches `idleTargetTtlMs` after the last
// subscriber leaves (0 here, so the test needs no waiting beyond the event loop).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import { CDS, EDS, LDS, RDS } from '@grpc-kube/xds/internal/protos.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { openAds } from './fixture.js';

let api: EmbeddedApiServer;
let cp: XdsControlPlane;

before(async () => {
  api = await startApi();
  new SliceWriter(api, 'svc', 9090).put('svc-a', [{ ip: '10.0.0.1' }]);
  cp = await XdsControlPlane.start({
    kubeConfigYaml: api.kubeConfigYaml(),
    idleTargetTtlMs: 0,
    log: () => {},
  });
});

after(async () => {
  await cp?.close();
  await api?.stop();
});

test('a target lives while subscribed, is shared, and is dropped with its watches after the last leaves', async () => {
  const name = 'svc.default:9090';
  const cluster = 'default/svc:9090';
  assert.deepEqual(cp.targetNames(), []);
  const a = openAds(cp.address);
  const b = openAds(cp.address);
  a.send({ type: LDS, names: [name] });
  assert.equal((await a.next()).resources.length, 1);
  b.send({ type: LDS, names: [name] });
  assert.equal((await b.next()).resources.length, 1);
  assert.equal(cp.ads.subscribed(LDS).get(name), 2);
  assert.deepEqual(cp.targetNames(), [name]);
  await until(() => cp.cache.has(EDS, cluster));
  a.close();
  await until(() => cp.ads.subscribed(LDS).get(name) === 1);
  assert.deepEqual(cp.targetNames(), [name]);
  b.close();
  await until(() => cp.targetNames().length === 0);
  for (const [type, n] of [
    [LDS, name],
    [RDS, name],
    [CDS, cluster],
    [EDS, cluster],
  ] as const)
    assert.equal(cp.cache.has(type, n), false, `${type} ${n}`);
  // Re-subscribing builds it again and answers with endpoints as soon as the new watch lists.
  const c = openAds(cp.address);
  c.send({ type: EDS, names: [cluster] });
  c.send({ type: LDS, names: [name] });
  const first = await c.next();
  const second = await c.next();
  assert.deepEqual([first.type_url, second.type_url].sort(), [EDS, LDS].sort());
  c.close();
});
