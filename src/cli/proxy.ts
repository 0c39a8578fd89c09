// `grpc-kube proxy`: run the L7 proxy as a process (a sidecar container or an ingress Deployment).
//
//   grpc-kube proxy --mode sidecar|ingress --listen host:port [--kubeconfig FILE] [--context NAME]
//                   [--namespace NS] [--target svc.ns:port] [--policy round_robin|p2c|ewma]
//                   [--static svc.ns:port=ip:port,ip:port ...] [--grace-ms N] [--drain-delay-ms N]
//                   [--max-connection-age-ms N] [--max-attempts N] [--grpc-routes] [--workers N]
//                   [--debug-statuses] [--tls-cert F --tls-key F [--tls-ca F]]
//                   [--backend-tls-cert F --backend-tls-key F --backend-tls-ca F] [--metrics-address H:P]
//
// Endpoints come from the Kubernetes API (in-cluster ServiceAccount, --kubeconfig or KUBECONFIG);
// `--static` gives a Service a fixed list instead (no API needed). `--grpc-routes` follows GRPCRoute
// objects (weights, method and header matches; RBAC: list/watch grpcroutes). SIGTERM (or SIGINT) drains: keep
// serving --drain-delay-ms (endpoint removal spreads), then stop accepting, GOAWAY clients, finish
// RPCs in flight within --grace-ms, exit 0.
//
// --workers N runs N proxy processes on one listening socket (node:cluster; the primary accepts and
// hands connections out round-robin), so a proxy pod uses N cores: node:http2 is single-threaded and
// one process saturates one core. Each worker watches its Services itself (N watches); the primary
// passes SIGTERM/SIGINT on to every worker (over IPC: when the whole process group got the signal,
// each worker drains once, whichever arrives first), restarts a worker that dies (at most 5 times in 30 s), and
// exits 0 once all of them drained.
//
// --data-plane nghttpx keeps grpc-kube's discovery and puts a native data path under it: nghttpx
// carries the RPCs, its backends replaced through its API on every EndpointSlice change (see
// src/proxy/nghttpx.ts). Ingress with one --target, round robin; no GRPCRoutes or proxy retries.

import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startMetrics } from './metrics.js';
import { SourceRegistry } from '../discovery/registry.js';
import { GrpcKubeError, InvalidOptionError } from '../errors.js';
import { KubeClient } from '../kube/client.js';
import { loadKubeConfig } from '../kube/config.js';
import { parseProxyPolicy } from '../proxy/picker.js';
import { NghttpxDataPlane } from '../proxy/nghttpx.js';
import { GrpcProxy, type GrpcProxyOptions } from '../proxy/server.js';
import { untilStopped } from './stop.js';

export const PROXY_USAGE = `usage:
  grpc-kube proxy --mode sidecar|ingress --listen host:port [--kubeconfig FILE] [--context NAME]
                  [--namespace NS] [--target svc.ns:port] [--policy round_robin|p2c|ewma]
                  [--static svc.ns:port=ip:port,ip:port] [--grace-ms N] [--drain-delay-ms N]
                  [--max-connection-age-ms N] [--max-attempts N] [--grpc-routes] [--workers N]
                  [--debug-statuses] [--tls-cert F --tls-key F [--tls-ca F]]
                  [--backend-tls-cert F --backend-tls-key F --backend-tls-ca F]
      balance every gRPC call over the ready pods of a Service (sidecar: the call's authority
      names the Service; ingress: --target). SIGTERM drains within --grace-ms (default 10000).
      --workers N: N processes share the listening socket, one core each (default 1).
      --debug-statuses: an ingress names backends and Services in the statuses it decides
      (default: a generic message; a sidecar always names them).
      --tls-*: serve TLS (ALPN h2); --tls-ca: mutual TLS, the client's URI SAN goes to routes and
      backends as x-grpc-kube-peer-id. --backend-tls-*: mutual TLS to backends. Files are re-read
      when they change.
      --data-plane nghttpx: ingress only; grpc-kube watches the Service and sets the backends of a
      local nghttpx (Debian's nghttp2-proxy), which carries the RPCs (round robin; --workers = its threads).
`;

