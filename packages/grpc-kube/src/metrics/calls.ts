// gRFC A66 call metrics for grpc-js, which records none: a client interceptor and a server handler
// wrapper. Both check for a MeterProvider once per call and step aside (no wrapping) without one.
//
// What an interceptor can see sets two limits, both written in docs/metrics.md:
// - grpc-js retries below interceptors, so the interceptor sees one call. grpc.client.attempt.started
//   counts every attempt (grpc-js reports how many ran before the last in grpc-previous-rpc-attempts);
//   attempt duration and sizes are recorded once per call, for the attempt that decided it, timed
//   from the call's start (exact for a call that was not retried).
// - Messages reach interceptors and handlers unserialized; sizes are those of the serialized message
//   (grpc-js sends uncompressed unless told otherwise), serialized again for the count. A client's
//   method definition has no response serializer: pass the service definitions to size responses.

import {
  InterceptingCall,
  type Metadata,
  status as Status,
  type Interceptor,
  type ServiceDefinition,
  type UntypedHandleCall,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { InvalidOptionError } from '../errors.js';
import type { Attributes } from './api.js';
import { instruments, registerGauges, secondsSince } from './instruments.js';

const PREVIOUS_ATTEMPTS = 'grpc-previous-rpc-attempts';

export interface ClientCallMetricsOptions {
  /** grpc.target: the channel's target as the user wrote it. Default 'other' (A66's value for unknown). */
  readonly target?: string;
  /** Service definitions of the clients (e.g. `GreeterClient.service`), to size responses. */
  readonly services?: readonly ServiceDefinition[];
  /** grpc.lb.locality (gRFC A78) of the peer address that served the call; omitted when undefined. */
  readonly locality?: (peer: string) => string | undefined;
}

const statusName: Record<number, string> = Object.fromEntries(
  Object.entries(Status)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => [v, k]),
);

/** A66's grpc.status value: the status code's name, "OK", "UNAVAILABLE"… */
export function grpcStatusName(code: number): string {
  return statusName[code] ?? String(code);
}

/** A66's grpc.method: the full method name without the leading slash, "pkg.Service/Method". */
function methodName(path: string): string {
  return path.startsWith('/') ? path.slice(1) : path;
}

type Serialize = (value: unknown) => Buffer;

function sizeOf(serialize: Serialize | undefined, message: unknown): number {
  // grpc-js hands a unary call's listener null when the status came without a message.
  if (serialize === undefined || message === null) return 0;
  try {
    return serialize(message).length;
  } catch {
    return 0;
  }
}

/**
 * A grpc-js client interceptor recording gRFC A66's client metrics: pass it in the client's
 * `interceptors` option (or `clientDefaults({ callMetrics })`).
 */
export function clientCallMetrics(options: ClientCallMetricsOptions = {}): Interceptor {
  const target = options.target ?? 'other';
  if (typeof target !== 'string' || target === '')
    throw new InvalidOptionError('callMetrics.target', 'must be a non-empty string');
  const responseSerializers = new Map<string, Serialize>();
  for (const service of options.services ?? []) {
    for (const def of Object.values(service)) {
      responseSerializers.set(def.path, def.responseSerialize as Serialize);
    }
  }
  const locality = options.locality;
  // Attribute objects per method and per (method, status), made once: calls only look them up.
  const byMethod = new Map<string, { call: Attributes; byStatus: Map<number, Attributes> }>();
  const attrsFor = (path: string): { call: Attributes; byStatus: Map<number, Attributes> } => {
    let a = byMethod.get(path);
    if (a === undefined) {
      a = { call: { 'grpc.method': methodName(path), 'grpc.target': target }, byStatus: new Map() };
      byMethod.set(path, a);
    }
    return a;
  };
  return (callOptions, nextCall) => {
    const m = instruments();
    if (m === undefined) return new InterceptingCall(nextCall(callOptions));
    const def = callOptions.method_definition;
    const attrs = attrsFor(def.path);
    const callAttrs = attrs.call;
    const requestSerialize = def.requestSerialize as Serialize;
    const responseSerialize = responseSerializers.get(def.path);
    m['grpc.client.attempt.started'].add(1, callAttrs);
    const startedMs = performance.now();
    let sent = 0;
    let rcvd = 0;
    let previous = 0;
    const previousFrom = (md: Metadata | undefined): void => {
      const n = Number(md?.get(PREVIOUS_ATTEMPTS)[0] ?? 0);
      if (Number.isInteger(n) && n > previous) previous = n;
    };
    const call: InterceptingCall = new InterceptingCall(nextCall(callOptions), {
      start(metadata, _listener, next) {
        next(metadata, {
          onReceiveMetadata(md, nextMetadata) {
            previousFrom(md);
            nextMetadata(md);
          },
          onReceiveMessage(message, nextMessage) {
            rcvd += sizeOf(responseSerialize, message);
            nextMessage(message);
          },
          onReceiveStatus(status, nextStatus) {
            const seconds = secondsSince(startedMs);
            previousFrom(status.metadata);
            if (previous > 0) m['grpc.client.attempt.started'].add(previous, callAttrs);
            let withStatus = attrs.byStatus.get(status.code);
            if (withStatus === undefined) {
              withStatus = { ...callAttrs, 'grpc.status': grpcStatusName(status.code) };
              attrs.byStatus.set(status.code, withStatus);
            }
            m['grpc.client.call.duration'].record(seconds, withStatus);
            const where = locality?.(call.getPeer());
            const attempt = where === undefined ? withStatus : { ...withStatus, 'grpc.lb.locality': where };
            m['grpc.client.attempt.duration'].record(seconds, attempt);
            m['grpc.client.attempt.sent_total_compressed_message_size'].record(sent, attempt);
            m['grpc.client.attempt.rcvd_total_compressed_message_size'].record(rcvd, attempt);
            nextStatus(status);
          },
        });
      },
      sendMessage(message, next) {
        sent += sizeOf(requestSerialize, message);
        next(message);
      },
    });
    return call;
  };
}

