// The lab kubelet with real pod processes (test/cluster/fixtures/health-pod.ts) and real grpc.health.v1
// probes on 127.0.x.y addresses: binding, IPs, status conditions, readiness, graceful and forced
// termination, restarts and shutdown; and the same kubelet over HTTP to the embedded API server
// (binding retried, status writes held through an outage, stop() ending their retries).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { RESOURCES, type ObjectStore } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { Kubelet, IpPool } from '@grpc-kube/lab/internal/cluster/kubelet.js';
import { httpKube, storeKube, type Kube } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { NodeScriptRuntime } from '@grpc-kube/lab/internal/cluster/pod-runtime.js';
import {
  isPodReady,
  podCondition,
  type Node,
  type Pod,
} from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { newStore, TEST_NAMESPACE as NS } from './fixtures/store.js';
import { eventually } from '../helpers/wait.js';
import { testPod, waitForPodEvent as waitFor } from '../helpers/pods.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/health-pod.js', import.meta.url));
// Not 50051: a wildcard listener elsewhere on the machine on the same port would block 127.0.x.y binds.
const POD_PORT = 47651;

function pod(name: string, env: Record<string, string> = {}, extra: Partial<Pod['spec']> = {}): Pod {
  return testPod(
    name,
    { app: 'hello' },
    {
      containers: [
        {
          name: 'hello',
          image: 'health-pod',
          env: Object.entries(env).map(([k, v]) => ({ name: k, value: v })),
          ports: [{ containerPort: POD_PORT }],
          readinessProbe: {
            grpc: { port: POD_PORT },
            failureThreshold: 1,
            successThreshold: 1,
            timeoutSeconds: 1,
          },
        },
      ],
      ...extra,
    },
  );
}

let block = 10;
async function setup(t: { after: (fn: () => Promise<void> | void) => void }): Promise<{
  store: ObjectStore;
  kubelet: Kubelet;
  runtime: NodeScriptRuntime;
  output: string[];
}> {
  const store = newStore();
  const output: string[] = [];
  const runtime = new NodeScriptRuntime({
    script: FIXTURE,
    onOutput: (p, s, line) => void output.push(`${p} ${s} ${line}`),
  });
  const errors: unknown[] = [];
  const kubelet = new Kubelet(storeKube(store), {
    runtime,
    nodes: [
      { name: 'node-a', zone: 'zone-a' },
      { name: 'node-b', zone: 'zone-b' },
    ],
    ipAllocator: new IpPool({ first: `127.0.${block++}.1` }),
    onError: (_p, e) => void errors.push(e),
    stopGraceMs: 500,
  });
  await kubelet.start();
  t.after(async () => {
    await kubelet.stop();
    assert.equal(runtime.running, 0, 'every pod process is gone after stop()');
    assert.deepEqual(errors, []);
  });
  return { store, kubelet, runtime, output };
}

function healthCheck(addr: string): Promise<string> {
  const client = new grpc.Client(addr, grpc.credentials.createInsecure());
  return new Promise<string>((resolve, reject) => {
    client.makeUnaryRequest(
      '/grpc.health.v1.Health/Check',
      healthService.Check?.requestSerialize as (v: object) => Buffer,
      healthService.Check?.responseDeserialize as (b: Buffer) => { status: string },
      { service: '' },
      new grpc.Metadata(),
      { deadline: Date.now() + 30_000 },
      (err, res) => (err ? reject(err) : resolve(res?.status ?? '')),
    );
  }).finally(() => client.close());
}

