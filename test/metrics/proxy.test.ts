import { test } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { GrpcProxy } from '@grpc-kube/proxy/internal/index.js';
import { installTestMetrics, pointsOf, total } from '../helpers/metrics.js';
import { newJsonClient, startJsonServer, unary, type JsonServer } from '../proxy/fixtures/json-service.js';

test('proxy series: requests and latency per route, backend and status; retries and ejections of a dead backend', async (t) => {
  const m = installTestMetrics();
  t.after(() => m.close());
  const live: JsonServer[] = [];
  for (let i = 0; i < 2; i++) {
    const s = await startJsonServer(`b${i}`, `127.0.13.${i + 1}`);
    t.after(() => s.kill());
    live.push(s);
  }
  const dead = await startJsonServer('dead', '127.0.13.9');
  dead.kill();
  // Refuses every stream (REFUSED_STREAM: not processed, so the proxy sends the request elsewhere).
  let refused = 0;
  const refuser = http2.createServer();
  refuser.on('stream', (s) => {
    s.on('error', () => {});
    refused++;
    s.close(http2.constants.NGHTTP2_REFUSED_STREAM);
  });
  await new Promise<void>((r) => refuser.listen(0, '127.0.13.10', r));
  t.after(() => refuser.close());
  const eps = [...live, dead].map((s) => ({ address: s.address.split(':')[0] as string, port: s.port }));
  eps.push({ address: '127.0.13.10', port: (refuser.address() as { port: number }).port });
  const proxy = new GrpcProxy({
    mode: 'ingress',
    target: 'app.prod:9000',
    staticTargets: { 'app.prod:9000': eps },
  });
  await proxy.listen();
  t.after(() => proxy.close());
  const client = newJsonClient(proxy.address);
  t.after(() => client.close());

  for (let i = 0; i < 20; i++) assert.equal((await unary(client, { payload: 'x' })).err, undefined);
  for (let i = 0; i < 3; i++) {
    const r = await unary(client, { fail: { code: grpc.status.NOT_FOUND, message: 'nope' } });
    assert.equal(r.err?.code, grpc.status.NOT_FOUND);
  }

  const all = await m.collect();
  const requests = pointsOf(all, 'grpc_kube.proxy.requests');
  assert.equal(total(all, 'grpc_kube.proxy.requests'), 23);
  assert.equal(total(all, 'grpc_kube.proxy.requests', { 'grpc.status': 'OK' }), 20);
  assert.equal(total(all, 'grpc_kube.proxy.requests', { 'grpc.status': 'NOT_FOUND' }), 3);
  const byBackend = new Map<string, number>();
  for (const p of requests) {
    const b = String(p.attributes['grpc_kube.backend']);
    byBackend.set(b, (byBackend.get(b) ?? 0) + p.value);
  }
  // Every request ended on a live backend, each served as many as it counted.
  assert.deepEqual(
    [...byBackend.entries()].sort(),
    live.map((s) => [s.address, s.started.Unary ?? 0]).sort(),
  );
  const routes = new Set(requests.map((p) => p.attributes['grpc_kube.route']));
  assert.equal(routes.size, 1);
  assert.match(String([...routes][0]), /app/);
  assert.equal(total(all, 'grpc_kube.proxy.request.duration'), 23);
  // The dead backend refused connections: it was ejected, and the requests sent there went again.
  assert.ok(refused >= 1, 'the refusing backend was tried');
  assert.ok(total(all, 'grpc_kube.proxy.retries') >= refused);
  assert.equal(
    total(all, 'grpc_kube.proxy.retries', { 'grpc_kube.route': [...routes][0] }),
    proxy.stats.retries,
  );
  const ejections = pointsOf(all, 'grpc_kube.proxy.ejections');
  assert.deepEqual(
    ejections.map((p) => p.attributes['grpc_kube.backend']),
    [dead.address],
  );
});
