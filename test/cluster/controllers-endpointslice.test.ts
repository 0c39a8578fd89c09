// The EndpointSlice controller against the MemoryStore: slicing, conditions, churn, coalescing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RESOURCES, type ObjectStore } from '@grpc-kube/lab/internal/cluster/store-api.js';
import {
  EndpointSliceController,
  CONTROLLER_NAME,
} from '@grpc-kube/lab/internal/cluster/controllers/endpointslice.js';
import {
  MANAGED_BY_LABEL,
  SERVICE_NAME_LABEL,
  type EndpointSlice,
  type SliceEndpoint,
} from 'grpc-kube/internal/kube/types.js';
import type { Node, Pod, Service } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { newStore, TEST_NAMESPACE as NS } from './fixtures/store.js';

function service(extra: Partial<Service['spec']> = {}): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'hello', namespace: NS },
    spec: {
      clusterIP: 'None',
      selector: { app: 'hello' },
      ports: [{ name: 'grpc', port: 80, targetPort: 50051 }],
      ...extra,
    },
  };
}

function pod(i: number, o: { ready?: boolean; ip?: boolean; node?: string; app?: string } = {}): Pod {
  const ready = o.ready ?? true;
  const ip = `10.1.${i >> 8}.${i & 255}`;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `p-${String(i).padStart(3, '0')}`, namespace: NS, labels: { app: o.app ?? 'hello' } },
    spec: {
      nodeName: o.node ?? 'node-a',
      containers: [{ name: 'c', ports: [{ name: 'grpc', containerPort: 50051 }] }],
    },
    status: {
      phase: 'Running',
      ...(o.ip === false ? {} : { podIP: ip, podIPs: [{ ip }] }),
      conditions: [
        { type: 'Ready', status: ready ? 'True' : 'False', lastTransitionTime: '2026-01-01T00:00:00Z' },
      ],
    },
  };
}

function node(name: string, zone?: string): Node {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: zone ? { 'topology.kubernetes.io/zone': zone } : {} },
  };
}

function slices(store: ObjectStore): EndpointSlice[] {
  return store.list<EndpointSlice>(RESOURCES.endpointslices, {
    namespace: NS,
    labelSelector: `${SERVICE_NAME_LABEL}=hello`,
  }).items;
}

function setup(
  t: { after: (fn: () => void) => void },
  max?: number,
): { store: ObjectStore; ctl: EndpointSliceController; writes: string[] } {
  const store = newStore();
  const errors: unknown[] = [];
  const ctl = new EndpointSliceController(store, {
    ...(max ? { maxEndpointsPerSlice: max } : {}),
    onError: (_k, e) => void errors.push(e),
  });
  const writes: string[] = [];
  const stop = store.watch<EndpointSlice>(RESOURCES.endpointslices, {}, (ev) =>
    writes.push(`${ev.type} ${(ev.object as EndpointSlice).metadata.name ?? ''}`),
  );
  ctl.start();
  t.after(() => {
    stop();
    ctl.stop();
    assert.deepEqual(errors, []);
  });
  return { store, ctl, writes };
}

function byPod(store: ObjectStore): Map<string, { slice: string; ep: SliceEndpoint }> {
  const m = new Map<string, { slice: string; ep: SliceEndpoint }>();
  for (const s of slices(store))
    for (const ep of s.endpoints ?? []) m.set(ep.targetRef?.name ?? '', { slice: s.metadata.name ?? '', ep });
  return m;
}