test('nodes registered with zones; a pod is bound, gets its own IP and turns Ready from a real probe', async (t) => {
  const { store } = await setup(t);
  const nodes = store.list<Node>(RESOURCES.nodes).items;
  assert.deepEqual(
    nodes.map((n) => [n.metadata.name, n.metadata.labels?.['topology.kubernetes.io/zone']]).sort(),
    [
      ['node-a', 'zone-a'],
      ['node-b', 'zone-b'],
    ],
  );
  const t0 = Date.now();
  store.create(RESOURCES.pods, pod('p1', { READY_DELAY_MS: '300' }));
  store.create(RESOURCES.pods, pod('p2'));
  const p1 = await waitFor(store, 'p1', (p) => (p && isPodReady(p) ? p : undefined));
  const readyAfterMs = Date.parse(podCondition(p1, 'Ready')?.lastTransitionTime ?? '') - t0;
  assert.ok(readyAfterMs >= 300, `Ready only once the server reports SERVING (after ${readyAfterMs} ms)`);
  t.diagnostic(`Ready ${readyAfterMs} ms after create (SERVING at 300 ms)`);
  const p2 = await waitFor(store, 'p2', (p) => (p && isPodReady(p) ? p : undefined));
  assert.deepEqual(
    [p1.spec.nodeName, p2.spec.nodeName].sort(),
    ['node-a', 'node-b'],
    'spread over the nodes',
  );
  assert.equal(p1.status?.phase, 'Running');
  assert.match(p1.status?.podIP ?? '', /^127\.0\.\d+\.[12]$/);
  assert.notEqual(p1.status?.podIP, p2.status?.podIP);
  assert.deepEqual(p1.status?.podIPs, [{ ip: p1.status?.podIP }]);
  assert.deepEqual(
    p1.status?.conditions?.map((c) => [c.type, c.status]),
    [
      ['PodScheduled', 'True'],
      ['Initialized', 'True'],
      ['ContainersReady', 'True'],
      ['Ready', 'True'],
    ],
  );
  for (const c of p1.status?.conditions ?? []) assert.ok(Date.parse(c.lastTransitionTime ?? '') >= t0 - 1000);
  assert.equal(p1.status?.containerStatuses?.[0]?.ready, true);
  assert.equal(await healthCheck(`${p1.status?.podIP ?? ''}:${POD_PORT}`), 'SERVING');
});

test('deletion: SIGTERM, probes keep going, SIGKILL after deletionGracePeriodSeconds, Ready=False, then the pod is deleted', async (t) => {
  const { store, output } = await setup(t);
  store.create(RESOURCES.pods, pod('stubborn', { IGNORE_SIGTERM: '1' }));
  const ready = await waitFor(store, 'stubborn', (p) => (p && isPodReady(p) ? p : undefined));
  const events: Array<{ at: number; type: string; ready: boolean; deleting: boolean; phase: string }> = [];
  const stop = store.watch<Pod>(RESOURCES.pods, { resourceVersion: store.resourceVersion }, (ev) => {
    const p = ev.object as Pod;
    events.push({
      at: Date.now(),
      type: ev.type,
      ready: isPodReady(p),
      deleting: Boolean(p.metadata.deletionTimestamp),
      phase: p.status?.phase ?? '',
    });
  });
  t.after(stop);
  const t0 = Date.now();
  store.delete(RESOURCES.pods, NS, 'stubborn', { gracePeriodSeconds: 1 });
  await waitFor(store, 'stubborn', (p, ev) => (ev?.type === 'DELETED' || !p ? true : undefined), 60_000);
  const gone = Date.now() - t0;
  t.diagnostic(`deleted ${gone} ms after the delete with a 1 s grace`);
  assert.ok(gone >= 1000, `the grace period is honoured (${gone} ms)`);
  // The deletion's 1 s, not the pod's default 30 s (no wall-time bound tighter than that: a loaded
  // machine may stall for seconds).
  assert.ok(gone < 30_000, `SIGKILL comes at the end of the deletion's grace period (${gone} ms)`);
  assert.ok(
    output.some((l) => l === 'stubborn stdout SIGTERM'),
    'the process got SIGTERM',
  );
  // The process kept serving through its grace period, so it stayed Ready (honest `serving`);
  // Ready=False is written once it is dead, and only then the pod is removed.
  // (The probe may see the dead server before the exit is reaped: one or two not-ready writes.)
  const trace = JSON.stringify(events);
  assert.deepEqual(
    events[0] && [events[0].type, events[0].ready, events[0].deleting],
    ['MODIFIED', true, true],
    trace,
  );
  const firstUnready = events.findIndex((e) => !e.ready);
  assert.ok((events[firstUnready]?.at ?? 0) - t0 >= 1000, `Ready until the SIGKILL: ${trace}`);
  assert.ok(
    events.slice(firstUnready).every((e) => !e.ready),
    trace,
  );
  assert.equal(events.at(-1)?.type, 'DELETED', trace);
  assert.deepEqual(
    events.at(-2) && [events.at(-2)?.type, events.at(-2)?.phase],
    ['MODIFIED', 'Failed'],
    trace,
  );
  // (The store may precede DELETED with a MODIFIED that shortens the grace to 0, as the API does.)
  assert.ok(events.length <= 5, trace);
  assert.equal(ready.metadata.name, 'stubborn');
});

