// canary-shift's figure (src/lab/canary.ts): the canary's share of a strategy's RPCs per weight
// phase, against the weight the route gave it; worked by hand.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { canaryFigures, canaryVerdict, weightPhases } from '@grpc-kube/lab/internal/lab/canary.js';
import { recordsFromRows, type RpcRow } from '@grpc-kube/lab/internal/lab/metrics.js';
import { builtinScenarios, parseScenario } from '@grpc-kube/lab/internal/lab/scenario.js';
import type { ScenarioStep } from '@grpc-kube/lab/internal/lab/scenario.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

const STEPS: ScenarioStep[] = [
  { atMs: 4000, action: 'set-weights', weights: { stable: 50, canary: 50 } },
  { atMs: 0, action: 'set-weights', weights: { stable: 99, canary: 1 } },
  { atMs: 8000, action: 'set-weights', weights: { stable: 0, canary: 100 } },
];

test('weight phases: from settleMs after each step to the next, the canary weight in %', () => {
  assert.deepEqual(weightPhases(STEPS, 12_000, 1000), [
    { fromMs: 1000, toMs: 4000, weightPct: 1 },
    { fromMs: 5000, toMs: 8000, weightPct: 50 },
    { fromMs: 9000, toMs: 12_000, weightPct: 100 },
  ]);
  // Weights are relative: 3/1 is 25 % canary.
  assert.deepEqual(
    weightPhases([{ atMs: 0, action: 'set-weights', weights: { stable: 3, canary: 1 } }], 2000, 0),
    [{ fromMs: 0, toMs: 2000, weightPct: 25 }],
  );
});

/** `n` successful RPCs spread over [fromMs, toMs), every k-th of them on a canary pod. */
function rows(fromMs: number, toMs: number, n: number, canaryEvery: number): RpcRow[] {
  return Array.from({ length: n }, (_, i) => ({
    tMs: fromMs + ((toMs - fromMs) * i) / n,
    pod: canaryEvery > 0 && i % canaryEvery === 0 ? 'hello-v2-a' : 'hello-b',
    code: 'OK',
    latencyMs: 1,
  }));
}

const phases = weightPhases(STEPS, 12_000, 1000);
const isCanary = (pod: string): boolean => pod.startsWith('hello-v2');

test('the share per phase counts successful RPCs started in its window only', () => {
  const records = recordsFromRows([
    // Before the first window (the route not yet settled): not counted.
    ...rows(0, 1000, 50, 1),
    ...rows(1000, 4000, 300, 100), // 3 of 300 on the canary: 1 %
    ...rows(4000, 5000, 50, 0), // settling: not counted
    ...rows(5000, 8000, 300, 2), // 150 of 300: 50 %
    ...rows(9000, 12_000, 300, 1), // all: 100 %
    // A failed RPC has no pod and no share.
    { tMs: 9500, pod: '', code: 'UNAVAILABLE', latencyMs: 1 },
  ]);
  const f = canaryFigures(records, isCanary, phases);
  assert.deepEqual(
    f.phases.map((p) => [p.rpcs, p.sharePct]),
    [
      [300, 1],
      [300, 50],
      [300, 100],
    ],
  );
  assert.equal(f.maxErrorPct, 0);
  assert.equal(canaryVerdict(f, 10, 'hello-v2'), undefined);
});

test('a strategy that ignores the weights is off in the 99/1 and 0/100 phases', () => {
  // An even spread over 3 stable and 2 canary pods: 40 % in every phase.
  const spread = (from: number, to: number): RpcRow[] =>
    Array.from({ length: 500 }, (_, i) => ({
      tMs: from + ((to - from) * i) / 500,
      pod: i % 5 < 2 ? `hello-v2-${i % 5}` : `hello-${i % 5}`,
      code: 'OK',
      latencyMs: 1,
    }));
  const f = canaryFigures(
    recordsFromRows([...spread(1000, 4000), ...spread(5000, 8000), ...spread(9000, 12_000)]),
    isCanary,
    phases,
  );
  assert.deepEqual(
    f.phases.map((p) => p.sharePct),
    [40, 40, 40],
  );
  assert.equal(f.maxErrorPct, 60);
  const why = canaryVerdict(f, 10, 'hello-v2') ?? '';
  // 1 % phase: 39 points off, allowed 10 + 4·100·√(0.01·0.99/500) = 11.8; 100 % phase: 60 off,
  // allowed 10; the 50 % phase (10 off, allowed 10 + 8.9) is within.
  assert.match(why, /hello-v2 served 40 % of 500 RPCs in 1000–4000 ms at weight 1 % \(allowed ±11\.8\)/);
  assert.match(why, /hello-v2 served 40 % of 500 RPCs in 9000–12000 ms at weight 100 % \(allowed ±10\)/);
  assert.ok(!why.includes('5000–8000'), why);
});

test('the allowance widens with fewer RPCs; a phase without any success is off', () => {
  // 50 % weight, 60 % share: 10.0 points off. 600 RPCs: allowed 10 + 8.2 → within; with tolerance 0:
  // allowed 8.2 → off. 60 RPCs at tolerance 0: allowed 25.8 → within.
  const at = (n: number): ReturnType<typeof canaryFigures> =>
    canaryFigures(
      recordsFromRows(
        Array.from({ length: n }, (_, i) => ({
          tMs: 5000 + i,
          pod: i % 10 < 6 ? 'hello-v2-a' : 'hello-a',
          code: 'OK',
          latencyMs: 1,
        })),
      ),
      isCanary,
      [{ fromMs: 5000, toMs: 8000, weightPct: 50 }],
    );
  assert.equal(at(600).phases[0]?.sharePct, 60);
  assert.equal(canaryVerdict(at(600), 10, 'v2'), undefined);
  assert.match(canaryVerdict(at(600), 0, 'v2') ?? '', /allowed ±8\.2/);
  assert.equal(canaryVerdict(at(60), 0, 'v2'), undefined);
  const none = canaryFigures(recordsFromRows([]), isCanary, phases);
  assert.equal(none.maxErrorPct, null);
  assert.match(canaryVerdict(none, 10, 'v2') ?? '', /no RPC succeeded in 1000–4000 ms \(weight 1 %\)/);
});

test('canary-shift asks for the check; canaryShare is validated', () => {
  const s = builtinScenarios().find((x) => x.name === 'canary-shift');
  assert.deepEqual(s?.canaryShare, { settleMs: 1000, tolerancePct: 10 });
  assert.throws(
    () => parseScenario('x', { ...s, canaryShare: { settleMs: 1000 } }),
    (e) =>
      e instanceof GrpcKubeError && e.code === 'GK_ERR_INVALID_SCENARIO' && /tolerancePct/.test(e.message),
  );
});
