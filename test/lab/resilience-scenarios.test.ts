// The resilience scenarios (blackhole, overload, api-outage-during-rollout) are built in and say
// what the issue asks, and the lab pod's overload switch works on a real pod process: SIGUSR2 makes
// every SayHello answer RESOURCE_EXHAUSTED with grpc-retry-pushback-ms, SIGUSR2 again serves again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { GreeterClient } from '@grpc-kube/lab/internal/lab/hello.js';
import { spawnPod } from '@grpc-kube/lab/internal/lab/pod-main.js';
import { builtinScenarios, SCENARIO_NAMES } from '@grpc-kube/lab/internal/lab/scenario.js';
import { fileURLToPath } from 'node:url';
import { runNode } from '../helpers/lab.js';

const CLI = fileURLToPath(new URL('../../../packages/cli/dist/src/main.js', import.meta.url));

test('blackhole, overload and api-outage-during-rollout are in the default set, with their steps', () => {
  const all = new Map(builtinScenarios().map((s) => [s.name, s]));
  assert.deepEqual([...all.keys()], [...SCENARIO_NAMES]);
  const blackhole = all.get('blackhole');
  assert.deepEqual(
    blackhole?.steps.map((s) => ('signal' in s ? s.signal : s.action)),
    ['SIGSTOP'],
  );
  assert.deepEqual(
    all.get('overload')?.steps.map((s) => ('signal' in s ? s.signal : s.action)),
    ['SIGUSR2'],
  );
  // overload-retry: the same shedding pod, with a pushback short enough to retry within the deadline.
  const retry = all.get('overload-retry');
  assert.deepEqual(
    retry?.steps.map((s) => ('signal' in s ? s.signal : s.action)),
    ['SIGUSR2'],
  );
  assert.ok((retry?.overloadPushbackMs ?? Infinity) < (retry?.deadlineMs ?? 0) / 2);
  const rollout = all.get('api-outage-during-rollout');
  const [roll, down] = rollout?.steps ?? [];
  assert.equal(roll?.action, 'rollout');
  assert.equal(down?.action, 'api-down');
  // The API goes down after the rollout began, and is back well before the run ends.
  assert.ok(down !== undefined && roll !== undefined && down.atMs > roll.atMs);
  assert.ok(down?.action === 'api-down' && down.atMs + down.forMs < (rollout?.durationMs ?? 0));
});

test('SIGUSR2 toggles a pod into shedding RESOURCE_EXHAUSTED with pushback, and back', async (t) => {
  const pod = spawnPod({ name: 'busy', host: '127.0.2.9', port: 0, overloadPushbackMs: 750 });
  t.after(() => pod.kill('SIGKILL'));
  const { port } = await pod.listening;
  await pod.ready;
  const client = new GreeterClient(`127.0.2.9:${port}`);
  t.after(() => client.close());
  const call = (): Promise<{ code: number; pushback: string[] }> =>
    new Promise((resolve) =>
      client.sayHelloCb({ client: 'c', counter: 1 }, 30_000, (err) =>
        resolve({
          code: err?.code ?? grpc.status.OK,
          pushback: (err?.metadata?.get('grpc-retry-pushback-ms') ?? []).map(String),
        }),
      ),
    );
  assert.equal((await call()).code, grpc.status.OK);
  // The signal lands asynchronously: call until the answer changes (bounded by count).
  const until = async (code: number): Promise<{ code: number; pushback: string[] }> => {
    for (let i = 0; i < 3000; i++) {
      const r = await call();
      if (r.code === code) return r;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.fail(`never answered ${grpc.status[code]}`);
  };
  pod.kill('SIGUSR2');
  assert.deepEqual(await until(grpc.status.RESOURCE_EXHAUSTED), {
    code: grpc.status.RESOURCE_EXHAUSTED,
    pushback: ['750'],
  });
  pod.kill('SIGUSR2');
  assert.equal((await until(grpc.status.OK)).code, grpc.status.OK);
});

test('--idempotent and --hedge need --client-defaults and a whole number of ms, checked before anything runs', async () => {
  for (const [args, why] of [
    [['--hedge', '150'], /--hedge.*needs --client-defaults/],
    [['--idempotent'], /--idempotent.*needs --client-defaults/],
    [['--client-defaults', '--hedge', '0'], /--hedge.*whole number of ms > 0/],
    [['--client-defaults', '--hedge', '1.5'], /--hedge.*whole number of ms > 0/],
  ] as const) {
    const r = await runNode([CLI, 'lab', '--scenario', 'overload-retry', ...args]);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, /GK_ERR_INVALID_OPTION/);
    assert.match(r.stderr, why);
    assert.doesNotMatch(r.stderr, /scenarios ×/, 'nothing ran');
  }
});
