// The proxy against real grpc-js backends on loopback, with fixed endpoint lists (ingress mode):
// every RPC kind, metadata and trailers, deadlines and cancellation both ways, backend resets,
// retries only for requests no backend saw, GOAWAY, a killed backend under load, balancing per RPC
// from one client connection, and the proxy's own drain.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import diagnostics from 'node:diagnostics_channel';
import http2 from 'node:http2';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import {
  GrpcProxy,
  PROXY_CHANNEL_NAME,
  type ProxyEvent,
  type GrpcProxyOptions,
} from '@grpc-kube/proxy/internal/index.js';
import { until } from '../helpers/kube.js';
import {
  newJsonClient,
  startJsonServer,
  unary,
  type Json,
  type JsonServer,
  type Res,
} from './fixtures/json-service.js';

type T = { after(fn: () => unknown): void };

async function backends(t: T, n: number): Promise<JsonServer[]> {
  const out: JsonServer[] = [];
  for (let i = 0; i < n; i++) {
    const s = await startJsonServer(`b${i}`, `127.0.0.${i + 1}`);
    t.after(() => s.kill());
    out.push(s);
  }
  return out;
}

const TARGET = 'app.prod:9000';

async function ingress(
  t: T,
  eps: readonly { address: string; port: number }[],
  extra: Partial<GrpcProxyOptions> = {},
): Promise<{ proxy: GrpcProxy; client: Json }> {
  const proxy = new GrpcProxy({
    mode: 'ingress',
    target: TARGET,
    staticTargets: { [TARGET]: eps },
    // These tests read which backend and Service a failure names; ingress callers get those only on request.
    debugStatuses: true,
    ...extra,
  });
  await proxy.listen();
  t.after(() => proxy.close());
  const client = newJsonClient(proxy.address);
  t.after(() => client.close());
  return { proxy, client };
}

function eps(servers: readonly JsonServer[]): { address: string; port: number }[] {
  return servers.map((s) => ({ address: s.address.split(':')[0] as string, port: s.port }));
}

test('unary: reply, request metadata (incl. -bin), response trailers and error statuses pass through', async (t) => {
  const [b] = await backends(t, 1);
  const { client } = await ingress(t, eps([b as JsonServer]));
  const md = new grpc.Metadata();
  md.set('x-user', 'alice');
  md.set('x-token-bin', Buffer.from([9, 8, 7]));
  const ok = await unary(client, { payload: 'hi' }, { metadata: md });
  assert.equal(ok.err, undefined);
  assert.equal(ok.res?.server, 'b0');
  assert.equal(ok.res?.payload, 'hi');
  assert.deepEqual(ok.res?.metadata, { 'x-user': 'alice', 'x-token-bin': 'bin:090807' });
  assert.deepEqual(ok.trailers?.get('x-served-by'), ['b0']);
  assert.deepEqual(ok.trailers?.get('x-trailer-bin'), [Buffer.from([0, 1, 2, 255])]);

  const bad = await unary(client, {
    fail: { code: grpc.status.NOT_FOUND, message: 'no such thing — ü 100%' },
  });
  assert.equal(bad.err?.code, grpc.status.NOT_FOUND);
  assert.equal(bad.err?.details, 'no such thing — ü 100%');
  assert.deepEqual(bad.err?.metadata.get('x-served-by'), ['b0']);
});

test('client streaming, server streaming and bidi streaming through the proxy', async (t) => {
  const [b] = await backends(t, 1);
  const { client } = await ingress(t, eps([b as JsonServer]));

  const cs = await new Promise<Res>((resolve, reject) => {
    const call = client.ClientStream(new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err, res) =>
      err ? reject(err) : resolve(res as Res),
    );
    for (let i = 0; i < 200; i++) call.write({ payload: 'x'.repeat(1000) });
    call.end();
  });
  assert.deepEqual([cs.server, cs.count, cs.payload], ['b0', 200, '200000']);

  const ss = client.ServerStream({ count: 50, payload: 'y'.repeat(10_000) }, new grpc.Metadata(), {
    deadline: Date.now() + 5000,
  });
  const got: number[] = [];
  ss.on('data', (m: Res) => got.push(m.i as number));
  const ssStatus = await new Promise<grpc.StatusObject>((resolve) => ss.on('status', resolve));
  assert.equal(ssStatus.code, grpc.status.OK);
  assert.deepEqual(got, [...Array(50).keys()]);
  assert.deepEqual(ssStatus.metadata.get('x-served-by'), ['b0']);

  const bidi = client.Bidi(new grpc.Metadata(), { deadline: Date.now() + 5000 });
  const echoed: string[] = [];
  bidi.on('data', (m: Res) => {
    echoed.push(m.payload as string);
    // Ping-pong: the next message goes only after the previous answer came back through the proxy.
    if (echoed.length < 10) bidi.write({ payload: `m${echoed.length}` });
    else bidi.end();
  });
  bidi.write({ payload: 'm0' });
  const bidiStatus = await new Promise<grpc.StatusObject>((resolve) => bidi.on('status', resolve));
  assert.equal(bidiStatus.code, grpc.status.OK);
  assert.deepEqual(
    echoed,
    [...Array(10).keys()].map((i) => `m${i}`),
  );
  assert.deepEqual(b?.started, { ClientStream: 1, ServerStream: 1, Bidi: 1 });
});

