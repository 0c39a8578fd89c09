// Safe grpc-js channel options for clients of Kubernetes services: a gRFC A6 retry policy for
// UNAVAILABLE (the status a call gets when its pod went away before answering), keepalive that
// notices a dead pod in seconds rather than minutes, no HTTP proxy (http_proxy would bypass the
// kubernetes: resolver), and the load-balancing policy of your choice, all in one ChannelOptions.
//
// grpc-js retries an attempt only while the call is not committed: no response headers or message
// received yet, and the request still within the retry buffer. So a retry never repeats work the
// server has started answering; UNAVAILABLE from a pod that is shutting down, a refused stream, or a
// connection that died before the response are exactly the cases that qualify.

import type { ChannelOptions, Interceptor } from '@grpc/grpc-js';
import { InterceptingCall, status as Status } from '@grpc/grpc-js';
import { InvalidOptionError } from '../errors.js';
import { DEADLINE_METADATA_KEY } from '../balancer/endpoint-balancer.js';
import { CALL_ID_METADATA_KEY } from '../balancer/attempts.js';
import {
  grpcOutlierDetectionEntry,
  KUBE_OUTLIER_DETECTION,
  outlierDetectionToJson,
  parseOutlierDetection,
  type OutlierDetectionJson,
} from '../balancer/outlier.js';
import { clientCallMetrics, type ClientCallMetricsOptions } from '../metrics/calls.js';

export type StatusCodeName = keyof typeof Status;

export interface RetryOptions {
  /** Attempts including the first; grpc-js caps this at 5. Default 5. */
  readonly maxAttempts?: number;
  /** Default 100 ms; each retry waits a random time in [0, backoff). */
  readonly initialBackoffMs?: number;
  /** Default 1000 ms. */
  readonly maxBackoffMs?: number;
  /** Default 2. */
  readonly backoffMultiplier?: number;
  /** Default ['UNAVAILABLE']: safe for every method, because the server never processed the call. */
  readonly retryableStatusCodes?: readonly StatusCodeName[];
}

export interface MethodName {
  /** Fully qualified service, e.g. `helloworld.Greeter`. */
  readonly service: string;
  /** Omit to mean every method of the service. */
  readonly method?: string;
}

export interface ClientDefaultsOptions {
  /** Policy name for `loadBalancingConfig`: round_robin (default), pick_first, grpc_kube_p2c, grpc_kube_ewma… */
  readonly lbPolicy?: string;
  /** The policy's own config object (the inner part of `{ "<policy>": {...} }`). */
  readonly lbConfig?: Readonly<Record<string, unknown>>;
  /** Retry policy for every method; `false` turns retries off. */
  readonly retry?: RetryOptions | false;
  /**
   * Methods that are safe to run twice: they also retry `idempotentRetryableStatusCodes`, which
   * may arrive after the server did some work.
   */
  readonly idempotentMethods?: readonly MethodName[];
  /** Default ['UNAVAILABLE', 'RESOURCE_EXHAUSTED', 'ABORTED']. */
  readonly idempotentRetryableStatusCodes?: readonly StatusCodeName[];
  /**
   * Hedge the idempotent methods instead of retrying them (gRFC A6 hedgingPolicy): a further attempt
   * goes out every `delayMs` while none has answered, up to `maxAttempts` in all; the first answer
   * wins and the others are cancelled. The idempotent status codes start the next attempt at once.
   * Default off.
   */
  readonly hedging?: { readonly delayMs: number; readonly maxAttempts?: number } | false;
  /**
   * gRFC A6 retry throttling for the channel; `false` turns it off. Default maxTokens 20, tokenRatio
   * 0.2: every failed attempt costs a token, every success earns 0.2, retries stop at half the
   * bucket, so over any run retries <= 0.2 × successful RPCs + 10. A full outage gets 8 retries in
   * all, then none until calls succeed again; a pod kill may fail ~10 calls in flight on one channel
   * at once and still have them all retried.
   */
  readonly retryThrottling?: { readonly maxTokens: number; readonly tokenRatio: number } | false;
  /**
   * gRFC A50 outlier detection. `true` = the Kubernetes defaults (KUBE_OUTLIER_DETECTION), or the
   * fields to set. grpc_kube_* policies run it themselves; any other policy is wrapped in grpc-js's
   * outlier_detection. Default off.
   */
  readonly outlierDetection?: boolean | OutlierDetectionJson;
  /**
   * Tell the balancer each call's deadline and identity (as call metadata from an interceptor;
   * grpc-js's pick arguments carry neither), so grpc_kube_ewma skips endpoints predicted to miss the
   * deadline, and a retry or hedge goes (in grpc_kube_p2c and grpc_kube_ewma) to an endpoint that no
   * earlier attempt of the call used. Adds `interceptors`, which only a Client constructor reads.
   * Default true.
   */
  readonly deadlineAwarePicks?: boolean;
  /**
   * Record gRFC A66 call metrics (docs/metrics.md) with clientCallMetrics(): `true`, or its options
   * (`target` for grpc.target). Adds `interceptors`, which only a Client constructor reads. Default off.
   */
  readonly callMetrics?: boolean | ClientCallMetricsOptions;
  /** Ping period on a connection. Default 10 000 ms. */
  readonly keepaliveTimeMs?: number;
  /** How long to wait for the ping ack before declaring the connection dead. Default 5 000 ms. */
  readonly keepaliveTimeoutMs?: number;
  /** Ping even with no call in flight, so an idle channel learns of a dead pod too. Default true. */
  readonly keepalivePermitWithoutCalls?: boolean;
  /** Extra options merged last (they win). */
  readonly extra?: ChannelOptions;
}

