// The lab's pod: one Hello server process (the east-west demo's server) on its own loopback address. It answers
// SayHello with its pod name, serves grpc.health.v1 (SERVING once its readiness delay has passed),
// and on SIGTERM behaves either like the east-west demo's naive server (dies at once) or like a well-behaved one
// (NOT_SERVING, wait for endpoint propagation, GOAWAY so in-flight RPCs finish, force after the grace).
// Run as `node dist/src/lab/pod-main.js '<PodConfig JSON>'`, or with GRPC_KUBE_POD_CONFIG set, or with
// POD_NAME / POD_IP / POD_PORT and HELLO_* variables (the lab kubelet's pod runtime); with an IPC
// channel it reports `listening`, `ready` and `terminating` to its parent. `spawnPod` does that.
// With TLS files (HELLO_TLS_CERT / _KEY / _CA, `grpc-kube lab --tls`) the gRPC port serves mutual TLS
// through the server kit (files re-read when they change) and grpc.health.v1 also answers in
// plaintext on HELLO_HEALTH_PORT, where the kubelet's readiness probe (plaintext, as Kubernetes'
// gRPC probe is) reads it.
// SIGUSR2 toggles overload: every SayHello then answers RESOURCE_EXHAUSTED with
// `grpc-retry-pushback-ms` (the overload scenario); SIGSTOP from the lab freezes it (blackhole).

import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { HealthImplementation } from 'grpc-health-check';
import { createServerKit, serverTlsCredentials, type ServerTls } from 'grpc-kube/internal/server/kit.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { POD_TLS_ENV } from './tls.js';
import {
  addGreeter,
  countFiles,
  greeting,
  ReceivedCounter,
  type HelloReply,
  type HelloRequest,
} from './hello.js';

export type ShutdownMode = 'immediate' | 'graceful';

export interface PodConfig {
  /** Pod name, returned in every reply. */
  name: string;
  /** Loopback address the pod owns, e.g. 127.0.2.7. */
  host: string;
  /** 0 picks a free port (reported in the `listening` message). */
  port: number;
  /** Added to every SayHello; the slow-pod scenario gives one pod 10× the others. */
  responseDelayMs: number;
  /** Time from listening to health SERVING (warm-up). */
  readinessDelayMs: number;
  /** What SIGTERM does: `immediate` = process exits at once (a plain server); `graceful` = drain. */
  shutdown: ShutdownMode;
  /** graceful: time between NOT_SERVING and GOAWAY, for endpoint removal to reach clients. */
  drainDelayMs: number;
  /** graceful: from SIGTERM to force-closing what is still open. */
  graceMs: number;
  /** grpc.max_connection_age_ms; 0 = unlimited. */
  maxConnectionAgeMs: number;
  /** grpc.max_connection_age_grace_ms; 0 = unlimited. */
  maxConnectionAgeGraceMs: number;
  /** The process exits by itself after this long, so a crashed lab never leaves pods behind. */
  maxLifetimeMs: number;
  /** While overloaded: the `grpc-retry-pushback-ms` sent with each RESOURCE_EXHAUSTED. */
  overloadPushbackMs: number;
  /** PEM files: with tlsCertFile and tlsKeyFile the gRPC port serves TLS; with tlsCaFile, mutual TLS. */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  tlsCaFile?: string;
  /** A second, plaintext port serving grpc.health.v1 only (the probe's); 0 = none. */
  healthPort: number;
  /** A directory where the pod keeps its counts (countFiles): SayHello requests received per client
   *  name (ReceivedCounter), rewritten every COUNT_FLUSH_MS while they change, and once more when the
   *  pod closes. */
  countDir?: string;
}

/** How often a pod with a countDir rewrites its counts: a SIGKILLed pod loses this long's (more
 *  when the disk held its last write back). */
export const COUNT_FLUSH_MS = 100;

export const POD_CONFIG_ENV = 'GRPC_KUBE_POD_CONFIG';