test('flow control: a client that stops reading holds the backend back; the proxy buffers a bounded amount', async (t) => {
  // Raw HTTP/2 on both ends, so what is measured is the proxy alone: the backend counts the bytes
  // its stream accepted (write callbacks), the client does not read until told.
  const CHUNK = 64 * 1024;
  const TOTAL = 128; // 8 MiB
  let accepted = 0;
  const backend = http2.createServer();
  backend.on('stream', (st) => {
    st.on('error', () => {});
    st.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    st.on('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0' }));
    let sent = 0;
    const pump = (): void => {
      while (sent < TOTAL) {
        sent++;
        const ok = st.write(Buffer.alloc(CHUNK, 1), () => (accepted += CHUNK));
        if (!ok) {
          st.once('drain', pump);
          return;
        }
      }
      st.end();
    };
    pump();
  });
  await new Promise<void>((r) => backend.listen(0, '127.0.0.7', r));
  t.after(() => backend.close());
  const { proxy } = await ingress(t, [
    { address: '127.0.0.7', port: (backend.address() as { port: number }).port },
  ]);
  const session = http2.connect(`http://${proxy.address}`);
  t.after(() => session.close());
  const req = session.request({
    ':method': 'POST',
    ':path': '/x.Y/Z',
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  req.end(Buffer.from([0, 0, 0, 0, 0]));
  await new Promise((r) => req.once('response', r));
  await new Promise((r) => setTimeout(r, 300));
  const heldAt = accepted;
  assert.ok(heldAt < 1024 * 1024, `backend got ${heldAt} bytes out while nobody read (of ${CHUNK * TOTAL})`);
  t.diagnostic(`bytes the backend got out while the client did not read: ${heldAt}`);
  let received = 0;
  req.on('data', (d: Buffer) => (received += d.length));
  let trailers: http2.IncomingHttpHeaders = {};
  req.once('trailers', (h) => (trailers = h));
  await new Promise((r) => req.once('close', r));
  assert.equal(received, CHUNK * TOTAL);
  assert.equal(trailers['grpc-status'], '0');
});

test('grpc-timeout: the backend gets what is left, and the proxy ends an expired RPC with DEADLINE_EXCEEDED and cancels upstream', async (t) => {
  const [b] = await backends(t, 1);
  const backend = b as JsonServer;
  const { client, proxy } = await ingress(t, eps([backend]));
  // What the backend sees left is the client's 2 s less the time the RPC took to reach it: at least
  // 2 s less the whole round trip (however slow a loaded machine makes it), never more than 2 s.
  const sentAt = performance.now();
  const ok = await unary(client, {}, { deadlineMs: 2000 });
  const tookMs = performance.now() - sentAt;
  const left = ok.res?.deadlineLeftMs ?? -1;
  assert.ok(
    left >= 2000 - tookMs - 5 && left <= 2000,
    `backend saw ${left} ms left (the RPC took ${tookMs} ms)`,
  );

  const hung = await unary(client, { hang: true }, { deadlineMs: 300 });
  assert.equal(hung.err?.code, grpc.status.DEADLINE_EXCEEDED);
  await until(() => backend.inFlight === 0 && proxy.stats.active === 0, 15_000);

  // A backend that ignores grpc-timeout: only the proxy's own timer can end the call, and it must
  // reset the upstream stream.
  let upstreamRst = -1;
  let upstreamTimeout = '';
  const deaf = http2.createServer();
  deaf.on('stream', (st, h) => {
    st.on('error', () => {});
    upstreamTimeout = String(h['grpc-timeout']);
    st.on('close', () => (upstreamRst = st.rstCode ?? -1));
  });
  await new Promise<void>((r) => deaf.listen(0, '127.0.0.8', r));
  t.after(() => deaf.close());
  const { client: c2 } = await ingress(t, [
    { address: '127.0.0.8', port: (deaf.address() as { port: number }).port },
  ]);
  // The client's own deadline is later: the DEADLINE_EXCEEDED comes from the proxy's timer.
  const md = new grpc.Metadata();
  const r = await new Promise<grpc.ServiceError | null>((resolve) => {
    const call = c2.Unary({}, md, { deadline: Date.now() + 400 }, (err) => resolve(err));
    void call;
  });
  assert.equal(r?.code, grpc.status.DEADLINE_EXCEEDED);
  assert.match(upstreamTimeout, /^\d+u$/);
  assert.ok(Number(upstreamTimeout.slice(0, -1)) <= 400_000);
  await until(() => upstreamRst === http2.constants.NGHTTP2_CANCEL, 15_000);
});

