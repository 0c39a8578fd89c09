// Where the real control plane's binaries live. Mirrors scripts/build-control-plane.sh: the versions
// pinned in go/kube/go.mod and go/etcd/go.mod name the cache directory, so a version bump can never
// pick up a stale binary. test/cluster-real/control-plane.test.ts checks these constants against the
// go.mod files.

import { accessSync, constants } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

/** Kubernetes release built from go/kube (k8s.io/kubernetes, staging modules at v0.<minor>.<patch>). */
export const KUBE_VERSION = 'v1.36.3';
/** etcd release built from go/etcd (go.etcd.io/etcd/server/v3). */
export const ETCD_VERSION = 'v3.6.16';

export const BUILD_SCRIPT = 'scripts/build-control-plane.sh';

export interface ControlPlaneBinaries {
  readonly dir: string;
  readonly etcd: string;
  readonly kubeApiserver: string;
  readonly kubeControllerManager: string;
}

/**
 * The directory the build script writes to: `$GRPC_KUBE_BIN_DIR` if set (binaries built elsewhere),
 * else `${GRPC_KUBE_CACHE:-~/.cache/grpc-kube}/bin/kube-<v>-etcd-<v>`.
 */
export function controlPlaneBinDir(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env['GRPC_KUBE_BIN_DIR'];
  if (explicit !== undefined && explicit !== '') return explicit;
  const cache = env['GRPC_KUBE_CACHE'] || join(homedir(), '.cache', 'grpc-kube');
  return join(cache, 'bin', `kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}`);
}

function binariesIn(dir: string): ControlPlaneBinaries {
  return {
    dir,
    etcd: join(dir, 'etcd'),
    kubeApiserver: join(dir, 'kube-apiserver'),
    kubeControllerManager: join(dir, 'kube-controller-manager'),
  };
}

function missingIn(bins: ControlPlaneBinaries): string[] {
  const missing: string[] = [];
  for (const path of [bins.etcd, bins.kubeApiserver, bins.kubeControllerManager]) {
    try {
      accessSync(path, constants.X_OK);
    } catch {
      missing.push(path);
    }
  }
  return missing;
}

/** True when all three binaries are present and executable; never throws. */
export function controlPlaneBinariesPresent(env: NodeJS.ProcessEnv = process.env): boolean {
  return missingIn(binariesIn(controlPlaneBinDir(env))).length === 0;
}

/**
 * The three binaries, or a GK_ERR_LAB error naming the missing ones and the command that builds them.
 * `dir` overrides the lookup (for callers that built them somewhere else).
 */
export function findControlPlaneBinaries(
  dir?: string,
  env: NodeJS.ProcessEnv = process.env,
): ControlPlaneBinaries {
  const bins = binariesIn(dir ?? controlPlaneBinDir(env));
  const missing = missingIn(bins);
  if (missing.length > 0) {
    throw new GrpcKubeError(
      'GK_ERR_LAB',
      `the real control plane (Kubernetes ${KUBE_VERSION}, etcd ${ETCD_VERSION}) is not built: ` +
        `missing ${missing.join(', ')}. Run \`${BUILD_SCRIPT}\` from the repository root ` +
        `(needs Go >= 1.26; the first build takes 10-25 minutes), or set GRPC_KUBE_BIN_DIR to a ` +
        `directory holding etcd, kube-apiserver and kube-controller-manager`,
    );
  }
  return bins;
}
