// The whole embedded cluster with real pod processes, real probes and the real HTTP API server:
// scale up, rolling update (5 replicas, maxSurge 3, maxUnavailable 2) with the availability bounds
// checked at every store event, scale down; EndpointSlices read back over HTTP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import {
  deploymentManifest,
  headlessServiceManifest,
  startEmbeddedCluster,
  type EmbeddedCluster,
} from '@grpc-kube/lab/internal/cluster/embedded.js';
import { waitForState } from '@grpc-kube/lab/internal/cluster/workloads.js';
import { NodeScriptRuntime } from '@grpc-kube/lab/internal/cluster/pod-runtime.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { isPodReady, type Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import type { EndpointSlice, KubeList } from 'grpc-kube/internal/kube/types.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/health-pod.js', import.meta.url));
const NS = 'lab';

async function slicesOverHttp(c: EmbeddedCluster): Promise<EndpointSlice[]> {
  const res = await fetch(
    `${c.apiServer.url}/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dhello`,
    { headers: { authorization: `Bearer ${c.apiServer.adminToken}` } },
  );
  assert.equal(res.status, 200);
  return ((await res.json()) as KubeList<EndpointSlice>).items;
}

test('embedded cluster: scale 3→5, rolling update within its bounds, scale 5→3, slices over HTTP', async (t) => {
  const runtime = new NodeScriptRuntime({ script: FIXTURE, env: { DRAIN_MS: '100' } });
  const errors: string[] = [];
  const c = await startEmbeddedCluster({
    runtime,
    namespaces: [NS],
    ipPool: { first: '127.0.40.1' },
    onError: (where, key, err) => void errors.push(`${where} ${key}: ${String(err)}`),
  });
  t.after(async () => {
    await c.stop();
    assert.equal(runtime.running, 0);
  });
  const app = {
    name: 'hello',
    namespace: NS,
    // Not 50051: a wildcard listener elsewhere on the machine on that port would block 127.0.x.y binds.
    port: 47652,
    replicas: 3,
    maxSurge: 3,
    maxUnavailable: 2,
    probe: { periodMs: 50, failureThreshold: 1 },
    env: { VERSION: 'v1' },
  };
  await c.applyApp(app);
  await c.waitForReadyPods(NS, { app: 'hello' }, 3, 60_000);
  await c.scale(NS, 'hello', 5);
  await c.waitForRollout(NS, 'hello', 60_000);
  assert.equal(c.store.list<Pod>(RESOURCES.pods, { namespace: NS }).items.length, 5);

  let minAvailable = Infinity;
  let maxTotal = 0;
  const lows: string[] = [];
  const stop = c.store.watch<Pod>(
    RESOURCES.pods,
    { namespace: NS, resourceVersion: c.store.resourceVersion },
    () => {
      const pods = c.store
        .list<Pod>(RESOURCES.pods, { namespace: NS })
        .items.filter((p) => !p.metadata.deletionTimestamp);
      const available = pods.filter(isPodReady).length;
      if (available < minAvailable && available < 3) {
        lows.push(
          pods
            .map(
              (p) =>
                `${p.metadata.name ?? ''} ${p.status?.phase ?? ''} ${JSON.stringify(p.status?.conditions?.find((x) => x.type === 'Ready'))} r${p.status?.containerStatuses?.[0]?.restartCount ?? 0}`,
            )
            .join('\n'),
        );
      }
      minAvailable = Math.min(minAvailable, available);
      maxTotal = Math.max(maxTotal, pods.length);
    },
  );
  t.after(stop);
  const t0 = Date.now();
  await c.applyApp({ ...app, replicas: 5, env: { VERSION: 'v2' } });
  await c.waitForRollout(NS, 'hello', 60_000);
  stop();
  const rolloutMs = Date.now() - t0;
  assert.ok(minAvailable >= 3, `available dropped to ${minAvailable}: ${lows.join('\n---\n')}`);
  assert.ok(maxTotal <= 8, `total reached ${maxTotal}`);
  assert.ok(maxTotal > 5, 'the surge was used');

  await c.settled();
  const pods = c.store.list<Pod>(RESOURCES.pods, { namespace: NS }).items;
  assert.equal(pods.length, 5);
  assert.ok(pods.every((p) => p.spec.containers[0]?.env?.[0]?.value === 'v2'));
  const ips = pods.map((p) => p.status?.podIP ?? '').sort();
  assert.equal(new Set(ips).size, 5);
  const slices = await slicesOverHttp(c);
  const eps = slices.flatMap((s) => s.endpoints ?? []);
  assert.deepEqual(eps.map((e) => e.addresses[0]).sort(), ips);
  assert.ok(
    eps.every(
      (e) =>
        e.conditions?.ready === true && e.conditions.serving === true && e.conditions.terminating === false,
    ),
  );
  assert.deepEqual([...new Set(eps.map((e) => e.zone))].sort(), ['zone-a', 'zone-b']);

  await c.scale(NS, 'hello', 3);
  await c.waitForReadyPods(NS, { app: 'hello' }, 3, 60_000);
  await c.waitForRollout(NS, 'hello', 60_000);
  // Terminated pods leave the store once their process has exited.
  await waitForState(
    c.kube,
    [RESOURCES.pods],
    NS,
    (v) => (v.all(RESOURCES.pods).length === 3 ? true : undefined),
    60_000,
    () => 'terminated pods to leave the store',
  );
  await c.settled();
  assert.equal(c.store.list(RESOURCES.pods, { namespace: NS }).items.length, 3);
  assert.equal((await slicesOverHttp(c)).flatMap((s) => s.endpoints ?? []).length, 3);
  assert.deepEqual(errors, []);
  t.diagnostic(`rolling update of 5 real pods took ${rolloutMs} ms`);
});

test('manifests: Deployment and headless Service shapes; bad replicas is a typed error', () => {
  const d = deploymentManifest({
    name: 'hello',
    namespace: 'lab',
    replicas: 5,
    port: 7000,
    maxSurge: 3,
    maxUnavailable: 2,
    probe: { periodMs: 100 },
    env: { A: 'b' },
    labels: { svc: 'shared' },
  });
  assert.deepEqual(d.spec.selector, { matchLabels: { app: 'hello' } });
  assert.deepEqual(d.spec.template.metadata?.labels, { app: 'hello', svc: 'shared' });
  assert.deepEqual(d.spec.template.metadata?.annotations, { 'grpc-kube.io/probe-period-ms': '100' });
  assert.deepEqual(d.spec.strategy, {
    type: 'RollingUpdate',
    rollingUpdate: { maxSurge: 3, maxUnavailable: 2 },
  });
  const c = d.spec.template.spec.containers[0];
  assert.deepEqual(c?.ports, [{ name: 'grpc', containerPort: 7000, protocol: 'TCP' }]);
  assert.deepEqual(c?.env, [{ name: 'A', value: 'b' }]);
  assert.deepEqual(c?.readinessProbe?.grpc, { port: 7000 });
  const s = headlessServiceManifest({
    name: 'hello-v2',
    namespace: 'lab',
    port: 7000,
    serviceName: 'hello',
    serviceSelector: { svc: 'shared' },
  });
  assert.equal(s.metadata.name, 'hello');
  assert.deepEqual(s.spec, {
    clusterIP: 'None',
    type: 'ClusterIP',
    selector: { svc: 'shared' },
    ports: [{ name: 'grpc', port: 7000, targetPort: 7000, protocol: 'TCP' }],
  });
  assert.throws(() => deploymentManifest({ name: 'x', replicas: -1 }), { code: 'GK_ERR_INVALID_OPTION' });
});