export const CLIENT_DEFAULTS = Object.freeze({
  lbPolicy: 'round_robin',
  maxAttempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 1000,
  backoffMultiplier: 2,
  retryableStatusCodes: Object.freeze(['UNAVAILABLE'] as StatusCodeName[]),
  idempotentRetryableStatusCodes: Object.freeze([
    'UNAVAILABLE',
    'RESOURCE_EXHAUSTED',
    'ABORTED',
  ] as StatusCodeName[]),
  keepaliveTimeMs: 10_000,
  keepaliveTimeoutMs: 5_000,
  retryThrottling: Object.freeze({ maxTokens: 20, tokenRatio: 0.2 }),
});

interface JsonHedgingPolicy {
  maxAttempts: number;
  hedgingDelay: string;
  nonFatalStatusCodes: string[];
}

interface JsonRetryPolicy {
  maxAttempts: number;
  initialBackoff: string;
  maxBackoff: string;
  backoffMultiplier: number;
  retryableStatusCodes: string[];
}

export interface ServiceConfigJson {
  loadBalancingConfig: Array<Record<string, unknown>>;
  retryThrottling?: { maxTokens: number; tokenRatio: number };
  methodConfig: Array<{
    name: Array<{ service?: string; method?: string }>;
    retryPolicy?: JsonRetryPolicy;
    hedgingPolicy?: JsonHedgingPolicy;
  }>;
}

