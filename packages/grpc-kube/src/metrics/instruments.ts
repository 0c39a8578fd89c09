// Every instrument grpc-kube records, in one table: gRFC A66's call metrics under the names gRPC
// gives them, and our own as grpc_kube.<component>.<name>. docs/metrics.md lists the same table and
// test/metrics/doc-sync.test.ts keeps the two equal.
//
// Instruments come from the global MeterProvider of @opentelemetry/api. The API has no proxy for
// meters, so a provider set after grpc-kube loaded would be missed by instruments made at load time:
// instruments() looks the provider up on each use (a global read) and builds the table once per
// provider. With no provider set it returns undefined and callers skip recording altogether.

import type { Attributes, Meter, MeterProvider } from './api.js';
import { globalMeterProvider, isNoopMeter } from './api.js';

type Kind = 'counter' | 'updown' | 'histogram' | 'gauge';

export interface InstrumentSpec {
  readonly kind: Kind;
  /** UCUM, as OpenTelemetry's conventions write it: s, By, {call}… */
  readonly unit: string;
  readonly description: string;
  readonly attributes: readonly string[];
  readonly buckets?: readonly number[];
  /**
   * A counter read at collection from cumulative cells (counterCell()) instead of recorded per
   * add: an increment on the hot path instead of an attribute-set lookup in the SDK.
   */
  readonly observed?: true;
}

// gRFC A66's recommended boundaries.
const LATENCY_S = [
  0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01,
  0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65,
  0.8, 1, 2, 5, 10, 20, 50, 100,
];
const SIZE_BY = [
  0, 1024, 2048, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456, 1073741824,
  4294967296,
];

const CLIENT_CALL = ['grpc.method', 'grpc.target'] as const;
const CLIENT_ATTEMPT = ['grpc.method', 'grpc.target', 'grpc.status', 'grpc.lb.locality'] as const;
const SERVER_CALL = ['grpc.method', 'grpc.status'] as const;

