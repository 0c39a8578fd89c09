// State-machine tests of grpc_kube_p2c and grpc_kube_ewma on fake subchannels: connectivity
// aggregation, draining/unready exclusion, exact pick sequences and ratios under a seeded or
// scripted RNG, peak-EWMA arithmetic, slow start, panic threshold and zone preference.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { connectivityState as ConnectivityState } from '@grpc/grpc-js';
import {
  PickResultType,
  statusOrFromError,
  parseLoadBalancingConfig,
} from 'grpc-kube/internal/adapter/grpc-js.js';
import { status as Status, Metadata } from '@grpc/grpc-js';
import {
  EwmaConfig,
  EwmaLoadBalancer,
  ManualClock,
  P2cConfig,
  P2cLoadBalancer,
  registerPolicies,
  seededRandom,
  slowStartFactor,
  ewmaServiceConfigEntry,
  p2cServiceConfigEntry,
  BALANCER_CHANNEL_NAME,
  type BalancerEvent,
} from 'grpc-kube/internal/balancer/index.js';
import { decayedRttMs, observeRtt } from 'grpc-kube/internal/balancer/ewma.js';
import { EndpointStats, TwoChoicePicker } from 'grpc-kube/internal/balancer/endpoint-balancer.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { FakeHelper, countPicks, endpoints, infoOptions, pickOnce, scriptedRandom } from './fakes.js';

const A = '10.0.0.1:80';
const B = '10.0.0.2:80';
const C = '10.0.0.3:80';
const D = '10.0.0.4:80';

function p2c(json: object = {}, random: () => number = seededRandom(1), clock = new ManualClock()) {
  const helper = new FakeHelper();
  const lb = new P2cLoadBalancer(helper.asHelper(), { now: clock.now, random });
  return { helper, lb, config: P2cConfig.createFromJson(json), clock };
}

function ewma(json: object = {}, random: () => number = seededRandom(1), clock = new ManualClock()) {
  const helper = new FakeHelper();
  const lb = new EwmaLoadBalancer(helper.asHelper(), { now: clock.now, random });
  return { helper, lb, config: EwmaConfig.createFromJson(json), clock };
}

test('config: valid JSON round-trips through createFromJson / toJsonObject', () => {
  const cases: Array<[typeof P2cConfig | typeof EwmaConfig, object, object]> = [
    [P2cConfig, {}, {}],
    [
      P2cConfig,
      { localZone: 'z1', panicThresholdPercent: 50 },
      { localZone: 'z1', panicThresholdPercent: 50 },
    ],
    [
      P2cConfig,
      { slowStart: { windowMs: 30000 } },
      { slowStart: { windowMs: 30000, aggression: 1, minWeightPercent: 10 } },
    ],
    [P2cConfig, { slowStart: { windowMs: 0 } }, {}],
    [EwmaConfig, {}, {}],
    [EwmaConfig, { decayMs: 5000, defaultRttMs: 2 }, { decayMs: 5000, defaultRttMs: 2 }],
    [
      EwmaConfig,
      { decayMs: 10000, slowStart: { windowMs: 1000, aggression: 2, minWeightPercent: 5 } },
      { slowStart: { windowMs: 1000, aggression: 2, minWeightPercent: 5 } },
    ],
  ];
  for (const [cls, input, inner] of cases) {
    const cfg = cls.createFromJson(input);
    const json = cfg.toJsonObject() as Record<string, object>;
    const name = cfg.getLoadBalancerName();
    assert.deepEqual(json, { [name]: inner }, JSON.stringify(input));
    const again = cls.createFromJson(json[name]).toJsonObject();
    assert.deepEqual(again, json);
  }
});

