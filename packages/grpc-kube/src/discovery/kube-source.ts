// The Kubernetes endpoint source: the EndpointSlices of one Service in one namespace, kept live by
// list-then-watch, and served as one EndpointSet per port to any number of subscribers.
//
// The loop is the project's one list-then-watch (kube/watch.ts: bookmarks, 410 → re-list diffed
// against what we have so nothing flaps, validated events, jittered capped backoff, time-outs); every
// slice is checked (sliceProblem) before it is used. Slices are keyed by name: a Service has many,
// and endpoints move between them. While the API is unreachable the last known set stays served;
// errors reach subscribers only when there is no set to serve (first list failed) — then as typed
// errors (403 names the missing RBAC verb), never as a silent empty list.
//
// A numeric port means what it means to Kubernetes: the Service port. Beside its first list (not
// before it: names never wait) the source reads the Service, and again at every re-list; a Service
// port of that number selects the slice port of the same name, which is the pod's target port (80 →
// targetPort 50051 gives 50051, whether the targetPort is a number or a container port's name). A
// numbered subscription waits for that read (bounded by listTimeoutMs), so it never sees the number
// taken the other way first. Without such a Service port, without the Service (404), or without RBAC
// `get services` (403), the number is an endpoint port, as before — a fallback, not an error: a
// GK_ERR_PORT_NOT_FOUND that follows says why the Service was not read. A slice without a port of
// the Service port's name (one written by hand) is matched by the number too. Other failures
// (time-out, 5xx) keep what was read and retry with backoff.

import { channel } from 'node:diagnostics_channel';
import { GrpcKubeError, KubeApiError } from '../errors.js';
import type { KubeClient, ResourcePath } from '../kube/client.js';
import { SERVICE_NAME_LABEL, type EndpointSlice, type KubeObject } from '../kube/types.js';
import {
  ListWatch,
  type ListWatchOptions,
  type ListWatchStats,
  type ListWatchStatus,
} from '../kube/watch.js';
import { instruments, registerGauges, secondsSince } from '../metrics/instruments.js';
import { Backoff } from './backoff.js';
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

const SERVICES: Omit<ResourcePath, 'namespace'> = { group: '', version: 'v1', resource: 'services' };

interface ServiceObject extends KubeObject {
  spec?: { ports?: unknown };
}

