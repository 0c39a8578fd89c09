// Where the proxy's time goes, aggregated over every RPC it ends: one bounded histogram per phase of
// CallTiming (queue, backend connect, backend first byte, total) and the few slowest RPCs with their
// breakdown. It answers "an RPC through the proxy missed its deadline: was it the proxy (waiting for a
// pick or a handshake), the backend (first byte), or neither (the client's own clock)?". Fixed memory:
// 24 buckets per phase and at most SLOWEST_KEPT calls.

import type { CallTiming } from './call.js';

/** Upper bounds of the buckets, ms: 0.1 ms to 60 s, about ×2 apart; one more bucket for above. */
const BOUNDS_MS = [
  0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 20000,
  60000,
];

export class MsHistogram {
  private readonly counts = new Array<number>(BOUNDS_MS.length + 1).fill(0);
  count = 0;
  maxMs = 0;

  add(ms: number): void {
    let i = 0;
    while (i < BOUNDS_MS.length && ms > (BOUNDS_MS[i] as number)) i++;
    this.counts[i]!++;
    this.count++;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  /** The upper bound of the bucket holding the p-th percentile (the max where that is lower); null when empty. */
  percentile(p: number): number | null {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i] as number;
      if (seen >= rank) return r1(Math.min(BOUNDS_MS[i] ?? this.maxMs, this.maxMs));
    }
    return r1(this.maxMs);
  }

  summary(): { p50: number | null; p99: number | null; max: number | null } {
    return {
      p50: this.percentile(50),
      p99: this.percentile(99),
      max: this.count === 0 ? null : r1(this.maxMs),
    };
  }
}

export interface SlowCall {
  service: string;
  backends: readonly string[];
  status: string;
  timing: CallTiming;
}

const SLOWEST_KEPT = 5;

export class ProxyTimings {
  readonly queueMs = new MsHistogram();
  readonly connectMs = new MsHistogram();
  readonly firstByteMs = new MsHistogram();
  readonly totalMs = new MsHistogram();
  /** RPCs sent on a backend session still in its handshake. */
  sentBeforeConnected = 0;
  /** The slowest RPCs so far, slowest first. */
  readonly slowest: SlowCall[] = [];

  record(call: Omit<SlowCall, 'timing'>, t: CallTiming): void {
    if (t.queueMs !== undefined) this.queueMs.add(t.queueMs);
    if (t.connectMs !== undefined) {
      this.connectMs.add(t.connectMs);
      if (t.connectMs > 0) this.sentBeforeConnected++;
    }
    if (t.firstByteMs !== undefined) this.firstByteMs.add(t.firstByteMs);
    this.totalMs.add(t.totalMs);
    const last = this.slowest[this.slowest.length - 1];
    if (this.slowest.length < SLOWEST_KEPT || (last !== undefined && t.totalMs > last.timing.totalMs)) {
      this.slowest.push({ ...call, backends: [...call.backends], timing: { ...t } });
      this.slowest.sort((a, b) => b.timing.totalMs - a.timing.totalMs);
      this.slowest.length = Math.min(this.slowest.length, SLOWEST_KEPT);
    }
  }

  /** A JSON-able summary (the CLI's exit line, the lab's diagnosis). */
  summary(): Record<string, unknown> {
    return {
      queueMs: this.queueMs.summary(),
      connectMs: this.connectMs.summary(),
      firstByteMs: this.firstByteMs.summary(),
      totalMs: this.totalMs.summary(),
      sentBeforeConnected: this.sentBeforeConnected,
      slowest: this.slowest.map((s) => ({
        service: s.service,
        backends: s.backends,
        status: s.status,
        queueMs: r1(s.timing.queueMs),
        connectMs: r1(s.timing.connectMs),
        firstByteMs: r1(s.timing.firstByteMs),
        totalMs: r1(s.timing.totalMs),
      })),
    };
  }
}

function r1(x: number): number;
function r1(x: number | undefined): number | null;
function r1(x: number | undefined): number | null {
  return x === undefined ? null : Math.round(x * 10) / 10;
}
