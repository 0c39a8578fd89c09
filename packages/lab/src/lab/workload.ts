// The lab's workload: the east-west demo's client, bounded. Each client is one grpc-js channel that sends
// `concurrency` Hello RPCs at once, waits for all of them, and loops (mode `rounds`, as the seed), or
// keeps `concurrency` independent loops going (mode `loops`). Several clients stand for several client
// pods. Every RPC lands in an RpcLog: start time, pod that answered, status code, latency, client.

import * as grpc from '@grpc/grpc-js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { GreeterClient } from './hello.js';
import type { RpcRecordsView } from './metrics.js';
import { LAB_DEFAULTS } from './config.js';

/** Compact, growable RPC record store (~19 bytes per RPC), readable as an RpcRecordsView. */
export class RpcLog implements RpcRecordsView {
  private t = new Float64Array(1024);
  private lat = new Float32Array(1024);
  private codes = new Uint8Array(1024);
  private pods = new Int32Array(1024);
  private clients = new Uint16Array(1024);
  private n = 0;
  private readonly names: string[] = [];
  private readonly nameIndex = new Map<string, number>();

  get length(): number {
    return this.n;
  }
  get tMs(): Float64Array {
    return this.t.subarray(0, this.n);
  }
  get latencyMs(): Float32Array {
    return this.lat.subarray(0, this.n);
  }
  get code(): Uint8Array {
    return this.codes.subarray(0, this.n);
  }
  get pod(): Int32Array {
    return this.pods.subarray(0, this.n);
  }
  get client(): Uint16Array {
    return this.clients.subarray(0, this.n);
  }
  get podNames(): readonly string[] {
    return this.names;
  }

  /** Replace each recorded pod label (e.g. a peer address) with `rename(label)`; labels that map to the same name merge. */
  renamePods(rename: (label: string) => string): void {
    const merged: string[] = [];
    const index = new Map<string, number>();
    const remap = this.names.map((old) => {
      const name = rename(old);
      let i = index.get(name);
      if (i === undefined) {
        i = merged.length;
        merged.push(name);
        index.set(name, i);
      }
      return i;
    });
    for (let k = 0; k < this.n; k++) {
      const p = this.pods[k] as number;
      if (p >= 0) this.pods[k] = remap[p] as number;
    }
    this.names.length = 0;
    this.names.push(...merged);
    this.nameIndex.clear();
    merged.forEach((n, i) => this.nameIndex.set(n, i));
  }

  /** Append one RPC; `pod` is '' when the RPC failed (no reply, so no pod). */
  push(tMs: number, latencyMs: number, code: number, pod: string, client: number): void {
    if (this.n === this.t.length) this.grow();
    const i = this.n++;
    this.t[i] = tMs;
    this.lat[i] = latencyMs;
    this.codes[i] = code;
    this.clients[i] = client;
    if (pod === '') {
      this.pods[i] = -1;
    } else {
      let idx = this.nameIndex.get(pod);
      if (idx === undefined) {
        idx = this.names.length;
        this.names.push(pod);
        this.nameIndex.set(pod, idx);
      }
      this.pods[i] = idx;
    }
  }

  private grow(): void {
    const size = this.t.length * 2;
    const t = new Float64Array(size);
    t.set(this.t);
    this.t = t;
    const lat = new Float32Array(size);
    lat.set(this.lat);
    this.lat = lat;
    const codes = new Uint8Array(size);
    codes.set(this.codes);
    this.codes = codes;
    const pods = new Int32Array(size);
    pods.set(this.pods);
    this.pods = pods;
    const clients = new Uint16Array(size);
    clients.set(this.clients);
    this.clients = clients;
  }
}

export type WorkloadMode = 'rounds' | 'loops';

