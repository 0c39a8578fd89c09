// The flags of every grpc-kube command, declared once per command. The parser (node:util's
// parseArgs, strict: an unknown flag is an error) and each command's --help list both come from
// these tables, and test/deploy/manifests.test.ts parses every command line shipped in deploy/ and
// the Dockerfile with them, so a manifest cannot pass a flag the CLI does not know.
// This module imports nothing heavy: the tables are read before any command module loads.

import { parseArgs } from 'node:util';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';

export interface Flag {
  readonly type: 'string' | 'boolean';
  /** Repeatable; the values come as a list. */
  readonly multiple?: boolean;
  /** The value's placeholder in --help (HOST:PORT, N, FILE). */
  readonly value?: string;
  readonly help: string;
}

export type FlagTable = Readonly<Record<string, Flag>>;

type FlagValue<F extends Flag> = F['type'] extends 'boolean'
  ? boolean
  : F extends { readonly multiple: true }
    ? string[]
    : string;

/** What parseCommandLine returns for a table: each flag given, by name. */
export type FlagValues<T extends FlagTable> = { -readonly [K in keyof T]?: FlagValue<T[K]> };

export interface Command {
  /** The words after `grpc-kube`, e.g. `xds serve`. */
  readonly name: string;
  /** Positional arguments, as --help names them. */
  readonly positionals?: readonly string[];
  readonly summary: string;
  readonly flags: FlagTable;
}

const KUBECONFIG = {
  type: 'string',
  value: 'FILE',
  help: 'kubeconfig to use (default: in-cluster ServiceAccount, else KUBECONFIG, else ~/.kube/config)',
} as const satisfies Flag;
const CONTEXT = {
  type: 'string',
  value: 'NAME',
  help: 'kubeconfig context (default: the current one)',
} as const satisfies Flag;
const ALL_NAMESPACES = {
  type: 'boolean',
  help: 'watch GRPCRoutes in every namespace (needs list/watch grpcroutes in a ClusterRole)',
} as const satisfies Flag;
const POD_NAMESPACE_CHAIN =
  'default: env POD_NAMESPACE, else the ServiceAccount namespace file, else the kubeconfig context namespace';

export const RESOLVE_FLAGS = {
  kubeconfig: KUBECONFIG,
  context: CONTEXT,
  once: { type: 'boolean', help: 'print the first endpoint set (or error) and exit' },
} as const satisfies FlagTable;

const METRICS_ADDRESS_FLAG = {
  type: 'string',
  value: 'HOST:PORT',
  help: 'serve every metric in Prometheus text at /metrics (docs/metrics.md)',
} as const;

export const XDS_SERVE_FLAGS = {
  kubeconfig: KUBECONFIG,
  listen: {
    type: 'string',
    value: 'HOST:PORT',
    help: 'where ADS listens (default 127.0.0.1:18000 without TLS, 0.0.0.0:18000 with it)',
  },
  address: { type: 'string', value: 'HOST', help: 'the host of --listen alone' },
  port: { type: 'string', value: 'N', help: 'the port of --listen alone (0 picks one)' },
  namespace: {
    type: 'string',
    value: 'NS',
    help: `watch GRPCRoutes in NS only, as a namespaced Role allows (${POD_NAMESPACE_CHAIN})`,
  },
  'route-namespace': { type: 'string', value: 'NS', help: 'the same as --namespace' },
  'all-namespaces': ALL_NAMESPACES,
  'lb-policy': {
    type: 'string',
    value: 'POLICY',
    help: 'the Cluster policy sent in CDS (default round_robin)',
  },
  target: {
    type: 'string',
    multiple: true,
    value: 'SVC.NS:PORT',
    help: 'a Listener served before anyone asks (for wildcard clients such as Envoy)',
  },
  'tls-cert': { type: 'string', value: 'FILE', help: 'serve ADS over TLS with this certificate' },
  'tls-key': { type: 'string', value: 'FILE', help: 'the key of --tls-cert' },
  'tls-ca': {
    type: 'string',
    value: 'FILE',
    help: "mutual TLS: a client certificate's SPIFFE URI SAN (spiffe://…/ns/NS/sa/SA) sets the node's namespace",
  },
  'allow-namespaces': {
    type: 'string',
    multiple: true,
    value: 'NODE_NS=NS,NS|all',
    help: 'namespaces a node may read besides its own',
  },
  'max-names-per-stream': { type: 'string', value: 'N', help: 'names one ADS stream may subscribe to' },
  'upstream-tls-ca-instance': {
    type: 'string',
    value: 'NAME',
    help: "gRFC A29: Clusters carry an UpstreamTlsContext; NAME is the clients' CA certificate provider",
  },
  'upstream-tls-identity-instance': {
    type: 'string',
    value: 'NAME',
    help: "the clients' certificate provider for their own certificate (mutual TLS)",
  },
  'server-tls-identity-instance': {
    type: 'string',
    value: 'NAME',
    help: "gRFC A36: XdsServers' server Listeners carry a DownstreamTlsContext with this certificate provider",
  },
  'server-tls-ca-instance': {
    type: 'string',
    value: 'NAME',
    help: "the XdsServers' CA certificate provider: clients must present a certificate (mutual TLS)",
  },
  'upstream-tls-san': {
    type: 'string',
    multiple: true,
    value: 'exact|prefix|suffix|contains=VALUE',
    help: "a SAN the server's certificate must carry (any one of them)",
  },
  'metrics-address': METRICS_ADDRESS_FLAG,
} as const satisfies FlagTable;