test('config: bad fields are rejected with an InvalidOptionError naming the field', () => {
  const cases: Array<[typeof P2cConfig | typeof EwmaConfig, unknown, string]> = [
    [P2cConfig, { localzone: 'a' }, 'grpc_kube_p2c.localzone'],
    [P2cConfig, { localZone: 3 }, 'grpc_kube_p2c.localZone'],
    [P2cConfig, { panicThresholdPercent: 101 }, 'grpc_kube_p2c.panicThresholdPercent'],
    [P2cConfig, { panicThresholdPercent: '50' }, 'grpc_kube_p2c.panicThresholdPercent'],
    [P2cConfig, { slowStart: {} }, 'grpc_kube_p2c.slowStart.windowMs'],
    [P2cConfig, { slowStart: { windowMs: -1 } }, 'grpc_kube_p2c.slowStart.windowMs'],
    [P2cConfig, { slowStart: { windowMs: 10, aggression: 0 } }, 'grpc_kube_p2c.slowStart.aggression'],
    [P2cConfig, { slowStart: { windowMs: 10, minWeight: 5 } }, 'grpc_kube_p2c.slowStart.minWeight'],
    [P2cConfig, { slowStart: [] }, 'grpc_kube_p2c.slowStart'],
    [P2cConfig, 'fast', 'grpc_kube_p2c'],
    [EwmaConfig, { decayMs: 0 }, 'grpc_kube_ewma.decayMs'],
    [EwmaConfig, { defaultRttMs: Number.NaN }, 'grpc_kube_ewma.defaultRttMs'],
    [EwmaConfig, { decay: 10 }, 'grpc_kube_ewma.decay'],
  ];
  for (const [cls, input, field] of cases) {
    assert.throws(
      () => cls.createFromJson(input),
      (err: unknown) =>
        err instanceof InvalidOptionError && err.field === field && err.code === 'GK_ERR_INVALID_OPTION',
      `${JSON.stringify(input)} → ${field}`,
    );
  }
});

test('registerPolicies: grpc-js parses our service-config entries and reports bad fields by name', () => {
  registerPolicies();
  registerPolicies();
  const p = parseLoadBalancingConfig(p2cServiceConfigEntry({ localZone: 'a' }));
  assert.ok(p instanceof P2cConfig);
  assert.equal(p.common.localZone, 'a');
  const e = parseLoadBalancingConfig(ewmaServiceConfigEntry({ decayMs: 2000 }));
  assert.ok(e instanceof EwmaConfig);
  assert.equal(e.decayMs, 2000);
  assert.throws(
    () => parseLoadBalancingConfig({ grpc_kube_ewma: { decayMs: -5 } }),
    /grpc_kube_ewma\.decayMs/,
  );
  assert.throws(() => ewmaServiceConfigEntry({ decayMs: -5 }), InvalidOptionError);
});

test('connectivity: CONNECTING queues, first READY endpoint takes every pick, all failed → TRANSIENT_FAILURE', () => {
  const { helper, lb, config } = p2c();
  lb.updateAddressList(endpoints(A, B, C), config, {}, '');
  assert.equal(helper.last.state, ConnectivityState.CONNECTING);
  assert.equal(pickOnce(helper.last.picker).key, 'QUEUE');
  helper.connect(B);
  assert.equal(helper.last.state, ConnectivityState.READY);
  assert.deepEqual(countPicks(helper.last.picker, 50), { [B]: 50 });
  for (const k of [A, C]) helper.sc(k).setState(ConnectivityState.TRANSIENT_FAILURE, `connect ${k} refused`);
  assert.equal(helper.last.state, ConnectivityState.READY);
  helper.sc(B).setState(ConnectivityState.IDLE);
  assert.ok(helper.reresolutions >= 1, 'losing a READY endpoint asks the resolver again');
  helper.sc(B).setState(ConnectivityState.CONNECTING);
  helper.sc(B).setState(ConnectivityState.TRANSIENT_FAILURE, 'connect B refused');
  assert.equal(helper.last.state, ConnectivityState.TRANSIENT_FAILURE);
  const fail = pickOnce(helper.last.picker);
  assert.equal(fail.key, 'FAIL');
  assert.equal(fail.result.status?.code, Status.UNAVAILABLE);
  assert.match(
    fail.result.status?.details ?? '',
    /^grpc_kube_p2c: could not connect to any of 3 ready endpoints; last error: .*connect 10\.0\.0\.\d:80 refused/,
  );
  lb.destroy();
});