test('250 pods → 3 slices of at most 100, in one write each; labels, owner, ports, zone', async (t) => {
  const { store, ctl, writes } = setup(t);
  store.create(RESOURCES.nodes, node('node-a', 'zone-a'));
  const svc = store.create(RESOURCES.services, service());
  for (let i = 0; i < 250; i++) store.create(RESOURCES.pods, pod(i));
  await ctl.idle();
  const all = slices(store);
  assert.equal(all.length, 3);
  assert.deepEqual(all.map((s) => s.endpoints?.length).sort(), [100, 100, 50]);
  // The pods arrived in one burst: one create per slice, nothing else (an empty placeholder is
  // created first only if the Service was seen before any pod; here they came in the same tick).
  assert.deepEqual(
    writes.filter((w) => !w.startsWith('ADDED')),
    [],
  );
  assert.equal(writes.length, 3);
  for (const s of all) {
    assert.match(s.metadata.name ?? '', /^hello-[a-z0-9]{5}$/);
    assert.equal(s.metadata.generateName, 'hello-');
    assert.equal(s.addressType, 'IPv4');
    assert.equal(s.metadata.labels?.[SERVICE_NAME_LABEL], 'hello');
    assert.equal(s.metadata.labels?.[MANAGED_BY_LABEL], CONTROLLER_NAME);
    assert.deepEqual(
      s.metadata.ownerReferences?.map((r) => [r.kind, r.name, r.uid, r.controller]),
      [['Service', 'hello', svc.metadata.uid, true]],
    );
    assert.deepEqual(s.ports, [{ name: 'grpc', port: 50051, protocol: 'TCP' }]);
  }
  const ep = byPod(store).get('p-007')?.ep;
  const p7 = store.get<Pod>(RESOURCES.pods, NS, 'p-007') as Pod;
  assert.deepEqual(ep, {
    addresses: ['10.1.0.7'],
    conditions: { ready: true, serving: true, terminating: false },
    targetRef: { kind: 'Pod', namespace: NS, name: 'p-007', uid: p7.metadata.uid },
    nodeName: 'node-a',
    zone: 'zone-a',
  });
  assert.equal(new Set([...byPod(store).keys()]).size, 250);
});

test('conditions: not ready, terminating, no IP, publishNotReadyAddresses, unknown node', async (t) => {
  const { store, ctl } = setup(t);
  store.create(RESOURCES.nodes, node('node-a', 'zone-a'));
  store.create(RESOURCES.services, service());
  store.create(RESOURCES.pods, pod(1));
  store.create(RESOURCES.pods, pod(2, { ready: false }));
  store.create(RESOURCES.pods, pod(3, { ip: false }));
  store.create(RESOURCES.pods, pod(4, { node: 'node-x' }));
  store.create(RESOURCES.pods, pod(5, { app: 'other' }));
  store.create(RESOURCES.pods, pod(6));
  store.delete(RESOURCES.pods, NS, 'p-006', { gracePeriodSeconds: 30 });
  await ctl.idle();
  const m = byPod(store);
  assert.deepEqual([...m.keys()].sort(), ['p-001', 'p-002', 'p-004', 'p-006']);
  assert.deepEqual(m.get('p-002')?.ep.conditions, { ready: false, serving: false, terminating: false });
  assert.deepEqual(m.get('p-006')?.ep.conditions, { ready: false, serving: true, terminating: true });
  assert.equal(m.get('p-004')?.ep.zone, undefined, 'no Node object, no zone');
  assert.equal(m.get('p-004')?.ep.nodeName, 'node-x');

  const svc = store.get<Service>(RESOURCES.services, NS, 'hello') as Service;
  store.update(RESOURCES.services, { ...svc, spec: { ...svc.spec, publishNotReadyAddresses: true } });
  await ctl.idle();
  const m2 = byPod(store);
  assert.deepEqual(m2.get('p-002')?.ep.conditions, { ready: true, serving: true, terminating: false });
  assert.deepEqual(m2.get('p-006')?.ep.conditions, { ready: true, serving: true, terminating: true });

  // A Node appearing later brings its zone.
  store.create(RESOURCES.nodes, node('node-x', 'zone-x'));
  await ctl.idle();
  assert.equal(byPod(store).get('p-004')?.ep.zone, 'zone-x');
});

