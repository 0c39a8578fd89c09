// Retries and hedges go elsewhere: grpc_kube_p2c / grpc_kube_ewma send a later attempt of a call
// (named by CALL_ID_METADATA_KEY) to an endpoint no earlier attempt of it used, and AttemptLog
// forgets a call at its first answer, its deadline, or when full. Fake subchannels, a manual clock
// and scripted samples; every expected pick is worked out by hand in the comments.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Metadata, status as Status } from '@grpc/grpc-js';
import {
  EwmaConfig,
  EwmaLoadBalancer,
  ManualClock,
  P2cConfig,
  P2cLoadBalancer,
} from 'grpc-kube/internal/balancer/index.js';
import {
  DEADLINE_METADATA_KEY,
  type EndpointStats,
  type TwoChoicePicker,
} from 'grpc-kube/internal/balancer/endpoint-balancer.js';
import {
  AttemptLog,
  ATTEMPT_LOG_KEEP_MS,
  CALL_ID_METADATA_KEY,
} from 'grpc-kube/internal/balancer/attempts.js';
import {
  PickResultType,
  type PickArgs,
  type PickResult,
  type Picker,
} from 'grpc-kube/internal/adapter/grpc-js.js';
import { FakeHelper, endpoints, scriptedRandom } from './fakes.js';

const A = '10.0.0.1:80';
const B = '10.0.0.2:80';
const C = '10.0.0.3:80';

/** Pick args of one call: its id and deadline, as callInfoInterceptor() writes them. */
function callArgs(id: string | null, deadlineMs: number | null): PickArgs {
  const metadata = new Metadata();
  if (id !== null) metadata.set(CALL_ID_METADATA_KEY, id);
  if (deadlineMs !== null) metadata.set(DEADLINE_METADATA_KEY, String(deadlineMs));
  return { metadata, extraPickInfo: {} };
}

function start(picker: Picker, args: ReturnType<typeof callArgs>): { key: string; result: PickResult } {
  const result = picker.pick(args);
  assert.equal(result.pickResultType, PickResultType.COMPLETE);
  result.onCallStarted?.();
  return { key: (result.subchannel as unknown as { address: string }).address, result };
}

test('ewma: a hedge goes to an endpoint the first attempt did not use, even when that one scores lower', (t) => {
  // The slow-pod lab run with hedging: B, the 10× slow pod, carries only the ~150 ms lower bound its
  // cancelled attempts left; A and C answer in 110 ms with 2 calls each in flight.
  const clock = new ManualClock(1_000_000);
  const helper = new FakeHelper();
  // Every pick samples B (⌊0.4·3⌋ = 1), then A (⌊0·2⌋ = 0).
  const lb = new EwmaLoadBalancer(helper.asHelper(), {
    now: clock.now,
    random: scriptedRandom([0.4, 0]),
    wallNow: clock.now,
  });
  t.after(() => lb.destroy());
  lb.updateAddressList(endpoints(A, B, C), EwmaConfig.createFromJson({}), {}, '');
  for (const k of [A, B, C]) helper.connect(k);
  const picker = helper.last.picker as TwoChoicePicker;
  const [a, b, c] = picker.candidates.map((x) => x.stats) as [EndpointStats, EndpointStats, EndpointStats];
  for (const [s, rtt, outstanding] of [
    [a, 110, 2],
    [b, 150, 0],
    [c, 110, 2],
  ] as const) {
    s.rttMs = rtt;
    s.stampMs = clock.now();
    s.ended = 10;
    s.outstanding = outstanding;
  }
  const args = callArgs('c1', clock.now() + 1000);
  // First attempt: B costs 150·1 = 150, A 110·3 = 330: B.
  const first = start(picker, args);
  assert.equal(first.key, B);
  clock.advance(150);
  // The hedge, 150 ms later. Sampled again B then A: B's cost is max(150·e^(−0.015), 150 in flight)
  // × 2 = 300, A's 110·e^(−0.015)·3 ≈ 325, so a second sample would send the hedge back to B. It goes
  // to the best endpoint not tried: A and C tie at 325, the first listed wins.
  const hedge = start(picker, callArgs('c1', clock.now() + 850));
  assert.equal(hedge.key, A);
  // A call without an id (no interceptor) is sampled as before: B.
  const plain = start(picker, callArgs(null, clock.now() + 1000));
  assert.equal(plain.key, B);
  // The hedge answers; the call is forgotten, and the cancelled first attempt does not bring it back.
  clock.advance(110);
  hedge.result.onCallEnded?.(Status.OK, '', new Metadata());
  first.result.onCallEnded?.(Status.CANCELLED, '', new Metadata());
  plain.result.onCallEnded?.(Status.CANCELLED, '', new Metadata());
  // B: 260 (the cancelled attempt's lower bound) against A: 110·3 = 330.
  assert.equal(start(picker, callArgs('c1', clock.now() + 1000)).key, B, 'a new call again');
});

