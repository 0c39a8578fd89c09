// Deployment and ReplicaSet controllers against the object store, with a simulated node agent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RESOURCES, type ObjectStore } from '@grpc-kube/lab/internal/cluster/store-api.js';
import {
  DeploymentController,
  isRolloutComplete,
  resolveSurgeUnavailable,
  templateHash,
} from '@grpc-kube/lab/internal/cluster/controllers/deployment.js';
import {
  ReplicaSetController,
  compareForDeletion,
} from '@grpc-kube/lab/internal/cluster/controllers/replicaset.js';
import {
  POD_TEMPLATE_HASH_LABEL,
  isPodReady,
  type Deployment,
  type Pod,
  type ReplicaSet,
} from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { newStore } from './fixtures/store.js';
import { SimKubelet, type SimKubeletOptions } from './fixtures/sim-kubelet.js';

const NS = 'lab';

function deployment(
  replicas: number,
  version: string,
  surge: number | string = 3,
  unavailable: number | string = 2,
): Deployment {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'hello', namespace: NS },
    spec: {
      replicas,
      selector: { matchLabels: { app: 'hello' } },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: surge, maxUnavailable: unavailable } },
      template: {
        metadata: { labels: { app: 'hello' } },
        spec: {
          containers: [
            {
              name: 'hello',
              image: 'hello',
              env: [{ name: 'VERSION', value: version }],
              ports: [{ containerPort: 50051 }],
            },
          ],
        },
      },
    },
  };
}

function setup(
  t: { after: (fn: () => void) => void },
  sim: SimKubeletOptions = {},
): { store: ObjectStore; kubelet: SimKubelet } {
  const store = newStore();
  const errors: unknown[] = [];
  const onError = (_k: string, e: unknown): void => void errors.push(e);
  const rsc = new ReplicaSetController(store, { onError });
  const dc = new DeploymentController(store, { onError });
  rsc.start();
  dc.start();
  const kubelet = new SimKubelet(store, sim);
  t.after(() => {
    kubelet.stop();
    rsc.stop();
    dc.stop();
    assert.deepEqual(errors, []);
  });
  return { store, kubelet };
}

function activePods(store: ObjectStore): Pod[] {
  return store
    .list<Pod>(RESOURCES.pods, { namespace: NS })
    .items.filter((p) => !p.metadata.deletionTimestamp);
}

/** Resolves when `pred` holds after some store event (checked on every pod/deployment event). */
function until(store: ObjectStore, pred: () => boolean, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const stops: Array<() => void> = [];
    const done = (err?: Error): void => {
      clearTimeout(timer);
      for (const s of stops) s();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error('timed out waiting')), timeoutMs);
    const check = (): void => {
      if (pred()) setImmediate(() => done());
    };
    let fired = false;
    const once = (): void => {
      if (!fired && pred()) {
        fired = true;
        setImmediate(() => done());
      }
    };
    void check;
    stops.push(store.watch(RESOURCES.pods, { resourceVersion: store.resourceVersion }, once));
    stops.push(store.watch(RESOURCES.deployments, { resourceVersion: store.resourceVersion }, once));
    once();
  });
}

function rolledOut(store: ObjectStore, replicas: number): boolean {
  const d = store.get<Deployment>(RESOURCES.deployments, NS, 'hello');
  if (!d || !isRolloutComplete(d)) return false;
  const hash = templateHash(d.spec.template);
  const pods = store.list<Pod>(RESOURCES.pods, { namespace: NS }).items;
  return (
    pods.length === replicas &&
    pods.every((p) => isPodReady(p) && p.metadata.labels?.[POD_TEMPLATE_HASH_LABEL] === hash)
  );
}

test('maxSurge / maxUnavailable: ints and percentages with the real rounding', () => {
  const table: Array<[number, number | string | undefined, number | string | undefined, number, number]> = [
    [5, 3, 2, 3, 2],
    [10, undefined, undefined, 3, 2],
    [5, '25%', '25%', 2, 1],
    [1, '25%', '25%', 1, 0],
    [5, '0%', '0%', 0, 1],
    [5, 0, 0, 0, 1],
    [3, '50%', '50%', 2, 1],
  ];
  for (const [replicas, surge, unav, wantSurge, wantUnav] of table) {
    const d = deployment(replicas, 'v1');
    d.spec.strategy = {
      rollingUpdate: {
        ...(surge !== undefined ? { maxSurge: surge } : {}),
        ...(unav !== undefined ? { maxUnavailable: unav } : {}),
      },
    };
    assert.deepEqual(
      resolveSurgeUnavailable(d),
      { maxSurge: wantSurge, maxUnavailable: wantUnav },
      `${replicas} ${surge} ${unav}`,
    );
  }
  const bad = deployment(5, 'v1', '10 percent');
  assert.throws(() => resolveSurgeUnavailable(bad), { code: 'GK_ERR_INVALID_OPTION' });
});

