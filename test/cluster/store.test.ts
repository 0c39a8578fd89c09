// MemoryStore against the Kubernetes API's semantics: stamping, optimistic concurrency, no-op writes,
// graceful pod deletion, finalizers, exact watch event sequences, compaction (410), selector
// transitions, consistent pagination and stats.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore } from '@grpc-kube/lab/internal/cluster/store.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { KubeApiError } from 'grpc-kube/internal/errors.js';
import type { EndpointSlice, KubeObject, WatchEvent } from 'grpc-kube/internal/kube/types.js';

const ES = RESOURCES.endpointslices;
const PODS = RESOURCES.pods;
const T0 = Date.parse('2026-11-23T11:00:00.750Z');

function newStore(extra: ConstructorParameters<typeof MemoryStore>[0] = {}): MemoryStore {
  let n = 0;
  return new MemoryStore({
    now: () => T0,
    uid: () => `uid-${++n}`,
    initialNamespaces: ['default'],
    ...extra,
  });
}

function slice(name: string, labels: Record<string, string> = {}, ns = 'default'): EndpointSlice {
  return { metadata: { name, namespace: ns, labels }, addressType: 'IPv4', endpoints: [] };
}

function kubeErr(status: number, reason: string, message?: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof KubeApiError, `not a KubeApiError: ${String(err)}`);
    assert.equal(err.status, status);
    assert.equal(err.reason, reason);
    if (message !== undefined) assert.equal(err.message, message);
    return true;
  };
}

/** Records events as `TYPE name@rv`. */
function recorder(): { events: string[]; raw: WatchEvent[]; on: (e: WatchEvent) => void } {
  const events: string[] = [];
  const raw: WatchEvent[] = [];
  return {
    events,
    raw,
    on: (e) => {
      raw.push(e);
      const o = e.object as KubeObject;
      events.push(`${e.type} ${o.metadata.name ?? ''}@${o.metadata.resourceVersion ?? ''}`);
    },
  };
}

test('create stamps uid, resourceVersion, creationTimestamp, kind; returns and stores copies', () => {
  const s = newStore();
  assert.equal(s.resourceVersion, '1'); // the default namespace
  const input = slice('a', { app: 'x' });
  const out: EndpointSlice = s.create(ES, input);
  assert.deepEqual(
    { ...out.metadata },
    {
      name: 'a',
      namespace: 'default',
      uid: 'uid-2',
      resourceVersion: '2',
      generation: 1,
      creationTimestamp: '2026-11-23T11:00:00Z',
      labels: { app: 'x' },
    },
  );
  assert.equal(out.kind, 'EndpointSlice');
  assert.equal(out.apiVersion, 'discovery.k8s.io/v1');
  assert.equal(input.metadata.uid, undefined, 'the caller’s object is not touched');
  out.metadata.labels = { changed: 'yes' };
  input.metadata.labels = { changed: 'yes' };
  assert.deepEqual(s.get<EndpointSlice>(ES, 'default', 'a')?.metadata.labels, { app: 'x' });
  const got = s.get<EndpointSlice>(ES, 'default', 'a');
  got?.endpoints?.push({ addresses: ['1.2.3.4'] });
  assert.deepEqual(s.get<EndpointSlice>(ES, 'default', 'a')?.endpoints, []);
  assert.equal(s.resourceVersion, '2');
});

test('generateName appends five characters of the API alphabet; retries a collision', () => {
  const seq = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.99, 0.99, 0.99, 0.99, 0.99];
  let i = 0;
  const s = newStore({ random: () => seq[i++] ?? 0 });
  const a = s.create<KubeObject>(PODS, { metadata: { generateName: 'web-', namespace: 'default' } });
  assert.equal(a.metadata.name, 'web-bbbbb');
  const b = s.create<KubeObject>(PODS, { metadata: { generateName: 'web-', namespace: 'default' } });
  assert.equal(b.metadata.name, 'web-99999', 'the second draw collided (bbbbb) and was redrawn');
});

