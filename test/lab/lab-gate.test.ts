// The lab as a CI gate for a user's own server: `grpc-kube lab --pod-command` runs a plain grpc-js
// server (test/lab/fixtures/user-server.ts, nothing of grpc-kube in it) as the pods, and `--assert`
// turns figures into an exit code. A run the harness calls saturated is re-run (at most 3 times):
// its assertions cannot pass, so the test would check the machine, not the product.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import type { LabRunRecord } from '@grpc-kube/lab/internal/lab/metrics.js';
import { unsaturatedLab } from '../helpers/lab.js';

const CLI = fileURLToPath(new URL('../../../packages/cli/dist/src/main.js', import.meta.url));
const USER_SERVER = fileURLToPath(new URL('./fixtures/user-server.js', import.meta.url));

interface LabJson {
  runs: LabRunRecord[];
  podsPerClient: Array<{ scenario: string; strategy: string; podsPerClient: number[] }>;
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('exit', (code) => resolve({ code, stdout: out, stderr: err }));
  });
}

test('a malformed --assert exits 2 naming it, before anything runs', async () => {
  const r = await runCli(['lab', '--assert', 'rolling-update/kubernetes:failed=0']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /GK_ERR_INVALID_ASSERTION: --assert "rolling-update\/kubernetes:failed=0"/);
  assert.doesNotMatch(r.stderr, /▶/, 'no scenario started');
  const u = await runCli(['lab', '--assert', 'scale-up/kubernetes:readyToFirstRpcMs.p100<1']);
  assert.equal(u.code, 2);
  assert.match(u.stderr, /unknown figure "readyToFirstRpcMs.p100"/);
});

test(
  "lab --pod-command runs the user's server as the pods; --assert passes and fails by the figures",
  { timeout: 300_000 },
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-lab-gate-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const json = join(dir, 'lab.json');
    const args = [
      'lab',
      '--quick',
      '--scenario',
      'rolling-update',
      '--strategy',
      'kubernetes,headless-pick-first,proxy',
      '--pod-command',
      `${JSON.stringify(process.execPath)} ${JSON.stringify(USER_SERVER)}`,
      '--json',
      json,
      '--assert',
      'rolling-update/kubernetes:failed==0',
      '--assert',
      'rolling-update/kubernetes:newPodsNeverServed==0',
      '--assert',
      'rolling-update/headless-pick-first:rpcs<10',
    ];
    await unsaturatedLab(
      t,
      async () => {
        const result = await runCli(args);
        return { result, lab: JSON.parse(await readFile(json, 'utf8')) as LabJson };
      },
      (r) => r.lab.runs,
      3,
      ({ result, lab }) => {
        const { code, stderr } = result;
        // One assertion cannot hold (the run made hundreds of RPCs): the gate exits 1 and says which.
        assert.equal(code, 1, stderr.slice(-3000));
        assert.match(stderr, /^assert ok {3}rolling-update\/kubernetes:failed==0$/m);
        assert.match(stderr, /^assert ok {3}rolling-update\/kubernetes:newPodsNeverServed==0$/m);
        assert.match(stderr, /^assert FAIL rolling-update\/headless-pick-first:rpcs<10$/m);
        const m = /rolling-update\/headless-pick-first: rpcs = (\d+) FAILS < 10/.exec(stderr);
        // (how many RPCs a quick run makes depends on the machine's speed: only that it is the failing value)
        assert.ok(m !== null && Number(m[1]) >= 10, 'the failing value is printed');
        t.diagnostic(`headless-pick-first made ${m?.[1]} RPCs`);
        assert.match(stderr, /assertions: 2 held, 1 failed/);
        // An L7 hop hides which pod answered a user's server: skipped, with the reason.
        assert.match(
          stderr,
          /proxy skipped \(with --pod-command, a hop of the lab hides which pod answered\)/,
        );
        assert.deepEqual(lab.runs.map((r) => r.strategy).sort(), ['headless-pick-first', 'kubernetes']);
        // The pods that answered are known by name (from the peer address): the rollout replaced all 5.
        const kube = lab.runs.find((r) => r.strategy === 'kubernetes');
        assert.ok(kube !== undefined && kube.rpcs > 0, `kubernetes ran ${kube?.rpcs} RPCs`);
        t.diagnostic(`kubernetes made ${kube.rpcs} RPCs`);
        const per = lab.podsPerClient.find((p) => p.strategy === 'kubernetes')?.podsPerClient ?? [];
        assert.ok(
          per.every((n) => n >= 5),
          `each client reached old and new pods: ${per.join(',')}`,
        );
      },
    );
  },
);
