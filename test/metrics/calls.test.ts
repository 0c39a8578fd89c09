import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { clientCallMetrics, serverCallMetrics } from 'grpc-kube/internal/metrics/index.js';
import { clientDefaults } from 'grpc-kube/internal/client/defaults.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { installTestMetrics, pointsOf, total } from '../helpers/metrics.js';

// A real grpc-js server and client on loopback, JSON on the wire.
interface Req {
  text?: string;
  fail?: number;
  failFirst?: number;
  n?: number;
  key?: string;
}
const json = {
  serialize: (v: unknown): Buffer => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer): unknown => JSON.parse(b.toString() || '{}'),
};
const method = (path: string, responseStream: boolean): grpc.MethodDefinition<unknown, unknown> => ({
  path,
  requestStream: false,
  responseStream,
  requestSerialize: json.serialize,
  requestDeserialize: json.deserialize,
  responseSerialize: json.serialize,
  responseDeserialize: json.deserialize,
});
const service: grpc.ServiceDefinition = {
  unary: method('/grpckube.test.Calls/Unary', false),
  stream: method('/grpckube.test.Calls/Stream', true),
};
const CallsClient = grpc.makeGenericClientConstructor(service, 'Calls');
type Calls = grpc.Client & {
  unary(req: Req, cb: (err: grpc.ServiceError | null, res?: Req) => void): grpc.ClientUnaryCall;
  stream(req: Req): grpc.ClientReadableStream<Req>;
};

async function startServer(): Promise<{ port: number; stop(): void }> {
  const seen = new Map<string, number>();
  const server = new grpc.Server();
  const impl: grpc.UntypedServiceImplementation = {
    unary: (call: grpc.ServerUnaryCall<Req, Req>, cb: grpc.sendUnaryData<Req>) => {
      const r = call.request;
      const n = (seen.get(r.key ?? '') ?? 0) + 1;
      seen.set(r.key ?? '', n);
      if (r.failFirst !== undefined && n <= r.failFirst)
        cb({ code: grpc.status.UNAVAILABLE, details: 'not yet' });
      else if (r.fail !== undefined) cb({ code: r.fail, details: 'asked to fail' });
      else cb(null, { text: `re:${r.text ?? ''}` });
    },
    stream: (call: grpc.ServerWritableStream<Req, Req>) => {
      for (let i = 0; i < (call.request.n ?? 0); i++) call.write({ text: `m${i}` });
      call.end();
    },
  };
  server.addService(service, serverCallMetrics(service, impl));
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { port, stop: () => server.forceShutdown() };
}

function client(port: number, options: grpc.ChannelOptions = {}): Calls {
  return new CallsClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.enable_http_proxy': 0,
    ...options,
  }) as unknown as Calls;
}

function unary(c: Calls, req: Req): Promise<{ code: number; res?: Req }> {
  return new Promise((resolve) =>
    c.unary(req, (err, res) => resolve(err ? { code: err.code } : { code: 0, ...(res ? { res } : {}) })),
  );
}

const bytes = (v: unknown): number => json.serialize(v).length;

