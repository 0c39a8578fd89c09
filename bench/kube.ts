// `npm run bench -- kube`: the Kubernetes client at scale against a real API server on loopback (the
// adversarial server of test/kube in its well-behaved mode: TLS with HTTP/2, as kube-apiserver
// serves; the embedded API server speaks HTTP/1.1 only). 1,000 Services are watched from one
// process through one SourceRegistry (what every channel of the resolver subscribes through); each
// gets one change, three times over, and we time how long until every subscriber sees it. Then an
// empty-watch server (200, no event, end) measures how hard one channel hits the API.
// Figures (FIGURES.md): servicesWatched, staleServices (did not follow a change within 10 s),
// changeToAllChannelsMs {p50, p99}, requestsPerSecondEmptyWatchServer, bytesPerWatchedService.

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SourceRegistry } from '../src/discovery/registry.js';
import { KubeClient } from '../src/kube/client.js';
import { AdversarialApiServer, slice } from '../test/kube/adversarial-server.js';

const SERVICES = Number(process.env.GK_BENCH_SERVICES ?? 1000);
const ROUNDS = 3;
const STALE_MS = 10_000;
const EMPTY_WATCH_CHANNELS = 20;
const EMPTY_WATCH_MS = 10_000;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function heapAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

async function scale(): Promise<Record<string, unknown>> {
  const api = await AdversarialApiServer.start({ transport: 'h2', bookmarkIntervalMs: 60_000 });
  const ip = (round: number): string => `10.${round}.0.1`;
  for (let i = 0; i < SERVICES; i++) api.put('endpointslices', slice('default', `svc-${i}`, [ip(0)]));
  const client = KubeClient.fromKubeConfigString(api.kubeConfigYaml());
  const registry = new SourceRegistry(client);
  const seenAt = new Map<string, { ip: string; at: number }>();
  const heap0 = heapAfterGc();
  const subs = [];
  for (let i = 0; i < SERVICES; i++) {
    const svc = `svc-${i}`;
    subs.push(
      registry.subscribe(
        'default',
        svc,
        { kind: 'number', port: 50051 },
        {
          onEndpoints: (v) =>
            seenAt.set(svc, {
              ip: v
                .endpoints()
                .map((e) => e.address)
                .join(),
              at: performance.now(),
            }),
          onError: () => {},
        },
      ),
    );
  }
  const t0 = performance.now();
  const synced = await waitFor(
    () => registry.activeSources.every((s) => s.status === 'synced') && api.openWatches === SERVICES,
    60_000,
  );
  const syncMs = performance.now() - t0;
  const bytesPerWatchedService = Math.round((heapAfterGc() - heap0) / SERVICES);
  process.stdout.write(
    `${SERVICES} Services: all synced=${synced} in ${Math.round(syncMs)} ms over ${client.stats.protocol}, ` +
      `${client.stats.sessions} session(s), ${client.stats.activeWatches} watches; ~${bytesPerWatchedService} heap bytes per Service\n`,
  );
  const latencies: number[] = [];
  let stale = 0;
  for (let round = 1; round <= ROUNDS; round++) {
    const start = performance.now();
    for (let i = 0; i < SERVICES; i++) api.put('endpointslices', slice('default', `svc-${i}`, [ip(round)]));
    await waitFor(() => [...seenAt.values()].every((s) => s.ip === ip(round)), STALE_MS);
    let roundStale = 0;
    let slowest = 0;
    for (let i = 0; i < SERVICES; i++) {
      const s = seenAt.get(`svc-${i}`);
      if (s === undefined || s.ip !== ip(round)) roundStale++;
      else {
        latencies.push(s.at - start);
        slowest = Math.max(slowest, s.at - start);
      }
    }
    stale += roundStale;
    process.stdout.write(
      `round ${round}: one change to each of ${SERVICES} Services; the last followed after ` +
        `${Math.round(slowest)} ms; stale ${roundStale}\n`,
    );
  }
  latencies.sort((a, b) => a - b);
  const result = {
    servicesWatched: synced ? SERVICES : registry.activeSources.filter((s) => s.status === 'synced').length,
    staleServices: stale,
    changeToAllChannelsMs: {
      p50: Math.round(percentile(latencies, 0.5) * 10) / 10,
      p99: Math.round(percentile(latencies, 0.99) * 10) / 10,
    },
    bytesPerWatchedService,
    protocol: client.stats.protocol,
    http2Sessions: client.stats.sessions,
  };
  for (const s of subs) s.unsubscribe();
  await registry.close();
  await api.close();
  return result;
}

async function emptyWatch(): Promise<number> {
  const api = await AdversarialApiServer.start({ transport: 'h2' });
  api.fault = (kind) => (kind === 'watch' ? 'empty' : 'none');
  for (let i = 0; i < EMPTY_WATCH_CHANNELS; i++)
    api.put('endpointslices', slice('default', `e-${i}`, ['10.9.0.1']));
  const registry = new SourceRegistry(KubeClient.fromKubeConfigString(api.kubeConfigYaml()));
  const subs = [];
  for (let i = 0; i < EMPTY_WATCH_CHANNELS; i++)
    subs.push(
      registry.subscribe(
        'default',
        `e-${i}`,
        { kind: 'number', port: 50051 },
        { onEndpoints: () => {}, onError: () => {} },
      ),
    );
  const start = performance.now();
  await new Promise((r) => setTimeout(r, EMPTY_WATCH_MS));
  const seconds = (performance.now() - start) / 1000;
  const perChannel = api.requests.total / EMPTY_WATCH_CHANNELS / seconds;
  process.stdout.write(
    `empty-watch server: ${api.requests.total} requests from ${EMPTY_WATCH_CHANNELS} channels in ${seconds.toFixed(1)} s ` +
      `= ${perChannel.toFixed(2)} requests/s per channel\n`,
  );
  for (const s of subs) s.unsubscribe();
  await registry.close();
  await api.close();
  return Math.round(perChannel * 100) / 100;
}

export async function runKubeBench(): Promise<Record<string, unknown>> {
  const s = await scale();
  const requestsPerSecondEmptyWatchServer = await emptyWatch();
  return {
    bench: 'kube',
    servicesWatched: s.servicesWatched,
    staleServices: s.staleServices,
    changeToAllChannelsMs: s.changeToAllChannelsMs,
    requestsPerSecondEmptyWatchServer,
    bytesPerWatchedService: s.bytesPerWatchedService,
    protocol: s.protocol,
    http2Sessions: s.http2Sessions,
  };
}
