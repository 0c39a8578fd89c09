// The data-plane pieces together, as the lab runner assembles them: pod processes (spawnPod), the lab
// DNS server, grpc-js's own dns: resolver, the workload, the metrics. Scale-up 3 → 5 under a headless
// Service, without and with max connection age.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  LabDnsServer,
  dnsTarget,
  grpcUsesAlternativeResolver,
} from '@grpc-kube/lab/internal/lab/dns-server.js';
import { computeRunRecord, type PodTimeline } from '@grpc-kube/lab/internal/lab/metrics.js';
import type { PodProcess } from '@grpc-kube/lab/internal/lab/pod-main.js';

// grpc-js reads this when it loads; modules that import grpc-js are imported dynamically below.
process.env['GRPC_NODE_USE_ALTERNATIVE_RESOLVER'] = 'true';

const PORT = 50051;
const ROUND_ROBIN = JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] });

async function scaleUpRun(
  t: { after: (fn: () => unknown) => void },
  subnet: string,
  pod: { maxConnectionAgeMs?: number; maxConnectionAgeGraceMs?: number },
  channel: Record<string, number | string>,
  scheme: 'dns' | 'dns-poll' = 'dns',
  newPodsServed = false,
): Promise<ReturnType<typeof computeRunRecord>> {
  const { startWorkload } = await import('@grpc-kube/lab/internal/lab/workload.js');
  const { spawnPod } = await import('@grpc-kube/lab/internal/lab/pod-main.js');
  assert.ok(
    grpcUsesAlternativeResolver(),
    'grpc-js must resolve dns: with c-ares to reach the lab DNS server',
  );
  const dns = new LabDnsServer({ ttlS: 0 });
  t.after(() => dns.close());
  await dns.listen();
  const pods: PodProcess[] = [];
  const timeline: PodTimeline[] = [];
  let origin = 0;
  const start = async (i: number, isNew: boolean): Promise<void> => {
    const p = spawnPod({ name: `hello-${i}`, host: `${subnet}.${i}`, port: PORT, ...pod });
    t.after(() => p.kill('SIGKILL'));
    pods.push(p);
    await p.ready;
    timeline.push({
      name: p.config.name,
      readyAtMs: isNew ? performance.now() - origin : 0,
      terminatingAtMs: null,
      goneAtMs: null,
      isNew,
    });
    // The headless Service publishes Ready pods only.
    dns.setRecords(
      'hello.default.svc.cluster.local',
      pods.map((x) => x.config.host),
    );
  };
  await Promise.all([1, 2, 3].map((i) => start(i, false)));
  origin = performance.now();
  const run = startWorkload({
    target:
      scheme === 'dns'
        ? dnsTarget(dns.address, 'hello.default.svc.cluster.local', PORT)
        : `dns-poll://${dns.address}/hello.default.svc.cluster.local:${PORT}`,
    channelOptions: { 'grpc.service_config': ROUND_ROBIN, ...channel },
    durationMs: 90_000, // stopped below, once the new pods have had their chance
    // Long enough that a stalled machine cannot expire an RPC: a failure here is a cut connection.
    deadlineMs: 30_000,
    originMs: origin,
  });
  await new Promise((r) => setTimeout(r, 700));
  await Promise.all([4, 5].map((i) => start(i, true)));
  // Pod start-up time varies with the machine's load: run on for a while after the new pods are Ready,
  // and where they are expected to get RPCs, until they have (a stalling machine may take longer).
  const readyAt = performance.now() - origin;
  await new Promise((r) => setTimeout(r, 2500));
  const served = (): boolean => ['hello-4', 'hello-5'].every((n) => run.log.podNames.includes(n));
  for (let i = 0; i < 1000 && newPodsServed && !served(); i++) await new Promise((r) => setTimeout(r, 50));
  const records = await run.stop();
  const end = performance.now() - origin;
  return computeRunRecord({
    scenario: 'scale-up',
    strategy: 'x',
    records,
    timeline,
    steadyWindowMs: [readyAt + 1500, end],
    durationMs: end,
  });
}

test('headless-dns-round-robin: pods added by a scale-up get no RPC', async (t) => {
  const r = await scaleUpRun(t, '127.0.21', {}, {});
  assert.equal(r.failed, 0, JSON.stringify(r));
  assert.equal(r.newPodsNeverServed, 2);
  assert.deepEqual(r.readyToFirstRpcMs, { p50: null, p99: null });
});

test('dns-poll: pods added by a scale-up are served within a poll interval, connections untouched', async (t) => {
  const { setup } = await import('grpc-kube/internal/resolver/setup.js');
  const { dnsPoll } = await import('@grpc-kube/lab/internal/lab/strategies/dns-poll.js');
  const kube = setup();
  t.after(() => kube.close());
  // The strategy's own options at a 0.04 time scale (5 s → 200 ms), as a quick lab run sets them.
  const handle = await dnsPoll.start({
    dns: { address: '127.0.0.1:53' },
    apps: { plain: { dnsName: 'x' } },
    port: PORT,
    timeScale: 0.04,
    clientOptions: () => ({}),
  } as never);
  const r = await scaleUpRun(t, '127.0.23', {}, { ...handle.channelOptions } as never, 'dns-poll', true);
  assert.equal(r.newPodsNeverServed, 0, JSON.stringify(r));
  assert.ok(r.readyToFirstRpcMs.p99 !== null, JSON.stringify(r.readyToFirstRpcMs));
  assert.equal(r.failed, 0, JSON.stringify(r));
});

test('max-connection-age: new pods get RPCs once connections age out and DNS may be asked again', async (t) => {
  // grpc-js re-resolves at most every grpc.dns_min_time_between_resolutions_ms (30 s by default):
  // lowered here so a 3.5 s run shows the age, not the rate limit.
  const r = await scaleUpRun(
    t,
    '127.0.22',
    { maxConnectionAgeMs: 1000, maxConnectionAgeGraceMs: 500 },
    { 'grpc.dns_min_time_between_resolutions_ms': 200 },
    'dns',
    true,
  );
  assert.equal(r.newPodsNeverServed, 0, JSON.stringify(r));
  assert.ok(r.readyToFirstRpcMs.p99 !== null, JSON.stringify(r.readyToFirstRpcMs));
  t.diagnostic(`ready to first RPC p99 ${r.readyToFirstRpcMs.p99} ms; success rate ${r.successRate}`);
  // Connections cut at age + grace fail the RPCs still on them: few, but not none on a busy machine
  // (a margin wide enough for a stalling one).
  assert.ok(r.successRate > 0.8, JSON.stringify(r));
});