export const INSTRUMENTS = {
  // gRFC A66 (and A78's grpc.lb.locality): what grpc-js itself does not record.
  'grpc.client.attempt.started': {
    kind: 'counter',
    observed: true,
    unit: '{attempt}',
    description: 'Call attempts started, retries included',
    attributes: CLIENT_CALL,
  },
  'grpc.client.attempt.duration': {
    kind: 'histogram',
    unit: 's',
    description: 'End-to-end time of a call attempt',
    attributes: CLIENT_ATTEMPT,
    buckets: LATENCY_S,
  },
  'grpc.client.attempt.sent_total_compressed_message_size': {
    kind: 'histogram',
    unit: 'By',
    description: 'Bytes of request messages sent by an attempt',
    attributes: CLIENT_ATTEMPT,
    buckets: SIZE_BY,
  },
  'grpc.client.attempt.rcvd_total_compressed_message_size': {
    kind: 'histogram',
    unit: 'By',
    description: 'Bytes of response messages received by an attempt',
    attributes: CLIENT_ATTEMPT,
    buckets: SIZE_BY,
  },
  'grpc.client.call.duration': {
    kind: 'histogram',
    unit: 's',
    description: 'Time from the start of a call to its status, retries included',
    attributes: ['grpc.method', 'grpc.target', 'grpc.status'],
    buckets: LATENCY_S,
  },
  'grpc.server.call.started': {
    kind: 'counter',
    unit: '{call}',
    description: 'Calls the server started handling',
    attributes: ['grpc.method'],
  },
  'grpc.server.call.duration': {
    kind: 'histogram',
    unit: 's',
    description: 'Time from the handler being called to the status being sent',
    attributes: SERVER_CALL,
    buckets: LATENCY_S,
  },
  'grpc.server.call.sent_total_compressed_message_size': {
    kind: 'histogram',
    unit: 'By',
    description: 'Bytes of response messages sent by a call',
    attributes: SERVER_CALL,
    buckets: SIZE_BY,
  },
  'grpc.server.call.rcvd_total_compressed_message_size': {
    kind: 'histogram',
    unit: 'By',
    description: 'Bytes of request messages received by a call',
    attributes: SERVER_CALL,
    buckets: SIZE_BY,
  },

  // resolver: the Kubernetes endpoint source (one per Service, shared by its channels).
  'grpc_kube.resolver.endpoints': {
    kind: 'gauge',
    unit: '{endpoint}',
    description: 'Endpoints of a target by state',
    attributes: ['grpc_kube.target', 'grpc_kube.endpoint.state'],
  },
  'grpc_kube.resolver.list.started': {
    kind: 'counter',
    unit: '{list}',
    description: 'EndpointSlice lists started (first list and every re-list)',
    attributes: ['grpc_kube.service'],
  },
  'grpc_kube.resolver.list.duration': {
    kind: 'histogram',
    unit: 's',
    description: 'Time a successful list took',
    attributes: ['grpc_kube.service'],
    buckets: LATENCY_S,
  },
  'grpc_kube.resolver.watch.started': {
    kind: 'counter',
    unit: '{watch}',
    description: 'EndpointSlice watches started',
    attributes: ['grpc_kube.service'],
  },
  'grpc_kube.resolver.errors': {
    kind: 'counter',
    unit: '{error}',
    description: 'List and watch failures by grpc-kube error code',
    attributes: ['grpc_kube.service', 'error.type'],
  },
  'grpc_kube.resolver.time_since_last_event': {
    kind: 'gauge',
    unit: 's',
    description: 'Seconds since the last list or watch event (bookmarks excluded)',
    attributes: ['grpc_kube.service'],
  },

  // balancer: grpc_kube_p2c / grpc_kube_ewma, per endpoint.
  'grpc_kube.balancer.picks': {
    kind: 'counter',
    observed: true,
    unit: '{pick}',
    description: 'Calls (attempts) started on an endpoint',
    attributes: ['grpc_kube.policy', 'grpc_kube.endpoint'],
  },
  'grpc_kube.balancer.outstanding': {
    kind: 'gauge',
    unit: '{call}',
    description: 'Calls started on an endpoint and not yet ended',
    attributes: ['grpc_kube.policy', 'grpc_kube.endpoint'],
  },
  'grpc_kube.balancer.ewma_latency': {
    kind: 'gauge',
    unit: 's',
    description: 'Round-trip estimate of an endpoint (peak EWMA; the initial value until calls end)',
    attributes: ['grpc_kube.policy', 'grpc_kube.endpoint'],
  },
  'grpc_kube.balancer.slow_start_weight': {
    kind: 'gauge',
    unit: '1',
    description: 'Slow-start factor of an endpoint, 0 < w <= 1 (1 when warm or slow start is off)',
    attributes: ['grpc_kube.policy', 'grpc_kube.endpoint'],
  },
  'grpc_kube.balancer.panic': {
    kind: 'gauge',
    unit: '1',
    description: '1 while a balancer is in panic mode (picks from every endpoint), else 0',
    attributes: ['grpc_kube.policy'],
  },
  'grpc_kube.balancer.ejections': {
    kind: 'counter',
    unit: '{ejection}',
    description: 'Outlier-detection ejections of an endpoint',
    attributes: ['grpc_kube.policy', 'grpc_kube.endpoint'],
  },

  // server kit.
  'grpc_kube.server.serving': {
    kind: 'gauge',
    unit: '1',
    description: '1 for the phase the server is in (starting, serving, draining, stopped), 0 for the others',
    attributes: ['grpc_kube.server.phase'],
  },
  'grpc_kube.server.drain.phase.duration': {
    kind: 'histogram',
    unit: 's',
    description: 'Time spent in each step of a drain (propagation, goaway)',
    attributes: ['grpc_kube.drain.step'],
    buckets: LATENCY_S,
  },
  'grpc_kube.server.in_flight': {
    kind: 'gauge',
    unit: '{call}',
    description: 'Calls being handled (handlers wrapped by serverCallMetrics)',
    attributes: [],
  },
  'grpc_kube.server.goaways': {
    kind: 'counter',
    unit: '{goaway}',
    description: 'Times the server sent GOAWAY to its connections (a drain)',
    attributes: [],
  },

  // proxy: per route and backend.
  'grpc_kube.proxy.requests': {
    kind: 'counter',
    unit: '{request}',
    description: 'Requests the proxy answered, by route, backend and gRPC status',
    attributes: ['grpc_kube.route', 'grpc_kube.backend', 'grpc.status'],
  },
  'grpc_kube.proxy.request.duration': {
    kind: 'histogram',
    unit: 's',
    description: 'Time from a request arriving to its status, by route and backend',
    attributes: ['grpc_kube.route', 'grpc_kube.backend', 'grpc.status'],
    buckets: LATENCY_S,
  },
  'grpc_kube.proxy.retries': {
    kind: 'counter',
    unit: '{retry}',
    description: 'Requests the proxy sent again to another backend',
    attributes: ['grpc_kube.route'],
  },
  'grpc_kube.proxy.ejections': {
    kind: 'counter',
    unit: '{ejection}',
    description: 'Ejections of a backend after a failed connect',
    attributes: ['grpc_kube.backend'],
  },

  // xDS control plane.
  'grpc_kube.xds.clients': {
    kind: 'gauge',
    unit: '{client}',
    description: 'ADS streams open',
    attributes: [],
  },
  'grpc_kube.xds.acks': {
    kind: 'counter',
    unit: '{response}',
    description: 'Responses a client ACKed, by resource type and node',
    attributes: ['xds.type', 'xds.node'],
  },
  'grpc_kube.xds.nacks': {
    kind: 'counter',
    unit: '{response}',
    description: 'Responses a client NACKed, by resource type and node',
    attributes: ['xds.type', 'xds.node'],
  },
  'grpc_kube.xds.version': {
    kind: 'gauge',
    unit: '1',
    description: 'Version a node last ACKed, by resource type (versions are numbers)',
    attributes: ['xds.type', 'xds.node'],
  },
  'grpc_kube.xds.push.duration': {
    kind: 'histogram',
    unit: 's',
    description: 'Time from sending a response to its ACK or NACK',
    attributes: ['xds.type'],
    buckets: LATENCY_S,
  },
} as const satisfies Record<string, InstrumentSpec>;

