// The blackhole scenario's figures: a pod stops answering with no RST (SIGSTOP on the embedded cluster,
// every packet dropped in its network namespace on the real one). Nothing tells a client; it learns
// from the readiness probe (the kubelet marks the pod unready, the endpoint update reaches it), from
// keepalive (a ping unanswered for keepalive time + timeout closes the connection), or from latency
// (peak-EWMA avoids a pod whose oldest call has run longer than the others answer).
//
// From one strategy's RPC record (start, latency, status; a failed RPC has no pod) and the instant of
// the blackhole:
//  - inFlight: RPCs in flight at that instant that failed — they were on the blackholed pod, since
//    every other pod answers within the deadline (an RPC in flight elsewhere succeeds);
//  - startedAfter: failed RPCs started after it — picks of the pod before the client stopped picking it;
//  - detectionMs: from the blackhole to the start of the last of those (0 when none), i.e. when the
//    strategy's clients stopped picking the pod;
//  - unreadyAfterMs: when the pod was seen not Ready on the API (the probe's verdict);
//  - keepaliveWindowMs: the clients' keepalive time + timeout (null without keepalive, where only the
//    probe or latency can detect the pod).
// failed = inFlight + startedAfter + failures of other causes; the checks are failed ≤ inFlight +
// startedAfter (nothing else failed) and detectionMs ≤ keepaliveWindowMs.

import { status as Status, type ChannelOptions } from '@grpc/grpc-js';
import { isPodReady } from '../cluster/controllers/kinds.js';
import type { LabCluster } from './cluster.js';
import type { RpcRecordsView } from './metrics.js';

export interface BlackholeFigures {
  /** The blackholed pod. */
  pod: string;
  /** When it was blackholed, ms from the run's start. */
  atMs: number;
  inFlight: number;
  startedAfter: number;
  /** Failed RPCs of any cause over the whole run (the record's `failed`). */
  failed: number;
  detectionMs: number;
  unreadyAfterMs: number | null;
  keepaliveWindowMs: number | null;
}

/** grpc-js's keepalive timeout when only the time is set. */
const GRPC_JS_KEEPALIVE_TIMEOUT_MS = 20_000;

/** Keepalive time + timeout of a channel's options, or null when it sends no pings. */
export function keepaliveWindowMs(options: ChannelOptions): number | null {
  const time = options['grpc.keepalive_time_ms'] as number | undefined;
  if (typeof time !== 'number' || !(time > 0) || time === Number.MAX_SAFE_INTEGER) return null;
  const timeout = options['grpc.keepalive_timeout_ms'] as number | undefined;
  return time + (typeof timeout === 'number' && timeout > 0 ? timeout : GRPC_JS_KEEPALIVE_TIMEOUT_MS);
}

/** The figures of one strategy's run (see the file comment). */
export function blackholeFigures(
  records: RpcRecordsView,
  at: { pod: string; atMs: number; unreadyAtMs: number | null },
  keepaliveMs: number | null,
): BlackholeFigures {
  let inFlight = 0;
  let startedAfter = 0;
  let failed = 0;
  let lastStart = at.atMs;
  for (let i = 0; i < records.length; i++) {
    const code = records.code[i] as number;
    if (code === Status.OK) continue;
    failed++;
    const t = records.tMs[i] as number;
    const end = t + (records.latencyMs[i] as number);
    if (t < at.atMs) {
      if (end >= at.atMs) inFlight++;
    } else {
      startedAfter++;
      if (t > lastStart) lastStart = t;
    }
  }
  return {
    pod: at.pod,
    atMs: round1(at.atMs),
    inFlight,
    startedAfter,
    failed,
    detectionMs: round1(lastStart - at.atMs),
    unreadyAfterMs: at.unreadyAtMs === null ? null : round1(at.unreadyAtMs - at.atMs),
    keepaliveWindowMs: keepaliveMs,
  };
}

/** One line of the CLI summary: the figures and whether the two bounds held. */
export function blackholeLine(strategy: string, b: BlackholeFigures): string {
  const held = b.failed <= b.inFlight + b.startedAfter;
  const window = b.keepaliveWindowMs === null ? 'no keepalive' : `keepalive window ${b.keepaliveWindowMs} ms`;
  const inWindow =
    b.keepaliveWindowMs === null ? '' : b.detectionMs <= b.keepaliveWindowMs ? ' (within)' : ' (BEYOND)';
  return (
    `blackhole ${strategy}: pod ${b.pod} at ${b.atMs} ms; failed ${b.failed} ${held ? '<=' : '>'} ` +
    `${b.inFlight} in flight + ${b.startedAfter} started after; last pick ${b.detectionMs} ms after${inWindow}; ` +
    `unready after ${b.unreadyAfterMs ?? '–'} ms; ${window}`
  );
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/**
 * Follows one pod until it is seen not Ready (or gone): `unreadyAtMs()` is that instant on `clock`,
 * or null so far. `stop()` ends the watch.
 */
export function watchUnready(
  cluster: LabCluster,
  namespace: string,
  labelSelector: string,
  pod: string,
  clock: () => number,
): { unreadyAtMs(): number | null; stop(): void } {
  let at: number | null = null;
  const stop = cluster.watchPods(namespace, labelSelector, (type, p) => {
    if (at !== null || p.metadata?.name !== pod) return;
    if (type === 'DELETED' || !isPodReady(p)) at = clock();
  });
  return { unreadyAtMs: () => at, stop };
}