test('connectivity: resolver error with no endpoints → TRANSIENT_FAILURE carrying its status; empty list → clear message', () => {
  const { helper, lb, config } = p2c();
  lb.updateAddressList(
    statusOrFromError({ code: Status.UNAVAILABLE, details: 'kube API down', metadata: new Metadata() }),
    config,
    {},
    '',
  );
  assert.equal(helper.last.state, ConnectivityState.TRANSIENT_FAILURE);
  assert.equal(pickOnce(helper.last.picker).result.status?.details, 'kube API down');
  lb.updateAddressList(endpoints(), config, {}, 'service has no pods');
  assert.equal(helper.last.state, ConnectivityState.TRANSIENT_FAILURE);
  assert.match(helper.last.error ?? '', /returned no endpoints \(service has no pods\)/);
  lb.destroy();
});

test('draining and unready endpoints are never picked, even when connected', () => {
  for (const make of [p2c, ewma]) {
    const { helper, lb, config } = make();
    const opts = infoOptions([{ key: A }, { key: B, state: 'draining' }, { key: C, state: 'unready' }]);
    lb.updateAddressList(endpoints(A, B, C), config, opts, '');
    for (const k of [A, B, C]) helper.connect(k);
    assert.deepEqual(countPicks(helper.last.picker, 200), { [A]: 200 });
    lb.updateAddressList(
      endpoints(A, B, C),
      config,
      infoOptions([
        { key: A, state: 'draining' },
        { key: B, state: 'draining' },
        { key: C, state: 'unready' },
      ]),
      '',
    );
    assert.equal(helper.last.state, ConnectivityState.TRANSIENT_FAILURE);
    assert.match(
      helper.last.error ?? '',
      /none of the 3 endpoints may take new RPCs \(2 draining, 1 unready\)/,
    );
    lb.destroy();
  }
});

test('an endpoint removed from the list is released and never picked again', () => {
  const { helper, lb, config } = p2c();
  lb.updateAddressList(endpoints(A, B), config, {}, '');
  helper.connect(A);
  helper.connect(B);
  lb.updateAddressList(endpoints(A), config, {}, '');
  assert.equal(helper.sc(B).refs, 0);
  assert.deepEqual(countPicks(helper.last.picker, 20), { [A]: 20 });
  lb.destroy();
  assert.equal(helper.sc(A).refs, 0);
  const reported = helper.updates.length;
  helper.sc(A).setState(ConnectivityState.IDLE);
  assert.equal(helper.updates.length, reported, 'no state reported after destroy');
});

test('p2c: exact pick sequence with a scripted RNG and calls held open', () => {
  // Three endpoints A, B, C (index 0, 1, 2). Uniform sampling draws i = floor(r*3), then
  // j = floor(r*2) skipping i. Each row: the two random values, and the endpoint that must win.
  const rows: Array<[number, number, string]> = [
    [0.0, 0.0, A], // A vs B, all idle: tie → first sampled (A). A=1
    [0.0, 0.0, B], // A vs B: B has fewer. B=1
    [0.9, 0.9, C], // C vs B: C fewer. C=1
    [0.5, 0.9, B], // B vs C: tie → first (B). B=2
    [0.5, 0.1, A], // B vs A: A fewer. A=2
    [0.9, 0.1, C], // C vs A: C (1 in flight) beats A (2). C=2
  ];
  const random = scriptedRandom(rows.flatMap(([r1, r2]) => [r1, r2]));
  const { helper, lb, config } = p2c({}, random);
  lb.updateAddressList(endpoints(A, B, C), config, {}, '');
  for (const k of [A, B, C]) helper.connect(k);
  const picker = helper.last.picker;
  const got = rows.map(() => pickOnce(picker, 'hold').key);
  assert.deepEqual(
    got,
    rows.map((r) => r[2]),
  );
  lb.destroy();
});

