// grpc-js-xds reads its bootstrap once, when the first xds: channel builds its xDS client, and
// registers the xds: scheme on register(). This module does both, once per process, for an
// in-process control plane (lab, benchmarks, demos): it pins the ADS address so later control
// planes in the same process must listen on the same address (the client reconnects to it).

import { GrpcKubeError, missingPackage } from 'grpc-kube/internal/errors.js';
import { xdsBootstrapJson } from './bootstrap.js';

let registeredAddress: string | undefined;

/** The address the process's grpc-js-xds client dials, once registered. */
export function registeredXdsAddress(): string | undefined {
  return registeredAddress;
}

/**
 * Set GRPC_XDS_BOOTSTRAP_CONFIG for `address` and register @grpc/grpc-js-xds. Idempotent for the same
 * address; a different address after registration is an error (the client cannot be re-pointed).
 */
export async function registerXdsClientOnce(address: string, nodeId: string, zone = ''): Promise<void> {
  if (registeredAddress !== undefined) {
    if (registeredAddress === address) return;
    throw new GrpcKubeError(
      'GK_ERR_LAB',
      `grpc-js-xds in this process already points at ${registeredAddress}; start the control plane on that address, not ${address}`,
    );
  }
  const preset = process.env['GRPC_XDS_BOOTSTRAP_CONFIG'] ?? process.env['GRPC_XDS_BOOTSTRAP'];
  if (preset !== undefined && !preset.includes(address)) {
    throw new GrpcKubeError(
      'GK_ERR_LAB',
      'GRPC_XDS_BOOTSTRAP(_CONFIG) is already set for another control plane; unset it to let grpc-kube point the xDS client at its own',
    );
  }
  process.env['GRPC_XDS_BOOTSTRAP_CONFIG'] = xdsBootstrapJson({ server: address, nodeId, zone });
  const mod = (await import('@grpc/grpc-js-xds').catch((err: unknown) => {
    throw missingPackage('@grpc/grpc-js-xds', 'the proxyless xDS client', err);
  })) as { register(): void };
  mod.register();
  registeredAddress = address;
}
