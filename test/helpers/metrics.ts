// An in-memory OpenTelemetry MeterProvider set as the global one, read on demand: tests record
// through grpc-kube's real instruments and assert the series a collection returns.

import { metrics } from '@opentelemetry/api';
import { MeterProvider, MetricReader, type DataPoint, type Histogram } from '@opentelemetry/sdk-metrics';

class ManualReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** One series: its attributes and value (a number, or a histogram's count and sum). */
export interface Point {
  readonly attributes: Readonly<Record<string, unknown>>;
  readonly value: number;
  readonly count?: number;
  readonly sum?: number;
  readonly min?: number;
  readonly max?: number;
}

export interface TestMetrics {
  readonly provider: MeterProvider;
  /** Every instrument's points, by instrument name. */
  collect(): Promise<Map<string, Point[]>>;
  close(): Promise<void>;
}

export function installTestMetrics(): TestMetrics {
  const reader = new ManualReader();
  const provider = new MeterProvider({ readers: [reader] });
  metrics.disable();
  metrics.setGlobalMeterProvider(provider);
  return {
    provider,
    async collect() {
      const { resourceMetrics } = await reader.collect();
      const out = new Map<string, Point[]>();
      for (const scope of resourceMetrics.scopeMetrics) {
        for (const metric of scope.metrics) {
          const points = (metric.dataPoints as DataPoint<number | Histogram>[]).map((p) =>
            typeof p.value === 'number'
              ? { attributes: p.attributes, value: p.value }
              : {
                  attributes: p.attributes,
                  value: p.value.count,
                  count: p.value.count,
                  sum: p.value.sum ?? 0,
                  ...(p.value.min === undefined ? {} : { min: p.value.min }),
                  ...(p.value.max === undefined ? {} : { max: p.value.max }),
                },
          );
          out.set(metric.descriptor.name, points);
        }
      }
      return out;
    },
    async close() {
      metrics.disable();
      await provider.shutdown();
    },
  };
}

/** The points of `name` whose attributes include all of `match`. */
export function pointsOf(
  all: Map<string, Point[]>,
  name: string,
  match: Readonly<Record<string, unknown>> = {},
): Point[] {
  return (all.get(name) ?? []).filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v));
}

/** Sum of the values (histograms: counts) of the matching points. */
export function total(
  all: Map<string, Point[]>,
  name: string,
  match: Readonly<Record<string, unknown>> = {},
): number {
  return pointsOf(all, name, match).reduce((n, p) => n + p.value, 0);
}
