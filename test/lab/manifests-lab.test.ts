// lab --manifests end to end, on the embedded cluster (and on the real one, where a ServiceAccount's
// RBAC is checked): the kubernetes and xds strategies from their
// deploy/ overlays, pods running the overlays' containers as written. The xds overlay here is a copy
// whose control plane is given a flag `grpc-kube xds serve` does not know — what a manifest ahead of
// its CLI (the xDS flag bug) does: the container exits 2 and crash-loops. The run must fail xds alone,
// naming the pod, the container, the exit code and the CLI's complaint, and keep kubernetes' run,
// recorded with its overlay. On the real cluster the copy's control-plane Role lacks EndpointSlices:
// the API answers `xds serve` 403, and the run must fail xds naming the refusal. The real half needs
// root and the built control plane; it skips otherwise unless GRPC_KUBE_REAL=1.

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
import { realLabSkip } from '../helpers/real.js';
import type { LabStrategy } from '@grpc-kube/lab/internal/lab/strategy.js';

const repoRoot = join(import.meta.dirname, '..', '..', '..');
const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

const skipReal = realLabSkip();

/** A copy of deploy/ with `edit` applied to one file, for a run's manifestsRoot. */
async function deployCopy(file: string, edit: (text: string) => string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-manifests-'));
  dirs.push(dir);
  await cp(join(repoRoot, 'deploy'), join(dir, 'deploy'), { recursive: true });
  const path = join(dir, 'deploy', file);
  const text = await readFile(path, 'utf8');
  const edited = edit(text);
  assert.notEqual(edited, text, `the edit changes ${file}`);
  await writeFile(path, edited);
  return dir;
}

async function runKubernetesAndXds(cluster: 'embedded' | 'real', root: string) {
  const scaleUp = builtinScenarios().find((s) => s.name === 'scale-up') as Scenario;
  const lines: string[] = [];
  const r = await runScenario({
    scenario: scaleScenario(scaleUp, 0.3),
    strategies: ['kubernetes', 'xds'].map((n) => strategyByName(n) as LabStrategy),
    timeScale: 0.3,
    random: seededRandom(1),
    config: labConfig({ strategyCount: 2, manifests: true, cluster }),
    manifestsRoot: root,
    onProgress: (l) => lines.push(l),
  });
  return { r, lines };
}

/** kubernetes' run from deploy/kubernetes: the kubernetes: resolver's promise, 0 failed, every new pod served. */
function assertKubernetesKept(r: Awaited<ReturnType<typeof runKubernetesAndXds>>['r']): void {
  assert.deepEqual(
    r.runs.map((x) => [x.record.strategy, x.record.overlay]),
    [['kubernetes', 'deploy/kubernetes']],
  );
  const k = r.runs[0]?.record;
  assert.ok(k && k.rpcs > 0);
  assert.equal(k.failed, 0, JSON.stringify(k.failedByCode));
  assert.equal(k.newPodsNeverServed, 0);
}

test(
  'lab --manifests (embedded): a crash-looping control plane fails xds alone, named; kubernetes runs from deploy/kubernetes',
  { timeout: 300_000 },
  async (t) => {
    const root = await deployCopy('xds/control-plane.yaml', (y) =>
      y.replace('- --listen=0.0.0.0:18000', '- --bogus-flag=0.0.0.0:18000'),
    );
    const { r, lines } = await runKubernetesAndXds('embedded', root);
    const xds = r.failed.find((f) => f.strategy === 'xds');
    assert.ok(xds, `xds failed: ${JSON.stringify(r.failed)}\n${lines.join('\n')}`);
    t.diagnostic(xds.reason);
    assert.match(
      xds.reason,
      /^GK_ERR_LAB_MANIFESTS: deploy\/xds \(namespace lab-xds\): pod lab-xds\/grpc-kube-xds-\S+ container xds: CrashLoopBackOff after \d+ restarts, last exit code 2 .*Unknown option '--bogus-flag'/,
    );
    assertKubernetesKept(r);
  },
);

for (const cluster of ['embedded', 'real'] as const) {
  test(
    `lab --manifests (${cluster}): a control plane whose Role lacks endpointslices logs 403 and fails xds alone, named; kubernetes runs`,
    { timeout: 600_000, skip: cluster === 'real' ? skipReal : false },
    async (t) => {
      // The xds Role's first rule is EndpointSlices: without it `xds serve` is refused (403) by the API.
      const root = await deployCopy('xds/control-plane.yaml', (y) =>
        y.replace(
          "  - apiGroups: ['discovery.k8s.io']\n    resources: ['endpointslices']\n    verbs: ['get', 'list', 'watch']\n",
          '',
        ),
      );
      const { r, lines } = await runKubernetesAndXds(cluster, root);
      const xds = r.failed.find((f) => f.strategy === 'xds');
      assert.ok(xds, `xds failed: ${JSON.stringify(r.failed)}\n${lines.join('\n')}`);
      t.diagnostic(xds.reason);
      assert.match(
        xds.reason,
        /pod lab-xds\/grpc-kube-xds-\S+ container xds: the API refused it.*(403|forbidden)/i,
      );
      assert.match(xds.reason, /endpointslices/i);
      assertKubernetesKept(r);
    },
  );
}
