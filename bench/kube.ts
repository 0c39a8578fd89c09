// `npm run bench -- kube`: the Kubernetes client at scale against a real API server on loopback, in
// its own process (bench/kube-server-child.ts: the adversarial server of test/kube in its
// well-behaved mode, TLS with HTTP/2 as kube-apiserver serves, 100 streams per connection; the
// embedded API server speaks HTTP/1.1 only). 1,000 Services are watched from this process through
// one SourceRegistry (what every channel of the resolver subscribes through); each gets one change,
// three times over, timed from the server's first write to each subscriber's update (same-machine
// wall clock). Then an empty-watch server (200, no event, end) measures how hard one channel hits
// the API with the default backoff.
// Figures: servicesWatched, staleServices (did not follow a change within 10 s),
// changeToAllChannelsMs {p50, p99}, requestsPerSecondEmptyWatchServer, bytesPerWatchedService.

import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SourceRegistry } from 'grpc-kube/internal/discovery/registry.js';
import type { Subscription } from 'grpc-kube/internal/discovery/kube-source.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';

const SERVICES = Number(process.env.GK_BENCH_SERVICES ?? 1000);
const ROUNDS = 3;
const STALE_MS = 10_000;
const EMPTY_WATCH_CHANNELS = 20;
const EMPTY_WATCH_MS = 10_000;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const now = (): number => performance.timeOrigin + performance.now();

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

interface Child {
  proc: ChildProcess;
  kubeconfig: string;
  ask<T>(msg: object, key: string): Promise<T>;
  close(): Promise<void>;
}

async function startServer(mode: 'scale' | 'empty', n: number): Promise<Child> {
  const proc = fork(fileURLToPath(new URL('./kube-server-child.js', import.meta.url)), [mode, String(n)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ask = <T>(msg: object | undefined, key: string): Promise<T> =>
    new Promise((resolve, reject) => {
      const onMsg = (m: Record<string, unknown>): void => {
        if (!(key in m)) return;
        proc.off('message', onMsg);
        resolve(m as T);
      };
      proc.on('message', onMsg);
      proc.once('exit', (code) => reject(new Error(`the API server child exited (${code})`)));
      if (msg !== undefined) proc.send(msg);
    });
  const { kubeconfig } = await ask<{ kubeconfig: string }>(undefined, 'kubeconfig');
  return {
    proc,
    kubeconfig,
    ask: (msg, key) => ask(msg, key),
    close: () =>
      new Promise((resolve) => {
        proc.once('exit', () => resolve());
        proc.send({ exit: true });
      }),
  };
}

async function scale(): Promise<Record<string, unknown>> {
  const server = await startServer('scale', SERVICES);
  const client = KubeClient.fromKubeConfigString(server.kubeconfig);
  const registry = new SourceRegistry(client);
  const seen = new Map<string, { ip: string; at: number }>();
  const heap0 = heapAfterGc();
  const subs: Subscription[] = [];
  for (let i = 0; i < SERVICES; i++) {
    const svc = `svc-${i}`;
    subs.push(
      registry.subscribe(
        'default',
        svc,
        { kind: 'number', port: 50051 },
        {
          onEndpoints: (v) =>
            seen.set(svc, {
              ip: v
                .endpoints()
                .map((e) => e.address)
                .join(),
              at: now(),
            }),
          onError: () => {},
        },
      ),
    );
  }
  const t0 = now();
  const synced = await waitFor(
    () => seen.size === SERVICES && registry.activeSources.every((s) => s.status === 'synced'),
    60_000,
  );
  const syncMs = now() - t0;
  const bytesPerWatchedService = Math.round((heapAfterGc() - heap0) / SERVICES);
  const watching = registry.activeSources.filter((s) => s.status === 'synced').length;
  const open = await server.ask<{ openWatches: number }>({ requests: true }, 'openWatches');
  process.stdout.write(
    `${SERVICES} Services: ${watching} synced (all: ${synced}) in ${Math.round(syncMs)} ms over ${client.stats.protocol}, ` +
      `${client.stats.sessions} session(s), ${client.stats.activeWatches} watches (server: ${open.openWatches} open); ` +
      `~${bytesPerWatchedService} client heap bytes per Service\n`,
  );
  const latencies: number[] = [];
  let stale = 0;
  for (let round = 1; round <= ROUNDS; round++) {
    const ip = `10.${round}.0.1`;
    const { startedAt } = await server.ask<{ startedAt: number }>({ round }, 'startedAt');
    await waitFor(() => [...seen.values()].every((s) => s.ip === ip), STALE_MS);
    let roundStale = 0;
    let slowest = 0;
    for (let i = 0; i < SERVICES; i++) {
      const s = seen.get(`svc-${i}`);
      if (s === undefined || s.ip !== ip) roundStale++;
      else {
        latencies.push(s.at - startedAt);
        slowest = Math.max(slowest, s.at - startedAt);
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
    servicesWatched: watching,
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
  await server.close();
  return result;
}

async function emptyWatch(): Promise<number> {
  const server = await startServer('empty', EMPTY_WATCH_CHANNELS);
  const registry = new SourceRegistry(KubeClient.fromKubeConfigString(server.kubeconfig));
  const subs: Subscription[] = [];
  const start = now();
  for (let i = 0; i < EMPTY_WATCH_CHANNELS; i++)
    subs.push(
      registry.subscribe(
        'default',
        `svc-${i}`,
        { kind: 'number', port: 50051 },
        { onEndpoints: () => {}, onError: () => {} },
      ),
    );
  await new Promise((r) => setTimeout(r, EMPTY_WATCH_MS));
  const seconds = (now() - start) / 1000;
  const { requests } = await server.ask<{ requests: { total: number } }>({ requests: true }, 'requests');
  const perChannel = requests.total / EMPTY_WATCH_CHANNELS / seconds;
  process.stdout.write(
    `empty-watch server: ${requests.total} requests from ${EMPTY_WATCH_CHANNELS} channels in ${seconds.toFixed(1)} s ` +
      `= ${perChannel.toFixed(2)} requests/s per channel\n`,
  );
  for (const s of subs) s.unsubscribe();
  await registry.close();
  await server.close();
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