test('a client cancel resets the backend stream; a backend reset gives the client a status naming the backend', async (t) => {
  const [b] = await backends(t, 1);
  const backend = b as JsonServer;
  const { client } = await ingress(t, eps([backend]));
  const call = client.Unary({ hang: true }, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, () => {});
  await until(() => backend.inFlight === 1);
  call.cancel();
  await until(() => backend.cancelled === 1 && backend.inFlight === 0, 15_000);

  // A raw HTTP/2 backend that answers headers, then resets the stream with INTERNAL_ERROR.
  const raw = http2.createServer();
  raw.on('stream', (s) => {
    s.on('error', () => {});
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    setTimeout(() => s.close(http2.constants.NGHTTP2_INTERNAL_ERROR), 20);
  });
  await new Promise<void>((r) => raw.listen(0, '127.0.0.9', r));
  t.after(() => raw.close());
  const port = (raw.address() as { port: number }).port;
  const { client: c2 } = await ingress(t, [{ address: '127.0.0.9', port }]);
  const r = await unary(c2, {});
  assert.equal(r.err?.code, grpc.status.INTERNAL);
  assert.match(r.err?.details ?? '', new RegExp(`backend 127\\.0\\.0\\.9:${port} of Service prod/app:9000`));
});

test('a backend whose connection drops mid-response (a pod SIGKILLed after its headers): the client gets UNAVAILABLE, not CANCELLED', async (t) => {
  // A raw HTTP/2 backend that answers headers, then loses its connection: no RST_STREAM, no GOAWAY,
  // as when the kernel closes a killed process's socket. Node closes the proxy's stream with code
  // CANCEL then; that is the connection failing (UNAVAILABLE), not the backend cancelling.
  const raw = http2.createServer();
  const sockets = new Set<import('node:net').Socket>();
  raw.on('connection', (sock: import('node:net').Socket) => void sockets.add(sock));
  raw.on('stream', (s) => {
    s.on('error', () => {});
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    setTimeout(() => {
      for (const sock of sockets) sock.destroy();
    }, 20);
  });
  await new Promise<void>((r) => raw.listen(0, '127.0.0.9', r));
  t.after(() => raw.close());
  const port = (raw.address() as { port: number }).port;
  const { client } = await ingress(t, [{ address: '127.0.0.9', port }]);
  const r = await unary(client, {});
  assert.equal(r.err?.code, grpc.status.UNAVAILABLE, `${r.err?.code} ${r.err?.details}`);
  assert.match(r.err?.details ?? '', new RegExp(`backend 127\\.0\\.0\\.9:${port} of Service prod/app:9000`));
});