const DEFAULTS: Omit<PodConfig, 'name' | 'host'> = {
  port: 50051,
  responseDelayMs: 0,
  readinessDelayMs: 0,
  shutdown: 'immediate',
  drainDelayMs: 0,
  graceMs: 30_000,
  maxConnectionAgeMs: 0,
  maxConnectionAgeGraceMs: 0,
  maxLifetimeMs: 15 * 60_000,
  overloadPushbackMs: 1000,
  healthPort: 0,
};

const NUMBER_FIELDS = [
  'port',
  'responseDelayMs',
  'readinessDelayMs',
  'drainDelayMs',
  'graceMs',
  'maxConnectionAgeMs',
  'maxConnectionAgeGraceMs',
  'maxLifetimeMs',
  'overloadPushbackMs',
  'healthPort',
] as const;
const FILE_FIELDS = ['tlsCertFile', 'tlsKeyFile', 'tlsCaFile', 'countDir'] as const;

/** Validate a pod config field by field (unknown fields are errors), fill defaults, freeze. */
export function parsePodConfig(input: unknown): Readonly<PodConfig> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new InvalidOptionError('pod config', 'must be an object');
  }
  const raw = input as Record<string, unknown>;
  const known = new Set<string>(['name', 'host', 'shutdown', ...NUMBER_FIELDS, ...FILE_FIELDS]);
  for (const key of Object.keys(raw)) {
    if (!known.has(key)) throw new InvalidOptionError(`pod config.${key}`, 'is not a known field');
  }
  const out: PodConfig = { ...DEFAULTS, name: '', host: '' };
  for (const key of ['name', 'host'] as const) {
    const v = raw[key];
    if (typeof v !== 'string' || v === '')
      throw new InvalidOptionError(`pod config.${key}`, 'must be a non-empty string');
    out[key] = v;
  }
  for (const key of NUMBER_FIELDS) {
    const v = raw[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      throw new InvalidOptionError(`pod config.${key}`, 'must be a non-negative integer');
    }
    out[key] = v;
  }
  for (const key of FILE_FIELDS) {
    const v = raw[key];
    if (v === undefined) continue;
    if (typeof v !== 'string' || v === '')
      throw new InvalidOptionError(`pod config.${key}`, 'must be a file path');
    out[key] = v;
  }
  if ((out.tlsCertFile === undefined) !== (out.tlsKeyFile === undefined))
    throw new InvalidOptionError('pod config.tlsCertFile', 'and tlsKeyFile go together');
  if (out.tlsCaFile !== undefined && out.tlsCertFile === undefined)
    throw new InvalidOptionError('pod config.tlsCaFile', 'needs tlsCertFile and tlsKeyFile');
  for (const key of ['port', 'healthPort'] as const)
    if (out[key] > 65535) throw new InvalidOptionError(`pod config.${key}`, 'must be <= 65535');
  if (raw['shutdown'] !== undefined) {
    if (raw['shutdown'] !== 'immediate' && raw['shutdown'] !== 'graceful') {
      throw new InvalidOptionError('pod config.shutdown', 'must be "immediate" or "graceful"');
    }
    out.shutdown = raw['shutdown'];
  }
  return Object.freeze(out);
}

/** Messages a pod process sends its parent over IPC. */
export type PodMessage =
  | { type: 'listening'; host: string; port: number }
  | { type: 'ready' }
  | { type: 'terminating' }
  | { type: 'error'; message: string };

export interface RunningPod {
  readonly config: Readonly<PodConfig>;
  readonly port: number;
  /** The plaintext health port (0 without one). */
  readonly healthPort: number;
  readonly server: grpc.Server;
  readonly health: HealthImplementation;
  /** Resolves when health turns SERVING. */
  readonly ready: Promise<void>;
  /** The graceful sequence (NOT_SERVING, drainDelayMs, GOAWAY, force at graceMs); resolves when closed. */
  drain(): Promise<void>;
  /** Close at once, cancelling in-flight RPCs and pending timers. */
  close(): void;
  /** Shed every SayHello with RESOURCE_EXHAUSTED and pushback (true), or serve again (false). */
  overload(on: boolean): void;
  /** SayHello requests received so far, by HelloRequest.client. */
  received(): Record<string, number>;
}

export interface PodHooks {
  onReady?: () => void;
  onTerminating?: () => void;
}

