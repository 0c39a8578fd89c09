// The grpc-kube xDS control plane: Kubernetes in, ADS out. Demand-driven: when any client subscribes
// to a Listener named `<service>.<namespace>:<port>` it is built at once (before the first answer),
// with its RouteConfiguration from the GRPCRoutes attached to that Service, an EDS Cluster per
// backend, and one EndpointSlice watch per backend Service shared through a SourceRegistry. Every
// change — an EndpointSlice event, a GRPCRoute edit — is a cache update pushed to the streams that
// subscribe to what changed; nothing is ever restarted. A target nobody subscribes to any more is
// kept for `idleTargetTtlMs` so a reconnecting client finds it warm, then dropped with its watches.

import { channel } from 'node:diagnostics_channel';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { SourceRegistry } from 'grpc-kube/internal/discovery/registry.js';
import type { Subscription } from 'grpc-kube/internal/discovery/kube-source.js';
import type { BackoffOptions } from 'grpc-kube/internal/discovery/backoff.js';
import { AdsServer, type AdsAccessOptions, type AdsEvent } from './ads-server.js';
import type { TlsFilesOptions } from 'grpc-kube/internal/tls/files.js';
import { SnapshotCache } from './cache.js';
import {
  compileGrpcRoute,
  InvalidRouteError,
  routesForTarget,
  type CompiledGrpcRoute,
  type GrpcRoute,
} from 'grpc-kube/internal/route/grpcroute.js';
import { CDS, EDS, LDS, RDS, type ResourceTypeUrl } from './protos.js';
import {
  buildCluster,
  buildClusterLoadAssignment,
  buildListener,
  buildRouteConfiguration,
  checkUpstreamTls,
  CLUSTER_LB_POLICIES,
  parseClusterName,
  parseListenerName,
  type ClusterLbPolicy,
  type ServiceRef,
  type UpstreamTls,
  buildServerListener,
  checkDownstreamTls,
  parseServerListenerName,
  type DownstreamTls,
} from './resources.js';
import { GrpcRouteWatcher } from 'grpc-kube/internal/route/route-watcher.js';

export interface XdsControlPlaneOptions {
  /** Kubernetes access: a client, or a kubeconfig (YAML text); default: in-cluster / KUBECONFIG. */
  readonly kubeClient?: KubeClient;
  readonly kubeConfigYaml?: string;
  /** Where ADS listens (host:port; port 0 picks one). Default 127.0.0.1:0. */
  readonly address?: string;
  /** Watch GRPCRoutes (default true); false serves every target straight to its own Service. */
  readonly watchRoutes?: boolean;
  /** Watch GRPCRoutes in this namespace only (a namespaced Role suffices). Default: all. */
  readonly routeNamespace?: string;
  /** Cluster balancing policy sent in CDS. Default round_robin. */
  readonly lbPolicy?: ClusterLbPolicy;
  /** Listener names (`svc.ns:port`) served even before anyone asks (for wildcard clients such as Envoy). */
  readonly targets?: readonly string[];
  /** How long a target stays built after its last subscriber left. Default 60 s. */
  readonly idleTargetTtlMs?: number;
  /**
   * Retry timing of the EndpointSlice and GRPCRoute watches. Default 250 ms growing to 2 s: one
   * control plane holds one watch per Service, so it can afford to come back quickly after an outage.
   */
  readonly backoff?: BackoffOptions;
  /** Route errors, NACKs and watch failures; default: stderr. */
  readonly log?: (line: string) => void;
  /** Which namespaces each node may subscribe to, and the cap on names per stream (ads-server.ts). */
  readonly access?: AdsAccessOptions;
  /** Serve ADS over TLS (mTLS with `caFile`); the files are re-read when they change. */
  readonly tls?: TlsFilesOptions;
  /** gRFC A29: every Cluster tells XdsChannelCredentials clients to use mTLS (resources.ts). */
  readonly upstreamTls?: UpstreamTls;
  /** gRFC A36: server Listeners (XdsServer) carry this DownstreamTlsContext; default plaintext. */
  readonly serverTls?: DownstreamTls;
}

/** diagnostics_channel on which every rejected GRPCRoute is published (InvalidRouteError). */
export const routeErrorChannel = channel('grpc-kube:xds-route-error');

interface Target {
  readonly ref: ServiceRef;
  subscribed: boolean;
  readonly pinned: boolean;
  idleTimer: NodeJS.Timeout | undefined;
}

interface ClusterWatch {
  readonly ref: ServiceRef;
  readonly sub: Subscription;
  lastError?: string;
}

export class XdsControlPlane {
  readonly cache = new SnapshotCache();
  readonly ads: AdsServer;
  private readonly opts: XdsControlPlaneOptions;
  private readonly registry: SourceRegistry;
  private readonly routeWatcher: GrpcRouteWatcher | undefined;
  private readonly log: (line: string) => void;
  private readonly lbPolicy: ClusterLbPolicy;
  private readonly upstreamTls: UpstreamTls | undefined;
  private readonly serverTls: DownstreamTls | undefined;
  /** Server Listener names (gRFC A36) some XdsServer subscribes to. */
  private readonly serverListeners = new Set<string>();
  private readonly idleTtlMs: number;
  private readonly targets = new Map<string, Target>();
  private readonly compiled = new Map<string, CompiledGrpcRoute>();
  private readonly errors = new Map<string, InvalidRouteError>();
  private readonly clusters = new Map<string, ClusterWatch>();
  private readonly routeErrorListeners = new Set<(e: InvalidRouteError) => void>();
  private boundPort = 0;
  private lastRouteWatchError: string | undefined;
  private closed = false;

