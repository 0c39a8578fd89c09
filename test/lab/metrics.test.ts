import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  balanceMaxOverMean,
  computeRunRecord,
  distinctPodsPerClient,
  firstServedAtMs,
  percentile,
  podRateSeries,
  podsPerClient,
  podsReadyThroughout,
  readyToFirstRpc,
  recordsFromRows,
  rpcsPerPod,
  statusName,
  type PodTimeline,
  type RpcRow,
} from '@grpc-kube/lab/internal/lab/metrics.js';

// A small run worked out by hand. Pods a, b, f were there at the start; c and d came during the run
// (d never got an RPC), e was created but never turned Ready; f started terminating at 1800.
const timeline: PodTimeline[] = [
  { name: 'a', readyAtMs: 0, terminatingAtMs: null, goneAtMs: null, isNew: false },
  { name: 'b', readyAtMs: 0, terminatingAtMs: null, goneAtMs: null, isNew: false },
  { name: 'c', readyAtMs: 1000, terminatingAtMs: null, goneAtMs: null, isNew: true },
  { name: 'd', readyAtMs: 1500, terminatingAtMs: null, goneAtMs: null, isNew: true },
  { name: 'e', readyAtMs: null, terminatingAtMs: null, goneAtMs: null, isNew: true },
  { name: 'f', readyAtMs: 0, terminatingAtMs: 1800, goneAtMs: 2000, isNew: false },
];

const rows: RpcRow[] = [
  { tMs: 0, pod: 'a', code: 'OK', latencyMs: 2, client: 0 }, // 1
  { tMs: 0, pod: 'b', code: 'OK', latencyMs: 4, client: 1 }, // 2
  { tMs: 0, pod: 'f', code: 'OK', latencyMs: 6, client: 2 }, // 3
  { tMs: 100, pod: '', code: 'UNAVAILABLE', latencyMs: 1, client: 0 }, // 4
  { tMs: 500, pod: 'a', code: 'OK', latencyMs: 3, client: 0 }, // 5
  { tMs: 500, pod: 'b', code: 'OK', latencyMs: 5, client: 1 }, // 6
  { tMs: 1250, pod: 'c', code: 'OK', latencyMs: 7, client: 2 }, // 7
  { tMs: 1300, pod: 'c', code: 'OK', latencyMs: 8, client: 2 }, // 8
  { tMs: 1400, pod: 'a', code: 'OK', latencyMs: 9, client: 0 }, // 9
  { tMs: 1900, pod: '', code: 'DEADLINE_EXCEEDED', latencyMs: 1000, client: 1 }, // 10
  { tMs: 1950, pod: '', code: 14, latencyMs: 1, client: 1 }, // 11 (UNAVAILABLE by number)
  { tMs: 1100, pod: 'b', code: 'OK', latencyMs: 10, client: 1 }, // 12, recorded out of start order
  { tMs: 600, pod: 'a', code: 'OK', latencyMs: 2, client: 0 }, // 13
];
const records = recordsFromRows(rows);

test('percentile is nearest-rank', () => {
  const hundred = Float64Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(hundred, 50), 50);
  assert.equal(percentile(hundred, 99), 99);
  assert.equal(percentile(hundred, 100), 100);
  assert.equal(percentile([7], 50), 7);
  assert.equal(percentile([7], 99), 7);
  assert.equal(percentile([1, 2], 50), 1);
  assert.equal(percentile([1, 2], 99), 2);
  assert.equal(percentile([1, 2, 3], 0), 1);
  assert.equal(percentile([], 50), null);
});

test('status names', () => {
  assert.equal(statusName(0), 'OK');
  assert.equal(statusName(4), 'DEADLINE_EXCEEDED');
  assert.equal(statusName(14), 'UNAVAILABLE');
  assert.equal(statusName(16), 'UNAUTHENTICATED');
  assert.equal(statusName(99), 'CODE_99');
  assert.throws(() => recordsFromRows([{ tMs: 0, pod: '', code: 'NOPE', latencyMs: 0 }]), RangeError);
});

