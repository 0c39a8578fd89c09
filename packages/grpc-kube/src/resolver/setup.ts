// setup(): registers the `kubernetes:` and `dns-poll:` schemes with grpc-js. After it, a channel to
// `kubernetes:///hello.default:50051` follows the Service's EndpointSlices through one shared watch
// per Service, and `dns-poll:///hello.default.svc.cluster.local:50051` re-resolves a headless
// Service on an interval.

import {
  registerResolver,
  splitHostPort,
  uriToString,
  type ChannelOptions,
  type GrpcUri,
  type ResolverListener,
} from '../adapter/grpc-js.js';
import { DnsPollFeed } from '../discovery/dns-source.js';
import type { KubeSourceOptions } from '../discovery/kube-source.js';
import { SourceRegistry } from '../discovery/registry.js';
import { portSelectorText } from '../discovery/slices.js';
import { GrpcKubeError, InvalidOptionError, InvalidTargetError } from '../errors.js';
import { KubeClient } from '../kube/client.js';
import type { KubeConfigLike } from '../kube/kubeconfig.js';
import { EndpointResolver, serviceConfigFor, type ResolverSettings } from './endpoint-resolver.js';
import { parseKubernetesTarget } from './target.js';

export interface SetupOptions {
  /**
   * Where the Kubernetes API is: kubeconfig YAML, a KubeClient, or a loaded configuration (ours, from
   * loadKubeConfig(), or @kubernetes/client-node's KubeConfig). Default: KUBECONFIG, ~/.kube/config, then in-cluster.
   */
  kubeConfig?: KubeConfigLike | string | KubeClient;
  /** LB policy of the default service config (overridden per channel by `grpc-kube.lb_policy` or `grpc.service_config`). */
  defaultLbPolicy?: string;
  /** Default interval of `dns-poll:` targets (channel option `grpc-kube.dns_poll_interval_ms` overrides). */
  dnsPollIntervalMs?: number;
  /** Watch tuning: backoff, watch timeouts, page size. */
  source?: KubeSourceOptions;
}

export const DNS_POLL_INTERVAL_OPTION = 'grpc-kube.dns_poll_interval_ms';

export interface GrpcKube {
  /** The shared watches (created on the first `kubernetes:` channel). */
  readonly registry: SourceRegistry | undefined;
  /** Stops every watch. Channels still open see no further updates. */
  close(): Promise<void>;
}

interface State {
  readonly opts: SetupOptions;
  registry: SourceRegistry | undefined;
  configError: GrpcKubeError | undefined;
}

let state: State | undefined;

function registryOf(s: State): SourceRegistry | GrpcKubeError {
  if (s.registry !== undefined) return s.registry;
  if (s.configError !== undefined) return s.configError;
  try {
    const kc = s.opts.kubeConfig;
    const client =
      kc instanceof KubeClient
        ? kc
        : typeof kc === 'string'
          ? KubeClient.fromKubeConfigString(kc)
          : kc !== undefined
            ? new KubeClient(kc)
            : KubeClient.fromDefault();
    s.registry = new SourceRegistry(client, s.opts.source);
    return s.registry;
  } catch (err) {
    s.configError =
      err instanceof GrpcKubeError
        ? err
        : new GrpcKubeError('GK_ERR_KUBE_CONFIG', String(err), { cause: err });
    return s.configError;
  }
}

class KubernetesResolver extends EndpointResolver {
  constructor(target: GrpcUri, listener: ResolverListener, options: ChannelOptions) {
    super(listener, kubernetesSettings(target, options));
  }

  static getDefaultAuthority(target: GrpcUri): string {
    // Validate here: grpc-js calls this when the channel is built, so a bad target fails `new Client()`.
    const t = parseKubernetesTarget(target.authority, target.path, uriToString(target));
    // The :authority header must be host[:number]: a named port cannot appear in it.
    const host = t.namespace === undefined ? t.service : `${t.service}.${t.namespace}`;
    return t.port.kind === 'number' ? `${host}:${t.port.port}` : host;
  }
}