/** Service port number → its name ('' for the one unnamed port), from an answer off the network. */
export function servicePortNames(svc: ServiceObject): ReadonlyMap<number, string> {
  const out = new Map<number, string>();
  const ports = svc.spec?.ports;
  for (const p of Array.isArray(ports) ? (ports as Array<Record<string, unknown> | null>) : []) {
    const port = p?.['port'];
    const name = p?.['name'] ?? '';
    if (typeof port === 'number' && Number.isInteger(port) && typeof name === 'string') out.set(port, name);
  }
  return out;
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
  private readonly client: KubeClient;
  private readonly getTimeoutMs: number;
  /** The Service's port names by number (empty: no Service, or not readable). */
  private servicePorts: ReadonlyMap<number, string> = new Map();
  /** 'unread' until the first read of the Service settles; numbered views wait for it. */
  private serviceState: 'unread' | 'reading' | 'read' = 'unread';
  /** Why the Service's ports are not known (404, 403, an outage), for GK_ERR_PORT_NOT_FOUND. */
  private serviceNote: string | undefined;
  private readonly serviceBackoff: Backoff;
  private serviceAbort: AbortController | undefined;
  private serviceRetry: NodeJS.Timeout | undefined;

  constructor(client: KubeClient, namespace: string, service: string, opts: KubeSourceOptions = {}) {
    this.namespace = namespace;
    this.service = service;
    this.client = client;
    this.getTimeoutMs = opts.listTimeoutMs ?? 10_000;
    this.serviceBackoff = new Backoff({ ...opts.backoff, ...(opts.random ? { random: opts.random } : {}) });
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
    if (this.serviceState === 'unread') this.readService();
  }

  /**
   * Read the Service's ports (one at a time), then rebuild the views if they changed. A 404 or 403
   * settles it: numbers select endpoint ports. Other failures keep what is known and retry.
   */
  private readService(): void {
    if (this.stopping || this.serviceAbort !== undefined) return;
    clearTimeout(this.serviceRetry);
    this.serviceRetry = undefined;
    if (this.serviceState === 'unread') this.serviceState = 'reading';
    const ac = new AbortController();
    this.serviceAbort = ac;
    // Our own timer, not AbortSignal.timeout(): under AbortSignal.any (the client's) Node 20 can
    // collect it and a hung read would hold numbered views for ever.
    const timer = setTimeout(
      () => ac.abort(new DOMException(`no answer in ${this.getTimeoutMs} ms`, 'TimeoutError')),
      this.getTimeoutMs,
    );
    timer.unref();
    const rp = { ...SERVICES, namespace: this.namespace };
    this.client
      .get<ServiceObject>(rp, this.service, { signal: ac.signal })
      .then(
        (svc) => this.serviceAnswered(ac, servicePortNames(svc), undefined),
        (err: unknown) => {
          const status = err instanceof KubeApiError ? err.status : undefined;
          const note =
            status === 404
              ? `there is no Service ${this.name}`
              : status === 403
                ? `reading Service ${this.name} is forbidden (403): grant RBAC \`get services\` to map Service ports to target ports`
                : `Service ${this.name} not read: ${(err as Error).message}`;
          this.publish('error', `${note}; numbers select endpoint ports`);
          const settled = status === 404 || status === 403;
          this.serviceAnswered(ac, settled ? new Map() : this.servicePorts, note);
          if (!settled && !this.stopping) {
            this.serviceRetry = setTimeout(() => this.readService(), this.serviceBackoff.next());
            this.serviceRetry.unref();
          }
        },
      )
      .finally(() => clearTimeout(timer));
  }

  private serviceAnswered(
    ac: AbortController,
    ports: ReadonlyMap<number, string>,
    note: string | undefined,
  ): void {
    if (this.serviceAbort !== ac || this.stopping) return;
    this.serviceAbort = undefined;
    if (note === undefined) this.serviceBackoff.reset();
    const first = this.serviceState !== 'read';
    const changed = [...ports].join() !== [...this.servicePorts].join() || note !== this.serviceNote;
    this.serviceState = 'read';
    this.servicePorts = ports;
    this.serviceNote = note;
    if (!this.synced || !(first || changed)) return;
    for (const view of this.views.values()) if (view.selector.kind === 'number') this.rebuildView(view);
  }

  /** A numbered view waits for the first read of the Service: until then its number means nothing. */
  private held(view: PortView): boolean {
    return view.selector.kind === 'number' && this.serviceState !== 'read';
  }

  /**
   * What a view selects on one slice: a Service port number becomes that port's name when the
   * slice has a port of that name; else the number is an endpoint port.
   */
  private sliceSelector(sel: PortSelector, slice: EndpointSlice): PortSelector {
    if (sel.kind !== 'number') return sel;
    const name = this.servicePorts.get(sel.port);
    if (name === undefined) return sel;
    const named: PortSelector = { kind: 'name', name };
    return slicePort(slice, named) !== undefined ? named : sel;
  }

  /** Stop watching; no listener is called afterwards. Idempotent. */
  async stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      this.unregisterGauges();
      clearTimeout(this.serviceRetry);
      this.serviceAbort?.abort();
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
    // A re-list (after an outage, a 410) reads the Service again: its ports may have changed.
    if (this.serviceState === 'read') this.readService();
  }

  private onEvent(type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: EndpointSlice): void {
    const name = obj.metadata.name;
    if (!name) return;
    this.lastEventMs = performance.now();
    if (type === 'DELETED') this.slices.delete(name);
    else this.slices.set(name, obj);
    this.publish('event', `${type} ${name}`);
    for (const view of this.views.values()) {
      if (this.held(view)) continue;
      const eps = type === 'DELETED' ? [] : sliceEndpoints(obj, this.sliceSelector(view.selector, obj));
      const diff = view.set.replaceGroup(name, eps);
      this.afterChange(view, diff);
    }
  }

  private rebuildView(view: PortView): void {
    if (this.held(view)) return;
    const groups = new Map<string, Endpoint[]>();
    for (const [name, s] of this.slices)
      groups.set(name, sliceEndpoints(s, this.sliceSelector(view.selector, s)));
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
    const sel = view.selector;
    for (const s of this.slices.values())
      if (slicePort(s, this.sliceSelector(sel, s)) !== undefined) return undefined;
    let via = '';
    if (sel.kind === 'number') {
      const name = this.servicePorts.get(sel.port);
      if (name !== undefined)
        via = ` (Service port ${sel.port} is named ${portSelectorText({ kind: 'name', name })})`;
      else if (this.serviceNote !== undefined)
        via = ` (${this.serviceNote}, so ${sel.port} was taken as an endpoint port)`;
    }
    return new GrpcKubeError(
      'GK_ERR_PORT_NOT_FOUND',
      `Service ${this.name} has no port ${portSelectorText(sel)}${via}; its EndpointSlices have ${slicePortsText(this.slices.values())}`,
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
