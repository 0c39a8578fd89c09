// The resilience scenarios through the lab runner, as `grpc-kube lab` runs them: a blackholed pod's
// figures land in each run record (which pod, when, what failed around it, when the API showed it
// unready, the clients' keepalive window), and the pods' request counts show retries: with SayHello
// idempotent, a pod shedding RESOURCE_EXHAUSTED with a short pushback gets retried calls that the
// clients' own record cannot show. Behaviour is asserted, not the figures (docs/lab.md has them).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runScenario } from '@grpc-kube/lab/internal/lab/runner.js';
import { labConfig } from '@grpc-kube/lab/internal/lab/config.js';
import { builtinScenarios } from '@grpc-kube/lab/internal/lab/scenario.js';
import { strategyByName } from '@grpc-kube/lab/internal/lab/strategies/index.js';
import type { LabStrategy } from '@grpc-kube/lab/internal/lab/strategy.js';
import { unsaturatedLab } from '../helpers/lab.js';
import { seededRandom } from 'grpc-kube/internal/balancer/runtime.js';

function scenario(name: string) {
  const s = builtinScenarios().find((x) => x.name === name);
  assert.ok(s, name);
  return s;
}

function strategies(...names: string[]): LabStrategy[] {
  return names.map((n) => {
    const s = strategyByName(n);
    assert.ok(s, n);
    return s;
  });
}

test(
  'blackhole: every run records the blackholed pod, what failed around it and the keepalive window',
  { timeout: 300_000 },
  async (t) => {
    await unsaturatedLab(
      t,
      () =>
        runScenario({
          scenario: scenario('blackhole'),
          strategies: strategies('kubernetes', 'kubernetes-ewma'),
          timeScale: 1,
          random: seededRandom(1),
          config: labConfig({ strategyCount: 2, clientDefaults: true }),
        }),
      (r) => r.runs.map((x) => x.record),
      3,
      (result) => {
        assert.equal(result.runs.length, 2);
        const holes = result.runs.map((x) => x.record.blackhole);
        for (const [i, b] of holes.entries()) {
          const r = result.runs[i]?.record;
          assert.ok(b && r, 'a blackhole record per run');
          // Both strategies saw the same pod blackholed at the same instant (after the 2.5 s step).
          assert.equal(b.pod, holes[0]?.pod);
          assert.ok(b.atMs >= 2500, `at ${b.atMs} ms`);
          assert.equal(b.failed, r.failed);
          assert.ok(b.inFlight + b.startedAfter <= b.failed);
          // The clients run with grpc-kube's client defaults: pings every 10 s, 5 s to answer.
          assert.equal(b.keepaliveWindowMs, 15_000);
          // The frozen pod fails its probe, and the clients stop picking it before keepalive would tell.
          assert.ok(b.unreadyAfterMs !== null && b.unreadyAfterMs > 0, `unready after ${b.unreadyAfterMs}`);
          assert.ok(b.detectionMs <= b.keepaliveWindowMs, `last pick ${b.detectionMs} ms after`);
          // A call sent to the frozen pod never reaches its handler: no attempt is counted for it.
          assert.ok(r.attempts !== null && r.attempts !== undefined && r.attempts <= r.rpcs);
        }
      },
    );
  },
);

test(
  'overload-retry with SayHello idempotent: the pods count the retried calls',
  { timeout: 300_000 },
  async (t) => {
    await unsaturatedLab(
      t,
      () =>
        runScenario({
          scenario: scenario('overload-retry'),
          strategies: strategies('kubernetes'),
          timeScale: 1,
          random: seededRandom(1),
          config: labConfig({ strategyCount: 1, clientDefaults: true, idempotent: true }),
        }),
      (r) => r.runs.map((x) => x.record),
      3,
      (result) => {
        const r = result.runs[0]?.record;
        assert.ok(r);
        // Round robin lands a fifth of the calls on the shedding pod; each is retried on another pod.
        assert.ok(
          r.attempts !== null && r.attempts !== undefined && r.attempts > r.rpcs,
          `${r.attempts} attempts for ${r.rpcs} calls`,
        );
        assert.ok(r.retryLoadPct !== null && r.retryLoadPct !== undefined && r.retryLoadPct > 0);
        assert.equal(r.blackhole, undefined);
      },
    );
  },
);
