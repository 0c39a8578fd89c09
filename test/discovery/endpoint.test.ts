import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EndpointSet,
  endpointKey,
  isEmptyDiff,
  type Endpoint,
} from 'grpc-kube/internal/discovery/endpoint.js';

const ep = (
  address: string,
  state: Endpoint['state'] = 'ready',
  extra: Partial<Endpoint> = {},
): Endpoint => ({
  address,
  port: 50051,
  state,
  ...extra,
});
const keys = (eps: readonly Endpoint[]): string[] => eps.map((e) => `${e.address}=${e.state}`);

test('endpointKey brackets IPv6 and uses the path for unix sockets', () => {
  assert.equal(endpointKey({ address: '10.0.0.1', port: 80 }), '10.0.0.1:80');
  assert.equal(endpointKey({ address: 'fd00::1', port: 80 }), '[fd00::1]:80');
  assert.equal(endpointKey({ address: '/tmp/s.sock', port: 0 }), '/tmp/s.sock');
});

test('replaceGroup reports added, removed and changed, and endpoints() is sorted and frozen', () => {
  const set = new EndpointSet();
  let d = set.replaceGroup('a', [ep('10.0.0.2'), ep('10.0.0.1')]);
  assert.deepEqual(keys(d.added), ['10.0.0.2=ready', '10.0.0.1=ready']);
  assert.deepEqual(keys(set.endpoints()), ['10.0.0.1=ready', '10.0.0.2=ready']);
  assert.ok(Object.isFrozen(set.endpoints()));
  d = set.replaceGroup('a', [ep('10.0.0.1', 'draining'), ep('10.0.0.3')]);
  assert.deepEqual(keys(d.added), ['10.0.0.3=ready']);
  assert.deepEqual(keys(d.removed), ['10.0.0.2=ready']);
  assert.deepEqual(
    d.changed.map((c) => `${c.before.state}->${c.after.state}`),
    ['ready->draining'],
  );
  assert.equal(set.size, 2);
});

test('an unchanged update yields the shared empty diff and keeps the snapshot', () => {
  const set = new EndpointSet();
  set.replaceGroup('a', [ep('10.0.0.1', 'ready', { zone: 'z1', zoneHints: ['z1'] })]);
  const snap = set.endpoints();
  const d = set.replaceGroup('a', [ep('10.0.0.1', 'ready', { zone: 'z1', zoneHints: ['z1'] })]);
  assert.ok(isEmptyDiff(d));
  assert.equal(set.endpoints(), snap);
});

test('every readable field counts as a change', () => {
  const fields: Array<Partial<Endpoint>> = [
    { pod: 'p2' },
    { node: 'n2' },
    { zone: 'z2' },
    { hostname: 'h2' },
    { weight: 3 },
    { zoneHints: ['z9'] },
  ];
  for (const f of fields) {
    const set = new EndpointSet();
    set.replaceGroup('a', [ep('10.0.0.1', 'ready', { pod: 'p1', node: 'n1', zone: 'z1', hostname: 'h1' })]);
    const d = set.replaceGroup('a', [
      ep('10.0.0.1', 'ready', { pod: 'p1', node: 'n1', zone: 'z1', hostname: 'h1', ...f }),
    ]);
    assert.equal(d.changed.length, 1, `field ${Object.keys(f)[0]}`);
  }
  const set = new EndpointSet();
  set.replaceGroup('a', [ep('10.0.0.1')]);
  assert.ok(
    isEmptyDiff(set.replaceGroup('a', [ep('10.0.0.1', 'ready', { weight: 1 })])),
    'absent weight equals 1',
  );
});

