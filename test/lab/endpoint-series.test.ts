// The report's per-endpoint curves: endpointSeries from hand-made samples (sums, means, gaps, the
// policy filter), and GaugeSampler reading a real grpc_kube_ewma balancer's gauges while real RPCs
// wait on a real server — no MeterProvider set.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { clientDefaults } from 'grpc-kube/internal/index.js';
import { endpointSeries, policyOf, type GaugeSample } from '@grpc-kube/lab/internal/lab/metrics.js';
import { GaugeSampler } from '@grpc-kube/lab/internal/lab/gauge-sampler.js';
import { newEchoClient, startEchoServer, who } from '../helpers/echo.js';
import { until } from '../helpers/kube.js';

const O = 'grpc_kube.balancer.outstanding';
const L = 'grpc_kube.balancer.ewma_latency';
const at = (policy: string, endpoint: string) => ({
  'grpc_kube.policy': policy,
  'grpc_kube.endpoint': endpoint,
});

test('endpointSeries: outstanding summed and latency averaged over balancers, gaps as null, one policy', () => {
  const samples: GaugeSample[] = [
    {
      tMs: 0,
      points: [
        { name: O, value: 2, attributes: at('p2c', 'a:1') },
        { name: O, value: 3, attributes: at('p2c', 'a:1') },
        { name: L, value: 0.01, attributes: at('p2c', 'a:1') },
        { name: L, value: 0.03, attributes: at('p2c', 'a:1') },
        { name: O, value: 9, attributes: at('ewma', 'a:1') },
      ],
    },
    {
      tMs: 250,
      points: [
        { name: O, value: 1, attributes: at('p2c', 'b:1') },
        { name: L, value: 0.005, attributes: at('p2c', 'b:1') },
      ],
    },
  ];
  const s = endpointSeries(samples, { policy: 'p2c', label: (e) => (e === 'a:1' ? 'pod-a' : undefined) });
  assert.deepEqual(s, {
    policy: 'p2c',
    tMs: [0, 250],
    endpoints: [
      { endpoint: 'a:1', label: 'pod-a', outstanding: [5, null], latencyMs: [20, null] },
      { endpoint: 'b:1', label: 'b:1', outstanding: [null, 1], latencyMs: [null, 5] },
    ],
  });
  assert.equal(endpointSeries(samples, { policy: 'round_robin' }), undefined);
  // A policy whose estimate is 0 throughout (P2C keeps none) has no latency curve.
  const p2c = endpointSeries([{ tMs: 0, points: [{ name: L, value: 0, attributes: at('p2c', 'a:1') }] }], {
    policy: 'p2c',
  });
  assert.deepEqual(p2c?.endpoints[0]?.latencyMs, [null]);
  assert.equal(policyOf(clientDefaults({ lbPolicy: 'grpc_kube_p2c' })), 'grpc_kube_p2c');
  assert.equal(policyOf({}), undefined);
  assert.equal(policyOf({ 'grpc.service_config': '{not json' }), undefined);
});

test('GaugeSampler reads a real balancer: RPCs outstanding on each endpoint while they wait, and its latency estimate', async (t) => {
  // The servers hold each call 3 s: the six must all be in flight at once, even when a loaded machine
  // spreads their arrival or stalls the poll below.
  const holdMs = 3000;
  const a = await startEchoServer('pod-a', '127.0.16.1', 0, holdMs);
  const b = await startEchoServer('pod-b', '127.0.16.2', a.port, holdMs);
  t.after(() => {
    a.kill();
    b.kill();
  });
  const client = newEchoClient(
    `ipv4:${a.host}:${a.port},${b.host}:${b.port}`,
    clientDefaults({ lbPolicy: 'grpc_kube_ewma', retry: false }),
  );
  t.after(() => client.close());
  await who(client, 30_000, { delayMs: 0 });
  await who(client, 30_000, { delayMs: 0 });
  let now = 1000;
  const sampler = new GaugeSampler({ everyMs: 60_000, clock: () => now });
  sampler.start(1000);
  const calls = Array.from({ length: 6 }, () => who(client, 30_000));
  await until(() => a.inFlight + b.inFlight === 6, holdMs, 5);
  now = 1250;
  sampler.sample();
  await Promise.all(calls);
  now = 1500;
  sampler.sample();
  const samples = sampler.stop();
  const series = endpointSeries(samples, { policy: 'grpc_kube_ewma' });
  assert.ok(series);
  assert.deepEqual(series.tMs, [0, 250, 500]);
  const byEndpoint = new Map(series.endpoints.map((e) => [e.endpoint, e]));
  const ea = byEndpoint.get(`${a.host}:${a.port}`);
  const eb = byEndpoint.get(`${b.host}:${b.port}`);
  assert.ok(ea && eb, [...byEndpoint.keys()].join(', '));
  // While the six calls waited on the servers, the balancer counted them all, by endpoint.
  assert.equal((ea.outstanding[1] ?? 0) + (eb.outstanding[1] ?? 0), 6);
  assert.deepEqual([ea.outstanding[2], eb.outstanding[2]], [0, 0]);
  // The estimate of an endpoint that took slow calls (the servers held them 3 s) rose from what
  // the quick first calls left.
  const took = [ea, eb].filter((e) => (e.outstanding[1] ?? 0) > 0);
  assert.ok(took.length > 0);
  for (const e of took) assert.ok((e.latencyMs[2] ?? 0) > (e.latencyMs[0] ?? Infinity), JSON.stringify(e));
});
