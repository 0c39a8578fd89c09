// The server half of a clean rollout, for a grpc-js Server: the standard grpc.health.v1 service
// (package grpc-health-check) driven by a readiness state that tells the truth, and the SIGTERM
// sequence Kubernetes needs:
//
//   SIGTERM → health NOT_SERVING ('' and every registered service) → wait propagationDelayMs while
//   the endpoint removal reaches clients (new RPCs still served) → tryShutdown(): listeners close and
//   every connection gets GOAWAY, in-flight RPCs finish → forceShutdown() after graceMs → exit.
//
// grpc-js 1.14's server.drain(port, graceMs) sends GOAWAY but leaves the listener open and needs each
// bound port spelled out; tryShutdown() does both GOAWAY and close for every port, so the kit uses it
// and keeps the force-close timer itself. Events go to node:diagnostics_channel 'grpc-kube:server'.

import diagnostics from 'node:diagnostics_channel';
import type { Server, ServerCredentials } from '@grpc/grpc-js';
import { createRequire } from 'node:module';
import type { HealthImplementation, ServingStatus } from 'grpc-health-check';
import { GrpcKubeError, InvalidOptionError } from '../errors.js';
import { TlsFiles, type TlsError, type TlsFilesOptions } from '../tls/files.js';
import { instruments, registerGauges, secondsSince } from '../metrics/instruments.js';

export const SERVER_CHANNEL_NAME = 'grpc-kube:server';

export interface ServerTls {
  /** Pass to server.bindAsync(); follows the files (mutual TLS when there is a caFile). */
  readonly credentials: ServerCredentials;
  readonly files: TlsFiles;
  /** Stop watching the files (after the server stopped). */
  close(): void;
}

/**
 * TLS server credentials from certificate, key and optional CA files, re-read when they change:
 * cert-manager or a SPIFFE helper rotates them in place, the next handshakes use the new set,
 * connections in use keep theirs. Throws TlsError (GK_ERR_TLS) when the files are not a usable
 * identity; a later bad set goes to `onError` and the last good one stays in use.
 */
export async function serverTlsCredentials(
  options: TlsFilesOptions,
  onError: (err: TlsError) => void = (err) =>
    process.stderr.write(`grpc-kube server: ${err.code}: ${err.message} (previous files kept)\n`),
): Promise<ServerTls> {
  const files = await TlsFiles.load(options, onError);
  return { credentials: files.serverCredentials(), files, close: () => files.close() };
}
const channel = diagnostics.channel(SERVER_CHANNEL_NAME);

export type ServerPhase = 'starting' | 'serving' | 'draining' | 'stopped';

/** What the kit publishes on 'grpc-kube:server'. */
export interface ServerKitEvent {
  readonly phase:
    | 'starting'
    | 'serving'
    | 'not-ready'
    | 'ready'
    | 'draining'
    | 'goaway'
    | 'force-close'
    | 'stopped'
    | 'exit';
  readonly ready: boolean;
  readonly holds: readonly string[];
  readonly reason?: string;
  readonly exitCode?: number;
}

/** Where signals come from: `process` by default, an EventEmitter in tests. */
export interface SignalSource {
  on(signal: string, listener: () => void): unknown;
  off(signal: string, listener: () => void): unknown;
}

/** A cancellable wait; the default uses an unref'd timer. */
export type DelayFn = (ms: number, signal: AbortSignal) => Promise<void>;

export interface ServerKitOptions {
  /** Fully qualified service names whose health status follows readiness (besides the overall ''). */
  readonly services?: readonly string[];
  /**
   * A health service name that stays SERVING until the server stops, whatever the holds: point the
   * livenessProbe at it so a long warm-up never gets the pod killed. Default 'liveness'; null for none.
   */
  readonly livenessService?: string | null;
  /** Time between NOT_SERVING and GOAWAY, for the endpoint removal to reach every client. Default 5000. */
  readonly propagationDelayMs?: number;
  /** Time in-flight RPCs get after GOAWAY before connections are force-closed. Default 20000. */
  readonly graceMs?: number;
  /** Signals that start the sequence. Default ['SIGTERM']; [] to drive it only through shutdown(). */
  readonly signals?: readonly string[];
  readonly signalSource?: SignalSource;
  /** Called with 0 after a clean stop, 1 after a forced one. Default process.exit; null to not exit. */
  readonly exit?: ((code: number) => void) | null;
  readonly delay?: DelayFn;
  /** Start in 'serving' (no warm-up step). Default false: call setServing() once ready. */
  readonly startServing?: boolean;
}

