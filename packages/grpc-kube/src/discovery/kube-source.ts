// The Kubernetes endpoint source: the EndpointSlices of one Service in one namespace, kept live by
// list-then-watch, and served as one EndpointSet per port to any number of subscribers.
//
// The loop is the project's one list-then-watch (kube/watch.ts: bookmarks, 410 → re-list diffed
// against what we have so nothing flaps, validated events, jittered capped backoff, time-outs); every
// slice is checked (sliceProblem) before it is used. Slices are keyed by name: a Service has many,
// and endpoints move between them. While the API is unreachable the last known set stays served;
// errors reach subscribers only when there is no set to serve (first list failed) — then as typed
// errors (403 names the missing RBAC verb), never as a silent empty list.

import { channel } from 'node:diagnostics_channel';
import { GrpcKubeError } from '../errors.js';
import type { KubeClient, ResourcePath } from '../kube/client.js';
import { SERVICE_NAME_LABEL, type EndpointSlice } from '../kube/types.js';
import {
  ListWatch,
  type ListWatchOptions,
  type ListWatchStats,
  type ListWatchStatus,
} from '../kube/watch.js';
import { instruments, registerGauges, secondsSince } from '../metrics/instruments.js';
import { EndpointSet, isEmptyDiff, type Endpoint, type EndpointDiff, type EndpointView } from './endpoint.js';
import {
  portSelectorKey,
  portSelectorText,
  sliceEndpoints,
  slicePort,
  slicePortsText,
  sliceProblem,
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

/** The watch loop's options (backoff, time-outs, page size; see ListWatchOptions). */
export type KubeSourceOptions = Omit<ListWatchOptions, 'labelSelector'>;

export type SourceStatus = ListWatchStatus;

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
  private readonly lw: ListWatch<EndpointSlice>;
  private readonly slices = new Map<string, EndpointSlice>();
  private readonly views = new Map<string, PortView>();
  private synced = false;
  private lastError: GrpcKubeError | undefined;
  private stopping = false;
  /** performance.now() of the list in flight and of the last list or event, for metrics. */
  private listStartedMs = 0;
  private lastEventMs: number | undefined;
  private readonly metricAttrs: { readonly 'grpc_kube.service': string };
  private readonly unregisterGauges: () => void;

  constructor(client: KubeClient, namespace: string, service: string, opts: KubeSourceOptions = {}) {
    this.namespace = namespace;
    this.service = service;
    this.lw = new ListWatch<EndpointSlice>(
      client,
      { ...SLICES, namespace },
      {
        onList: (items, rv) => this.onList(items, rv),
        onEvent: (type, obj) => this.onEvent(type, obj),
        onError: (err) => this.fail(err),
        onStart: (what) => this.onStart(what),
      },
      {
        labelSelector: `${SERVICE_NAME_LABEL}=${service}`,
        pageSize: opts.pageSize ?? 500,
        ...pick(opts, [
          'backoff',
          'watchTimeoutSeconds',
          'random',
          'delay',
          'bookmarkIntervalMs',
          'listTimeoutMs',
          'minWatchMs',
        ]),
      },
      sliceProblem,
    );
    this.metricAttrs = { 'grpc_kube.service': this.name };
    this.unregisterGauges = registerGauges((observe) => {
      if (this.lastEventMs !== undefined)
        observe('grpc_kube.resolver.time_since_last_event', secondsSince(this.lastEventMs), this.metricAttrs);
      for (const view of this.views.values()) {
        const counts = { ready: 0, draining: 0, unready: 0 };
        for (const e of view.set.endpoints()) counts[e.state]++;
        const target = `${this.name} port ${portSelectorText(view.selector)}`;
        for (const [state, n] of Object.entries(counts)) {
          observe('grpc_kube.resolver.endpoints', n, {
            'grpc_kube.target': target,
            'grpc_kube.endpoint.state': state,
          });
        }
      }
    });
  }

  get name(): string {
    return `${this.namespace}/${this.service}`;
  }

  /**
   * 'synced' while the list is applied and a watch is open; 'retrying' while it cannot be (the
   * last known set is still served); 'starting' before the first list.
   */
  get status(): SourceStatus {
    return this.lw.status;
  }

  /** Counters the lab report and users read. */
  get stats(): ListWatchStats {
    return this.lw.stats;
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
    if (this.stopping) throw new GrpcKubeError('GK_ERR_DESTROYED', `the source ${this.name} was stopped`);
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
    if (this.stopping) return;
    this.lw.start();
  }

  /** Stop watching; no listener is called afterwards. Idempotent. */
  async stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      this.unregisterGauges();
      for (const v of this.views.values()) v.listeners.clear();
      this.publish('stop');
    }
    await this.lw.stop();
  }

  private onList(items: readonly EndpointSlice[], rv: string): void {
    this.slices.clear();
    for (const s of items) if (s.metadata.name) this.slices.set(s.metadata.name, s);
    this.synced = true;
    this.lastError = undefined;
    this.lastEventMs = performance.now();
    instruments()?.['grpc_kube.resolver.list.duration'].record(
      (this.lastEventMs - this.listStartedMs) / 1000,
      this.metricAttrs,
    );
    this.publish('list', `${items.length} slices at resourceVersion ${rv}`);
    for (const view of this.views.values()) this.rebuildView(view);
  }

  private onEvent(type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: EndpointSlice): void {
    const name = obj.metadata.name;
    if (!name) return;
    this.lastEventMs = performance.now();
    if (type === 'DELETED') this.slices.delete(name);
    else this.slices.set(name, obj);
    this.publish('event', `${type} ${name}`);
    for (const view of this.views.values()) {
      const eps = type === 'DELETED' ? [] : sliceEndpoints(obj, view.selector);
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

  private onStart(what: 'list' | 'watch'): void {
    if (what === 'list') this.listStartedMs = performance.now();
    const name = what === 'list' ? 'grpc_kube.resolver.list.started' : 'grpc_kube.resolver.watch.started';
    instruments()?.[name].add(1, this.metricAttrs);
  }

  private fail(err: GrpcKubeError): void {
    this.publish('error', err.message);
    instruments()?.['grpc_kube.resolver.errors'].add(1, { ...this.metricAttrs, 'error.type': err.code });
    if (this.synced) return; // keep serving the last known set
    this.lastError = err;
    for (const view of this.views.values()) for (const l of view.listeners) l.onError(err);
  }

  private publish(kind: SourceEvent['kind'], detail?: string): void {
    if (sourceChannel.hasSubscribers)
      sourceChannel.publish({ source: this.name, kind, detail } satisfies SourceEvent);
  }
}

function pick<T extends object, K extends keyof T>(o: T, keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}
