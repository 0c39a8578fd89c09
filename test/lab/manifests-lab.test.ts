// lab --manifests on the embedded cluster, end to end: the kubernetes and xds strategies from their
// deploy/ overlays, pods running the overlays' containers as written. The xds overlay here is a copy
// whose control plane is given a flag `grpc-kube xds serve` does not know — what a manifest ahead of
// its CLI (the xDS flag bug) does: the container exits 2 and crash-loops. The run must fail xds alone,
// naming the pod, the container, the exit code and the CLI's complaint, and keep kubernetes' run,
// recorded with its overlay.

import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { seededRandom } from 'grpc-kube/internal/balancer/index.js';
import { labConfig } from '@grpc-kube/lab/internal/lab/config.js';
import { runScenario } from '@grpc-kube/lab/internal/lab/runner.js';
import { builtinScenarios, scaleScenario, type Scenario } from '@grpc-kube/lab/internal/lab/scenario.js';
import { strategyByName } from '@grpc-kube/lab/internal/lab/strategies/index.js';
import type { LabStrategy } from '@grpc-kube/lab/internal/lab/strategy.js';

const repoRoot = join(import.meta.dirname, '..', '..', '..');
let dir: string | undefined;
after(() => (dir === undefined ? undefined : rm(dir, { recursive: true, force: true })));

test(
  'lab --manifests (embedded): a crash-looping control plane fails xds alone, named; kubernetes runs from deploy/kubernetes',
  { timeout: 300_000 },
  async () => {
    dir = await mkdtemp(join(tmpdir(), 'grpc-kube-manifests-'));
    await cp(join(repoRoot, 'deploy'), join(dir, 'deploy'), { recursive: true });
    const cpFile = join(dir, 'deploy', 'xds', 'control-plane.yaml');
    const yaml = await readFile(cpFile, 'utf8');
    assert.ok(yaml.includes('- --listen=0.0.0.0:18000'));
    await writeFile(cpFile, yaml.replace('- --listen=0.0.0.0:18000', '- --bogus-flag=0.0.0.0:18000'));

    const scaleUp = builtinScenarios().find((s) => s.name === 'scale-up') as Scenario;
    const strategies = ['kubernetes', 'xds'].map((n) => strategyByName(n) as LabStrategy);
    const lines: string[] = [];
    const r = await runScenario({
      scenario: scaleScenario(scaleUp, 0.3),
      strategies,
      timeScale: 0.3,
      random: seededRandom(1),
      config: labConfig({ strategyCount: 2, manifests: true }),
      manifestsRoot: dir,
      onProgress: (l) => lines.push(l),
    });
    const xds = r.failed.find((f) => f.strategy === 'xds');
    assert.ok(xds, `xds failed: ${JSON.stringify(r.failed)}\n${lines.join('\n')}`);
    assert.match(
      xds.reason,
      /^GK_ERR_LAB_MANIFESTS: deploy\/xds \(namespace lab-xds\): pod lab-xds\/grpc-kube-xds-\S+ container xds: CrashLoopBackOff after \d+ restarts, last exit code 2 .*Unknown option '--bogus-flag'/,
    );
    assert.deepEqual(
      r.runs.map((x) => [x.record.strategy, x.record.overlay]),
      [['kubernetes', 'deploy/kubernetes']],
    );
    const k = r.runs[0]?.record;
    assert.ok(k && k.rpcs > 0);
    // The kubernetes: resolver's promise, from the manifests as a user applies them.
    assert.equal(k.failed, 0, JSON.stringify(k.failedByCode));
    assert.equal(k.newPodsNeverServed, 0);
  },
);