test('p2c: an endpoint with calls stuck in flight stops receiving picks; the rest split evenly', () => {
  const { helper, lb, config } = p2c({}, seededRandom(42));
  lb.updateAddressList(endpoints(A, B, C, D), config, {}, '');
  // A connects first and takes five slow calls that stay in flight.
  helper.connect(A);
  const stuck = [0, 1, 2, 3, 4].map(() => pickOnce(helper.last.picker, 'hold'));
  assert.deepEqual(
    stuck.map((s) => s.key),
    [A, A, A, A, A],
  );
  for (const k of [B, C, D]) helper.connect(k);
  const picker = helper.last.picker;
  const counts = countPicks(picker, 3000);
  assert.equal(counts[A], undefined, 'A (5 in flight) loses every comparison against idle endpoints');
  for (const k of [B, C, D]) {
    const n = counts[k] ?? 0;
    assert.ok(n > 850 && n < 1150, `${k}: ${n} of 3000`);
  }
  for (const s of stuck) s.result.onCallEnded?.(0, '', new Metadata());
  const after = countPicks(picker, 4000);
  assert.ok((after[A] ?? 0) > 850, `A is picked again once its calls end: ${after[A]}`);
  lb.destroy();
});

test('p2c: concurrent calls held open stay balanced within one call per endpoint', () => {
  const { helper, lb, config } = p2c({}, seededRandom(7));
  lb.updateAddressList(endpoints(A, B, C, D), config, {}, '');
  for (const k of [A, B, C, D]) helper.connect(k);
  const counts = countPicks(helper.last.picker, 400, 'hold');
  const values = [A, B, C, D].map((k) => counts[k] ?? 0);
  assert.equal(
    values.reduce((a, b) => a + b),
    400,
  );
  assert.ok(Math.max(...values) - Math.min(...values) <= 3, `spread ${values}`);
  lb.destroy();
});

test('ewma: estimate arithmetic (peak, time-weighted average, decay toward zero)', () => {
  const tau = 1000;
  const rows: Array<{ at: number; sample?: number; expect: number }> = [
    { at: 0, expect: 30 }, // initial defaultRtt
    { at: 0, sample: 100, expect: 100 }, // above the estimate: jumps at once
    { at: 1000, expect: 100 * Math.exp(-1) }, // no samples: decays
    { at: 1000, sample: 10, expect: 100 * Math.exp(-1) + 10 * (1 - Math.exp(-1)) },
    { at: 1000, sample: 5, expect: 100 * Math.exp(-1) + 10 * (1 - Math.exp(-1)) }, // zero elapsed: no weight
  ];
  const stats = new EndpointStats(30, 0);
  for (const row of rows) {
    if (row.sample !== undefined) observeRtt(stats, row.sample, tau, row.at);
    const got = decayedRttMs(stats, tau, row.at);
    assert.ok(
      Math.abs(got - row.expect) < 1e-9,
      `at ${row.at} sample ${row.sample}: ${got} != ${row.expect}`,
    );
  }
});