export interface WorkloadOptions {
  /** Dial target, e.g. `ipv4:127.0.1.1:50051`, `dns://127.0.0.1:5353/hello.lab:50051`, `kubernetes:///…`. */
  target: string;
  /** Strategy's channel options; merged over the workload defaults (local subchannel pool, no proxy). */
  channelOptions?: grpc.ChannelOptions;
  /** Channel credentials. Default insecure. */
  credentials?: grpc.ChannelCredentials;
  /** Separate channels (client pods). Default 1. */
  clients?: number;
  /** RPCs in flight per client. Default 10 (the east-west demo). */
  concurrency?: number;
  /** `rounds` (default, the east-west demo: send `concurrency`, wait for all, loop) or `loops` (independent). */
  mode?: WorkloadMode;
  /** Stop starting RPCs after this long. Required. */
  durationMs: number;
  /** Stop starting RPCs after this many in total. Default 2,000,000. */
  maxRpcs?: number;
  /** Per-RPC deadline. Default 1000. */
  deadlineMs?: number;
  /** After a failed RPC, its loop (or its client's next round) waits this long. Default 0 (the seed's client). */
  failurePauseMs?: number;
  /** At least this long between a client's round starts (a loop's RPC starts): caps the load on a
   *  small machine. Default 0 (the seed's client: next round as soon as the last one ends). */
  pacingMs?: number;
  /** Prefix of HelloRequest.client; client i sends `${clientName}-${i}`. Default 'client'. */
  clientName?: string;
  /**
   * The RPC each loop sends: `hello` (default; the lab's Hello pods answer with their name) or
   * `health` — grpc.health.v1.Health/Check, which any server following the lab's pod contract
   * answers (`--pod-command`); the pod is then the connection's peer address, renamed to a pod name
   * afterwards with RpcLog.renamePods.
   */
  rpc?: 'hello' | 'health';
  /** Monotonic clock in ms; the lab passes the one its pod timeline uses. Default performance.now. */
  clock?: () => number;
  /** Clock value that tMs is measured from. Default: clock() when the workload starts. */
  originMs?: number;
}

/** A failed RPC as grpc-js told it: when it started (ms from originMs), which client, and why. */
export interface WorkloadFailure {
  readonly tMs: number;
  readonly client: number;
  readonly code: grpc.status;
  /** The code's name (DEADLINE_EXCEEDED…). */
  readonly status: string;
  /** grpc-js's details: for a deadline, where the time went (LB pick, remote address…). */
  readonly details: string;
}

/** How many failed RPCs a workload keeps with their details (the first ones). */
export const FAILURE_SAMPLES = 5;

/** Why a workload stopped starting RPCs: its duration was over, its RPC budget spent, or stop() came first. */
export type WorkloadEnd = 'duration' | 'budget' | 'stopped';

export interface WorkloadRun {
  readonly log: RpcLog;
  /** Resolves when the duration or the RPC budget is used up (or stop()) and every RPC has ended. */
  readonly done: Promise<RpcLog>;
  /** Stop starting RPCs now; resolves like `done`. */
  stop(): Promise<RpcLog>;
  /** RPCs started / in flight so far (for a progress display). */
  started(): number;
  inFlight(): number;
  /** Why, and when (ms from originMs), it stopped starting RPCs; undefined while it runs. */
  ended(): { by: WorkloadEnd; atMs: number } | undefined;
  /** The first FAILURE_SAMPLES failed RPCs with grpc-js's details (the log keeps only their codes). */
  failures(): readonly WorkloadFailure[];
}

const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';
const EMPTY = Buffer.alloc(0);

const WORKLOAD_CHANNEL_DEFAULTS: grpc.ChannelOptions = {
  // Each client must own its connections, as a separate client pod would: grpc-js otherwise shares
  // subchannels process-wide, and ten "clients" would ride one TCP connection to one pod.
  'grpc.use_local_subchannel_pool': 1,
  // An http_proxy in the environment would make grpc-js bypass the strategy's resolver.
  'grpc.enable_http_proxy': 0,
};

function positiveInt(name: string, value: number | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min)
    throw new InvalidOptionError(name, `must be an integer >= ${min}`);
  return value;
}