let serverInFlight = 0;
let unregisterInFlight: (() => void) | undefined;

function countInFlight(delta: number): void {
  serverInFlight += delta;
  unregisterInFlight ??= registerGauges((observe) =>
    observe('grpc_kube.server.in_flight', serverInFlight, {}),
  );
}

interface StreamLike {
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  end?: (...args: unknown[]) => unknown;
  write?: (...args: unknown[]) => boolean;
  push?: (chunk: unknown, ...rest: unknown[]) => boolean;
}

type Callback = (error: { code?: number } | null | undefined, value?: unknown, ...rest: unknown[]) => void;

/**
 * The service implementation with every handler wrapped to record gRFC A66's server metrics:
 * `server.addService(def, serverCallMetrics(def, impl))`. Without a MeterProvider the handlers run
 * unwrapped but for one check per call.
 */
export function serverCallMetrics(
  service: ServiceDefinition,
  implementation: UntypedServiceImplementation,
): UntypedServiceImplementation {
  const wrapped: UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(implementation)) {
    const def = service[name];
    if (def === undefined || typeof handler !== 'function') {
      wrapped[name] = handler;
      continue;
    }
    const method = methodName(def.path);
    const serializeResponse = def.responseSerialize as Serialize;
    const serializeRequest = def.requestSerialize as Serialize;
    const fn = handler as (call: StreamLike & { request?: unknown }, callback?: Callback) => void;
    const wrappedHandler = (call: StreamLike & { request?: unknown }, callback?: Callback): void => {
      const m = instruments();
      if (m === undefined) {
        fn(call, callback);
        return;
      }
      const attrs: Attributes = { 'grpc.method': method };
      m['grpc.server.call.started'].add(1, attrs);
      countInFlight(1);
      const startedMs = performance.now();
      let sent = 0;
      let rcvd = def.requestStream ? 0 : sizeOf(serializeRequest, call.request);
      let done = false;
      const finish = (code: number): void => {
        if (done) return;
        done = true;
        countInFlight(-1);
        const a: Attributes = { ...attrs, 'grpc.status': grpcStatusName(code) };
        m['grpc.server.call.duration'].record(secondsSince(startedMs), a);
        m['grpc.server.call.sent_total_compressed_message_size'].record(sent, a);
        m['grpc.server.call.rcvd_total_compressed_message_size'].record(rcvd, a);
      };
      call.on('cancelled', () => finish(Status.CANCELLED));
      if (def.requestStream && call.push !== undefined) {
        const push = call.push.bind(call);
        call.push = (chunk, ...rest) => {
          if (chunk !== null) rcvd += sizeOf(serializeRequest, chunk);
          return push(chunk, ...rest);
        };
      }
      if (!def.responseStream) {
        const cb = callback as Callback;
        fn(call, (error, value, ...rest) => {
          if (error) finish(error.code ?? Status.UNKNOWN);
          else {
            sent += sizeOf(serializeResponse, value);
            finish(Status.OK);
          }
          cb(error, value, ...rest);
        });
        return;
      }
      let failed: number | undefined;
      call.on('error', (err) => {
        failed = (err as { code?: number } | null)?.code ?? Status.UNKNOWN;
      });
      if (call.write !== undefined) {
        const write = call.write.bind(call);
        call.write = (chunk, ...rest) => {
          sent += sizeOf(serializeResponse, chunk);
          return write(chunk, ...rest);
        };
      }
      if (call.end !== undefined) {
        const end = call.end.bind(call);
        call.end = (...args) => {
          // grpc-js's own 'error' listener calls end() before ours runs: read the code a tick later.
          queueMicrotask(() => finish(failed ?? Status.OK));
          return end(...args);
        };
      }
      fn(call);
    };
    wrapped[name] = wrappedHandler as unknown as UntypedHandleCall;
  }
  return wrapped;
}