export interface ProxyCommandIo {
  /** Stops the proxy like SIGTERM does (tests). Without it, SIGTERM and SIGINT do. */
  signal?: AbortSignal;
  out?: (line: string) => void;
  /** Called once the proxy listens (tests). */
  onListening?: (proxy: GrpcProxy) => void;
}

function parseHostPort(text: string, field: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text);
  if (m === null) throw new InvalidOptionError(field, `must be host:port, got "${text}"`);
  const port = Number(m[2]);
  if (port > 65535) throw new InvalidOptionError(field, `port ${port} is out of range`);
  return { host: m[1] as string, port };
}

function parseStatic(values: readonly string[]): Record<string, { address: string; port: number }[]> {
  const out: Record<string, { address: string; port: number }[]> = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq <= 0)
      throw new InvalidOptionError('--static', `must be svc.ns:port=ip:port[,ip:port], got "${v}"`);
    out[v.slice(0, eq)] = v
      .slice(eq + 1)
      .split(',')
      .filter((s) => s !== '')
      .map((hp) => {
        const { host, port } = parseHostPort(hp, '--static');
        return { address: host, port };
      });
  }
  return out;
}

export async function proxyCommand(args: string[], io: ProxyCommandIo = {}): Promise<number> {
  const out = io.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const { values } = parseArgs({
    args,
    allowPositionals: false,
    options: {
      mode: { type: 'string' },
      listen: { type: 'string' },
      kubeconfig: { type: 'string' },
      context: { type: 'string' },
      namespace: { type: 'string' },
      target: { type: 'string' },
      policy: { type: 'string' },
      static: { type: 'string', multiple: true },
      'grace-ms': { type: 'string' },
      'max-attempts': { type: 'string' },
      'max-connection-age-ms': { type: 'string' },
      'drain-delay-ms': { type: 'string' },
      'grpc-routes': { type: 'boolean' },
      workers: { type: 'string' },
      'data-plane': { type: 'string' },
      'debug-statuses': { type: 'boolean' },
      'metrics-address': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      'backend-tls-cert': { type: 'string' },
      'backend-tls-key': { type: 'string' },
      'backend-tls-ca': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help === true) {
    out(PROXY_USAGE);
    return 0;
  }
  if (values.mode !== 'sidecar' && values.mode !== 'ingress') {
    process.stderr.write(PROXY_USAGE);
    throw new InvalidOptionError(
      '--mode',
      `must be sidecar or ingress, got ${JSON.stringify(values.mode ?? '')}`,
    );
  }
  const listen = parseHostPort(
    values.listen ?? (values.mode === 'sidecar' ? '127.0.0.1:15001' : ''),
    '--listen',
  );
  const ms = (flag: 'grace-ms' | 'drain-delay-ms' | 'max-connection-age-ms', fallback: number): number => {
    const text = values[flag];
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0)
      throw new InvalidOptionError(`--${flag}`, `must be a number >= 0, got "${text}"`);
    return n;
  };
  const graceMs = ms('grace-ms', 10_000);
  const drainDelayMs = ms('drain-delay-ms', 0);
  const maxAgeMs = ms('max-connection-age-ms', 0);
  const staticTargets = parseStatic(values.static ?? []);
  const workers = values.workers === undefined ? 1 : Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) {
    throw new InvalidOptionError('--workers', `must be an integer from 1 to 256, got "${values.workers}"`);
  }
  const mode = values.mode;
  const dataPlane = values['data-plane'] ?? 'node';
  if (dataPlane !== 'node' && dataPlane !== 'nghttpx') {
    throw new InvalidOptionError('--data-plane', `must be node or nghttpx, got "${dataPlane}"`);
  }
  // The Kubernetes client, unless every target is static (a sidecar can name any Service).
  const registryFor = (needsApi: boolean): { registry?: SourceRegistry; namespace?: string } => {
    if (!needsApi && values.kubeconfig === undefined) return { namespace: values.namespace };
    const client = new KubeClient(loadKubeConfig({ kubeconfig: values.kubeconfig, context: values.context }));
    return { registry: new SourceRegistry(client), namespace: values.namespace ?? client.defaultNamespace };
  };
  if (dataPlane === 'nghttpx') {
    const unsupported = (['policy', 'grpc-routes', 'max-attempts', 'max-connection-age-ms'] as const).find(
      (f) => values[f] !== undefined && !(f === 'policy' && values.policy === 'round_robin'),
    );
    if (mode !== 'ingress' || values.target === undefined || unsupported !== undefined) {
      throw new InvalidOptionError(
        '--data-plane',
        `nghttpx takes ingress mode with one --target, round robin only${unsupported === undefined ? '' : ` (--${unsupported} is for the node data plane)`}`,
      );
    }
    const { registry, namespace } = registryFor(!(values.target in staticTargets));
    const dp = new NghttpxDataPlane({
      target: values.target,
      defaultNamespace: namespace,
      registry,
      staticTargets,
      host: listen.host,
      port: listen.port,
      workers,
      onError: (err) => process.stderr.write(`grpc-kube proxy: ${err.code}: ${err.message}\n`),
    });
    // Listening for SIGTERM before nghttpx starts: a signal during start-up must still stop it,
    // not kill this process and leave nghttpx running.
    const stopped = untilStopped(io.signal);
    try {
      await dp.start();
    } catch (err) {
      await registry?.close();
      throw err;
    }
    out(`grpc-kube proxy: ingress listening on ${dp.address} (data plane nghttpx, ${workers} workers)`);
    await stopped;
    if (drainDelayMs > 0) await new Promise((r) => setTimeout(r, drainDelayMs));
    out(`grpc-kube proxy: draining nghttpx (grace ${graceMs} ms)`);
    await dp.stop(graceMs);
    await registry?.close();
    out(`grpc-kube proxy: stopped after ${dp.version} backend lists`);
    return 0;
  }
  if (workers > 1 && cluster.isPrimary) {
    return runPrimary(workers, args, mode, io, out);
  }
  const serve = async (): Promise<number> => {
    const options: GrpcProxyOptions = {
      mode,
      host: listen.host,
      port: listen.port,
      policy: parseProxyPolicy(values.policy ?? 'round_robin', '--policy'),
      staticTargets,
      ...(values.target !== undefined ? { target: values.target } : {}),
      ...(values['max-attempts'] !== undefined ? { maxAttempts: Number(values['max-attempts']) } : {}),
      ...(maxAgeMs > 0 ? { maxConnectionAgeMs: Math.round(maxAgeMs) } : {}),
      ...(values['debug-statuses'] === true ? { debugStatuses: true } : {}),
      ...tlsOptions(values),
    };
    // The API is needed unless every target is static (a sidecar can name any Service).
    const { registry, namespace } = registryFor(
      mode === 'sidecar'
        ? Object.keys(staticTargets).length === 0
        : !((values.target ?? '') in staticTargets),
    );
    if (registry !== undefined) {
      options.registry = registry;
      if (values['grpc-routes'] === true) options.grpcRoutes = true;
    }
    if (namespace !== undefined) options.defaultNamespace = namespace;
    const proxy = new GrpcProxy(options);
    const metrics = await startMetrics(values['metrics-address']);
    try {
      await proxy.listen();
    } catch (err) {
      await registry?.close();
      await metrics?.close();
      throw err;
    }
    if (metrics !== undefined) out(`grpc-kube proxy: metrics at http://${metrics.address}/metrics`);
    // An ingress says it listens once it knows its Service's endpoints (or syncTimeout passed), as
    // kube-proxy programs a Service before traffic arrives: the first calls need not wait for a list.
    if (mode === 'ingress' && values.target !== undefined) await proxy.watch(values.target);
    out(`grpc-kube proxy: ${mode} listening on ${proxy.address} (policy ${proxy.options.policy})`);
    io.onListening?.(proxy);
    await (cluster.isWorker && io.signal === undefined ? workerStopped() : untilStopped(io.signal));
    if (drainDelayMs > 0) {
      // Behind a Service: keep serving while the endpoint removal spreads to clients and kube-proxy.
      out(`grpc-kube proxy: terminating; serving ${drainDelayMs} ms more while the endpoint removal spreads`);
      await new Promise((r) => setTimeout(r, drainDelayMs));
    }
    out(`grpc-kube proxy: draining (${proxy.stats.active} RPCs in flight, grace ${graceMs} ms)`);
    await proxy.drain(graceMs);
    await registry?.close();
    await metrics?.close();
    out(
      `grpc-kube proxy: stopped after ${proxy.stats.rpcs} RPCs, ${proxy.stats.proxyFailures} ended by the proxy (${proxy.stats.retries} retried); statuses ${JSON.stringify(proxy.stats.byCode)}`,
    );
    // Where the time went (ms): the queue before the backend, its handshake, its first byte, the slowest calls.
    out(`grpc-kube proxy: timings ${JSON.stringify(proxy.stats.timings.summary())}`);
    return 0;
  };
  try {
    return await serve();
  } finally {
    // A --workers worker, stopped or failed: its IPC channel to the primary would keep it alive.
    if (cluster.isWorker) cluster.worker?.disconnect();
  }
}