test('minimal churn: endpoints stay in their slice, new ones fill freed room, empty slices go', async (t) => {
  const { store, ctl, writes } = setup(t);
  store.create(RESOURCES.services, service());
  for (let i = 0; i < 250; i++) store.create(RESOURCES.pods, pod(i));
  await ctl.idle();
  const before = byPod(store);
  const sliceOf = (n: number): string => before.get(`p-${String(n).padStart(3, '0')}`)?.slice ?? '';
  const full = [...new Set([...before.values()].map((v) => v.slice))].find(
    (s) => slices(store).find((x) => x.metadata.name === s)?.endpoints?.length === 100,
  ) as string;
  const victims = [...before.entries()]
    .filter(([, v]) => v.slice === full)
    .slice(0, 10)
    .map(([k]) => k);
  writes.length = 0;
  for (const v of victims) store.delete(RESOURCES.pods, NS, v, { gracePeriodSeconds: 0 });
  // Readiness changes elsewhere, and 5 new pods.
  const other = [...before.entries()].find(([, v]) => v.slice !== full)?.[0] as string;
  const op = store.get<Pod>(RESOURCES.pods, NS, other) as Pod;
  store.update(RESOURCES.pods, {
    ...op,
    status: { ...op.status, conditions: [{ type: 'Ready', status: 'False' }] },
  });
  for (let i = 250; i < 255; i++) store.create(RESOURCES.pods, pod(i));
  await ctl.idle();
  const after = byPod(store);
  assert.equal(after.size, 245);
  for (const [name, v] of after) {
    const was = before.get(name);
    if (was) assert.equal(v.slice, was.slice, `${name} moved`);
  }
  // New endpoints go into the slices being written anyway (the emptied one, or the one whose pod
  // changed), never into a new slice or a third write.
  const written = [full, sliceOf(Number(other.slice(2)))];
  for (let i = 250; i < 255; i++) assert.ok(written.includes(after.get(`p-${i}`)?.slice ?? ''), `p-${i}`);
  assert.equal(after.get(other)?.ep.conditions?.ready, false);
  assert.deepEqual(writes.sort(), [`MODIFIED ${full}`, `MODIFIED ${sliceOf(Number(other.slice(2)))}`].sort());
  assert.equal(slices(store).length, 3);

  // Everything goes: one empty placeholder slice stays, as with the real controller.
  for (const p of store.list<Pod>(RESOURCES.pods, { namespace: NS }).items)
    store.delete(RESOURCES.pods, NS, p.metadata.name ?? '', { gracePeriodSeconds: 0 });
  await ctl.idle();
  const left = slices(store);
  assert.equal(left.length, 1);
  assert.deepEqual(left[0]?.endpoints, []);

  // The Service goes: so do its slices.
  store.delete(RESOURCES.services, NS, 'hello');
  await ctl.idle();
  assert.equal(slices(store).length, 0);
});

test('a slice deleted behind the controller comes back; small maxEndpointsPerSlice', async (t) => {
  const { store, ctl } = setup(t, 2);
  store.create(RESOURCES.services, service());
  for (let i = 0; i < 5; i++) store.create(RESOURCES.pods, pod(i));
  await ctl.idle();
  assert.deepEqual(
    slices(store)
      .map((s) => s.endpoints?.length)
      .sort(),
    [1, 2, 2],
  );
  const victim = slices(store)[0] as EndpointSlice;
  store.delete(RESOURCES.endpointslices, NS, victim.metadata.name ?? '');
  await ctl.idle();
  assert.equal(byPod(store).size, 5);
  assert.throws(() => new EndpointSliceController(store, { maxEndpointsPerSlice: 0 }), {
    code: 'GK_ERR_INVALID_OPTION',
  });
});

test('targetPort by name resolves through the pod container ports', async (t) => {
  const { store, ctl } = setup(t);
  store.create(RESOURCES.services, service({ ports: [{ name: 'grpc', port: 80, targetPort: 'grpc' }] }));
  store.create(RESOURCES.pods, pod(1));
  await ctl.idle();
  assert.deepEqual(slices(store)[0]?.ports, [{ name: 'grpc', port: 50051, protocol: 'TCP' }]);
});
