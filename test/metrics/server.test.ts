import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { createServerKit } from 'grpc-kube/internal/server/index.js';
import { serverCallMetrics } from 'grpc-kube/internal/metrics/index.js';
import { until } from '../helpers/kube.js';
import { installTestMetrics, pointsOf, total } from '../helpers/metrics.js';
import { echo, ECHO_SERVICE } from '../server/echo.js';

test('server kit series: serving phase, in-flight calls, one GOAWAY and the drain steps timed', async (t) => {
  const m = installTestMetrics();
  t.after(() => m.close());
  const server = new grpc.Server();
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  server.addService(
    ECHO_SERVICE,
    serverCallMetrics(ECHO_SERVICE, {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        if (call.request.toString() === 'hold') void held.then(() => cb(null, Buffer.from('late')));
        else cb(null, call.request);
      },
    }),
  );
  const signals = new EventEmitter();
  const kit = createServerKit(server, {
    signalSource: signals,
    exit: null,
    propagationDelayMs: 50,
    graceMs: 60_000,
  });
  t.after(() => {
    kit.close();
    server.forceShutdown();
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.after(() => client.close());
  const phaseNow = async (): Promise<Record<string, number>> =>
    Object.fromEntries(
      pointsOf(await m.collect(), 'grpc_kube.server.serving').map((p) => [
        p.attributes['grpc_kube.server.phase'],
        p.value,
      ]),
    );

  assert.deepEqual(await phaseNow(), { starting: 1, serving: 0, draining: 0, stopped: 0 });
  kit.setServing();
  assert.deepEqual(await phaseNow(), { starting: 0, serving: 1, draining: 0, stopped: 0 });
  assert.equal((await echo(client, 'quick')).code, grpc.status.OK);

  const slow = echo(client, 'hold', 120_000);
  await until(async () => total(await m.collect(), 'grpc_kube.server.in_flight') === 1, 30_000, 10);
  signals.emit('SIGTERM');
  await until(() => kit.phase === 'draining');
  assert.deepEqual(await phaseNow(), { starting: 0, serving: 0, draining: 1, stopped: 0 });
  await until(async () => total(await m.collect(), 'grpc_kube.server.goaways') === 1, 30_000, 10);
  release();
  assert.equal((await slow).code, grpc.status.OK, 'the call in flight finished after GOAWAY');
  const result = await kit.shutdown();
  assert.equal(result.forced, false);

  const all = await m.collect();
  assert.equal(total(all, 'grpc_kube.server.goaways'), 1);
  assert.equal(total(all, 'grpc_kube.server.in_flight'), 0);
  const steps = pointsOf(all, 'grpc_kube.server.drain.phase.duration');
  assert.deepEqual(steps.map((p) => [p.attributes['grpc_kube.drain.step'], p.count]).sort(), [
    ['goaway', 1],
    ['propagation', 1],
  ]);
  const propagation = steps.find((p) => p.attributes['grpc_kube.drain.step'] === 'propagation');
  // Its 50 ms delay, less the millisecond a timer may fire early by (Node rounds timer times).
  assert.ok((propagation?.sum ?? 0) >= 0.049, `propagation step ${propagation?.sum} s`);
  assert.equal(total(all, 'grpc.server.call.duration', { 'grpc.status': 'OK' }), 2);
  assert.deepEqual(await phaseNow(), { starting: 0, serving: 0, draining: 0, stopped: 1 });
});
