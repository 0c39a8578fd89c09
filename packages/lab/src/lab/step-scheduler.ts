// The timed steps of a scenario (scale, rollout, kill pods, API down, weights), each started at its
// time and run to its end even when the scenario ends first: stop() waits for every step under way,
// cancels what has not started, and then runs each step's finisher — the API taken down comes back
// up before the cluster is stopped, never after it (a late restart would outlive the lab).

export interface StepContext {
  /** Note a moment in the scenario's timeline (`API back`). */
  mark(label: string): void;
  /** Run `fn` after `ms`, unless the schedule stops first (then only the finishers run). */
  later(fn: () => Promise<void>, ms: number): void;
  /** Run `fn` when the schedule stops, if it has not run by then; `fn` must be safe to call twice. */
  finish(fn: () => Promise<void>): void;
}

export class StepScheduler<S extends { readonly atMs: number }> {
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly running = new Set<Promise<void>>();
  private readonly finishers: Array<() => Promise<void>> = [];
  private stopped = false;
  /** Errors of the steps, in the order they failed. */
  readonly errors: unknown[] = [];

  constructor(
    private readonly run: (step: S, ctx: StepContext) => Promise<void>,
    private readonly onStart: (step: S, mark: (label: string) => void) => void,
    private readonly mark: (label: string) => void,
  ) {}

  /** Starts each step `atMs` from now. */
  start(steps: readonly S[]): void {
    for (const step of steps) this.later(() => this.runStep(step), step.atMs);
  }

  /** Waits for the steps under way, cancels the rest, then runs the finishers still pending. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await Promise.allSettled(this.finishers.map((f) => f()));
  }

  private runStep(step: S): Promise<void> {
    this.onStart(step, this.mark);
    const ctx: StepContext = {
      mark: this.mark,
      later: (fn, ms) => this.later(fn, ms),
      finish: (fn) => void this.finishers.push(fn),
    };
    return this.run(step, ctx).catch((err: unknown) => void this.errors.push(err));
  }

  private later(fn: () => Promise<void>, ms: number): void {
    if (this.stopped) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      const p = fn()
        .catch((err: unknown) => void this.errors.push(err))
        .finally(() => this.running.delete(p));
      this.running.add(p);
    }, ms);
    this.timers.add(t);
  }
}
