// The lab strategies `proxy` and `sidecar` on the embedded cluster, in the quick scale-up, pod-kill,
// canary-shift and rolling-update scenarios: one connection per client, yet the proxy strategies spread RPCs over
// all pods (new ones and the canary's included) and lose no RPC. (`grpc-kube lab` runs them beside clusterip.)

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { unsaturatedLab } from '../helpers/lab.js';
import { runScenario } from '@grpc-kube/lab/internal/lab/runner.js';
import { labConfig } from '@grpc-kube/lab/internal/lab/config.js';
import { builtinScenarios, scaleScenario } from '@grpc-kube/lab/internal/lab/scenario.js';
import { proxy, sidecar } from '@grpc-kube/lab/internal/lab/strategies/proxy.js';
import { seededRandom } from 'grpc-kube/internal/balancer/runtime.js';
import type { LabRunRecord } from '@grpc-kube/lab/internal/lab/metrics.js';

const QUICK = 0.3;

// Clients with the default retry policy, except in the rolling update: there they have none, so
// every RPC the proxy let fail would show. The pods run the server kit (NOT_SERVING, propagation
// delay, GOAWAY), so the proxy must move new RPCs off a terminating pod before its GOAWAY and replay
// the ones the GOAWAY refused.
const CASES = [
  { name: 'scale-up', clientDefaults: true },
  { name: 'pod-kill', clientDefaults: true },
  { name: 'canary-shift', clientDefaults: true },
  { name: 'rolling-update', clientDefaults: false },
] as const;

for (const { name, clientDefaults } of CASES) {
  test(
    `lab ${name} (quick${clientDefaults ? '' : ', clients without retries'}): proxy and sidecar balance per RPC and lose nothing`,
    { timeout: 120_000 },
    async (t) => {
      const sc = builtinScenarios().find((s) => s.name === name);
      assert.ok(sc !== undefined);
      // The assertions: a saturated run whose figures still hold them is accepted; one that does not
      // is re-run (load can make a strategy lose RPCs or answer late, never hide a loss).
      const holds = (result: { runs: ReadonlyArray<{ record: LabRunRecord }> }): void => {
        const by = Object.fromEntries(result.runs.map((r) => [r.record.strategy, r.record]));
        for (const s of ['proxy', 'sidecar']) {
          const r = by[s];
          assert.ok(r !== undefined, s);
          t.diagnostic(
            `${name} ${s}: rpcs ${r.rpcs} failed ${r.failed} balance ${r.balanceMaxOverMean} never served ${r.newPodsNeverServed} p99 ${r.latencyMs.p99} ms`,
          );
          assert.ok(r.rpcs > 100, `${s} ran`);
          if (name === 'pod-kill') {
            // A SIGKILLed pod takes the RPCs it was answering with it: the proxy cannot know whether
            // they ran, so it does not replay them. Only those may fail (at most one per client loop,
            // 2 clients × 5), and only as UNAVAILABLE; everything else holds.
            assert.ok(r.failed <= 10, `${s}: ${r.failed} failed`);
            assert.deepEqual(
              Object.keys(r.failedByCode).filter((c) => c !== 'UNAVAILABLE'),
              [],
              s,
            );
          } else assert.equal(r.failed, 0, `${s}: ${JSON.stringify(r.failedByCode)}`);
          assert.equal(r.newPodsNeverServed, 0, s);
          // P2C over a few hundred RPCs: ~1.0–1.4 here; ClusterIP in the same scenarios shows 2.5–5.
          // (canary-shift weights pods on purpose: balance is not the measure there, serving every
          // pod — the canary's included — without a failure is.)
          if (name !== 'canary-shift') {
            assert.ok((r.balanceMaxOverMean ?? Infinity) < 2, `${s} balance ${r.balanceMaxOverMean}`);
          }
        }
      };
      await unsaturatedLab(
        t,
        () =>
          runScenario({
            scenario: scaleScenario(sc, QUICK),
            strategies: [proxy, sidecar],
            timeScale: QUICK,
            random: seededRandom(11),
            config: labConfig({ strategyCount: 2, clientDefaults }),
          }),
        (r) => r.runs.map((x) => x.record),
        3,
        holds,
      );
    },
  );
}