test('retries only requests no backend saw: refused streams and dead ports go elsewhere, a reset after acceptance is not retried', async (t) => {
  const [good] = await backends(t, 1);
  // Refuses every stream (REFUSED_STREAM: "not processed", safe to retry).
  let refused = 0;
  const refuser = http2.createServer();
  refuser.on('stream', (s) => {
    s.on('error', () => {});
    refused++;
    s.close(http2.constants.NGHTTP2_REFUSED_STREAM);
  });
  await new Promise<void>((r) => refuser.listen(0, '127.0.0.10', r));
  t.after(() => refuser.close());
  // Accepts the request, then resets: the request reached it, so it must not be replayed.
  let accepted = 0;
  const resetter = http2.createServer();
  resetter.on('stream', (s) => {
    s.on('error', () => {});
    accepted++;
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    s.close(http2.constants.NGHTTP2_CANCEL);
  });
  await new Promise<void>((r) => resetter.listen(0, '127.0.0.11', r));
  t.after(() => resetter.close());
  // A port nobody listens on.
  const dead = http2.createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.12', r));
  const deadPort = (dead.address() as { port: number }).port;
  await new Promise<void>((r) => dead.close(() => r()));

  const g = good as JsonServer;
  const { client, proxy } = await ingress(t, [
    { address: '127.0.0.10', port: (refuser.address() as { port: number }).port },
    { address: '127.0.0.12', port: deadPort },
    { address: '127.0.0.1', port: g.port },
  ]);
  const results = [];
  for (let i = 0; i < 12; i++) results.push(await unary(client, { payload: 'p'.repeat(5000) }));
  assert.deepEqual(
    results.map((r) => r.err?.code ?? 0),
    Array(12).fill(0),
  );
  assert.ok(refused >= 1, 'the refusing backend was tried');
  assert.ok(proxy.stats.retries >= refused);

  const { client: c2 } = await ingress(t, [
    { address: '127.0.0.11', port: (resetter.address() as { port: number }).port },
    { address: '127.0.0.1', port: g.port },
  ]);
  const before = g.started.Unary ?? 0;
  const outcomes = [];
  for (let i = 0; i < 6; i++) outcomes.push(await unary(c2, {}));
  const failed = outcomes.filter((o) => o.err !== undefined);
  assert.equal(failed.length, accepted, 'every RPC the resetter accepted failed, none was replayed');
  assert.ok(accepted >= 1);
  assert.equal((g.started.Unary ?? 0) - before, 6 - accepted);
  // The resetter's RST after the client's END_STREAM reaches node as a close without trailers.
  for (const f of failed) {
    assert.ok(f.err?.code === grpc.status.CANCELLED || f.err?.code === grpc.status.INTERNAL);
    assert.match(f.err?.details ?? '', /backend 127\.0\.0\.11:/);
  }
});

test('backend GOAWAY: RPCs in flight finish, new ones go to the other backends', async (t) => {
  const bs = await backends(t, 3);
  const { client } = await ingress(t, eps(bs));
  const b0 = bs[0] as JsonServer;
  // Warm a session to each backend.
  for (let i = 0; i < 3; i++) assert.equal((await unary(client, {})).err, undefined);
  const slow = Array.from({ length: 6 }, () => unary(client, { delayMs: 300 }));
  await until(() => b0.inFlight >= 1);
  const stopped = b0.stop(); // grpc-js tryShutdown: GOAWAY, running calls finish
  const after = [];
  for (let i = 0; i < 30; i++) after.push(await unary(client, {}));
  const slowResults = await Promise.all(slow);
  await stopped;
  assert.deepEqual(
    slowResults.map((r) => r.err?.code ?? 0),
    Array(6).fill(0),
  );
  assert.deepEqual(
    after.map((r) => r.err?.code ?? 0),
    Array(30).fill(0),
  );
  assert.ok(after.every((r) => r.res?.server !== 'b0'));
});

test('one client connection, 3 backends: round_robin spreads every RPC, exactly 1/3 each', async (t) => {
  const bs = await backends(t, 3);
  const { client, proxy } = await ingress(t, eps(bs));
  const counts: Record<string, number> = {};
  for (let i = 0; i < 60; i++) {
    const r = await unary(client, {});
    const s = r.res?.server ?? 'error';
    counts[s] = (counts[s] ?? 0) + 1;
  }
  assert.deepEqual(counts, { b0: 20, b1: 20, b2: 20 });
  assert.equal(proxy.clientConnections, 1);
});

