// Which endpoints the earlier attempts of a call went to, so that its retry or hedge goes elsewhere.
// grpc-js gives each attempt a fresh copy of the call's metadata and tells the picker nothing about
// earlier attempts, so callInfoInterceptor() names the call once (CALL_ID_METADATA_KEY) and each
// channel's policy keeps this log: an entry per call that has started an attempt and not yet been
// answered, dropped on its first OK answer, or at its deadline, or when the log is full (oldest first).

/** Call metadata naming one call across its attempts; set by callInfoInterceptor(). */
export const CALL_ID_METADATA_KEY = 'grpc-kube-call-id';

/** Kept this long for a call without a deadline that ends in an error (a retry may still come). */
export const ATTEMPT_LOG_KEEP_MS = 60_000;
/** More calls than this waiting for an answer at once: the oldest entries are forgotten first. */
export const ATTEMPT_LOG_MAX_CALLS = 4096;

interface Entry {
  readonly endpoints: string[];
  readonly expiresAtMs: number;
}

export class AttemptLog {
  private readonly calls = new Map<string, Entry>();

  constructor(private readonly maxCalls: number = ATTEMPT_LOG_MAX_CALLS) {}

  /** Calls remembered now. */
  get size(): number {
    return this.calls.size;
  }

  /** The endpoints earlier attempts of `callId` started on, in order; undefined for a first attempt. */
  tried(callId: string): readonly string[] | undefined {
    return this.calls.get(callId)?.endpoints;
  }

  /**
   * An attempt of `callId` started on `endpoint`. `deadlineMs` (wall clock) is when the call stops
   * mattering; null for a call without one. `nowMs` is the same wall clock.
   */
  started(callId: string, endpoint: string, deadlineMs: number | null, nowMs: number): void {
    const entry = this.calls.get(callId);
    if (entry !== undefined) {
      if (!entry.endpoints.includes(endpoint)) entry.endpoints.push(endpoint);
      return;
    }
    this.sweep(nowMs);
    this.calls.set(callId, { endpoints: [endpoint], expiresAtMs: deadlineMs ?? nowMs + ATTEMPT_LOG_KEEP_MS });
    if (this.calls.size > this.maxCalls) {
      for (const oldest of this.calls.keys()) {
        this.calls.delete(oldest);
        break;
      }
    }
  }

  /** The call has its answer: no further attempt will come. */
  answered(callId: string): void {
    this.calls.delete(callId);
  }

  /**
   * Drop expired entries from the front. Entries are in start order and deadlines mostly follow it, so
   * this stops at the first live one; an entry behind a longer deadline waits for it (or for the cap).
   */
  private sweep(nowMs: number): void {
    for (const [id, entry] of this.calls) {
      if (entry.expiresAtMs > nowMs) return;
      this.calls.delete(id);
    }
  }
}
