// The Kubernetes endpoint source: the EndpointSlices of one Service in one namespace, kept live by
// list-then-watch, and served as one EndpointSet per port to any number of subscribers.
//
// Loop: list (paginated) → watch from the list's resourceVersion with bookmarks → on 410 Expired
// re-list (diffed against what we have, so nothing flaps) → on any other failure wait a jittered,
// growing delay that resets after the next success. Slices are keyed by name: a Service has many,
// and endpoints move between them. While the API is unreachable the last known set stays served;
// errors reach subscribers only when there is no set to serve (first list failed) — then as typed
// errors (403 names the missing RBAC verb), never as a silent empty list.

import { channel } from 'node:diagnostics_channel';
import { GrpcKubeError } from '../errors.js';
import { KubeClient, isExpired, type ResourcePath, type WatchHandle } from '../kube/client.js';
import { SERVICE_NAME_LABEL, type EndpointSlice, type WatchEvent } from '../kube/types.js';
import { Backoff, type BackoffOptions } from './backoff.js';
import { EndpointSet, isEmptyDiff, type Endpoint, type EndpointDiff, type EndpointView } from './endpoint.js';
import {
  portSelectorKey,
  portSelectorText,
  sliceEndpoints,
  slicePort,
  slicePortsText,
  type PortSelector,
} from './slices.js';

export interface EndpointListener {
  /**
   * The live set of the port (ready, draining and unready) and what changed. The view is read
   * lazily: a listener that only needs the diff never pays for materialising 5,000 endpoints.
   */
  onEndpoints(view: EndpointView, diff: EndpointDiff): void;
  onError(error: GrpcKubeError): void;
}

export interface Subscription {
  unsubscribe(): void;
}

export interface KubeSourceOptions {
  backoff?: BackoffOptions;
  /** Server-side watch timeout range; each watch picks a random value in it (client-go: 5–10 min). */
  watchTimeoutSeconds?: readonly [number, number];
  /** List page size. */
  pageSize?: number;
  random?: () => number;
  /** Timer hook so tests can drive the retry loop without real waits. */
  delay?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export type SourceStatus = 'starting' | 'synced' | 'retrying' | 'stopped';

export interface SourceEvent {
  readonly source: string;
  readonly kind: 'list' | 'watch-start' | 'event' | 'expired' | 'error' | 'stop';
  readonly detail?: string;
}

/** diagnostics_channel on which every source publishes its lifecycle (list, watch, errors). */
export const sourceChannel = channel('grpc-kube:kubernetes-source');

interface PortView {
  readonly selector: PortSelector;
  readonly set: EndpointSet;
  readonly listeners: Set<EndpointListener>;
  /** True once this view has had a successful list applied. */
  delivered: boolean;
  portError: GrpcKubeError | undefined;
}

const SLICES: Omit<ResourcePath, 'namespace'> = {
  group: 'discovery.k8s.io',
  version: 'v1',
  resource: 'endpointslices',
};

export class KubernetesEndpointSource {
  readonly namespace: string;
  readonly service: string;
  private readonly client: KubeClient;
  private readonly backoff: Backoff;
  private readonly opts: Required<Pick<KubeSourceOptions, 'watchTimeoutSeconds' | 'pageSize'>>;
  private readonly random: () => number;
  private readonly delay: (ms: number, signal: AbortSignal) => Promise<void>;
  private readonly slices = new Map<string, EndpointSlice>();
  private readonly views = new Map<string, PortView>();
  private resourceVersion: string | undefined;
  private synced = false;
  private lastError: GrpcKubeError | undefined;
  private watch: WatchHandle | undefined;
  private readonly abort = new AbortController();
  private running = false;
  private loopDone: Promise<void> | undefined;
  status: SourceStatus = 'starting';
  /** Counters the lab report and users read. */
  readonly stats = { lists: 0, watches: 0, events: 0, bookmarks: 0, expired: 0, errors: 0 };

