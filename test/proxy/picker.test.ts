// The proxy's per-RPC pickers with a seeded RNG and a manual clock: exact round-robin order, P2C's
// preference for fewer calls in flight, peak-EWMA's avoidance of a slow backend and its recovery
// once the estimate decays, and the grpc-timeout / grpc-message codecs the proxy writes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock, seededRandom } from 'grpc-kube/internal/balancer/runtime.js';
import {
  decodeGrpcMessage,
  encodeGrpcMessage,
  formatGrpcTimeout,
  parseGrpcTimeout,
} from '@grpc-kube/proxy/internal/grpc-wire.js';
import { createPicker, parseProxyPolicy, type ProxyPicker } from '@grpc-kube/proxy/internal/picker.js';
import { parseServiceAuthority } from '@grpc-kube/proxy/internal/target.js';

function backends(p: ProxyPicker, n: number): { name: string; stats: ReturnType<ProxyPicker['newStats']> }[] {
  return Array.from({ length: n }, (_, i) => ({ name: `b${i}`, stats: p.newStats() }));
}

test('round_robin: exact rotation from a seeded offset', () => {
  const clock = new ManualClock();
  const p = createPicker('round_robin', { now: clock.now, random: () => 0.5 });
  const bs = backends(p, 3);
  const order = Array.from({ length: 7 }, () => p.pick(bs)?.name);
  assert.deepEqual(order, ['b2', 'b0', 'b1', 'b2', 'b0', 'b1', 'b2']);
  assert.equal(p.pick([]), undefined);
});

test('p2c: of the two sampled, the one with fewer calls in flight wins; load spreads evenly', () => {
  const clock = new ManualClock();
  const p = createPicker('p2c', { now: clock.now, random: seededRandom(7) });
  const bs = backends(p, 3);
  // b0 holds 5 calls: it can only win a comparison it is not part of, i.e. never.
  for (let i = 0; i < 5; i++) p.begin((bs[0] as (typeof bs)[number]).stats);
  const counts: Record<string, number> = {};
  for (let i = 0; i < 300; i++) {
    const b = p.pick(bs) as (typeof bs)[number];
    counts[b.name] = (counts[b.name] ?? 0) + 1;
    p.end(p.begin(b.stats), 0);
  }
  assert.equal(counts.b0, undefined);
  assert.ok(Math.abs((counts.b1 ?? 0) - (counts.b2 ?? 0)) < 60, JSON.stringify(counts));
});

test('ewma: a slow backend is avoided, and tried again once its estimate decays', () => {
  const clock = new ManualClock(1000);
  const p = createPicker('ewma', { now: clock.now, random: seededRandom(3) }, { decayMs: 1000 });
  const bs = backends(p, 2);
  const [fast, slow] = bs as [(typeof bs)[number], (typeof bs)[number]];
  const sample = (b: (typeof bs)[number], ms: number): void => {
    const tok = p.begin(b.stats);
    clock.advance(ms);
    p.responded(tok);
    p.end(tok, 0);
  };
  sample(slow, 500);
  sample(fast, 5);
  for (let i = 0; i < 20; i++) assert.equal(p.pick(bs), fast);
  // A call still running on the fast one counts as a peak: 600 ms in flight beats the slow estimate.
  const hung = p.begin(fast.stats);
  clock.advance(600);
  assert.equal(p.pick(bs), slow);
  p.end(hung, 1); // CANCELLED gives no sample
  clock.advance(10_000);
  sample(fast, 50);
  assert.equal(p.pick(bs), slow, 'decayed to ~0, the slow one looks best again and is probed');
});

test('failures without an answer count as failurePenaltyMs for ewma', () => {
  const clock = new ManualClock(0);
  const p = createPicker('ewma', { now: clock.now, random: seededRandom(1) }, { failurePenaltyMs: 1000 });
  const [a, b] = backends(p, 2) as [
    { name: string; stats: ReturnType<ProxyPicker['newStats']> },
    { name: string; stats: ReturnType<ProxyPicker['newStats']> },
  ];
  p.end(p.begin(a.stats), 14);
  assert.ok(a.stats.rttMs >= 1000);
  assert.equal(p.pick([a, b]), b);
  assert.throws(() => parseProxyPolicy('least'), { code: 'GK_ERR_INVALID_OPTION' });
});

test('grpc-timeout and grpc-message codecs', () => {
  assert.equal(parseGrpcTimeout('250m'), 250);
  assert.equal(parseGrpcTimeout('2S'), 2000);
  assert.equal(parseGrpcTimeout('1H'), 3_600_000);
  assert.equal(parseGrpcTimeout('100u'), 0.1);
  assert.equal(parseGrpcTimeout('123456789m'), undefined);
  assert.equal(parseGrpcTimeout('5x'), undefined);
  assert.equal(formatGrpcTimeout(1.5), '1500u');
  assert.equal(formatGrpcTimeout(250_000), '250000m');
  assert.equal(formatGrpcTimeout(200_000_000), '200000S');
  for (const v of [0.001, 1, 99.9, 1234.5678, 86_400_000]) {
    assert.ok((parseGrpcTimeout(formatGrpcTimeout(v)) as number) >= v, String(v));
  }
  assert.equal(encodeGrpcMessage('ok 100% ü\n'), 'ok 100%25 %C3%BC%0A');
  assert.equal(decodeGrpcMessage(encodeGrpcMessage('ok 100% ü\n')), 'ok 100% ü\n');
});

test('authorities: service.namespace:port, the cluster DNS form, the default namespace, and bad ones', () => {
  assert.deepEqual(parseServiceAuthority('greeter.prod:8080', 'default'), {
    namespace: 'prod',
    service: 'greeter',
    port: { kind: 'number', port: 8080 },
  });
  assert.deepEqual(parseServiceAuthority('greeter.prod.svc.cluster.local:grpc', 'default'), {
    namespace: 'prod',
    service: 'greeter',
    port: { kind: 'name', name: 'grpc' },
  });
  assert.deepEqual(parseServiceAuthority('greeter:80', 'apps'), {
    namespace: 'apps',
    service: 'greeter',
    port: { kind: 'number', port: 80 },
  });
  assert.match(parseServiceAuthority('greeter.prod', 'default') as string, /no port/);
  assert.match(parseServiceAuthority('a.b.c:80', 'default') as string, /not service.namespace/);
  assert.match(parseServiceAuthority('a.b:99999', 'default') as string, /bad port/);
});
