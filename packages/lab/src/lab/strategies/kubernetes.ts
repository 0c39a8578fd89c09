// The grpc-kube strategies: the `kubernetes:` resolver watching EndpointSlices, with round_robin or
// one of our policies (P2C least-request, peak-EWMA).

import { EWMA_POLICY_NAME, P2C_POLICY_NAME } from 'grpc-kube/internal/balancer/index.js';
import type { LabStrategy } from '../strategy.js';

function kubernetesStrategy(name: string, policy: string, description: string): LabStrategy {
  return {
    name,
    description,
    flavour: 'plain',
    canRoute: false,
    async start(env) {
      return {
        target: `kubernetes:///${env.apps.plain.service}.${env.namespace}:${env.port}`,
        channelOptions: env.clientOptions(policy),
        close: async () => {},
      };
    },
  };
}

export const kubernetes = kubernetesStrategy(
  'kubernetes',
  'round_robin',
  'grpc-kube kubernetes: resolver (EndpointSlice watch) + round_robin',
);
export const kubernetesP2c = kubernetesStrategy(
  'kubernetes-p2c',
  P2C_POLICY_NAME,
  'grpc-kube kubernetes: resolver + P2C least-request',
);
export const kubernetesEwma = kubernetesStrategy(
  'kubernetes-ewma',
  EWMA_POLICY_NAME,
  'grpc-kube kubernetes: resolver + peak-EWMA',
);