test('ewma: picks the faster endpoint, reacts to a latency peak at once, and weighs calls in flight', () => {
  const clock = new ManualClock(1000);
  const { helper, lb, config } = ewma({ decayMs: 10_000, defaultRttMs: 1 }, seededRandom(3), clock);
  lb.updateAddressList(endpoints(A, B), config, {}, '');
  helper.connect(A);
  helper.connect(B);
  const picker = helper.last.picker;
  const latency: Record<string, number> = { [A]: 100, [B]: 10 };
  const call = (): string => {
    const { key, result } = pickOnce(picker, 'none');
    result.onCallStarted?.();
    clock.advance(latency[key] ?? 0);
    result.onCallEnded?.(0, '', new Metadata());
    return key;
  };
  // Both start at 1 ms; the first call to each teaches it its latency (A 100 ms, B 10 ms).
  const learned = new Set<string>();
  for (let i = 0; i < 20 && learned.size < 2; i++) learned.add(call());
  assert.equal(learned.size, 2);
  assert.deepEqual(countPicks(picker, 100), { [B]: 100 }, 'B (10 ms) wins every comparison');
  // B spikes to 500 ms once: its estimate jumps past A's, and the next pick moves to A at once.
  latency[B] = 500;
  assert.equal(call(), B);
  assert.equal(pickOnce(picker).key, A);
  lb.destroy();

  // Calls in flight multiply the cost: with equal estimates, held calls stay balanced within one.
  const { helper: h2, lb: lb2, config: c2 } = ewma({ defaultRttMs: 10 }, seededRandom(5), clock);
  lb2.updateAddressList(endpoints(A, B), c2, {}, '');
  h2.connect(A);
  h2.connect(B);
  const held: Record<string, number> = { [A]: 0, [B]: 0 };
  for (let i = 0; i < 50; i++) {
    const k = pickOnce(h2.last.picker, 'hold').key;
    held[k] = (held[k] ?? 0) + 1;
    assert.ok(Math.abs((held[A] ?? 0) - (held[B] ?? 0)) <= 1, `after ${i + 1}: ${JSON.stringify(held)}`);
  }
  lb2.destroy();
});

test('slow start: Envoy factor max(minWeight, (t/window)^(1/aggression))', () => {
  const rows: Array<[number, { windowMs: number; aggression: number; minWeightPercent: number }, number]> = [
    [0, { windowMs: 10_000, aggression: 1, minWeightPercent: 10 }, 0.1],
    [5_000, { windowMs: 10_000, aggression: 1, minWeightPercent: 10 }, 0.5],
    [9_999, { windowMs: 10_000, aggression: 1, minWeightPercent: 10 }, 0.9999],
    [10_000, { windowMs: 10_000, aggression: 1, minWeightPercent: 10 }, 1],
    [2_500, { windowMs: 10_000, aggression: 2, minWeightPercent: 10 }, 0.5],
    [1_000, { windowMs: 10_000, aggression: 1, minWeightPercent: 50 }, 0.5],
    [-5, { windowMs: 10_000, aggression: 1, minWeightPercent: 0 }, 0],
  ];
  for (const [age, cfg, want] of rows) {
    assert.ok(Math.abs(slowStartFactor(age, cfg) - want) < 1e-9, `${age} ${JSON.stringify(cfg)}`);
  }
});

test('slow start: a new endpoint ramps up over the window; endpoints of the first list start warm', () => {
  const clock = new ManualClock(0);
  const { helper, lb, config } = p2c({ slowStart: { windowMs: 10_000 } }, seededRandom(11), clock);
  lb.updateAddressList(endpoints(A, B), config, {}, '');
  helper.connect(A);
  helper.connect(B);
  assert.deepEqual((helper.last.picker as TwoChoicePicker).weightsAt(clock.now()), [1, 1]);
  clock.advance(60_000);
  lb.updateAddressList(endpoints(A, B, C), config, {}, '');
  clock.advance(1_000);
  helper.connect(C); // ramp starts when C is connected and ready
  const picker = helper.last.picker as TwoChoicePicker;
  assert.deepEqual(picker.weightsAt(clock.now()), [1, 1, 0.1]);
  // All calls end at once, so every comparison is a tie and the first sampled endpoint wins:
  // C's share is its sampling weight, 0.1 / 2.1 ≈ 4.8 %.
  const early = countPicks(picker, 4200);
  assert.ok((early[C] ?? 0) > 120 && (early[C] ?? 0) < 300, `C early: ${early[C]}`);
  clock.advance(5_000);
  assert.deepEqual(picker.weightsAt(clock.now()), [1, 1, 0.5]);
  const mid = countPicks(picker, 2500);
  assert.ok((mid[C] ?? 0) > 380 && (mid[C] ?? 0) < 620, `C mid: ${mid[C]} (expect ~500)`);
  clock.advance(5_000);
  const late = countPicks(picker, 3000);
  assert.ok((late[C] ?? 0) > 880 && (late[C] ?? 0) < 1120, `C warm: ${late[C]} (expect ~1000)`);
  // Going unready and coming back restarts the ramp.
  lb.updateAddressList(
    endpoints(A, B, C),
    config,
    infoOptions([{ key: A }, { key: B }, { key: C, state: 'unready' }]),
    '',
  );
  clock.advance(100);
  lb.updateAddressList(endpoints(A, B, C), config, infoOptions([{ key: A }, { key: B }, { key: C }]), '');
  assert.deepEqual((helper.last.picker as TwoChoicePicker).weightsAt(clock.now()), [1, 1, 0.1]);
  lb.destroy();
});

