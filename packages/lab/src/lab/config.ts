// The lab's run options, validated once into a frozen LabConfig: the CLI builds it from its flags,
// tests build it from a few fields, and the runner reads it as it is (no defaults of its own). Every
// default lives in LAB_DEFAULTS. Loads no grpc-js (the CLI imports it before grpc-js is configured).

import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import type { ClusterKind } from './cluster.js';

/**
 * Pods run 10 nicer than the lab's process (nice(1) is relative; as root the lab first raises itself
 * to LAB_PROCESS_NICE, so its pods sit at 0, level with outside work): on 2 cores, pods booting at
 * once (~150 ms of CPU each) would otherwise stall the clients' event loop and fail RPCs no strategy
 * lost. Much nicer is worse: pods at 19 beside a busy core answer late and every strategy loses RPCs
 * to DEADLINE_EXCEEDED (measured; docs/lab.md).
 */
export const POD_NICE = 10;

/**
 * What a pod does on SIGTERM:
 *  - kit: the server kit — NOT_SERVING, 1 s for the endpoint removal to spread, GOAWAY, finish in-flight;
 *  - plain: GOAWAY and finish in-flight at once (grpc-go's GracefulStop; the kit with no delay);
 *  - naive: no handler, the process dies at once (the east-west demo's servers).
 */
export const POD_SHUTDOWNS = ['kit', 'plain', 'naive'] as const;
export type PodShutdown = (typeof POD_SHUTDOWNS)[number];

/** The one table of lab defaults (the CLI's and the library's). */
export const LAB_DEFAULTS = Object.freeze({
  cluster: 'embedded' as ClusterKind,
  /** Client channels per strategy. */
  clients: 2,
  /** RPCs in flight per client. */
  concurrency: 5,
  // Every strategy runs at once in this process: the offered load is held about constant as
  // strategies are added (50 ms per loop for the write-ups' seven and grpc-kube's resolver, more for more).
  minPacingMs: 50,
  pacingMsPerStrategy: 10,
  pods: 'kit' as PodShutdown,
  podNice: POD_NICE,
  clientDefaults: false,
  tls: false,
  manifests: false,
  seed: 1,
  /**
   * startWorkload on its own (the east-west demo's client, tests): one client of 10 RPCs in rounds,
   * next round as soon as the last ends. The runner passes every field from its LabConfig instead.
   */
  workload: Object.freeze({
    clients: 1,
    concurrency: 10,
    mode: 'rounds' as 'rounds' | 'loops',
    maxRpcs: 2_000_000,
    deadlineMs: 1000,
    failurePauseMs: 0,
    pacingMs: 0,
    clientName: 'client',
    rpc: 'hello' as 'hello' | 'health',
  }),
});

/** What a caller may set; anything left out takes LAB_DEFAULTS. Errors name the CLI flags. */
export interface LabInput {
  /** How many strategies run at once (the default pacing depends on it). */
  readonly strategyCount: number;
  readonly cluster?: string;
  readonly clients?: number;
  readonly concurrency?: number;
  /** Minimum ms between a loop's RPC starts (caps the load so 2 cores can run every strategy at once). */
  readonly pacingMs?: number;
  readonly pods?: string;
  readonly clientDefaults?: boolean;
  readonly idempotent?: boolean;
  readonly hedgeMs?: number;
  readonly podCommand?: string;
  readonly podNice?: number;
  readonly tls?: boolean;
  readonly manifests?: boolean;
}

export interface LabConfig {
  readonly cluster: ClusterKind;
  readonly clients: number;
  readonly concurrency: number;
  readonly pacingMs: number;
  /** Pod SIGTERM behaviour (see POD_SHUTDOWNS). */
  readonly pods: PodShutdown;
  /** Clients use grpc-kube's client defaults (retry on UNAVAILABLE, keepalive) around their policy. */
  readonly clientDefaults: boolean;
  /** With clientDefaults: SayHello is idempotent (retried on RESOURCE_EXHAUSTED and ABORTED too). */
  readonly idempotent: boolean;
  /** With clientDefaults: hedge SayHello, a second attempt after this many ms (implies idempotent). */
  readonly hedgeMs: number | undefined;
  /** The user's gRPC server as the pods' program (`--pod-command`), instead of the lab's Hello. */
  readonly podCommand: string | undefined;
  /** CPU niceness of the pods, 0..19. */
  readonly podNice: number;
  /** Mutual TLS end to end with a CA made for the run (embedded cluster, the lab's Hello pods). */
  readonly tls: boolean;
  /**
   * Each strategy's pods, Services, RBAC, control plane and proxies from its deploy/ overlay,
   * rendered and applied as written (src/manifests/); the lab's clients dial the overlay client's TARGET.
   */
  readonly manifests: boolean;
}

export function labConfig(input: LabInput): LabConfig {
  const d = LAB_DEFAULTS;
  const cluster = input.cluster ?? d.cluster;
  if (cluster !== 'embedded' && cluster !== 'real') {
    throw new InvalidOptionError('--cluster', `must be embedded or real, got "${cluster}"`);
  }
  const clients = input.clients ?? d.clients;
  if (!Number.isInteger(clients) || clients < 1)
    throw new InvalidOptionError('--clients', 'must be an integer >= 1');
  const concurrency = input.concurrency ?? d.concurrency;
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new InvalidOptionError('concurrency', 'must be an integer >= 1');
  const pacingMs = input.pacingMs ?? Math.max(d.minPacingMs, d.pacingMsPerStrategy * input.strategyCount);
  if (!Number.isFinite(pacingMs) || pacingMs < 0)
    throw new InvalidOptionError('--pacing', 'must be a number of ms >= 0');
  const pods = (input.pods ?? d.pods) as PodShutdown;
  if (!POD_SHUTDOWNS.includes(pods))
    throw new InvalidOptionError('--pods', `must be one of ${POD_SHUTDOWNS.join(', ')}`);
  const podCommand = input.podCommand;
  if (podCommand !== undefined && podCommand.trim() === '')
    throw new InvalidOptionError('--pod-command', 'must be a command line (run by /bin/sh -c)');
  const tls = input.tls ?? d.tls;
  if (tls && podCommand !== undefined)
    throw new InvalidOptionError('--tls', "runs the lab's Hello pods only (not --pod-command)");
  const manifests = input.manifests ?? d.manifests;
  if (manifests && tls)
    throw new InvalidOptionError(
      '--manifests',
      'runs the overlays as written, in plaintext (not with --tls)',
    );
  if (manifests && podCommand !== undefined)
    throw new InvalidOptionError('--manifests', "runs the overlays' own containers (not --pod-command)");
  const hedgeMs = input.hedgeMs;
  if (hedgeMs !== undefined && !(Number.isInteger(hedgeMs) && hedgeMs > 0))
    throw new InvalidOptionError('--hedge', 'must be a whole number of ms > 0');
  const idempotent = input.idempotent ?? false;
  const clientDefaults = input.clientDefaults ?? d.clientDefaults;
  if ((idempotent || hedgeMs !== undefined) && !clientDefaults)
    throw new InvalidOptionError(idempotent ? '--idempotent' : '--hedge', 'needs --client-defaults');
  const podNice = input.podNice ?? d.podNice;
  if (!(Number.isInteger(podNice) && podNice >= 0 && podNice <= 19))
    throw new InvalidOptionError('--pod-nice', 'must be an integer 0..19');
  return Object.freeze({
    cluster,
    clients,
    concurrency,
    pacingMs,
    pods,
    clientDefaults,
    idempotent,
    hedgeMs,
    podCommand,
    podNice,
    tls,
    manifests,
  });
}