  private constructor(opts: XdsControlPlaneOptions) {
    this.opts = opts;
    this.log = opts.log ?? ((line) => process.stderr.write(`grpc-kube xds: ${line}\n`));
    this.lbPolicy = opts.lbPolicy ?? 'round_robin';
    if (!CLUSTER_LB_POLICIES.includes(this.lbPolicy))
      throw new InvalidOptionError('lbPolicy', `must be one of ${CLUSTER_LB_POLICIES.join(', ')}`);
    this.upstreamTls = opts.upstreamTls !== undefined ? checkUpstreamTls(opts.upstreamTls) : undefined;
    this.serverTls = opts.serverTls !== undefined ? checkDownstreamTls(opts.serverTls) : undefined;
    this.idleTtlMs = opts.idleTargetTtlMs ?? 60_000;
    if (!(this.idleTtlMs >= 0)) throw new InvalidOptionError('idleTargetTtlMs', 'must be >= 0');
    const client =
      opts.kubeClient ??
      (opts.kubeConfigYaml !== undefined
        ? KubeClient.fromKubeConfigString(opts.kubeConfigYaml)
        : KubeClient.fromDefault());
    const backoff: BackoffOptions = { initialMs: 250, maxMs: 2000, ...opts.backoff };
    this.registry = new SourceRegistry(client, { backoff });
    this.ads = new AdsServer({
      cache: this.cache,
      log: this.log,
      onDemand: (type, name, wanted) => this.onDemand(type, name, wanted),
      ...(opts.access !== undefined ? { access: opts.access } : {}),
    });
    if (opts.watchRoutes !== false) {
      this.routeWatcher = new GrpcRouteWatcher(client, {
        namespace: opts.routeNamespace,
        backoff,
        onError: (err) => {
          // Retries come every few seconds during an outage or a missing RBAC rule: say it once.
          if (err.message === this.lastRouteWatchError) return;
          this.lastRouteWatchError = err.message;
          this.log(
            `GRPCRoute watch: ${err.code}: ${err.message} (retrying; routes in force stay as they are)`,
          );
        },
        onChange: (routes) => {
          this.lastRouteWatchError = undefined;
          this.onRoutes(routes);
        },
      });
    }
    for (const name of opts.targets ?? []) {
      const ref = parseListenerName(name);
      if (ref === undefined)
        throw new InvalidOptionError('targets', `"${name}" is not <service>.<namespace>:<port>`);
      this.targets.set(name, { ref, subscribed: false, pinned: true, idleTimer: undefined });
    }
  }

  /** Start watching and serving; resolves once ADS listens and the first GRPCRoute list is in. */
  static async start(opts: XdsControlPlaneOptions = {}): Promise<XdsControlPlane> {
    const cp = new XdsControlPlane(opts);
    try {
      await cp.routeWatcher?.start();
      cp.rebuild();
      cp.boundPort = await cp.ads.listen(opts.address ?? '127.0.0.1:0', opts.tls);
    } catch (err) {
      await cp.close();
      throw err;
    }
    return cp;
  }

  get port(): number {
    return this.boundPort;
  }

  /** `host:port` to put in a bootstrap's server_uri. */
  get address(): string {
    const host = (this.opts.address ?? '127.0.0.1:0').replace(/:\d+$/, '');
    return `${host === '0.0.0.0' || host === '' ? '127.0.0.1' : host}:${this.boundPort}`;
  }

  /** GRPCRoutes currently rejected, with the field at fault. */
  routeErrors(): InvalidRouteError[] {
    return [...this.errors.values()];
  }

  onRouteError(listener: (e: InvalidRouteError) => void): () => void {
    this.routeErrorListeners.add(listener);
    return () => this.routeErrorListeners.delete(listener);
  }

  onAdsEvent(listener: (e: AdsEvent) => void): () => void {
    return this.ads.on(listener);
  }

  /** Listener names currently built. */
  targetNames(): string[] {
    return [...this.targets.keys()];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.ads.close();
    await this.routeWatcher?.stop();
    for (const t of this.targets.values()) if (t.idleTimer) clearTimeout(t.idleTimer);
    for (const c of this.clusters.values()) c.sub.unsubscribe();
    this.clusters.clear();
    await this.registry.close();
  }