/** Start the workload; RPCs begin at once. */
export function startWorkload(options: WorkloadOptions): WorkloadRun {
  if (typeof options.target !== 'string' || options.target === '') {
    throw new InvalidOptionError('target', 'must be a non-empty string');
  }
  const d = LAB_DEFAULTS.workload;
  const clientCount = positiveInt('clients', options.clients, d.clients);
  if (clientCount > 65535) throw new InvalidOptionError('clients', 'must be <= 65535');
  const concurrency = positiveInt('concurrency', options.concurrency, d.concurrency);
  const durationMs = positiveInt('durationMs', options.durationMs ?? 0, 0);
  const maxRpcs = positiveInt('maxRpcs', options.maxRpcs, d.maxRpcs);
  const deadlineMs = positiveInt('deadlineMs', options.deadlineMs, d.deadlineMs);
  const failurePauseMs = positiveInt('failurePauseMs', options.failurePauseMs, d.failurePauseMs, 0);
  const pacingMs = positiveInt('pacingMs', options.pacingMs, d.pacingMs, 0);
  const mode = options.mode ?? d.mode;
  if (mode !== 'rounds' && mode !== 'loops')
    throw new InvalidOptionError('mode', 'must be "rounds" or "loops"');
  const clientName = options.clientName ?? d.clientName;
  const clock = options.clock ?? (() => performance.now());
  const startClock = clock();
  const origin = options.originMs ?? startClock;
  const channelOptions = { ...WORKLOAD_CHANNEL_DEFAULTS, ...options.channelOptions };

  const rpc = options.rpc ?? d.rpc;
  if (rpc !== 'hello' && rpc !== 'health') throw new InvalidOptionError('rpc', 'must be "hello" or "health"');
  const log = new RpcLog();
  const clients: GreeterClient[] = [];
  for (let i = 0; i < clientCount; i++)
    clients.push(new GreeterClient(options.target, options.credentials, channelOptions));
  /** One RPC of client `ci`; `done(err, pod)` with the pod that answered ('' when unknown). */
  const call = (
    ci: number,
    counter: number,
    done: (err: grpc.ServiceError | null, pod: string) => void,
  ): void => {
    const client = clients[ci] as GreeterClient;
    if (rpc === 'hello') {
      client.sayHelloCb({ client: names[ci] as string, counter }, deadlineMs, (err, reply) => {
        if (!err && !reply) done({ code: grpc.status.UNKNOWN } as grpc.ServiceError, '');
        else done(err, reply?.pod ?? '');
      });
      return;
    }
    // HealthCheckRequest{service: ""} is the empty message; any answer (SERVING or not) is a reply.
    const c: grpc.ClientUnaryCall = client.client.makeUnaryRequest(
      HEALTH_CHECK_PATH,
      () => EMPTY,
      (b: Buffer) => b,
      EMPTY,
      { deadline: Date.now() + deadlineMs },
      (err: grpc.ServiceError | null) => done(err, err ? '' : c.getPeer()),
    );
  };

  let running = true;
  let ended: { by: WorkloadEnd; atMs: number } | undefined;
  let started = 0;
  let inFlight = 0;
  const pauses = new Set<NodeJS.Timeout>();
  let finish!: (log: RpcLog) => void;
  const done = new Promise<RpcLog>((resolve) => (finish = resolve));

  const maybeFinish = (): void => {
    if (running || inFlight > 0) return;
    for (const t of pauses) clearTimeout(t);
    pauses.clear();
    for (const c of clients) c.close();
    finish(log);
  };
  const stop = (by: WorkloadEnd = 'stopped'): Promise<RpcLog> => {
    if (running) {
      running = false;
      ended = { by, atMs: clock() - origin };
      clearTimeout(durationTimer);
      maybeFinish();
    }
    return done;
  };
  const after = (ms: number, fn: () => void): void => {
    if (ms === 0) return fn();
    const t = setTimeout(() => {
      pauses.delete(t);
      fn();
    }, ms);
    pauses.add(t);
  };

  const failures: WorkloadFailure[] = [];
  const counters = new Array<number>(clientCount).fill(0);
  const names = Array.from({ length: clientCount }, (_, ci) => `${clientName}-${ci}`);
  /** Start one RPC of client `ci`; `next(ok)` runs when it has ended. Returns false if the budget is spent. */
  const fire = (ci: number, next: (ok: boolean) => void): boolean => {
    if (!running) return false;
    const t0 = clock();
    if (started >= maxRpcs) {
      void stop('budget');
      return false;
    }
    started++;
    inFlight++;
    const counter = ++(counters[ci] as number);
    call(ci, counter, (err, pod) => {
      const latency = clock() - t0;
      inFlight--;
      if (err) {
        log.push(t0 - origin, latency, err.code, '', ci);
        if (failures.length < FAILURE_SAMPLES)
          failures.push({
            tMs: t0 - origin,
            client: ci,
            code: err.code,
            status: grpc.status[err.code] ?? String(err.code),
            details: err.details ?? '',
          });
      } else log.push(t0 - origin, latency, grpc.status.OK, pod, ci);
      next(!err);
      maybeFinish();
    });
    return true;
  };

  /** The duration timer may fire late on a busy machine; checking the clock keeps the bound exact. */
  const timeLeft = (): boolean => {
    if (clock() - startClock < durationMs) return true;
    void stop('duration');
    return false;
  };
  /** Wait before the next round/RPC: the pacing interval not yet used up, and the failure pause. */
  const gap = (startedAt: number, failed: boolean): number =>
    Math.max(pacingMs - (clock() - startedAt), 0, failed ? failurePauseMs : 0);
  const startRound = (ci: number): void => {
    if (!timeLeft()) return;
    const roundStart = clock();
    let pending = 0;
    let anyFailed = false;
    const onEnd = (ok: boolean): void => {
      if (!ok) anyFailed = true;
      if (--pending === 0 && running) after(Math.ceil(gap(roundStart, anyFailed)), () => startRound(ci));
    };
    for (let k = 0; k < concurrency; k++) {
      if (!fire(ci, onEnd)) break;
      pending++;
    }
  };
  const startLoop = (ci: number): void => {
    if (!timeLeft()) return;
    const rpcStart = clock();
    const onEnd = (ok: boolean): void => {
      if (running) after(Math.ceil(gap(rpcStart, !ok)), () => startLoop(ci));
    };
    fire(ci, onEnd);
  };

  // Kept referenced on purpose: the bounded run is what the process is waiting for; stop() clears it.
  // A timer may fire up to a millisecond before the clock says the duration is over (timers count
  // whole loop milliseconds): then it waits out the rest, so the run never ends early.
  const onDurationTimer = (): void => {
    if (timeLeft())
      durationTimer = setTimeout(
        onDurationTimer,
        Math.max(1, Math.ceil(durationMs - (clock() - startClock))),
      );
  };
  let durationTimer = setTimeout(onDurationTimer, durationMs);
  for (let ci = 0; ci < clientCount; ci++) {
    if (mode === 'rounds') startRound(ci);
    else for (let k = 0; k < concurrency; k++) startLoop(ci);
  }

  return {
    log,
    done,
    stop: () => stop(),
    started: () => started,
    inFlight: () => inFlight,
    ended: () => ended,
    failures: () => failures,
  };
}