test('client and server call metrics: counts, status codes, method names and message sizes (gRFC A66)', async (t) => {
  const m = installTestMetrics();
  t.after(() => m.close());
  const server = await startServer();
  t.after(() => server.stop());
  const target = `127.0.0.1:${server.port}`;
  const c = client(server.port, {
    interceptors: [clientCallMetrics({ target, services: [service], locality: () => 'zone-a' })],
  });
  t.after(() => c.close());

  const requests: Req[] = [{ text: 'a' }, { text: 'bb' }, { text: 'ccc' }];
  for (const r of requests) assert.equal((await unary(c, r)).code, 0);
  for (let i = 0; i < 2; i++)
    assert.equal((await unary(c, { fail: grpc.status.NOT_FOUND })).code, grpc.status.NOT_FOUND);

  const all = await m.collect();
  const M = 'grpckube.test.Calls/Unary';
  assert.equal(total(all, 'grpc.client.attempt.started', { 'grpc.method': M, 'grpc.target': target }), 5);
  assert.equal(total(all, 'grpc.client.call.duration', { 'grpc.method': M, 'grpc.status': 'OK' }), 3);
  assert.equal(total(all, 'grpc.client.call.duration', { 'grpc.method': M, 'grpc.status': 'NOT_FOUND' }), 2);
  const okAttempts = pointsOf(all, 'grpc.client.attempt.duration', { 'grpc.status': 'OK' });
  assert.equal(okAttempts.length, 1);
  assert.equal(okAttempts[0]?.attributes['grpc.lb.locality'], 'zone-a');
  const sent = pointsOf(all, 'grpc.client.attempt.sent_total_compressed_message_size', {
    'grpc.status': 'OK',
  });
  assert.equal(
    sent[0]?.sum,
    requests.reduce((n, r) => n + bytes(r), 0),
  );
  const rcvd = pointsOf(all, 'grpc.client.attempt.rcvd_total_compressed_message_size', {
    'grpc.status': 'OK',
  });
  assert.equal(
    rcvd[0]?.sum,
    requests.reduce((n, r) => n + bytes({ text: `re:${r.text}` }), 0),
  );
  assert.equal(
    pointsOf(all, 'grpc.client.attempt.rcvd_total_compressed_message_size', { 'grpc.status': 'NOT_FOUND' })[0]
      ?.sum,
    0,
  );

  assert.equal(total(all, 'grpc.server.call.started', { 'grpc.method': M }), 5);
  assert.equal(total(all, 'grpc.server.call.duration', { 'grpc.method': M, 'grpc.status': 'OK' }), 3);
  assert.equal(total(all, 'grpc.server.call.duration', { 'grpc.method': M, 'grpc.status': 'NOT_FOUND' }), 2);
  const srvRcvd = pointsOf(all, 'grpc.server.call.rcvd_total_compressed_message_size', {
    'grpc.status': 'OK',
  });
  assert.equal(srvRcvd[0]?.sum, sent[0]?.sum);
  const srvSent = pointsOf(all, 'grpc.server.call.sent_total_compressed_message_size', {
    'grpc.status': 'OK',
  });
  assert.equal(srvSent[0]?.sum, rcvd[0]?.sum);
  assert.deepEqual(
    pointsOf(all, 'grpc_kube.server.in_flight').map((p) => p.value),
    [0],
  );
  // Durations are real times: positive, and a call's covers its attempt.
  const callSum = pointsOf(all, 'grpc.client.call.duration', { 'grpc.status': 'OK' })[0]?.sum ?? 0;
  assert.ok(callSum > 0 && callSum >= (okAttempts[0]?.sum ?? Infinity));
});

test('client call metrics count every attempt of a retried call, one call duration', async (t) => {
  const m = installTestMetrics();
  t.after(() => m.close());
  const server = await startServer();
  t.after(() => server.stop());
  const serviceConfig = {
    methodConfig: [
      {
        name: [{ service: 'grpckube.test.Calls' }],
        retryPolicy: {
          maxAttempts: 4,
          initialBackoff: '0.01s',
          maxBackoff: '0.01s',
          backoffMultiplier: 1,
          retryableStatusCodes: ['UNAVAILABLE'],
        },
      },
    ],
  };
  const c = client(server.port, {
    interceptors: [clientCallMetrics({ target: 'retry-target' })],
    'grpc.service_config': JSON.stringify(serviceConfig),
  });
  t.after(() => c.close());
  assert.equal((await unary(c, { key: 'k1', failFirst: 2, text: 'x' })).code, 0);
  assert.equal((await unary(c, { key: 'k2', text: 'y' })).code, 0);

  const all = await m.collect();
  assert.equal(total(all, 'grpc.client.attempt.started', { 'grpc.target': 'retry-target' }), 4);
  assert.equal(
    total(all, 'grpc.client.call.duration', { 'grpc.target': 'retry-target', 'grpc.status': 'OK' }),
    2,
  );
  // The server saw every attempt: two failed, two answered.
  assert.equal(total(all, 'grpc.server.call.duration', { 'grpc.status': 'UNAVAILABLE' }), 2);
  assert.equal(total(all, 'grpc.server.call.duration', { 'grpc.status': 'OK' }), 2);
  // No locality function: no grpc.lb.locality attribute.
  assert.ok(
    pointsOf(all, 'grpc.client.attempt.duration').every((p) => !('grpc.lb.locality' in p.attributes)),
  );
});