test('templateHash: stable, independent of key order, safe alphabet', () => {
  const a = deployment(1, 'v1').spec.template;
  const b = JSON.parse(JSON.stringify({ spec: a.spec, metadata: a.metadata })) as typeof a;
  assert.equal(templateHash(a), templateHash(b));
  assert.notEqual(templateHash(a), templateHash(deployment(1, 'v2').spec.template));
  assert.match(templateHash(a), /^[bcdfghjklmnpqrstvwxz2456789]{1,10}$/);
});

test('deployment creates one ReplicaSet and its pods, and reports status', async (t) => {
  const { store } = setup(t);
  store.create(RESOURCES.deployments, deployment(3, 'v1'));
  await until(store, () => rolledOut(store, 3));
  const d = store.get<Deployment>(RESOURCES.deployments, NS, 'hello') as Deployment;
  const rss = store.list<ReplicaSet>(RESOURCES.replicasets, { namespace: NS }).items;
  assert.equal(rss.length, 1);
  const rs = rss[0] as ReplicaSet;
  const hash = templateHash(d.spec.template);
  assert.equal(rs.metadata.name, `hello-${hash}`);
  assert.equal(rs.metadata.labels?.[POD_TEMPLATE_HASH_LABEL], hash);
  assert.deepEqual(
    rs.metadata.ownerReferences?.map((r) => [r.kind, r.name, r.uid, r.controller]),
    [['Deployment', 'hello', d.metadata.uid, true]],
  );
  for (const p of store.list<Pod>(RESOURCES.pods, { namespace: NS }).items) {
    assert.match(p.metadata.name ?? '', new RegExp(`^hello-${hash}-[bcdfghjklmnpqrstvwxz2456789]{5}$`));
    assert.equal(p.metadata.ownerReferences?.[0]?.uid, rs.metadata.uid);
  }
  assert.deepEqual(
    {
      r: d.status?.replicas,
      ready: d.status?.readyReplicas,
      upd: d.status?.updatedReplicas,
      av: d.status?.availableReplicas,
    },
    { r: 3, ready: 3, upd: 3, av: 3 },
  );
});

test('rolling update 5 replicas, maxSurge 3, maxUnavailable 2: available >= 3 and total <= 8 at every event', async (t) => {
  // Ready delays vary per pod so the controller meets uneven progress.
  const { store } = setup(t, { readyDelayMs: (_p, i) => 15 + ((i * 37) % 60), terminateDelayMs: 20 });
  store.create(RESOURCES.deployments, deployment(5, 'v1'));
  await until(store, () => rolledOut(store, 5));

  let minAvailable = Infinity;
  let maxTotal = 0;
  let events = 0;
  const stop = store.watch<Pod>(RESOURCES.pods, { resourceVersion: store.resourceVersion }, () => {
    events++;
    const pods = activePods(store);
    minAvailable = Math.min(minAvailable, pods.filter(isPodReady).length);
    maxTotal = Math.max(maxTotal, pods.length);
  });
  t.after(stop);
  const d = store.get<Deployment>(RESOURCES.deployments, NS, 'hello') as Deployment;
  store.update(RESOURCES.deployments, { ...d, spec: { ...deployment(5, 'v2').spec } });
  await until(store, () => rolledOut(store, 5));
  assert.ok(events > 20, `saw ${events} pod events`);
  assert.ok(minAvailable >= 3, `available dropped to ${minAvailable}`);
  assert.equal(maxTotal, 8, 'the surge is used in full, never exceeded');
  assert.equal(minAvailable, 3, 'the unavailability budget is used in full');
  const rss = store.list<ReplicaSet>(RESOURCES.replicasets, { namespace: NS }).items;
  assert.deepEqual(rss.map((r) => r.spec.replicas).sort(), [0, 5]);
  const final = store.get<Deployment>(RESOURCES.deployments, NS, 'hello') as Deployment;
  const newRs = rss.find((r) => r.spec.replicas === 5) as ReplicaSet;
  assert.equal(newRs.metadata.annotations?.['deployment.kubernetes.io/revision'], '2');
  assert.deepEqual(
    [
      final.status?.replicas,
      final.status?.updatedReplicas,
      final.status?.availableReplicas,
      final.status?.unavailableReplicas,
    ],
    [5, 5, 5, 0],
  );
});

