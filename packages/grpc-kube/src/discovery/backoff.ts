// Jittered exponential backoff with injectable randomness, for every reconnect loop in grpc-kube.
// Delays grow by `multiplier` from `initialMs` up to `maxMs`, each spread by ±`jitter`, and start over
// after reset() (called on the first success after a failure), as client-go's reflector does.

import { InvalidOptionError } from '../errors.js';

export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  multiplier?: number;
  /** Fraction of the delay to spread randomly either side, 0..1. */
  jitter?: number;
  random?: () => number;
}

export class Backoff {
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly multiplier: number;
  private readonly jitter: number;
  private readonly random: () => number;
  private nextBaseMs: number;
  /** Failures since the last reset. */
  attempts = 0;

  constructor(opts: BackoffOptions = {}) {
    this.initialMs = positive('backoff.initialMs', opts.initialMs ?? 500);
    this.maxMs = positive('backoff.maxMs', opts.maxMs ?? 15_000);
    this.multiplier = opts.multiplier ?? 2;
    this.jitter = opts.jitter ?? 0.2;
    if (this.maxMs < this.initialMs)
      throw new InvalidOptionError('backoff.maxMs', 'must be >= backoff.initialMs');
    if (!(this.multiplier >= 1)) throw new InvalidOptionError('backoff.multiplier', 'must be >= 1');
    if (!(this.jitter >= 0 && this.jitter <= 1))
      throw new InvalidOptionError('backoff.jitter', 'must be in [0, 1]');
    this.random = opts.random ?? Math.random;
    this.nextBaseMs = this.initialMs;
  }

  /** The delay before the next attempt; advances the sequence. */
  next(): number {
    const base = this.nextBaseMs;
    this.nextBaseMs = Math.min(this.maxMs, base * this.multiplier);
    this.attempts++;
    const spread = base * this.jitter * (2 * this.random() - 1);
    return Math.max(0, Math.round(base + spread));
  }

  reset(): void {
    this.nextBaseMs = this.initialMs;
    this.attempts = 0;
  }
}

function positive(field: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0)
    throw new InvalidOptionError(field, `must be a positive number of ms, got ${v}`);
  return v;
}
