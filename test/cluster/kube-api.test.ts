// The lab's one Kubernetes API contract (kube-api.ts), run alike against its backends: the embedded
// store in-process, HTTP to the embedded API server, and HTTP to the real kube-apiserver (where it is
// built). Each case asserts what kube-apiserver answers, so a backend that drifts fails here.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { MemoryStore } from '@grpc-kube/lab/internal/cluster/store.js';
import {
  KINDS,
  httpKube,
  kindOf,
  statusOf,
  storeKube,
  type Kube,
} from '@grpc-kube/lab/internal/cluster/kube-api.js';
import type { Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import type { KubeObject, WatchEvent } from 'grpc-kube/internal/kube/types.js';
import { realControlPlaneSkip } from '../helpers/real.js';

interface Backend {
  readonly name: string;
  readonly skip: string | false;
  /** The API, with namespace `ns` existing; cleaned up when the test ends. */
  open(t: TestContext, ns: string): Promise<Kube>;
}

const namespace = (name: string): KubeObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });

const BACKENDS: Backend[] = [
  {
    name: 'store',
    skip: false,
    open: async (t, ns) => {
      const store = new MemoryStore({ initialNamespaces: ['default', ns] });
      const kube = storeKube(store);
      t.after(() => kube.close());
      return kube;
    },
  },
  {
    name: 'http, embedded API server',
    skip: false,
    open: async (t, ns) => {
      const store = new MemoryStore({ initialNamespaces: ['default', ns] });
      const server = new EmbeddedApiServer({ store });
      await server.start();
      t.after(() => server.stop());
      const kube = httpKube(server.kubeConfigYaml());
      t.after(() => kube.close());
      return kube;
    },
  },
  {
    name: 'http, real kube-apiserver',
    skip: realControlPlaneSkip(),
    open: async (t, ns) => {
      const { startRealControlPlane } = await import('@grpc-kube/lab/internal/cluster/real/control-plane.js');
      const cp = await startRealControlPlane({
        controllers: ['namespace-controller', 'serviceaccount-controller'],
      });
      t.after(() => cp.stop());
      const kube = httpKube(cp.adminKubeConfig, { retryTransientMs: 30_000 });
      t.after(() => kube.close());
      await kube.create(KINDS.namespaces, namespace(ns));
      // Pods are admitted once the namespace has its default ServiceAccount.
      for (let i = 0; (await kube.get(KINDS.serviceaccounts, ns, 'default')) === undefined; i++) {
        if (i > 300) throw new Error(`no default ServiceAccount in ${ns} after 30 s`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return kube;
    },
  },
];

function pod(name: string, ns: string): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app: 'k' } },
    spec: { containers: [{ name: 'c', image: 'hello' }] },
  } as Pod;
}

async function until(what: string, cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function rejectsWith(p: Promise<unknown>, status: number): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.equal(statusOf(err), status, `expected ${status}, got ${String(err)}`);
    return true;
  });
}

test('kindOf finds every kind the overlays render, by apiVersion and kind', () => {
  assert.equal(kindOf('v1', 'Service'), KINDS.services);
  assert.equal(kindOf('apps/v1', 'Deployment'), KINDS.deployments);
  assert.equal(kindOf('rbac.authorization.k8s.io/v1', 'RoleBinding'), KINDS.rolebindings);
  assert.equal(kindOf('gateway.networking.k8s.io/v1', 'GRPCRoute'), KINDS.grpcroutes);
  assert.equal(kindOf('apps/v1beta1', 'Deployment'), undefined, 'the version is part of the match');
  assert.equal(kindOf('v1', 'Gadget'), undefined);
});