test('scale 3 → 5 → 3: not-ready pods go first, then the newest', async (t) => {
  const { store, kubelet } = setup(t);
  store.create(RESOURCES.deployments, deployment(3, 'v1'));
  await until(store, () => rolledOut(store, 3));
  const first = new Set(store.list<Pod>(RESOURCES.pods, { namespace: NS }).items.map((p) => p.metadata.name));

  let d = store.get<Deployment>(RESOURCES.deployments, NS, 'hello') as Deployment;
  store.update(RESOURCES.deployments, { ...d, spec: { ...d.spec, replicas: 5 } });
  await until(store, () => rolledOut(store, 5));
  const five = store.list<Pod>(RESOURCES.pods, { namespace: NS }).items;
  const added = five.filter((p) => !first.has(p.metadata.name)).map((p) => p.metadata.name as string);
  assert.equal(added.length, 2);

  // One of the original pods turns not ready: it must be the first victim; the second is a pod that
  // has been ready for the shortest time, i.e. one of the two just added.
  const sick = [...first][0] as string;
  kubelet.setReady(sick, NS, false);
  const deleted: string[] = [];
  const stop = store.watch<Pod>(RESOURCES.pods, { resourceVersion: store.resourceVersion }, (ev) => {
    const p = ev.object as Pod;
    if (
      ev.type === 'MODIFIED' &&
      p.metadata.deletionTimestamp &&
      !deleted.includes(p.metadata.name as string)
    )
      deleted.push(p.metadata.name as string);
  });
  t.after(stop);
  d = store.get<Deployment>(RESOURCES.deployments, NS, 'hello') as Deployment;
  store.update(RESOURCES.deployments, { ...d, spec: { ...d.spec, replicas: 3 } });
  await until(store, () => store.list<Pod>(RESOURCES.pods, { namespace: NS }).items.length === 3);
  assert.equal(deleted.length, 2);
  assert.equal(deleted[0], sick);
  assert.ok(
    added.includes(deleted[1] as string),
    `${deleted[1]} should be one of the newest ${added.join(',')}`,
  );
  const rs = store.list<ReplicaSet>(RESOURCES.replicasets, { namespace: NS }).items[0] as ReplicaSet;
  await until(
    store,
    () =>
      store.get<ReplicaSet>(RESOURCES.replicasets, NS, rs.metadata.name as string)?.status?.replicas === 3,
  );
});

test('compareForDeletion ranks as the real controller does', () => {
  const mk = (
    name: string,
    o: {
      node?: boolean;
      phase?: 'Pending' | 'Running';
      ready?: boolean;
      readyAt?: string;
      restarts?: number;
      created?: string;
    },
  ): Pod => ({
    metadata: { name, creationTimestamp: o.created ?? '2026-01-01T00:00:00Z' },
    spec: { containers: [{ name: 'c' }], ...(o.node === false ? {} : { nodeName: 'n' }) },
    status: {
      phase: o.phase ?? 'Running',
      conditions: [
        {
          type: 'Ready',
          status: o.ready === false ? 'False' : 'True',
          lastTransitionTime: o.readyAt ?? '2026-01-01T00:00:10Z',
        },
      ],
      containerStatuses: [{ name: 'c', ready: o.ready !== false, restartCount: o.restarts ?? 0 }],
    },
  });
  const pods = [
    mk('old-ready', { readyAt: '2026-01-01T00:00:10Z' }),
    mk('young-ready', { readyAt: '2026-01-01T00:05:00Z' }),
    mk('restarty', { restarts: 3 }),
    mk('not-ready', { ready: false }),
    mk('pending', { phase: 'Pending', ready: false }),
    mk('unbound', { node: false, phase: 'Pending', ready: false }),
    mk('newer', { created: '2026-01-01T00:00:05Z' }),
  ];
  assert.deepEqual(
    [...pods].sort(compareForDeletion).map((p) => p.metadata.name),
    ['unbound', 'pending', 'not-ready', 'young-ready', 'restarty', 'newer', 'old-ready'],
  );
});

test('deleting a deployment removes its ReplicaSets and pods', async (t) => {
  const { store } = setup(t);
  store.create(RESOURCES.deployments, deployment(2, 'v1'));
  await until(store, () => rolledOut(store, 2));
  store.delete(RESOURCES.deployments, NS, 'hello');
  await until(
    store,
    () =>
      store.list(RESOURCES.pods, { namespace: NS }).items.length === 0 &&
      store.list(RESOURCES.replicasets).items.length === 0,
  );
});