test('create errors: AlreadyExists 409, Invalid 422, missing namespace 404, bad name 422', () => {
  const s = newStore();
  s.create(ES, slice('a'));
  assert.throws(
    () => s.create(ES, slice('a')),
    kubeErr(409, 'AlreadyExists', 'endpointslices.discovery.k8s.io "a" already exists'),
  );
  assert.throws(
    () => s.create(PODS, { metadata: { namespace: 'default' } }),
    kubeErr(
      422,
      'Invalid',
      'Pod "" is invalid: metadata.name: Required value: name or generateName is required',
    ),
  );
  assert.throws(
    () => s.create(PODS, { metadata: { name: 'p' } }),
    kubeErr(422, 'Invalid', 'Pod "p" is invalid: metadata.namespace: Required value'),
  );
  assert.throws(
    () => s.create(ES, slice('a', {}, 'nope')),
    kubeErr(404, 'NotFound', 'namespaces "nope" not found'),
  );
  assert.throws(() => s.create(ES, slice('Upper')), kubeErr(422, 'Invalid'));
  assert.throws(
    () => s.create(ES, { metadata: { name: 'x', namespace: 'default' } } as EndpointSlice),
    kubeErr(422, 'Invalid', 'EndpointSlice "x" is invalid: addressType: Required value'),
  );
  assert.throws(
    () => s.create(ES, slice('l', { 'bad key': 'x' })),
    kubeErr(
      422,
      'Invalid',
      `EndpointSlice "l" is invalid: metadata.labels: Invalid value: "bad key": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`,
    ),
  );
  assert.throws(() => s.create(ES, slice('l', { ok: 'bad value!' })), kubeErr(422, 'Invalid'));
  assert.throws(
    () => s.create(ES, { ...slice('rv'), metadata: { ...slice('rv').metadata, resourceVersion: '7' } }),
    kubeErr(
      500,
      'InternalError',
      'Internal error occurred: resourceVersion should not be set on objects to be created',
    ),
  );
  assert.equal(s.resourceVersion, '2', 'failed writes do not bump the revision');
});

test('update: optimistic concurrency, 404, no-op writes keep the revision, generation follows spec', () => {
  const s = newStore();
  const a = s.create(ES, slice('a'));
  const stale = structuredClone(a);
  a.endpoints = [{ addresses: ['10.0.0.1'] }];
  const a2 = s.update(ES, a);
  assert.equal(a2.metadata.resourceVersion, '3');
  assert.equal(a2.metadata.generation, 2);
  assert.equal(a2.metadata.uid, a.metadata.uid);
  stale.endpoints = [];
  assert.throws(
    () => s.update(ES, stale),
    kubeErr(
      409,
      'Conflict',
      'Operation cannot be fulfilled on endpointslices.discovery.k8s.io "a": the object has been modified; ' +
        'please apply your changes to the latest version and try again',
    ),
  );
  // No-op: same content → no new revision, no event.
  const r = recorder();
  const stop = s.watch(ES, { resourceVersion: s.resourceVersion }, r.on);
  const same = s.update(ES, a2);
  assert.equal(same.metadata.resourceVersion, '3');
  assert.equal(s.resourceVersion, '3');
  // Labels change metadata only: new revision, same generation.
  a2.metadata.labels = { l: '1' };
  const a3 = s.update(ES, a2);
  assert.equal(a3.metadata.generation, 2);
  assert.deepEqual(r.events, ['MODIFIED a@4']);
  stop();
  // An update without resourceVersion is unconditional, as for most kinds in the API.
  const { resourceVersion: _rv, ...meta } = a3.metadata;
  assert.equal(
    s.update<EndpointSlice>(ES, { ...a3, metadata: meta, endpoints: null }).metadata.resourceVersion,
    '5',
  );
  assert.throws(
    () => s.update(ES, slice('nope')),
    kubeErr(404, 'NotFound', 'endpointslices.discovery.k8s.io "nope" not found'),
  );
});

test('updateStatus changes only status; update with keepStatus ignores status', () => {
  const s = newStore();
  const p = s.create(PODS, {
    metadata: { name: 'p', namespace: 'default' },
    spec: { nodeName: 'n1' },
  } as KubeObject);
  const st = s.updateStatus(PODS, {
    ...p,
    spec: { nodeName: 'other' },
    status: { phase: 'Running' },
  } as KubeObject);
  assert.deepEqual((st as unknown as { spec: unknown }).spec, { nodeName: 'n1' });
  assert.deepEqual((st as unknown as { status: unknown }).status, { phase: 'Running' });
  const up = s.update(
    PODS,
    { ...st, status: { phase: 'Failed' }, metadata: { ...st.metadata, labels: { a: 'b' } } } as KubeObject,
    {
      keepStatus: true,
    },
  );
  assert.deepEqual((up as unknown as { status: unknown }).status, { phase: 'Running' });
  assert.deepEqual(up.metadata.labels, { a: 'b' });
});

