// Outlier detection (gRFC A50) and failure accrual inside grpc_kube_p2c / grpc_kube_ewma, on fake
// subchannels with a manual clock and scripted randomness: which endpoint is ejected, for exactly how
// long, how the ejection time grows and cools, the max-ejection cap, server pushback, and
// deadline-aware picks. Every expected value below is worked out by hand in the comments.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Metadata, status as Status } from '@grpc/grpc-js';
import {
  EwmaConfig,
  EwmaLoadBalancer,
  ManualClock,
  P2cConfig,
  P2cLoadBalancer,
  seededRandom,
} from 'grpc-kube/internal/balancer/index.js';
import {
  DEADLINE_METADATA_KEY,
  type TwoChoicePicker,
} from 'grpc-kube/internal/balancer/endpoint-balancer.js';
import {
  ejectionDurationMs,
  parseOutlierDetection,
  pushbackMs,
} from 'grpc-kube/internal/balancer/outlier.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { FakeHelper, countPicks, endpoints, pickArgs } from './fakes.js';
import { PickResultType, type Picker } from 'grpc-kube/internal/adapter/grpc-js.js';

const A = '10.0.0.1:80';
const B = '10.0.0.2:80';
const C = '10.0.0.3:80';
const D = '10.0.0.4:80';
const E = '10.0.0.5:80';

function p2c(json: object, clock: ManualClock, random: () => number = seededRandom(7)) {
  const helper = new FakeHelper();
  const lb = new P2cLoadBalancer(helper.asHelper(), { now: clock.now, random, wallNow: clock.now });
  return { helper, lb, config: P2cConfig.createFromJson(json) };
}

function keyOf(picker: Picker, args = pickArgs): string {
  const r = picker.pick(args);
  assert.equal(r.pickResultType, PickResultType.COMPLETE);
  return (r.subchannel as unknown as { address: string }).address;
}

/** End `n` calls on endpoint `key` with `code` (picking until the seeded sampler lands on it). */
function finish(picker: Picker, key: string, n: number, code: number, trailers = new Metadata()): void {
  for (let done = 0, tries = 0; done < n; tries++) {
    assert.ok(tries < 10_000, `never picked ${key}`);
    const r = picker.pick(pickArgs);
    if ((r.subchannel as unknown as { address: string }).address !== key) continue;
    r.onCallStarted?.();
    r.onCallEnded?.(code, '', trailers);
    done++;
  }
}

function candidates(helper: FakeHelper): string[] {
  return (helper.last.picker as TwoChoicePicker).candidates
    .map((c) => c.name.replace(/^\[(.*)\]$/, '$1'))
    .sort();
}

const FAILURE_PERCENT = {
  outlierDetection: {
    intervalMs: 10_000,
    baseEjectionTimeMs: 1000,
    maxEjectionTimeMs: 2500,
    maxEjectionPercent: 33,
    failurePercentageEjection: { threshold: 50, minimumHosts: 3, requestVolume: 10 },
  },
};

test('failure percentage: ejects above the threshold, caps at maxEjectionPercent, returns after base × multiplier (capped)', (t) => {
  const clock = new ManualClock(0);
  const { helper, lb, config } = p2c(FAILURE_PERCENT, clock);
  t.after(() => lb.destroy());
  lb.updateAddressList(endpoints(A, B, C), config, {}, '');
  for (const k of [A, B, C]) helper.connect(k);
  const picker = helper.last.picker;
  // A: 8/10 server failures (80 % > 50). B: 6/10 DEADLINE_EXCEEDED (60 % > 50). C: 5 OK + 5 NOT_FOUND:
  // application errors are not the pod's fault, so 0 %.
  finish(picker, A, 2, Status.OK);
  finish(picker, A, 8, Status.UNAVAILABLE);
  finish(picker, B, 4, Status.OK);
  finish(picker, B, 6, Status.DEADLINE_EXCEEDED);
  finish(picker, C, 5, Status.OK);
  finish(picker, C, 5, Status.NOT_FOUND);
  lb.checkOutliers();
  // A is ejected (0/3 ejected < 33 %); then 1/3 = 33.3 % >= 33 % stops the check before B.
  assert.deepEqual(candidates(helper), [B, C]);
  const counts = countPicks(helper.last.picker, 200);
  assert.equal(counts[A], undefined);
  assert.equal((counts[B] ?? 0) + (counts[C] ?? 0), 200);
  /** A sits out exactly `outMs`: still ejected 1 ms before, back at `outMs`. */
  const sitsOut = (outMs: number): void => {
    clock.advance(outMs - 1);
    lb.checkOutliers();
    assert.deepEqual(candidates(helper), [B, C], `still out at ${outMs - 1} ms`);
    clock.advance(1);
    lb.checkOutliers();
    assert.deepEqual(candidates(helper), [A, B, C], `back at ${outMs} ms`);
  };
  /** One interval in which A fails every call with `code` while B and C succeed: A is ejected. */
  const failInterval = (code: number): void => {
    finish(helper.last.picker, A, 10, code);
    finish(helper.last.picker, B, 10, Status.OK);
    finish(helper.last.picker, C, 10, Status.OK);
    lb.checkOutliers();
    assert.deepEqual(candidates(helper), [B, C]);
  };
  // Multiplier 1: out for min(1000 × 1, max(1000, 2500)) = 1000 ms.
  sitsOut(1000);
  // Ejected again right away: multiplier 2 → 2000 ms; then 3 → min(3000, 2500) = 2500 ms.
  failInterval(Status.RESOURCE_EXHAUSTED);
  sitsOut(2000);
  failInterval(Status.INTERNAL);
  sitsOut(2500);
  // Each interval in service takes one off the multiplier: three quiet intervals bring it to 0, so
  // the next ejection lasts the base time again.
  for (let i = 0; i < 3; i++) lb.checkOutliers();
  failInterval(Status.UNAVAILABLE);
  sitsOut(1000);
});

