// clientDefaults()'s resilience pieces against real grpc-js servers on 127.0.0.1: the A6 retry budget
// (attempts the server sees vs RPCs during an outage, hand-worked), the interceptor that tells
// pickers each call's deadline and identity, retries and hedges that go to a server the call has not
// tried, and outlier detection ejecting a failing server under round_robin (grpc-js's
// outlier_detection wrapping it) and under grpc_kube_p2c (our own).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import 'grpc-kube/internal/balancer/index.js';
import { clientDefaults, defaultServiceConfig } from 'grpc-kube/internal/client/defaults.js';
import { DEADLINE_METADATA_KEY } from 'grpc-kube/internal/balancer/endpoint-balancer.js';
import { CALL_ID_METADATA_KEY } from 'grpc-kube/internal/balancer/attempts.js';
import { parseLoadBalancingConfig } from 'grpc-kube/internal/adapter/grpc-js.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { echo, ECHO_PATH, startEchoServer, type StartedServer } from '../server/echo.js';
import { until } from '../helpers/wait.js';

const fastRetry = { initialBackoffMs: 1, maxBackoffMs: 2 };

async function outage(t: test.TestContext): Promise<{ server: StartedServer; attempts: () => number }> {
  let attempts = 0;
  const server = await startEchoServer((_call, cb) => {
    attempts++;
    cb({ code: grpc.status.UNAVAILABLE, details: 'down' });
  });
  t.after(() => server.server.forceShutdown());
  return { server, attempts: () => attempts };
}

test('retry budget: during an outage 50 RPCs cost 58 attempts (250 without the budget)', async (t) => {
  const { server, attempts } = await outage(t);
  const run = async (opts: Parameters<typeof clientDefaults>[0]): Promise<number> => {
    const client = new grpc.Client(server.address, grpc.credentials.createInsecure(), clientDefaults(opts));
    t.after(() => client.close());
    const before = attempts();
    // One after the other: the bucket is per channel, so the order of its draws is exact.
    for (let i = 0; i < 50; i++) assert.equal((await echo(client, 'x')).code, grpc.status.UNAVAILABLE);
    return attempts() - before;
  };
  // Bucket 20; a failed attempt costs a token, then a retry needs more than 10 left. RPC 1 makes 5
  // attempts (20 → 19, 18, 17, 16, 15), RPC 2 too (→ 14, 13, 12, 11, 10), every later RPC one
  // (10 → 9 → … → 0). 50 RPCs: 5 + 5 + 48 = 58 attempts, 8 retries (16 % of the RPCs).
  assert.equal(await run({ retry: fastRetry }), 58);
  assert.equal(await run({ retry: fastRetry, retryThrottling: false }), 250);
});

test('retry budget: successes refill it at tokenRatio per RPC', async (t) => {
  let attempts = 0;
  let failing = true;
  const server = await startEchoServer((_call, cb) => {
    attempts++;
    if (failing) cb({ code: grpc.status.UNAVAILABLE, details: 'down' });
    else cb(null, Buffer.from('ok'));
  });
  t.after(() => server.server.forceShutdown());
  const client = new grpc.Client(
    server.address,
    grpc.credentials.createInsecure(),
    clientDefaults({ retry: fastRetry }),
  );
  t.after(() => client.close());
  const phase = async (ok: number, thenFail: boolean): Promise<number> => {
    failing = false;
    for (let i = 0; i < ok; i++) assert.equal((await echo(client, 'x')).code, grpc.status.OK);
    failing = thenFail;
    attempts = 0;
    await echo(client, 'x');
    return attempts;
  };
  // 10 outage RPCs: 5 + 5 + 8 = 18 attempts, tokens 20 → 2.
  for (let i = 0; i < 10; i++) await echo(client, 'x');
  assert.equal(attempts, 18);
  // 28 successes: 2 + 28 × 0.2 = 7.6; the failure takes it to 6.6, not > 10: one attempt.
  assert.equal(await phase(28, true), 1);
  // 23 more: 6.6 + 4.6 = 11.2 → 10.2 (> 10: retry) → 9.2 (stop): two attempts.
  assert.equal(await phase(23, true), 2);
});