test('deletion of a pod that drains: it turns not ready while draining and goes before the grace period', async (t) => {
  const { store, kubelet } = await setup(t);
  // A drain long enough that the probe sees NOT_SERVING before the process ends, even on a machine
  // that stalls for a second; the grace far longer still, so "gone before the grace" is no race.
  const drainMs = 2000;
  store.create(
    RESOURCES.pods,
    pod('drainer', { DRAIN_MS: String(drainMs) }, { terminationGracePeriodSeconds: 30 }),
  );
  await waitFor(store, 'drainer', (p) => (p && isPodReady(p) ? p : undefined));
  const proc = kubelet.podProcess(NS, 'drainer');
  assert.ok(proc);
  let exited = false;
  void proc.exited.then(() => (exited = true));
  const t0 = Date.now();
  store.delete(RESOURCES.pods, NS, 'drainer');
  const unready = await waitFor(store, 'drainer', (p) =>
    p && p.metadata.deletionTimestamp && !isPodReady(p) ? { ms: Date.now() - t0, exited } : undefined,
  );
  t.diagnostic(`not ready ${unready.ms} ms after the delete (the process drains for ${drainMs} ms)`);
  assert.equal(unready.exited, false, 'NOT_SERVING seen by the probe while the process drains');
  const stillThere = store.get<Pod>(RESOURCES.pods, NS, 'drainer');
  assert.ok(stillThere, 'the pod object stays while the process drains');
  assert.equal(stillThere.metadata.deletionGracePeriodSeconds, 30);
  await waitFor(store, 'drainer', (p) => (!p ? true : undefined), 60_000);
  const gone = Date.now() - t0;
  t.diagnostic(`deleted ${gone} ms after the delete`);
  assert.ok(exited, 'deleted once the process exited');
  assert.ok(gone >= drainMs && gone < 30_000, `deleted once the process exited (${gone} ms), not after 30 s`);
});

test('a crashing process is restarted (restartPolicy Always), one that is not stays Failed', async (t) => {
  const { store } = await setup(t);
  store.create(RESOURCES.pods, pod('crashy', { EXIT_AFTER_MS: '400' }));
  store.create(RESOURCES.pods, pod('once', { EXIT_AFTER_MS: '400' }, { restartPolicy: 'Never' }));
  const restarted = await waitFor(store, 'crashy', (p) =>
    p && (p.status?.containerStatuses?.[0]?.restartCount ?? 0) >= 1 && isPodReady(p) ? p : undefined,
  );
  assert.equal(restarted.status?.phase, 'Running');
  const failed = await waitFor(store, 'once', (p) => (p?.status?.phase === 'Failed' ? p : undefined));
  assert.equal(isPodReady(failed), false);
  assert.equal(failed.status?.containerStatuses?.[0]?.state?.terminated?.exitCode, 3);
});