test('delete: other kinds go at once with a DELETED event carrying a new revision', () => {
  const s = newStore();
  s.create(ES, slice('a'));
  const r = recorder();
  s.watch(ES, { resourceVersion: s.resourceVersion }, r.on);
  const gone = s.delete<EndpointSlice>(ES, 'default', 'a');
  assert.equal(gone?.metadata.resourceVersion, '3');
  assert.deepEqual(r.events, ['DELETED a@3']);
  assert.equal(s.get(ES, 'default', 'a'), undefined);
  assert.throws(
    () => s.delete(ES, 'default', 'a'),
    kubeErr(404, 'NotFound', 'endpointslices.discovery.k8s.io "a" not found'),
  );
});

test('delete: pods are deleted gracefully, the grace period only shrinks, 0 removes', () => {
  const s = newStore();
  s.create(PODS, {
    metadata: { name: 'p', namespace: 'default' },
    spec: { nodeName: 'n1', terminationGracePeriodSeconds: 20 },
  } as KubeObject);
  const r = recorder();
  s.watch(PODS, { resourceVersion: s.resourceVersion }, r.on);
  const marked = s.delete<KubeObject>(PODS, 'default', 'p');
  assert.equal(marked?.metadata.deletionTimestamp, '2026-11-23T11:00:20Z');
  assert.equal(marked?.metadata.deletionGracePeriodSeconds, 20);
  assert.equal(marked?.metadata.generation, 2, 'graceful deletion bumps generation');
  assert.ok(s.get(PODS, 'default', 'p'), 'the pod stays while terminating');
  // A longer or equal grace period changes nothing.
  s.delete(PODS, 'default', 'p', { gracePeriodSeconds: 60 });
  s.delete(PODS, 'default', 'p');
  // A shorter one moves deletionTimestamp relative to the first request.
  const shorter = s.delete<KubeObject>(PODS, 'default', 'p', { gracePeriodSeconds: 5 });
  assert.equal(shorter?.metadata.deletionTimestamp, '2026-11-23T11:00:05Z');
  s.delete(PODS, 'default', 'p', { gracePeriodSeconds: 0 });
  assert.equal(s.get(PODS, 'default', 'p'), undefined);
  assert.deepEqual(r.events, ['MODIFIED p@3', 'MODIFIED p@4', 'MODIFIED p@5', 'DELETED p@6']);
  const last = r.raw[3]?.object as KubeObject;
  assert.equal(last.metadata.deletionGracePeriodSeconds, 0);
});

test('delete: an unscheduled pod, or grace 0, goes at once (after the deletionTimestamp write)', () => {
  const s = newStore();
  s.create(PODS, { metadata: { name: 'unscheduled', namespace: 'default' } });
  s.create(PODS, {
    metadata: { name: 'forced', namespace: 'default' },
    spec: { nodeName: 'n1' },
  } as KubeObject);
  const r = recorder();
  s.watch(PODS, { resourceVersion: s.resourceVersion }, r.on);
  s.delete(PODS, 'default', 'unscheduled', { gracePeriodSeconds: 30 });
  s.delete(PODS, 'default', 'forced', { gracePeriodSeconds: 0 });
  assert.deepEqual(r.events, [
    'MODIFIED unscheduled@4',
    'DELETED unscheduled@5',
    'MODIFIED forced@6',
    'DELETED forced@7',
  ]);
});

