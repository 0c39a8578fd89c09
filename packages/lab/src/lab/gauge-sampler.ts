// Samples the per-endpoint balancer gauges (grpc_kube.balancer.outstanding and .ewma_latency, see
// docs/metrics.md) every `everyMs` during a lab run, from the same sources a MeterProvider reads:
// the report draws them per endpoint over time (src/lab/metrics.ts endpointSeries). Reading the
// gauges needs no provider, so a run without --metrics pays one timer, not recording on every RPC.

import { readGauges, type GaugeName } from 'grpc-kube/internal/metrics/instruments.js';
import type { GaugeSample } from './metrics.js';

const NAMES: ReadonlySet<GaugeName> = new Set([
  'grpc_kube.balancer.outstanding',
  'grpc_kube.balancer.ewma_latency',
]);

export class GaugeSampler {
  private readonly samples: GaugeSample[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly everyMs: number;
  private readonly clock: () => number;
  private originMs = 0;

  constructor(opts: { everyMs?: number; clock?: () => number } = {}) {
    this.everyMs = opts.everyMs ?? 250;
    this.clock = opts.clock ?? (() => performance.now());
  }

  /** Start sampling now; `originMs` (on the clock) is time zero of the samples. */
  start(originMs = this.clock()): void {
    if (this.timer !== undefined) return;
    this.originMs = originMs;
    this.sample();
    this.timer = setInterval(() => this.sample(), this.everyMs);
    this.timer.unref();
  }

  /** One sample now (the timer calls this; tests call it directly). */
  sample(): void {
    const points = readGauges(NAMES).map((p) => ({
      name: p.name,
      value: p.value,
      attributes: { ...p.attributes },
    }));
    this.samples.push({ tMs: this.clock() - this.originMs, points });
  }

  /** Stop and return every sample taken. Idempotent. */
  stop(): GaugeSample[] {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    return [...this.samples];
  }
}
