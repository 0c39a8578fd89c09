// Fuzzing the proxy's HTTP/2 front: raw frames of every type with random flags, stream ids and
// payloads after a valid preface; requests with huge and too many headers, invalid `grpc-timeout`,
// paths and content types; a flood of streams on one connection; storms of streams reset as soon as
// opened. The proxy must not crash, must end every RPC it accepted, keep its memory bounded, and
// still serve a well-behaved client afterwards.

import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { GrpcProxy } from '@grpc-kube/proxy/internal/index.js';
import { until } from '../helpers/kube.js';
import {
  JSON_SERVICE,
  newJsonClient,
  startJsonServer,
  unary,
  type JsonServer,
} from '../proxy/fixtures/json-service.js';
import { Gen, heapMiB } from './gen.js';

let backend: JsonServer;
let proxy: GrpcProxy;
let port: number;

before(async () => {
  backend = await startJsonServer('b0', '127.0.0.1');
  proxy = new GrpcProxy({
    mode: 'ingress',
    target: 'app.prod:9000',
    staticTargets: { 'app.prod:9000': [{ address: '127.0.0.1', port: backend.port }] },
  });
  await proxy.listen();
  port = Number(proxy.address.split(':').pop());
});

after(async () => {
  await proxy?.close();
  backend?.kill();
});

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream >>> 0, 5);
  return Buffer.concat([h, payload]);
}

/** Write `bytes` on a fresh connection; resolves when the proxy closed it or after a short while. */
function rawConnection(bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(), 100);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function healthy(): Promise<void> {
  const client = newJsonClient(proxy.address);
  try {
    const r = await unary(client, { payload: 'ok' }, { deadlineMs: 30_000 });
    assert.equal(r.err, undefined, r.err?.details);
    assert.equal(r.res?.payload, 'ok');
  } finally {
    client.close();
  }
}

