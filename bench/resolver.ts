// `npm run bench -- resolver`: the resolver's figures (docs/figures.md), measured in one run.
//  - firstRpcAfterPublishMs: a new Ready endpoint written to the API server → the first RPC it serves,
//    under steady client load, over 20 trials.
//  - throughputRatioVsStatic: unary RPC/s through kubernetes: + round_robin ÷ through a static ipv4:
//    list + round_robin, same servers, rounds interleaved (A B B A …) so drift cancels out.
//  - throughputRatioWithMetrics: the same kubernetes: channel (grpc_kube_p2c) with a MeterProvider and
//    the A66 interceptor on ÷ off, rounds interleaved; the goal is >= 0.95.
//  - sliceEventCpuUs: client CPU per EndpointSlice event with 5,000 endpoints in 50 slices (the API
//    server runs in a child process so only the client's work is counted).
//  - watchesFor100Channels: watches the API server sees for 100 channels to one Service.

import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { clientDefaults, setup } from 'grpc-kube/internal/index.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { KubernetesEndpointSource } from 'grpc-kube/internal/discovery/kube-source.js';
import { newEchoClient, startEchoServer, who, type Echo, type EchoServer } from '../test/helpers/echo.js';
import { SliceWriter, startApi, until } from '../test/helpers/kube.js';

const TRIALS = 20;

function pct(sorted: number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Math.round((sorted[i] ?? 0) * 10) / 10;
}

function log(line: string): void {
  process.stderr.write(line + '\n');
}

/** Closed-loop load on `client` with `concurrency` loops until `stop()` is called. */
function load(client: Echo, concurrency: number): { stop(): Promise<number> } {
  let running = true;
  let n = 0;
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      try {
        await who(client, 2000);
        n++;
      } catch {
        // counted only as missing throughput
      }
    }
  });
  return {
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return n;
    },
  };
}

async function propagation(): Promise<{ p50: number; p99: number; trials: number; samples: number[] }> {
  const api = await startApi();
  const base = await Promise.all([1, 2, 3].map((i) => startEchoServer(`pod-${i}`, `127.0.12.${i}`, 0)));
  // all on one port: restart 2 and 3 on the port of 1
  const port = base[0]!.port;
  base[1]!.kill();
  base[2]!.kill();
  base[1] = await startEchoServer('pod-2', '127.0.12.2', port);
  base[2] = await startEchoServer('pod-3', '127.0.12.3', port);
  const gk = setup({ kubeConfig: api.kubeConfigYaml() });
  const w = new SliceWriter(api, 'hello', port);
  const eps = base.map((s) => ({ ip: s.host, pod: s.name }));
  w.put('hello-a', eps);
  const client = newEchoClient(`kubernetes:///hello.default:${port}`);
  await until(
    async () =>
      new Set(await Promise.all([0, 1, 2, 3, 4, 5].map(async () => (await who(client)).server))).size === 3,
    5000,
    0,
  );
  const l = load(client, 8);
  const samples: number[] = [];
  const extra: EchoServer[] = [];
  try {
    for (let i = 0; i < TRIALS; i++) {
      const s = await startEchoServer(`new-${i}`, `127.0.12.${20 + i}`, port);
      extra.push(s);
      const t0 = performance.now();
      w.put('hello-a', [...eps, { ip: s.host, pod: s.name }]);
      await until(() => s.firstServedAt !== undefined, 10_000, 1);
      samples.push((s.firstServedAt as number) - t0);
      w.put('hello-a', eps);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await l.stop();
    client.close();
    await gk.close();
    for (const s of [...base, ...extra]) s.kill();
    await api.close();
  }
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    p50: pct(sorted, 50),
    p99: pct(sorted, 99),
    trials: samples.length,
    samples: samples.map((x) => Math.round(x * 10) / 10),
  };
}

