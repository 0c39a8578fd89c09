// `npm run bench -- proxy`: the grpc-kube L7 proxy against nghttpx and HAProxy (Debian packages),
// in one run, on the same backends, with the same load generator and the same cores.
//
// Setup, identical for every peer:
//  - backends: 3 nghttpd (nghttp2-server, C) on 127.0.0.51-53 answering every gRPC unary call with
//    one message and a `grpc-status: 0` trailer, so the backends are never the bottleneck;
//  - load: h2load (nghttp2-client), 10 connections × 10 concurrent streams, gRPC POSTs with
//    `content-type: application/grpc` and `te: trailers`, 1 s warm-up then a bounded measurement;
//  - cores: `rows` pins the proxy under test to core 0 with one worker/thread (grpc-kube is one
//    Node process, nghttpx --workers=1, haproxy nbthread 1); backends and load generator share
//    core 1. `rowsAllCores` gives every proxy 2 workers/threads (grpc-kube --workers 2, nghttpx
//    --workers=2, haproxy nbthread 2), nothing pinned: what each does with the machine, sharing it
//    with the load and the backends. PROXY_BENCH_CORES=1 runs only the first.
// TLS rows (`grpc-kube+TLS`, `nghttpx+TLS`): the same peers terminating TLS (ALPN h2, a P-256
// certificate from a bench CA) for h2load, backends still h2c: the cost of TLS measured side by side.
// Each peer runs `rounds` times, interleaved; rows report the mean. A peer that is not installed is an
// error naming it (`npm run bench` installs them); one that fails while running is listed in `skipped`.
// Figures: {name, rps, p50Ms, p99Ms} and ratios to the best peer. The
// grpc-kube proxy's own count of RPCs it failed is read from its exit line (h2load sees only HTTP
// statuses, not grpc-status).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCa, signed } from '@grpc-kube/lab/internal/cluster/real/pki.js';
import { freePorts, waitForListen } from 'grpc-kube/internal/net/ports.js';

interface Row {
  name: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  rpsVsBest?: number;
  p99VsBest?: number;
}

/** Where a peer runs: pinned to one core with one worker, or on every core with `workers`. */
interface Placement {
  readonly core: number | undefined;
  readonly workers: number;
}

interface Peer {
  readonly name: string;
  readonly bin: string;
  readonly pkg: string;
  /** Clients speak TLS (ALPN h2) to it, with the bench CA's certificate in dir/proxy.{crt,key}. */
  readonly tls?: boolean;
  start(dir: string, host: string, port: number, backends: readonly string[], at: Placement): ChildProcess;
}

const BACKEND_HOSTS = ['127.0.0.51', '127.0.0.52', '127.0.0.53'];
const PATH = '/grpckube.test.Json/Unary';
const MAIN = fileURLToPath(new URL('../../packages/cli/dist/src/main.js', import.meta.url));

function has(bin: string): boolean {
  return existsSync(bin);
}

function pinned(core: number | undefined, cmd: string, args: readonly string[]): [string, string[]] {
  return core !== undefined && has('/usr/bin/taskset')
    ? ['/usr/bin/taskset', ['-c', String(core), cmd, ...args]]
    : [cmd, [...args]];
}

function launch(core: number | undefined, cmd: string, args: readonly string[]): ChildProcess {
  const [c, a] = pinned(core, cmd, args);
  return spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'] });
}

// Not a proxy: a node:http2 server that answers every call itself, on the same core. It bounds what
// any proxy written on node:http2 can do (a proxy does this work twice per RPC, plus the client side).
const BARE_NODE_SERVER = `
import http2 from 'node:http2';
const [host, port] = process.argv.slice(1);
const body = Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]);
const s = http2.createServer();
s.on('stream', (st) => {
  st.on('error', () => {});
  st.resume();
  st.on('end', () => {
    st.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    st.once('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0' }));
    st.end(body);
  });
});
s.listen(Number(port), host);
`;

const REFERENCE: Peer = {
  name: 'node-http2-server (reference, not a proxy)',
  bin: process.execPath,
  pkg: 'node',
  start: (_dir, host, port, _backends, at) =>
    launch(at.core, process.execPath, [
      '--input-type=module',
      '-e',
      BARE_NODE_SERVER,
      '--',
      host,
      String(port),
    ]),
};