test('call-info interceptor: each call carries its absolute deadline (none without one) and its own id', async (t) => {
  const seen: string[][] = [];
  const ids: string[][] = [];
  const server = await startEchoServer((call, cb) => {
    seen.push(call.metadata.get(DEADLINE_METADATA_KEY).map(String));
    ids.push(call.metadata.get(CALL_ID_METADATA_KEY).map(String));
    cb(null, Buffer.from('ok'));
  });
  t.after(() => server.server.forceShutdown());
  const client = new grpc.Client(server.address, grpc.credentials.createInsecure(), clientDefaults());
  t.after(() => client.close());
  const before = Date.now();
  await echo(client, 'x', 5000);
  const sent = Number(seen[0]?.[0]);
  assert.ok(sent >= before + 5000 && sent <= Date.now() + 5000, `deadline ${sent}`);
  await new Promise<void>((resolve) =>
    client.makeUnaryRequest(
      '/grpckube.test.Echo/Echo',
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from('x'),
      () => resolve(),
    ),
  );
  assert.deepEqual(seen[1], []);
  assert.equal(ids[0]?.length, 1);
  assert.equal(ids[1]?.length, 1);
  assert.notEqual(ids[0]?.[0], ids[1]?.[0]);
  const off = new grpc.Client(
    server.address,
    grpc.credentials.createInsecure(),
    clientDefaults({ deadlineAwarePicks: false }),
  );
  t.after(() => off.close());
  await echo(off, 'x', 5000);
  assert.deepEqual(seen[2], []);
  assert.deepEqual(ids[2], []);
});

/** Servers that record the call id of every attempt they receive, answering with `handler`. */
async function recordingServers(
  t: test.TestContext,
  handlers: ReadonlyArray<(cb: grpc.sendUnaryData<Buffer>) => void>,
): Promise<{ target: string; seen: string[][] }> {
  const seen: string[][] = handlers.map(() => []);
  const servers: StartedServer[] = [];
  for (const [i, handler] of handlers.entries()) {
    const s = await startEchoServer((call, cb) => {
      seen[i]?.push(String(call.metadata.get(CALL_ID_METADATA_KEY)[0]));
      handler(cb);
    });
    t.after(() => s.server.forceShutdown());
    servers.push(s);
  }
  return { target: `ipv4:${servers.map((s) => s.address).join(',')}`, seen };
}

test('grpc_kube_p2c retries a failed attempt on the server the call has not tried', async (t) => {
  // Server 0 fails every call with UNAVAILABLE, server 1 answers. Both idle between the sequential
  // calls, so a second sample would send about half the retries back to server 0.
  const { target, seen } = await recordingServers(t, [
    (cb) => cb({ code: grpc.status.UNAVAILABLE, details: 'down' }),
    (cb) => cb(null, Buffer.from('ok')),
  ]);
  const client = new grpc.Client(
    target,
    grpc.credentials.createInsecure(),
    clientDefaults({ lbPolicy: 'grpc_kube_p2c', retry: fastRetry, retryThrottling: false }),
  );
  t.after(() => client.close());
  for (let i = 0; i < 30; i++) assert.equal((await echo(client, 'x', 5000)).code, grpc.status.OK);
  const [down = [], up = []] = seen;
  assert.ok(down.length > 0, 'the failing server got first attempts');
  assert.equal(new Set(down).size, down.length, 'no call tried the failing server twice');
  assert.equal(up.length, 30);
});

test('grpc_kube_p2c hedges each call onto servers its earlier attempts did not use', async (t) => {
  // Three servers that never answer: every call makes its 3 hedged attempts, 20 ms apart, and times
  // out. Each attempt must land on a different server, so every server sees every call once.
  const { target, seen } = await recordingServers(t, [() => {}, () => {}, () => {}]);
  const [service, method] = ECHO_PATH.slice(1).split('/') as [string, string];
  const client = new grpc.Client(
    target,
    grpc.credentials.createInsecure(),
    clientDefaults({
      lbPolicy: 'grpc_kube_p2c',
      idempotentMethods: [{ service, method }],
      hedging: { delayMs: 20, maxAttempts: 3 },
    }),
  );
  t.after(() => client.close());
  const CALLS = 4;
  // Each call is cancelled once all three servers have seen it (its 3rd attempt is due at 40 ms; a
  // deadline could run out first on a stalled machine). A call that hedged onto a server twice leaves
  // one server without it, and the wait fails.
  for (let i = 0; i < CALLS; i++) {
    const call = client.makeUnaryRequest<Buffer, Buffer>(
      ECHO_PATH,
      (b) => b,
      (b) => b,
      Buffer.from('x'),
      new grpc.Metadata(),
      { deadline: Date.now() + 120_000 },
      () => {},
    );
    await until(
      () => seen.every((ids) => ids.length === i + 1),
      60_000,
      2,
      `call ${i} reached all 3 servers`,
    );
    call.cancel();
  }
  for (const [i, ids] of seen.entries()) {
    assert.equal(new Set(ids).size, ids.length, `server ${i} saw a call twice`);
    assert.equal(ids.length, CALLS, `server ${i}`);
  }
});

