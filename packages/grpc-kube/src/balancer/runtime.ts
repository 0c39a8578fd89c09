// Time and randomness for the load-balancing policies and the proxy's pickers (one runtime type for
// both). grpc-js constructs a policy with nothing but its ChannelControlHelper, so the policies read
// their clock and RNG from here: tests pass their own to the constructor, or swap the module-wide
// default with setPolicyRuntime() and restore it after.

import { performance } from 'node:perf_hooks';

export interface PolicyRuntime {
  /** Monotonic milliseconds. */
  now(): number;
  /** Uniform in [0, 1). */
  random(): number;
  /** Wall-clock ms since the epoch, to read absolute call deadlines. Default Date.now. */
  wallNow?(): number;
}

/** The real clocks and Math.random. */
export const systemRuntime: PolicyRuntime = Object.freeze({
  now: () => performance.now(),
  random: () => Math.random(),
  wallNow: () => Date.now(),
});

let current: PolicyRuntime = systemRuntime;

/** The runtime a policy built by grpc-js (without an explicit runtime) will use. */
export function policyRuntime(): PolicyRuntime {
  return current;
}

/** Replace the default runtime; returns a function that restores the previous one. */
export function setPolicyRuntime(runtime: PolicyRuntime): () => void {
  const previous = current;
  current = runtime;
  return () => {
    current = previous;
  };
}

/**
 * A small, fast, seedable PRNG (the mulberry32 construction) so tests can assert exact pick
 * sequences. Not for anything security-related.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A clock that only moves when told to, for deterministic tests of EWMA decay and slow start. */
export class ManualClock {
  private ms: number;
  constructor(startMs = 0) {
    this.ms = startMs;
  }
  now = (): number => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}