/** What the primary sends a worker to have it drain (IPC, not a signal: see workerStopped). */
const STOP_MESSAGE = 'grpc-kube:proxy:stop';

/**
 * A --workers worker stops at the primary's STOP_MESSAGE or at the first SIGTERM/SIGINT, and ignores
 * the signals after it. Ctrl-C and systemd signal the whole process group, so a worker gets the
 * signal itself and again from its primary; a second signal with no handler left would kill it in
 * the middle of its drain (the primary then counted a failed worker and exited 1).
 */
function workerStopped(): Promise<void> {
  return new Promise<void>((resolve) => {
    let stopped = false;
    const stop = (): void => {
      if (stopped) return;
      stopped = true;
      process.off('message', onMessage);
      resolve();
    };
    const onMessage = (m: unknown): void => {
      if (m === STOP_MESSAGE) stop();
    };
    process.on('message', onMessage);
    // Kept for the worker's life: a handler (even after stop) is what keeps a signal from killing it.
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}

/** `--tls-*` and `--backend-tls-*` → proxy options; each set's files go together. */
function tlsOptions(values: Record<string, unknown>): Pick<GrpcProxyOptions, 'tls' | 'backendTls'> {
  const str = (k: string): string | undefined => (typeof values[k] === 'string' ? values[k] : undefined);
  const out: Pick<GrpcProxyOptions, 'tls' | 'backendTls'> = {};
  const cert = str('tls-cert');
  const key = str('tls-key');
  if ((cert === undefined) !== (key === undefined) || (str('tls-ca') !== undefined && cert === undefined))
    throw new InvalidOptionError('--tls-cert', '--tls-cert and --tls-key go together (--tls-ca needs both)');
  if (cert !== undefined && key !== undefined) {
    const ca = str('tls-ca');
    out.tls = { certFile: cert, keyFile: key, ...(ca !== undefined ? { caFile: ca } : {}) };
  }
  const bc = [str('backend-tls-cert'), str('backend-tls-key'), str('backend-tls-ca')];
  if (bc.some((v) => v !== undefined)) {
    const [certFile, keyFile, caFile] = bc;
    if (certFile === undefined || keyFile === undefined || caFile === undefined)
      throw new InvalidOptionError('--backend-tls-cert', '--backend-tls-cert, -key and -ca go together');
    out.backendTls = { certFile, keyFile, caFile };
  }
  return out;
}

const WORKER_MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

/**
 * The primary's node flags minus the ones that make it run inline code (`-e CODE`, `-p CODE`,
 * `--input-type`, a trailing `--`): workers run main.js, with the heap and other flags kept.
 */
export function workerExecArgv(execArgv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const a = execArgv[i] as string;
    if (a === '-e' || a === '--eval' || a === '-p' || a === '--print') {
      i++;
      continue;
    }
    if (a === '--' || a.startsWith('--eval=') || a.startsWith('--print=') || a.startsWith('--input-type'))
      continue;
    out.push(a);
  }
  return out;
}
/** A worker that dies this many times within RESTART_WINDOW_MS is not restarted again. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 30_000;

/**
 * The cluster primary: forks `n` workers running the same command (each a full proxy on the shared
 * socket), prints one line once all of them listen, restarts a worker that dies, and on
 * SIGTERM/SIGINT (or io.signal) has every worker drain. Returns 0, or 1 when a worker failed to
 * drain cleanly or kept crashing; throws GK_ERR_PROXY_WORKER when a worker dies before listening.
 */
async function runPrimary(
  n: number,
  args: readonly string[],
  mode: string,
  io: ProxyCommandIo,
  out: (line: string) => void,
): Promise<number> {
  cluster.setupPrimary({
    exec: WORKER_MAIN,
    args: ['proxy', ...args],
    execArgv: workerExecArgv(process.execArgv),
    silent: false,
  });
  const live = new Set<Worker>();
  const listened = new WeakSet<Worker>();
  const restarts: number[] = [];
  let listening = 0;
  let started = false;
  let stopping = false;
  let failed = false;
  let address = '';
  let onAllListening: () => void = () => {};
  let onStartFailed: (err: Error) => void = () => {};
  const allListening = new Promise<void>((resolve, reject) => {
    onAllListening = resolve;
    onStartFailed = reject;
  });
  let onStopped: () => void = () => {};
  const stopped = new Promise<void>((resolve) => (onStopped = resolve));

  const fork = (): void => {
    const w = cluster.fork();
    live.add(w);
    w.on('listening', (a: { address: string; port: number }) => {
      if (listened.has(w)) return;
      listened.add(w);
      address = a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
      if (started) {
        out(`grpc-kube proxy: worker ${w.process.pid} listening (a replacement)`);
      } else if (++listening === n) {
        started = true;
        onAllListening();
      }
    });
    w.once('exit', (code: number | null, signal: string | null) => {
      live.delete(w);
      const how = signal ?? `code ${code}`;
      if (stopping) {
        // Killed by our SIGTERM before it listened: it had nothing to drain.
        if (code !== 0 && !(signal === 'SIGTERM' && !listened.has(w))) failed = true;
      } else if (!started) {
        // A worker that could not even start (port taken, no API access): the others would fail too.
        onStartFailed(
          new GrpcKubeError(
            'GK_ERR_PROXY_WORKER',
            `a proxy worker exited (${how}) before listening; its error is above`,
          ),
        );
      } else {
        const now = Date.now();
        while (restarts.length > 0 && (restarts[0] as number) < now - RESTART_WINDOW_MS) restarts.shift();
        if (restarts.length >= MAX_RESTARTS) {
          process.stderr.write(
            `grpc-kube proxy: worker ${w.process.pid} exited (${how}); ${MAX_RESTARTS} restarts in ${RESTART_WINDOW_MS / 1000} s, not restarting\n`,
          );
          failed = true;
        } else {
          restarts.push(now);
          process.stderr.write(`grpc-kube proxy: worker ${w.process.pid} exited (${how}); restarting it\n`);
          fork();
        }
      }
      if (live.size === 0) onStopped();
    });
  };
  const stopAll = (): void => {
    if (stopping) return;
    stopping = true;
    for (const w of live) {
      // A worker still starting has no handler yet: a signal ends it (it has nothing to drain).
      // A channel closing under us means the worker is exiting anyway ('exit' accounts for it).
      if (listened.has(w) && w.isConnected()) w.send(STOP_MESSAGE, undefined, () => {});
      else w.process.kill('SIGTERM');
    }
    if (live.size === 0) onStopped();
  };
  process.once('SIGTERM', stopAll);
  process.once('SIGINT', stopAll);
  io.signal?.addEventListener('abort', stopAll, { once: true });
  const cleanup = (): void => {
    process.off('SIGTERM', stopAll);
    process.off('SIGINT', stopAll);
    io.signal?.removeEventListener('abort', stopAll);
  };
  for (let i = 0; i < n; i++) fork();
  try {
    await allListening;
  } catch (err) {
    stopAll();
    await stopped;
    cleanup();
    throw err;
  }
  out(`grpc-kube proxy: ${mode} listening on ${address} (${n} workers)`);
  if (io.signal?.aborted === true) stopAll();
  await stopped;
  cleanup();
  out(`grpc-kube proxy: all ${n} workers stopped`);
  return failed ? 1 : 0;
}
