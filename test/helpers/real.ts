// When the tests that need the real control plane and network namespaces can run: the skip reason,
// or false. GRPC_KUBE_REAL=1 (set by scripts/test-all.sh) makes a missing build fail instead of skip.

import {
  controlPlaneBinDir,
  controlPlaneBinariesPresent,
} from '@grpc-kube/lab/internal/cluster/real/binaries.js';
import {
  startRealControlPlane,
  type RealControlPlane,
} from '@grpc-kube/lab/internal/cluster/real/control-plane.js';
import { httpKube, type Kube } from '@grpc-kube/lab/internal/cluster/kube-api.js';

export function realLabSkip(): string | false {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  return realControlPlaneSkip() || (root ? false : 'needs root for network namespaces');
}

/** When a test needs only the real control plane (no network namespaces): the skip reason, or false. */
export function realControlPlaneSkip(): string | false {
  const realRequired = (process.env['GRPC_KUBE_REAL'] ?? '') !== '';
  return realRequired || controlPlaneBinariesPresent()
    ? false
    : `real control plane not built (${controlPlaneBinDir()})`;
}

/**
 * A real kube-apiserver with the namespace and serviceaccount controllers, and the admin's Kube on it
 * that rides out the server's first seconds; both stop when the test ends.
 */
export async function startRealApi(t: { after(fn: () => unknown): void }): Promise<{
  cp: RealControlPlane;
  kube: Kube;
}> {
  const cp = await startRealControlPlane({
    controllers: ['namespace-controller', 'serviceaccount-controller'],
  });
  t.after(() => cp.stop());
  const kube = httpKube(cp.adminKubeConfig, { retryTransientMs: 30_000 });
  t.after(() => kube.close());
  return { cp, kube };
}
