// A lab run that cannot run fails alone. `grpc-kube lab --cluster real` used to die at canary-shift
// (no GRPCRoute CRD) and lose the results of every scenario before it. Here, on the embedded
// cluster: a strategy that throws while starting, beside one that runs, and then a scenario whose
// step throws (a signal the kernel does not know). The runs that could run are in the JSON; the
// others are in `failedRuns` with their reasons, in the report and the summary; the exit code is 1.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { labCommand, type FailedRun } from '@grpc-kube/cli/internal/lab.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { LabRunRecord } from '@grpc-kube/lab/internal/lab/metrics.js';
import { builtinScenarios, type Scenario } from '@grpc-kube/lab/internal/lab/scenario.js';
import type { LabStrategy } from '@grpc-kube/lab/internal/lab/strategy.js';

let dir: string | undefined;
after(() => (dir === undefined ? undefined : rm(dir, { recursive: true, force: true })));

const brokenStrategy: LabStrategy = {
  name: 'broken-start',
  description: 'throws while starting',
  flavour: 'plain',
  canRoute: false,
  start: () => Promise.reject(new GrpcKubeError('GK_ERR_LAB', 'this strategy cannot start (test)')),
};

test(
  'lab: a strategy or a scenario that throws fails alone; the other results are kept; exit 1',
  { timeout: 300_000 },
  async () => {
    dir = await mkdtemp(join(tmpdir(), 'grpc-kube-lab-failure-'));
    const scaleUp = builtinScenarios().find((s) => s.name === 'scale-up') as Scenario;
    // scale-up with one step the cluster cannot carry out: the pod kill throws ERR_UNKNOWN_SIGNAL.
    const brokenStep = {
      ...scaleUp,
      name: 'broken-step',
      description: 'a step that throws',
      steps: [{ atMs: 500, action: 'kill-pods', count: 1, signal: 'SIGBOGUS' }],
    } as unknown as Scenario;
    const json = join(dir, 'lab.json');
    const report = join(dir, 'lab.html');
    const code = await labCommand(
      [
        '--quick',
        '--scenario',
        'scale-up,broken-step',
        '--strategy',
        'kubernetes,broken-start',
        '--json',
        json,
        '--report',
        report,
      ],
      { scenarios: [brokenStep], strategies: [brokenStrategy] },
    );
    assert.equal(code, 1);
    const out = JSON.parse(await readFile(json, 'utf8')) as { runs: LabRunRecord[]; failedRuns: FailedRun[] };
    // The run that could run, measured as usual.
    assert.deepEqual(
      out.runs.map((r) => `${r.scenario}/${r.strategy}`),
      ['scale-up/kubernetes'],
    );
    assert.ok((out.runs[0]?.rpcs ?? 0) > 0);
    // Everything else, with its reason.
    assert.deepEqual(
      out.failedRuns.map((f) => `${f.scenario}/${f.strategy}`),
      ['scale-up/broken-start', 'broken-step/kubernetes', 'broken-step/broken-start'],
    );
    assert.equal(out.failedRuns[0]?.reason, 'GK_ERR_LAB: this strategy cannot start (test)');
    assert.match(
      out.failedRuns[1]?.reason ?? '',
      /^GK_ERR_LAB: scenario broken-step: a step failed: .*SIGBOGUS/,
    );
    const html = await readFile(report, 'utf8');
    assert.ok(html.includes('FAILED scale-up/broken-start: GK_ERR_LAB: this strategy cannot start (test)'));
    assert.ok(
      html.includes('FAILED broken-step/kubernetes: GK_ERR_LAB: scenario broken-step: a step failed'),
    );
  },
);
