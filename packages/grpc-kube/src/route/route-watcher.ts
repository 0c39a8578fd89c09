// GRPCRoutes of the whole cluster (or one namespace), kept live by the project's one list-then-watch
// (kube/watch.ts: 410 → re-list, validated events, jittered capped backoff, list and idle time-outs).
// A 404 (the Gateway API CRDs are not installed) is reported and retried with backoff, serving no
// routes. Every change hands the full current map to onChange; the caller compiles (with `permits`,
// the ReferenceGrants in force) and diffs. Whoever serves the routes also writes their status
// (route-status.ts): Accepted and ResolvedRefs per Service parent, under our controllerName.

import type { GrpcKubeError } from '../errors.js';
import type { KubeClient, ResourcePath } from '../kube/client.js';
import { ListWatch, type ListWatchOptions, type ListWatchStats } from '../kube/watch.js';
import type { BackendPolicy, GrpcRoute } from './grpcroute.js';
import { crossNamespaces, ReferenceGrants, RouteStatusWriter } from './route-status.js';

const GRPCROUTES: ResourcePath = {
  group: 'gateway.networking.k8s.io',
  version: 'v1',
  resource: 'grpcroutes',
};

export interface RouteWatcherOptions extends Omit<ListWatchOptions, 'labelSelector'> {
  /** Watch one namespace only (needs only a namespaced Role); default: all namespaces. */
  namespace?: string;
  onChange: (routes: ReadonlyMap<string, GrpcRoute>) => void;
  onError: (error: GrpcKubeError) => void;
  /** Write each route's status.parents (default true; RBAC `update grpcroutes/status`). */
  writeStatus?: boolean;
}

export class GrpcRouteWatcher {
  private readonly lw: ListWatch<GrpcRoute>;
  private readonly routes = new Map<string, GrpcRoute>();
  private readonly firstSync: Promise<void>;
  private resolveFirst!: () => void;
  private readonly grants: ReferenceGrants;
  private readonly status: RouteStatusWriter | undefined;
  /** The ReferenceGrants in force: compile routes with it. */
  readonly permits: BackendPolicy;

  constructor(client: KubeClient, opts: RouteWatcherOptions) {
    this.firstSync = new Promise((r) => (this.resolveFirst = r));
    const { namespace, onChange, onError, writeStatus = true, ...lwOpts } = opts;
    this.grants = new ReferenceGrants(
      client,
      () => {
        // A grant came or went: every route pointing elsewhere is judged again.
        onChange(this.routes);
        for (const r of this.routes.values()) if (crossNamespaces(r).length > 0) this.status?.sync(r);
      },
      onError,
      lwOpts,
    );
    this.permits = this.grants.permits;
    this.status = writeStatus ? new RouteStatusWriter(client, this.permits, onError) : undefined;
    const changed = (judge: Iterable<GrpcRoute>): void => {
      const namespaces = new Set<string>();
      for (const r of this.routes.values()) for (const ns of crossNamespaces(r)) namespaces.add(ns);
      this.grants.watchNamespaces(namespaces);
      onChange(this.routes);
      for (const r of judge) this.status?.sync(r);
    };
    this.lw = new ListWatch<GrpcRoute>(
      client,
      { ...GRPCROUTES, namespace },
      {
        onList: (items) => {
          this.routes.clear();
          for (const r of items) this.routes.set(keyOf(r), r);
          changed(this.routes.values());
          this.resolveFirst();
        },
        onEvent: (type, r) => {
          if (type === 'DELETED') this.routes.delete(keyOf(r));
          else this.routes.set(keyOf(r), r);
          changed(type === 'DELETED' ? [] : [r]);
        },
        onError: (err) => {
          onError(err);
          this.resolveFirst();
        },
      },
      { ...lwOpts, backoff: { initialMs: 500, maxMs: 30_000, ...lwOpts.backoff } },
      (r) =>
        r.spec !== undefined && (r.spec === null || typeof r.spec !== 'object')
          ? 'spec is not an object'
          : undefined,
    );
  }

  get stats(): ListWatchStats {
    return this.lw.stats;
  }

  /** Start; resolves after the first list succeeded or failed (never hangs on an absent API). */
  start(): Promise<void> {
    this.lw.start();
    return this.firstSync;
  }

  async stop(): Promise<void> {
    this.resolveFirst();
    this.status?.stop();
    await Promise.all([this.lw.stop(), this.grants.stop()]);
  }
}

function keyOf(r: GrpcRoute): string {
  return `${r.metadata.namespace ?? 'default'}/${r.metadata.name ?? ''}`;
}