/** The service config clientDefaults() puts in `grpc.service_config`, as an object. */
export function defaultServiceConfig(opts: ClientDefaultsOptions = {}): ServiceConfigJson {
  const lbPolicy = opts.lbPolicy ?? CLIENT_DEFAULTS.lbPolicy;
  if (typeof lbPolicy !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(lbPolicy)) {
    throw new InvalidOptionError(
      'lbPolicy',
      `must be a policy name such as round_robin, got ${String(lbPolicy)}`,
    );
  }
  if (
    opts.lbConfig !== undefined &&
    (typeof opts.lbConfig !== 'object' || opts.lbConfig === null || Array.isArray(opts.lbConfig))
  ) {
    throw new InvalidOptionError('lbConfig', 'must be a JSON object');
  }
  const config: ServiceConfigJson = {
    loadBalancingConfig: [lbEntry(lbPolicy, { ...(opts.lbConfig ?? {}) }, opts.outlierDetection)],
    methodConfig: [],
  };
  if (opts.retry === false) {
    if (opts.idempotentMethods !== undefined && opts.idempotentMethods.length > 0) {
      throw new InvalidOptionError('idempotentMethods', 'needs retries; do not set retry: false with it');
    }
    return config;
  }
  const r = opts.retry ?? {};
  const maxAttempts = integer(r.maxAttempts ?? CLIENT_DEFAULTS.maxAttempts, 'retry.maxAttempts', 2, 5);
  const initialBackoffMs = positive(
    r.initialBackoffMs ?? CLIENT_DEFAULTS.initialBackoffMs,
    'retry.initialBackoffMs',
  );
  const maxBackoffMs = positive(r.maxBackoffMs ?? CLIENT_DEFAULTS.maxBackoffMs, 'retry.maxBackoffMs');
  if (maxBackoffMs < initialBackoffMs) {
    throw new InvalidOptionError(
      'retry.maxBackoffMs',
      `must be >= retry.initialBackoffMs (${initialBackoffMs})`,
    );
  }
  const backoffMultiplier = positive(
    r.backoffMultiplier ?? CLIENT_DEFAULTS.backoffMultiplier,
    'retry.backoffMultiplier',
  );
  const base = {
    maxAttempts,
    initialBackoff: seconds(initialBackoffMs),
    maxBackoff: seconds(maxBackoffMs),
    backoffMultiplier,
  };
  const codes = statusCodes(
    r.retryableStatusCodes ?? CLIENT_DEFAULTS.retryableStatusCodes,
    'retry.retryableStatusCodes',
  );
  config.methodConfig.push({ name: [{}], retryPolicy: { ...base, retryableStatusCodes: codes } });
  const throttling = opts.retryThrottling ?? CLIENT_DEFAULTS.retryThrottling;
  if (throttling !== false) config.retryThrottling = retryThrottling(throttling);
  const idem = opts.idempotentMethods ?? [];
  if (idem.length > 0) {
    const idemCodes = statusCodes(
      opts.idempotentRetryableStatusCodes ?? CLIENT_DEFAULTS.idempotentRetryableStatusCodes,
      'idempotentRetryableStatusCodes',
    );
    const names = idem.map((m, i) => {
      const field = `idempotentMethods[${i}]`;
      if (typeof m?.service !== 'string' || m.service === '')
        throw new InvalidOptionError(`${field}.service`, 'must be a non-empty string');
      if (m.method !== undefined && (typeof m.method !== 'string' || m.method === '')) {
        throw new InvalidOptionError(`${field}.method`, 'must be a non-empty string when set');
      }
      return m.method === undefined ? { service: m.service } : { service: m.service, method: m.method };
    });
    const seen = new Set<string>();
    for (const n of names) {
      const key = `${n.service}/${n.method ?? ''}`;
      if (seen.has(key)) throw new InvalidOptionError('idempotentMethods', `lists ${key} twice`);
      seen.add(key);
    }
    const hedging = opts.hedging ?? false;
    if (hedging === false) {
      config.methodConfig.push({ name: names, retryPolicy: { ...base, retryableStatusCodes: idemCodes } });
    } else {
      if (typeof hedging !== 'object' || hedging === null)
        throw new InvalidOptionError('hedging', 'must be { delayMs, maxAttempts? } or false');
      const hedgingPolicy = {
        maxAttempts: integer(hedging.maxAttempts ?? 2, 'hedging.maxAttempts', 2, 5),
        hedgingDelay: seconds(positive(hedging.delayMs, 'hedging.delayMs')),
        nonFatalStatusCodes: idemCodes,
      };
      config.methodConfig.push({ name: names, hedgingPolicy });
    }
  }
  return config;
}

function lbEntry(
  policy: string,
  lbConfig: Record<string, unknown>,
  od: ClientDefaultsOptions['outlierDetection'],
): Record<string, unknown> {
  if (od === undefined || od === false) return { [policy]: lbConfig };
  if (od !== true && (typeof od !== 'object' || od === null)) {
    throw new InvalidOptionError('outlierDetection', 'must be true, false or an object of A50 fields');
  }
  const parsed = od === true ? KUBE_OUTLIER_DETECTION : parseOutlierDetection(od, 'outlierDetection');
  if (policy.startsWith('grpc_kube_')) {
    return { [policy]: { ...lbConfig, outlierDetection: outlierDetectionToJson(parsed) } };
  }
  if (policy === 'pick_first') {
    throw new InvalidOptionError(
      'outlierDetection',
      'needs a policy that balances (pick_first sends every call to one endpoint)',
    );
  }
  return grpcOutlierDetectionEntry(parsed, { [policy]: lbConfig });
}

function retryThrottling(t: { readonly maxTokens: number; readonly tokenRatio: number }): {
  maxTokens: number;
  tokenRatio: number;
} {
  if (typeof t !== 'object' || t === null) {
    throw new InvalidOptionError('retryThrottling', 'must be { maxTokens, tokenRatio } or false');
  }
  // A6's bounds: maxTokens in (0, 1000], tokenRatio > 0 with at most 3 decimals (grpc-js rounds).
  const maxTokens = positive(t.maxTokens, 'retryThrottling.maxTokens');
  if (maxTokens > 1000)
    throw new InvalidOptionError('retryThrottling.maxTokens', `must be <= 1000, got ${maxTokens}`);
  const tokenRatio = positive(t.tokenRatio, 'retryThrottling.tokenRatio');
  if (Math.round(tokenRatio * 1000) !== tokenRatio * 1000) {
    throw new InvalidOptionError(
      'retryThrottling.tokenRatio',
      `must have at most 3 decimals, got ${tokenRatio}`,
    );
  }
  return { maxTokens, tokenRatio };
}