export const XDS_BOOTSTRAP_FLAGS = {
  server: { type: 'string', value: 'HOST:PORT', help: 'the control plane (required)' },
  'node-id': { type: 'string', value: 'ID', help: 'the node id (required)' },
  zone: { type: 'string', value: 'ZONE', help: "the node's locality zone" },
  region: { type: 'string', value: 'REGION', help: "the node's locality region" },
  namespace: { type: 'string', value: 'NS', help: "the node's namespace (what it may read)" },
  'xds-server': {
    type: 'boolean',
    help: 'for an XdsServer: add server_listener_resource_name_template (gRFC A36)',
  },
  'certificate-provider': {
    type: 'string',
    multiple: true,
    value: 'NAME=ca=FILE,cert=FILE,key=FILE[,refresh-ms=N]',
    help: 'a file_watcher certificate provider (gRFC A29) for XdsChannelCredentials',
  },
} as const satisfies FlagTable;

export const XDS_STATUS_FLAGS = {
  address: { type: 'string', value: 'HOST:PORT', help: 'the control plane, plaintext (required)' },
  node: { type: 'string', value: 'ID', help: 'only this node id' },
  json: { type: 'boolean', help: 'print the ClientStatusResponse as JSON' },
} as const satisfies FlagTable;

export const PROXY_FLAGS = {
  mode: {
    type: 'string',
    value: 'sidecar|ingress',
    help: 'sidecar: the authority names the Service; ingress: --target',
  },
  listen: {
    type: 'string',
    value: 'HOST:PORT',
    help: 'where the proxy listens (sidecar default 127.0.0.1:15001)',
  },
  kubeconfig: KUBECONFIG,
  context: CONTEXT,
  namespace: {
    type: 'string',
    value: 'NS',
    help: `namespace of svc:port names and of --grpc-routes (${POD_NAMESPACE_CHAIN})`,
  },
  target: { type: 'string', value: 'SVC.NS:PORT', help: 'ingress: where RPCs go' },
  policy: {
    type: 'string',
    value: 'round_robin|p2c|ewma',
    help: 'the balancing policy (default round_robin)',
  },
  static: {
    type: 'string',
    multiple: true,
    value: 'SVC.NS:PORT=IP:PORT,…',
    help: 'a fixed endpoint list for a Service (no API needed)',
  },
  'grace-ms': {
    type: 'string',
    value: 'N',
    help: 'on SIGTERM, RPCs in flight get this long (default 10000)',
  },
  'drain-delay-ms': {
    type: 'string',
    value: 'N',
    help: 'on SIGTERM, keep serving this long first, while the endpoint removal spreads (default 0)',
  },
  'max-connection-age-ms': { type: 'string', value: 'N', help: 'GOAWAY client connections after this long' },
  'max-attempts': { type: 'string', value: 'N', help: 'attempts per RPC, counting the first (default 3)' },
  'grpc-routes': { type: 'boolean', help: 'follow GRPCRoutes in --namespace (RBAC: list/watch grpcroutes)' },
  'all-namespaces': ALL_NAMESPACES,
  workers: {
    type: 'string',
    value: 'N',
    help: 'processes sharing the listening socket, one core each (default 1)',
  },
  'data-plane': {
    type: 'string',
    value: 'node|nghttpx',
    help: 'nghttpx: ingress with one --target; a local nghttpx carries the RPCs (round robin)',
  },
  'debug-statuses': {
    type: 'boolean',
    help: 'an ingress names backends and Services in the statuses it decides',
  },
  'metrics-address': METRICS_ADDRESS_FLAG,
  'tls-cert': { type: 'string', value: 'FILE', help: 'serve TLS (ALPN h2) with this certificate' },
  'tls-key': { type: 'string', value: 'FILE', help: 'the key of --tls-cert' },
  'tls-ca': {
    type: 'string',
    value: 'FILE',
    help: "mutual TLS; the client's URI SAN goes on as x-grpc-kube-peer-id",
  },
  'backend-tls-cert': {
    type: 'string',
    value: 'FILE',
    help: 'mutual TLS to backends: the proxy certificate',
  },
  'backend-tls-key': { type: 'string', value: 'FILE', help: 'the key of --backend-tls-cert' },
  'backend-tls-ca': { type: 'string', value: 'FILE', help: 'the CA backends are verified against' },
  'backend-tls-server-name': {
    type: 'string',
    value: 'NAME',
    help: "the DNS name or spiffe:// URI every backend's certificate must carry (default: its pod IP or Service DNS name)",
  },
} as const satisfies FlagTable;