test('the run record of the hand-worked run', () => {
  const record = computeRunRecord({
    scenario: 'scale-up',
    strategy: 'kubernetes',
    records,
    timeline,
    steadyWindowMs: [0, 2000],
  });
  assert.deepEqual(record, {
    scenario: 'scale-up',
    strategy: 'kubernetes',
    cluster: 'embedded',
    tls: false,
    rpcs: 13,
    failed: 3,
    failedByCode: { DEADLINE_EXCEEDED: 1, UNAVAILABLE: 2 },
    // c: first RPC 1250 − Ready 1000; d never served; e never Ready (not counted).
    readyToFirstRpcMs: { p50: 250, p99: 250 },
    newPodsNeverServed: 1,
    // Ready all through [0, 2000): a and b (c, d came later, f terminated at 1800). a 4, b 3 → 4 / (7/2).
    balanceMaxOverMean: 8 / 7,
    // OK latencies 2 2 3 4 5 6 7 8 9 10: rank 5 and rank 10.
    latencyMs: { p50: 5, p99: 10 },
    successRate: 10 / 13,
    // first start 0, last end 1900 + 1000
    durationMs: 2900,
  });
  // The docs/figures.md key order.
  assert.deepEqual(Object.keys(record), [
    'scenario',
    'strategy',
    'cluster',
    'tls',
    'rpcs',
    'failed',
    'failedByCode',
    'readyToFirstRpcMs',
    'newPodsNeverServed',
    'balanceMaxOverMean',
    'latencyMs',
    'successRate',
    'durationMs',
  ]);
  const given = computeRunRecord({
    scenario: 's',
    strategy: 'x',
    cluster: 'real',
    tls: true,
    records,
    timeline,
    steadyWindowMs: [0, 2000],
    durationMs: 60_000,
  });
  assert.equal(given.durationMs, 60_000);
  assert.equal(given.cluster, 'real');
  assert.equal(given.tls, true);
});

test('an empty run', () => {
  assert.deepEqual(
    computeRunRecord({
      scenario: 's',
      strategy: 'x',
      records: recordsFromRows([]),
      timeline: [],
      steadyWindowMs: [0, 1],
    }),
    {
      scenario: 's',
      strategy: 'x',
      cluster: 'embedded',
      tls: false,
      rpcs: 0,
      failed: 0,
      failedByCode: {},
      readyToFirstRpcMs: { p50: null, p99: null },
      newPodsNeverServed: 0,
      balanceMaxOverMean: null,
      latencyMs: { p50: null, p99: null },
      successRate: 0,
      durationMs: 0,
    },
  );
});

test('first served: earliest successful start per pod, failures ignored', () => {
  assert.deepEqual(
    [...firstServedAtMs(records).entries()],
    [
      ['a', 0],
      ['b', 0],
      ['f', 0],
      ['c', 1250],
    ],
  );
  const r = readyToFirstRpc(records, timeline);
  assert.deepEqual(r, { delaysMs: [250], neverServed: ['d'] });
});

test('ready-to-first-RPC is clamped at 0 and counts only new pods', () => {
  const tl: PodTimeline[] = [
    { name: 'n1', readyAtMs: 1000, terminatingAtMs: null, goneAtMs: null, isNew: true },
    { name: 'n2', readyAtMs: 1000, terminatingAtMs: null, goneAtMs: null, isNew: true },
    { name: 'old', readyAtMs: 0, terminatingAtMs: null, goneAtMs: null, isNew: false },
  ];
  const recs = recordsFromRows([
    { tMs: 998, pod: 'n1', code: 'OK', latencyMs: 1 },
    { tMs: 1100, pod: 'n2', code: 'UNAVAILABLE', latencyMs: 1 },
    { tMs: 1600, pod: 'n2', code: 'OK', latencyMs: 1 },
    { tMs: 5000, pod: 'old', code: 'OK', latencyMs: 1 },
  ]);
  assert.deepEqual(readyToFirstRpc(recs, tl), { delaysMs: [0, 600], neverServed: [] });
  const rec = computeRunRecord({
    scenario: 's',
    strategy: 'x',
    records: recs,
    timeline: tl,
    steadyWindowMs: [0, 1],
  });
  assert.deepEqual(rec.readyToFirstRpcMs, { p50: 0, p99: 600 });
});

