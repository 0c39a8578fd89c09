// The Kubernetes client and its one watch loop against an API server that misbehaves on purpose
// (test/kube/adversarial-server.ts): each finding of "a Kubernetes client that holds" has its test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KubernetesEndpointSource } from 'grpc-kube/internal/discovery/kube-source.js';
import type { KubeSourceOptions } from 'grpc-kube/internal/discovery/kube-source.js';
import { KubeClient, type KubeClientOptions, type ResourcePath } from 'grpc-kube/internal/kube/client.js';
import { LineSplitter, LineTooLongError } from 'grpc-kube/internal/kube/framing.js';
import { ListWatch, type ListWatchStatus } from 'grpc-kube/internal/kube/watch.js';
import { GrpcRouteWatcher } from 'grpc-kube/internal/route/route-watcher.js';
import type { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { until } from '../helpers/kube.js';
import { AdversarialApiServer, slice, type Fault, type Transport } from './adversarial-server.js';

const SLICES = 'endpointslices';
const RP: ResourcePath = { group: 'discovery.k8s.io', version: 'v1', resource: SLICES, namespace: 'default' };

interface Followed {
  src: KubernetesEndpointSource;
  ips: () => string[];
  errors: GrpcKubeError[];
}

/**
 * MaxListenersExceededWarnings emitted while the test runs. Every request in flight (a TLS handshake,
 * a watch) follows its client's internal close signal with one listener: many at once is by design.
 */
function listenerWarnings(t: { after(fn: () => unknown): void }): () => Promise<string[]> {
  const warnings: string[] = [];
  const onWarning = (w: Error): void =>
    void (w.name === 'MaxListenersExceededWarning' && warnings.push(w.message));
  process.on('warning', onWarning);
  t.after(() => void process.off('warning', onWarning));
  // Warnings are emitted on the next tick.
  return () => new Promise((r) => setImmediate(() => r(warnings)));
}

async function server(
  t: { after(fn: () => unknown): void },
  transport: Transport,
  opts: { bookmarkIntervalMs?: number; hugeBytes?: number; maxConcurrentStreams?: number } = {},
): Promise<AdversarialApiServer> {
  const api = await AdversarialApiServer.start({ transport, ...opts });
  t.after(() => api.close());
  return api;
}

function client(
  t: { after(fn: () => unknown): void },
  api: AdversarialApiServer,
  opts: KubeClientOptions = {},
): KubeClient {
  const c = KubeClient.fromKubeConfigString(api.kubeConfigYaml(), opts);
  t.after(() => c.close());
  return c;
}

function follow(
  t: { after(fn: () => unknown): void },
  c: KubeClient,
  service: string,
  opts: KubeSourceOptions = {},
): Followed {
  const src = new KubernetesEndpointSource(c, 'default', service, {
    backoff: { initialMs: 10, maxMs: 50 },
    ...opts,
  });
  t.after(() => src.stop());
  const errors: GrpcKubeError[] = [];
  let last: string[] = [];
  src.subscribe(
    { kind: 'number', port: 50051 },
    {
      onEndpoints: (view) => (last = view.endpoints().map((e) => e.address)),
      onError: (e) => errors.push(e),
    },
  );
  return { src, ips: () => last, errors };
}

/** An injected clock: the loop's waits advance it (and are recorded) instead of sleeping. */
function fakeClock(): {
  readonly ms: number;
  delays: number[];
  options: { now: () => number; delay: (ms: number) => Promise<void> };
} {
  let now = 0;
  const delays: number[] = [];
  return {
    get ms() {
      return now;
    },
    delays,
    options: {
      now: () => now,
      delay: async (ms) => {
        delays.push(ms);
        now += ms;
        await new Promise((r) => setImmediate(r));
      },
    },
  };
}

/** The waits grew to the cap (± the 20 % jitter), never past it, and were jittered. */
function assertBackedOff(delays: readonly number[], maxMs: number): void {
  const top = Math.max(...delays);
  assert.ok(top >= 0.8 * maxMs && top <= 1.2 * maxMs, `longest wait ${top} ms: ${delays.join()}`);
  assert.ok(
    delays.some((d) => d % 100 !== 0),
    `waits not jittered: ${delays.join()}`,
  );
}

/** The first `n` requests of `kind` get `fault`, the rest behave. */
function firstN(api: AdversarialApiServer, kind: 'list' | 'watch', fault: Fault, n: number): void {
  let left = n;
  api.fault = (k) => (k === kind && left-- > 0 ? fault : 'none');
}

test('line framing is linear, bounded, and splits across chunks', () => {
  const lines: string[] = [];
  const s = new LineSplitter(10);
  s.push(Buffer.from('ab\ncd'), (l) => lines.push(l.toString()));
  s.push(Buffer.from('ef\n\ngh'), (l) => lines.push(l.toString()));
  assert.deepEqual(lines, ['ab', 'cdef', '']);
  assert.equal(s.bufferedBytes, 2);
  assert.throws(() => s.push(Buffer.alloc(20, 0x61), () => {}), LineTooLongError);
  // 8 MiB in 64 KiB chunks with no newline: rejected at the bound, never rescanned.
  const big = new LineSplitter(4 * 1024 * 1024);
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let pushed = 0;
  assert.throws(() => {
    for (let i = 0; i < 128; i++) {
      big.push(chunk, () => {});
      pushed++;
    }
  }, LineTooLongError);
  assert.equal(pushed, 64);
});

test('line framing costs the same per byte whatever the chunk size (no rescan or re-copy of the line)', () => {
  // One 8 MiB line fed in 4 KiB chunks and in 256 KiB chunks. Framing that rescans or re-copies the
  // buffered line on every chunk (the quadratic kind) does ~64x more work for the small chunks;
  // linear framing does about the same. CPU time (a loaded machine barely moves it), the large chunks
  // measured best of 5, the small ones stopped as soon as they pass 8x that.
  const lineBytes = 8 * 1024 * 1024;
  const feed = (chunkBytes: number, budgetUs: number): number => {
    const chunk = Buffer.alloc(chunkBytes, 0x61);
    const s = new LineSplitter(2 * lineBytes);
    let got = 0;
    const t0 = process.cpuUsage();
    const spent = (): number => {
      const d = process.cpuUsage(t0);
      return d.user + d.system;
    };
    for (let i = 0; i < lineBytes / chunkBytes; i++) {
      s.push(chunk, () => {});
      if (i % 64 === 63 && spent() > budgetUs) return spent();
    }
    s.push(Buffer.from('\n'), (l) => (got = l.length));
    assert.equal(got, lineBytes);
    return spent();
  };
  const large = Math.min(...Array.from({ length: 5 }, () => feed(256 * 1024, Infinity)));
  const budgetUs = 8 * large + 10_000;
  const small = Math.min(...Array.from({ length: 3 }, () => feed(4 * 1024, budgetUs)));
  assert.ok(small <= budgetUs, `4 KiB chunks: ${small} us CPU; 256 KiB chunks: ${large} us`);
});

for (const fault of ['null', 'error-no-object', 'no-metadata', 'garbage', 'truncated'] as const) {
  test(`a watch line "${fault}" is a typed error and a re-list, never a crash`, async (t) => {
    const api = await server(t, 'h2');
    api.put(SLICES, slice('default', 'a', ['10.0.0.1']));
    const c = client(t, api);
    firstN(api, 'watch', fault, 2);
    const f = follow(t, c, 'a');
    await until(() => f.src.stats.errors >= 2 && f.src.status === 'synced');
    assert.ok(f.src.stats.lists >= 2, 'the bad event made the source re-list');
    api.put(SLICES, slice('default', 'a', ['10.0.0.2']));
    await until(() => f.ips().join() === '10.0.0.2');
  });

  test(`KubeClient.watch: a "${fault}" line rejects done with GK_ERR_KUBE_PROTOCOL and is never delivered`, async (t) => {
    const api = await server(t, 'h2');
    api.fault = () => fault;
    const c = client(t, api);
    const delivered: unknown[] = [];
    const w = c.watch(RP, { resourceVersion: '0' }, (ev) => delivered.push(ev));
    await assert.rejects(w.done, (e: GrpcKubeError) => e.code === 'GK_ERR_KUBE_PROTOCOL');
    assert.deepEqual(delivered, []);
  });
}

test('a huge list body and a huge watch line: GK_ERR_KUBE_TOO_LARGE, re-list, memory stays bounded', async (t) => {
  const api = await server(t, 'h2', { hugeBytes: 8 * 1024 * 1024 });
  api.put(SLICES, slice('default', 'a', ['10.0.0.1']));
  api.put(SLICES, slice('default', 'b', ['10.0.0.1']));
  const c = client(t, api, { maxLineBytes: 256 * 1024, maxBodyBytes: 256 * 1024 });
  const rss = process.memoryUsage().rss;
  firstN(api, 'list', 'huge', 1);
  const f = follow(t, c, 'a');
  await until(() => f.ips().join() === '10.0.0.1' && f.src.status === 'synced');
  assert.equal(f.errors[0]?.code, 'GK_ERR_KUBE_TOO_LARGE');
  firstN(api, 'watch', 'huge', 1);
  const g = follow(t, c, 'b');
  await until(() => g.src.stats.errors >= 1 && g.src.stats.lists >= 2 && g.src.status === 'synced');
  api.put(SLICES, slice('default', 'b', ['10.0.0.2']));
  await until(() => g.ips().join() === '10.0.0.2');
  assert.ok(process.memoryUsage().rss - rss < 256 * 1024 * 1024, 'memory bounded');
});

test('an empty-watch server sees <= 5 requests per second per channel (injected clock)', async (t) => {
  const api = await server(t, 'h2');
  api.put(SLICES, slice('default', 'a', ['10.0.0.1']));
  api.fault = (k) => (k === 'watch' ? 'empty' : 'none');
  const c = client(t, api);
  const clock = fakeClock();
  const f = follow(t, c, 'a', { backoff: {} /* defaults: 500 ms .. 15 s */, ...clock.options });
  await until(() => clock.ms >= 60_000, 60_000);
  const rate = (api.requests.list + api.requests.watch) / (clock.ms / 1000);
  assert.ok(rate <= 5, `${rate} requests/s`);
  assert.ok(f.src.stats.shortWatches >= 3, 'empty watches count as failures');
  assert.notEqual(f.src.status, 'synced');
  assertBackedOff(clock.delays, 15_000);
});

test('a 410 storm backs off instead of looping', async (t) => {
  const api = await server(t, 'http');
  api.put(SLICES, slice('default', 'a', ['10.0.0.1']));
  api.fault = (k) => (k === 'watch' ? 'gone' : 'none');
  const c = client(t, api);
  const clock = fakeClock();
  const f = follow(t, c, 'a', { backoff: {}, ...clock.options });
  await until(() => clock.ms >= 60_000, 60_000);
  assert.ok(f.src.stats.expired >= 3);
  assert.ok((api.requests.list + api.requests.watch) / (clock.ms / 1000) <= 5);
  assertBackedOff(clock.delays, 15_000);
});

test('the GRPCRoute watcher uses the same loop: no hot loop on an empty-watch server', async (t) => {
  const api = await server(t, 'h2');
  api.put('grpcroutes', { metadata: { name: 'r', namespace: 'default' }, spec: {} });
  api.fault = (k) => (k === 'watch' ? 'empty' : 'none');
  const c = client(t, api);
  const clock = fakeClock();
  let changes = 0;
  const w = new GrpcRouteWatcher(c, {
    onChange: () => changes++,
    onError: () => {},
    backoff: { initialMs: 500, maxMs: 15_000 },
    ...clock.options,
  });
  t.after(() => w.stop());
  await w.start();
  await until(() => clock.ms >= 60_000, 60_000);
  assert.ok(changes >= 1);
  assert.ok((api.requests.list + api.requests.watch) / (clock.ms / 1000) <= 5);
  assertBackedOff(clock.delays, 15_000);
});

test('a hung list times out (GK_ERR_KUBE_TIMEOUT) and stop() returns at once whatever the server does', async (t) => {
  const api = await server(t, 'h2');
  api.put(SLICES, slice('default', 'a', ['10.0.0.1']));
  firstN(api, 'list', 'hang', 1);
  const c = client(t, api);
  const f = follow(t, c, 'a', { listTimeoutMs: 300 });
  await until(() => f.errors.length >= 1);
  assert.equal(f.errors[0]?.code, 'GK_ERR_KUBE_TIMEOUT');
  await until(() => f.ips().join() === '10.0.0.1');
  // Now every request hangs: stop() and close() must not wait for the server. g's list would time
  // out only after 120 s (past the test's time-out), so a stop() that waited for it stays pending
  // at the 60 s bound, however slow the machine.
  api.fault = () => 'hang';
  const g = follow(t, c, 'b', { listTimeoutMs: 120_000 });
  await until(() => api.requests.list >= 3);
  const t0 = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const stopped = await Promise.race([
    Promise.all([f.src.stop(), g.src.stop()]).then(() => 'stopped'),
    new Promise<string>((r) => (timer = setTimeout(() => r('still waiting for the server'), 60_000))),
  ]).finally(() => clearTimeout(timer));
  c.close();
  t.diagnostic(`stop took ${Date.now() - t0} ms`);
  assert.equal(stopped, 'stopped');
});

for (const transport of ['h2', 'https1', 'http'] as const) {
  test(`close() (${transport}) ends a hung list and an open watch at once and leaves no connection`, async (t) => {
    const api = await server(t, transport);
    api.put(SLICES, slice('default', 'a', ['10.0.0.1']));
    const c = client(t, api);
    await c.list(RP); // leaves a kept-alive connection (HTTP/1.1 pool, HTTP/2 session)
    const settled: string[] = [];
    const w = c.watch(RP, { resourceVersion: '0' }, () => {});
    w.done.then(
      () => settled.push('watch'),
      () => settled.push('watch'),
    );
    api.fault = (k) => (k === 'list' ? 'hang' : 'none');
    let listError: GrpcKubeError | undefined;
    c.list(RP).then(
      () => settled.push('list answered'),
      (e: GrpcKubeError) => {
        listError = e;
        settled.push('list');
      },
    );
    await until(() => api.openWatches === 1 && api.requests.list === 2);
    // The server answers nothing from here on; close() alone must end everything.
    const t0 = Date.now();
    c.close();
    await until(() => settled.length === 2 && api.connections === 0);
    process.stdout.write(`# close() ${transport}: all ended in ${Date.now() - t0} ms\n`);
    assert.deepEqual(settled.sort(), ['list', 'watch']);
    assert.equal(listError?.code, 'GK_ERR_DESTROYED');
    await assert.rejects(c.list(RP), (e: GrpcKubeError) => e.code === 'GK_ERR_DESTROYED');
  });
}

for (const transport of ['h2', 'https1'] as const) {
  test(`a half-open connection is found (${transport === 'h2' ? 'HTTP/2 PING' : 'idle time-out'}) and the watch comes back`, async (t) => {
    const api = await server(t, transport, { bookmarkIntervalMs: 100 });
    api.put(SLICES, slice('default', 'a', ['10.0.0.1']));
    const c = client(t, api, { pingIntervalMs: 200, pingTimeoutMs: 200 });
    firstN(api, 'watch', 'half-open', 1);
    // h2: the bookmark interval is long, so only PING can find the dead session quickly.
    const f = follow(t, c, 'a', { bookmarkIntervalMs: transport === 'h2' ? 60_000 : 100 });
    await until(() => f.ips().join() === '10.0.0.1');
    api.put(SLICES, slice('default', 'a', ['10.0.0.2']));
    await until(() => f.ips().join() === '10.0.0.2', 30_000);
    assert.ok(api.requests.watch >= 2);
    if (transport === 'h2') assert.ok(c.stats.pingTimeouts >= 1);
  });
}

test('a watch the server accepts and never answers is dropped and opened again (no headers in time)', async (t) => {
  const api = await server(t, 'h2', { bookmarkIntervalMs: 100 });
  api.put(SLICES, slice('default', 'a', ['10.0.0.1']));
  const c = client(t, api);
  firstN(api, 'watch', 'hang', 1);
  // h2: the session answers PING, so only the headers time-out can find the hung stream.
  const f = follow(t, c, 'a', { bookmarkIntervalMs: 100 });
  await until(() => f.ips().join() === '10.0.0.1' && api.requests.watch >= 1);
  api.put(SLICES, slice('default', 'a', ['10.0.0.2']));
  await until(() => f.ips().join() === '10.0.0.2', 30_000);
  assert.ok(api.requests.watch >= 2);
});

test('the GRPCRoute watcher finds a half-open connection (idle time-out) and follows the next change', async (t) => {
  const api = await server(t, 'https1', { bookmarkIntervalMs: 100 });
  api.put('grpcroutes', { metadata: { name: 'r', namespace: 'default' }, spec: {} });
  const c = client(t, api);
  firstN(api, 'watch', 'half-open', 1);
  let names: string[] = [];
  const w = new GrpcRouteWatcher(c, {
    onChange: (routes) => (names = [...routes.keys()].sort()),
    onError: () => {},
    bookmarkIntervalMs: 100,
    backoff: { initialMs: 10, maxMs: 50 },
  });
  t.after(() => w.stop());
  await w.start();
  assert.deepEqual(names, ['default/r']);
  // The change comes after the watch went silent, so only a new watch can bring it.
  await until(() => api.requests.watch >= 1);
  api.put('grpcroutes', { metadata: { name: 'r2', namespace: 'default' }, spec: {} });
  await until(() => names.join() === 'default/r,default/r2', 30_000);
  assert.ok(api.requests.watch >= 2, 'the silent watch was dropped and opened again');
});

test('200 Services over HTTP/2 from one client: every one follows its change (no 64-watch cap)', async (t) => {
  const api = await server(t, 'h2');
  const n = 200;
  for (let i = 0; i < n; i++) api.put(SLICES, slice('default', `s${i}`, ['10.1.0.1']));
  const c = client(t, api);
  const fs = Array.from({ length: n }, (_, i) => follow(t, c, `s${i}`));
  await until(() => fs.every((f) => f.src.status === 'synced') && api.openWatches === n, 60_000);
  for (let i = 0; i < n; i++) api.put(SLICES, slice('default', `s${i}`, ['10.1.0.2']));
  await until(() => fs.every((f) => f.ips().join() === '10.1.0.2'), 60_000);
  assert.equal(c.stats.protocol, 'h2');
  assert.equal(c.stats.activeWatches, n);
  // The server allows 100 streams per connection: the client opened more sessions, queued nothing.
  assert.ok(c.stats.sessions >= 2, `${c.stats.sessions} sessions`);
});

test('HTTP/2: 120 watches opened at once on a fresh client all start (no stream sent before the server limit is known)', async (t) => {
  // 50 streams per connection: below the 100 that Node assumes for a peer until its SETTINGS arrive.
  const api = await server(t, 'h2', { maxConcurrentStreams: 50 });
  const c = client(t, api);
  const n = 120;
  let opened = 0;
  const failures: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const w = c.watch(RP, { resourceVersion: '0', onOpen: () => opened++ }, () => {});
    w.done.catch((e: unknown) => failures.push(e));
  }
  await until(() => opened === n && api.openWatches === n, 60_000);
  assert.deepEqual(failures, []);
  assert.ok(c.stats.sessions >= 2, `${c.stats.sessions} sessions`);
});

