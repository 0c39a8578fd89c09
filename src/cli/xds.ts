// `grpc-kube xds serve` runs the xDS control plane against a Kubernetes API until SIGINT/SIGTERM;
// `grpc-kube xds bootstrap` prints the GRPC_XDS_BOOTSTRAP_CONFIG JSON a proxyless client needs.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { GrpcKubeError, InvalidOptionError } from '../errors.js';
import { xdsBootstrapJson } from '../xds/bootstrap.js';
import { XdsControlPlane } from '../xds/control-plane.js';
import { CLUSTER_LB_POLICIES, type ClusterLbPolicy } from '../xds/resources.js';
import { untilStopped } from './stop.js';

export const XDS_USAGE = `usage:
  grpc-kube xds serve [--kubeconfig FILE] [--address HOST] [--port N] [--route-namespace NS]
                      [--lb-policy ${CLUSTER_LB_POLICIES.join('|')}] [--target svc.ns:port ...]
  grpc-kube xds bootstrap --server HOST:PORT --node-id ID [--zone ZONE] [--region REGION]`;

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
      address: { type: 'string', default: '0.0.0.0' },
      port: { type: 'string', default: '18000' },
      'route-namespace': { type: 'string' },
      'lb-policy': { type: 'string', default: 'round_robin' },
      target: { type: 'string', multiple: true },
    },
    strict: true,
  });
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
  const cp = await XdsControlPlane.start({
    kubeConfigYaml,
    address: `${values.address}:${port}`,
    routeNamespace: values['route-namespace'],
    lbPolicy: policy,
    targets: values.target ?? [],
    log: (l) => err(`${new Date().toISOString()}  ${l}`),
  });
  out(`grpc-kube xds: ADS listening on ${cp.address} (state of the world; LDS/RDS/CDS/EDS)`);
  io.onListening?.(cp.address);
  const offEvents = cp.onAdsEvent((e) => {
    if (e.kind === 'stream-close' && e.node)
      out(`${new Date().toISOString()}  client ${e.node.id} disconnected`);
    else if (e.kind === 'request' && e.nonce === '' && e.node)
      out(
        `${new Date().toISOString()}  client ${e.node.id} (zone ${e.node.zone || '-'}) subscribes ${e.type.slice(e.type.lastIndexOf('.') + 1)} ${e.names.join(' ')}`,
      );
  });
  await untilStopped(io.signal);
  offEvents();
  await cp.close();
  return 0;
}