test('panic threshold: below it, picks spread over all eligible endpoints (and queue on unconnected ones)', () => {
  const rows: Array<[number, boolean]> = [
    [0, false],
    [25, false], // 1 of 4 connected = 25 %: not below 25
    [50, true],
  ];
  for (const [threshold, panics] of rows) {
    const { helper, lb, config } = p2c({ panicThresholdPercent: threshold }, seededRandom(9));
    lb.updateAddressList(
      endpoints(A, B, C, D),
      config,
      infoOptions([{ key: A }, { key: B }, { key: C }, { key: D, state: 'draining' }]),
      '',
    );
    helper.connect(A);
    helper.connect(D);
    // A connected; B, C connecting; D draining (never eligible) → 1 of 3 eligible connected = 33 %.
    const counts = countPicks(helper.last.picker, 300);
    assert.equal(counts[D], undefined);
    if (panics) {
      assert.ok((counts.QUEUE ?? 0) > 150, `threshold ${threshold}: ${JSON.stringify(counts)}`);
    } else {
      assert.deepEqual(counts, { [A]: 300 }, `threshold ${threshold}`);
    }
    lb.destroy();
  }
});

test('zone preference: local endpoints first, by hints when every endpoint has them, else all zones', () => {
  const rows: Array<{
    name: string;
    info: Parameters<typeof infoOptions>[0];
    connected: string[];
    want: string[];
  }> = [
    {
      name: 'by zone',
      info: [
        { key: A, zone: 'a' },
        { key: B, zone: 'b' },
        { key: C, zone: 'b' },
      ],
      connected: [A, B, C],
      want: [A],
    },
    {
      name: 'local zone not connected → all zones',
      info: [
        { key: A, zone: 'a' },
        { key: B, zone: 'b' },
        { key: C, zone: 'b' },
      ],
      connected: [B, C],
      want: [B, C],
    },
    {
      name: 'local endpoint draining → all zones',
      info: [
        { key: A, zone: 'a', state: 'draining' },
        { key: B, zone: 'b' },
        { key: C, zone: 'c' },
      ],
      connected: [A, B, C],
      want: [B, C],
    },
    {
      name: 'hints win over zone when all have them',
      info: [
        { key: A, zone: 'a', zoneHints: ['b'] },
        { key: B, zone: 'b', zoneHints: ['a'] },
        { key: C, zone: 'b', zoneHints: ['b'] },
      ],
      connected: [A, B, C],
      want: [B],
    },
    {
      name: 'partial hints are ignored (kube-proxy rule)',
      info: [
        { key: A, zone: 'a' },
        { key: B, zone: 'b', zoneHints: ['a'] },
        { key: C, zone: 'b' },
      ],
      connected: [A, B, C],
      want: [A],
    },
  ];
  for (const row of rows) {
    const { helper, lb, config } = p2c({ localZone: 'a' }, seededRandom(13));
    lb.updateAddressList(endpoints(A, B, C), config, infoOptions(row.info), '');
    for (const k of row.connected) helper.connect(k);
    const counts = countPicks(helper.last.picker, 300);
    assert.deepEqual(Object.keys(counts).sort(), [...row.want].sort(), row.name);
    lb.destroy();
  }
});