test('p2c and ewma over one connection: a slow backend gets less, none gets nothing', async (t) => {
  const bs = await backends(t, 3);
  for (const policy of ['p2c', 'ewma'] as const) {
    const { client } = await ingress(t, eps(bs), { policy });
    const counts: Record<string, number> = { b0: 0, b1: 0, b2: 0 };
    // 20 loops × 15 calls; b0 answers in 40 ms, the others at once.
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        for (let i = 0; i < 15; i++) {
          const r = await unary(client, {});
          const s = r.res?.server ?? 'error';
          counts[s] = (counts[s] ?? 0) + 1;
          if (s === 'b0') await new Promise((res) => setTimeout(res, 40));
        }
      }),
    );
    assert.equal(counts.error, undefined, policy);
    assert.ok(
      (counts.b1 ?? 0) > 0 && (counts.b2 ?? 0) > 0 && (counts.b0 ?? 0) > 0,
      `${policy}: ${JSON.stringify(counts)}`,
    );
  }
});

interface ProcessBackend {
  readonly child: ReturnType<typeof spawn>;
  readonly port: number;
  readonly address: string;
  /** Request ids the process read (written before its handler ran). */
  readonly ids: Set<number>;
}

/** Backends in their own processes on 127.0.0.<base+i>, so a signal hits only them. */
async function processBackends(t: T, n: number, prefix: string, base: number): Promise<ProcessBackend[]> {
  const fixture = fileURLToPath(new URL('./fixtures/json-server-process.js', import.meta.url));
  const out: ProcessBackend[] = [];
  for (let i = 0; i < n; i++) {
    const address = `127.0.0.${base + i}`;
    const child = spawn(process.execPath, [fixture, `${prefix}${i}`, address], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    t.after(() => child.kill('SIGKILL'));
    const ids = new Set<number>();
    let buf = '';
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout?.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const [kind, value] = buf.slice(0, nl).split(' ');
          buf = buf.slice(nl + 1);
          if (kind === 'port') resolve(Number(value));
          else if (kind === 'id') ids.add(Number(value));
        }
      });
      child.once('exit', () => reject(new Error('backend exited')));
    });
    out.push({ child, port, address, ids });
  }
  return out;
}

/**
 * `loops` client loops, each sending one RPC after another through `rpc` until one of them reports
 * the goal reached (its return value). Bounded: throws after 60 s or 20,000 RPCs without the goal.
 */
async function loadUntil(loops: number, rpc: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + 60_000;
  let sent = 0;
  let done = false;
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (!done) {
        if (Date.now() > end || sent++ >= 20_000) throw new Error(`load goal not reached after ${sent} RPCs`);
        if (await rpc()) done = true;
      }
    }),
  );
}

test('a backend stopping gracefully under load, unannounced (GOAWAY while RPCs race it): no RPC fails', async (t) => {
  // The endpoint list stays fixed, so the proxy learns of the stop only from the GOAWAY: the worst
  // case of a pod whose endpoint removal has not reached the proxy yet. RPCs in flight finish; RPCs
  // sent after the GOAWAY was written are refused by it and replayed; the closed port is ejected.
  const children = await processBackends(t, 3, 'g', 30);
  const { client, proxy } = await ingress(
    t,
    children.map((c) => ({ address: c.address, port: c.port })),
  );
  const stopping = children[0] as ProcessBackend;
  let exited = false;
  const exit = new Promise((r) => stopping.child.once('close', r)).then(() => (exited = true));
  // Counted, not timed: the stop comes after 200 answers, and the load goes on until 200 RPCs begun
  // after the process had exited are answered, however long a loaded machine takes for either.
  const outcomes: { code: number; server: string; msg: string; afterExit: boolean }[] = [];
  let stopped = false;
  let nextId = 0;
  await loadUntil(24, async () => {
    if (!stopped && outcomes.length >= 200) {
      stopped = true;
      stopping.child.kill('SIGTERM');
    }
    const afterExit = exited;
    const r = await unary(client, { id: nextId++, delayMs: 5 }, { deadlineMs: 10_000 });
    outcomes.push({
      code: r.err?.code ?? 0,
      server: r.res?.server ?? '',
      msg: r.err?.details ?? '',
      afterExit,
    });
    return outcomes.filter((o) => o.afterExit).length >= 200;
  });
  await exit;
  const failed = outcomes.filter((o) => o.code !== 0);
  t.diagnostic(
    `${outcomes.length} RPCs, ${failed.length} failed, g0 served ${outcomes.filter((o) => o.server === 'g0').length}, retries ${proxy.stats.retries}`,
  );
  assert.ok(
    outcomes.some((o) => o.server === 'g0'),
    'the stopping backend served before its stop',
  );
  assert.deepEqual(failed, []);
});