let callCount = 0;

/**
 * Puts the call's absolute deadline (epoch ms, when it has one) in DEADLINE_METADATA_KEY and a name
 * for the call, unique in the process, in CALL_ID_METADATA_KEY, where grpc-kube's pickers read them.
 * Interceptors run once per call, before grpc-js's retries and hedges, so every attempt carries both.
 */
export const callInfoInterceptor: Interceptor = (options, nextCall) =>
  new InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      const d = options.deadline;
      const ms = d instanceof Date ? d.getTime() : d;
      if (typeof ms === 'number' && Number.isFinite(ms))
        metadata.set(DEADLINE_METADATA_KEY, String(Math.round(ms)));
      metadata.set(CALL_ID_METADATA_KEY, (++callCount).toString(36));
      next(metadata, listener);
    },
  });

/** grpc-js channel options with the safe defaults; pass them to a client constructor or `new Channel`. */
export function clientDefaults(opts: ClientDefaultsOptions = {}): ChannelOptions {
  const keepaliveTimeMs = integer(
    opts.keepaliveTimeMs ?? CLIENT_DEFAULTS.keepaliveTimeMs,
    'keepaliveTimeMs',
    1,
    2 ** 31 - 1,
  );
  const keepaliveTimeoutMs = integer(
    opts.keepaliveTimeoutMs ?? CLIENT_DEFAULTS.keepaliveTimeoutMs,
    'keepaliveTimeoutMs',
    1,
    2 ** 31 - 1,
  );
  const permit = opts.keepalivePermitWithoutCalls ?? true;
  if (typeof permit !== 'boolean')
    throw new InvalidOptionError('keepalivePermitWithoutCalls', 'must be a boolean');
  const deadlineAware = opts.deadlineAwarePicks ?? true;
  if (typeof deadlineAware !== 'boolean')
    throw new InvalidOptionError('deadlineAwarePicks', 'must be a boolean');
  const cm = opts.callMetrics ?? false;
  if (typeof cm !== 'boolean' && (typeof cm !== 'object' || cm === null))
    throw new InvalidOptionError('callMetrics', 'must be a boolean or { target?, services?, locality? }');
  const interceptors: Interceptor[] = [];
  if (cm !== false) interceptors.push(clientCallMetrics(cm === true ? {} : cm));
  if (deadlineAware) interceptors.push(callInfoInterceptor);
  return {
    ...(interceptors.length > 0 ? { interceptors } : {}),
    'grpc.service_config': JSON.stringify(defaultServiceConfig(opts)),
    'grpc.enable_retries': opts.retry === false ? 0 : 1,
    'grpc.keepalive_time_ms': keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': keepaliveTimeoutMs,
    'grpc.keepalive_permit_without_calls': permit ? 1 : 0,
    'grpc.enable_http_proxy': 0,
    ...(opts.extra ?? {}),
  };
}

function seconds(ms: number): string {
  // Service-config durations are decimal seconds with at most 9 fraction digits.
  return `${(ms / 1000).toFixed(3).replace(/\.?0+$/, '')}s`;
}

function integer(v: number, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new InvalidOptionError(field, `must be an integer in [${min}, ${max}], got ${String(v)}`);
  }
  return v;
}

function positive(v: number, field: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new InvalidOptionError(field, `must be a positive number, got ${String(v)}`);
  }
  return v;
}

function statusCodes(codes: readonly string[], field: string): string[] {
  if (!Array.isArray(codes) || codes.length === 0)
    throw new InvalidOptionError(field, 'must be a non-empty array of status code names');
  return codes.map((c, i) => {
    if (typeof c !== 'string' || typeof (Status as Record<string, unknown>)[c] !== 'number' || c === 'OK') {
      throw new InvalidOptionError(
        `${field}[${i}]`,
        `must be a gRPC status name such as UNAVAILABLE, got ${String(c)}`,
      );
    }
    return c;
  });
}