function kubernetesSettings(target: GrpcUri, options: ChannelOptions): ResolverSettings {
  const s = current();
  const serviceConfig = serviceConfigFor(options, s.opts.defaultLbPolicy ?? 'round_robin');
  let t;
  try {
    t = parseKubernetesTarget(target.authority, target.path, uriToString(target));
  } catch (err) {
    return { describe: uriToString(target), open: err as GrpcKubeError, serviceConfig };
  }
  const reg = registryOf(s);
  const ns = t.namespace ?? (reg instanceof SourceRegistry ? reg.kubeClient.defaultNamespace : 'default');
  const describe = `Service ${ns}/${t.service} port ${portSelectorText(t.port)}`;
  if (!(reg instanceof SourceRegistry)) return { describe, open: reg, serviceConfig, ready: ready() };
  return { describe, open: (l) => reg.subscribe(ns, t.service, t.port, l), serviceConfig, ready: ready() };
}

class DnsPollResolver extends EndpointResolver {
  constructor(target: GrpcUri, listener: ResolverListener, options: ChannelOptions) {
    super(listener, dnsPollSettings(target, options));
  }

  static getDefaultAuthority(target: GrpcUri): string {
    parseDnsTarget(target);
    return target.path.replace(/^\/+/, '');
  }
}

function parseDnsTarget(target: GrpcUri): { host: string; port: number } {
  const raw = uriToString(target);
  const hp = splitHostPort(target.path.replace(/^\/+/, ''));
  if (hp === null || !hp.host) throw new InvalidTargetError(raw, 'expected dns-poll:///host:port');
  if (hp.port === undefined) throw new InvalidTargetError(raw, 'the port is missing');
  return { host: hp.host, port: hp.port };
}

function dnsPollSettings(target: GrpcUri, options: ChannelOptions): ResolverSettings {
  const s = current();
  const serviceConfig = serviceConfigFor(options, s.opts.defaultLbPolicy ?? 'round_robin');
  try {
    const { host, port } = parseDnsTarget(target);
    const opt = options[DNS_POLL_INTERVAL_OPTION];
    if (opt !== undefined && typeof opt !== 'number') {
      throw new InvalidOptionError(DNS_POLL_INTERVAL_OPTION, `must be a number of ms, got ${typeof opt}`);
    }
    const feed = new DnsPollFeed(host, port, {
      intervalMs: opt ?? s.opts.dnsPollIntervalMs,
      server: target.authority || undefined,
    });
    return {
      describe: `DNS name ${host} port ${port}`,
      open: (l) => feed.subscribe(l),
      serviceConfig,
      ready: ready(),
    };
  } catch (err) {
    return { describe: uriToString(target), open: err as GrpcKubeError, serviceConfig };
  }
}

let policies: (() => Promise<unknown>) | undefined;
let policiesReady: Promise<void> | undefined;

/**
 * grpc-kube/register: the grpc_kube_* policies are imported with the first `kubernetes:` or
 * `dns-poll:` channel instead of at start-up, and that channel's first resolution waits for them
 * (it waits for the API's list anyway). The root index imports them statically and sets no loader.
 */
export function loadPoliciesWithFirstChannel(load: () => Promise<unknown>): void {
  policies = load;
}

function ready(): Promise<void> | undefined {
  if (policies === undefined) return undefined;
  const load = policies;
  policiesReady ??= load().then(
    () => undefined,
    () => undefined, // a failed import leaves the policies unregistered; grpc-js then says which is missing
  );
  return policiesReady;
}

function current(): State {
  state ??= { opts: {}, registry: undefined, configError: undefined };
  return state;
}

/**
 * Register the `kubernetes:` and `dns-poll:` resolvers. Calling it again replaces the configuration
 * (channels created afterwards use the new one); close() the previous handle to stop its watches.
 */
export function setup(opts: SetupOptions = {}): GrpcKube {
  if (opts.dnsPollIntervalMs !== undefined && !(opts.dnsPollIntervalMs >= 50)) {
    throw new InvalidOptionError(
      'dnsPollIntervalMs',
      `must be a number of ms >= 50, got ${opts.dnsPollIntervalMs}`,
    );
  }
  const s: State = { opts: Object.freeze({ ...opts }), registry: undefined, configError: undefined };
  state = s;
  registerResolver('kubernetes', KubernetesResolver);
  registerResolver('dns-poll', DnsPollResolver);
  return {
    get registry() {
      return s.registry;
    },
    close: async () => {
      await s.registry?.close();
      s.registry = undefined;
    },
  };
}
