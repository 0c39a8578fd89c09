import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { setup, clientDefaults } from 'grpc-kube/internal/index.js';
import { newEchoClient, startEchoServer, who, type EchoServer } from '../helpers/echo.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { installTestMetrics, pointsOf, total } from '../helpers/metrics.js';
import { echo, startEchoServer as startRawServer } from '../server/echo.js';

test('resolver and balancer series: endpoints by state, list/watch starts, picks per endpoint, outstanding, EWMA, slow start, panic', async (t) => {
  const m = installTestMetrics();
  t.after(() => m.close());
  const api = await startApi();
  const servers: EchoServer[] = [];
  for (let i = 0; i < 4; i++)
    servers.push(await startEchoServer(`pod-${i}`, `127.0.12.${i + 1}`, servers[0]?.port ?? 0));
  const [a, b, c, d] = servers as [EchoServer, EchoServer, EchoServer, EchoServer];
  const gk = setup({ kubeConfig: api.kubeConfigYaml(api.adminToken) });
  t.after(async () => {
    await gk.close();
    for (const s of servers) s.kill();
    await api.close();
  });
  const slices = new SliceWriter(api, 'hello', a.port);
  slices.put('hello-a', [
    { ip: a.host, pod: a.name },
    { ip: b.host, pod: b.name },
    { ip: c.host, pod: c.name, ready: false, serving: true, terminating: true },
    { ip: d.host, pod: d.name, ready: false },
  ]);
  const client = newEchoClient(
    `kubernetes:///hello.default:${a.port}`,
    clientDefaults({ lbPolicy: 'grpc_kube_ewma', retry: false }),
  );
  t.after(() => client.close());
  const N = 40;
  for (let i = 0; i < N; i++) await who(client, 30_000);

  const all = await m.collect();
  const target = `default/hello port ${a.port}`;
  const byState = Object.fromEntries(
    pointsOf(all, 'grpc_kube.resolver.endpoints', { 'grpc_kube.target': target }).map((p) => [
      p.attributes['grpc_kube.endpoint.state'],
      p.value,
    ]),
  );
  assert.deepEqual(byState, { ready: 2, draining: 1, unready: 1 });
  const svc = { 'grpc_kube.service': 'default/hello' };
  assert.equal(total(all, 'grpc_kube.resolver.list.started', svc), 1);
  assert.equal(total(all, 'grpc_kube.resolver.list.duration', svc), 1);
  assert.ok(total(all, 'grpc_kube.resolver.watch.started', svc) >= 1);
  const age = pointsOf(all, 'grpc_kube.resolver.time_since_last_event', svc);
  assert.equal(age.length, 1);
  assert.ok((age[0]?.value ?? -1) >= 0);

  const policy = { 'grpc_kube.policy': 'grpc_kube_ewma' };
  const picks = pointsOf(all, 'grpc_kube.balancer.picks', policy);
  assert.deepEqual(
    picks.map((p) => p.attributes['grpc_kube.endpoint']).sort(),
    [`${a.host}:${a.port}`, `${b.host}:${b.port}`],
    'only the ready endpoints are picked',
  );
  assert.equal(total(all, 'grpc_kube.balancer.picks', policy), N);
  assert.equal(a.served + b.served, N);
  assert.equal(
    total(all, 'grpc_kube.balancer.picks', { ...policy, 'grpc_kube.endpoint': `${a.host}:${a.port}` }),
    a.served,
  );
  assert.deepEqual(
    new Set(pointsOf(all, 'grpc_kube.balancer.outstanding', policy).map((p) => p.value)),
    new Set([0]),
  );
  // The resolver hands the balancer the ready endpoints only (draining ones when none is ready).
  assert.equal(pointsOf(all, 'grpc_kube.balancer.outstanding', policy).length, 2, 'one series per endpoint');
  const ewma = pointsOf(all, 'grpc_kube.balancer.ewma_latency', {
    ...policy,
    'grpc_kube.endpoint': `${a.host}:${a.port}`,
  });
  assert.ok((ewma[0]?.value ?? 0) > 0 && (ewma[0]?.value ?? 1) < 10, `EWMA in seconds: ${ewma[0]?.value}`);
  assert.deepEqual(
    new Set(pointsOf(all, 'grpc_kube.balancer.slow_start_weight', policy).map((p) => p.value)),
    new Set([1]),
  );
  assert.deepEqual(
    pointsOf(all, 'grpc_kube.balancer.panic', policy).map((p) => p.value),
    [0],
  );

  // A call in flight shows as outstanding on the endpoint that holds it.
  // Held until released: a fixed delay could end before the collection on a stalled machine.
  const slow = who(client, 120_000, { hold: true });
  await until(() => a.inFlight + b.inFlight === 1);
  const during = await m.collect();
  assert.equal(total(during, 'grpc_kube.balancer.outstanding', policy), 1);
  a.release();
  b.release();
  await slow;

  // The API refusing the list shows as errors by code.
  const gk2 = setup({
    kubeConfig: api.kubeConfigYaml('no-rbac'),
    source: { backoff: { initialMs: 20, maxMs: 50 } },
  });
  api.addToken('no-rbac', { user: 'system:serviceaccount:default:app', rules: [] });
  t.after(() => gk2.close());
  const denied = newEchoClient(`kubernetes:///other.default:${a.port}`);
  t.after(() => denied.close());
  await assert.rejects(who(denied, 1000));
  await until(
    async () =>
      total(await m.collect(), 'grpc_kube.resolver.errors', { 'grpc_kube.service': 'default/other' }) >= 2,
    30_000,
    20,
  );
  const errors = pointsOf(await m.collect(), 'grpc_kube.resolver.errors', {
    'grpc_kube.service': 'default/other',
  });
  assert.deepEqual(
    errors.map((p) => p.attributes['error.type']),
    ['GK_ERR_KUBE_FORBIDDEN'],
  );
});

test('balancer ejections: a server failing every call is ejected once, counted on its endpoint', async (t) => {
  const m = installTestMetrics();
  t.after(() => m.close());
  const good = [];
  for (let i = 0; i < 2; i++) {
    const s = await startRawServer((_call, cb) => cb(null, Buffer.from('ok')));
    t.after(() => s.server.forceShutdown());
    good.push(s);
  }
  const bad = await startRawServer((_call, cb) => cb({ code: grpc.status.INTERNAL, details: 'broken' }));
  t.after(() => bad.server.forceShutdown());
  const client = new grpc.Client(
    `ipv4:${[...good, bad].map((s) => s.address).join(',')}`,
    grpc.credentials.createInsecure(),
    clientDefaults({
      lbPolicy: 'grpc_kube_p2c',
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
  let streak = 0;
  for (let i = 0; i < 3000 && streak < 30; i++)
    streak = (await echo(client, 'x')).code === grpc.status.OK ? streak + 1 : 0;
  assert.equal(streak, 30, 'the broken server was never ejected');
  const all = await m.collect();
  const ejections = pointsOf(all, 'grpc_kube.balancer.ejections', { 'grpc_kube.policy': 'grpc_kube_p2c' });
  assert.deepEqual(
    ejections.map((p) => [p.attributes['grpc_kube.endpoint'], p.value]),
    [[bad.address, 1]],
  );
});