test('p2c: each retry of a call goes to an endpoint it has not tried while one is left', (t) => {
  const clock = new ManualClock(0);
  const helper = new FakeHelper();
  // Every pick samples A (⌊0·3⌋ = 0), then B (⌊0·2⌋ = 0 → 1): both idle, the tie goes to A.
  const lb = new P2cLoadBalancer(helper.asHelper(), { now: clock.now, random: () => 0, wallNow: clock.now });
  t.after(() => lb.destroy());
  lb.updateAddressList(endpoints(A, B, C), P2cConfig.createFromJson({}), {}, '');
  for (const k of [A, B, C]) helper.connect(k);
  const picker = helper.last.picker;
  const fail = (r: PickResult): void => r.onCallEnded?.(Status.UNAVAILABLE, '', new Metadata());
  const args = callArgs('r1', null);
  const tried: string[] = [];
  for (let attempt = 0; attempt < 4; attempt++) {
    const { key, result } = start(picker, args);
    tried.push(key);
    fail(result);
  }
  // A (sampled), then the untried ones by score (all idle: list order), then, all tried, the best.
  assert.deepEqual(tried, [A, B, C, A]);
});

test('a later attempt prefers an untried endpoint predicted to miss the deadline over a tried one', (t) => {
  // Untried first: a second attempt on the endpoint holding the first only doubles the wait there.
  const clock = new ManualClock(0);
  const helper = new FakeHelper();
  const lb = new EwmaLoadBalancer(helper.asHelper(), { now: clock.now, random: () => 0, wallNow: clock.now });
  t.after(() => lb.destroy());
  lb.updateAddressList(endpoints(A, B), EwmaConfig.createFromJson({}), {}, '');
  helper.connect(A);
  helper.connect(B);
  const picker = helper.last.picker as TwoChoicePicker;
  const [a, b] = picker.candidates.map((x) => x.stats) as [EndpointStats, EndpointStats];
  a.rttMs = 10;
  b.rttMs = 900;
  a.ended = b.ended = 5;
  const first = start(picker, callArgs('d1', 1000));
  assert.equal(first.key, A);
  // ABORTED (retried for idempotent methods) is no latency penalty: A stays at ~10 ms, usable.
  first.result.onCallEnded?.(Status.ABORTED, '', new Metadata());
  clock.advance(500);
  // 500 ms left: B (900·e^(−0.05) ≈ 856 ms) is predicted to miss it, A (≈ 10 ms) to make it. A second
  // sample would take A (the usable one); the retry takes B, which the call has not tried.
  assert.equal(start(picker, callArgs('d1', 1000)).key, B);
});

test('AttemptLog: forgets a call at its answer, at its deadline, and oldest first when full', () => {
  const log = new AttemptLog(2);
  log.started('a', A, 100, 0);
  log.started('a', B, 100, 10);
  log.started('a', B, 100, 20);
  assert.deepEqual(log.tried('a'), [A, B]);
  log.answered('a');
  assert.equal(log.tried('a'), undefined);
  // Deadline 100: still there at 99, swept by the next new call at 100.
  log.started('b', A, 100, 0);
  log.started('c', A, null, 99);
  assert.deepEqual(log.tried('b'), [A]);
  log.started('d', A, 500, 100);
  assert.equal(log.tried('b'), undefined);
  // Full (2): 'c' and 'd' held; a third call pushes out the oldest, 'c'.
  log.started('e', A, 500, 101);
  assert.equal(log.size, 2);
  assert.equal(log.tried('c'), undefined);
  assert.deepEqual(log.tried('d'), [A]);
  // Without a deadline a call is kept ATTEMPT_LOG_KEEP_MS.
  const open = new AttemptLog();
  open.started('x', A, null, 0);
  open.started('y', A, null, ATTEMPT_LOG_KEEP_MS - 1);
  assert.deepEqual(open.tried('x'), [A]);
  open.started('z', A, null, ATTEMPT_LOG_KEEP_MS);
  assert.equal(open.tried('x'), undefined);
  assert.deepEqual(open.tried('y'), [A]);
});