test('server streaming: every message is sized on both sides', async (t) => {
  const m = installTestMetrics();
  t.after(() => m.close());
  const server = await startServer();
  t.after(() => server.stop());
  const c = client(server.port, { interceptors: [clientCallMetrics({ services: [service] })] });
  t.after(() => c.close());
  const got: Req[] = [];
  await new Promise<void>((resolve, reject) => {
    const s = c.stream({ n: 4 });
    s.on('data', (d: Req) => got.push(d));
    s.on('error', reject);
    s.on('end', () => resolve());
  });
  assert.equal(got.length, 4);
  const expected = got.reduce((n, r) => n + bytes(r), 0);
  const all = await m.collect();
  const M = { 'grpc.method': 'grpckube.test.Calls/Stream', 'grpc.status': 'OK' };
  assert.equal(pointsOf(all, 'grpc.server.call.sent_total_compressed_message_size', M)[0]?.sum, expected);
  assert.equal(pointsOf(all, 'grpc.client.attempt.rcvd_total_compressed_message_size', M)[0]?.sum, expected);
  assert.equal(total(all, 'grpc.client.call.duration', { ...M, 'grpc.target': 'other' }), 1);
});

test('sizes come from the bytes grpc-js serializes: right without `services`, per call under concurrency', async (t) => {
  const m = installTestMetrics();
  t.after(() => m.close());
  const server = await startServer();
  t.after(() => server.stop());
  const c = client(server.port, { interceptors: [clientCallMetrics()] });
  t.after(() => c.close());
  // Concurrent calls of very different sizes: a count leaking from one call into another would move
  // the histogram's min or max off the smallest and largest single-call sizes.
  const requests = [1, 500, 3, 2000, 40].map((n) => ({ text: 'x'.repeat(n) }));
  const results = await Promise.all(requests.map((r) => unary(c, r)));
  assert.ok(results.every((r) => r.code === 0));
  const got: Req[] = [];
  await new Promise<void>((resolve, reject) => {
    const s = c.stream({ n: 3 });
    s.on('data', (d: Req) => got.push(d));
    s.on('error', reject);
    s.on('end', () => resolve());
  });
  const all = await m.collect();
  const U = { 'grpc.method': 'grpckube.test.Calls/Unary', 'grpc.status': 'OK' };
  const sent = pointsOf(all, 'grpc.client.attempt.sent_total_compressed_message_size', U)[0];
  const sizes = requests.map(bytes);
  assert.equal(
    sent?.sum,
    sizes.reduce((a, b) => a + b, 0),
  );
  assert.equal(sent?.min, Math.min(...sizes));
  assert.equal(sent?.max, Math.max(...sizes));
  const replies = requests.map((r) => bytes({ text: `re:${r.text}` }));
  const rcvd = pointsOf(all, 'grpc.client.attempt.rcvd_total_compressed_message_size', U)[0];
  assert.equal(
    rcvd?.sum,
    replies.reduce((a, b) => a + b, 0),
  );
  assert.equal(rcvd?.min, Math.min(...replies));
  assert.equal(rcvd?.max, Math.max(...replies));
  const S = { 'grpc.method': 'grpckube.test.Calls/Stream', 'grpc.status': 'OK' };
  assert.equal(
    pointsOf(all, 'grpc.client.attempt.rcvd_total_compressed_message_size', S)[0]?.sum,
    got.reduce((n, r) => n + bytes(r), 0),
  );
  assert.equal(
    pointsOf(all, 'grpc.client.attempt.sent_total_compressed_message_size', S)[0]?.sum,
    bytes({ n: 3 }),
  );
});