  constructor(client: KubeClient, namespace: string, service: string, opts: KubeSourceOptions = {}) {
    this.client = client;
    this.namespace = namespace;
    this.service = service;
    this.backoff = new Backoff({ ...opts.backoff, random: opts.random ?? opts.backoff?.random });
    this.opts = {
      watchTimeoutSeconds: opts.watchTimeoutSeconds ?? [300, 600],
      pageSize: opts.pageSize ?? 500,
    };
    this.random = opts.random ?? Math.random;
    this.delay = opts.delay ?? abortableDelay;
  }

  get name(): string {
    return `${this.namespace}/${this.service}`;
  }

  /** Number of subscribers across all ports. */
  get subscriberCount(): number {
    let n = 0;
    for (const v of this.views.values()) n += v.listeners.size;
    return n;
  }

  /**
   * Subscribe to one port of the Service. If the source already has a set or an error, the listener
   * hears it on a later tick (never synchronously).
   */
  subscribe(selector: PortSelector, listener: EndpointListener): Subscription {
    if (this.abort.signal.aborted)
      throw new GrpcKubeError('GK_ERR_DESTROYED', `the source ${this.name} was stopped`);
    const key = portSelectorKey(selector);
    let view = this.views.get(key);
    if (view === undefined) {
      view = {
        selector,
        set: new EndpointSet(),
        listeners: new Set(),
        delivered: false,
        portError: undefined,
      };
      this.views.set(key, view);
      if (this.synced) this.rebuildView(view);
    }
    view.listeners.add(listener);
    const v = view;
    setImmediate(() => {
      if (!v.listeners.has(listener)) return;
      if (v.portError !== undefined) listener.onError(v.portError);
      else if (v.delivered)
        listener.onEndpoints(v.set, { added: v.set.endpoints(), removed: [], changed: [] });
      else if (this.lastError !== undefined) listener.onError(this.lastError);
    });
    this.start();
    return {
      unsubscribe: () => {
        v.listeners.delete(listener);
        if (v.listeners.size === 0) this.views.delete(key);
      },
    };
  }

  /** Current endpoints of a port (empty before the first list). */
  endpoints(selector: PortSelector): readonly Endpoint[] {
    return this.views.get(portSelectorKey(selector))?.set.endpoints() ?? [];
  }

  start(): void {
    if (this.running || this.abort.signal.aborted) return;
    this.running = true;
    this.loopDone = this.loop().finally(() => {
      this.running = false;
    });
  }

  /** Stop watching; no listener is called afterwards. Idempotent. */
  async stop(): Promise<void> {
    if (!this.abort.signal.aborted) {
      this.abort.abort();
      this.watch?.abort();
      this.status = 'stopped';
      for (const v of this.views.values()) v.listeners.clear();
      this.publish('stop');
    }
    await this.loopDone;
  }