test('outlierDetection: grpc-js parses the entries for round_robin (wrapped) and our policies (inline)', () => {
  const rr = defaultServiceConfig({ outlierDetection: true }).loadBalancingConfig[0] as Record<
    string,
    object
  >;
  assert.deepEqual(Object.keys(rr), ['outlier_detection']);
  const parsed = parseLoadBalancingConfig(rr);
  assert.equal(parsed.getLoadBalancerName(), 'outlier_detection');
  const p2c = defaultServiceConfig({
    lbPolicy: 'grpc_kube_p2c',
    outlierDetection: { failurePercentageEjection: { threshold: 60 } },
  }).loadBalancingConfig[0] as Record<string, object>;
  assert.equal(parseLoadBalancingConfig(p2c).getLoadBalancerName(), 'grpc_kube_p2c');
  const rows: Array<[Parameters<typeof clientDefaults>[0], string]> = [
    [{ lbPolicy: 'pick_first', outlierDetection: true }, 'outlierDetection'],
    [{ outlierDetection: { intervalMs: -1 } }, 'outlierDetection.intervalMs'],
    [{ retryThrottling: { maxTokens: 0, tokenRatio: 0.1 } }, 'retryThrottling.maxTokens'],
    [{ retryThrottling: { maxTokens: 2000, tokenRatio: 0.1 } }, 'retryThrottling.maxTokens'],
    [{ retryThrottling: { maxTokens: 10, tokenRatio: 0.0001 } }, 'retryThrottling.tokenRatio'],
  ];
  for (const [opts, field] of rows) {
    assert.throws(
      () => clientDefaults(opts),
      (e: unknown) => e instanceof InvalidOptionError && e.field === field,
      field,
    );
  }
});

for (const lbPolicy of ['round_robin', 'grpc_kube_p2c']) {
  test(`outlierDetection (${lbPolicy}): a server failing every call is ejected; the others serve all`, async (t) => {
    const good = [];
    for (let i = 0; i < 2; i++) {
      const s = await startEchoServer((_call, cb) => cb(null, Buffer.from('ok')));
      t.after(() => s.server.forceShutdown());
      good.push(s);
    }
    const bad = await startEchoServer((_call, cb) => cb({ code: grpc.status.INTERNAL, details: 'broken' }));
    t.after(() => bad.server.forceShutdown());
    const target = `ipv4:${[...good, bad].map((s) => s.address).join(',')}`;
    const client = new grpc.Client(
      target,
      grpc.credentials.createInsecure(),
      clientDefaults({
        lbPolicy,
        retry: false,
        outlierDetection: {
          intervalMs: 100,
          baseEjectionTimeMs: 60_000,
          maxEjectionPercent: 34,
          failurePercentageEjection: { threshold: 50, minimumHosts: 3, requestVolume: 3 },
        },
      }),
    );
    t.after(() => client.close());
    // Calls flow until 30 in a row succeed: the broken server is out. Bounded by count, not time.
    let streak = 0;
    let failed = 0;
    for (let i = 0; i < 3000 && streak < 30; i++) {
      const r = await echo(client, 'x');
      if (r.code === grpc.status.OK) streak++;
      else {
        streak = 0;
        failed++;
        assert.equal(r.code, grpc.status.INTERNAL);
      }
    }
    assert.equal(streak, 30, `never ejected (${failed} failures)`);
    assert.ok(failed >= 1, 'the broken server did get calls before it was ejected');
  });
}

for (const lbPolicy of ['grpc_kube_p2c', 'grpc_kube_ewma']) {
  test(`overload (${lbPolicy}): a server shedding with pushback costs few retries, and every RPC succeeds`, async (t) => {
    const hits = { good: 0, busy: 0 };
    const servers: StartedServer[] = [];
    for (let i = 0; i < 4; i++) {
      servers.push(
        await startEchoServer((_call, cb) => {
          hits.good++;
          cb(null, Buffer.from('ok'));
        }),
      );
    }
    servers.push(
      await startEchoServer((_call, cb) => {
        hits.busy++;
        const metadata = new grpc.Metadata();
        metadata.set('grpc-retry-pushback-ms', '1000');
        cb({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'overloaded', metadata });
      }),
    );
    t.after(() => servers.forEach((s) => s.server.forceShutdown()));
    const [service, method] = ECHO_PATH.slice(1).split('/') as [string, string];
    const client = new grpc.Client(
      `ipv4:${servers.map((s) => s.address).join(',')}`,
      grpc.credentials.createInsecure(),
      clientDefaults({ lbPolicy, idempotentMethods: [{ service, method }] }),
    );
    t.after(() => client.close());
    const RPCS = 300;
    let next = 0;
    let failed = 0;
    // 10 workers, 30 RPCs each: bounded by count.
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        while (next < RPCS) {
          next++;
          if ((await echo(client, 'x')).code !== grpc.status.OK) failed++;
        }
      }),
    );
    const attempts = hits.good + hits.busy;
    t.diagnostic(
      `${RPCS} RPCs, ${attempts} attempts (${hits.busy} on the shedding server), ${failed} failed`,
    );
    assert.equal(failed, 0);
    // Every retry follows a shed attempt; pushback keeps the picker off that server, so few happen.
    assert.equal(attempts - RPCS, hits.busy);
    assert.ok(hits.busy <= RPCS * 0.2, `retries ${hits.busy} > 20 % of ${RPCS}`);
  });
}