test('balance over the pods Ready for the whole window', () => {
  assert.deepEqual(podsReadyThroughout(timeline, 0, 2000), ['a', 'b']);
  assert.deepEqual(podsReadyThroughout(timeline, 1000, 2000), ['a', 'b', 'c']);
  assert.deepEqual(podsReadyThroughout(timeline, 0, 1800), ['a', 'b', 'f']);
  // [1000, 2000): a 1 (row 9), b 1 (row 12), c 2 (rows 7, 8) → 2 / (4/3)
  assert.equal(balanceMaxOverMean(records, timeline, [1000, 2000]), 1.5);
  // [0, 1800): a 4, b 3, f 1 → 4 / (8/3)
  assert.equal(balanceMaxOverMean(records, timeline, [0, 1800]), 1.5);
  // [0, 1000): f still counts (terminating only at 1800): a 3 (rows 1, 5, 13), b 2, f 1 → 3 / (6/3)
  assert.equal(balanceMaxOverMean(records, timeline, [0, 1000]), 1.5);
  // [0, 500): a 1, b 1, f 1 → 1.0
  assert.equal(balanceMaxOverMean(records, timeline, [0, 500]), 1);
  assert.equal(balanceMaxOverMean(records, timeline, [-100, 0]), null, 'no pod Ready throughout');
  assert.equal(balanceMaxOverMean(records, timeline, [2500, 3000]), null, 'no RPC in the window');
  // One pod of five taking everything is 5.0.
  const five: PodTimeline[] = ['p1', 'p2', 'p3', 'p4', 'p5'].map((name) => ({
    name,
    readyAtMs: 0,
    terminatingAtMs: null,
    goneAtMs: null,
    isNew: false,
  }));
  const allToOne = recordsFromRows(
    Array.from({ length: 10 }, (_, i) => ({ tMs: i, pod: 'p3', code: 'OK', latencyMs: 1 })),
  );
  assert.equal(balanceMaxOverMean(allToOne, five, [0, 10]), 5);
  const even = recordsFromRows(
    Array.from({ length: 10 }, (_, i) => ({ tMs: i, pod: `p${(i % 5) + 1}`, code: 'OK', latencyMs: 1 })),
  );
  assert.equal(balanceMaxOverMean(even, five, [0, 10]), 1);
});

test('RPCs per pod in a window (successes only, start time in [from, to))', () => {
  assert.deepEqual(
    [...rpcsPerPod(records).entries()],
    [
      ['a', 4],
      ['b', 3],
      ['f', 1],
      ['c', 2],
    ],
  );
  assert.deepEqual(
    [...rpcsPerPod(records, 500, 1250).entries()],
    [
      ['a', 2],
      ['b', 2],
    ],
  );
});

test('pods reached per client (the clusterip finding)', () => {
  const per = podsPerClient(records);
  assert.deepEqual(
    [...per.entries()].map(([c, m]) => [c, [...m.entries()]]),
    [
      [0, [['a', 4]]],
      [1, [['b', 3]]],
      [
        2,
        [
          ['f', 1],
          ['c', 2],
        ],
      ],
    ],
  );
  assert.deepEqual(distinctPodsPerClient(records, 4), [1, 1, 2, 0]);
  assert.deepEqual(distinctPodsPerClient(records, 3, 1000, 2000), [1, 1, 1]);
});

test('per-pod rate series: RPC/s per bucket, pods in timeline order, failures apart', () => {
  const s = podRateSeries(records, { bucketMs: 500, endMs: 2000, podOrder: timeline.map((p) => p.name) });
  assert.equal(s.buckets, 4);
  assert.equal(s.startMs, 0);
  assert.deepEqual(s.pods, [
    { pod: 'a', rps: [2, 4, 2, 0] },
    { pod: 'b', rps: [2, 2, 2, 0] },
    { pod: 'c', rps: [0, 0, 4, 0] },
    { pod: 'd', rps: [0, 0, 0, 0] },
    { pod: 'e', rps: [0, 0, 0, 0] },
    { pod: 'f', rps: [2, 0, 0, 0] },
  ]);
  assert.deepEqual(s.failedRps, [2, 0, 0, 4]);
  // Default bucket 250 ms, a pod only seen in records is appended; RPCs outside the range are dropped.
  const t = podRateSeries(records, { startMs: 1000, endMs: 1600 });
  assert.equal(t.buckets, 3);
  assert.deepEqual(
    t.pods.map((p) => [p.pod, p.rps]),
    [
      ['a', [0, 4, 0]],
      ['b', [4, 0, 0]],
      ['f', [0, 0, 0]],
      ['c', [0, 8, 0]],
    ],
  );
  assert.throws(() => podRateSeries(records, { endMs: 0 }), RangeError);
});
