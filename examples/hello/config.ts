// Environment of the Hello example's server and client, read once at start-up and checked field by
// field: a bad value stops the process with GK_ERR_INVALID_OPTION naming the variable, instead of
// a pod that runs with a silently wrong setting. The manifests in deploy/ set exactly these variables.

import { hostname } from 'node:os';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';

export type Env = Readonly<Record<string, string | undefined>>;

export interface HelloServerConfig {
  /** Returned in every reply: who answered. POD_NAME (downward API), else the host name. */
  readonly podName: string;
  /** Extra tag in replies, e.g. v1 / v2 for the canary. VERSION; default ''. */
  readonly version: string;
  /** LISTEN_HOST, else POD_IP (the lab sets it), else 0.0.0.0. */
  readonly host: string;
  /** PORT, default 50051. */
  readonly port: number;
  /** DRAIN_PROPAGATION_MS: NOT_SERVING → GOAWAY. Default 5000 (the kit's default). */
  readonly propagationDelayMs: number;
  /** DRAIN_GRACE_MS: GOAWAY → force-close. Default 20000 (the kit's default). */
  readonly graceMs: number;
  /** MAX_CONNECTION_AGE_MS: 0 (default) = connections live forever. */
  readonly maxConnectionAgeMs: number;
  /** MAX_CONNECTION_AGE_GRACE_MS: default 10000 when an age is set. */
  readonly maxConnectionAgeGraceMs: number;
  /** LOG_RPCS=1 prints one line per answered RPC (the east-west demo's server did). Default off. */
  readonly logRpcs: boolean;
}

export interface HelloClientConfig {
  /** TARGET; default kubernetes:///hello.<POD_NAMESPACE or default>:50051. */
  readonly target: string;
  /** CLIENT_ID (sent in every request), else POD_NAME, else the host name. */
  readonly clientId: string;
  /** CONCURRENCY: RPCs per round, all in flight together. Default 10 (the east-west demo). */
  readonly concurrency: number;
  /** INTERVAL_MS: pause between rounds. Default 1000. */
  readonly intervalMs: number;
  /** ROUNDS: 0 (default) = forever. */
  readonly rounds: number;
  /** DEADLINE_MS per RPC. Default 2000. */
  readonly deadlineMs: number;
  /** LB_POLICY: round_robin (default), pick_first, grpc_kube_p2c, grpc_kube_ewma. */
  readonly lbPolicy: string;
  /**
   * AUTHORITY: the :authority sent instead of the target's (grpc.default_authority). The sidecar
   * proxy reads the Service to call from it (`hello.<ns>:50051`) while the client dials localhost.
   */
  readonly authority: string | undefined;
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new InvalidOptionError(name, `must be an integer in [${min}, ${max}], got "${raw}"`);
  }
  return Number(raw);
}

function str(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === '' ? undefined : v;
}

function flag(env: Env, name: string): boolean {
  const v = str(env, name);
  if (v === undefined || v === '0' || v === 'false') return false;
  if (v === '1' || v === 'true') return true;
  throw new InvalidOptionError(name, `must be 1/true or 0/false, got "${v}"`);
}

const MAX_MS = 2 ** 31 - 1;

export function serverConfigFromEnv(env: Env): HelloServerConfig {
  const maxConnectionAgeMs = int(env, 'MAX_CONNECTION_AGE_MS', 0, 0, MAX_MS);
  return Object.freeze({
    podName: str(env, 'POD_NAME') ?? hostname(),
    version: str(env, 'VERSION') ?? '',
    host: str(env, 'LISTEN_HOST') ?? str(env, 'POD_IP') ?? '0.0.0.0',
    port: int(env, 'PORT', 50051, 0, 65535),
    propagationDelayMs: int(env, 'DRAIN_PROPAGATION_MS', 5000, 0, MAX_MS),
    graceMs: int(env, 'DRAIN_GRACE_MS', 20000, 0, MAX_MS),
    maxConnectionAgeMs,
    maxConnectionAgeGraceMs: int(env, 'MAX_CONNECTION_AGE_GRACE_MS', 10000, 0, MAX_MS),
    logRpcs: flag(env, 'LOG_RPCS'),
  });
}

export function clientConfigFromEnv(env: Env): HelloClientConfig {
  const ns = str(env, 'POD_NAMESPACE') ?? 'default';
  const lbPolicy = str(env, 'LB_POLICY') ?? 'round_robin';
  if (!/^[A-Za-z0-9_.-]+$/.test(lbPolicy)) {
    throw new InvalidOptionError('LB_POLICY', `must be a policy name such as round_robin, got "${lbPolicy}"`);
  }
  return Object.freeze({
    target: str(env, 'TARGET') ?? `kubernetes:///hello.${ns}:50051`,
    clientId: str(env, 'CLIENT_ID') ?? str(env, 'POD_NAME') ?? hostname(),
    concurrency: int(env, 'CONCURRENCY', 10, 1, 1000),
    intervalMs: int(env, 'INTERVAL_MS', 1000, 0, MAX_MS),
    rounds: int(env, 'ROUNDS', 0, 0, MAX_MS),
    deadlineMs: int(env, 'DEADLINE_MS', 2000, 1, MAX_MS),
    lbPolicy,
    authority: str(env, 'AUTHORITY'),
  });
}
