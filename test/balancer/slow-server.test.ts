// End to end with real grpc-js servers on 127.0.0.1: five servers, one answering 10× slower, a
// client with bounded concurrency. round_robin gives the slow one its 1/5; grpc_kube_p2c and
// grpc_kube_ewma must route around it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { registerPolicies } from 'grpc-kube/internal/balancer/index.js';
import { clientDefaults } from 'grpc-kube/internal/client/defaults.js';
import { echo, startEchoServer, type StartedServer } from '../server/echo.js';

// Loopback on a shared 2-core machine adds ~10 ms to every call, so the server-side times are
// large enough for the 10x ratio to survive that noise.
const FAST_MS = 10;
const SLOW_MS = 100;
const CALLS = 400;
const CONCURRENCY = 8;
/** Calls before counting starts: every endpoint connected, estimates learned. */
const WARMUP = 50;

async function run(
  target: string,
  lbPolicy: string,
): Promise<{ perServer: Record<string, number>; failed: number }> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), clientDefaults({ lbPolicy }));
  try {
    // Warm up: wait until the channel has connected at least once.
    await new Promise<void>((resolve, reject) =>
      client.waitForReady(Date.now() + 60_000, (e) => (e ? reject(e) : resolve())),
    );
    const perServer: Record<string, number> = {};
    let failed = 0;
    let issued = 0;
    const worker = async (): Promise<void> => {
      while (issued < WARMUP + CALLS) {
        const counted = issued >= WARMUP;
        issued++;
        const r = await echo(client, 'x', 30_000);
        if (r.code !== grpc.status.OK) failed++;
        else if (counted) perServer[r.body] = (perServer[r.body] ?? 0) + 1;
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    return { perServer, failed };
  } finally {
    client.close();
  }
}

test('p2c and peak-EWMA route around a 10× slower server; round_robin does not', async (t) => {
  registerPolicies();
  const servers: StartedServer[] = [];
  t.after(() => {
    for (const s of servers) s.server.forceShutdown();
  });
  for (let i = 0; i < 5; i++) {
    const name = i === 0 ? 'slow' : `fast${i}`;
    const ms = i === 0 ? SLOW_MS : FAST_MS;
    servers.push(
      await startEchoServer((_call, cb) => {
        setTimeout(() => cb(null, Buffer.from(name)), ms).unref();
      }),
    );
  }
  const target = `ipv4:${servers.map((s) => s.address).join(',')}`;
  const share = async (policy: string): Promise<number> => {
    const { perServer, failed } = await run(target, policy);
    assert.equal(failed, 0, `${policy}: no failed RPCs`);
    const total = Object.values(perServer).reduce((a, b) => a + b, 0);
    assert.equal(total, CALLS);
    t.diagnostic(`${policy}: ${JSON.stringify(perServer)}`);
    return (perServer.slow ?? 0) / total;
  };
  const rr = await share('round_robin');
  assert.ok(rr > 0.15, `round_robin control: slow share ${rr}`);
  // Here p2c gives the slow server ~5 %, peak-EWMA ~1.5 % (round_robin 20 %). A stall of the machine
  // delays every server alike and can blur one run's latencies, so a run above its bound is measured
  // again (at most 3 runs). Without the policy the share is 20 % every time, and the test still fails.
  for (const [policy, bound] of [
    ['grpc_kube_p2c', 0.12],
    ['grpc_kube_ewma', 0.08],
  ] as const) {
    const seen: number[] = [];
    for (let i = 0; i < 3 && (seen.at(-1) ?? 1) >= bound; i++) seen.push(await share(policy));
    assert.ok((seen.at(-1) ?? 1) < bound, `${policy} slow share ${seen.join(', ')} (bound ${bound})`);
  }
});