export interface ShutdownResult {
  /** True when graceMs ran out and connections were force-closed. */
  readonly forced: boolean;
  readonly reason: string;
}

export interface ServerKit {
  readonly phase: ServerPhase;
  /** serving and no holds: what the readiness probe sees. */
  readonly ready: boolean;
  readonly holds: readonly string[];
  readonly health: HealthImplementation;
  /** starting → serving. Ignored once draining. */
  setServing(): void;
  /** Stay not-ready (warming a cache, running a migration) until the returned function is called. */
  hold(reason: string): () => void;
  /** Run the SIGTERM sequence now; idempotent, resolves when the server is stopped. */
  shutdown(reason?: string): Promise<ShutdownResult>;
  /** Detach from the signals and stop reporting the phase gauge (which shows `stopped` until then). */
  close(): void;
}

export const SERVER_KIT_DEFAULTS = Object.freeze({
  propagationDelayMs: 5_000,
  graceMs: 20_000,
  livenessService: 'liveness',
  signals: Object.freeze(['SIGTERM']),
});

const defaultDelay: DelayFn = (ms, signal) =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    timer.unref();
    signal.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });

function checkMs(value: unknown, field: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || !Number.isInteger(value)) {
    throw new InvalidOptionError(
      field,
      `must be a non-negative integer number of milliseconds, got ${String(value)}`,
    );
  }
  return value;
}

let healthMod: typeof import('grpc-health-check') | undefined;
/** Loaded by the first server kit: it loads the health proto (~30 ms) that a client process never needs. */
function healthModule(): typeof import('grpc-health-check') {
  healthMod ??= createRequire(import.meta.url)('grpc-health-check') as typeof import('grpc-health-check');
  return healthMod;
}

/**
 * Give `server` the health service, truthful readiness and the SIGTERM sequence. Call before
 * bindAsync (the health service must be added before the server starts); then setServing() once the
 * application is ready.
 */