test('a backend SIGKILLed under load: only RPCs already sent to it fail, none after, and they are counted', async (t) => {
  const children = await processBackends(t, 3, 'k', 20);
  const { client, proxy } = await ingress(
    t,
    children.map((c) => ({ address: c.address, port: c.port })),
  );
  const killed = children[0] as (typeof children)[number];
  const killedKey = `${killed.address}:${killed.port}`;
  const fails: ProxyEvent[] = [];
  const onEvent = (m: unknown): void => {
    const e = m as ProxyEvent;
    // The proxy knows the pod is gone at its first RPC failed on it, or its first retry away from it
    // (when no RPC happened to be on the wire to it at the kill).
    if (e.backends.at(-1) === killedKey && killedAt !== Infinity && lostAt === Infinity) {
      lostAt = Date.now();
      noticedBy = `a ${e.kind} on it`;
    }
    if (e.kind === 'fail') fails.push(e);
  };
  diagnostics.subscribe(PROXY_CHANNEL_NAME, onEvent);
  t.after(() => diagnostics.unsubscribe(PROXY_CHANNEL_NAME, onEvent));

  // When the proxy saw the pod's connection die.
  let lostAt = Infinity;
  let noticedBy = 'nothing';
  let killedAt = Infinity;
  // 'close', not 'exit': only then has everything the pod wrote to stdout been read.
  const exited = new Promise((r) => killed.child.once('close', r));
  const outcomes: { id: number; startedAt: number; code: number; server: string; msg: string }[] = [];
  let nextId = 0;
  // With no RPC on the wire to the pod at the kill, the proxy may learn of it from the connection
  // closing alone: no RPC fails or retries, and the pool passes the pod over (no handshaken session)
  // — from then on it knows.
  const sessionGone = (): boolean =>
    Object.keys(proxy.services()).some((name) => proxy.pool(name)?.backend(killedKey)?.handshaken === false);
  // Counted, not timed: the kill comes once the killed pod has answered 20 RPCs, and the load goes on
  // until 100 RPCs begun after the proxy noticed are answered, however long a loaded machine takes.
  await loadUntil(12, async () => {
    if (killedAt === Infinity && outcomes.filter((o) => o.server === 'k0').length >= 20) {
      killedAt = Date.now();
      killed.child.kill('SIGKILL');
    }
    if (killedAt !== Infinity && lostAt === Infinity && sessionGone()) {
      lostAt = Date.now();
      noticedBy = 'its connection closing';
    }
    const id = nextId++;
    const startedAt = Date.now();
    const r = await unary(client, { id, delayMs: 10 }, { deadlineMs: 10_000 });
    outcomes.push({
      id,
      startedAt,
      code: r.err?.code ?? 0,
      server: r.res?.server ?? '',
      msg: r.err?.details ?? '',
    });
    return outcomes.filter((o) => o.startedAt > lostAt).length >= 100;
  });
  await exited;
  const failed = outcomes.filter((o) => o.code !== 0);
  // Every failure was an RPC on the wire to the killed pod when it died (at most one per client loop);
  // the proxy cannot tell an RPC the pod read from one still in its socket buffer, so both count as
  // reached. Nothing sent anywhere else, and nothing started after the kill, fails.
  assert.ok(failed.length <= 12, `${failed.length} failed`);
  for (const f of failed) {
    assert.equal(f.code, grpc.status.UNAVAILABLE);
    assert.match(f.msg, new RegExp(`backend ${killedKey.replace(/\./g, '\\.')} `));
    assert.ok(f.startedAt <= lostAt, 'started before the proxy knew the pod was gone');
  }
  assert.equal(fails.length, failed.length);
  for (const e of fails) assert.equal(e.backends.at(-1), killedKey);
  const read = failed.filter((f) => killed.ids.has(f.id)).length;
  // How soon the proxy notices depends on the machine's load (a diagnostic, not a bound); what holds
  // under any load: it noticed (the load ran until 100 RPCs after that), and nothing started after
  // that failed or reached the killed pod.
  const afterKill = outcomes.filter((o) => o.startedAt > lostAt);
  assert.ok(afterKill.every((o) => o.code === 0 && o.server !== 'k0'));
  t.diagnostic(
    `${outcomes.length} RPCs, ${failed.length} failed, all in flight to the killed pod ` +
      `(${read} read by it, ${failed.length - read} still in its socket); retries ${proxy.stats.retries}; ` +
      `noticed ${Math.round(lostAt - killedAt)} ms after the kill, by ${noticedBy}`,
  );
});

