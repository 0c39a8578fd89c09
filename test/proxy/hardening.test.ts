// Findings of the security review, each held by a test that failed before its fix: a `grpc-timeout`
// above node's timer range (grpc-go's `2562047H`) must not end the RPC at once, an ingress must not
// tell external callers backend addresses or Service names unless asked to (debugStatuses), and a
// GRPCRoute regex must match in linear time (RE2) against whatever header a client sends.

import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import http2 from 'node:http2';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { GrpcProxy, PROXY_CHANNEL_NAME, type ProxyEvent } from '@grpc-kube/proxy/internal/index.js';
import { formatGrpcTimeout, parseGrpcTimeout } from '@grpc-kube/proxy/internal/grpc-wire.js';
import { JSON_SERVICE, startJsonServer } from './fixtures/json-service.js';

type T = { after(fn: () => unknown): void };

interface RawReply {
  status: string | undefined;
  message: string;
  body: string;
}

/** One unary call over a raw HTTP/2 stream, so the test writes `grpc-timeout` itself. */
async function rawUnary(
  address: string,
  headers: http2.OutgoingHttpHeaders,
  body: unknown,
): Promise<RawReply> {
  const session = http2.connect(`http://${address}`);
  session.on('error', () => {});
  try {
    const json = Buffer.from(JSON.stringify(body));
    const frame = Buffer.alloc(5 + json.length);
    frame.writeUInt32BE(json.length, 1);
    json.copy(frame, 5);
    const stream = session.request({
      ':method': 'POST',
      ':path': `/${JSON_SERVICE}/Unary`,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...headers,
    });
    stream.end(frame);
    return await new Promise<RawReply>((resolve, reject) => {
      let status: string | undefined;
      let message = '';
      const chunks: Buffer[] = [];
      const take = (h: http2.IncomingHttpHeaders): void => {
        if (h['grpc-status'] !== undefined) {
          status = String(h['grpc-status']);
          message = decodeURIComponent(String(h['grpc-message'] ?? ''));
        }
      };
      stream.on('response', take);
      stream.on('trailers', take);
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('error', reject);
      stream.on('close', () =>
        resolve({ status, message, body: Buffer.concat(chunks).subarray(5).toString() }),
      );
    });
  } finally {
    session.close();
  }
}

async function ingress(t: T, target: readonly { address: string; port: number }[], debugStatuses?: boolean) {
  const proxy = new GrpcProxy({
    mode: 'ingress',
    target: 'app.prod:9000',
    staticTargets: { 'app.prod:9000': target },
    ...(debugStatuses === undefined ? {} : { debugStatuses }),
  });
  await proxy.listen();
  t.after(() => proxy.close());
  return proxy;
}

test('grpc-timeout beyond 2^31-1 ms (grpc-go 2562047H) is clamped: the RPC succeeds, no TimeoutOverflowWarning', async (t) => {
  assert.equal(parseGrpcTimeout('2562047H'), 2 ** 31 - 1);
  assert.equal(parseGrpcTimeout('99999999S'), 2 ** 31 - 1);
  // What the proxy forwards never exceeds what a grpc-js server reads into an int32.
  assert.equal(formatGrpcTimeout(2 ** 31 - 1), '2147483S');
  assert.ok(Number(formatGrpcTimeout(2 ** 31 - 2).slice(0, -1)) * 1000 <= 2 ** 31 - 1);

  const warnings: string[] = [];
  const onWarning = (w: Error): void => {
    warnings.push(`${w.name}: ${w.message}`);
  };
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  const b = await startJsonServer('b0', '127.0.0.1');
  t.after(() => b.kill());
  const proxy = await ingress(t, [{ address: '127.0.0.1', port: b.port }]);
  for (const timeout of ['2562047H', '99999999S', '99999999M']) {
    const r = await rawUnary(proxy.address, { 'grpc-timeout': timeout }, { payload: timeout });
    assert.equal(r.status, '0', `${timeout}: ${r.message}`);
    const res = JSON.parse(r.body) as { payload: string; deadlineLeftMs: number };
    assert.equal(res.payload, timeout);
    // The backend got a deadline, the longest one a timer holds (give or take a second's rounding).
    assert.ok(res.deadlineLeftMs > 2 ** 31 - 1 - 60_000, `${timeout}: backend saw ${res.deadlineLeftMs} ms`);
  }
  // Warnings are emitted on the next tick.
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(
    warnings.filter((w) => w.startsWith('TimeoutOverflowWarning')),
    [],
  );
});