/** `grpc-kube proxy` in ingress mode to the backends, with `extra` flags and the placement's workers. */
function grpcKube(extra: readonly string[]): Peer['start'] {
  return (_dir, host, port, backends, at) =>
    launch(at.core, process.execPath, [
      MAIN,
      'proxy',
      '--mode',
      'ingress',
      '--listen',
      `${host}:${port}`,
      '--target',
      'bench.default:9000',
      '--static',
      `bench.default:9000=${backends.join(',')}`,
      // h2load stops with RPCs in flight: a grace lets their cancellations arrive, so the proxy's
      // own failure count (read from its exit line) holds only real failures.
      '--grace-ms',
      '1000',
      '--workers',
      String(at.workers),
      ...extra,
    ]);
}

const PEERS: readonly Peer[] = [
  { name: 'grpc-kube', bin: process.execPath, pkg: 'node', start: grpcKube(['--policy', 'round_robin']) },
  {
    // grpc-kube's discovery with nghttpx as its data plane (`proxy --data-plane nghttpx`).
    name: 'grpc-kube/nghttpx',
    bin: '/usr/sbin/nghttpx',
    pkg: 'nghttp2-proxy',
    start: grpcKube(['--data-plane', 'nghttpx']),
  },
  {
    name: 'nghttpx',
    bin: '/usr/sbin/nghttpx',
    pkg: 'nghttp2-proxy',
    start: (_dir, host, port, backends, at) =>
      launch(at.core, '/usr/sbin/nghttpx', [
        '--conf=/dev/null',
        `--frontend=${host},${port};no-tls`,
        ...backends.map((b) => `--backend=${b.replace(':', ',')};;proto=h2`),
        `--workers=${at.workers}`,
        '--log-level=ERROR',
        '--errorlog-file=/dev/null',
        '--no-ocsp',
      ]),
  },
  {
    // TLS termination (ALPN h2) in front of the same h2c backends: the cost of TLS, side by side.
    name: 'grpc-kube+TLS',
    bin: process.execPath,
    pkg: 'node',
    tls: true,
    start: (dir, host, port, backends, at) =>
      grpcKube([
        '--policy',
        'round_robin',
        '--tls-cert',
        join(dir, 'proxy.crt'),
        '--tls-key',
        join(dir, 'proxy.key'),
      ])(dir, host, port, backends, at),
  },
  {
    name: 'nghttpx+TLS',
    bin: '/usr/sbin/nghttpx',
    pkg: 'nghttp2-proxy',
    tls: true,
    start: (dir, host, port, backends, at) =>
      launch(at.core, '/usr/sbin/nghttpx', [
        '--conf=/dev/null',
        `--frontend=${host},${port}`,
        ...backends.map((b) => `--backend=${b.replace(':', ',')};;proto=h2`),
        `--workers=${at.workers}`,
        '--log-level=ERROR',
        '--errorlog-file=/dev/null',
        '--no-ocsp',
        join(dir, 'proxy.key'),
        join(dir, 'proxy.crt'),
      ]),
  },
  {
    name: 'haproxy',
    bin: '/usr/sbin/haproxy',
    pkg: 'haproxy',
    start: (dir, host, port, backends, at) => {
      const cfg = join(dir, 'haproxy.cfg');
      const text = [
        'global',
        `  nbthread ${at.workers}`,
        '  maxconn 1000',
        'defaults',
        '  mode http',
        '  timeout connect 5s',
        '  timeout client 60s',
        '  timeout server 60s',
        'frontend fe',
        `  bind ${host}:${port} proto h2`,
        '  default_backend be',
        'backend be',
        '  balance roundrobin',
        '  http-reuse always',
        ...backends.map((b, i) => `  server s${i} ${b} proto h2`),
        '',
      ].join('\n');
      writeFileSync(cfg, text);
      return launch(at.core, '/usr/sbin/haproxy', ['-f', cfg, '-db']);
    },
  },
];

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

interface LoadResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  failed: number;
}