test('picks never throw and report COMPLETE with the hooks wired', () => {
  const { helper, lb, config } = ewma();
  lb.updateAddressList(endpoints(A), config, {}, '');
  helper.connect(A);
  const r = helper.last.picker.pick({ metadata: new Metadata(), extraPickInfo: {} });
  assert.equal(r.pickResultType, PickResultType.COMPLETE);
  assert.equal(typeof r.onCallStarted, 'function');
  assert.equal(typeof r.onCallEnded, 'function');
  // Ending a call that never started (grpc-js never does this) must not corrupt the counts.
  r.onCallEnded?.(0, '', new Metadata());
  lb.destroy();
});

test('diagnostics: each new picker is published on grpc-kube:balancer with its shape', (t) => {
  const events: BalancerEvent[] = [];
  const onMessage = (m: unknown): void => {
    events.push(m as BalancerEvent);
  };
  diagnostics.subscribe(BALANCER_CHANNEL_NAME, onMessage);
  t.after(() => diagnostics.unsubscribe(BALANCER_CHANNEL_NAME, onMessage));
  const { helper, lb, config } = p2c({ panicThresholdPercent: 60, localZone: 'a' });
  lb.updateAddressList(
    endpoints(A, B, C),
    config,
    infoOptions([{ key: A, zone: 'a' }, { key: B, zone: 'a' }, { key: C }]),
    '',
  );
  helper.connect(A);
  assert.deepEqual(events.at(-1), {
    policy: 'grpc_kube_p2c',
    state: 'READY',
    endpoints: 3,
    error: null,
    candidates: 2,
    panic: true,
    localOnly: true,
    ejected: 0,
  });
  helper.connect(B);
  assert.deepEqual(
    { candidates: events.at(-1)?.candidates, panic: events.at(-1)?.panic },
    { candidates: 2, panic: false },
  );
  lb.destroy();
});

test('ewma: a fast UNAVAILABLE counts as failurePenaltyMs; CANCELLED counts only as a lower bound', () => {
  const rows: Array<{ code: number; tookMs: number; penalty?: number; want: number }> = [
    { code: Status.OK, tookMs: 2, want: 10 * Math.exp(-2 / 10_000) + 2 * (1 - Math.exp(-2 / 10_000)) },
    { code: Status.UNAVAILABLE, tookMs: 2, want: 1000 },
    { code: Status.RESOURCE_EXHAUSTED, tookMs: 2, penalty: 250, want: 250 },
    {
      code: Status.UNAVAILABLE,
      tookMs: 2,
      penalty: 0,
      want: 10 * Math.exp(-2 / 10_000) + 2 * (1 - Math.exp(-2 / 10_000)),
    },
    { code: Status.INTERNAL, tookMs: 50, want: 50 }, // application errors are plain samples
    // A cancelled call is a lower bound: 5 ms under a 10 ms estimate says nothing, 500 ms is a peak.
    { code: Status.CANCELLED, tookMs: 5, want: 10 },
    { code: Status.CANCELLED, tookMs: 500, want: 500 },
  ];
  for (const row of rows) {
    const clock = new ManualClock(0);
    const json =
      row.penalty === undefined ? { defaultRttMs: 10 } : { defaultRttMs: 10, failurePenaltyMs: row.penalty };
    const { helper, lb, config } = ewma(json, seededRandom(1), clock);
    lb.updateAddressList(endpoints(A), config, {}, '');
    helper.connect(A);
    const r = helper.last.picker.pick({ metadata: new Metadata(), extraPickInfo: {} });
    r.onCallStarted?.();
    clock.advance(row.tookMs);
    r.onCallEnded?.(row.code, '', new Metadata());
    const stats = (helper.last.picker as TwoChoicePicker).candidates[0]?.stats as EndpointStats;
    assert.equal(stats.outstanding, 0);
    assert.ok(Math.abs(stats.rttMs - row.want) < 1e-9, `${Status[row.code]}: ${stats.rttMs} != ${row.want}`);
    lb.destroy();
  }
  const cfg = EwmaConfig.createFromJson({ failurePenaltyMs: 0 });
  assert.deepEqual(cfg.toJsonObject(), { grpc_kube_ewma: { failurePenaltyMs: 0 } });
  assert.throws(() => EwmaConfig.createFromJson({ failurePenaltyMs: -1 }), {
    field: 'grpc_kube_ewma.failurePenaltyMs',
  });
});

