// `grpc-kube proxy`: run the L7 proxy as a process (a sidecar container or an ingress Deployment).
//
//   grpc-kube proxy --mode sidecar|ingress --listen host:port [--kubeconfig FILE] [--context NAME]
//                   [--namespace NS] [--target svc.ns:port] [--policy round_robin|p2c|ewma]
//                   [--static svc.ns:port=ip:port,ip:port ...] [--grace-ms N] [--drain-delay-ms N]
//                   [--max-connection-age-ms N] [--max-attempts N] [--grpc-routes]
//
// Endpoints come from the Kubernetes API (in-cluster ServiceAccount, --kubeconfig or KUBECONFIG);
// `--static` gives a Service a fixed list instead (no API needed). `--grpc-routes` follows GRPCRoute
// objects (weights, method and header matches; RBAC: list/watch grpcroutes). SIGTERM (or SIGINT) drains: keep
// serving --drain-delay-ms (endpoint removal spreads), then stop accepting, GOAWAY clients, finish
// RPCs in flight within --grace-ms, exit 0.

import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { SourceRegistry } from '../discovery/registry.js';
import { InvalidOptionError } from '../errors.js';
import { KubeClient } from '../kube/client.js';
import { parseProxyPolicy } from '../proxy/picker.js';
import { GrpcProxy, type GrpcProxyOptions } from '../proxy/server.js';

export const PROXY_USAGE = `usage:
  grpc-kube proxy --mode sidecar|ingress --listen host:port [--kubeconfig FILE] [--context NAME]
                  [--namespace NS] [--target svc.ns:port] [--policy round_robin|p2c|ewma]
                  [--static svc.ns:port=ip:port,ip:port] [--grace-ms N] [--drain-delay-ms N]
                  [--max-connection-age-ms N] [--max-attempts N] [--grpc-routes]
      balance every gRPC call over the ready pods of a Service (sidecar: the call's authority
      names the Service; ingress: --target). SIGTERM drains within --grace-ms (default 10000).
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
  const options: GrpcProxyOptions = {
    mode: values.mode,
    host: listen.host,
    port: listen.port,
    policy: parseProxyPolicy(values.policy ?? 'round_robin', '--policy'),
    staticTargets,
    ...(values.target !== undefined ? { target: values.target } : {}),
    ...(values['max-attempts'] !== undefined ? { maxAttempts: Number(values['max-attempts']) } : {}),
    ...(maxAgeMs > 0 ? { maxConnectionAgeMs: Math.round(maxAgeMs) } : {}),
  };
  // The API is needed unless every target is static (a sidecar can name any Service).
  const needsApi =
    values.mode === 'sidecar'
      ? Object.keys(staticTargets).length === 0
      : !((values.target ?? '') in staticTargets);
  let registry: SourceRegistry | undefined;
  if (needsApi || values.kubeconfig !== undefined) {
    let client: KubeClient;
    if (values.kubeconfig !== undefined || values.context !== undefined) {
      const kc = new KubeConfig();
      if (values.kubeconfig !== undefined) kc.loadFromFile(values.kubeconfig);
      else kc.loadFromDefault();
      if (values.context !== undefined) kc.setCurrentContext(values.context);
      client = new KubeClient(kc);
    } else {
      client = KubeClient.fromDefault();
    }
    registry = new SourceRegistry(client);
    options.registry = registry;
    options.defaultNamespace = values.namespace ?? client.defaultNamespace;
    if (values['grpc-routes'] === true) options.grpcRoutes = true;
  } else if (values.namespace !== undefined) {
    options.defaultNamespace = values.namespace;
  }
  const proxy = new GrpcProxy(options);
  try {
    await proxy.listen();
  } catch (err) {
    await registry?.close();
    throw err;
  }
  out(`grpc-kube proxy: ${values.mode} listening on ${proxy.address} (policy ${proxy.options.policy})`);
  io.onListening?.(proxy);
  await new Promise<void>((resolve) => {
    if (io.signal !== undefined) {
      if (io.signal.aborted) resolve();
      else io.signal.addEventListener('abort', () => resolve(), { once: true });
      return;
    }
    const stop = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  if (drainDelayMs > 0) {
    // Behind a Service: keep serving while the endpoint removal spreads to clients and kube-proxy.
    out(`grpc-kube proxy: terminating; serving ${drainDelayMs} ms more while the endpoint removal spreads`);
    await new Promise((r) => setTimeout(r, drainDelayMs));
  }
  out(`grpc-kube proxy: draining (${proxy.stats.active} RPCs in flight, grace ${graceMs} ms)`);
  await proxy.drain(graceMs);
  await registry?.close();
  out(`grpc-kube proxy: stopped after ${proxy.stats.rpcs} RPCs`);
  return 0;
}