test('drain: RPCs in flight finish within the grace, new connections are refused, stragglers get UNAVAILABLE', async (t) => {
  const [b] = await backends(t, 1);
  const { client, proxy } = await ingress(t, eps([b as JsonServer]));
  assert.equal((await unary(client, {})).err, undefined);
  const slow = unary(client, { delayMs: 200 });
  const hung = unary(client, { hang: true }, { deadlineMs: 10_000 });
  await until(() => (b as JsonServer).inFlight === 2);
  const drained = proxy.drain(600);
  const [s, h] = await Promise.all([slow, hung]);
  await drained;
  assert.equal(s.err, undefined);
  assert.equal(s.res?.server, 'b0');
  assert.equal(h.err?.code, grpc.status.UNAVAILABLE);
  assert.match(h.err?.details ?? '', /shutting down/);
  const late = newJsonClient(proxy.address);
  t.after(() => late.close());
  const r = await unary(late, {}, { deadlineMs: 500 });
  assert.ok(r.err !== undefined);
});

test('limits: oversized metadata is refused, non-gRPC requests get 415, bad options are typed errors', async (t) => {
  const [b] = await backends(t, 1);
  const { client } = await ingress(t, eps([b as JsonServer]), { maxHeaderListSize: 4096 });
  const md = new grpc.Metadata();
  md.set('x-big', 'v'.repeat(8000));
  const big = await unary(client, {}, { metadata: md });
  assert.ok(big.err !== undefined && big.err.code !== grpc.status.OK);
  assert.equal((b as JsonServer).started.Unary ?? 0, 0);

  const { proxy } = await ingress(t, eps([b as JsonServer]));
  const session = http2.connect(`http://${proxy.address}`);
  t.after(() => session.close());
  const req = session.request({ ':method': 'GET', ':path': '/' });
  const status = await new Promise((resolve) => req.on('response', (h) => resolve(h[':status'])));
  req.close();
  assert.equal(status, 415);

  assert.throws(() => new GrpcProxy({ mode: 'sidecar', host: '0.0.0.0', staticTargets: {} }), {
    code: 'GK_ERR_INVALID_OPTION',
  });
  assert.throws(() => new GrpcProxy({ mode: 'ingress' }), { code: 'GK_ERR_INVALID_OPTION' });
  assert.throws(
    () =>
      new GrpcProxy({
        mode: 'ingress',
        target: 'a.b:1',
        policy: 'fastest' as 'p2c',
        staticTargets: { 'a.b:1': [] },
      }),
    { code: 'GK_ERR_INVALID_OPTION', field: 'policy' },
  );
});

test('connections: SETTINGS carry the limits, idle connections close, max connection age sends GOAWAY and RPCs still succeed', async (t) => {
  const [b] = await backends(t, 1);
  const { proxy } = await ingress(t, eps([b as JsonServer]), {
    maxConcurrentStreams: 7,
    maxHeaderListSize: 8192,
    clientIdleMs: 150,
  });
  const session = http2.connect(`http://${proxy.address}`);
  t.after(() => session.destroy());
  await new Promise((r) => session.once('remoteSettings', r));
  assert.equal(session.remoteSettings.maxConcurrentStreams, 7);
  assert.equal(session.remoteSettings.maxHeaderListSize, 8192);
  await new Promise((r) => session.once('close', r));
  assert.equal(proxy.clientConnections, 0, 'the idle connection was closed by the proxy');

  const { proxy: aged, client } = await ingress(t, eps([b as JsonServer]), { maxConnectionAgeMs: 100 });
  // RPCs one after another until the 100 ms age has closed two connections (counted, so a loaded
  // machine only makes it take longer); bounded by 30 s.
  const results = [];
  const end = Date.now() + 30_000;
  while ((results.length < 10 || aged.stats.connections < 3) && Date.now() < end) {
    results.push(await unary(client, {}));
  }
  assert.deepEqual(
    results.filter((r) => r.err !== undefined).map((r) => r.err?.details),
    [],
  );
  assert.ok(aged.stats.connections >= 3, `client reconnected ${aged.stats.connections} times`);
});
