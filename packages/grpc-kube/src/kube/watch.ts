// The one list-then-watch loop of grpc-kube (EndpointSlices, GRPCRoutes, anything later), after
// client-go's reflector: list (paginated, time-limited) → watch from the list's resourceVersion with
// bookmarks → on 410 Expired re-list → on any other failure wait a jittered, capped, growing delay.
//
// What a broken or hostile server cannot do to it:
// - a bad event (not JSON, `null`, ERROR without a Status, no metadata, a line over the bound, an
//   object the caller's `validate` refuses) becomes a typed error, a re-list and a backoff; nothing
//   is thrown out of a stream handler, and a caller's handler that throws is treated the same way;
// - a watch that ends within `minWatchMs` (1 s) without an event, an immediate 410 or an error all
//   count as failures, so an empty-watch or 410-storm server sees at most a few requests a second;
//   the backoff resets only after a watch that lived `minWatchMs` or delivered an event;
// - a list that never answers is cut at `listTimeoutMs`; a watch silent for 2 × the bookmark
//   interval is dropped (a half-open connection), HTTP/2 PING finds dead sessions sooner;
// - `stop()` aborts whatever is in flight and resolves within a tick of the abort.
// `status` is 'synced' only while a watch is open (or right after a list with the watch being
// opened): a Service whose watch cannot open (HTTP/1.1 watch limit) reads 'retrying', never synced.

import { GrpcKubeError } from '../errors.js';
import { Backoff, type BackoffOptions } from '../discovery/backoff.js';
import { isExpired, type KubeClient, type ResourcePath } from './client.js';
import type { KubeList, KubeObject, WatchEvent } from './types.js';

export type ListWatchStatus = 'starting' | 'synced' | 'retrying' | 'stopped';

export interface ListWatchHandlers<T extends KubeObject> {
  /** The whole current set, after every (re-)list. */
  onList(items: readonly T[], resourceVersion: string): void;
  /** One change from the watch. */
  onEvent(type: 'ADDED' | 'MODIFIED' | 'DELETED', object: T): void;
  /** A failure; the loop goes on (backoff, re-list). */
  onError(error: GrpcKubeError): void;
  /** Status changes ('synced' once a watch is open). */
  onStatus?(status: ListWatchStatus): void;
  /** A list or a watch request is about to be sent (for metrics). */
  onStart?(what: 'list' | 'watch'): void;
}

export interface ListWatchOptions {
  labelSelector?: string;
  pageSize?: number;
  backoff?: BackoffOptions;
  /** Server-side watch timeout range; each watch picks a random value in it (client-go: 5–10 min). */
  watchTimeoutSeconds?: readonly [number, number];
  /** The server's bookmark period; a watch with no byte for twice this long is dropped. Default 60 s. */
  bookmarkIntervalMs?: number;
  /** A list with no complete answer after this long fails with GK_ERR_KUBE_TIMEOUT. Default 60 s. */
  listTimeoutMs?: number;
  /** A watch ending sooner than this without an event counts as a failure. Default 1 s. */
  minWatchMs?: number;
  random?: () => number;
  now?: () => number;
  /** Timer hook so tests can drive the retry loop without real waits. */
  delay?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export interface ListWatchStats {
  lists: number;
  watches: number;
  events: number;
  bookmarks: number;
  expired: number;
  errors: number;
  /** Watches that ended within minWatchMs without an event. */
  shortWatches: number;
}

export class ListWatch<T extends KubeObject> {
  readonly stats: ListWatchStats = {
    lists: 0,
    watches: 0,
    events: 0,
    bookmarks: 0,
    expired: 0,
    errors: 0,
    shortWatches: 0,
  };
  status: ListWatchStatus = 'starting';
  private readonly backoff: Backoff;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly delay: (ms: number, signal: AbortSignal) => Promise<void>;
  private readonly o: Required<
    Pick<
      ListWatchOptions,
      'pageSize' | 'watchTimeoutSeconds' | 'bookmarkIntervalMs' | 'listTimeoutMs' | 'minWatchMs'
    >
  >;
  private readonly abort = new AbortController();
  private resourceVersion: string | undefined;
  private loopDone: Promise<void> | undefined;

  constructor(
    private readonly client: KubeClient,
    private readonly rp: ResourcePath,
    private readonly handlers: ListWatchHandlers<T>,
    private readonly opts: ListWatchOptions = {},
    /** Extra checks of the object a list or event carries (undefined: usable). */
    private readonly validate: (o: T) => string | undefined = () => undefined,
  ) {
    this.random = opts.random ?? opts.backoff?.random ?? Math.random;
    this.backoff = new Backoff({ ...opts.backoff, random: this.random });
    this.now = opts.now ?? Date.now;
    this.delay = opts.delay ?? abortableDelay;
    this.o = {
      pageSize: opts.pageSize ?? 500,
      watchTimeoutSeconds: opts.watchTimeoutSeconds ?? [300, 600],
      bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 60_000,
      listTimeoutMs: opts.listTimeoutMs ?? 60_000,
      minWatchMs: opts.minWatchMs ?? 1_000,
    };
  }

  get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  start(): void {
    if (this.stopped) return;
    this.loopDone ??= this.loop();
  }

  /** Stop: aborts the list or watch in flight; no handler is called afterwards. Idempotent. */
  async stop(): Promise<void> {
    if (!this.stopped) {
      this.abort.abort();
      this.setStatus('stopped');
    }
    await this.loopDone;
  }

  private setStatus(s: ListWatchStatus): void {
    if (this.status === s || (this.status === 'stopped' && s !== 'stopped')) return;
    this.status = s;
    this.handlers.onStatus?.(s);
  }

