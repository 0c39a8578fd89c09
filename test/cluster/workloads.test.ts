// The workload helpers both lab clusters share (workloads.ts), over the store and over HTTP to the
// embedded API server: a wait judges its view only once the watch has synced (a namespace without
// pods is "no pods", one with pods is not, until they go); applyApp creates, then merge-patches;
// scale names what is wrong. No pod runs here: the objects are written as the controllers would.

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';

import { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import type { Deployment, Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { KINDS, httpKube, storeKube, type Kube } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import { MemoryStore } from '@grpc-kube/lab/internal/cluster/store.js';
import { waitForState, workloads } from '@grpc-kube/lab/internal/cluster/workloads.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

const NS = 'wl';

const BACKENDS: Array<{ name: string; open(t: TestContext): Promise<Kube> }> = [
  {
    name: 'store',
    open: async (t) => {
      const kube = storeKube(new MemoryStore({ initialNamespaces: ['default', NS] }));
      t.after(() => kube.close());
      return kube;
    },
  },
  {
    name: 'http, embedded API server',
    open: async (t) => {
      const server = new EmbeddedApiServer({
        store: new MemoryStore({ initialNamespaces: ['default', NS] }),
      });
      await server.start();
      t.after(() => server.close());
      const kube = httpKube(server.kubeConfigYaml());
      t.after(() => kube.close());
      return kube;
    },
  },
];

const pod = (name: string): Pod =>
  ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS, labels: { app: 'w' } },
    spec: { containers: [{ name: 'c', image: 'hello' }] },
  }) as Pod;

const noPods = (kube: Kube, timeoutMs: number): Promise<true> =>
  waitForState(
    kube,
    [KINDS.pods],
    NS,
    (v) => (v.all(KINDS.pods).length === 0 ? true : undefined),
    timeoutMs,
    (v) => `no pods (now ${v.all(KINDS.pods).length})`,
  );

for (const b of BACKENDS) {
  test(`${b.name}: waitForState judges once synced: "no pods" holds in an empty namespace, then only once they go`, async (t) => {
    const kube = await b.open(t);
    // Nothing to watch: only the sync can tell the wait that the view is whole.
    assert.equal(await noPods(kube, 60_000), true);

    await kube.create(KINDS.pods, pod('p1'));
    // Long enough for the wait's own watch to sync on a loaded machine (before that it sees "now 0").
    await assert.rejects(noPods(kube, 3000), (err: unknown) => {
      assert.ok(err instanceof GrpcKubeError);
      assert.equal(err.code, 'GK_ERR_LAB');
      assert.match(err.message, /no pods \(now 1\)/);
      return true;
    });
    const gone = noPods(kube, 60_000);
    await kube.delete(KINDS.pods, NS, 'p1', { gracePeriodSeconds: 0 });
    assert.equal(await gone, true, 'the DELETED event settles it');
  });

  test(`${b.name}: applyApp creates, then merge-patches labels and spec; scale names what is wrong`, async (t) => {
    const kube = await b.open(t);
    const w = workloads(kube);
    const app = { name: 'w', namespace: NS, replicas: 2, env: { VERSION: 'v1' } };
    await w.applyApp(app);
    const first = await kube.get<Deployment>(KINDS.deployments, NS, 'w');
    assert.ok(first && (await kube.get(KINDS.services, NS, 'w')), 'Deployment and Service created');

    await w.applyApp({ ...app, env: { VERSION: 'v2' } });
    const second = await kube.get<Deployment>(KINDS.deployments, NS, 'w');
    assert.equal(second?.metadata.uid, first.metadata.uid, 'the same object, patched');
    assert.deepEqual(second?.spec.template.spec.containers[0]?.env, [{ name: 'VERSION', value: 'v2' }]);

    await w.scale(NS, 'w', 3);
    assert.equal((await kube.get<Deployment>(KINDS.deployments, NS, 'w'))?.spec.replicas, 3);
    await assert.rejects(w.scale(NS, 'absent', 1), (err: unknown) => {
      assert.ok(err instanceof GrpcKubeError);
      assert.equal(err.code, 'GK_ERR_LAB');
      assert.match(err.message, /no Deployment wl\/absent to scale; apply it first/);
      return true;
    });
    await assert.rejects(
      w.scale(NS, 'w', -1),
      (err: unknown) => err instanceof GrpcKubeError && err.code === 'GK_ERR_INVALID_OPTION',
    );
  });
}