test('delete: preconditions (uid, resourceVersion) answer 409', () => {
  const s = newStore();
  const a = s.create(ES, slice('a'));
  assert.throws(
    () => s.delete(ES, 'default', 'a', { preconditionUid: 'other' }),
    kubeErr(
      409,
      'Conflict',
      `Operation cannot be fulfilled on EndpointSlice.discovery.k8s.io "a": the UID in the precondition (other) ` +
        `does not match the UID in record (${a.metadata.uid ?? ''}). The object might have been deleted and then recreated`,
    ),
  );
  assert.throws(
    () => s.delete(ES, 'default', 'a', { preconditionResourceVersion: '1' }),
    kubeErr(409, 'Conflict'),
  );
  s.delete(ES, 'default', 'a', { preconditionUid: a.metadata.uid ?? '' });
  assert.equal(s.get(ES, 'default', 'a'), undefined);
});

test('delete: finalizers hold the object until an update removes the last one', () => {
  const s = newStore();
  const a = s.create(ES, { ...slice('a'), metadata: { ...slice('a').metadata, finalizers: ['x/y'] } });
  const r = recorder();
  s.watch(ES, { resourceVersion: s.resourceVersion }, r.on);
  const held = s.delete<EndpointSlice>(ES, 'default', 'a');
  assert.equal(held?.metadata.deletionTimestamp, '2026-11-23T11:00:00Z');
  assert.equal(held?.metadata.deletionGracePeriodSeconds, 0);
  assert.ok(s.get(ES, 'default', 'a'));
  const cur = s.get<EndpointSlice>(ES, 'default', 'a');
  assert.ok(cur);
  cur.metadata.finalizers = [];
  s.update(ES, cur);
  assert.equal(s.get(ES, 'default', 'a'), undefined);
  assert.deepEqual(r.events, ['MODIFIED a@3', 'MODIFIED a@4', 'DELETED a@5']);
  assert.equal(a.metadata.uid, 'uid-2');
});

test('watch: absent or "0" resourceVersion starts with synthetic ADDED; a rv replays exactly what followed', () => {
  const s = newStore();
  s.create(ES, slice('b'));
  s.create(ES, slice('a'));
  const rvAfterTwo = s.resourceVersion;
  const mid = s.get<EndpointSlice>(ES, 'default', 'a');
  assert.ok(mid);
  mid.endpoints = [{ addresses: ['10.0.0.1'] }];
  s.update(ES, mid);
  s.delete(ES, 'default', 'b');

  const fromZero = recorder();
  s.watch(ES, { resourceVersion: '0' }, fromZero.on);
  assert.deepEqual(fromZero.events, ['ADDED a@4']);
  const fromAbsent = recorder();
  s.watch(ES, {}, fromAbsent.on);
  assert.deepEqual(fromAbsent.events, ['ADDED a@4']);

  const replay = recorder();
  s.watch(ES, { resourceVersion: '1' }, replay.on);
  assert.deepEqual(replay.events, ['ADDED b@2', 'ADDED a@3', 'MODIFIED a@4', 'DELETED b@5']);
  const fromMid = recorder();
  s.watch(ES, { resourceVersion: rvAfterTwo }, fromMid.on);
  assert.deepEqual(fromMid.events, ['MODIFIED a@4', 'DELETED b@5']);

  s.create(ES, slice('c'));
  assert.deepEqual(replay.events.slice(4), ['ADDED c@6']);
  assert.deepEqual(fromZero.events, ['ADDED a@4', 'ADDED c@6']);
});

test('watch: namespace and field filters; other kinds are not delivered', () => {
  const s = newStore({ initialNamespaces: ['default', 'other'] });
  const r = recorder();
  s.watch(ES, { namespace: 'default', fieldSelector: 'metadata.name=a' }, r.on);
  s.create(ES, slice('a', {}, 'other'));
  s.create(ES, slice('b'));
  s.create(ES, slice('a'));
  s.create(PODS, { metadata: { name: 'a', namespace: 'default' } });
  assert.deepEqual(r.events, ['ADDED a@5']);
});

test('watch: an object entering the selector is ADDED, leaving it is DELETED with its old state', () => {
  const s = newStore();
  const r = recorder();
  s.watch(ES, { labelSelector: 'app=web' }, r.on);
  const a = s.create(ES, slice('a', { app: 'db' }));
  a.metadata.labels = { app: 'web' };
  const a2 = s.update(ES, a);
  a2.endpoints = [{ addresses: ['10.0.0.1'] }];
  const a3 = s.update(ES, a2);
  a3.metadata.labels = { app: 'db' };
  s.update(ES, a3);
  s.delete(ES, 'default', 'a');
  assert.deepEqual(r.events, ['ADDED a@3', 'MODIFIED a@4', 'DELETED a@5']);
  const deleted = r.raw[2]?.object as EndpointSlice;
  assert.deepEqual(deleted.metadata.labels, { app: 'web' }, 'the last state that matched');
  assert.deepEqual(deleted.endpoints, [{ addresses: ['10.0.0.1'] }]);
});