test('HTTP/1.1: the watch limit is explicit: over it a Service is retrying with GK_ERR_KUBE_WATCH_LIMIT, never synced', async (t) => {
  const warnings = listenerWarnings(t);
  const api = await server(t, 'https1');
  for (let i = 0; i < 12; i++) api.put(SLICES, slice('default', `s${i}`, ['10.2.0.1']));
  const c = client(t, api, { maxHttp1Watches: 10 });
  const fs = Array.from({ length: 12 }, (_, i) => follow(t, c, `s${i}`));
  const names = (status: string): string[] =>
    fs.flatMap((f, i) => (f.src.status === status ? [`s${i}`] : [])).sort();
  // The server counts a watch open before the client has read its response head: wait until the two
  // sides agree (under load that takes a moment), then check that they agree on WHO holds a watch.
  await until(
    () => c.stats.watchLimitRejections >= 2 && api.openWatches === 10 && names('synced').length === 10,
    60_000,
  );
  assert.equal(c.stats.protocol, 'http/1.1');
  assert.deepEqual(names('synced'), api.watchedSelectors, 'only Services with an open watch say synced');
  assert.equal(names('retrying').length, 2, 'the other two say retrying');
  // Free two watches: the two waiting Services get theirs and follow changes.
  await fs[0]?.src.stop();
  await fs[1]?.src.stop();
  await until(() => fs.slice(2).every((f) => f.src.status === 'synced'), 60_000);
  for (let i = 2; i < 12; i++) api.put(SLICES, slice('default', `s${i}`, ['10.2.0.2']));
  await until(() => fs.slice(2).every((f) => f.ips().join() === '10.2.0.2'), 60_000);
  assert.deepEqual(await warnings(), [], '12 TLS handshakes at once on one client are no listener leak');
});

