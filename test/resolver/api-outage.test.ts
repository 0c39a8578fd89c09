import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup } from 'grpc-kube/internal/index.js';
import { newEchoClient, startEchoServer, who } from '../helpers/echo.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';

// The figure: the API server stopped for 30 s and restarted, under load. The outage length
// is the point of the test (backoff must not grow past usefulness), so it runs in real time.
const OUTAGE_MS = Number(process.env.GRPC_KUBE_OUTAGE_MS ?? 30_000);

test(
  `API server down ${OUTAGE_MS / 1000} s under load: 0 failed RPCs, and the set resyncs after`,
  { timeout: OUTAGE_MS + 60_000 },
  async (t) => {
    const api = await startApi();
    const servers = [await startEchoServer('pod-1', '127.0.11.1')];
    for (let i = 2; i <= 5; i++)
      servers.push(await startEchoServer(`pod-${i}`, `127.0.11.${i}`, servers[0]!.port));
    const gk = setup({
      kubeConfig: api.kubeConfigYaml(),
      source: { backoff: { initialMs: 200, maxMs: 5000 } },
    });
    t.after(async () => {
      await gk.close();
      for (const s of servers) s.kill();
      await api.close();
    });
    const slices = new SliceWriter(api, 'hello', servers[0]!.port);
    slices.put(
      'hello-a',
      servers.slice(0, 3).map((s) => ({ ip: s.host, pod: s.name })),
    );
    const client = newEchoClient(`kubernetes:///hello.default:${servers[0]!.port}`);
    t.after(() => client.close());
    await until(
      async () =>
        new Set(await Promise.all([1, 2, 3, 4, 5, 6].map(async () => (await who(client, 30_000)).server)))
          .size === 3,
      30_000,
      0,
    );

    let ok = 0;
    let failed = 0;
    let stop = false;
    const started = Date.now();
    const loops = Array.from({ length: 4 }, async () => {
      // Bounded: stops at the end of the test or after 2 minutes, paced at ~200 RPC/s per loop.
      while (!stop && Date.now() - started < 120_000) {
        try {
          // A deadline no stall reaches: a call failed here failed for want of endpoints.
          await who(client, 30_000);
          ok++;
        } catch {
          failed++;
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    });

    await api.stop();
    // While the API is away the cluster changes: two pods are added. Nobody can see it yet.
    slices.put(
      'hello-a',
      servers.map((s) => ({ ip: s.host, pod: s.name })),
    );
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    assert.equal(servers[3]!.served + servers[4]!.served, 0, 'new pods unseen during the outage');
    const okDuringOutage = ok;
    await api.start();
    const back = Date.now();
    await until(() => servers[3]!.served > 0 && servers[4]!.served > 0, 60_000, 10);
    const resyncMs = Date.now() - back;
    stop = true;
    await Promise.all(loops);
    t.diagnostic(
      `rpcs ok=${ok} failed=${failed} okDuringOutage=${okDuringOutage} resyncAfterApiBackMs=${resyncMs}`,
    );
    assert.equal(failed, 0);
    assert.ok(okDuringOutage > 100, 'RPCs kept flowing during the outage');
  },
);
