// The one door to @opentelemetry/api, an optional peer dependency: loaded with require() so that a
// process without it still imports grpc-kube (and records nothing). Only types cross this file's
// boundary otherwise.

import { createRequire } from 'node:module';
import type * as otel from '@opentelemetry/api';

export type { Meter, MeterProvider, Attributes } from '@opentelemetry/api';

type MetricsApi = typeof otel.metrics;

let loaded: { readonly metrics: MetricsApi; readonly noopMeter: otel.Meter } | null | undefined;

function load(): typeof loaded {
  if (loaded !== undefined) return loaded;
  try {
    const api = createRequire(import.meta.url)('@opentelemetry/api') as typeof otel;
    loaded = { metrics: api.metrics, noopMeter: api.createNoopMeter() };
  } catch {
    loaded = null;
  }
  return loaded;
}

/** The global MeterProvider (the no-op one when none was set), or undefined without the API. */
export function globalMeterProvider(): otel.MeterProvider | undefined {
  return load()?.metrics.getMeterProvider();
}

/** True for the API's no-op meter: instruments from it record nothing, so callers skip the work. */
export function isNoopMeter(meter: otel.Meter): boolean {
  return meter === load()?.noopMeter;
}
