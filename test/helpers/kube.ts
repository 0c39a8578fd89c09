// Test fixtures on the embedded API server: EndpointSlices of a Service written through the store
// (as the EndpointSlice controller would), read back by the code under test over real HTTP.

import { EmbeddedApiServer } from '../../src/cluster/apiserver.js';
import { RESOURCES } from '../../src/cluster/store-api.js';
import { SERVICE_NAME_LABEL, type EndpointSlice, type SliceEndpoint } from '../../src/kube/types.js';

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

/** Poll `check` on every tick of the event loop (and at most every `everyMs`) until it holds. */
export async function until(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  everyMs = 5,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