export type InstrumentName = keyof typeof INSTRUMENTS;
type NamesOf<K extends Kind> = {
  [N in InstrumentName]: (typeof INSTRUMENTS)[N]['kind'] extends K ? N : never;
}[InstrumentName];
/** Counters kept in cells and read at collection (see InstrumentSpec.observed). */
export type ObservedName = {
  [N in InstrumentName]: (typeof INSTRUMENTS)[N] extends { readonly observed: true } ? N : never;
}[InstrumentName];
export type CounterName = Exclude<NamesOf<'counter' | 'updown'>, ObservedName>;
export type HistogramName = NamesOf<'histogram'>;
export type GaugeName = NamesOf<'gauge'>;

interface Adder {
  add(value: number, attributes?: Attributes): void;
}
interface Recorder {
  record(value: number, attributes?: Attributes): void;
}

/** Synchronous instruments of one MeterProvider, by name. */
export type Instruments = { readonly [N in CounterName]: Adder } & {
  readonly [N in HistogramName]: Recorder;
};

export type Observe = (name: GaugeName, value: number, attributes: Attributes) => void;
/** Called at each collection to report the current gauge values of one live component. */
export type GaugeSource = (observe: Observe) => void;

const gaugeSources = new Set<GaugeSource>();

/**
 * Report gauges from `source` at every collection until the returned function is called. Costs a
 * set entry; the source runs only when a reader collects. Every source is read by the table of the
 * provider current at the last instruments() call, so a provider set after a component was created
 * shows its gauges from the first value anything records.
 */
export function registerGauges(source: GaugeSource): () => void {
  gaugeSources.add(source);
  // Gauges are read by the callback of the current provider's table: make sure it exists.
  instruments();
  return () => {
    gaugeSources.delete(source);
  };
}

/** One gauge value as a source reported it. */
export interface GaugePoint {
  readonly name: GaugeName;
  readonly value: number;
  readonly attributes: Attributes;
}

/**
 * The current values of the gauges named (all when omitted), read from the same sources a
 * MeterProvider's collection reads — with or without a provider set. The lab samples per-endpoint
 * balancer state this way during a run without putting recording on the RPC path.
 */
export function readGauges(names?: ReadonlySet<GaugeName>): GaugePoint[] {
  const out: GaugePoint[] = [];
  const observe: Observe = (name, value, attributes) => {
    if (names === undefined || names.has(name)) out.push({ name, value, attributes });
  };
  for (const source of gaugeSources) {
    try {
      source(observe);
    } catch {
      // As in a collection: one broken source must not stop the others.
    }
  }
  return out;
}

