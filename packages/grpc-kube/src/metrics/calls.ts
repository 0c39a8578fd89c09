// gRFC A66 call metrics for grpc-js, which records none: a client interceptor and a server handler
// wrapper. Both check for a MeterProvider once per call and step aside (no wrapping) without one.
//
// What an interceptor can see sets two limits, both written in docs/metrics.md:
// - grpc-js retries below interceptors, so the interceptor sees one call. grpc.client.attempt.started
//   counts every attempt (grpc-js reports how many ran before the last in grpc-previous-rpc-attempts);
//   attempt duration and sizes are recorded once per call, for the attempt that decided it, timed
//   from the call's start (exact for a call that was not retried).
// - Messages reach interceptors and handlers unserialized. grpc-js 1.14 gives each client call its
//   own method definition object, the one its bottom call serializes with: the interceptor wraps
//   that object's requestSerialize / responseDeserialize for the call and counts the bytes grpc-js
//   produces anyway (uncompressed: grpc-js sends uncompressed unless told otherwise). Should a
//   definition be shared between calls (a callInvocationTransformer may do that), its calls size
//   messages by serializing them again, responses only for the `services` passed in the options.
//   The server wrapper serializes again for the count.

import {
  type InterceptingListener,
  type InterceptorOptions,
  type Metadata,
  type NextCall,
  status as Status,
  type StatusObject,
  type Interceptor,
  type ServiceDefinition,
  type UntypedHandleCall,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { InvalidOptionError } from '../errors.js';
import type { Attributes } from './api.js';
import {
  counterCell,
  instruments,
  registerGauges,
  secondsSince,
  type CounterCell,
  type Instruments,
} from './instruments.js';

type MessageContext = Parameters<NextCallResult['sendMessageWithContext']>[0];

const PREVIOUS_ATTEMPTS = 'grpc-previous-rpc-attempts';

export interface ClientCallMetricsOptions {
  /** grpc.target: the channel's target as the user wrote it. Default 'other' (A66's value for unknown). */
  readonly target?: string;
  /**
   * Service definitions of the clients (e.g. `GreeterClient.service`): only used to size responses
   * of calls whose method definition grpc-js shares between calls (see the header).
   */
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

type NextCallResult = ReturnType<NextCall>;
type MethodDefinitionOf = InterceptorOptions['method_definition'];
type Deserialize = (bytes: Buffer) => unknown;

interface MethodAttrs {
  readonly call: Attributes;
  readonly byStatus: Map<number, Attributes>;
  /** grpc.client.attempt.started for (method, target), shared with every interceptor of that target. */
  readonly started: CounterCell;
}

// Marks a method definition whose serializers a call has wrapped. grpc-js builds one definition per
// call; one seen marked is shared, and its calls fall back to serializing messages again to size
// them. (A property, not a WeakSet: a WeakSet entry per call is work for the garbage collector.)
const WRAPPED = Symbol('grpc-kube.callMetrics.wrapped');

/**
 * One call's recorder: it is both the call handed up the interceptor chain and the listener handed
 * down, so a call costs this object and, on the fast path, two serializer wrappers — no requester,
 * no listener builders, no per-message closures.
 */
class MeteredCall {
  private listener: Partial<InterceptingListener> | undefined;
  private readonly startedMs = performance.now();
  private sent = 0;
  private rcvd = 0;
  private previous = 0;
  // The wrapped definition and its own serializers, put back when the call ends.
  private def: MethodDefinitionOf | undefined;
  private serialize: Serialize | undefined;
  private deserialize: Deserialize | undefined;

  constructor(
    private readonly next: NextCallResult,
    private readonly m: Instruments,
    private readonly attrs: MethodAttrs,
    private readonly locality: ((peer: string) => string | undefined) | undefined,
    // Set on the fallback path only: sizes come from serializing messages again.
    private readonly reserialize: { request: Serialize; response: Serialize | undefined } | undefined,
  ) {
    attrs.started.value++;
  }

  /** Counts the bytes grpc-js itself serializes and deserializes, by wrapping the call's own definition. */
  wrap(def: MethodDefinitionOf): void {
    const serialize = def.requestSerialize as Serialize;
    const deserialize = def.responseDeserialize as Deserialize;
    this.def = def;
    this.serialize = serialize;
    this.deserialize = deserialize;
    def.requestSerialize = (value: unknown): Buffer => {
      const bytes = serialize(value);
      this.sent += bytes.length;
      return bytes;
    };
    def.responseDeserialize = (bytes: Buffer): unknown => {
      this.rcvd += bytes.length;
      return deserialize(bytes);
    };
  }

  // The call, as the interceptor above (or the client) sees it.
  start(metadata: Metadata, listener?: Partial<InterceptingListener>): void {
    this.listener = listener;
    this.next.start(metadata, this);
  }
  sendMessageWithContext(context: MessageContext, message: unknown): void {
    if (this.reserialize !== undefined) this.sent += sizeOf(this.reserialize.request, message);
    this.next.sendMessageWithContext(context, message);
  }
  sendMessage(message: unknown): void {
    this.sendMessageWithContext({}, message);
  }
  startRead(): void {
    this.next.startRead();
  }
  halfClose(): void {
    this.next.halfClose();
  }
  cancelWithStatus(code: Status, details: string): void {
    this.next.cancelWithStatus(code, details);
  }
  getPeer(): string {
    return this.next.getPeer();
  }
  getAuthContext(): ReturnType<NextCallResult['getAuthContext']> {
    return this.next.getAuthContext();
  }

  // The listener, as the call below sees it.
  onReceiveMetadata(metadata: Metadata): void {
    this.previousFrom(metadata);
    this.listener?.onReceiveMetadata?.(metadata);
  }
  onReceiveMessage(message: unknown): void {
    if (this.reserialize !== undefined) this.rcvd += sizeOf(this.reserialize.response, message);
    this.listener?.onReceiveMessage?.(message);
  }
  onReceiveStatus(status: StatusObject): void {
    const def = this.def;
    if (def !== undefined) {
      def.requestSerialize = this.serialize as Serialize;
      def.responseDeserialize = this.deserialize as Deserialize;
    }
    const m = this.m;
    const seconds = secondsSince(this.startedMs);
    this.previousFrom(status.metadata);
    this.attrs.started.value += this.previous;
    let withStatus = this.attrs.byStatus.get(status.code);
    if (withStatus === undefined) {
      withStatus = { ...this.attrs.call, 'grpc.status': grpcStatusName(status.code) };
      this.attrs.byStatus.set(status.code, withStatus);
    }
    m['grpc.client.call.duration'].record(seconds, withStatus);
    const where = this.locality?.(this.next.getPeer());
    const attempt = where === undefined ? withStatus : { ...withStatus, 'grpc.lb.locality': where };
    m['grpc.client.attempt.duration'].record(seconds, attempt);
    m['grpc.client.attempt.sent_total_compressed_message_size'].record(this.sent, attempt);
    m['grpc.client.attempt.rcvd_total_compressed_message_size'].record(this.rcvd, attempt);
    this.listener?.onReceiveStatus?.(status);
  }

  private previousFrom(md: Metadata | undefined): void {
    const v = md?.get(PREVIOUS_ATTEMPTS)[0];
    if (v === undefined) return;
    const n = Number(v);
    if (Number.isInteger(n) && n > this.previous) this.previous = n;
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
  const byMethod = new Map<string, MethodAttrs>();
  const attrsFor = (path: string): MethodAttrs => {
    let a = byMethod.get(path);
    if (a === undefined) {
      const call = { 'grpc.method': methodName(path), 'grpc.target': target };
      const started = counterCell('grpc.client.attempt.started', `${call['grpc.method']}\0${target}`, call);
      a = { call, byStatus: new Map(), started };
      byMethod.set(path, a);
    }
    return a;
  };
  const interceptor = (callOptions: InterceptorOptions, nextCall: NextCall): NextCallResult => {
    const m = instruments();
    if (m === undefined) return nextCall(callOptions);
    const def = callOptions.method_definition;
    const marked = def as MethodDefinitionOf & { [WRAPPED]?: true };
    const shared = marked[WRAPPED] === true;
    const call = new MeteredCall(
      nextCall(callOptions),
      m,
      attrsFor(def.path),
      locality,
      shared
        ? { request: def.requestSerialize as Serialize, response: responseSerializers.get(def.path) }
        : undefined,
    );
    if (!shared) {
      marked[WRAPPED] = true;
      call.wrap(def);
    }
    return call;
  };
  // grpc-js types an interceptor as returning its InterceptingCall class, but only ever uses the
  // InterceptingCallInterface that NextCall returns, which MeteredCall implements.
  return interceptor as unknown as Interceptor;
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
