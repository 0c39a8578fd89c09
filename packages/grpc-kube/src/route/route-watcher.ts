// GRPCRoutes of the whole cluster (or one namespace), kept live by the project's one list-then-watch
// (kube/watch.ts: 410 → re-list, validated events, jittered capped backoff, list and idle time-outs).
// A 404 (the Gateway API CRDs are not installed) is reported and retried with backoff, serving no
// routes. Every change hands the full current map to onChange; the caller compiles and diffs.

import type { GrpcKubeError } from '../errors.js';
import type { KubeClient, ResourcePath } from '../kube/client.js';
import { ListWatch, type ListWatchOptions, type ListWatchStats } from '../kube/watch.js';
import type { GrpcRoute } from './grpcroute.js';

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
}

export class GrpcRouteWatcher {
  private readonly lw: ListWatch<GrpcRoute>;
  private readonly routes = new Map<string, GrpcRoute>();
  private readonly firstSync: Promise<void>;
  private resolveFirst!: () => void;

  constructor(client: KubeClient, opts: RouteWatcherOptions) {
    this.firstSync = new Promise((r) => (this.resolveFirst = r));
    const { namespace, onChange, onError, ...lwOpts } = opts;
    this.lw = new ListWatch<GrpcRoute>(
      client,
      { ...GRPCROUTES, namespace },
      {
        onList: (items) => {
          this.routes.clear();
          for (const r of items) this.routes.set(keyOf(r), r);
          onChange(this.routes);
          this.resolveFirst();
        },
        onEvent: (type, r) => {
          if (type === 'DELETED') this.routes.delete(keyOf(r));
          else this.routes.set(keyOf(r), r);
          onChange(this.routes);
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
    await this.lw.stop();
  }
}

function keyOf(r: GrpcRoute): string {
  return `${r.metadata.namespace ?? 'default'}/${r.metadata.name ?? ''}`;
}
