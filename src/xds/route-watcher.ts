// GRPCRoutes of the whole cluster (or one namespace), kept live by list-then-watch through KubeClient:
// 410 Expired → re-list; other failures → jittered backoff that resets on the next success; a 404
// (the Gateway API CRDs are not installed) is reported once and retried slowly, serving no routes.
// Every change hands the full current map to onChange; the caller compiles and diffs.

import { GrpcKubeError } from '../errors.js';
import { isExpired, type KubeClient, type ResourcePath, type WatchHandle } from '../kube/client.js';
import type { KubeStatus } from '../kube/types.js';
import { Backoff, type BackoffOptions } from '../discovery/backoff.js';
import type { GrpcRoute } from './grpcroute.js';

const GRPCROUTES: ResourcePath = {
  group: 'gateway.networking.k8s.io',
  version: 'v1',
  resource: 'grpcroutes',
};

export interface RouteWatcherOptions {
  /** Watch one namespace only (needs only a namespaced Role); default: all namespaces. */
  namespace?: string;
  backoff?: BackoffOptions;
  onChange: (routes: ReadonlyMap<string, GrpcRoute>) => void;
  onError: (error: GrpcKubeError) => void;
}

export class GrpcRouteWatcher {
  private readonly client: KubeClient;
  private readonly opts: RouteWatcherOptions;
  private readonly backoff: Backoff;
  private readonly routes = new Map<string, GrpcRoute>();
  private readonly abort = new AbortController();
  private resourceVersion: string | undefined;
  private watch: WatchHandle | undefined;
  private loopDone: Promise<void> | undefined;
  private firstSync: Promise<void>;
  private resolveFirst!: () => void;
  readonly stats = { lists: 0, events: 0, errors: 0 };

  constructor(client: KubeClient, opts: RouteWatcherOptions) {
    this.client = client;
    this.opts = opts;
    this.backoff = new Backoff({ initialMs: 500, maxMs: 30_000, ...opts.backoff });
    this.firstSync = new Promise((r) => (this.resolveFirst = r));
  }

  /** Start; resolves after the first list succeeded or failed (never hangs on an absent API). */
  start(): Promise<void> {
    this.loopDone ??= this.loop();
    return this.firstSync;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    this.watch?.abort();
    this.resolveFirst();
    await this.loopDone;
  }

  private rp(): ResourcePath {
    return { ...GRPCROUTES, namespace: this.opts.namespace };
  }

  private async loop(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        if (this.resourceVersion === undefined) {
          const list = await this.client.list<GrpcRoute>(this.rp());
          if (signal.aborted) return;
          this.stats.lists++;
          this.routes.clear();
          for (const r of list.items) this.routes.set(keyOf(r), r);
          this.resourceVersion = list.metadata.resourceVersion ?? '0';
          this.backoff.reset();
          this.opts.onChange(this.routes);
          this.resolveFirst();
        }
        this.watch = this.client.watch<GrpcRoute>(
          this.rp(),
          { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 300 },
          (ev) => {
            if (ev.type === 'BOOKMARK') {
              this.resourceVersion =
                (ev.object as KubeStatus).metadata.resourceVersion ?? this.resourceVersion;
              return;
            }
            const r = ev.object as GrpcRoute;
            this.resourceVersion = r.metadata.resourceVersion ?? this.resourceVersion;
            this.stats.events++;
            if (ev.type === 'DELETED') this.routes.delete(keyOf(r));
            else this.routes.set(keyOf(r), r);
            this.opts.onChange(this.routes);
          },
        );
        await this.watch.done;
        this.watch = undefined;
      } catch (err) {
        this.watch = undefined;
        if (signal.aborted) return;
        if (isExpired(err)) {
          this.resourceVersion = undefined;
          continue;
        }
        this.stats.errors++;
        this.opts.onError(
          err instanceof GrpcKubeError
            ? err
            : new GrpcKubeError('GK_ERR_KUBE_PROTOCOL', `GRPCRoute watch failed: ${String(err)}`, {
                cause: err,
              }),
        );
        this.resourceVersion = undefined;
        this.resolveFirst();
        const ms = this.backoff.next();
        const done = await new Promise<boolean>((resolve) => {
          const t = setTimeout(() => {
            signal.removeEventListener('abort', onAbort);
            resolve(false);
          }, ms);
          t.unref();
          const onAbort = (): void => {
            clearTimeout(t);
            resolve(true);
          };
          signal.addEventListener('abort', onAbort, { once: true });
        });
        if (done) return;
      }
    }
  }
}

function keyOf(r: GrpcRoute): string {
  return `${r.metadata.namespace ?? 'default'}/${r.metadata.name ?? ''}`;
}
