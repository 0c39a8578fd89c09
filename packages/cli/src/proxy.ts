// `grpc-kube proxy`: run the L7 proxy as a process (a sidecar container or an ingress Deployment).
// Its flags are PROXY_FLAGS in options.ts (`grpc-kube proxy --help` lists them).
//
// Endpoints come from the Kubernetes API (in-cluster ServiceAccount, --kubeconfig or KUBECONFIG);
// `--static` gives a Service a fixed list instead (no API needed). `--grpc-routes` follows GRPCRoute
// objects in the pod's namespace (weights, method and header matches; RBAC: list/watch grpcroutes;
// a watch error goes to stderr with its code). SIGTERM (or SIGINT) drains: keep
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
// packages/proxy/src/nghttpx.ts). Ingress with one --target, round robin; no GRPCRoutes or proxy retries.
// Should nghttpx die, the command fails with GK_ERR_PROXY_DATA_PLANE (exit 1): a proxy process
// that lives on with nothing listening would pass a liveness check and serve nobody.

import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { SourceRegistry } from 'grpc-kube/internal/discovery/registry.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { loadKubeConfig } from 'grpc-kube/internal/kube/config.js';
import { parseProxyPolicy } from '@grpc-kube/proxy/internal/picker.js';
import { NghttpxDataPlane } from '@grpc-kube/proxy/internal/nghttpx.js';
import { GrpcProxy, type GrpcProxyOptions } from '@grpc-kube/proxy/internal/server.js';
import { parseCommandLine, parseHostPort, PROXY_FLAGS, usageOf } from './options.js';
import { startMetrics } from './metrics.js';
import { podNamespace } from './pod-namespace.js';
import { untilStopped } from './stop.js';

export const PROXY_USAGE = usageOf('proxy') + '\n';

export interface ProxyCommandIo {
  /** Stops the proxy like SIGTERM does (tests). Without it, SIGTERM and SIGINT do. */
  signal?: AbortSignal;
  out?: (line: string) => void;
  /** Called once the proxy listens (tests). */
  onListening?: (proxy: GrpcProxy) => void;
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
  const { values, help } = parseCommandLine(PROXY_FLAGS, args);
  if (help) {
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
  // The Kubernetes client, unless every target is static (a sidecar can name any Service). The
  // namespace (of `svc:port` names and of --grpc-routes) is the pod's own unless --namespace says.
  const registryFor = (needsApi: boolean): { registry?: SourceRegistry; namespace: string } => {
    if (!needsApi && values.kubeconfig === undefined)
      return { namespace: podNamespace({ flag: values.namespace }).namespace };
    const client = new KubeClient(loadKubeConfig({ kubeconfig: values.kubeconfig, context: values.context }));
    const kc = client.kubeConfig;
    const { namespace } = podNamespace({
      flag: values.namespace,
      kubeConfigNamespace: () => kc.getContextObject(kc.getCurrentContext())?.namespace,
    });
    return { registry: new SourceRegistry(client), namespace };
  };
  if (values['all-namespaces'] === true && values['grpc-routes'] !== true)
    throw new InvalidOptionError('--all-namespaces', 'goes with --grpc-routes (it widens their watch)');
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
    let died: (err: GrpcKubeError) => void = () => {};
    const dataPlaneDied = new Promise<GrpcKubeError>((resolve) => (died = resolve));
    const dp = new NghttpxDataPlane({
      target: values.target,
      defaultNamespace: namespace,
      registry,
      staticTargets,
      host: listen.host,
      port: listen.port,
      workers,
      onError: (err) => process.stderr.write(`grpc-kube proxy: ${err.code}: ${err.message}\n`),
      onExit: (err) => died(err),
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
    // nghttpx dying is this process failing: exit 1 (GK_ERR_PROXY_DATA_PLANE) so the pod restarts,
    // instead of a live process with nothing listening.
    const death = await Promise.race([stopped.then(() => undefined), dataPlaneDied]);
    if (death !== undefined) {
      await dp.stop(0);
      await registry?.close();
      throw death;
    }
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
    options.defaultNamespace = namespace;
    if (registry !== undefined) {
      options.registry = registry;
      if (values['grpc-routes'] === true) {
        // A cluster-wide watch under a namespaced Role is 403 on every retry: the pod's own namespace.
        options.grpcRoutes = values['all-namespaces'] === true ? true : { namespace };
        out(
          `grpc-kube proxy: GRPCRoutes in ${values['all-namespaces'] === true ? 'every namespace' : `namespace ${namespace}`}`,
        );
        // Retries come every few seconds while RBAC or the CRD is missing: each new error once.
        let last = '';
        options.onRouteError = (err) => {
          const line = `grpc-kube proxy: GRPCRoute watch: ${err.code}: ${err.message}`;
          if (line !== last) process.stderr.write(line + '\n');
          last = line;
        };
      }
    }
    // Listening for the stop before saying "listening": whoever waits for that line may signal at
    // once, and a SIGTERM with no handler yet would kill the process instead of draining it.
    const stopped = cluster.isWorker && io.signal === undefined ? workerStopped() : untilStopped(io.signal);
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
    await stopped;
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
  const serverName = str('backend-tls-server-name');
  if (bc.some((v) => v !== undefined) || serverName !== undefined) {
    const [certFile, keyFile, caFile] = bc;
    if (certFile === undefined || keyFile === undefined || caFile === undefined)
      throw new InvalidOptionError(
        '--backend-tls-cert',
        '--backend-tls-cert, -key and -ca go together (--backend-tls-server-name needs them)',
      );
    if (serverName !== undefined && (serverName === '' || /[\s,]/.test(serverName)))
      throw new InvalidOptionError(
        '--backend-tls-server-name',
        `must be one DNS name or URI, got "${serverName}"`,
      );
    out.backendTls = { certFile, keyFile, caFile, ...(serverName !== undefined ? { serverName } : {}) };
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
