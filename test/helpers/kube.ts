// Test fixtures on the embedded API server: EndpointSlices of a Service written through the store
// (as the EndpointSlice controller would), read back by the code under test over real HTTP.

import { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import type { KubernetesEndpointSource } from 'grpc-kube/internal/discovery/kube-source.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { SERVICE_NAME_LABEL, type EndpointSlice, type SliceEndpoint } from 'grpc-kube/internal/kube/types.js';

export interface Ep {
  ip: string;
  ready?: boolean | null;
  serving?: boolean;
  terminating?: boolean;
  pod?: string;
}

export function sliceEndpoint(e: Ep): SliceEndpoint {
  return {
    addresses: [e.ip],
    conditions: {
      ready: e.ready === undefined ? true : e.ready,
      serving: e.serving ?? e.ready !== false,
      terminating: e.terminating ?? false,
    },
    targetRef: { kind: 'Pod', namespace: 'default', name: e.pod ?? `pod-${e.ip}` },
  };
}

export class SliceWriter {
  constructor(
    readonly api: EmbeddedApiServer,
    readonly service: string,
    readonly port: number,
    readonly namespace = 'default',
    readonly portName = 'grpc',
  ) {}

  /** Create or replace the slice `name` with these endpoints. */
  put(name: string, eps: Ep[]): void {
    const store = this.api.store;
    const existing = store.get<EndpointSlice>(RESOURCES.endpointslices, this.namespace, name);
    const slice: EndpointSlice = {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name, namespace: this.namespace, labels: { [SERVICE_NAME_LABEL]: this.service } },
      addressType: 'IPv4',
      endpoints: eps.map(sliceEndpoint),
      ports: [{ name: this.portName, port: this.port, protocol: 'TCP' }],
    };
    if (existing === undefined) store.create(RESOURCES.endpointslices, slice);
    else
      store.update(RESOURCES.endpointslices, {
        ...slice,
        metadata: { ...existing.metadata, labels: slice.metadata.labels },
      });
  }

  remove(name: string): void {
    this.api.store.delete(RESOURCES.endpointslices, this.namespace, name);
  }
}

export async function startApi(opts: { bookmarkIntervalMs?: number } = {}): Promise<EmbeddedApiServer> {
  const api = new EmbeddedApiServer({ bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 60_000 });
  await api.start();
  return api;
}

export { until } from './wait.js';

/** Subscribes to port 50051 of `src`; the returned function reads the addresses it serves now. */
export function servedIps(src: KubernetesEndpointSource): () => string {
  let ips = '';
  src.subscribe(
    { kind: 'number', port: 50051 },
    {
      onEndpoints: (v) =>
        (ips = v
          .endpoints()
          .map((e) => e.address)
          .join()),
      onError: () => {},
    },
  );
  return () => ips;
}