test('raw frames: random types, flags, stream ids and payloads after the preface', async (t) => {
  const g = new Gen(21);
  const heap = heapMiB();
  const batch: Promise<void>[] = [];
  for (let c = 0; c < 300; c++) {
    const frames: Buffer[] = [PREFACE];
    if (g.chance(0.8)) frames.push(frame(4, 0, 0, Buffer.alloc(0))); // SETTINGS
    for (let i = 0, n = 1 + g.int(8); i < n; i++) {
      const type = g.chance(0.8) ? g.int(10) : g.int(256);
      const stream = g.pick([0, 1, 3, 2, 0x7fffffff, g.int(2 ** 31)]);
      const len = g.pick([0, 1, 4, 5, 8, 9, 64, 1000, 16_384, 16_385]);
      frames.push(frame(type, g.int(256), stream, g.bytes(len)));
    }
    if (g.chance(0.1)) frames.push(g.bytes(g.int(2000)));
    batch.push(rawConnection(Buffer.concat(frames)));
    if (batch.length === 20) await Promise.all(batch.splice(0));
  }
  await Promise.all(batch);
  // Garbage without a preface, and a preface cut short.
  await rawConnection(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await rawConnection(PREFACE.subarray(0, 10));
  await healthy();
  await until(
    () => proxy.stats.active === 0,
    60_000,
    5,
    'every proxied stream ended (proxy.stats.active at 0)',
  );
  const grown = heapMiB() - heap;
  t.diagnostic(`live heap +${grown.toFixed(1)} MiB after full collections`);
  assert.ok(grown < 64, `live heap grew ${grown.toFixed(1)} MiB`);
});

test('requests: huge and many headers, invalid grpc-timeout, odd paths and content types', async () => {
  const g = new Gen(22);
  const session = http2.connect(`http://${proxy.address}`);
  session.on('error', () => {});
  const outcomes = new Map<string, number>();
  const count = (k: string): void => void outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
  for (let i = 0; i < 2000; i++) {
    const headers: http2.OutgoingHttpHeaders = {
      ':method': g.chance(0.9) ? 'POST' : g.pick(['GET', 'PUT', 'X']),
      ':path': g.chance(0.8)
        ? `/${JSON_SERVICE}/Unary`
        : g.pick(['/', '/a/b/c', `/${'x'.repeat(4000)}`, '/%00']),
      'content-type': g.chance(0.9) ? 'application/grpc' : g.pick(['text/plain', 'application/grpcx', '']),
      te: 'trailers',
    };
    if (g.chance(0.5))
      headers['grpc-timeout'] = g.pick([
        g.string('0123456789HMSmun', 12),
        '2562047H',
        '0n',
        '-1S',
        '1e9S',
        '999999999H',
        '',
      ]);
    if (g.chance(0.05)) headers['x-big'] = 'v'.repeat(20_000);
    if (g.chance(0.05)) for (let h = 0; h < 300; h++) headers[`x-h${h}`] = 'v';
    if (g.chance(0.05)) headers['grpc-kube-test-bin'] = g.string('abc', 50);
    const outcome = await new Promise<string>((resolve) => {
      let req: http2.ClientHttp2Stream;
      try {
        req = session.request(headers);
      } catch {
        resolve('refused-locally');
        return;
      }
      let status = 'no-status';
      req.on('response', (h) => {
        if (h['grpc-status'] !== undefined) status = `grpc-${String(h['grpc-status'])}`;
        else status = `http-${String(h[':status'])}`;
      });
      req.on('trailers', (h) => (status = `grpc-${String(h['grpc-status'])}`));
      req.on('data', () => {});
      req.on('error', () => (status = 'reset'));
      req.on('close', () => resolve(status));
      // An empty JSON message, or garbage instead of a gRPC frame.
      req.end(g.chance(0.9) ? Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]) : g.bytes(g.int(100)));
    });
    count(outcome);
    if (session.destroyed || session.closed) break;
  }
  session.close();
  // Most requests were good enough to be served; every one ended one way or another.
  // Every request ended with a status or a reset, never silently.
  assert.equal(outcomes.get('no-status'), undefined, JSON.stringify([...outcomes]));
  assert.ok((outcomes.get('grpc-0') ?? 0) > 500, JSON.stringify([...outcomes]));
  await until(
    () => proxy.stats.active === 0 && backend.inFlight === 0,
    60_000,
    5,
    'every proxied stream ended (proxy.stats.active and backend.inFlight at 0)',
  );
  await healthy();
});

test('stream floods and reset storms on one connection', async (t) => {
  const g = new Gen(23);
  const heap = heapMiB();
  for (let round = 0; round < 4; round++) {
    const session = http2.connect(`http://${proxy.address}`);
    session.on('error', () => {});
    await new Promise<void>((resolve) => session.once('connect', () => resolve()));
    const streams: http2.ClientHttp2Stream[] = [];
    for (let i = 0; i < 1500; i++) {
      if (session.destroyed) break;
      let s: http2.ClientHttp2Stream;
      try {
        s = session.request({
          ':method': 'POST',
          ':path': `/${JSON_SERVICE}/Unary`,
          'content-type': 'application/grpc',
          te: 'trailers',
        });
      } catch {
        break;
      }
      s.on('error', () => {});
      s.on('data', () => {});
      // Half are reset at once (the storm); the rest stay open, never ending their request (the flood).
      if (round % 2 === 0 && g.chance(0.5)) s.close(http2.constants.NGHTTP2_CANCEL);
      else s.write(Buffer.from([0, 0, 0, 0, 2]));
      streams.push(s);
    }
    await new Promise((r) => setTimeout(r, 50));
    session.destroy();
  }
  await until(
    () => proxy.stats.active === 0 && backend.inFlight === 0,
    60_000,
    5,
    'every proxied stream ended (proxy.stats.active and backend.inFlight at 0)',
  );
  const grown = heapMiB() - heap;
  t.diagnostic(`live heap +${grown.toFixed(1)} MiB after full collections`);
  assert.ok(grown < 64, `live heap grew ${grown.toFixed(1)} MiB`);
  await healthy();
});
