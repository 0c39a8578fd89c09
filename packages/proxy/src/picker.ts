// Per-RPC backend choice for the L7 proxy: round_robin, P2C least-request and peak-EWMA over the
// proxy's own HTTP/2 sessions. The same rules as the grpc-js policies in packages/grpc-kube/src/balancer (and the same
// EndpointStats / peak-EWMA arithmetic), without grpc-js's subchannel machinery: the proxy hands in
// the candidate list for each pick (ready, not ejected, not already tried by this RPC), so a pick is
// synchronous, never throws and never waits. Time and randomness are injected for tests.

import { EndpointStats } from 'grpc-kube/internal/balancer/endpoint-balancer.js';
import { EWMA_DEFAULTS, decayedRttMs, observeRtt } from 'grpc-kube/internal/balancer/ewma.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { systemRuntime, type PolicyRuntime } from 'grpc-kube/internal/balancer/runtime.js';

export const PROXY_POLICIES = ['round_robin', 'p2c', 'ewma'] as const;
export type ProxyPolicy = (typeof PROXY_POLICIES)[number];

/** @deprecated The core's `PolicyRuntime` (the same clock and RNG); kept for the public export. */
export type PickerRuntime = PolicyRuntime;

/** Anything the picker can choose: it reads (and the tracker updates) its load. */
export interface Pickable {
  readonly stats: EndpointStats;
}

/** One RPC on one backend, from start to end; returned by begin(). */
export interface CallToken {
  readonly stats: EndpointStats;
  readonly startedMs: number;
  /** Set once the backend answered with response headers (the latency sample was taken). */
  responded: boolean;
  ended: boolean;
}

export interface ProxyPicker {
  readonly policy: ProxyPolicy;
  /** Choose one of `candidates` (all eligible); undefined only when the list is empty. */
  pick<T extends Pickable>(candidates: readonly T[]): T | undefined;
  /** A new RPC went to this backend. */
  begin(stats: EndpointStats): CallToken;
  /** The backend sent response headers: the time to first answer is the latency sample. */
  responded(token: CallToken): void;
  /** The RPC on this backend ended with grpc status `code`. Idempotent. */
  end(token: CallToken, code: number): void;
  /** Stats for a new backend. */
  newStats(): EndpointStats;
}

export interface PickerOptions {
  /** Peak-EWMA decay τ (Linkerd: 10 s). */
  decayMs?: number;
  /** Assumed latency of a backend that has not answered yet. */
  defaultRttMs?: number;
  /** Failures without an answer count as taking at least this long (a failing pod must not look fast). */
  failurePenaltyMs?: number;
}

const CANCELLED = 1;
const RESOURCE_EXHAUSTED = 8;
const UNAVAILABLE = 14;

export function parseProxyPolicy(value: string, field = 'policy'): ProxyPolicy {
  if ((PROXY_POLICIES as readonly string[]).includes(value)) return value as ProxyPolicy;
  throw new InvalidOptionError(
    field,
    `must be one of ${PROXY_POLICIES.join(', ')}, got ${JSON.stringify(value)}`,
  );
}

export function createPicker(
  policy: ProxyPolicy,
  runtime: PolicyRuntime = systemRuntime,
  options: PickerOptions = {},
): ProxyPicker {
  const decayMs = options.decayMs ?? EWMA_DEFAULTS.decayMs;
  const defaultRttMs = options.defaultRttMs ?? EWMA_DEFAULTS.defaultRttMs;
  const failurePenaltyMs = options.failurePenaltyMs ?? EWMA_DEFAULTS.failurePenaltyMs;
  // Round robin starts at a random offset so many proxies do not all hit the first pod first.
  let next = Math.floor(runtime.random() * 1_000_000);

  const score =
    policy === 'ewma'
      ? (s: EndpointStats, now: number): number =>
          Math.max(decayedRttMs(s, decayMs, now), s.oldestInflightMs(now)) * (s.outstanding + 1)
      : (s: EndpointStats): number => s.outstanding;

  const twoChoices = <T extends Pickable>(c: readonly T[]): T | undefined => {
    if (c.length <= 1) return c[0];
    const i = Math.floor(runtime.random() * c.length);
    // The second index is drawn from the other n-1, so the two are always distinct.
    let j = Math.floor(runtime.random() * (c.length - 1));
    if (j >= i) j++;
    const a = c[i] as T;
    const b = c[j] as T;
    const now = runtime.now();
    return score(b.stats, now) < score(a.stats, now) ? b : a;
  };

  const observe = (token: CallToken, code: number): void => {
    if (policy !== 'ewma' || code === CANCELLED) return;
    const now = runtime.now();
    let rtt = Math.max(0, now - token.startedMs);
    if (code === UNAVAILABLE || code === RESOURCE_EXHAUSTED) rtt = Math.max(rtt, failurePenaltyMs);
    observeRtt(token.stats, rtt, decayMs, now);
  };

  return Object.freeze({
    policy,
    pick<T extends Pickable>(candidates: readonly T[]): T | undefined {
      if (policy !== 'round_robin') return twoChoices(candidates);
      if (candidates.length === 0) return undefined;
      const i = next % candidates.length;
      next = (next + 1) % 1_000_000_007;
      return candidates[i];
    },
    begin(stats: EndpointStats): CallToken {
      const token = { stats, startedMs: runtime.now(), responded: false, ended: false };
      stats.outstanding++;
      stats.inflight.add(token);
      return token;
    },
    responded(token: CallToken): void {
      if (token.responded || token.ended) return;
      token.responded = true;
      observe(token, 0);
    },
    end(token: CallToken, code: number): void {
      if (token.ended) return;
      token.ended = true;
      token.stats.outstanding--;
      token.stats.inflight.delete(token);
      // A call that got an answer already gave its sample; one that failed without an answer gives
      // one now (penalised when the backend could not take it).
      if (!token.responded) observe(token, code);
    },
    newStats: () => new EndpointStats(policy === 'ewma' ? defaultRttMs : 0, runtime.now()),
  });
}