async function h2load(
  dir: string,
  url: string,
  durationS: number,
  label: string,
  core: number | undefined,
): Promise<LoadResult> {
  const log = join(dir, `h2load-${label}.log`);
  const args = [
    '-D',
    String(durationS),
    '--warm-up-time=1',
    '-c',
    '10',
    '-m',
    '10',
    '-t',
    '1',
    '-d',
    join(dir, 'req.bin'),
    '-H',
    'content-type: application/grpc',
    '-H',
    'te: trailers',
    `--log-file=${log}`,
    url,
  ];
  const [cmd, a] = pinned(core, '/usr/bin/h2load', args);
  const res = spawnSync(cmd, a, { encoding: 'utf8', timeout: (durationS + 30) * 1000 });
  const out = res.stdout ?? '';
  const m = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out);
  const req =
    /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
      out,
    );
  // Status codes are counted from the warm-up on, requests only after it, so `done − 2xx` is off
  // by the requests in flight at the boundary; what failed is what h2load says failed or got a
  // non-2xx status.
  const codes = /status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (m === null || req === null)
    throw new Error(`h2load output not understood:\n${out}\n${res.stderr ?? ''}`);
  const lines = (await readFile(log, 'utf8')).split('\n');
  const durations: number[] = [];
  for (const l of lines) {
    const cols = l.split('\t');
    if (cols.length >= 3 && cols[1] === '200') durations.push(Number(cols[2]) / 1000);
  }
  const sorted = Float64Array.from(durations).sort();
  const non2xx = codes === null ? 0 : Number(codes[1]) + Number(codes[2]) + Number(codes[3]);
  return {
    rps: Number(m[1]),
    p50Ms: quantile(sorted, 0.5),
    p99Ms: quantile(sorted, 0.99),
    failed: Number(req[3]) + Number(req[4]) + Number(req[5]) + non2xx,
  };
}

const round3 = (x: number): number => Math.round(x * 1000) / 1000;