test('minReadySeconds: a Ready pod counts as available only minReadySeconds after turning Ready', async (t) => {
  const { store } = setup(t);
  const d = deployment(2, 'v1');
  d.spec.minReadySeconds = 1;
  store.create(RESOURCES.deployments, d);
  await until(
    store,
    () => store.list<Pod>(RESOURCES.pods, { namespace: NS }).items.filter(isPodReady).length === 2,
  );
  const readyAt = Math.max(
    ...store
      .list<Pod>(RESOURCES.pods, { namespace: NS })
      .items.map((p) =>
        Date.parse(p.status?.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime ?? ''),
      ),
  );
  // Not available yet (unless this process stalled past minReadySeconds since: then it may be).
  const early = store.get<Deployment>(RESOURCES.deployments, NS, 'hello')?.status?.availableReplicas;
  assert.ok(early === 0 || Date.now() - readyAt >= 1000, `available ${early} before minReadySeconds`);
  // No pod event comes when the time is up: the controllers must look again by themselves.
  const keepAlive = setInterval(() => {}, 1000);
  t.after(() => clearInterval(keepAlive));
  await until(
    store,
    () => store.get<Deployment>(RESOURCES.deployments, NS, 'hello')?.status?.availableReplicas === 2,
  );
  // Only a lower bound: without the controllers' own requeue the wait above times out instead.
  const availableAfter = Date.now() - readyAt;
  t.diagnostic(`available ${availableAfter} ms after Ready (minReadySeconds 1)`);
  assert.ok(availableAfter >= 1000, `${availableAfter} ms`);
  const rs = store.list<ReplicaSet>(RESOURCES.replicasets, { namespace: NS }).items[0];
  assert.equal(rs?.status?.availableReplicas, 2);
});

test('a second template change mid-rollout: bounds hold across three ReplicaSets and v3 wins', async (t) => {
  const { store } = setup(t, { readyDelayMs: (_p, i) => 20 + ((i * 53) % 70), terminateDelayMs: 30 });
  store.create(RESOURCES.deployments, deployment(5, 'v1'));
  await until(store, () => rolledOut(store, 5));
  let minAvailable = Infinity;
  let maxTotal = 0;
  const stop = store.watch<Pod>(RESOURCES.pods, { resourceVersion: store.resourceVersion }, () => {
    const pods = activePods(store);
    minAvailable = Math.min(minAvailable, pods.filter(isPodReady).length);
    maxTotal = Math.max(maxTotal, pods.length);
  });
  t.after(stop);
  let d = store.get<Deployment>(RESOURCES.deployments, NS, 'hello') as Deployment;
  store.update(RESOURCES.deployments, { ...d, spec: deployment(5, 'v2').spec });
  // Change again as soon as the first v2 pod is Ready.
  await until(store, () =>
    activePods(store).some((p) => isPodReady(p) && p.spec.containers[0]?.env?.[0]?.value === 'v2'),
  );
  d = store.get<Deployment>(RESOURCES.deployments, NS, 'hello') as Deployment;
  store.update(RESOURCES.deployments, { ...d, spec: deployment(5, 'v3').spec });
  await until(store, () => rolledOut(store, 5));
  assert.ok(minAvailable >= 3, `available dropped to ${minAvailable}`);
  assert.ok(maxTotal <= 8, `total reached ${maxTotal}`);
  assert.ok(activePods(store).every((p) => p.spec.containers[0]?.env?.[0]?.value === 'v3'));
  const rss = store.list<ReplicaSet>(RESOURCES.replicasets, { namespace: NS }).items;
  assert.equal(rss.length, 3);
  assert.deepEqual(
    rss.map((r) => [r.metadata.annotations?.['deployment.kubernetes.io/revision'], r.spec.replicas]).sort(),
    [
      ['1', 0],
      ['2', 0],
      ['3', 5],
    ],
  );
});

test('Recreate: every old pod is gone before the first new one is created', async (t) => {
  const { store } = setup(t, { terminateDelayMs: 40 });
  const d0 = deployment(3, 'v1');
  d0.spec.strategy = { type: 'Recreate' };
  store.create(RESOURCES.deployments, d0);
  await until(store, () => rolledOut(store, 3));
  let overlap = false;
  const stop = store.watch<Pod>(RESOURCES.pods, { resourceVersion: store.resourceVersion }, () => {
    const versions = new Set(
      store
        .list<Pod>(RESOURCES.pods, { namespace: NS })
        .items.map((p) => p.spec.containers[0]?.env?.[0]?.value),
    );
    if (versions.size > 1) overlap = true;
  });
  t.after(stop);
  const d = store.get<Deployment>(RESOURCES.deployments, NS, 'hello') as Deployment;
  const d1 = deployment(3, 'v2');
  d1.spec.strategy = { type: 'Recreate' };
  store.update(RESOURCES.deployments, { ...d, spec: d1.spec });
  await until(store, () => rolledOut(store, 3));
  assert.equal(overlap, false);
});
