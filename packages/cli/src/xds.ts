// `grpc-kube xds serve` runs the xDS control plane against a Kubernetes API until SIGINT/SIGTERM;
// `grpc-kube xds bootstrap` prints the GRPC_XDS_BOOTSTRAP_CONFIG JSON a proxyless client needs;
// `grpc-kube xds status` asks a control plane's CSDS what each connected client holds.

import { readFileSync } from 'node:fs';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { isDnsLabel } from 'grpc-kube/internal/discovery/service-ref.js';
import { xdsBootstrapJson, type FileWatcherProvider } from '@grpc-kube/xds/internal/bootstrap.js';
import type { AdsAccessOptions } from '@grpc-kube/xds/internal/ads-server.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import {
  checkDownstreamTls,
  checkUpstreamTls,
  CLUSTER_LB_POLICIES,
  type ClusterLbPolicy,
  type DownstreamTls,
  type SanMatch,
  type UpstreamTls,
} from '@grpc-kube/xds/internal/resources.js';
import {
  parseCommandLine,
  parseHostPort,
  usageOf,
  XDS_BOOTSTRAP_FLAGS,
  XDS_SERVE_FLAGS,
  XDS_STATUS_FLAGS,
  type FlagValues,
} from './options.js';
import { podNamespace } from './pod-namespace.js';
import { untilStopped } from './stop.js';
import { startMetrics } from './metrics.js';

export const XDS_USAGE = `${usageOf('xds serve')}\n\n${usageOf('xds bootstrap')}\n\n${usageOf('xds status')}`;

export interface XdsCommandIo {
  out?: (line: string) => void;
  err?: (line: string) => void;
  /** Ends `serve` (tests); default: SIGINT / SIGTERM. */
  signal?: AbortSignal;
  /** Called once `serve` listens, with the ADS address. */
  onListening?: (address: string) => void;
}

export async function xdsCommand(args: string[], io: XdsCommandIo = {}): Promise<number> {
  const out = io.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const err = io.err ?? ((l: string) => process.stderr.write(l + '\n'));
  const [sub, ...rest] = args;
  try {
    if (sub === 'bootstrap') return bootstrap(rest, out);
    if (sub === 'serve') return await serve(rest, out, err, io);
    if (sub === 'status') return await status(rest, out, err);
    err(XDS_USAGE);
    return 2;
  } catch (e) {
    if (e instanceof GrpcKubeError || (e instanceof TypeError && 'code' in e)) {
      err(`grpc-kube xds: ${e instanceof GrpcKubeError ? `${e.code}: ` : ''}${e.message}`);
      err(XDS_USAGE);
      return 2;
    }
    throw e;
  }
}

function bootstrap(args: string[], out: (l: string) => void): number {
  const { values, help } = parseCommandLine(XDS_BOOTSTRAP_FLAGS, args);
  if (help) {
    out(usageOf('xds bootstrap'));
    return 0;
  }
  if (values.server === undefined)
    throw new InvalidOptionError('--server', 'is required (HOST:PORT of the control plane)');
  if (values['node-id'] === undefined) throw new InvalidOptionError('--node-id', 'is required');
  out(
    xdsBootstrapJson({
      server: values.server,
      nodeId: values['node-id'],
      zone: values.zone,
      region: values.region,
      namespace: values.namespace,
      ...(values['xds-server'] === true ? { forXdsServer: true } : {}),
      ...(values['certificate-provider'] !== undefined
        ? { certificateProviders: parseCertificateProviders(values['certificate-provider']) }
        : {}),
    }),
  );
  return 0;
}

const PROVIDER_KEYS: Record<string, keyof FileWatcherProvider> = {
  ca: 'caCertificateFile',
  cert: 'certificateFile',
  key: 'privateKeyFile',
  'refresh-ms': 'refreshIntervalMs',
};

/** `NAME=ca=FILE,cert=FILE,key=FILE[,refresh-ms=N]` (repeatable) → file_watcher providers by name. */
export function parseCertificateProviders(specs: readonly string[]): Record<string, FileWatcherProvider> {
  const out: Record<string, FileWatcherProvider> = {};
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    const name = spec.slice(0, eq);
    if (eq <= 0 || name in out)
      throw new InvalidOptionError(
        '--certificate-provider',
        `wants NAME=ca=FILE,cert=FILE,key=FILE (each NAME once), got "${spec}"`,
      );
    const p: Record<string, string | number> = {};
    for (const part of spec.slice(eq + 1).split(',')) {
      const i = part.indexOf('=');
      const field = PROVIDER_KEYS[part.slice(0, i)];
      if (i <= 0 || field === undefined || part.slice(i + 1) === '')
        throw new InvalidOptionError(
          '--certificate-provider',
          `"${part}" in "${spec}": keys are ca, cert, key, refresh-ms, each =VALUE`,
        );
      p[field] = field === 'refreshIntervalMs' ? Number(part.slice(i + 1)) : part.slice(i + 1);
    }
    out[name] = p as FileWatcherProvider;
  }
  return out;
}

