// When the tests that need the real control plane and network namespaces can run: the skip reason,
// or false. GRPC_KUBE_REAL=1 (set by scripts/test-all.sh) makes a missing build fail instead of skip.

import {
  controlPlaneBinDir,
  controlPlaneBinariesPresent,
} from '@grpc-kube/lab/internal/cluster/real/binaries.js';

export function realLabSkip(): string | false {
  const realRequired = (process.env['GRPC_KUBE_REAL'] ?? '') !== '';
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!realRequired && !controlPlaneBinariesPresent())
    return `real control plane not built (${controlPlaneBinDir()})`;
  return root ? false : 'needs root for network namespaces';
}