/** Start the pod's server in this process (the pod process uses this; so can tests). */
export async function startPod(config: Readonly<PodConfig>, hooks: PodHooks = {}): Promise<RunningPod> {
  const options: grpc.ServerOptions = {};
  if (config.maxConnectionAgeMs > 0) options['grpc.max_connection_age_ms'] = config.maxConnectionAgeMs;
  if (config.maxConnectionAgeGraceMs > 0)
    options['grpc.max_connection_age_grace_ms'] = config.maxConnectionAgeGraceMs;
  const server = new grpc.Server(options);
  // The product's server kit runs the pod's health and its SIGTERM sequence (NOT_SERVING, wait
  // drainDelayMs for the endpoint removal to spread, GOAWAY, force-close at graceMs): the lab
  // exercises the same code users deploy.
  const kit = createServerKit(server, {
    services: ['hello.Greeter'],
    livenessService: null,
    propagationDelayMs: config.drainDelayMs,
    graceMs: config.graceMs,
    signals: [],
    exit: null,
  });
  const health = kit.health;

  const timers = new Set<NodeJS.Timeout>();
  let closed = false;
  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  const received = new ReceivedCounter();
  const files = config.countDir !== undefined ? countFiles(config.countDir, config.name) : undefined;
  const cannotWrite = (file: string, err: unknown): void => {
    process.stderr.write(`pod ${config.name}: cannot write ${file}: ${String(err)}\n`);
  };
  // One write at a time, off the event loop (ReceivedCounter.flush says why): a tick that finds the
  // last write still held by the disk skips.
  let writing = false;
  const flushCounts = (): void => {
    if (files === undefined || writing || closed) return;
    writing = true;
    received
      .flush(files.live)
      .catch((err: unknown) => cannotWrite(files.live, err))
      .finally(() => (writing = false));
  };
  const finalCounts = (): void => {
    if (files === undefined) return;
    try {
      received.flushSync(files.final);
    } catch (err) {
      cannotWrite(files.final, err);
    }
  };
  const flusher = files !== undefined ? setInterval(flushCounts, COUNT_FLUSH_MS) : undefined;
  flusher?.unref();

  let overloaded = false;
  addGreeter(server, (request: HelloRequest): HelloReply | Promise<HelloReply> => {
    received.add(request.client);
    if (overloaded) {
      const metadata = new grpc.Metadata();
      metadata.set('grpc-retry-pushback-ms', String(config.overloadPushbackMs));
      throw { code: grpc.status.RESOURCE_EXHAUSTED, details: `${config.name} is overloaded`, metadata };
    }
    const reply = { message: greeting(config.name, request), pod: config.name };
    if (config.responseDelayMs === 0) return reply;
    return new Promise((resolve) => later(config.responseDelayMs, () => resolve(reply)));
  });

  let tls: ServerTls | undefined;
  if (config.tlsCertFile !== undefined && config.tlsKeyFile !== undefined) {
    tls = await serverTlsCredentials(
      {
        certFile: config.tlsCertFile,
        keyFile: config.tlsKeyFile,
        ...(config.tlsCaFile !== undefined ? { caFile: config.tlsCaFile } : {}),
      },
      (err) =>
        process.stderr.write(`pod ${config.name}: ${err.code}: ${err.message} (previous files kept)\n`),
    );
  }
  // The probe's port: grpc.health.v1 in plaintext, the same health state as the gRPC port's.
  let healthServer: grpc.Server | undefined;
  let port: number;
  let healthPort = 0;
  try {
    port = await bind(
      server,
      config,
      config.port,
      tls?.credentials ?? grpc.ServerCredentials.createInsecure(),
    );
    if (config.healthPort > 0) {
      healthServer = new grpc.Server();
      health.addToServer(healthServer);
      healthPort = await bind(
        healthServer,
        config,
        config.healthPort,
        grpc.ServerCredentials.createInsecure(),
      );
    }
  } catch (err) {
    server.forceShutdown();
    healthServer?.forceShutdown();
    tls?.close();
    throw err;
  }

  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  let terminating = false;
  later(config.readinessDelayMs, () => {
    if (terminating || closed) return;
    kit.setServing();
    markReady();
    hooks.onReady?.();
  });

  let onClosed: () => void = () => {};
  const closedP = new Promise<void>((resolve) => (onClosed = resolve));
  const close = (): void => {
    if (closed) return;
    closed = true;
    clearInterval(flusher);
    finalCounts();
    for (const t of timers) clearTimeout(t);
    timers.clear();
    server.forceShutdown();
    healthServer?.forceShutdown();
    tls?.close();
    onClosed(); // a drain in progress ends here too
  };

  let draining: Promise<void> | undefined;
  const drain = (): Promise<void> => {
    if (closed) return Promise.resolve();
    draining ??= (async () => {
      terminating = true;
      hooks.onTerminating?.();
      await Promise.race([kit.shutdown('SIGTERM'), closedP]);
      close();
    })();
    return draining;
  };

  const overload = (on: boolean): void => {
    overloaded = on;
  };
  return {
    config,
    port,
    healthPort,
    server,
    health,
    ready,
    drain,
    close,
    overload,
    received: () => received.snapshot(),
  };
}