test('watch: compaction and the bounded history make old resourceVersions 410 Expired', () => {
  const s = newStore({ historyLimit: 3 });
  for (const n of ['a', 'b', 'c', 'd']) s.create(ES, slice(n)); // rv 2..5
  // History holds rv 3,4,5; rv 2 was dropped, so a watch must start at >= 2.
  assert.throws(
    () => s.watch(ES, { resourceVersion: '1' }, () => {}),
    kubeErr(410, 'Expired', 'too old resource version: 1 (2)'),
  );
  const r = recorder();
  s.watch(ES, { resourceVersion: '2' }, r.on)();
  assert.deepEqual(r.events, ['ADDED b@3', 'ADDED c@4', 'ADDED d@5']);
  s.compact('4');
  assert.throws(
    () => s.watch(ES, { resourceVersion: '3' }, () => {}),
    kubeErr(410, 'Expired', 'too old resource version: 3 (4)'),
  );
  s.compact();
  assert.throws(
    () => s.watch(ES, { resourceVersion: '4' }, () => {}),
    kubeErr(410, 'Expired', 'too old resource version: 4 (5)'),
  );
  const ok = recorder();
  s.watch(ES, { resourceVersion: '5' }, ok.on);
  s.create(ES, slice('e'));
  assert.deepEqual(ok.events, ['ADDED e@6']);
  assert.throws(() => s.watch(ES, { resourceVersion: 'abc' }, () => {}), kubeErr(400, 'BadRequest'));
});

test('watch: writes from inside a handler reach every watcher after the current event, in order', () => {
  const s = newStore();
  const first = recorder();
  const second = recorder();
  s.watch(ES, {}, (e) => {
    first.on(e);
    const o = e.object as KubeObject;
    if (e.type === 'ADDED' && o.metadata.name === 'a') s.create(ES, slice('b'));
  });
  s.watch(ES, {}, second.on);
  s.create(ES, slice('a'));
  assert.deepEqual(first.events, ['ADDED a@2', 'ADDED b@3']);
  assert.deepEqual(second.events, ['ADDED a@2', 'ADDED b@3']);
});

test('watch: stop() ends delivery, even from inside a handler', () => {
  const s = newStore();
  const r = recorder();
  const stop: () => void = s.watch(ES, {}, (e) => {
    r.on(e);
    stop();
  });
  s.create(ES, slice('a'));
  s.create(ES, slice('b'));
  assert.deepEqual(r.events, ['ADDED a@2']);
  assert.equal(s.stats().watches.length, 0);
});

test('list: pages are consistent at the first page’s revision; remainingItemCount; continue expires', () => {
  const s = newStore({ initialNamespaces: ['default', 'kube-system'] });
  for (const n of ['e', 'a', 'c', 'b', 'd']) s.create(ES, slice(n));
  s.create(ES, slice('z', {}, 'kube-system'));
  const p1 = s.listPage<EndpointSlice>(ES, { limit: 2 });
  assert.deepEqual(
    p1.items.map((o) => `${o.metadata.namespace}/${o.metadata.name}`),
    ['default/a', 'default/b'],
  );
  assert.equal(p1.resourceVersion, '8');
  assert.equal(p1.remainingItemCount, 4);
  assert.ok(p1.continue);
  // Changes after the first page do not show in later pages.
  s.delete(ES, 'default', 'c');
  s.create(ES, slice('bb'));
  const p2 = s.listPage<EndpointSlice>(ES, { limit: 2, continue: p1.continue });
  assert.deepEqual(
    p2.items.map((o) => o.metadata.name),
    ['c', 'd'],
  );
  assert.equal(p2.resourceVersion, '8');
  const p3 = s.listPage<EndpointSlice>(ES, { limit: 2, continue: p2.continue });
  assert.deepEqual(
    p3.items.map((o) => `${o.metadata.namespace}/${o.metadata.name}`),
    ['default/e', 'kube-system/z'],
  );
  assert.equal(p3.continue, undefined);
  // Namespace and label filters; a page may come back short when the selector skips items.
  assert.deepEqual(
    s.list<EndpointSlice>(ES, { namespace: 'kube-system' }).items.map((o) => o.metadata.name),
    ['z'],
  );
  s.compact();
  assert.throws(() => s.listPage(ES, { limit: 2, continue: p1.continue }), kubeErr(410, 'Expired'));
  assert.throws(() => s.listPage(ES, { continue: 'garbage!' }), kubeErr(400, 'BadRequest'));
  assert.throws(() => s.listPage(ES, { resourceVersion: '999' }), kubeErr(504, 'Timeout'));
});