test('IpPool: skips .0 and .255, reuses released addresses only when fresh ones run out', () => {
  const pool = new IpPool({ first: '127.0.2.253', count: 5 });
  assert.deepEqual([pool.allocate(), pool.allocate()], ['127.0.2.253', '127.0.2.254']);
  assert.equal(pool.allocate(), '127.0.3.1');
  pool.release('127.0.2.253');
  assert.equal(pool.allocate(), '127.0.2.253');
  assert.throws(() => pool.allocate(), { code: 'GK_ERR_LAB' });
  assert.throws(() => new IpPool({ first: '127.0.300.1' }), { code: 'GK_ERR_INVALID_OPTION' });
});

test('a pod removed at once (gracePeriodSeconds 0) loses its process at once; a shortened grace brings SIGKILL sooner', async (t) => {
  const { store, kubelet } = await setup(t);
  store.create(RESOURCES.pods, pod('quick'));
  store.create(RESOURCES.pods, pod('slow', { IGNORE_SIGTERM: '1' }, { terminationGracePeriodSeconds: 30 }));
  await waitFor(store, 'quick', (p) => (p && isPodReady(p) ? p : undefined));
  await waitFor(store, 'slow', (p) => (p && isPodReady(p) ? p : undefined));
  const proc = kubelet.podProcess(NS, 'quick');
  assert.ok(proc?.pid);
  const t0 = Date.now();
  store.delete(RESOURCES.pods, NS, 'quick', { gracePeriodSeconds: 0 });
  const exit = await proc.exited;
  // SIGKILL at once: this pod would exit on SIGTERM, so a graceful stop would show SIGTERM here.
  assert.equal(exit.signal, 'SIGKILL');
  t.diagnostic(`killed ${Date.now() - t0} ms after the delete`);

  const t1 = Date.now();
  store.delete(RESOURCES.pods, NS, 'slow');
  await waitFor(store, 'slow', (p) => (p?.metadata.deletionGracePeriodSeconds === 30 ? true : undefined));
  store.delete(RESOURCES.pods, NS, 'slow', { gracePeriodSeconds: 1 });
  await waitFor(store, 'slow', (p) => (!p ? true : undefined));
  const gone = Date.now() - t1;
  t.diagnostic(`deleted ${gone} ms after the delete (grace shortened 30 s → 1 s)`);
  assert.ok(gone >= 900 && gone < 30_000, `the shortened grace applies (${gone} ms), not the pod's 30 s`);
});

test('stop() right after a pod was removed at once still waits for the process of that pod to end', async (t) => {
  const { store, kubelet, runtime } = await setup(t);
  store.create(RESOURCES.pods, pod('gone'));
  await waitFor(store, 'gone', (p) => (p && isPodReady(p) ? p : undefined));
  store.delete(RESOURCES.pods, NS, 'gone', { gracePeriodSeconds: 0 });
  await kubelet.idle(); // the kubelet has seen the pod go and is ending its process
  await kubelet.stop();
  assert.equal(runtime.running, 0, 'no pod process outlives stop()');
});