function bind(
  server: grpc.Server,
  config: Readonly<PodConfig>,
  port: number,
  credentials: grpc.ServerCredentials,
): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(`${config.host}:${port}`, credentials, (err, bound) => {
      if (err)
        reject(
          new GrpcKubeError(
            'GK_ERR_LAB',
            `pod ${config.name}: cannot listen on ${config.host}:${port}: ${err.message}`,
            { cause: err },
          ),
        );
      else resolve(bound);
    });
  });
}

function send(message: PodMessage): void {
  if (process.send && process.connected) process.send(message);
}

/** Environment variables a pod reads when no JSON config is given (the lab kubelet's pod runtime
 *  sets POD_NAME, POD_IP and POD_PORT; the Pod spec's container env sets the HELLO_* ones). */
export const POD_ENV: Readonly<Record<string, keyof PodConfig>> = Object.freeze({
  POD_NAME: 'name',
  POD_IP: 'host',
  POD_PORT: 'port',
  HELLO_RESPONSE_DELAY_MS: 'responseDelayMs',
  HELLO_READINESS_DELAY_MS: 'readinessDelayMs',
  HELLO_SHUTDOWN: 'shutdown',
  HELLO_DRAIN_DELAY_MS: 'drainDelayMs',
  HELLO_GRACE_MS: 'graceMs',
  HELLO_MAX_CONNECTION_AGE_MS: 'maxConnectionAgeMs',
  HELLO_MAX_CONNECTION_AGE_GRACE_MS: 'maxConnectionAgeGraceMs',
  HELLO_MAX_LIFETIME_MS: 'maxLifetimeMs',
  HELLO_OVERLOAD_PUSHBACK_MS: 'overloadPushbackMs',
  HELLO_HEALTH_PORT: 'healthPort',
  HELLO_COUNT_DIR: 'countDir',
  [POD_TLS_ENV.cert]: 'tlsCertFile',
  [POD_TLS_ENV.key]: 'tlsKeyFile',
  [POD_TLS_ENV.ca]: 'tlsCaFile',
});

/** Pod config from POD_* / HELLO_* environment variables (see POD_ENV). */
export function podConfigFromEnv(env: NodeJS.ProcessEnv): Readonly<PodConfig> {
  const raw: Record<string, unknown> = {};
  for (const [variable, field] of Object.entries(POD_ENV)) {
    const value = env[variable];
    if (value === undefined || value === '') continue;
    if (['name', 'host', 'shutdown', ...FILE_FIELDS].includes(field)) {
      raw[field] = value;
    } else {
      if (!/^\d+$/.test(value))
        throw new InvalidOptionError(variable, `must be a non-negative integer, got "${value}"`);
      raw[field] = Number(value);
    }
  }
  return parsePodConfig(raw);
}

function readConfigFromProcess(): Readonly<PodConfig> {
  const text = process.argv[2] ?? process.env[POD_CONFIG_ENV];
  if (text === undefined || text === '') return podConfigFromEnv(process.env);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new InvalidOptionError('pod config', `is not JSON: ${String(err)}`);
  }
  return parsePodConfig(parsed);
}

