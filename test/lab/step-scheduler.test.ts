// The scenario step scheduler: a step under way when the scenario ends is waited for, its delayed
// follow-up (the API back up) never fires after stop(), and its finisher runs exactly once before
// stop() resolves — so a lab never restarts an API server after it has stopped the cluster.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StepScheduler } from '@grpc-kube/lab/internal/lab/step-scheduler.js';

interface Step {
  readonly atMs: number;
  readonly name: string;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = (): void => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** An api-down-like step: slow to take the API down, then brings it up `forMs` later or at the end. */
function apiDownLike(log: string[], down: Promise<void>, forMs: number) {
  return async (step: Step, ctx: import('@grpc-kube/lab/internal/lab/step-scheduler.js').StepContext) => {
    log.push(`${step.name} begins`);
    await down;
    log.push(`${step.name} down`);
    let up: Promise<void> | undefined;
    const bringUp = (): Promise<void> =>
      (up ??= (async () => {
        log.push('up');
        ctx.mark('API back');
      })());
    ctx.later(bringUp, forMs);
    ctx.finish(bringUp);
  };
}

test('stop() during a step waits for it, cancels its later work and runs its finisher once, before resolving', async () => {
  const log: string[] = [];
  const marks: string[] = [];
  const down = deferred();
  const s = new StepScheduler<Step>(
    apiDownLike(log, down.promise, 60_000),
    () => log.push('start'),
    (m) => marks.push(m),
  );
  s.start([{ atMs: 0, name: 'api-down' }]);
  // The step's timer fires whenever the loaded machine lets it: wait for the step, not for a time.
  for (let i = 0; i < 6000 && !log.includes('api-down begins'); i++)
    await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(log, ['start', 'api-down begins']);
  const stopped = s.stop();
  // The step is still taking the API down when the scenario ends.
  setImmediate(() => down.resolve());
  await stopped;
  assert.deepEqual(
    log,
    ['start', 'api-down begins', 'api-down down', 'up'],
    'the API came back before stop() resolved',
  );
  assert.deepEqual(marks, ['API back']);
  assert.deepEqual(s.errors, []);
});

test('a finisher whose work already ran on time does not run again', async () => {
  const log: string[] = [];
  const s = new StepScheduler<Step>(
    apiDownLike(log, Promise.resolve(), 10),
    () => undefined,
    () => undefined,
  );
  s.start([{ atMs: 0, name: 'api-down' }]);
  for (let i = 0; i < 3000 && !log.includes('up'); i++) await new Promise((r) => setTimeout(r, 10));
  await s.stop();
  assert.deepEqual(log, ['api-down begins', 'api-down down', 'up']);
});

test('steps not yet started when the schedule stops never start; a failing step is reported, not thrown', async () => {
  const ran: string[] = [];
  const s = new StepScheduler<Step>(
    async (step) => {
      ran.push(step.name);
      if (step.name === 'bad') throw new Error('scale refused');
    },
    () => undefined,
    () => undefined,
  );
  s.start([
    { atMs: 0, name: 'bad' },
    { atMs: 60_000, name: 'late' },
  ]);
  for (let i = 0; i < 3000 && ran.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  await s.stop();
  assert.deepEqual(ran, ['bad']);
  assert.equal(s.errors.length, 1);
  assert.match(String(s.errors[0]), /scale refused/);
});