test('node heartbeats: lastHeartbeatTime renewed every heartbeatMs; options are checked', async (t) => {
  const store = newStore();
  const runtime = new NodeScriptRuntime({ script: FIXTURE });
  const kubelet = new Kubelet(storeKube(store), { runtime, nodes: [{ name: 'hb' }], heartbeatMs: 30 });
  await kubelet.start();
  t.after(() => kubelet.stop());
  const first =
    store.get<Node>(RESOURCES.nodes, undefined, 'hb')?.status?.conditions?.[0]?.lastHeartbeatTime ?? '';
  const renewed = await new Promise<string>((resolve, reject) => {
    // A ref'd guard: the kubelet's own timers are unref'd and would not keep the test alive.
    const guard = setTimeout(() => reject(new Error('no heartbeat')), 30_000);
    const stop = store.watch<Node>(RESOURCES.nodes, { resourceVersion: store.resourceVersion }, (ev) => {
      const hb = (ev.object as Node).status?.conditions?.[0]?.lastHeartbeatTime ?? '';
      if (hb > first) {
        clearTimeout(guard);
        setImmediate(stop);
        resolve(hb);
      }
    });
  });
  assert.ok(Date.parse(renewed) > Date.parse(first));
  assert.equal(
    store.get<Node>(RESOURCES.nodes, undefined, 'hb')?.metadata.labels?.['topology.kubernetes.io/zone'],
    undefined,
  );
  const kube = storeKube(store);
  assert.throws(() => new Kubelet(kube, { runtime, nodes: [] }), { code: 'GK_ERR_INVALID_OPTION' });
  assert.throws(() => new Kubelet(kube, { runtime, probePeriodMs: 1 }), { code: 'GK_ERR_INVALID_OPTION' });
  assert.throws(() => new Kubelet(kube, { runtime, heartbeatMs: 5 }), { code: 'GK_ERR_INVALID_OPTION' });
  assert.throws(() => new Kubelet(kube, { runtime, leaseDurationSeconds: 0 }), {
    code: 'GK_ERR_INVALID_OPTION',
  });
  assert.throws(() => new Kubelet(store as unknown as Kube, { runtime }), { code: 'GK_ERR_INVALID_OPTION' });
});

test(
  'over HTTP (the embedded API server): a failed binding is retried; an outage delays status writes until the API is back; stop() ends their retries',
  {
    timeout: 180_000,
  },
  async (t) => {
    const store = newStore();
    const server = new EmbeddedApiServer({ store });
    await server.start();
    t.after(() => server.close());
    const runtime = new NodeScriptRuntime({ script: FIXTURE });
    const errors: string[] = [];
    const kubelet = new Kubelet(httpKube(server.kubeConfigYaml()), {
      runtime,
      nodes: [{ name: 'node-h' }],
      ipAllocator: new IpPool({ first: `127.0.${block++}.1` }),
      onError: (what, e) => void errors.push(`${what}: ${String(e)}`),
      stopGraceMs: 500,
    });
    t.after(() => kubelet.stop());
    await kubelet.start();
    // Two 503s for the binding: the kubelet retries it (no later event would bring the pod back).
    server.failNextRequests(2, { pathPrefix: `/api/v1/namespaces/${NS}/pods/web/binding` });
    store.create(RESOURCES.pods, pod('web'));
    const ready = await waitFor(store, 'web', (p) => (p && isPodReady(p) ? p : undefined));
    assert.equal(ready.spec.nodeName, 'node-h');
    assert.equal(kubelet.stats.binds, 1);
    assert.deepEqual(errors, []);

    // An outage: the crashed container restarts without the API; its status waits for the API.
    await server.stop();
    const proc = kubelet.podProcess(NS, 'web');
    assert.ok(proc);
    proc.kill('SIGKILL');
    await proc.exited;
    await eventually('restarted', () => (kubelet.podProcess(NS, 'web') ?? proc) !== proc);
    assert.equal(store.get<Pod>(RESOURCES.pods, NS, 'web')?.status?.containerStatuses?.[0]?.restartCount, 0);
    await server.start();
    const restarted = await waitFor(
      store,
      'web',
      (p) =>
        (p?.status?.containerStatuses?.[0]?.restartCount ?? 0) >= 1 && p && isPodReady(p) ? p : undefined,
      60_000,
    );
    assert.equal(restarted.status?.podIP, ready.status?.podIP);

    // Down again with a status write pending: stop() ends its retries (they would go on for 2 minutes).
    await server.stop();
    const second = kubelet.podProcess(NS, 'web');
    second?.kill('SIGKILL');
    await second?.exited;
    const t0 = Date.now();
    await kubelet.stop();
    assert.equal(runtime.running, 0);
    console.log(`# stop() during an outage with a status write retrying: ${Date.now() - t0} ms`);
  },
);