/** `--upstream-tls-*` → the A29 UpstreamTlsContext every Cluster carries, or none. */
function parseUpstreamTls(values: FlagValues<typeof XDS_SERVE_FLAGS>): UpstreamTls | undefined {
  const ca = values['upstream-tls-ca-instance'];
  if (ca === undefined) {
    if (values['upstream-tls-identity-instance'] !== undefined || values['upstream-tls-san'] !== undefined)
      throw new InvalidOptionError(
        '--upstream-tls-ca-instance',
        'is needed by the other --upstream-tls-* flags',
      );
    return undefined;
  }
  const sans = (values['upstream-tls-san'] ?? []).map((spec): SanMatch => {
    const i = spec.indexOf('=');
    const kind = spec.slice(0, i);
    if (i <= 0 || !['exact', 'prefix', 'suffix', 'contains'].includes(kind))
      throw new InvalidOptionError(
        '--upstream-tls-san',
        `wants exact|prefix|suffix|contains=VALUE, got "${spec}"`,
      );
    return { [kind]: spec.slice(i + 1) } as unknown as SanMatch;
  });
  return checkUpstreamTls({
    caInstance: ca,
    ...(values['upstream-tls-identity-instance'] !== undefined
      ? { identityInstance: values['upstream-tls-identity-instance'] }
      : {}),
    subjectAltNames: sans,
  });
}

interface CsdsConfig {
  node?: { id?: string };
  generic_xds_configs?: Array<{
    type_url?: string;
    name?: string;
    version_info?: string;
    client_status?: string;
    error_state?: { details?: string; version_info?: string };
  }>;
}

async function status(args: string[], out: (l: string) => void, err: (l: string) => void): Promise<number> {
  const { values, help } = parseCommandLine(XDS_STATUS_FLAGS, args);
  if (help) {
    out(usageOf('xds status'));
    return 0;
  }
  if (values.address === undefined)
    throw new InvalidOptionError('--address', 'is required (HOST:PORT of the control plane)');
  const address = values.address;
  parseHostPort(address, '--address');
  const [grpc, { csdsServiceDefinition }] = await Promise.all([
    import('@grpc/grpc-js'),
    import('@grpc-kube/xds/internal/csds.js'),
  ]);
  const Client = grpc.makeGenericClientConstructor(csdsServiceDefinition(), 'Csds');
  const client = new Client(address, grpc.credentials.createInsecure()) as unknown as {
    FetchClientStatus(
      req: object,
      opts: { deadline: number },
      cb: (e: { code: number; details: string } | null, r?: { config?: CsdsConfig[] }) => void,
    ): void;
    close(): void;
  };
  const req = values.node === undefined ? {} : { node_matchers: [{ node_id: { exact: values.node } }] };
  try {
    const res = await new Promise<{ config?: CsdsConfig[] }>((resolve, reject) =>
      client.FetchClientStatus(
        { ...req, exclude_resource_contents: true },
        { deadline: Date.now() + 10_000 },
        (e, r) => (e ? reject(e) : resolve(r ?? {})),
      ),
    );
    if (values.json === true) {
      out(JSON.stringify(res));
      return 0;
    }
    const configs = res.config ?? [];
    out(`${configs.length} client(s)`);
    for (const c of configs) {
      for (const x of c.generic_xds_configs ?? []) {
        const type = (x.type_url ?? '').slice((x.type_url ?? '').lastIndexOf('.') + 1);
        const nack = x.error_state?.details
          ? `  rejected ${x.error_state.version_info ?? '?'}: ${x.error_state.details}`
          : '';
        out(
          `${c.node?.id ?? '?'}  ${type}  ${x.name ?? ''}  version ${x.version_info || '-'}  ${x.client_status ?? 'UNKNOWN'}${nack}`,
        );
      }
    }
    return 0;
  } catch (e) {
    const g = e as { code?: number; details?: string };
    err(`grpc-kube xds status: CSDS at ${address} failed: ${g.details ?? String(e)} (code ${g.code ?? '?'})`);
    return 1;
  } finally {
    client.close();
  }
}

