// lab --manifests end to end for the proxies' overlays, under a rolling update, which both promise to
// ride out (0 failed): sidecar (deploy/sidecar: the client pod's native-sidecar proxy, which the lab's
// clients reach at the pod's address on the embedded cluster, through the lab's port-forward
// container on the real one) on both clusters, and proxy (deploy/proxy: a proxy pod dialling the
// server pods, so pod-to-pod routing on the real lab network) on the real one. The real half needs
// root and the built control plane; it skips otherwise unless GRPC_KUBE_REAL=1.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { realLabSkip } from '../helpers/real.js';
import type { LabStrategy } from '@grpc-kube/lab/internal/lab/strategy.js';
import type { Scenario } from '@grpc-kube/lab/internal/lab/scenario.js';
import { unsaturatedLab } from '../helpers/lab.js';

// deploy/proxy's clients dial dns:///hello-proxy…: grpc-js must resolve through the lab's DNS server
// (c-ares, read once when grpc-js loads — what `grpc-kube lab` sets): grpc-js is imported below, after.
process.env['GRPC_NODE_USE_ALTERNATIVE_RESOLVER'] = 'true';
const { seededRandom } = await import('grpc-kube/internal/balancer/index.js');
const { labConfig } = await import('@grpc-kube/lab/internal/lab/config.js');
const { runScenario } = await import('@grpc-kube/lab/internal/lab/runner.js');
const { builtinScenarios, scaleScenario } = await import('@grpc-kube/lab/internal/lab/scenario.js');
const { strategyByName } = await import('@grpc-kube/lab/internal/lab/strategies/index.js');

const repoRoot = join(import.meta.dirname, '..', '..', '..');
const skipReal = realLabSkip();

for (const cluster of ['embedded', 'real'] as const) {
  const names = cluster === 'real' ? ['proxy', 'sidecar'] : ['sidecar'];
  test(
    `lab --manifests (${cluster}): ${names.join(' and ')} from deploy/ ride out a rolling update, 0 failed`,
    { timeout: 600_000, skip: cluster === 'real' ? skipReal : false },
    async (t) => {
      const rolling = builtinScenarios().find((s) => s.name === 'rolling-update') as Scenario;
      const lines: string[] = [];
      const run = () =>
        runScenario({
          scenario: scaleScenario(rolling, 0.3),
          strategies: names.map((n) => strategyByName(n) as LabStrategy),
          timeScale: 0.3,
          random: seededRandom(1),
          config: labConfig({ strategyCount: names.length, manifests: true, cluster }),
          manifestsRoot: repoRoot,
          onProgress: (l) => lines.push(l),
        });
      await unsaturatedLab(
        t,
        run,
        (r) => r.runs.map((x) => x.record),
        3,
        (r) => {
          assert.deepEqual(r.failed, [], lines.join('\n'));
          assert.deepEqual(
            r.runs.map((x) => [x.record.strategy, x.record.overlay]),
            names.map((n) => [n, `deploy/${n}`]),
          );
          for (const { record } of r.runs) {
            t.diagnostic(`${record.strategy}: ${record.rpcs} RPCs, ${record.failed} failed`);
            assert.ok(record.rpcs > 0, record.strategy);
            assert.equal(
              record.failed,
              0,
              `${record.strategy}: ${JSON.stringify(record.failedByCode)}\n${lines.join('\n')}`,
            );
          }
        },
      );
    },
  );
}