test('ingress statuses the proxy decides name no backend address or Service, unless debugStatuses; the event keeps the detail', async (t) => {
  // A backend that accepts the stream, then resets it: the proxy decides the status.
  const raw = http2.createServer();
  raw.on('stream', (s) => {
    s.on('error', () => {});
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    setImmediate(() => s.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
  });
  await new Promise<void>((r) => raw.listen(0, '127.0.0.9', r));
  t.after(() => raw.close());
  const port = (raw.address() as { port: number }).port;
  const events: ProxyEvent[] = [];
  const onEvent = (m: unknown): void => {
    events.push(m as ProxyEvent);
  };
  diagnostics.subscribe(PROXY_CHANNEL_NAME, onEvent);
  t.after(() => diagnostics.unsubscribe(PROXY_CHANNEL_NAME, onEvent));

  const internal = /127\.0\.0\.9|app|prod|9000|Service/;
  const hidden = await ingress(t, [{ address: '127.0.0.9', port }]);
  const reset = await rawUnary(hidden.address, {}, {});
  assert.equal(reset.status, '13');
  assert.doesNotMatch(reset.message, internal);
  assert.notEqual(reset.message, '');
  const fail = events.find((e) => e.kind === 'fail');
  assert.match(fail?.detail ?? '', new RegExp(`backend 127\\.0\\.0\\.9:${port} of Service prod/app:9000`));

  // No endpoint at all (nothing listens on the only address): UNAVAILABLE, also without names.
  const dead = await ingress(t, [{ address: '127.0.0.10', port: 1 }]);
  const none = await rawUnary(dead.address, { 'grpc-timeout': '60S' }, {});
  assert.equal(none.status, '14');
  assert.doesNotMatch(none.message, internal);

  const debug = await ingress(t, [{ address: '127.0.0.9', port }], true);
  const named = await rawUnary(debug.address, {}, {});
  assert.equal(named.status, '13');
  assert.match(named.message, new RegExp(`backend 127\\.0\\.0\\.9:${port} of Service prod/app:9000`));
});

/**
 * The proxy's route table resolving one RPC, in a worker thread: a backtracking engine would hold it
 * for hours on the evil input, and only a thread can be stopped in the middle of a match.
 */
const ROUTE_WORKER = `
  const { parentPort, workerData } = require('node:worker_threads');
  import(workerData.module).then(({ GrpcRouteTable }) => {
    const table = new GrpcRouteTable({}, { random: () => 0, onError: (e) => { throw e; } });
    table.update(new Map([['ns/evil', workerData.route]]));
    const target = { namespace: 'ns', service: 'app', port: { kind: 'number', port: 80 } };
    const out = workerData.values.map((v) => table.resolve(target, '/pkg.Svc/Get', (n) => (n === 'x-user' ? v : undefined)).service);
    parentPort.postMessage(out);
  });
`;

test('GRPCRoute regex matching is linear time (RE2): (a|aa)+ against 5000 client-sent characters answers at once', async (t) => {
  const route = {
    metadata: { name: 'evil', namespace: 'ns' },
    spec: {
      parentRefs: [{ kind: 'Service', name: 'app', port: 80 }],
      rules: [
        {
          matches: [{ headers: [{ type: 'RegularExpression', name: 'x-user', value: '(a|aa)+' }] }],
          backendRefs: [{ name: 'app-canary', port: 80 }],
        },
      ],
    },
  };
  const values = ['aaaa', 'a'.repeat(40) + 'b', 'a'.repeat(5000) + 'b', 'a'.repeat(5000)];
  const worker = new Worker(ROUTE_WORKER, {
    eval: true,
    workerData: {
      module: new URL('../../../packages/proxy/dist/src/grpc-routes.js', import.meta.url).href,
      route,
      values,
    },
  });
  t.after(() => worker.terminate());
  // A bound far above what RE2 needs (milliseconds), far below what backtracking needs (2^40 steps).
  const got = await new Promise<unknown>((resolve, reject) => {
    const timer = setTimeout(() => resolve('still matching after 30 s'), 30_000);
    worker.once('message', (m) => {
      clearTimeout(timer);
      resolve(m);
    });
    worker.once('error', reject);
  });
  assert.deepEqual(got, ['app-canary', 'app', 'app', 'app-canary']);
});