async function main(): Promise<void> {
  const config = readConfigFromProcess();
  // An orphaned pod (lab crashed, IPC gone) must not outlive the lab.
  setTimeout(() => process.exit(0), config.maxLifetimeMs).unref();
  process.on('disconnect', () => process.exit(0));

  const pod = await startPod(config, {
    onReady: () => send({ type: 'ready' }),
    onTerminating: () => send({ type: 'terminating' }),
  });
  let overloaded = false;
  process.on('SIGUSR2', () => {
    overloaded = !overloaded;
    pod.overload(overloaded);
  });
  if (config.shutdown === 'graceful') {
    process.on('SIGTERM', () => {
      void pod.drain().then(() => process.exit(0));
    });
  }
  // shutdown 'immediate': no SIGTERM handler, so Node's default applies — the process dies at once and
  // the kernel closes its connections, exactly like the east-west demo's server without a shutdown hook.
  send({ type: 'listening', host: config.host, port: pod.port });
}

export interface PodExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface PodProcess {
  readonly pid: number;
  readonly config: Readonly<PodConfig>;
  /** Resolves with the bound address once the server listens; rejects if the process exits first. */
  readonly listening: Promise<{ host: string; port: number }>;
  /** Resolves when the pod reports Ready; rejects if the process exits first. */
  readonly ready: Promise<void>;
  /** Resolves when the pod reports it started its graceful shutdown (never for `immediate`). */
  readonly terminating: Promise<void>;
  readonly exited: Promise<PodExit>;
  kill(signal?: NodeJS.Signals): boolean;
  /** The last few KB of the pod's stderr, for error messages. */
  stderrTail(): string;
}

/** Path of this script, to run as a pod (e.g. NodeScriptRuntime's `script`). */
export const POD_MAIN_SCRIPT = fileURLToPath(import.meta.url);

/** Fork a pod process and follow it over IPC. Kill it in `t.after` / on lab teardown. */
export function spawnPod(input: Partial<PodConfig> & Pick<PodConfig, 'name' | 'host'>): PodProcess {
  const config = parsePodConfig(input);
  const env = { ...process.env };
  delete env[POD_CONFIG_ENV];
  const child: ChildProcess = fork(POD_MAIN_SCRIPT, [JSON.stringify(config)], {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env,
  });
  let tail = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    tail = (tail + chunk).slice(-4096);
  });

  let onListening!: (a: { host: string; port: number }) => void;
  let onReady!: () => void;
  let onTerminating!: () => void;
  let fail!: (err: Error) => void;
  const listening = new Promise<{ host: string; port: number }>((resolve, reject) => {
    onListening = resolve;
    fail = reject;
  });
  let failReady!: (err: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    onReady = resolve;
    failReady = reject;
  });
  const terminating = new Promise<void>((resolve) => (onTerminating = resolve));
  // A pod that dies before Ready is a normal lab event; callers that care await these.
  listening.catch(() => {});
  ready.catch(() => {});

  child.on('message', (m: PodMessage) => {
    if (m.type === 'listening') onListening({ host: m.host, port: m.port });
    else if (m.type === 'ready') onReady();
    else if (m.type === 'terminating') onTerminating();
  });
  const exited = new Promise<PodExit>((resolve) => {
    child.once('exit', (code, signal) => {
      const err = new GrpcKubeError(
        'GK_ERR_LAB',
        `pod ${config.name} exited (code ${code}, signal ${signal}) before it was ready` +
          (tail ? `; stderr: ${tail.trim()}` : ''),
      );
      fail(err);
      failReady(err);
      resolve({ code, signal });
    });
  });
  child.once('error', (err) => {
    fail(err);
    failReady(err);
  });

  return {
    pid: child.pid ?? -1,
    config,
    listening,
    ready,
    terminating,
    exited,
    kill: (signal = 'SIGTERM') => child.exitCode === null && child.signalCode === null && child.kill(signal),
    stderrTail: () => tail,
  };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    send({ type: 'error', message });
    process.stderr.write(`pod: ${message}\n`);
    process.exit(1);
  });
}