  private async loop(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      let healthy = false;
      try {
        if (this.resourceVersion === undefined) await this.relist();
        if (signal.aborted) return;
        healthy = await this.watchOnce();
        if (healthy) {
          this.backoff.reset();
          continue; // a clean end (server timeout) continues from the same resourceVersion at once
        }
        this.stats.shortWatches++;
        throw new ShortWatchError(
          `the watch of ${this.rp.resource} ended within ${this.o.minWatchMs} ms without an event; backing off`,
        );
      } catch (err) {
        if (signal.aborted) return;
        if (isExpired(err)) {
          this.stats.expired++;
          this.resourceVersion = undefined;
          // After a watch that lived, re-list at once; a 410 right away (a storm) backs off.
          if (healthy) continue;
        } else {
          this.stats.errors++;
          const e =
            err instanceof GrpcKubeError
              ? err
              : new GrpcKubeError(
                  'GK_ERR_KUBE_PROTOCOL',
                  `watch of ${this.rp.resource} failed: ${String(err)}`,
                  {
                    cause: err,
                  },
                );
          // A bad answer may mean our state is wrong: read it whole again. A disconnect, no answer in
          // time (a server restarting) or a short watch leaves it right: watch again from where we are.
          if (
            e.code !== 'GK_ERR_KUBE_UNREACHABLE' &&
            e.code !== 'GK_ERR_KUBE_TIMEOUT' &&
            !(err instanceof ShortWatchError)
          )
            this.resourceVersion = undefined;
          this.setStatus('retrying');
          this.safely(() => this.handlers.onError(e));
        }
        try {
          await this.delay(this.backoff.next(), signal);
        } catch {
          return;
        }
      }
    }
  }

  private async relist(): Promise<void> {
    this.safely(() => this.handlers.onStart?.('list'));
    // Not AbortSignal.any([.., AbortSignal.timeout()]): on Node 20 a garbage collection can take the
    // timeout signal from under the composite, and a hung list then never times out.
    const timeout = new AbortController();
    const timer = setTimeout(
      () => timeout.abort(new DOMException(`no list answer in ${this.o.listTimeoutMs} ms`, 'TimeoutError')),
      this.o.listTimeoutMs,
    );
    let list: KubeList<T>;
    try {
      list = await this.client.list<T>(this.rp, {
        ...(this.opts.labelSelector ? { labelSelector: this.opts.labelSelector } : {}),
        limit: this.o.pageSize,
        signal: AbortSignal.any([this.abort.signal, timeout.signal]),
      });
    } finally {
      clearTimeout(timer);
    }
    if (this.abort.signal.aborted) return;
    for (const it of list.items) {
      const why = this.validate(it);
      if (why !== undefined) throw this.badObject(it, why);
    }
    this.stats.lists++;
    const rv = list.metadata.resourceVersion ?? '0';
    this.handlers.onList(list.items, rv);
    this.resourceVersion = rv;
  }

  /** One watch; true when it was healthy (lived minWatchMs or delivered an event). */
  private async watchOnce(): Promise<boolean> {
    const [lo, hi] = this.o.watchTimeoutSeconds;
    const timeoutSeconds = Math.max(1, Math.round(lo + (hi - lo) * this.random()));
    const started = this.now();
    let events = 0;
    let handlerError: unknown;
    this.stats.watches++;
    this.safely(() => this.handlers.onStart?.('watch'));
    const ac = new AbortController();
    const signal = AbortSignal.any([this.abort.signal, ac.signal]);
    await this.client.watch<T>(
      this.rp,
      {
        ...(this.opts.labelSelector ? { labelSelector: this.opts.labelSelector } : {}),
        resourceVersion: this.resourceVersion ?? '0',
        allowWatchBookmarks: true,
        timeoutSeconds,
        idleTimeoutMs: 2 * this.o.bookmarkIntervalMs,
        signal,
        onOpen: () => this.setStatus('synced'),
      },
      (ev: WatchEvent<T>) => {
        if (handlerError !== undefined || this.abort.signal.aborted) return;
        try {
          this.apply(ev);
          events++;
        } catch (err) {
          handlerError = err;
          ac.abort();
        }
      },
    ).done;
    if (handlerError !== undefined) throw handlerError;
    return events > 0 || this.now() - started >= this.o.minWatchMs;
  }

  private apply(ev: WatchEvent<T>): void {
    const obj = ev.object as T;
    const rv = obj.metadata.resourceVersion;
    if (ev.type === 'BOOKMARK') {
      this.stats.bookmarks++;
      if (rv) this.resourceVersion = rv;
      return;
    }
    if (ev.type !== 'ADDED' && ev.type !== 'MODIFIED' && ev.type !== 'DELETED') return;
    const why = ev.type === 'DELETED' ? undefined : this.validate(obj);
    if (why !== undefined) throw this.badObject(obj, why);
    this.stats.events++;
    this.handlers.onEvent(ev.type, obj);
    if (rv) this.resourceVersion = rv;
  }

  private badObject(o: T, why: string): GrpcKubeError {
    return new GrpcKubeError(
      'GK_ERR_KUBE_PROTOCOL',
      `bad ${this.rp.resource} object "${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}" from the Kubernetes API: ${why}`,
    );
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch {
      // A listener's failure is its own; the loop must go on.
    }
  }
}

/** A watch that ended at once without an event: a failure for backoff, not a reason to re-list. */
class ShortWatchError extends GrpcKubeError {
  constructor(message: string) {
    super('GK_ERR_KUBE_UNREACHABLE', message);
  }
}

export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
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
