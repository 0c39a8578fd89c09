// Safe grpc-js channel options for clients of Kubernetes services: a gRFC A6 retry policy for
// UNAVAILABLE (the status a call gets when its pod went away before answering), keepalive that
// notices a dead pod in seconds rather than minutes, no HTTP proxy (http_proxy would bypass the
// kubernetes: resolver), and the load-balancing policy of your choice, all in one ChannelOptions.
//
// grpc-js retries an attempt only while the call is not committed: no response headers or message
// received yet, and the request still within the retry buffer. So a retry never repeats work the
// server has started answering; UNAVAILABLE from a pod that is shutting down, a refused stream, or a
// connection that died before the response are exactly the cases that qualify.

import type { ChannelOptions } from '@grpc/grpc-js';
import { status as Status } from '@grpc/grpc-js';
import { InvalidOptionError } from '../errors.js';

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
});

interface JsonRetryPolicy {
  maxAttempts: number;
  initialBackoff: string;
  maxBackoff: string;
  backoffMultiplier: number;
  retryableStatusCodes: string[];
}

export interface ServiceConfigJson {
  loadBalancingConfig: Array<Record<string, unknown>>;
  methodConfig: Array<{ name: Array<{ service?: string; method?: string }>; retryPolicy?: JsonRetryPolicy }>;
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
    loadBalancingConfig: [{ [lbPolicy]: { ...(opts.lbConfig ?? {}) } }],
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
    config.methodConfig.push({ name: names, retryPolicy: { ...base, retryableStatusCodes: idemCodes } });
  }
  return config;
}

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
  return {
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