for (const b of BACKENDS) {
  test(
    `${b.name}: create, get, replace, patch, status, delete answer as kube-apiserver does`,
    { skip: b.skip },
    async (t) => {
      const ns = 'kapi';
      const kube = await b.open(t, ns);
      const created = await kube.create(KINDS.pods, pod('p1', ns));
      assert.ok(created.metadata.uid, 'a uid is assigned');
      await rejectsWith(kube.create(KINDS.pods, pod('p1', ns)), 409);

      const got = await kube.get<Pod>(KINDS.pods, ns, 'p1');
      assert.equal(got?.metadata.uid, created.metadata.uid);
      assert.equal(await kube.get(KINDS.pods, ns, 'absent'), undefined, 'a 404 reads as undefined');

      // A merge patch keeps what it does not name.
      const patched = await kube.patch<Pod>(KINDS.pods, ns, 'p1', { metadata: { labels: { v: '2' } } });
      assert.deepEqual(patched.metadata.labels, { app: 'k', v: '2' });

      // Replace with a stale resourceVersion: 409, the newer object stays.
      await rejectsWith(
        kube.replace(KINDS.pods, { ...created, metadata: { ...created.metadata, labels: {} } }),
        409,
      );

      // Status through the subresource only: a replace of the object leaves it, a status write sets it.
      const withStatus = await kube.replace<Pod>(
        KINDS.pods,
        { ...patched, status: { phase: 'Running' } },
        { status: true },
      );
      assert.equal(withStatus.status?.phase, 'Running');
      const s2 = await kube.patch<Pod>(
        KINDS.pods,
        ns,
        'p1',
        { status: { podIP: '10.0.0.9' } },
        { status: true },
      );
      assert.equal(s2.status?.podIP, '10.0.0.9');
      assert.equal(s2.status?.phase, 'Running');

      const list = await kube.list<Pod>(KINDS.pods, { namespace: ns, labelSelector: 'v=2' });
      assert.deepEqual(
        list.items.map((p) => p.metadata.name),
        ['p1'],
      );
      assert.ok(Number(list.resourceVersion) > 0, 'a list carries the collection resourceVersion');
      assert.equal((await kube.list(KINDS.pods, { namespace: ns, labelSelector: 'v=3' })).items.length, 0);

      await rejectsWith(
        kube.delete(KINDS.pods, ns, 'p1', { gracePeriodSeconds: 0, preconditionUid: 'not-its-uid' }),
        409,
      );
      await kube.delete(KINDS.pods, ns, 'p1', {
        gracePeriodSeconds: 0,
        preconditionUid: created.metadata.uid ?? '',
      });
      assert.equal(await kube.get(KINDS.pods, ns, 'p1'), undefined);
      await rejectsWith(kube.delete(KINDS.pods, ns, 'p1'), 404);
    },
  );

  test(`${b.name}: a pod is bound once through pods/binding`, { skip: b.skip }, async (t) => {
    const ns = 'kbind';
    const kube = await b.open(t, ns);
    const p = await kube.create(KINDS.pods, pod('b1', ns));
    const binding = (node: string, uid = p.metadata.uid, name = 'b1') => ({
      apiVersion: 'v1',
      kind: 'Binding',
      metadata: { name, namespace: ns, uid },
      target: { apiVersion: 'v1', kind: 'Node', name: node },
    });
    await rejectsWith(kube.post(KINDS.pods, ns, 'b1', 'binding', binding('n1', 'another-uid')), 409);
    await kube.post(KINDS.pods, ns, 'b1', 'binding', binding('n1'));
    assert.equal((await kube.get<Pod>(KINDS.pods, ns, 'b1'))?.spec.nodeName, 'n1');
    await rejectsWith(kube.post(KINDS.pods, ns, 'b1', 'binding', binding('n2')), 409);
    await rejectsWith(
      kube.post(KINDS.pods, ns, 'absent', 'binding', binding('n1', undefined, 'absent')),
      404,
    );
    await rejectsWith(kube.post(KINDS.pods, ns, 'b1', 'binding', binding('n1', undefined, 'other')), 400);
    assert.equal((await kube.get<Pod>(KINDS.pods, ns, 'b1'))?.spec.nodeName, 'n1', 'the first binding stays');
  });

  test(
    `${b.name}: watch follows a collection: existing objects ADDED first, then changes in order`,
    { skip: b.skip },
    async (t) => {
      const ns = 'kwatch';
      const kube = await b.open(t, ns);
      await kube.create(KINDS.pods, pod('w1', ns));
      const seen: string[] = [];
      let deleted: Pod | undefined;
      let atSync: string[] | undefined;
      const stop = kube.watch<Pod>(
        KINDS.pods,
        { namespace: ns, labelSelector: 'app=k' },
        (ev: WatchEvent<Pod>) => {
          const o = ev.object as Pod;
          seen.push(`${ev.type} ${o.metadata.name ?? ''}`);
          if (ev.type === 'DELETED') deleted = o;
        },
        { onSynced: () => void (atSync ??= [...seen]) },
      );
      t.after(stop);
      await until('the watch to sync', () => atSync !== undefined);
      assert.deepEqual(atSync, ['ADDED w1'], 'synced once the existing pod is delivered');
      await kube.create(KINDS.pods, pod('w2', ns));
      await kube.patch(KINDS.pods, ns, 'w1', { metadata: { annotations: { a: 'b' } } });
      await kube.create(KINDS.pods, {
        ...pod('other', ns),
        metadata: { name: 'other', namespace: ns, labels: { app: 'x' } },
      });
      await kube.delete(KINDS.pods, ns, 'w2', { gracePeriodSeconds: 0 });
      await until('the delete', () => seen.includes('DELETED w2'));
      // As kube-apiserver does for a pod deleted with grace 0: MODIFIED with the deletion stamp, then DELETED.
      assert.equal(deleted?.metadata.deletionGracePeriodSeconds, 0);
      assert.ok(deleted?.metadata.deletionTimestamp, 'the DELETED object carries its deletion stamp');
      assert.deepEqual(
        seen,
        ['ADDED w1', 'ADDED w2', 'MODIFIED w1', 'MODIFIED w2', 'DELETED w2'],
        'the selector keeps `other` out',
      );
      stop();
      await kube.create(KINDS.pods, pod('w3', ns));
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(!seen.includes('ADDED w3'), 'nothing arrives after stop');
    },
  );
}

test('store: kinds only a real API server serves answer 404, as an API server without them would', async (t) => {
  const kube = await BACKENDS[0]!.open(t, 'k404');
  await rejectsWith(kube.get(KINDS.leases, 'kube-node-lease', 'n1'), 404);
  await rejectsWith(
    kube.create(KINDS.roles, {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: { name: 'r', namespace: 'k404' },
    }),
    404,
  );
  await rejectsWith(kube.post(KINDS.serviceaccounts, 'k404', 'default', 'token', {}), 404);
});