/** What `xds serve`'s flags ask for, checked without touching the network or the API. */
export interface XdsServeSettings {
  readonly host: string;
  readonly port: number;
  readonly tls?: { certFile: string; keyFile: string; caFile?: string };
  readonly access: AdsAccessOptions;
  readonly lbPolicy: ClusterLbPolicy;
  readonly upstreamTls?: UpstreamTls;
  readonly serverTls?: DownstreamTls;
  readonly targets: readonly string[];
  readonly kubeconfig?: string;
  /** GRPCRoutes: this namespace (a flag), every namespace, or — undefined — the pod's own. */
  readonly routeNamespace: string | 'all' | undefined;
}

/** `xds serve`'s flags → settings; every bad value is a typed error naming the flag. */
export function xdsServeSettings(values: FlagValues<typeof XDS_SERVE_FLAGS>): XdsServeSettings {
  const cert = values['tls-cert'];
  const key = values['tls-key'];
  if ((cert === undefined) !== (key === undefined))
    throw new InvalidOptionError('--tls-cert', 'and --tls-key go together');
  if (values['tls-ca'] !== undefined && cert === undefined)
    throw new InvalidOptionError('--tls-ca', 'needs --tls-cert and --tls-key (mutual TLS)');
  const tls =
    cert !== undefined && key !== undefined
      ? {
          certFile: cert,
          keyFile: key,
          ...(values['tls-ca'] !== undefined ? { caFile: values['tls-ca'] } : {}),
        }
      : undefined;
  if (values.listen !== undefined && (values.address !== undefined || values.port !== undefined))
    throw new InvalidOptionError('--listen', 'replaces --address and --port: give one or the other');
  // Plaintext ADS hands out pod addresses to whoever connects: loopback unless asked otherwise.
  let host = values.address ?? (tls === undefined ? '127.0.0.1' : '0.0.0.0');
  let port = Number(values.port ?? '18000');
  if (values.listen !== undefined) ({ host, port } = parseHostPort(values.listen, '--listen'));
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new InvalidOptionError('--port', `must be 0-65535, got "${values.port}"`);
  const policy = (values['lb-policy'] ?? 'round_robin') as ClusterLbPolicy;
  if (!CLUSTER_LB_POLICIES.includes(policy))
    throw new InvalidOptionError('--lb-policy', `must be one of ${CLUSTER_LB_POLICIES.join(', ')}`);
  const upstreamTls = parseUpstreamTls(values);
  const serverId = values['server-tls-identity-instance'];
  if (values['server-tls-ca-instance'] !== undefined && serverId === undefined)
    throw new InvalidOptionError('--server-tls-ca-instance', 'needs --server-tls-identity-instance');
  const serverTls =
    serverId !== undefined
      ? checkDownstreamTls({
          identityInstance: serverId,
          ...(values['server-tls-ca-instance'] !== undefined
            ? { caInstance: values['server-tls-ca-instance'] }
            : {}),
        })
      : undefined;
  const named = [values.namespace, values['route-namespace']].filter((n) => n !== undefined);
  if (named.length > 1 && named[0] !== named[1])
    throw new InvalidOptionError('--route-namespace', 'is another name for --namespace: give one');
  if (named.length > 0 && values['all-namespaces'] === true)
    throw new InvalidOptionError('--all-namespaces', 'and --namespace exclude each other');
  if (named[0] !== undefined && !isDnsLabel(named[0]))
    throw new InvalidOptionError('--namespace', `must be a namespace name, got "${named[0]}"`);
  return {
    host,
    port,
    ...(tls !== undefined ? { tls } : {}),
    access: parseAccess(values['allow-namespaces'] ?? [], values['max-names-per-stream']),
    lbPolicy: policy,
    ...(upstreamTls !== undefined ? { upstreamTls } : {}),
    ...(serverTls !== undefined ? { serverTls } : {}),
    targets: values.target ?? [],
    ...(values.kubeconfig !== undefined ? { kubeconfig: values.kubeconfig } : {}),
    routeNamespace: values['all-namespaces'] === true ? 'all' : named[0],
  };
}

