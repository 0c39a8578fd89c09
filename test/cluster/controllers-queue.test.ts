// The controllers' work queue: coalescing, one reconcile at a time, re-run when dirtied while
// running, retries with backoff, nothing after close().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkQueue } from '@grpc-kube/lab/internal/cluster/controllers/queue.js';

test('a burst of adds for one key is one reconcile; different keys run in order', async () => {
  const runs: string[] = [];
  const q = new WorkQueue({ handler: (k) => void runs.push(k) });
  for (let i = 0; i < 100; i++) q.add('a');
  q.add('b');
  q.add('a');
  await q.idle();
  assert.deepEqual(runs, ['a', 'b']);
});

test('a key added while its reconcile runs runs once more afterwards, never concurrently', async () => {
  const runs: number[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  let release!: () => void;
  const q = new WorkQueue({
    handler: async () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      runs.push(runs.length);
      if (runs.length === 1) await new Promise<void>((r) => (release = r));
      inFlight--;
    },
  });
  q.add('k');
  await new Promise((r) => setImmediate(r));
  q.add('k');
  q.add('k');
  release();
  await q.idle();
  assert.deepEqual(runs, [0, 1]);
  assert.equal(maxInFlight, 1);
});

test('a failing reconcile is retried with growing, jittered delays until it succeeds', async () => {
  const at: number[] = [];
  const errors: unknown[] = [];
  const q = new WorkQueue({
    retryBaseMs: 10,
    retryMaxMs: 40,
    random: () => 1,
    onError: (_k, e) => void errors.push(e),
    handler: () => {
      at.push(Date.now());
      if (at.length < 4) throw new Error('conflict');
    },
  });
  // The queue's retry timers are unref'd (they must not keep a process alive); this one keeps the test alive.
  const keepAlive = setInterval(() => {}, 1000);
  q.add('k');
  await q.idle();
  clearInterval(keepAlive);
  assert.equal(at.length, 4);
  assert.equal(errors.length, 3);
  const gaps = at.slice(1).map((t, i) => t - (at[i] ?? 0));
  // random() = 1 picks the ceiling: 10, 20, 40 ms.
  assert.ok((gaps[0] ?? 0) >= 9 && (gaps[1] ?? 0) >= 19 && (gaps[2] ?? 0) >= 39, gaps.join(','));
});

test('close() drops queued work and pending retries', async () => {
  const runs: string[] = [];
  const q = new WorkQueue({
    retryBaseMs: 5,
    handler: (k) => {
      runs.push(k);
      throw new Error('x');
    },
  });
  q.add('a');
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  q.close();
  q.add('b');
  await q.idle();
  await new Promise((r) => setTimeout(r, 30));
  assert.deepEqual(runs, ['a']);
});