export function createServerKit(server: Server, options: ServerKitOptions = {}): ServerKit {
  if (typeof options !== 'object' || options === null)
    throw new InvalidOptionError('options', 'must be an object');
  const propagationDelayMs = checkMs(
    options.propagationDelayMs,
    'propagationDelayMs',
    SERVER_KIT_DEFAULTS.propagationDelayMs,
  );
  const graceMs = checkMs(options.graceMs, 'graceMs', SERVER_KIT_DEFAULTS.graceMs);
  const services = [...(options.services ?? [])];
  services.forEach((s, i) => {
    if (typeof s !== 'string' || s === '')
      throw new InvalidOptionError(`services[${i}]`, 'must be a non-empty service name');
  });
  const liveness =
    options.livenessService === undefined ? SERVER_KIT_DEFAULTS.livenessService : options.livenessService;
  if (liveness !== null && (typeof liveness !== 'string' || liveness === '' || services.includes(liveness))) {
    throw new InvalidOptionError(
      'livenessService',
      'must be a non-empty name that is not also in services, or null',
    );
  }
  const signals = [...(options.signals ?? SERVER_KIT_DEFAULTS.signals)];
  const signalSource: SignalSource = options.signalSource ?? process;
  const exit = options.exit === undefined ? (code: number) => process.exit(code) : options.exit;
  if (exit !== null && typeof exit !== 'function')
    throw new InvalidOptionError('exit', 'must be a function or null');
  const delay = options.delay ?? defaultDelay;

  const health = new (healthModule().HealthImplementation)({});
  health.addToServer(server);

  let phase: ServerPhase = options.startServing === true ? 'serving' : 'starting';
  const holds = new Map<number, string>();
  let nextHold = 1;
  let lastReady: boolean | null = null;
  let shutdownPromise: Promise<ShutdownResult> | null = null;
  let closed = false;

  const isReady = (): boolean => phase === 'serving' && holds.size === 0;
  const holdList = (): string[] => [...holds.values()];

  function publish(event: Omit<ServerKitEvent, 'ready' | 'holds'>): void {
    if (channel.hasSubscribers) channel.publish({ ...event, ready: isReady(), holds: holdList() });
  }

  function applyHealth(): void {
    const ready = isReady();
    const status: ServingStatus = ready ? 'SERVING' : 'NOT_SERVING';
    health.setStatus('', status);
    for (const s of services) health.setStatus(s, status);
    if (liveness !== null) health.setStatus(liveness, phase === 'stopped' ? 'NOT_SERVING' : 'SERVING');
    if (lastReady !== null && ready !== lastReady && phase !== 'draining')
      publish({ phase: ready ? 'ready' : 'not-ready' });
    lastReady = ready;
  }

  const onSignal = (): void => {
    void kit.shutdown('signal');
  };
  for (const sig of signals) signalSource.on(sig, onSignal);
  const phases: readonly ServerPhase[] = ['starting', 'serving', 'draining', 'stopped'];
  const unregisterGauges = registerGauges((observe) => {
    for (const p of phases)
      observe('grpc_kube.server.serving', p === phase ? 1 : 0, { 'grpc_kube.server.phase': p });
  });
  function detach(): void {
    if (closed) return;
    closed = true;
    for (const sig of signals) signalSource.off(sig, onSignal);
  }

  async function runShutdown(reason: string): Promise<ShutdownResult> {
    phase = 'draining';
    applyHealth();
    publish({ phase: 'draining', reason });
    const waits = new AbortController();
    let stepStartedMs = performance.now();
    await delay(propagationDelayMs, waits.signal);
    const m = instruments();
    m?.['grpc_kube.server.drain.phase.duration'].record(secondsSince(stepStartedMs), {
      'grpc_kube.drain.step': 'propagation',
    });
    stepStartedMs = performance.now();
    m?.['grpc_kube.server.goaways'].add(1);
    publish({ phase: 'goaway', reason });
    const graceful = new Promise<'done'>((resolve) => server.tryShutdown(() => resolve('done')));
    const outcome = await Promise.race([
      graceful,
      delay(graceMs, waits.signal).then(() => 'grace-over' as const),
    ]);
    waits.abort();
    m?.['grpc_kube.server.drain.phase.duration'].record(secondsSince(stepStartedMs), {
      'grpc_kube.drain.step': 'goaway',
    });
    const forced = outcome === 'grace-over';
    if (forced) {
      publish({ phase: 'force-close', reason });
      server.forceShutdown();
    }
    phase = 'stopped';
    applyHealth();
    publish({ phase: 'stopped', reason });
    detach();
    const exitCode = forced ? 1 : 0;
    if (exit !== null) {
      publish({ phase: 'exit', reason, exitCode });
      exit(exitCode);
    }
    return { forced, reason };
  }

  const kit: ServerKit = {
    get phase() {
      return phase;
    },
    get ready() {
      return isReady();
    },
    get holds() {
      return holdList();
    },
    health,
    setServing() {
      if (phase !== 'starting') return;
      phase = 'serving';
      publish({ phase: 'serving' });
      applyHealth();
    },
    hold(reason: string) {
      if (typeof reason !== 'string' || reason === '')
        throw new InvalidOptionError('reason', 'must be a non-empty string');
      if (phase === 'stopped')
        throw new GrpcKubeError('GK_ERR_DESTROYED', 'hold() after the server kit stopped; nothing to hold');
      const id = nextHold++;
      holds.set(id, reason);
      applyHealth();
      let released = false;
      return () => {
        if (released) return;
        released = true;
        holds.delete(id);
        applyHealth();
      };
    },
    shutdown(reason = 'shutdown()') {
      shutdownPromise ??= runShutdown(reason);
      return shutdownPromise;
    },
    close() {
      detach();
      unregisterGauges();
    },
  };
  applyHealth();
  publish({ phase: phase === 'serving' ? 'serving' : 'starting' });
  return kit;
}

export interface MaxConnectionAgeOptions {
  /** Connections older than this (±10 % jitter, applied by grpc-js) get GOAWAY. Default 30 000. */
  readonly maxConnectionAgeMs?: number;
  /** Time RPCs in flight get after that GOAWAY. Default 10 000; make it your longest RPC. */
  readonly graceMs?: number;
}

/**
 * Server options that make clients unaware of Kubernetes (plain dns:, ClusterIP) reconnect now and
 * then, so new pods get connections: balance lags by at most age + grace.
 */
export function maxConnectionAgeOptions(opts: MaxConnectionAgeOptions = {}): {
  'grpc.max_connection_age_ms': number;
  'grpc.max_connection_age_grace_ms': number;
} {
  const age = checkMs(opts.maxConnectionAgeMs, 'maxConnectionAgeMs', 30_000);
  const grace = checkMs(opts.graceMs, 'graceMs', 10_000);
  if (age === 0)
    throw new InvalidOptionError('maxConnectionAgeMs', 'must be > 0; omit the options for unlimited age');
  return { 'grpc.max_connection_age_ms': age, 'grpc.max_connection_age_grace_ms': grace };
}