test('ewma: a call in flight longer than the estimate counts before it ends', () => {
  const clock = new ManualClock(0);
  const { helper, lb, config } = ewma({ defaultRttMs: 30 }, scriptedRandom([0, 0]), clock);
  lb.updateAddressList(endpoints(A, B), config, {}, '');
  helper.connect(A);
  helper.connect(B);
  const picker = helper.last.picker as TwoChoicePicker;
  const [a, b] = picker.candidates.map((c) => c.stats) as [EndpointStats, EndpointStats];
  // A: one call stuck for 500 ms. B: three calls that just started.
  const stuck = pickOnce(picker, 'hold');
  assert.equal(stuck.key, A);
  clock.advance(500);
  for (let i = 0; i < 3; i++) {
    const r = helper.last.picker.pick({ metadata: new Metadata(), extraPickInfo: {} });
    assert.equal((r.subchannel as unknown as { address: string }).address, B, `call ${i}`);
    r.onCallStarted?.();
  }
  assert.equal(a.outstanding, 1);
  assert.equal(b.outstanding, 3);
  assert.equal(a.oldestInflightMs(clock.now()), 500);
  // Without the in-flight age A would cost 30·e^(−0.05)·2 ≈ 57 and win against B's 30·4 = 120.
  assert.equal(pickOnce(picker, 'none').key, B);
  stuck.result.onCallEnded?.(Status.OK, '', new Metadata());
  assert.equal(a.inflight.size, 0);
  assert.equal(a.rttMs, 500, 'the finished call is a peak sample');
  lb.destroy();
});

test('an endpoint that has finished no call yet takes one call at a time while another can take it', () => {
  // The slow-pod lab run: at start every endpoint carries only the default estimate; A answers its
  // first call in 100 ms while B's first call is still running. B must not win further calls on its
  // default estimate — in the lab, B was the 10× slower pod and each such call missed its deadline.
  for (const make of [ewma, p2c]) {
    const clock = new ManualClock(0);
    const { helper, lb, config } = make({}, scriptedRandom([0, 0]), clock); // samples A, then B
    lb.updateAddressList(endpoints(A, B), config, {}, '');
    helper.connect(A);
    helper.connect(B);
    const picker = helper.last.picker;
    const first = pickOnce(picker, 'hold');
    assert.equal(first.key, A, 'idle tie: first sampled');
    const probe = pickOnce(picker, 'hold');
    assert.equal(probe.key, B);
    clock.advance(100);
    first.result.onCallEnded?.(Status.OK, '', new Metadata());
    // A (answered, now 2 calls in flight) against B (one call of 100 ms, no answer yet): A each time.
    // Without the rule, EWMA costs A 100·3 = 300 against B's 100·2 = 200, and P2C counts 2 against 1.
    const got = [0, 1, 2].map(() => pickOnce(picker, 'hold').key);
    assert.deepEqual(got, [A, A, A], make.name);
    // B's first answer ends its probation; it competes on its figures again.
    clock.advance(20);
    probe.result.onCallEnded?.(Status.OK, '', new Metadata());
    assert.equal(pickOnce(picker, 'hold').key, B, make.name);
    lb.destroy();
  }
});
