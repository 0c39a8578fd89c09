// The reconcile loop every embedded controller runs on: a keyed, coalescing, single-flight work queue
// (the shape of client-go's workqueue). Adding a key that is already queued does nothing; adding a key
// while its reconcile runs makes it run once more afterwards; keys run one at a time, so a burst of
// events for one object becomes one reconcile. A failing key is retried with jittered exponential
// backoff that resets when it next succeeds. Every timer is unref'd and cleared on close().

export interface WorkQueueOptions {
  /** Reconciles one key; a throw (or rejection) schedules a retry with backoff. */
  readonly handler: (key: string) => void | Promise<void>;
  /** Wait this long after the first add before running, to coalesce bursts spread over ticks. 0: next macrotask. */
  readonly batchMs?: number;
  readonly retryBaseMs?: number;
  readonly retryMaxMs?: number;
  readonly random?: () => number;
  /** Told about every failed reconcile (after which it is retried). */
  readonly onError?: (key: string, err: unknown) => void;
}

export class WorkQueue {
  private readonly opts: Required<Omit<WorkQueueOptions, 'onError'>> & Pick<WorkQueueOptions, 'onError'>;
  private readonly queued = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  private running = false;
  private closed = false;
  private idleWaiters: Array<() => void> = [];

  constructor(opts: WorkQueueOptions) {
    this.opts = {
      handler: opts.handler,
      batchMs: opts.batchMs ?? 0,
      retryBaseMs: opts.retryBaseMs ?? 20,
      retryMaxMs: opts.retryMaxMs ?? 2000,
      random: opts.random ?? Math.random,
      onError: opts.onError,
    };
  }

  add(key: string): void {
    if (this.closed) return;
    this.queued.add(key);
    this.schedule();
  }

  /** Adds the key after delayMs (the earliest of several such requests wins); unref'd. */
  addAfter(key: string, delayMs: number): void {
    if (this.closed) return;
    const at = Date.now() + Math.max(0, delayMs);
    const prev = this.delayed.get(key);
    if (prev && prev.at <= at) return;
    if (prev) clearTimeout(prev.timer);
    const timer = setTimeout(
      () => {
        this.delayed.delete(key);
        this.add(key);
      },
      Math.max(0, delayMs),
    );
    timer.unref();
    this.delayed.set(key, { at, timer });
  }

  /** Resolves once nothing is queued, running or waiting for a retry (addAfter timers do not count). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  close(): void {
    this.closed = true;
    this.queued.clear();
    if (this.timer) {
      clearTimeout(this.timer as NodeJS.Timeout);
      clearImmediate(this.timer as NodeJS.Immediate);
      this.timer = undefined;
    }
    for (const t of this.retryTimers.values()) clearTimeout(t);
    this.retryTimers.clear();
    for (const d of this.delayed.values()) clearTimeout(d.timer);
    this.delayed.clear();
    this.notifyIdle();
  }

  private isIdle(): boolean {
    return (
      this.closed || (this.queued.size === 0 && !this.running && this.retryTimers.size === 0 && !this.timer)
    );
  }

  private notifyIdle(): void {
    if (!this.isIdle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private schedule(): void {
    if (this.running || this.timer || this.closed) return;
    if (this.opts.batchMs > 0) {
      this.timer = setTimeout(() => void this.drain(), this.opts.batchMs);
      this.timer.unref();
    } else {
      // Not unref'd: an unref'd immediate lets the loop block in poll, delaying it until some other event.
      this.timer = setImmediate(() => void this.drain());
    }
  }

  private async drain(): Promise<void> {
    this.timer = undefined;
    if (this.closed) return;
    this.running = true;
    // Bounded: each pass takes the keys queued so far; keys added meanwhile wait for the next pass.
    const keys = [...this.queued];
    this.queued.clear();
    for (const key of keys) {
      if (this.closed) break;
      try {
        await this.opts.handler(key);
        this.failures.delete(key);
      } catch (err) {
        if (this.closed) break;
        this.opts.onError?.(key, err);
        this.retryLater(key);
      }
    }
    this.running = false;
    if (this.queued.size > 0) this.schedule();
    this.notifyIdle();
  }

  private retryLater(key: string): void {
    if (this.retryTimers.has(key)) return;
    const n = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, n);
    const ceiling = Math.min(this.opts.retryMaxMs, this.opts.retryBaseMs * 2 ** Math.min(n - 1, 16));
    const delay = ceiling / 2 + (this.opts.random() * ceiling) / 2;
    const t = setTimeout(() => {
      this.retryTimers.delete(key);
      this.add(key);
      this.notifyIdle();
    }, delay);
    t.unref();
    this.retryTimers.set(key, t);
  }
}

/** Watch event types that can change what a controller wants (not BOOKMARK or ERROR). */
export function isChange(type: string): boolean {
  return type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED';
}

/**
 * What every embedded controller shares: a WorkQueue running `reconcile` per key, fed by watches
 * that `watches()` opens once on start(); stop() closes them and the queue; idle() resolves when no
 * reconcile is queued or running (tests and the embedded cluster's waits).
 */
export abstract class QueueController {
  protected readonly queue: WorkQueue;
  private stops: Array<() => void> = [];

  constructor(opts: Pick<WorkQueueOptions, 'batchMs' | 'onError'>) {
    this.queue = new WorkQueue({ handler: (key) => this.reconcile(key), ...opts });
  }

  /** Opens the watches that add keys to the queue; returns their stop functions. */
  protected abstract watches(): Array<() => void>;

  protected abstract reconcile(key: string): void | Promise<void>;

  start(): void {
    if (this.stops.length > 0) return;
    this.stops = this.watches();
  }

  stop(): void {
    for (const s of this.stops) s();
    this.stops = [];
    this.queue.close();
  }

  idle(): Promise<void> {
    return this.queue.idle();
  }
}
