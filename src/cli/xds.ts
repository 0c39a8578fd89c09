// `grpc-kube xds serve` runs the xDS control plane against a Kubernetes API until SIGINT/SIGTERM;
// `grpc-kube xds bootstrap` prints the GRPC_XDS_BOOTSTRAP_CONFIG JSON a proxyless client needs.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { GrpcKubeError, InvalidOptionError } from '../errors.js';
import { xdsBootstrapJson } from '../xds/bootstrap.js';
import type { AdsAccessOptions } from '../xds/ads-server.js';
import { XdsControlPlane } from '../xds/control-plane.js';
import { CLUSTER_LB_POLICIES, type ClusterLbPolicy } from '../xds/resources.js';
import { untilStopped } from './stop.js';
import { startMetrics } from './metrics.js';

export const XDS_USAGE = `usage:
  grpc-kube xds serve [--kubeconfig FILE] [--address HOST] [--port N] [--route-namespace NS]
                      [--lb-policy ${CLUSTER_LB_POLICIES.join('|')}] [--target svc.ns:port ...]
                      [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]
                      [--allow-namespaces NODE_NS=NS,NS ... | --allow-namespaces all]
                      [--max-names-per-stream N] [--metrics-address HOST:PORT]
      --address: default 127.0.0.1 without TLS, 0.0.0.0 with it. --tls-ca: mutual TLS; a client
      certificate's SPIFFE URI SAN (spiffe://…/ns/NS/sa/SA) sets the node's namespace.
      A node reads its own namespace only, unless --allow-namespaces grants more.
  grpc-kube xds bootstrap --server HOST:PORT --node-id ID [--zone ZONE] [--region REGION] [--namespace NS]`;

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
  const { values } = parseArgs({
    args,
    options: {
      server: { type: 'string' },
      'node-id': { type: 'string' },
      zone: { type: 'string' },
      region: { type: 'string' },
      namespace: { type: 'string' },
    },
    strict: true,
  });
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
    }),
  );
  return 0;
}

async function serve(
  args: string[],
  out: (l: string) => void,
  err: (l: string) => void,
  io: XdsCommandIo,
): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      kubeconfig: { type: 'string' },
      address: { type: 'string' },
      port: { type: 'string', default: '18000' },
      'route-namespace': { type: 'string' },
      'lb-policy': { type: 'string', default: 'round_robin' },
      target: { type: 'string', multiple: true },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      'allow-namespaces': { type: 'string', multiple: true },
      'max-names-per-stream': { type: 'string' },
      'metrics-address': { type: 'string' },
    },
    strict: true,
  });
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
  // Plaintext ADS hands out pod addresses to whoever connects: loopback unless asked otherwise.
  const address = values.address ?? (tls === undefined ? '127.0.0.1' : '0.0.0.0');
  if (tls === undefined && !/^(127\.|::1$|localhost$)/.test(address))
    err(
      `grpc-kube xds: warning: serving plaintext ADS on ${address}; any peer that reaches it can read pod addresses (use --tls-cert/--tls-key/--tls-ca)`,
    );
  const access = parseAccess(values['allow-namespaces'] ?? [], values['max-names-per-stream']);
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new InvalidOptionError('--port', `must be 0-65535, got "${values.port}"`);
  const policy = values['lb-policy'] as ClusterLbPolicy;
  if (!CLUSTER_LB_POLICIES.includes(policy))
    throw new InvalidOptionError('--lb-policy', `must be one of ${CLUSTER_LB_POLICIES.join(', ')}`);
  let kubeConfigYaml: string | undefined;
  if (values.kubeconfig !== undefined) {
    try {
      kubeConfigYaml = readFileSync(values.kubeconfig, 'utf8');
    } catch (e) {
      throw new GrpcKubeError(
        'GK_ERR_KUBECONFIG_NOT_FOUND',
        `cannot read the kubeconfig file "${values.kubeconfig}" (--kubeconfig): ${(e as Error).message}`,
      );
    }
  }
  const metrics = await startMetrics(values['metrics-address']);
  if (metrics !== undefined) out(`grpc-kube xds: metrics at http://${metrics.address}/metrics`);
  const cp = await XdsControlPlane.start({
    kubeConfigYaml,
    address: `${address}:${port}`,
    access,
    ...(tls !== undefined ? { tls } : {}),
    routeNamespace: values['route-namespace'],
    lbPolicy: policy,
    targets: values.target ?? [],
    log: (l) => err(`${new Date().toISOString()}  ${l}`),
  });
  out(
    `grpc-kube xds: ADS listening on ${cp.address} (state of the world; LDS/RDS/CDS/EDS; ${tls === undefined ? 'plaintext' : tls.caFile !== undefined ? 'mutual TLS' : 'TLS'})`,
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
  await untilStopped(io.signal);
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