test('failure percentage: below requestVolume or minimumHosts nothing is ejected; CANCELLED is not counted', (t) => {
  const clock = new ManualClock(0);
  const { helper, lb, config } = p2c(FAILURE_PERCENT, clock);
  t.after(() => lb.destroy());
  lb.updateAddressList(endpoints(A, B, C), config, {}, '');
  for (const k of [A, B, C]) helper.connect(k);
  // A: 9 failures and 20 cancellations: volume 9 < 10. B and C: 10 OK each.
  finish(helper.last.picker, A, 9, Status.UNAVAILABLE);
  finish(helper.last.picker, A, 20, Status.CANCELLED);
  finish(helper.last.picker, B, 10, Status.OK);
  finish(helper.last.picker, C, 10, Status.OK);
  lb.checkOutliers();
  assert.deepEqual(candidates(helper), [A, B, C]);
  // Only A and B reach the volume: 2 hosts < minimumHosts 3.
  finish(helper.last.picker, A, 10, Status.UNAVAILABLE);
  finish(helper.last.picker, B, 10, Status.OK);
  lb.checkOutliers();
  assert.deepEqual(candidates(helper), [A, B, C]);
});

test('success rate: mean − stdev × stdevFactor/1000 decides (hand-worked threshold), enforcementPercentage draws', (t) => {
  // Rates A 0.5, B–E 1.0: mean 0.9, variance (0.4² + 4 × 0.1²)/5 = 0.04, stdev 0.2.
  // stdevFactor 1000 → threshold 0.7: A ejected. 2100 → 0.48: nobody. 1900 (A50 default) → 0.52: A.
  const rows: Array<{ stdevFactor: number; enforcementPercentage: number; ejected: boolean }> = [
    { stdevFactor: 1000, enforcementPercentage: 100, ejected: true },
    { stdevFactor: 2100, enforcementPercentage: 100, ejected: false },
    { stdevFactor: 1900, enforcementPercentage: 100, ejected: true },
    { stdevFactor: 1000, enforcementPercentage: 0, ejected: false },
  ];
  for (const row of rows) {
    const clock = new ManualClock(0);
    const { helper, lb, config } = p2c(
      {
        outlierDetection: {
          maxEjectionPercent: 100,
          successRateEjection: {
            stdevFactor: row.stdevFactor,
            enforcementPercentage: row.enforcementPercentage,
            minimumHosts: 5,
            requestVolume: 10,
          },
        },
      },
      clock,
    );
    t.after(() => lb.destroy());
    lb.updateAddressList(endpoints(A, B, C, D, E), config, {}, '');
    for (const k of [A, B, C, D, E]) helper.connect(k);
    finish(helper.last.picker, A, 5, Status.OK);
    finish(helper.last.picker, A, 5, Status.UNAVAILABLE);
    for (const k of [B, C, D, E]) finish(helper.last.picker, k, 10, Status.OK);
    lb.checkOutliers();
    const want = row.ejected ? [B, C, D, E] : [A, B, C, D, E];
    assert.deepEqual(candidates(helper), want, JSON.stringify(row));
  }
});

test('pushback: grpc-retry-pushback-ms keeps an endpoint out of picks for exactly that long', (t) => {
  const clock = new ManualClock(0);
  const { helper, lb, config } = p2c({}, clock);
  t.after(() => lb.destroy());
  lb.updateAddressList(endpoints(A, B), config, {}, '');
  helper.connect(A);
  helper.connect(B);
  const trailers = new Metadata();
  trailers.set('grpc-retry-pushback-ms', '500');
  finish(helper.last.picker, A, 1, Status.RESOURCE_EXHAUSTED, trailers);
  assert.deepEqual(countPicks(helper.last.picker, 50), { [B]: 50 });
  clock.advance(499);
  assert.deepEqual(countPicks(helper.last.picker, 50), { [B]: 50 });
  clock.advance(1);
  const after = countPicks(helper.last.picker, 200);
  assert.ok((after[A] ?? 0) > 50 && (after[B] ?? 0) > 50, JSON.stringify(after));
  // Both pushed back: better to send the call than fail it.
  finish(helper.last.picker, A, 1, Status.RESOURCE_EXHAUSTED, trailers);
  finish(helper.last.picker, B, 1, Status.RESOURCE_EXHAUSTED, trailers);
  const both = countPicks(helper.last.picker, 200);
  assert.equal((both[A] ?? 0) + (both[B] ?? 0), 200);
});