export async function throughput(): Promise<{ ratio: number; kubernetesRps: number; staticRps: number }> {
  const api = await startApi();
  const first = await startEchoServer('pod-1', '127.0.13.1', 0);
  const servers = [
    first,
    await startEchoServer('pod-2', '127.0.13.2', first.port),
    await startEchoServer('pod-3', '127.0.13.3', first.port),
  ];
  const gk = setup({ kubeConfig: api.kubeConfigYaml() });
  new SliceWriter(api, 'hello', first.port).put(
    'hello-a',
    servers.map((s) => ({ ip: s.host, pod: s.name })),
  );
  const kube = newEchoClient(`kubernetes:///hello.default:${first.port}`);
  const stat = newEchoClient(`ipv4:${servers.map((s) => `${s.host}:${s.port}`).join(',')}`, {
    'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  });
  try {
    const r = await interleaved(
      () => measure(kube),
      () => measure(stat),
    );
    return { ratio: r.ratio, kubernetesRps: r.aRps, staticRps: r.bRps };
  } finally {
    kube.close();
    stat.close();
    await gk.close();
    for (const x of servers) x.kill();
    await api.close();
  }
}

const ROUND_MS = 1000;
const PAIRS = 8;

/** RPC/s of a 1 s closed loop of 32 concurrent calls on `c`. */
async function measure(c: Echo): Promise<number> {
  const l = load(c, 32);
  await new Promise((r) => setTimeout(r, ROUND_MS));
  return l.stop();
}

/**
 * A ÷ B throughput: warm-up both, then pairs in alternating order (A B, B A, …); the figure is the
 * median of the per-pair ratios, so a burst of load from elsewhere on the machine spoils one pair,
 * not the result.
 */
async function interleaved(
  a: () => Promise<number>,
  b: () => Promise<number>,
): Promise<{ ratio: number; aRps: number; bRps: number }> {
  let na = 0;
  let nb = 0;
  const ratios: number[] = [];
  await a();
  await b();
  for (let i = 0; i < PAIRS; i++) {
    const x = i % 2 === 0 ? await a() : await b();
    const y = i % 2 === 0 ? await b() : await a();
    const ra = i % 2 === 0 ? x : y;
    const rb = i % 2 === 0 ? y : x;
    na += ra;
    nb += rb;
    ratios.push(ra / rb);
  }
  ratios.sort((x, y) => x - y);
  const median = ((ratios[PAIRS / 2 - 1] ?? 0) + (ratios[PAIRS / 2] ?? 0)) / 2;
  log(`  per-pair ratios: ${ratios.map((r) => r.toFixed(3)).join(' ')}`);
  const secs = (PAIRS * ROUND_MS) / 1000;
  return {
    ratio: Math.round(median * 1000) / 1000,
    aRps: Math.round(na / secs),
    bRps: Math.round(nb / secs),
  };
}

/**
 * Metrics on ÷ off: kubernetes: + grpc_kube_p2c, with a MeterProvider (read by OpenTelemetry's
 * Prometheus exporter, scraped once per round as a server would be) and the A66 interceptor, against
 * the same without either; same servers, rounds interleaved.
 */
export async function throughputWithMetrics(): Promise<{ ratio: number; onRps: number; offRps: number }> {
  const [{ metrics }, { MeterProvider }, { PrometheusExporter }] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-metrics'),
    import('@opentelemetry/exporter-prometheus'),
  ]);
  const exporter = new PrometheusExporter({ preventServerStart: true });
  const provider = new MeterProvider({ readers: [exporter] });
  const api = await startApi();
  const first = await startEchoServer('pod-1', '127.0.15.1', 0);
  const servers = [
    first,
    await startEchoServer('pod-2', '127.0.15.2', first.port),
    await startEchoServer('pod-3', '127.0.15.3', first.port),
  ];
  const gk = setup({ kubeConfig: api.kubeConfigYaml() });
  new SliceWriter(api, 'hello', first.port).put(
    'hello-a',
    servers.map((s) => ({ ip: s.host, pod: s.name })),
  );
  const target = `kubernetes:///hello.default:${first.port}`;
  const off = newEchoClient(target, clientDefaults({ lbPolicy: 'grpc_kube_p2c' }));
  const on = newEchoClient(target, clientDefaults({ lbPolicy: 'grpc_kube_p2c', callMetrics: { target } }));
  try {
    const r = await interleaved(
      async () => {
        metrics.setGlobalMeterProvider(provider);
        const n = await measure(on);
        await exporter.collect();
        metrics.disable();
        return n;
      },
      () => measure(off),
    );
    return { ratio: r.ratio, onRps: r.aRps, offRps: r.bRps };
  } finally {
    metrics.disable();
    on.close();
    off.close();
    await gk.close();
    for (const x of servers) x.kill();
    await api.close();
    await provider.shutdown();
  }
}