export const LAB_FLAGS = {
  scenario: { type: 'string', value: 'NAME,…', help: 'scenarios to run (default: all)' },
  strategy: {
    type: 'string',
    value: 'NAME,…',
    help: 'strategies to run (default: all but the optional ones)',
  },
  quick: { type: 'boolean', help: 'scenarios at 0.3× their length' },
  json: { type: 'string', value: 'FILE', help: 'write the run records as JSON' },
  report: { type: 'string', value: 'FILE.html', help: 'write the HTML report' },
  seed: { type: 'string', value: 'N', help: 'seed of every random choice (default 1)' },
  cluster: { type: 'string', value: 'embedded|real', help: 'the lab cluster (real: root and Go)' },
  clients: { type: 'string', value: 'N', help: 'client channels per strategy (default 2)' },
  pacing: { type: 'string', value: 'MS', help: 'pause between RPCs of a client loop' },
  pods: { type: 'string', value: 'kit|plain|naive', help: "how the pods' servers shut down (default kit)" },
  'client-defaults': {
    type: 'boolean',
    help: "clients with grpc-kube's client defaults (retry on UNAVAILABLE)",
  },
  idempotent: {
    type: 'boolean',
    help: 'with --client-defaults: SayHello is idempotent (also retried on RESOURCE_EXHAUSTED, ABORTED)',
  },
  hedge: {
    type: 'string',
    value: 'MS',
    help: 'with --client-defaults: hedge SayHello every MS (2 attempts)',
  },
  'pod-nice': { type: 'string', value: 'N', help: 'niceness of the pod processes (0-19)' },
  'pod-command': { type: 'string', value: 'CMD', help: 'run your own gRPC server as the pods (sh -c)' },
  metrics: {
    type: 'string',
    value: 'FILE',
    help: 'write every metric in Prometheus text at the end of the run',
  },
  'metrics-address': METRICS_ADDRESS_FLAG,
  tls: {
    type: 'boolean',
    help: 'mutual TLS end to end, then the same scenarios in plaintext, and what TLS cost',
  },
  manifests: {
    type: 'boolean',
    help: "each strategy's pods, Services, RBAC and helpers from its deploy/ overlay, applied as written",
  },
  assert: {
    type: 'string',
    multiple: true,
    value: '"SCENARIO/STRATEGY:FIGURE<OP>NUMBER"',
    help: 'a CI gate: exit 1 when one fails, 2 when one is malformed',
  },
} as const satisfies FlagTable;