async function serve(
  args: string[],
  out: (l: string) => void,
  err: (l: string) => void,
  io: XdsCommandIo,
): Promise<number> {
  const { values, help } = parseCommandLine(XDS_SERVE_FLAGS, args);
  if (help) {
    out(usageOf('xds serve'));
    return 0;
  }
  const s = xdsServeSettings(values);
  if (s.tls === undefined && !/^(127\.|::1$|localhost$)/.test(s.host))
    err(
      `grpc-kube xds: warning: serving plaintext ADS on ${s.host}; any peer that reaches it can read pod addresses (use --tls-cert/--tls-key/--tls-ca)`,
    );
  let kubeClient: KubeClient;
  if (s.kubeconfig !== undefined) {
    let yaml: string;
    try {
      yaml = readFileSync(s.kubeconfig, 'utf8');
    } catch (e) {
      throw new GrpcKubeError(
        'GK_ERR_KUBECONFIG_NOT_FOUND',
        `cannot read the kubeconfig file "${s.kubeconfig}" (--kubeconfig): ${(e as Error).message}`,
      );
    }
    kubeClient = KubeClient.fromKubeConfigString(yaml);
  } else kubeClient = KubeClient.fromDefault();
  const log = (l: string): void => err(`${new Date().toISOString()}  ${l}`);
  let routeNamespace: string | undefined;
  if (s.routeNamespace === 'all') log('GRPCRoutes: watching every namespace (--all-namespaces)');
  else {
    const kc = kubeClient.kubeConfig;
    const pod = podNamespace({
      flag: s.routeNamespace,
      kubeConfigNamespace: () => kc.getContextObject(kc.getCurrentContext())?.namespace,
    });
    routeNamespace = pod.namespace;
    log(`GRPCRoutes: watching namespace ${pod.namespace} (from ${pod.source})`);
  }
  // Listening for the stop before saying "listening": whoever waits for that line may signal at
  // once, and a SIGTERM with no handler yet would kill the process instead of closing it.
  const stopped = untilStopped(io.signal);
  // The control plane owns the client from here (closing its registry closes it).
  const metrics = await startMetrics(values['metrics-address']);
  if (metrics !== undefined) out(`grpc-kube xds: metrics at http://${metrics.address}/metrics`);
  const cp = await XdsControlPlane.start({
    kubeClient,
    address: `${s.host}:${s.port}`,
    access: s.access,
    ...(s.tls !== undefined ? { tls: s.tls } : {}),
    ...(routeNamespace !== undefined ? { routeNamespace } : {}),
    lbPolicy: s.lbPolicy,
    ...(s.upstreamTls !== undefined ? { upstreamTls: s.upstreamTls } : {}),
    ...(s.serverTls !== undefined ? { serverTls: s.serverTls } : {}),
    targets: s.targets,
    log,
  });
  out(
    `grpc-kube xds: ADS listening on ${cp.address} (state of the world; LDS/RDS/CDS/EDS; ${s.tls === undefined ? 'plaintext' : s.tls.caFile !== undefined ? 'mutual TLS' : 'TLS'})`,
  );
  io.onListening?.(cp.address);
  const offEvents = cp.onAdsEvent((e) => {
    if (e.kind === 'stream-close' && e.node)
      out(`${new Date().toISOString()}  client ${e.node.id} disconnected`);
    else if (e.kind === 'refused') out(`${new Date().toISOString()}  ${e.error.code}: ${e.error.message}`);
    else if (e.kind === 'request' && e.nonce === '' && e.node)
      out(
        `${new Date().toISOString()}  client ${e.node.id} (zone ${e.node.zone || '-'}) subscribes ${e.type.slice(e.type.lastIndexOf('.') + 1)} ${e.names.join(' ')}`,
      );
  });
  await stopped;
  offEvents();
  await cp.close();
  await metrics?.close();
  return 0;
}

/** `--allow-namespaces NODE_NS=NS1,NS2` (repeatable; NODE_NS `*` = every node) or `all`. */
function parseAccess(allow: readonly string[], maxNames: string | undefined): AdsAccessOptions {
  let allowNamespaces: 'all' | Record<string, string[]> = {};
  for (const a of allow) {
    if (a === 'all') {
      allowNamespaces = 'all';
      continue;
    }
    const m = /^([a-z0-9-]+|\*)=([a-z0-9-]+(,[a-z0-9-]+)*)$/.exec(a);
    if (m === null)
      throw new InvalidOptionError('--allow-namespaces', `must be NODE_NS=NS[,NS...] or all, got "${a}"`);
    if (allowNamespaces !== 'all') {
      const from = m[1] as string;
      allowNamespaces[from] = [...(allowNamespaces[from] ?? []), ...(m[2] as string).split(',')];
    }
  }
  const out: { allowNamespaces: typeof allowNamespaces; maxNamesPerStream?: number } = { allowNamespaces };
  if (maxNames !== undefined) {
    const n = Number(maxNames);
    if (!Number.isInteger(n) || n < 1)
      throw new InvalidOptionError('--max-names-per-stream', `must be an integer >= 1, got "${maxNames}"`);
    out.maxNamesPerStream = n;
  }
  return out;
}