test('pushbackMs: integers only, capped; anything else is no pushback', () => {
  const rows: Array<[string | undefined, number | null]> = [
    ['0', 0],
    ['250', 250],
    ['99999999', 30_000],
    ['-1', null],
    ['1.5', null],
    ['soon', null],
    [undefined, null],
  ];
  for (const [value, want] of rows) {
    const md = new Metadata();
    if (value !== undefined) md.set('grpc-retry-pushback-ms', value);
    assert.equal(pushbackMs(md), want, String(value));
  }
});

test('deadline-aware picks (ewma): an endpoint predicted slower than the time left is skipped while another fits', (t) => {
  const clock = new ManualClock(1_000_000);
  // Scripted sampler: always samples A first, then B.
  const random = (): number => 0;
  const helper = new FakeHelper();
  const lb = new EwmaLoadBalancer(helper.asHelper(), { now: clock.now, random, wallNow: clock.now });
  t.after(() => lb.destroy());
  lb.updateAddressList(endpoints(A, B), EwmaConfig.createFromJson({ defaultRttMs: 100 }), {}, '');
  helper.connect(A);
  helper.connect(B);
  const picker = helper.last.picker as TwoChoicePicker;
  const [a, b] = picker.candidates.map((c) => c.stats);
  assert.ok(a !== undefined && b !== undefined);
  // A: estimate 300 ms, idle → cost 300. B: estimate 100 ms, 9 calls in flight → cost 1000.
  a.rttMs = 300;
  a.stampMs = clock.now();
  b.outstanding = 9;
  b.ended = 20; // B has answered calls before: it is not on its first one
  const withDeadline = (leftMs: number) => {
    const metadata = new Metadata();
    metadata.set(DEADLINE_METADATA_KEY, String(clock.now() + leftMs));
    return { metadata, extraPickInfo: {} };
  };
  assert.equal(keyOf(picker), A, 'no deadline: lowest cost');
  assert.equal(keyOf(picker, withDeadline(5000)), A, 'both fit: lowest cost');
  assert.equal(keyOf(picker, withDeadline(200)), B, 'A (300 ms) cannot make 200 ms; B (100 ms) can');
  assert.equal(keyOf(picker, withDeadline(50)), A, 'neither fits: lowest cost, as without a deadline');
  // P2C has no latency estimate: the deadline does not change its picks.
  const p = p2c({}, clock, random);
  t.after(() => p.lb.destroy());
  p.lb.updateAddressList(endpoints(C, D), p.config, {}, '');
  p.helper.connect(C);
  p.helper.connect(D);
  assert.equal(keyOf(p.helper.last.picker, withDeadline(1)), C);
});

test('outlierDetection config: A50 defaults, round trip, and fields named on error', () => {
  const cfg = parseOutlierDetection({ failurePercentageEjection: {} }, 'od');
  assert.deepEqual(cfg, {
    intervalMs: 10_000,
    baseEjectionTimeMs: 30_000,
    maxEjectionTimeMs: 300_000,
    maxEjectionPercent: 10,
    successRateEjection: undefined,
    failurePercentageEjection: {
      threshold: 85,
      enforcementPercentage: 100,
      minimumHosts: 5,
      requestVolume: 50,
    },
  });
  assert.equal(ejectionDurationMs(cfg, 3), 90_000);
  assert.equal(ejectionDurationMs(cfg, 20), 300_000);
  const json = EwmaConfig.createFromJson({
    outlierDetection: { successRateEjection: { stdevFactor: 1000 } },
  });
  const again = EwmaConfig.createFromJson(json.toJsonObject().grpc_kube_ewma);
  assert.deepEqual(again.toJsonObject(), json.toJsonObject());
  const bad: Array<[unknown, string]> = [
    [{ intervalMs: 0 }, 'grpc_kube_p2c.outlierDetection.intervalMs'],
    [{ maxEjectionPercent: 101 }, 'grpc_kube_p2c.outlierDetection.maxEjectionPercent'],
    [
      { failurePercentageEjection: { threshold: -1 } },
      'grpc_kube_p2c.outlierDetection.failurePercentageEjection.threshold',
    ],
    [{ successRateEjection: { stdev: 1 } }, 'grpc_kube_p2c.outlierDetection.successRateEjection.stdev'],
    [{ interval: '10s' }, 'grpc_kube_p2c.outlierDetection.interval'],
  ];
  for (const [value, field] of bad) {
    assert.throws(
      () => P2cConfig.createFromJson({ outlierDetection: value }),
      (err: unknown) => err instanceof InvalidOptionError && err.field === field,
      field,
    );
  }
});
