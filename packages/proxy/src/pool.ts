// The backends of one proxied Service: fed by an endpoint source (the shared SourceRegistry watch, or
// a fixed list), one Backend per endpoint, and the picker that chooses among the ready ones per RPC.
// Draining and unready endpoints keep their sessions for the streams in flight but get no new RPCs;
// removed endpoints close gracefully. RPCs that arrive before the first endpoint list wait for it.

import type { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { Endpoint, EndpointView } from 'grpc-kube/internal/discovery/endpoint.js';
import { endpointKey } from 'grpc-kube/internal/discovery/endpoint.js';
import type { EndpointListener, Subscription } from 'grpc-kube/internal/discovery/kube-source.js';
import { Backend, type BackendOptions } from './backend.js';
import type { ProxyPicker } from './picker.js';
import type { PolicyRuntime } from 'grpc-kube/internal/balancer/runtime.js';

export type EndpointFeed = (listener: EndpointListener) => Subscription;

/** A fixed endpoint list as a feed (ingress to static backends, benchmarks, tests). */
export function staticFeed(endpoints: readonly { address: string; port: number }[]): EndpointFeed {
  const eps: Endpoint[] = endpoints.map((e) =>
    Object.freeze({ address: e.address, port: e.port, state: 'ready' }),
  );
  return (listener) => {
    let live = true;
    // Never call back synchronously, as the discovery sources do not.
    queueMicrotask(() => {
      if (live)
        listener.onEndpoints(
          { size: eps.length, endpoints: () => eps },
          { added: eps, removed: [], changed: [] },
        );
    });
    return { unsubscribe: () => void (live = false) };
  };
}

export type PickOutcome =
  | { readonly kind: 'backend'; readonly backend: Backend }
  | { readonly kind: 'wait' }
  | { readonly kind: 'fail'; readonly message: string };

export class ServicePool {
  readonly name: string;
  readonly picker: ProxyPicker;
  private readonly backends = new Map<string, Backend>();
  /** Ready backends, in endpoint order; rebuilt on every endpoint change. */
  private ready: Backend[] = [];
  private isSynced = false;
  private error: GrpcKubeError | undefined;
  private readonly waiters = new Set<() => void>();
  private readonly sub: Subscription;
  private readonly backendOpts: BackendOptions;
  private readonly runtime: PolicyRuntime;
  private closed = false;
  lastUsedMs: number;

  constructor(
    name: string,
    feed: EndpointFeed,
    picker: ProxyPicker,
    backendOpts: BackendOptions,
    runtime: PolicyRuntime,
  ) {
    this.name = name;
    this.picker = picker;
    this.backendOpts = backendOpts;
    this.runtime = runtime;
    this.lastUsedMs = runtime.now();
    this.sub = feed({
      onEndpoints: (view) => this.update(view),
      onError: (err) => {
        this.error = err;
        this.wake();
      },
    });
  }

  /** True once a first endpoint list arrived. */
  get synced(): boolean {
    return this.isSynced || this.error !== undefined;
  }

  /** Counts for tests and the CLI. */
  get counts(): { backends: number; ready: number } {
    return { backends: this.backends.size, ready: this.ready.length };
  }

  backend(key: string): Backend | undefined {
    return this.backends.get(key);
  }

  /**
   * Choose a backend for one attempt of an RPC, skipping the ones it already tried. Ejected
   * backends (recent connect failure) are skipped unless nothing else is left.
   */
  pick(tried: ReadonlySet<Backend>): PickOutcome {
    this.lastUsedMs = this.runtime.now();
    if (!this.isSynced) {
      if (this.error !== undefined)
        return { kind: 'fail', message: `Service ${this.name}: ${this.error.message}` };
      return { kind: 'wait' };
    }
    if (this.ready.length === 0) {
      return { kind: 'fail', message: `Service ${this.name} has no ready endpoint` };
    }
    const now = this.runtime.now();
    const fresh = tried.size === 0 ? this.ready : this.ready.filter((b) => !tried.has(b));
    if (fresh.length === 0) {
      return {
        kind: 'fail',
        message: `Service ${this.name}: all ${this.ready.length} ready endpoints failed`,
      };
    }
    let candidates = fresh;
    for (const b of fresh) {
      if (b.ejected(now)) {
        const healthy = fresh.filter((x) => !x.ejected(now));
        if (healthy.length > 0) candidates = healthy;
        break;
      }
    }
    // As grpc-js balancers pick only READY subchannels: a backend still connecting (a pod that just
    // turned Ready, or one whose session got GOAWAY) is warmed, and picked only when no backend has
    // completed its handshake. Least-request would otherwise pile RPCs on it — it has none
    // outstanding — and they would all wait for its handshake.
    let connecting = 0;
    for (const b of candidates) {
      if (!b.handshaken) {
        connecting++;
        b.warm();
      }
    }
    if (connecting > 0 && connecting < candidates.length) candidates = candidates.filter((b) => b.handshaken);
    const b = this.picker.pick(candidates);
    return b === undefined
      ? { kind: 'fail', message: `Service ${this.name} has no ready endpoint` }
      : { kind: 'backend', backend: b };
  }

  /** Call `fn` once after the next endpoint update or error; returns a canceller. */
  onChange(fn: () => void): () => void {
    this.waiters.add(fn);
    return () => this.waiters.delete(fn);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sub.unsubscribe();
    for (const b of this.backends.values()) b.close();
    this.backends.clear();
    this.ready = [];
    this.wake();
  }

  destroy(): void {
    this.close();
  }

  /** Destroy every backend session now (forced shutdown). */
  destroyBackends(): void {
    for (const b of this.backends.values()) b.destroy();
  }

  private update(view: EndpointView): void {
    if (this.closed) return;
    const eps = view.endpoints();
    const seen = new Set<string>();
    const ready: Backend[] = [];
    for (const ep of eps) {
      const key = endpointKey(ep);
      seen.add(key);
      let b = this.backends.get(key);
      if (b === undefined) {
        b = new Backend(ep, this.picker.newStats(), this.backendOpts);
        this.backends.set(key, b);
      } else {
        b.endpoint = ep;
      }
      if (ep.state === 'ready') {
        ready.push(b);
        // Connect before the first RPC needs it (see pick()).
        if (!b.ejected(this.runtime.now())) b.warm();
      }
    }
    for (const [key, b] of this.backends) {
      if (seen.has(key)) continue;
      // Gone from the Service: streams in flight finish on their sessions, nothing new starts.
      b.close();
      this.backends.delete(key);
    }
    this.ready = ready;
    this.isSynced = true;
    this.error = undefined;
    this.wake();
  }

  private wake(): void {
    const fns = [...this.waiters];
    this.waiters.clear();
    for (const fn of fns) fn();
  }
}
