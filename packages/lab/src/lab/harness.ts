// How loaded the lab itself was during a run, so that its numbers can say whether they measured the
// strategy or the machine. Two signals, both cheap to read:
//  - the event-loop delay of the process that drives the clients (node:perf_hooks'
//    monitorEventLoopDelay): every ms the loop is late, each client's RPC timing and deadline are late
//    too, so a stall near the RPC deadline can fail RPCs that no strategy lost;
//  - the machine's CPU busy share from /proc/stat (all cores): pods, proxies and clients compete for it.
// The verdict is a pure function of the figures and the run's deadline (harnessVerdict), so tests pin
// it with hand-made numbers; the monitor also keeps a per-bucket series for the report's plots.

import { readFileSync, writeFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** The `harness` object of a lab run record (key order as `--json` writes it, docs/lab.md). */
export interface HarnessRecord {
  loopDelayMsP99: number;
  loopDelayMsMax: number;
  machineCpuBusyPct: number;
  saturated: boolean;
  reason: string;
}

/** Per-bucket view of the same signals, for the report (bucket b covers [b·bucketMs, (b+1)·bucketMs)). */
export interface HarnessSeries {
  bucketMs: number;
  /** Largest event-loop delay seen in the bucket, ms. */
  loopDelayMaxMs: number[];
  /** Machine CPU busy % over the bucket (null where /proc/stat could not be read). */
  cpuBusyPct: (number | null)[];
  /** The loop-delay saturation limit of the run (half its RPC deadline), for scaling a plot. */
  loopLimitMs: number;
}

export interface HarnessFigures {
  loopDelayMsP99: number;
  loopDelayMsMax: number;
  machineCpuBusyPct: number;
}

/**
 * Limits past which a run measured the machine, not the strategy. Relative to the RPC deadline:
 * a single stall of half the deadline can expire RPCs on its own; a p99 of a tenth of it skews every
 * latency figure. A machine busy above `cpuBusyPct` counts only when the clients felt it (p99 above
 * `cpuLoopP99OfDeadline`): a full machine whose client loop stays on time still measures strategies.
 */
export const SATURATION_LIMITS = {
  loopMaxOfDeadline: 0.5,
  loopP99OfDeadline: 0.1,
  cpuBusyPct: 97,
  cpuLoopP99OfDeadline: 0.05,
} as const;

/**
 * The niceness the lab's own process asks for (root only): above anything else on the machine, so
 * that outside work delays neither the clients' event loop nor, through inheritance, the pods and
 * proxies the lab starts (which the lab then makes nicer than itself, see POD_NICE). Returns the
 * function that puts back the niceness it found; a no-op where raising is not allowed.
 *
 * With the kernel's autogroup scheduling on (sched_autogroup_enabled, the default of most
 * distributions), a process's niceness only weighs against processes of its own session: every
 * session shares the CPU as one group. The lab therefore gives its session's group the same
 * niceness, else a build or test run in another terminal takes half the machine whatever the lab's
 * own niceness says.
 */
export const LAB_PROCESS_NICE = -10;

const AUTOGROUP = '/proc/self/autogroup';

/** The niceness of this process's autogroup ("/autogroup-N nice K"), or undefined where there is none. */
export function readAutogroupNice(text: string): number | undefined {
  const m = /\bnice\s+(-?\d+)\s*$/.exec(text);
  return m ? Number(m[1]) : undefined;
}

export function raiseLabPriority(nice = LAB_PROCESS_NICE): () => void {
  const restore: Array<() => void> = [];
  try {
    const before = getPriority();
    if (before > nice) {
      setPriority(nice);
      // Raising back to a nicer value is always allowed; nothing to do if the process is exiting.
      restore.push(() => setPriority(before));
    }
  } catch {
    // EACCES without root: the lab runs at the niceness it was given
  }
  try {
    const before = readAutogroupNice(readFileSync(AUTOGROUP, 'utf8'));
    if (before !== undefined && before > nice) {
      writeFileSync(AUTOGROUP, String(nice));
      restore.push(() => writeFileSync(AUTOGROUP, String(before)));
    }
  } catch {
    // No autogroup (kernel option off or absent) or no right to raise it: nothing to weigh against.
  }
  return () => {
    for (const r of restore.reverse()) {
      try {
        r();
      } catch {
        // best effort on the way out
      }
    }
  };
}

/** What to do about it, said once wherever a saturated run is reported. */
export const SATURATION_ADVICE =
  'run fewer strategies at once (--strategy), raise --pacing, or stop other work on the machine';

export function harnessVerdict(
  f: HarnessFigures,
  opts: { deadlineMs: number },
): { saturated: boolean; reason: string } {
  const reasons: string[] = [];
  const maxLimit = opts.deadlineMs * SATURATION_LIMITS.loopMaxOfDeadline;
  const p99Limit = opts.deadlineMs * SATURATION_LIMITS.loopP99OfDeadline;
  const cpuP99Limit = opts.deadlineMs * SATURATION_LIMITS.cpuLoopP99OfDeadline;
  if (f.loopDelayMsMax >= maxLimit)
    reasons.push(
      `the client event loop stalled ${round1(f.loopDelayMsMax)} ms at most (limit ${round1(maxLimit)}: half the ${opts.deadlineMs} ms deadline)`,
    );
  if (f.loopDelayMsP99 >= p99Limit)
    reasons.push(
      `the client event loop's p99 delay was ${round1(f.loopDelayMsP99)} ms (limit ${round1(p99Limit)}: a tenth of the deadline)`,
    );
  else if (f.machineCpuBusyPct >= SATURATION_LIMITS.cpuBusyPct && f.loopDelayMsP99 >= cpuP99Limit)
    reasons.push(
      `the machine's CPU was ${round1(f.machineCpuBusyPct)} % busy (limit ${SATURATION_LIMITS.cpuBusyPct} %) and the client event loop felt it (p99 delay ${round1(f.loopDelayMsP99)} ms, limit ${round1(cpuP99Limit)} on a full machine)`,
    );
  return { saturated: reasons.length > 0, reason: reasons.join('; ') };
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** Busy and total jiffies of all cores, from the first line of /proc/stat; null where unreadable. */
export type CpuTimes = { busy: number; total: number } | null;

export function parseProcStat(text: string): CpuTimes {
  const line = text.split('\n', 1)[0] ?? '';
  const parts = line.trim().split(/\s+/);
  if (parts[0] !== 'cpu') return null;
  const n = parts.slice(1, 9).map(Number);
  if (n.length < 4 || n.some((x) => !Number.isFinite(x))) return null;
  const total = n.reduce((a, b) => a + b, 0);
  const idle = (n[3] ?? 0) + (n[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

function readCpuTimes(): CpuTimes {
  try {
    return parseProcStat(readFileSync('/proc/stat', 'utf8'));
  } catch {
    return null;
  }
}

/** Busy % between two readings; null when either is missing or no time passed. */
export function busyPct(a: CpuTimes, b: CpuTimes): number | null {
  if (a === null || b === null || b.total <= a.total) return null;
  return (100 * (b.busy - a.busy)) / (b.total - a.total);
}

export interface HarnessMonitorOptions {
  /** Bucket width of the series. Default 500 ms. */
  readonly bucketMs?: number;
  /** Reads the machine's CPU times (tests inject one). Default: /proc/stat. */
  readonly cpuTimes?: () => CpuTimes;
}

/** Samples this process's event-loop delay and the machine's CPU from start() to stop(). */
export class HarnessMonitor {
  private readonly bucketMs: number;
  private readonly cpuTimes: () => CpuTimes;
  private whole: IntervalHistogram | undefined;
  private bucket: IntervalHistogram | undefined;
  private timer: NodeJS.Timeout | undefined;
  private cpuStart: CpuTimes = null;
  private cpuLast: CpuTimes = null;
  private readonly loopSeries: number[] = [];
  private readonly cpuSeries: (number | null)[] = [];
  private result: { figures: HarnessFigures; series: HarnessSeries } | undefined;

  constructor(opts: HarnessMonitorOptions = {}) {
    this.bucketMs = opts.bucketMs ?? 500;
    this.cpuTimes = opts.cpuTimes ?? readCpuTimes;
  }

  start(): void {
    if (this.whole) return;
    // 10 ms resolution: finer than any stall that matters against a deadline, cheap to sample.
    this.whole = monitorEventLoopDelay({ resolution: 10 });
    this.bucket = monitorEventLoopDelay({ resolution: 10 });
    this.whole.enable();
    this.bucket.enable();
    this.cpuStart = this.cpuLast = this.cpuTimes();
    this.timer = setInterval(() => this.closeBucket(), this.bucketMs);
    this.timer.unref();
  }

  private closeBucket(): void {
    const h = this.bucket;
    if (!h) return;
    this.loopSeries.push(h.count > 0 ? nsToMs(h.max) : 0);
    h.reset();
    const now = this.cpuTimes();
    const pct = busyPct(this.cpuLast, now);
    this.cpuSeries.push(pct === null ? null : Math.round(pct));
    this.cpuLast = now;
  }

  /** Stops sampling; the figures (without a verdict) and the series. Idempotent. */
  stop(deadlineMs = 1000): { figures: HarnessFigures; series: HarnessSeries } {
    if (this.result) return this.result;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.whole && this.bucket) {
      this.closeBucket();
      this.whole.disable();
      this.bucket.disable();
    }
    const h = this.whole;
    this.whole = this.bucket = undefined;
    const figures: HarnessFigures = {
      loopDelayMsP99: h && h.count > 0 ? round1(nsToMs(h.percentile(99))) : 0,
      loopDelayMsMax: h && h.count > 0 ? round1(nsToMs(h.max)) : 0,
      machineCpuBusyPct: round1(busyPct(this.cpuStart, this.cpuLast) ?? 0),
    };
    this.result = {
      figures,
      series: {
        bucketMs: this.bucketMs,
        loopDelayMaxMs: [...this.loopSeries],
        cpuBusyPct: [...this.cpuSeries],
        loopLimitMs: deadlineMs * SATURATION_LIMITS.loopMaxOfDeadline,
      },
    };
    return this.result;
  }
}

function nsToMs(ns: number): number {
  return ns / 1e6;
}