test('HTTP/1.1 (http://): 80 Services each hold a watch and follow their change (no socket pool cap below maxHttp1Watches)', async (t) => {
  const api = await server(t, 'http');
  const n = 80; // over the 64 sockets the old shared agent allowed
  for (let i = 0; i < n; i++) api.put(SLICES, slice('default', `s${i}`, ['10.5.0.1']));
  const c = client(t, api);
  const fs = Array.from({ length: n }, (_, i) => follow(t, c, `s${i}`));
  await until(() => fs.every((f) => f.src.status === 'synced') && api.openWatches === n, 60_000);
  for (let i = 0; i < n; i++) api.put(SLICES, slice('default', `s${i}`, ['10.5.0.2']));
  await until(() => fs.every((f) => f.ips().join() === '10.5.0.2'), 60_000);
  assert.equal(c.stats.protocol, 'http/1.1');
  assert.equal(c.stats.activeWatches, n);
  assert.equal(c.stats.watchLimitRejections, 0);
});

test('a watch refused by the HTTP/1.1 limit never reports synced, not even between its re-lists', async (t) => {
  const api = await server(t, 'https1');
  api.put(SLICES, slice('default', 'a', ['10.6.0.1']));
  api.put(SLICES, slice('default', 'b', ['10.6.0.1']));
  const c = client(t, api, { maxHttp1Watches: 1 });
  const a = follow(t, c, 'a');
  await until(() => a.src.status === 'synced' && api.openWatches === 1);
  // Every status change of the second loop is recorded, so a 'synced' that lasts a microsecond counts.
  const statuses: ListWatchStatus[] = [];
  const lw = new ListWatch(
    c,
    RP,
    { onList: () => {}, onEvent: () => {}, onError: () => {}, onStatus: (s) => statuses.push(s) },
    { labelSelector: 'kubernetes.io/service-name=b', backoff: { initialMs: 10, maxMs: 20 } },
  );
  t.after(() => lw.stop());
  lw.start();
  await until(() => lw.stats.lists >= 3);
  assert.ok(c.stats.watchLimitRejections >= 2);
  assert.deepEqual([...new Set(statuses)], ['retrying']);
});

test('http:// servers (kubectl proxy) work without insecure-skip-tls-verify', async (t) => {
  const api = await server(t, 'http');
  api.put(SLICES, slice('default', 'a', ['10.3.0.1']));
  const c = client(t, api);
  const f = follow(t, c, 'a');
  await until(() => f.ips().join() === '10.3.0.1');
  assert.equal(c.stats.protocol, 'http/1.1');
});