test('list: resourceVersionMatch=Exact reads the state at that revision', () => {
  const s = newStore();
  s.create(ES, slice('a'));
  const rv = s.resourceVersion;
  s.create(ES, slice('b'));
  s.delete(ES, 'default', 'a');
  const exact = s.listPage<EndpointSlice>(ES, { resourceVersion: rv, resourceVersionMatch: 'Exact' });
  assert.deepEqual(
    exact.items.map((o) => o.metadata.name),
    ['a'],
  );
  assert.equal(exact.resourceVersion, rv);
  assert.deepEqual(
    s.list<EndpointSlice>(ES).items.map((o) => o.metadata.name),
    ['b'],
  );
});

test('deleting a namespace removes what it holds', () => {
  const s = newStore({ initialNamespaces: ['default', 'tmp'] });
  s.create(ES, slice('a', {}, 'tmp'));
  s.create(PODS, { metadata: { name: 'p', namespace: 'tmp' }, spec: { nodeName: 'n' } } as KubeObject);
  s.delete(RESOURCES.namespaces, undefined, 'tmp');
  assert.equal(s.list(ES).items.length, 0);
  assert.equal(s.list(PODS).items.length, 0);
  assert.equal(s.get(RESOURCES.namespaces, undefined, 'tmp'), undefined);
});

test('stats(): open watches with resource, namespace, selector; request counts per resource', () => {
  const s = newStore();
  const stops = [
    s.watch(
      ES,
      { namespace: 'default', labelSelector: 'kubernetes.io/service-name=web', client: 'me' },
      () => {},
    ),
  ];
  stops.push(s.watch(PODS, {}, () => {}));
  s.list(ES);
  s.list(ES);
  const st = s.stats();
  assert.deepEqual(
    st.watches.map((w) => [w.resource, w.group, w.namespace, w.labelSelector, w.client]),
    [
      ['endpointslices', 'discovery.k8s.io', 'default', 'kubernetes.io/service-name=web', 'me'],
      ['pods', '', undefined, undefined, undefined],
    ],
  );
  assert.equal(st.requests.endpointslices?.list, 2);
  assert.equal(st.requests.endpointslices?.watch, 1);
  assert.equal(st.requests.pods?.watch, 1);
  for (const stop of stops) stop();
  assert.equal(s.stats().watches.length, 0);
  s.resetStats();
  assert.deepEqual(s.stats().requests, {});
});

test('patch: merge patch and JSON patch, with optimistic concurrency when the patch names a resourceVersion', () => {
  const s = newStore();
  s.create(ES, slice('a', { x: '1', y: '2' }));
  const p = s.patch<EndpointSlice>(ES, 'default', 'a', { metadata: { labels: { x: null, z: '3' } } });
  assert.deepEqual(p.metadata.labels, { y: '2', z: '3' });
  const j = s.patch<EndpointSlice>(
    ES,
    'default',
    'a',
    [{ op: 'add', path: '/endpoints/-', value: { addresses: ['10.0.0.9'] } }],
    {
      type: 'json',
    },
  );
  assert.deepEqual(j.endpoints, [{ addresses: ['10.0.0.9'] }]);
  assert.throws(
    () => s.patch(ES, 'default', 'a', { metadata: { resourceVersion: '2' } }),
    kubeErr(409, 'Conflict'),
  );
  assert.throws(() => s.patch(ES, 'default', 'nope', {}), kubeErr(404, 'NotFound'));
});