export async function sliceEventCpu(): Promise<{ us: number; events: number }> {
  const child = fork(fileURLToPath(new URL('./apiserver-child.js', import.meta.url)), [], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  try {
    const kubeconfig = await new Promise<string>((resolve, reject) => {
      child.once('message', (m: { kubeconfig?: string }) =>
        m.kubeconfig ? resolve(m.kubeconfig) : reject(new Error('no kubeconfig')),
      );
      child.once('exit', (code) => reject(new Error(`API server child exited ${code}`)));
    });
    const src = new KubernetesEndpointSource(KubeClient.fromKubeConfigString(kubeconfig), 'default', 'big');
    let updates = 0;
    src.subscribe(
      { kind: 'number', port: 50051 },
      {
        onEndpoints: () => void updates++,
        onError: (e) => log(`source error: ${e.message}`),
      },
    );
    await until(
      () => updates >= 1 && src.endpoints({ kind: 'number', port: 50051 }).length === 5000,
      20_000,
      10,
    );
    // The client's CPU over the burst, less what the same process burns idle for as long (timers,
    // bookmarks, IPC), divided by the number of events.
    const N = 2000;
    const before = src.stats.events;
    let resolveDone: () => void = () => {};
    const done = new Promise<void>((r) => (resolveDone = r));
    const check = setInterval(() => {
      if (src.stats.events - before >= N) resolveDone();
    }, 50);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    child.send({ mutate: N, batch: 50, everyMs: 20 });
    await done;
    const cpu = process.cpuUsage(cpu0);
    const wallMs = performance.now() - t0;
    const idle0 = process.cpuUsage();
    await new Promise((r) => setTimeout(r, wallMs));
    const idle = process.cpuUsage(idle0);
    clearInterval(check);
    const busyUs = cpu.user + cpu.system - (idle.user + idle.system);
    if (src.stats.lists !== 1)
      log(`  note: the source re-listed ${src.stats.lists - 1} times during the run`);
    await src.stop();
    return { us: Math.round((busyUs / N) * 10) / 10, events: N };
  } finally {
    child.send({ exit: true });
    await new Promise((r) => child.once('exit', r));
  }
}

async function watchesFor100(): Promise<number> {
  const api = await startApi();
  const s = await startEchoServer('pod-1', '127.0.14.1', 0);
  const gk = setup({ kubeConfig: api.kubeConfigYaml() });
  new SliceWriter(api, 'hello', s.port).put('hello-a', [{ ip: s.host, pod: s.name }]);
  const clients = Array.from({ length: 100 }, () => newEchoClient(`kubernetes:///hello.default:${s.port}`));
  try {
    await Promise.all(clients.map((c) => who(c, 5000)));
    return api.stats().watches.filter((w) => w.resource === 'endpointslices').length;
  } finally {
    for (const c of clients) c.close();
    await gk.close();
    s.kill();
    await api.close();
  }
}

export async function runResolverBench(): Promise<Record<string, unknown>> {
  log('resolver bench: propagation (20 trials under load)…');
  const prop = await propagation();
  log(`  firstRpcAfterPublishMs p50=${prop.p50} p99=${prop.p99} samples=${prop.samples.join(',')}`);
  log('resolver bench: throughput kubernetes: vs static ipv4: (interleaved rounds)…');
  const tp = await throughput();
  log(`  kubernetes ${tp.kubernetesRps} rps, static ${tp.staticRps} rps, ratio ${tp.ratio}`);
  log('resolver bench: CPU per slice event, 5,000 endpoints in 50 slices…');
  const cpu = await sliceEventCpu();
  log(`  ${cpu.us} µs per event over ${cpu.events} events`);
  log('resolver bench: throughput with metrics on vs off (MeterProvider + A66 interceptor; interleaved)…');
  const wm = await throughputWithMetrics();
  log(`  on ${wm.onRps} rps, off ${wm.offRps} rps, ratio ${wm.ratio}`);
  const watches = await watchesFor100();
  log(`  watches for 100 channels: ${watches}`);
  return {
    bench: 'resolver',
    firstRpcAfterPublishMs: { p50: prop.p50, p99: prop.p99, trials: prop.trials },
    throughputRatioVsStatic: tp.ratio,
    throughputRatioWithMetrics: wm.ratio,
    sliceEventCpuUs: cpu.us,
    watchesFor100Channels: watches,
    kubernetesRps: tp.kubernetesRps,
    staticRps: tp.staticRps,
    metricsOnRps: wm.onRps,
    metricsOffRps: wm.offRps,
  };
}