export const COMMANDS = {
  resolve: {
    name: 'resolve',
    positionals: ['<target>'],
    summary:
      'print the live endpoint set of kubernetes:///svc.ns:port or dns-poll:///host:port and every change',
    flags: RESOLVE_FLAGS,
  },
  'xds serve': {
    name: 'xds serve',
    summary: 'the xDS control plane (ADS) fed live from Kubernetes, until SIGTERM',
    flags: XDS_SERVE_FLAGS,
  },
  'xds bootstrap': {
    name: 'xds bootstrap',
    summary: 'print the GRPC_XDS_BOOTSTRAP_CONFIG JSON a proxyless client needs',
    flags: XDS_BOOTSTRAP_FLAGS,
  },
  'xds status': {
    name: 'xds status',
    summary: "what each connected client holds: CSDS's ACKED / NACKED / REQUESTED per resource",
    flags: XDS_STATUS_FLAGS,
  },
  proxy: {
    name: 'proxy',
    summary: 'per-RPC gRPC proxy (sidecar or ingress) over the ready pods of a Service; SIGTERM drains',
    flags: PROXY_FLAGS,
  },
  lab: {
    name: 'lab',
    summary: "the lab's scenarios against each strategy on a lab cluster, side by side, with a report",
    flags: LAB_FLAGS,
  },
} as const satisfies Readonly<Record<string, Command>>;

export type CommandName = keyof typeof COMMANDS;

/** Which command `argv` (the words after `grpc-kube`) runs, and its own arguments. */
export function commandOf(argv: readonly string[]): { command: CommandName; args: string[] } | undefined {
  const two = `${argv[0] ?? ''} ${argv[1] ?? ''}`;
  if (two in COMMANDS) return { command: two as CommandName, args: argv.slice(2) };
  if ((argv[0] ?? '') in COMMANDS) return { command: argv[0] as CommandName, args: argv.slice(1) };
  return undefined;
}

export interface CommandLine<T extends FlagTable> {
  readonly values: FlagValues<T>;
  readonly positionals: string[];
  /** --help or -h was given: print usageOf(command) and do nothing else. */
  readonly help: boolean;
}

/**
 * Parse `args` against a command's table (strict: an unknown flag or a missing value throws
 * node's ERR_PARSE_ARGS_* TypeError, which main.ts turns into exit 2 with the usage).
 * `--help`/`-h` is every command's.
 */
export function parseCommandLine<T extends FlagTable>(
  table: T,
  args: readonly string[],
  opts: { positionals?: boolean } = {},
): CommandLine<T> {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const [name, f] of Object.entries(table)) {
    options[name] = { type: f.type, ...(f.multiple === true ? { multiple: true } : {}) };
  }
  const { values, positionals } = parseArgs({
    args: [...args],
    options,
    strict: true,
    allowPositionals: opts.positionals ?? false,
  });
  const { help, ...rest } = values;
  return { values: rest as FlagValues<T>, positionals, help: help === true };
}

/** `usage: grpc-kube NAME …` and one line per flag, from the command's table. */
export function usageOf(command: CommandName): string {
  const c: Command = COMMANDS[command];
  const flags = Object.entries(c.flags).map(([name, f]) => [
    `--${name}${f.value === undefined ? '' : ` ${f.value}`}${f.multiple === true ? ' …' : ''}`,
    f.help,
  ]);
  const width = Math.min(32, Math.max(...flags.map(([l]) => (l as string).length)));
  const lines = flags.map(([l, h]) => {
    const left = l as string;
    return left.length > width ? `  ${left}\n  ${' '.repeat(width)}  ${h}` : `  ${left.padEnd(width)}  ${h}`;
  });
  const pos = (c.positionals ?? []).join(' ');
  return [
    `usage: grpc-kube ${c.name}${pos === '' ? '' : ` ${pos}`} [flags]`,
    `  ${c.summary}`,
    '',
    ...lines,
  ].join('\n');
}

/** `host:port` or `[v6]:port` → its parts; `flag` names the option at fault. */
export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text);
  if (m === null) throw new InvalidOptionError(flag, `must be host:port, got "${text}"`);
  const port = Number(m[2]);
  if (port > 65535) throw new InvalidOptionError(flag, `port ${port} is out of range`);
  return { host: m[1] as string, port };
}
