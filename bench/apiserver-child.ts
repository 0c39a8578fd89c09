// An embedded API server in its own process, so the resolver bench measures only the client's CPU.
// Holds one Service with 5,000 endpoints in 50 slices; on {mutate: n} it modifies n slices (one
// endpoint's readiness each) and answers {mutated: n}.
import { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { SERVICE_NAME_LABEL, type EndpointSlice } from 'grpc-kube/internal/kube/types.js';

const SLICES = 50;
const PER_SLICE = 100;
const api = new EmbeddedApiServer();
await api.start();
const slice = (i: number, flip: number): EndpointSlice => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `big-${i}`, namespace: 'default', labels: { [SERVICE_NAME_LABEL]: 'big' } },
  addressType: 'IPv4',
  endpoints: Array.from({ length: PER_SLICE }, (_, j) => ({
    addresses: [`10.${100 + i}.${j >> 8}.${j & 255}`],
    conditions: { ready: j !== flip, serving: true, terminating: false },
    nodeName: `node-${j % 10}`,
    zone: `zone-${j % 3}`,
    targetRef: { kind: 'Pod', namespace: 'default', name: `big-${i}-${j}` },
  })),
  ports: [{ name: 'grpc', port: 50051, protocol: 'TCP' }],
});
for (let i = 0; i < SLICES; i++) api.store.create(RESOURCES.endpointslices, slice(i, -1));
let round = 0;
const mutate = (n: number): void => {
  for (let k = 0; k < n; k++) {
    const i = k % SLICES;
    const cur = api.store.get<EndpointSlice>(RESOURCES.endpointslices, 'default', `big-${i}`);
    api.store.update(RESOURCES.endpointslices, { ...slice(i, round % PER_SLICE), metadata: cur!.metadata });
    if (i === SLICES - 1) round++;
  }
};
process.on('message', (m: { mutate?: number; batch?: number; everyMs?: number; exit?: boolean }) => {
  if (m.exit) {
    void api.close().then(() => process.exit(0));
    return;
  }
  // n updates in batches, paced so the watch stream never backs up.
  let left = m.mutate ?? 0;
  const batch = m.batch ?? 50;
  const tick = (): void => {
    const n = Math.min(batch, left);
    mutate(n);
    left -= n;
    if (left > 0) setTimeout(tick, m.everyMs ?? 20);
    else process.send?.({ mutated: m.mutate });
  };
  tick();
});
process.send?.({ kubeconfig: api.kubeConfigYaml() });