test('an endpoint moving between slices never disappears, whatever the event order', () => {
  // Order 1: the new slice lists it before the old one drops it.
  const s1 = new EndpointSet();
  s1.replaceGroup('slice-a', [ep('10.0.0.1'), ep('10.0.0.2')]);
  let d = s1.replaceGroup('slice-b', [ep('10.0.0.2')]);
  assert.ok(isEmptyDiff(d));
  d = s1.replaceGroup('slice-a', [ep('10.0.0.1')]);
  assert.ok(isEmptyDiff(d));
  assert.deepEqual(keys(s1.endpoints()), ['10.0.0.1=ready', '10.0.0.2=ready']);
  // Order 2: the old slice drops it first (a real gap): it is removed, then added back.
  const s2 = new EndpointSet();
  s2.replaceGroup('slice-a', [ep('10.0.0.1'), ep('10.0.0.2')]);
  d = s2.replaceGroup('slice-a', [ep('10.0.0.1')]);
  assert.deepEqual(keys(d.removed), ['10.0.0.2=ready']);
  d = s2.replaceGroup('slice-b', [ep('10.0.0.2')]);
  assert.deepEqual(keys(d.added), ['10.0.0.2=ready']);
});

test('the same address in two groups: the better state wins, then the first group name', () => {
  const set = new EndpointSet();
  set.replaceGroup('b', [ep('10.0.0.1', 'draining', { pod: 'from-b' })]);
  let d = set.replaceGroup('a', [ep('10.0.0.1', 'unready', { pod: 'from-a' })]);
  assert.ok(isEmptyDiff(d), 'draining beats unready');
  d = set.replaceGroup('c', [ep('10.0.0.1', 'ready', { pod: 'from-c' })]);
  assert.equal(d.changed[0]?.after.pod, 'from-c');
  d = set.replaceGroup('a', [ep('10.0.0.1', 'ready', { pod: 'from-a' })]);
  assert.equal(d.changed[0]?.after.pod, 'from-a', 'equal state: lexically first group');
  d = set.deleteGroup('a');
  assert.equal(d.changed[0]?.after.pod, 'from-c');
  set.deleteGroup('c');
  d = set.deleteGroup('b');
  assert.deepEqual(keys(d.removed), ['10.0.0.1=draining']);
  assert.equal(set.size, 0);
  assert.deepEqual(set.groupNames, []);
});

test('a group listing one address twice keeps the better copy', () => {
  const set = new EndpointSet();
  set.replaceGroup('a', [ep('10.0.0.1', 'unready'), ep('10.0.0.1', 'ready')]);
  assert.deepEqual(keys(set.endpoints()), ['10.0.0.1=ready']);
});

test('replaceAll diffs the whole view once: a re-list with the same content is empty', () => {
  const set = new EndpointSet();
  set.replaceGroup('a', [ep('10.0.0.1')]);
  set.replaceGroup('b', [ep('10.0.0.2')]);
  let d = set.replaceAll(new Map([['c', [ep('10.0.0.1'), ep('10.0.0.2')]]]));
  assert.ok(isEmptyDiff(d), 'endpoints regrouped under another slice name do not flap');
  assert.deepEqual(set.groupNames, ['c']);
  d = set.replaceAll(
    new Map([
      ['c', [ep('10.0.0.1', 'draining')]],
      ['d', [ep('10.0.0.3')]],
    ]),
  );
  assert.deepEqual(keys(d.added), ['10.0.0.3=ready']);
  assert.deepEqual(keys(d.removed), ['10.0.0.2=ready']);
  assert.deepEqual(
    d.changed.map((c) => c.after.state),
    ['draining'],
  );
});

test('5,000 endpoints in 50 groups: one group event touches only its own keys', () => {
  const set = new EndpointSet();
  for (let g = 0; g < 50; g++) {
    set.replaceGroup(
      `s${g}`,
      Array.from({ length: 100 }, (_, i) => ep(`10.${g}.0.${i}`)),
    );
  }
  assert.equal(set.size, 5000);
  const eps = Array.from({ length: 100 }, (_, i) => ep(`10.7.0.${i}`, i === 5 ? 'draining' : 'ready'));
  const d = set.replaceGroup('s7', eps);
  assert.equal(d.changed.length, 1);
  assert.equal(d.added.length + d.removed.length, 0);
  assert.equal(set.get('10.7.0.5:50051')?.state, 'draining');
});