/** Run the workload to its end. */
export function runWorkload(options: WorkloadOptions): Promise<RpcLog> {
  return startWorkload(options).done;
}

/** A stretch of a run, in ms from its origin. */
export interface IdleStretch {
  readonly fromMs: number;
  readonly toMs: number;
}

/**
 * The longest stretch of [0, durationMs] in which no RPC started (tMs: the start times, in any
 * order). A workload that covered its whole run has none longer than one loop's turn; a workload
 * that stopped or stalled early shows it here, whatever its RPC count.
 */
export function longestIdle(tMs: ArrayLike<number>, durationMs: number): IdleStretch {
  const starts = Float64Array.from(tMs).sort();
  let best: IdleStretch = { fromMs: 0, toMs: 0 };
  let prev = 0;
  for (const t of [...starts, durationMs]) {
    const at = Math.min(Math.max(t, prev), durationMs);
    if (at - prev > best.toMs - best.fromMs) best = { fromMs: prev, toMs: at };
    prev = at;
  }
  return best;
}

/**
 * The longest a running workload may go without starting an RPC: one of its loops waits for its
 * RPC (at most the deadline), then its pause (pacing, or the failure pause); the slack covers timers
 * a little late. A stall of the whole event loop longer than that is not allowed for: the clients
 * started nothing meanwhile, so the run covered less than its duration (the harness says why).
 */
export function idleAllowanceMs(o: { deadlineMs: number; pacingMs: number; failurePauseMs: number }): number {
  return o.deadlineMs + Math.max(o.pacingMs, o.failurePauseMs) + IDLE_SLACK_MS;
}
const IDLE_SLACK_MS = 100;
