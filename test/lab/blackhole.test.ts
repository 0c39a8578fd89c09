// The blackhole figures from an RPC record: failed RPCs in flight at the blackhole, failed ones started
// after it, when the last of those started (the clients stopped picking the pod), and the clients'
// keepalive window from their channel options.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blackholeFigures, blackholeLine, keepaliveWindowMs } from '@grpc-kube/lab/internal/lab/blackhole.js';
import { recordsFromRows } from '@grpc-kube/lab/internal/lab/metrics.js';
import { clientDefaults } from 'grpc-kube/internal/client/defaults.js';

test('blackholeFigures: in flight at the moment, started after it, and the last pick of the pod', () => {
  const records = recordsFromRows([
    { tMs: 100, pod: 'a', code: 'OK', latencyMs: 2 },
    { tMs: 200, pod: '', code: 'UNAVAILABLE', latencyMs: 3 }, // failed, ended before: another cause
    { tMs: 900, pod: '', code: 'DEADLINE_EXCEEDED', latencyMs: 1000 }, // in flight at 1000
    { tMs: 950, pod: 'b', code: 'OK', latencyMs: 80 }, // in flight at 1000 on another pod
    { tMs: 1010, pod: '', code: 'DEADLINE_EXCEEDED', latencyMs: 1000 },
    { tMs: 1300, pod: '', code: 'DEADLINE_EXCEEDED', latencyMs: 1000 },
    { tMs: 1400, pod: 'a', code: 'OK', latencyMs: 2 },
  ]);
  const b = blackholeFigures(records, { pod: 'p', atMs: 1000, unreadyAtMs: 1250 }, 15_000);
  assert.deepEqual(b, {
    pod: 'p',
    atMs: 1000,
    inFlight: 1,
    startedAfter: 2,
    failed: 4,
    detectionMs: 300,
    unreadyAfterMs: 250,
    keepaliveWindowMs: 15_000,
  });
  // The early failure is beyond both bounds' parts: the line says the bound did not hold.
  assert.match(
    blackholeLine('s', b),
    /failed 4 > 1 in flight \+ 2 started after; last pick 300 ms after \(within\)/,
  );
  const none = blackholeFigures(recordsFromRows([]), { pod: 'p', atMs: 10, unreadyAtMs: null }, null);
  assert.equal(none.detectionMs, 0);
  assert.equal(none.unreadyAfterMs, null);
  assert.match(blackholeLine('s', none), /failed 0 <= 0 in flight.*no keepalive/);
});

test('keepaliveWindowMs: time + timeout of the channel, grpc-js default timeout, none without pings', () => {
  assert.equal(keepaliveWindowMs(clientDefaults()), 15_000);
  assert.equal(keepaliveWindowMs({ 'grpc.keepalive_time_ms': 2000 }), 22_000);
  assert.equal(keepaliveWindowMs({}), null);
  assert.equal(keepaliveWindowMs({ 'grpc.keepalive_time_ms': 0 }), null);
});