export async function runProxyBench(
  opts: { durationS?: number; rounds?: number } = {},
): Promise<Record<string, unknown>> {
  const durationS = opts.durationS ?? Number(process.env.PROXY_BENCH_SECONDS ?? 5);
  const rounds = opts.rounds ?? Number(process.env.PROXY_BENCH_ROUNDS ?? 2);
  const allCores = (process.env.PROXY_BENCH_CORES ?? '1,2').split(',').includes('2');
  const notes: string[] = [];
  // What the comparison needs must be there: a row left empty would read as a result. `npm run bench`
  // installs them (scripts/install-deps.sh); run without it, a missing one is an error naming it.
  const missing = [
    ['/usr/bin/h2load', 'nghttp2-client'],
    ['/usr/sbin/nghttpd', 'nghttp2-server'],
    ...PEERS.map((p) => [p.bin, p.pkg] as const),
  ].filter(([bin]) => !has(bin as string));
  if (missing.length > 0) {
    throw new Error(
      `the proxy bench needs ${missing.map(([b]) => b).join(', ')}: run it as \`npm run bench -- proxy\` (installs them as root) or apt-get install -y ${[...new Set(missing.map(([, p]) => p))].join(' ')}`,
    );
  }
  const peers = PEERS;
  /** Peers that failed while running (not for lack of a binary: that is an error above). */
  const skipped: { name: string; why: string }[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-proxy-bench-'));
  const children: ChildProcess[] = [];
  try {
    // One unary reply (5-byte gRPC frame header + JSON) for the one method the load calls.
    const reply = Buffer.from(JSON.stringify({ server: 'nghttpd' }));
    const frame = (b: Buffer): Buffer => Buffer.concat([Buffer.from([0, 0, 0, 0, b.length]), b]);
    await mkdir(join(dir, 'htdocs', 'grpckube.test.Json'), { recursive: true });
    await writeFile(join(dir, 'htdocs', PATH.slice(1)), frame(reply));
    await writeFile(join(dir, 'req.bin'), frame(Buffer.from('{}')));
    if (peers.some((p) => p.tls === true)) {
      // The TLS peers' serving certificate (P-256, as a cert-manager default would issue).
      await createCa(dir, 'grpc-kube-bench-ca', 1);
      await signed(
        dir,
        'proxy',
        '/CN=proxy',
        'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' +
          'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.60\n',
        1,
      );
    }

    const backends: string[] = [];
    for (const host of BACKEND_HOSTS) {
      const port = (await freePorts(1, host))[0] as number;
      const c = launch(1, '/usr/sbin/nghttpd', [
        '--no-tls',
        '-d',
        join(dir, 'htdocs'),
        '--trailer',
        'grpc-status: 0',
        '-a',
        host,
        String(port),
      ]);
      children.push(c);
      await waitForListen(host, port, () => c.exitCode === null);
      backends.push(`${host}:${port}`);
    }

    // One setting: every peer (and, on one core, the bare node:http2 server) `rounds` times.
    const measure = async (at: Placement, loadCore: number | undefined, withReference: boolean) => {
      const results = new Map<string, LoadResult[]>();
      const tag = at.core === undefined ? `${at.workers} workers` : `core ${at.core}`;
      for (let round = 0; round < rounds; round++) {
        // Alternate the order so no peer always runs first (or last) on a shared machine.
        const order = [
          ...(round % 2 === 0 ? peers : [...peers].reverse()),
          ...(withReference ? [REFERENCE] : []),
        ];
        for (const peer of order) {
          const host = '127.0.0.60';
          const port = (await freePorts(1, host))[0] as number;
          const child = peer.start(dir, host, port, backends, at);
          let stdout = '';
          let stderr = '';
          child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
          child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
          children.push(child);
          try {
            await waitForListen(host, port, () => child.exitCode === null);
            const label = `${peer.name.replace(/[^a-z0-9]+/gi, '-')}-${at.workers}-${round}`;
            const scheme = peer.tls === true ? 'https' : 'http';
            const r = await h2load(dir, `${scheme}://${host}:${port}${PATH}`, durationS, label, loadCore);
            if (r.failed > 0) notes.push(`${peer.name} (${tag}) round ${round}: ${r.failed} requests failed`);
            results.set(peer.name, [...(results.get(peer.name) ?? []), r]);
          } catch (err) {
            skipped.push({
              name: `${peer.name} (${tag})`,
              why: `${(err as Error).message}; stderr: ${stderr.slice(0, 300)}`,
            });
          } finally {
            await stop(child);
          }
          // The proxy's own count of RPCs it ended with a status (h2load cannot see grpc-status).
          for (const m of stdout.matchAll(/stopped after (\d+) RPCs, (\d+) ended by the proxy/g)) {
            if (m[2] !== '0')
              notes.push(`${peer.name} (${tag}) round ${round}: ${m[2]} of ${m[1]} RPCs failed by the proxy`);
          }
        }
      }
      const rows: Row[] = [];
      for (const peer of peers) {
        const rs = results.get(peer.name);
        if (rs === undefined || rs.length === 0) continue;
        const mean = (f: (r: LoadResult) => number): number => rs.reduce((s, r) => s + f(r), 0) / rs.length;
        rows.push({
          name: peer.name,
          rps: Math.round(mean((r) => r.rps)),
          p50Ms: round3(mean((r) => r.p50Ms)),
          p99Ms: round3(mean((r) => r.p99Ms)),
        });
      }
      const bestRps = Math.max(...rows.map((r) => r.rps));
      const bestP99 = Math.min(...rows.map((r) => r.p99Ms));
      for (const r of rows) {
        r.rpsVsBest = round3(r.rps / bestRps);
        r.p99VsBest = round3(r.p99Ms / bestP99);
        process.stderr.write(
          `${tag.padEnd(10)} ${r.name.padEnd(17)} ${String(r.rps).padStart(8)} req/s  p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms  ` +
            `rps ×${r.rpsVsBest} p99 ×${r.p99VsBest} of best\n`,
        );
      }
      const ref = results.get(REFERENCE.name) ?? [];
      const refRps =
        ref.length === 0 ? undefined : Math.round(ref.reduce((a, r) => a + r.rps, 0) / ref.length);
      return { rows, refRps };
    };

    const pin = has('/usr/bin/taskset');
    const one = await measure({ core: pin ? 0 : undefined, workers: 1 }, pin ? 1 : undefined, true);
    const all = allCores ? await measure({ core: undefined, workers: 2 }, undefined, false) : undefined;
    const kube1 = one.rows.find((r) => r.name === 'grpc-kube');
    const kube2 = all?.rows.find((r) => r.name === 'grpc-kube');
    return {
      bench: 'proxy',
      rows: one.rows,
      rowsAllCores: all?.rows,
      load: { generator: 'h2load', connections: 10, streamsPerConnection: 10, durationS, rounds },
      cores: {
        rows: pin
          ? 'proxy on core 0 with one worker; load generator and backends on core 1'
          : 'unpinned (no taskset)',
        rowsAllCores:
          'proxy with 2 workers/threads, load generator unpinned, backends on core 1 (2-core machine)',
      },
      backends: { kind: 'nghttpd', count: backends.length },
      // What node:http2 alone does on the same core, answering calls itself: the ceiling for any
      // proxy built on it.
      nodeHttp2ServerRps: one.refRps,
      grpcKubeVsNodeHttp2Server:
        one.refRps === undefined || kube1 === undefined ? undefined : round3(kube1.rps / one.refRps),
      // What a second worker buys grpc-kube (2 workers, shared machine ÷ 1 worker, own core).
      grpcKubeWorkersScaling:
        kube1 === undefined || kube2 === undefined ? undefined : round3(kube2.rps / kube1.rps),
      notes,
      skipped,
    };
  } finally {
    for (const c of children) await stop(c);
    await rm(dir, { recursive: true, force: true });
  }
}
