// `npm run bench -- xds`: the control plane's figures (docs/figures.md), measured in one run.
//  - streams: ADS streams held open on one control plane (raw grpc-js ADS clients, one connection
//    each, in a child process so the control plane's memory is measured alone).
//  - propagationMs: an EndpointSlice write to the API server → the last stream receiving the new
//    ClusterLoadAssignment (p50 over every stream of every trial; max over all). Goal max <= 1000.
//    One warm-up trial first, reported as warmupPropagationMaxMs.
//  - bytesPerStream: control-plane heap + external memory per open stream, after GC. Goal <= 30 KB.

import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as grpc from '@grpc/grpc-js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import { adsClientDefinition, EDS, type DecodedResponse } from '@grpc-kube/xds/internal/protos.js';
import { SliceWriter, startApi, until } from '../test/helpers/kube.js';

const STREAMS = 1000;
const TRIALS = 5;
const PORT = 7443;
const CLUSTER = `default/svc:${PORT}`;

function log(line: string): void {
  process.stderr.write(line + '\n');
}

function now(): number {
  return performance.timeOrigin + performance.now();
}

function gcNow(): void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (() => void) | undefined;
  gc?.();
  gc?.();
}

function memory(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

type ChildMsg = { kind: 'ready' } | { kind: 'received'; times: number[] } | { kind: 'error'; error: string };

/** Child: open `n` ADS streams to `address`, each subscribed to CLUSTER; report pushes by version. */
async function clientMain(address: string, n: number): Promise<void> {
  const send = (m: ChildMsg): void => {
    process.send?.(m);
  };
  const Client = grpc.makeGenericClientConstructor(adsClientDefinition(), 'Ads');
  let ready = 0;
  let waitVersion = Infinity;
  let times: number[] = [];
  const clients: grpc.Client[] = [];
  for (let i = 0; i < n; i++) {
    const c = new Client(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
    clients.push(c);
    const call = (
      c as unknown as { StreamAggregatedResources(): grpc.ClientDuplexStream<unknown, DecodedResponse> }
    ).StreamAggregatedResources();
    let first = true;
    call.on('data', (r: DecodedResponse) => {
      const at = now();
      call.write({
        version_info: r.version_info,
        node: null,
        resource_names: [CLUSTER],
        type_url: EDS,
        response_nonce: r.nonce,
        error_detail: null,
      });
      if (first) {
        first = false;
        if (++ready === n) send({ kind: 'ready' });
        return;
      }
      if (Number(r.version_info) >= waitVersion) {
        times.push(at);
        if (times.length === n) {
          send({ kind: 'received', times });
          times = [];
          waitVersion = Infinity;
        }
      }
    });
    call.on('error', (e: Error) => send({ kind: 'error', error: e.message }));
    call.write({
      version_info: '',
      node: { id: `bench-${i}`, locality: { zone: 'bench' } },
      resource_names: [CLUSTER],
      type_url: EDS,
      response_nonce: '',
      error_detail: null,
    });
  }
  process.on('message', (m: { kind: 'expect'; version: number } | { kind: 'exit' }) => {
    if (m.kind === 'expect') waitVersion = m.version;
    else {
      for (const c of clients) c.close();
      process.exit(0);
    }
  });
}

function nextMessage(child: ChildProcess, kind: ChildMsg['kind'], timeoutMs: number): Promise<ChildMsg> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      child.off('message', on);
      reject(new Error(`bench client: no "${kind}" within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (m: ChildMsg): void => {
      if (m.kind === 'error') {
        clearTimeout(t);
        child.off('message', on);
        reject(new Error(`bench client: ${m.error}`));
      } else if (m.kind === kind) {
        clearTimeout(t);
        child.off('message', on);
        resolve(m);
      }
    };
    child.on('message', on);
  });
}

export async function runXdsBench(): Promise<Record<string, unknown>> {
  const api = await startApi();
  const slices = new SliceWriter(api, 'svc', PORT);
  const eps = (k: number): Array<{ ip: string }> =>
    Array.from({ length: 10 }, (_, i) => ({ ip: `10.1.${k % 250}.${i + 1}` }));
  slices.put('svc-a', eps(0));
  const cp = await XdsControlPlane.start({
    kubeConfigYaml: api.kubeConfigYaml(),
    targets: [`svc.default:${PORT}`],
    log: () => {},
  });
  let child: ChildProcess | undefined;
  try {
    await until(() => cp.cache.has(EDS, CLUSTER), 10_000);
    gcNow();
    const before = memory();
    child = fork(fileURLToPath(import.meta.url), ['--xds-bench-clients', cp.address, String(STREAMS)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await nextMessage(child, 'ready', 60_000);
    await until(() => cp.ads.streamCount === STREAMS, 10_000);
    gcNow();
    const bytesPerStream = Math.round((memory() - before) / STREAMS);
    log(`xds bench: ${STREAMS} streams open; ${(bytesPerStream / 1024).toFixed(1)} KB per stream`);

    const all: number[] = [];
    let max = 0;
    let warmupMaxMs = 0;
    // Trial 0 is a warm-up (first push on fresh connections and cold code paths), reported apart.
    for (let trial = 0; trial <= TRIALS; trial++) {
      const version = Number(cp.cache.version(EDS)) + 1;
      child.send({ kind: 'expect', version });
      const got = nextMessage(child, 'received', 10_000);
      // The IPC message and the ADS push travel on different channels: give the child a moment to
      // arm its expectation before the change can reach it.
      await new Promise((r) => setTimeout(r, 50));
      const t0 = now();
      slices.put('svc-a', eps(trial + 1));
      const m = (await got) as Extract<ChildMsg, { kind: 'received' }>;
      const lat = m.times.map((t) => t - t0).sort((a, b) => a - b);
      const last = lat[lat.length - 1] ?? 0;
      if (trial === 0) warmupMaxMs = last;
      else {
        all.push(...lat);
        max = Math.max(max, last);
      }
      log(`xds bench: trial ${trial}: first stream ${lat[0]?.toFixed(1)} ms, last ${last.toFixed(1)} ms`);
    }
    all.sort((a, b) => a - b);
    const p50 = all[Math.floor(all.length / 2)] ?? 0;
    return {
      bench: 'xds',
      streams: STREAMS,
      propagationMs: { p50: Math.round(p50 * 10) / 10, max: Math.round(max * 10) / 10, trials: TRIALS },
      warmupPropagationMaxMs: Math.round(warmupMaxMs * 10) / 10,
      bytesPerStream,
    };
  } finally {
    child?.send({ kind: 'exit' });
    child?.kill();
    await cp.close();
    await api.stop();
  }
}

if (process.argv[2] === '--xds-bench-clients') {
  void clientMain(process.argv[3] ?? '', Number(process.argv[4] ?? '0'));
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  void runXdsBench().then((r) => {
    process.stdout.write(JSON.stringify(r) + '\n');
  });
}
