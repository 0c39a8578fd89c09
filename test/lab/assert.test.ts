// `grpc-kube lab --assert`: the grammar (strict, before any run) and the check (a saturated run, a
// figure with no value or an assertion that matches nothing fails; never a silent pass).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkAssertions, parseAssertion } from '@grpc-kube/lab/internal/lab/assert.js';
import { computeRunRecord, recordsFromRows, type LabRunRecord } from '@grpc-kube/lab/internal/lab/metrics.js';

const known = { scenarios: ['scale-up', 'rolling-update'], strategies: ['kubernetes', 'clusterip'] };

test('parseAssertion: the forms that parse', () => {
  const a = parseAssertion('rolling-update/kubernetes:failed==0', known);
  assert.deepEqual(
    { scenario: a.scenario, strategy: a.strategy, figure: a.figure, op: a.op, value: a.value },
    { scenario: 'rolling-update', strategy: 'kubernetes', figure: ['failed'], op: '==', value: 0 },
  );
  const b = parseAssertion(' scale-up / * : readyToFirstRpcMs.p99 <= 500 ', known);
  assert.deepEqual(
    [b.scenario, b.strategy, b.figure.join('.'), b.op, b.value],
    ['scale-up', '*', 'readyToFirstRpcMs.p99', '<=', 500],
  );
  for (const op of ['==', '!=', '<', '<=', '>', '>='])
    assert.equal(parseAssertion(`*/*:successRate${op}0.999`, known).op, op);
  assert.equal(parseAssertion('*/*:failedByCode.DEADLINE_EXCEEDED<1', known).value, 1);
  assert.equal(parseAssertion('*/*:harness.loopDelayMsMax<2.5e2', known).value, 250);
});

test('parseAssertion: every malformed assertion is GK_ERR_INVALID_ASSERTION naming it and the fault', () => {
  const cases: Array<[string, RegExp]> = [
    ['rolling-update/kubernetes:failed=0', /does not have the form/],
    ['rolling-update:failed==0', /does not have the form/],
    ['rolling-updat/kubernetes:failed==0', /unknown scenario "rolling-updat"/],
    ['rolling-update/kubernets:failed==0', /unknown strategy "kubernets"/],
    ['rolling-update/kubernetes:faild==0', /unknown figure "faild"/],
    ['rolling-update/kubernetes:failedByCode.NOPE==0', /unknown figure/],
    ['rolling-update/kubernetes:failed==zero', /"zero" is not a number/],
    ['rolling-update/kubernetes:failed==0x10', /is not a number/],
    ['', /does not have the form/],
  ];
  for (const [text, why] of cases) {
    assert.throws(
      () => parseAssertion(text, known),
      (err: Error & { code?: string; assertion?: string }) =>
        err.code === 'GK_ERR_INVALID_ASSERTION' && err.assertion === text && why.test(err.message),
      text,
    );
  }
});

function record(scenario: string, strategy: string, failed: number, saturated = false): LabRunRecord {
  const rows = [
    ...Array.from({ length: 10 - failed }, (_, i) => ({ tMs: i, pod: 'p1', code: 0, latencyMs: 2 })),
    ...Array.from({ length: failed }, (_, i) => ({ tMs: i, pod: '', code: 'UNAVAILABLE', latencyMs: 2 })),
  ];
  return computeRunRecord({
    scenario,
    strategy,
    records: recordsFromRows(rows),
    timeline: [],
    steadyWindowMs: [0, 10],
    harness: {
      loopDelayMsP99: 1,
      loopDelayMsMax: saturated ? 900 : 2,
      machineCpuBusyPct: 40,
      saturated,
      reason: saturated ? 'the client event loop stalled 900 ms' : '',
    },
  });
}

test('checkAssertions: values, wildcards, missing codes as 0, and the cases that must fail', () => {
  const runs = [
    record('scale-up', 'kubernetes', 0),
    record('scale-up', 'clusterip', 2),
    record('rolling-update', 'kubernetes', 0, true),
  ];
  const p = (t: string) => parseAssertion(t, known);
  const out = checkAssertions(
    [
      p('scale-up/kubernetes:failed==0'),
      p('scale-up/*:failed==0'),
      p('scale-up/*:failedByCode.DEADLINE_EXCEEDED==0'),
      p('scale-up/clusterip:successRate>=0.8'),
      p('rolling-update/kubernetes:failed==0'),
      p('rolling-update/clusterip:failed==0'),
      p('scale-up/kubernetes:readyToFirstRpcMs.p99<=500'),
    ],
    runs,
  );
  assert.deepEqual(
    out.map((o) => o.ok),
    [true, false, true, true, false, false, false],
  );
  assert.deepEqual(out[1]?.details, [
    'scale-up/kubernetes: failed = 0 holds == 0',
    'scale-up/clusterip: failed = 2 FAILS == 0',
  ]);
  assert.match(
    out[4]?.details[0] ?? '',
    /saturated \(the client event loop stalled 900 ms\), so it cannot pass/,
  );
  assert.deepEqual(out[5]?.details, ['matched no run of this lab']);
  assert.deepEqual(out[6]?.details, ['scale-up/kubernetes: readyToFirstRpcMs.p99 has no value in this run']);
});
