// canary-shift measures what it promises: the share of each strategy's RPCs the canary's pods
// served, per weight phase, set against the route's weights (src/lab/canary.ts). xds from
// deploy/canary (`lab --manifests`: hello-v2 is the canary) follows 99/1, 50/50, 0/100 on the
// embedded cluster and on the real one (root and the built control plane; skipped otherwise unless
// GRPC_KUBE_REAL=1); on the embedded cluster without --manifests xds follows them too, while a
// strategy that dials the stable Service and ignores the route fails its run with
// GK_ERR_LAB_CANARY_WEIGHTS, its record kept.

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { seededRandom } from 'grpc-kube/internal/balancer/index.js';
import { labConfig } from '@grpc-kube/lab/internal/lab/config.js';
import { runScenario } from '@grpc-kube/lab/internal/lab/runner.js';
import { builtinScenarios, type Scenario } from '@grpc-kube/lab/internal/lab/scenario.js';
import { strategyByName } from '@grpc-kube/lab/internal/lab/strategies/index.js';
import type { LabStrategy } from '@grpc-kube/lab/internal/lab/strategy.js';
import { unsaturatedLab } from '../helpers/lab.js';
import { realLabSkip } from '../helpers/real.js';

const canaryShift = builtinScenarios().find((s) => s.name === 'canary-shift') as Scenario;

/** Dials the stable Service `hello` with round_robin: the route's weights never reach it. */
const ignoresRoute: LabStrategy = {
  name: 'ignores-route',
  description: 'kubernetes: resolver on the stable Service, no route',
  flavour: 'plain',
  canRoute: true,
  start: async (env) => ({
    target: `kubernetes:///${env.apps.plain.service}.${env.namespace}:${env.port}`,
    channelOptions: env.clientOptions('round_robin'),
    close: async () => {},
  }),
};

async function run(strategies: LabStrategy[], manifests: boolean, cluster: 'embedded' | 'real' = 'embedded') {
  const lines: string[] = [];
  const r = await runScenario({
    scenario: canaryShift,
    strategies,
    timeScale: 1,
    random: seededRandom(1),
    config: labConfig({ strategyCount: strategies.length, manifests, cluster }),
    onProgress: (l) => lines.push(l),
  });
  return { r, log: lines.join('\n') };
}

/** The canary's share per phase follows 1 %, 50 %, 100 % (the verdict's allowance), 0 failed. */
function assertFollows(r: Awaited<ReturnType<typeof run>>['r'], strategy: string, log: string): void {
  const rec = r.runs.find((x) => x.record.strategy === strategy)?.record;
  assert.ok(rec?.canary, `${strategy} has canary figures\n${log}`);
  assert.deepEqual(
    rec.canary.phases.map((p) => p.weightPct),
    [1, 50, 100],
  );
  for (const p of rec.canary.phases) assert.ok(p.rpcs > 0, JSON.stringify(p));
  const [low, half, all] = rec.canary.phases.map((p) => p.sharePct as number);
  assert.ok((low as number) < 20, `99/1: ${low}`);
  assert.ok((half as number) > 20 && (half as number) < 80, `50/50: ${half}`);
  assert.ok((all as number) > 90, `0/100: ${all}`);
  assert.equal(rec.failed, 0, JSON.stringify(rec.failedByCode));
  assert.ok(!r.failed.some((f) => f.strategy === strategy), JSON.stringify(r.failed));
}

/**
 * A lab run, re-run (at most 3 times) when its harness says the machine stalled it and an assertion
 * failed: a stall can expire RPCs of any strategy (test/helpers/lab.ts).
 */
async function guarded(
  t: TestContext,
  once: () => ReturnType<typeof run>,
  holds: (x: Awaited<ReturnType<typeof run>>) => void,
): Promise<void> {
  await unsaturatedLab(t, once, (x) => x.r.runs.map((y) => y.record), 3, holds);
}

for (const cluster of ['embedded', 'real'] as const) {
  test(
    `lab --manifests canary-shift (${cluster}): xds from deploy/canary follows the weights to hello-v2`,
    { timeout: 300_000, skip: cluster === 'real' ? realLabSkip() : false },
    async (t) => {
      await guarded(
        t,
        () => run([strategyByName('xds') as LabStrategy], true, cluster),
        ({ r, log }) => {
          assert.equal(r.runs[0]?.record.overlay, 'deploy/canary', log);
          assertFollows(r, 'xds', log);
          assert.match(log, /xds: hello-v2 served [\d.]+ % at weight 1 /);
        },
      );
    },
  );
}

test(
  'canary-shift (embedded): a strategy that ignores the route fails with GK_ERR_LAB_CANARY_WEIGHTS, its record kept',
  { timeout: 300_000 },
  async (t) => {
    await guarded(
      t,
      () => run([strategyByName('xds') as LabStrategy, ignoresRoute], false),
      ({ r, log }) => {
        assertFollows(r, 'xds', log);
        const rec = r.runs.find((x) => x.record.strategy === 'ignores-route')?.record;
        assert.ok(rec?.canary, log);
        // Never on the canary: 0 % at every weight, 100 points off in the last phase.
        assert.deepEqual(
          rec.canary.phases.map((p) => p.sharePct),
          [0, 0, 0],
        );
        assert.equal(rec.canary.maxErrorPct, 100);
        const f = r.failed.find((x) => x.strategy === 'ignores-route');
        assert.ok(f, `${JSON.stringify(r.failed)}\n${log}`);
        assert.match(
          f.reason,
          /^GK_ERR_LAB_CANARY_WEIGHTS: the canary's share did not follow the route's weights: hello-canary served 0 % of \d+ RPCs in 5000–8000 ms at weight 50 %/,
        );
      },
    );
  },
);