  private async loop(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        if (this.resourceVersion === undefined) await this.relist();
        if (signal.aborted) return;
        await this.watchOnce();
        // A clean end (server timeout) continues from the same resourceVersion at once.
      } catch (err) {
        if (signal.aborted) return;
        if (isExpired(err)) {
          this.stats.expired++;
          this.publish('expired', (err as Error).message);
          this.resourceVersion = undefined;
          continue;
        }
        this.stats.errors++;
        const e =
          err instanceof GrpcKubeError
            ? err
            : new GrpcKubeError(
                'GK_ERR_KUBE_PROTOCOL',
                `unexpected error in the source ${this.name}: ${String(err)}`,
                {
                  cause: err,
                },
              );
        this.fail(e);
        try {
          await this.delay(this.backoff.next(), signal);
        } catch {
          return;
        }
      }
    }
  }

  private async relist(): Promise<void> {
    const rp = { ...SLICES, namespace: this.namespace };
    const list = await this.client.list<EndpointSlice>(rp, {
      labelSelector: `${SERVICE_NAME_LABEL}=${this.service}`,
      limit: this.opts.pageSize,
    });
    if (this.abort.signal.aborted) return;
    this.stats.lists++;
    this.slices.clear();
    for (const s of list.items) if (s.metadata.name) this.slices.set(s.metadata.name, s);
    this.resourceVersion = list.metadata.resourceVersion ?? '0';
    this.synced = true;
    this.lastError = undefined;
    this.backoff.reset();
    this.status = 'synced';
    this.publish('list', `${list.items.length} slices at resourceVersion ${this.resourceVersion}`);
    for (const view of this.views.values()) this.rebuildView(view);
  }

  private async watchOnce(): Promise<void> {
    const [lo, hi] = this.opts.watchTimeoutSeconds;
    const timeoutSeconds = Math.round(lo + (hi - lo) * this.random());
    this.stats.watches++;
    this.publish('watch-start', `from resourceVersion ${this.resourceVersion}`);
    this.watch = this.client.watch<EndpointSlice>(
      { ...SLICES, namespace: this.namespace },
      {
        labelSelector: `${SERVICE_NAME_LABEL}=${this.service}`,
        resourceVersion: this.resourceVersion ?? '0',
        allowWatchBookmarks: true,
        timeoutSeconds,
        idleTimeoutMs: (timeoutSeconds + 30) * 1000,
      },
      (ev) => this.onEvent(ev),
    );
    try {
      await this.watch.done;
    } finally {
      this.watch = undefined;
    }
  }

  private onEvent(ev: WatchEvent<EndpointSlice>): void {
    if (this.abort.signal.aborted) return;
    const obj = ev.object as EndpointSlice;
    const rv = obj.metadata?.resourceVersion;
    if (ev.type === 'BOOKMARK') {
      this.stats.bookmarks++;
      if (rv) this.resourceVersion = rv;
      return;
    }
    const name = obj.metadata?.name;
    if (!name) return;
    this.stats.events++;
    if (this.status !== 'synced') {
      this.status = 'synced';
      this.backoff.reset();
    }
    if (ev.type === 'DELETED') this.slices.delete(name);
    else if (ev.type === 'ADDED' || ev.type === 'MODIFIED') this.slices.set(name, obj);
    else return;
    if (rv) this.resourceVersion = rv;
    for (const view of this.views.values()) {
      const eps = ev.type === 'DELETED' ? [] : sliceEndpoints(obj, view.selector);
      const diff = view.set.replaceGroup(name, eps);
      this.afterChange(view, diff);
    }
  }

  private rebuildView(view: PortView): void {
    const groups = new Map<string, Endpoint[]>();
    for (const [name, s] of this.slices) groups.set(name, sliceEndpoints(s, view.selector));
    const diff = view.set.replaceAll(groups);
    const firstTime = !view.delivered;
    view.delivered = true;
    this.afterChange(view, diff, firstTime);
  }

  private afterChange(view: PortView, diff: EndpointDiff, force = false): void {
    const portError = this.portErrorFor(view);
    if (portError !== undefined) {
      if (view.portError?.message !== portError.message) {
        view.portError = portError;
        for (const l of view.listeners) l.onError(portError);
      }
      return;
    }
    const hadPortError = view.portError !== undefined;
    view.portError = undefined;
    if (!force && !hadPortError && isEmptyDiff(diff)) return;
    for (const l of view.listeners) l.onEndpoints(view.set, diff);
  }

  /** Slices exist but none offers the port: a mistake in the target, worth saying so. */
  private portErrorFor(view: PortView): GrpcKubeError | undefined {
    if (this.slices.size === 0 || view.set.size > 0) return undefined;
    for (const s of this.slices.values()) if (slicePort(s, view.selector) !== undefined) return undefined;
    return new GrpcKubeError(
      'GK_ERR_PORT_NOT_FOUND',
      `Service ${this.name} has no port ${portSelectorText(view.selector)}; its EndpointSlices have ${slicePortsText(this.slices.values())}`,
    );
  }

  private fail(err: GrpcKubeError): void {
    this.status = 'retrying';
    this.publish('error', err.message);
    if (this.synced) return; // keep serving the last known set
    this.lastError = err;
    for (const view of this.views.values()) for (const l of view.listeners) l.onError(err);
  }

  private publish(kind: SourceEvent['kind'], detail?: string): void {
    if (sourceChannel.hasSubscribers)
      sourceChannel.publish({ source: this.name, kind, detail } satisfies SourceEvent);
  }
}

function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new Error('aborted'));
      return;
    }
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    t.unref();
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new Error('aborted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