/** One cumulative count of an observed counter for one attribute set. */
export interface CounterCell {
  value: number;
}

const cells = new Map<
  ObservedName,
  Map<string, { readonly cell: CounterCell; readonly attributes: Attributes }>
>();

/**
 * The cell of observed counter `name` for the attribute set `key` names (the same key must always
 * come with the same attributes). Every caller with that key shares the cell, so counts from several
 * channels add up as a recorded counter's would, and never go down. Callers keep the cell and add to
 * `value` only while instruments() is defined. Cells live as long as the process, as the SDK keeps a
 * recorded counter's attribute sets.
 */
export function counterCell(name: ObservedName, key: string, attributes: Attributes): CounterCell {
  let byKey = cells.get(name);
  if (byKey === undefined) cells.set(name, (byKey = new Map()));
  let entry = byKey.get(key);
  if (entry === undefined) byKey.set(key, (entry = { cell: { value: 0 }, attributes }));
  return entry.cell;
}

let lastProvider: MeterProvider | undefined;
let lastTable: Instruments | undefined;
// One table per provider, so a provider set again (after metrics.disable()) is not given a second
// set of instruments and gauge callbacks.
const tables = new WeakMap<MeterProvider, Instruments | null>();

/** The instruments of the global MeterProvider, or undefined when none is set (record nothing). */
export function instruments(): Instruments | undefined {
  const provider = globalMeterProvider();
  if (provider === lastProvider) return lastTable;
  lastProvider = provider;
  if (provider === undefined) {
    lastTable = undefined;
    return undefined;
  }
  let table = tables.get(provider);
  if (table === undefined) {
    table = build(provider.getMeter('grpc-kube')) ?? null;
    tables.set(provider, table);
  }
  lastTable = table ?? undefined;
  return lastTable;
}

function build(meter: Meter): Instruments | undefined {
  if (isNoopMeter(meter)) return undefined;
  const table: Record<string, Adder | Recorder> = {};
  const gauges = new Map<GaugeName, ReturnType<Meter['createObservableGauge']>>();
  const observed = new Map<ObservedName, ReturnType<Meter['createObservableCounter']>>();
  // A provider's observed counters start from zero, as its recorded counters do: counts made under
  // an earlier provider are its baseline.
  const baseline = new Map<CounterCell, number>();
  for (const byKey of cells.values()) for (const { cell } of byKey.values()) baseline.set(cell, cell.value);
  for (const [name, spec] of Object.entries(INSTRUMENTS) as Array<[InstrumentName, InstrumentSpec]>) {
    const opts = { unit: spec.unit, description: spec.description };
    if (spec.observed === true) observed.set(name as ObservedName, meter.createObservableCounter(name, opts));
    else if (spec.kind === 'counter') table[name] = meter.createCounter(name, opts);
    else if (spec.kind === 'updown') table[name] = meter.createUpDownCounter(name, opts);
    else if (spec.kind === 'histogram') {
      const advice = spec.buckets ? { explicitBucketBoundaries: [...spec.buckets] } : undefined;
      table[name] = meter.createHistogram(name, { ...opts, ...(advice ? { advice } : {}) });
    } else gauges.set(name as GaugeName, meter.createObservableGauge(name, opts));
  }
  meter.addBatchObservableCallback(
    (result) => {
      const observe: Observe = (name, value, attributes) => {
        const g = gauges.get(name);
        if (g !== undefined) result.observe(g, value, attributes);
      };
      for (const source of gaugeSources) {
        try {
          source(observe);
        } catch {
          // One broken source must not stop the others' collection.
        }
      }
      for (const [name, counter] of observed) {
        for (const { cell, attributes } of cells.get(name)?.values() ?? []) {
          result.observe(counter, cell.value - (baseline.get(cell) ?? 0), attributes);
        }
      }
    },
    [...gauges.values(), ...observed.values()],
  );
  return table as unknown as Instruments;
}

/** Seconds from a performance.now() stamp, the unit OpenTelemetry's conventions ask for. */
export function secondsSince(startMs: number): number {
  return (performance.now() - startMs) / 1000;
}