test('a method definition shared between calls is left as it was and sized by serializing again', async (t) => {
  const m = installTestMetrics();
  t.after(() => m.close());
  const server = await startServer();
  t.after(() => server.stop());
  const shared = { ...service.unary } as grpc.MethodDefinition<unknown, unknown>;
  const own = { serialize: shared.requestSerialize, deserialize: shared.responseDeserialize };
  // A callInvocationTransformer may hand grpc-js the same definition object for every call.
  const c = client(server.port, {
    interceptors: [clientCallMetrics({ services: [service] })],
    callInvocationTransformer: (props: grpc.CallProperties<unknown, unknown>) => ({
      ...props,
      methodDefinition: shared,
    }),
  } as grpc.ChannelOptions);
  t.after(() => c.close());
  const requests = [{ text: 'a' }, { text: 'bbbb' }, { text: 'cc' }];
  for (const r of requests) assert.equal((await unary(c, r)).code, 0);
  assert.equal(shared.requestSerialize, own.serialize);
  assert.equal(shared.responseDeserialize, own.deserialize);
  const all = await m.collect();
  const U = { 'grpc.method': 'grpckube.test.Calls/Unary', 'grpc.status': 'OK' };
  assert.equal(
    pointsOf(all, 'grpc.client.attempt.sent_total_compressed_message_size', U)[0]?.sum,
    requests.reduce((n, r) => n + bytes(r), 0),
  );
  assert.equal(
    pointsOf(all, 'grpc.client.attempt.rcvd_total_compressed_message_size', U)[0]?.sum,
    requests.reduce((n, r) => n + bytes({ text: `re:${r.text}` }), 0),
  );
});

test('without a MeterProvider nothing is recorded and calls work as before', async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const c = client(server.port, { interceptors: [clientCallMetrics()] });
  t.after(() => c.close());
  assert.equal((await unary(c, { text: 'quiet' })).code, 0);
  const m = installTestMetrics();
  t.after(() => m.close());
  const before = await m.collect();
  assert.equal(total(before, 'grpc.client.attempt.started'), 0);
  assert.equal(total(before, 'grpc.server.call.started'), 0);
  // The same interceptor records once a provider is set: the provider is looked up per call.
  assert.equal((await unary(c, { text: 'loud' })).code, 0);
  const after = await m.collect();
  assert.equal(total(after, 'grpc.client.attempt.started'), 1);
  assert.equal(total(after, 'grpc.server.call.started'), 1);
});

test('clientDefaults({ callMetrics }) puts the interceptor first; a bad value names the option', () => {
  assert.equal(clientDefaults({ callMetrics: { target: 't' } }).interceptors?.length, 2);
  assert.equal(clientDefaults({ callMetrics: true, deadlineAwarePicks: false }).interceptors?.length, 1);
  assert.equal(clientDefaults().interceptors?.length, 1);
  assert.throws(
    () => clientDefaults({ callMetrics: 'yes' as unknown as boolean }),
    (e: unknown) => e instanceof InvalidOptionError && e.field === 'callMetrics',
  );
  assert.throws(
    () => clientCallMetrics({ target: '' }),
    (e: unknown) => e instanceof InvalidOptionError && e.field === 'callMetrics.target',
  );
});

test('attempt.started is one series per (method, target) however many channels record it, from zero for each provider', async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const target = `shared-target-${process.pid}`;
  const a = client(server.port, { interceptors: [clientCallMetrics({ target })] });
  const b = client(server.port, { interceptors: [clientCallMetrics({ target })] });
  t.after(() => (a.close(), b.close()));
  const first = installTestMetrics();
  assert.equal((await unary(a, { text: 'one' })).code, 0);
  assert.equal((await unary(b, { text: 'two' })).code, 0);
  assert.equal((await unary(b, { text: 'three' })).code, 0);
  const one = pointsOf(await first.collect(), 'grpc.client.attempt.started', { 'grpc.target': target });
  assert.deepEqual(
    one.map((p) => p.value),
    [3],
    'the two channels add up in one series, as a recorded counter would',
  );
  await first.close();
  const second = installTestMetrics();
  t.after(() => second.close());
  assert.equal((await unary(a, { text: 'four' })).code, 0);
  const two = pointsOf(await second.collect(), 'grpc.client.attempt.started', { 'grpc.target': target });
  assert.deepEqual(
    two.map((p) => p.value),
    [1],
    'a new provider counts from zero',
  );
});