  private onDemand(type: ResourceTypeUrl, name: string, wanted: boolean): void {
    if (type !== LDS || this.closed) return;
    if (parseServerListenerName(name) !== undefined) {
      // Built from the name alone: nothing to watch.
      if (wanted && !this.serverListeners.has(name)) {
        this.serverListeners.add(name);
        this.cache.update(LDS, [[name, buildServerListener(name, this.serverTls)]]);
      } else if (!wanted && this.serverListeners.delete(name)) this.cache.update(LDS, [[name, undefined]]);
      return;
    }
    const existing = this.targets.get(name);
    if (wanted) {
      if (existing) {
        existing.subscribed = true;
        if (existing.idleTimer) clearTimeout(existing.idleTimer);
        existing.idleTimer = undefined;
        return;
      }
      const ref = parseListenerName(name);
      if (ref === undefined) {
        this.log(`a client asked for Listener "${name}", which is not <service>.<namespace>:<port>`);
        return;
      }
      this.targets.set(name, { ref, subscribed: true, pinned: false, idleTimer: undefined });
      this.rebuild();
      return;
    }
    if (existing === undefined || existing.pinned) return;
    existing.subscribed = false;
    if (existing.idleTimer) clearTimeout(existing.idleTimer);
    existing.idleTimer = setTimeout(() => {
      existing.idleTimer = undefined;
      if (existing.subscribed || this.closed) return;
      this.targets.delete(name);
      this.rebuild();
    }, this.idleTtlMs);
    existing.idleTimer.unref();
  }

  private onRoutes(routes: ReadonlyMap<string, GrpcRoute>): void {
    for (const key of [...this.compiled.keys()]) if (!routes.has(key)) this.compiled.delete(key);
    for (const key of [...this.errors.keys()]) if (!routes.has(key)) this.errors.delete(key);
    for (const [key, route] of routes) {
      try {
        const c = compileGrpcRoute(route, this.routeWatcher?.permits);
        if (c === undefined) this.compiled.delete(key);
        else this.compiled.set(key, c);
        this.errors.delete(key);
      } catch (err) {
        if (!(err instanceof InvalidRouteError)) throw err;
        const prev = this.errors.get(key);
        this.errors.set(key, err);
        if (prev?.message !== err.message) {
          const kept = this.compiled.has(key) ? 'its last good version stays in force' : 'it is ignored';
          this.log(`${err.message} (${kept})`);
          if (routeErrorChannel.hasSubscribers) routeErrorChannel.publish(err);
          for (const l of this.routeErrorListeners) l(err);
        }
      }
    }
    this.rebuild();
  }

  /** Recompute LDS/RDS/CDS from targets and routes; unchanged bytes push nothing. */
  private rebuild(): void {
    if (this.closed) return;
    const wantedClusters = new Map<string, ServiceRef>();
    const rds: Array<[string, Uint8Array | undefined]> = [];
    const lds: Array<[string, Uint8Array | undefined]> = [];
    for (const [name, t] of this.targets) {
      const routes = routesForTarget(t.ref, this.compiled.values());
      for (const r of routes) {
        for (const c of r.clusters) {
          const ref = parseClusterName(c.cluster);
          if (ref) wantedClusters.set(c.cluster, ref);
        }
      }
      rds.push([name, buildRouteConfiguration(name, routes)]);
      lds.push([name, buildListener(name)]);
    }
    for (const name of this.cache.names(LDS))
      if (!this.targets.has(name) && !this.serverListeners.has(name)) lds.push([name, undefined]);
    for (const name of this.cache.names(RDS)) if (!this.targets.has(name)) rds.push([name, undefined]);

    // Make before break: new clusters exist before a route names them; old ones go after it stops.
    const added: Array<[string, Uint8Array]> = [];
    for (const [name, ref] of wantedClusters) {
      if (this.clusters.has(name)) continue;
      added.push([name, buildCluster(name, this.lbPolicy, undefined, this.upstreamTls)]);
      this.watchCluster(name, ref);
    }
    this.cache.update(CDS, added);
    this.cache.update(RDS, rds);
    this.cache.update(LDS, lds);
    const removed: Array<[string, undefined]> = [];
    for (const [name, w] of this.clusters) {
      if (wantedClusters.has(name)) continue;
      w.sub.unsubscribe();
      this.clusters.delete(name);
      removed.push([name, undefined]);
    }
    this.cache.update(CDS, removed);
    this.cache.update(EDS, removed);
  }

  private watchCluster(name: string, ref: ServiceRef): void {
    const sub = this.registry.subscribe(
      ref.namespace,
      ref.service,
      { kind: 'number', port: ref.port },
      {
        onEndpoints: (view) => {
          const w = this.clusters.get(name);
          if (w?.sub !== sub) return;
          w.lastError = undefined;
          this.cache.set(EDS, name, buildClusterLoadAssignment(name, view.endpoints()));
        },
        onError: (error: GrpcKubeError) => {
          const w = this.clusters.get(name);
          if (w?.sub !== sub) return;
          if (w.lastError !== error.message) this.log(`endpoints of cluster ${name}: ${error.message}`);
          w.lastError = error.message;
          // Clients should fail fast (UNAVAILABLE) rather than wait; a later list replaces this.
          if (!this.cache.has(EDS, name)) this.cache.set(EDS, name, buildClusterLoadAssignment(name, []));
        },
      },
    );
    this.clusters.set(name, { ref, sub });
  }
}
