// The embedded lab cluster: MemoryStore + EmbeddedApiServer (real HTTP, what clients and resolvers
// talk to) + the Deployment, ReplicaSet and EndpointSlice controllers + the lab kubelet running pods
// through a given PodRuntime. Controllers use the store directly and the kubelet the store's Kube
// (storeKube), as kube-controller-manager and the kubelet would a never-failing API; an API outage
// (apiServer.stop()) therefore cuts off only the clients, which is what the lab's outage scenario
// measures. What the lab and the tests do to workloads (apply, scale, waits) is workloads.ts over
// that Kube, as on the real cluster over HTTP.

import { MemoryStore } from './store.js';
import { EmbeddedApiServer, type AccessRule, type EmbeddedApiServerOptions } from './apiserver.js';
import { EmbeddedServiceAccounts } from './service-account.js';
import { DeploymentController } from './controllers/deployment.js';
import { ReplicaSetController } from './controllers/replicaset.js';
import { EndpointSliceController } from './controllers/endpointslice.js';
import { IpPool, Kubelet, type IpAllocator, type KubeletNode } from './kubelet.js';
import type { PodRuntime } from './pod-runtime.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { storeKube, type Kube } from './kube-api.js';
import { workloads, type Workloads } from './workloads.js';

export { deploymentManifest, headlessServiceManifest, type AppSpec } from './workloads.js';

export interface EmbeddedClusterOptions {
  readonly runtime: PodRuntime;
  /** Default: two nodes, lab-node-1 in zone-a and lab-node-2 in zone-b. */
  readonly nodes?: readonly KubeletNode[];
  /** Pod addresses: a pool from `first` (default 127.0.2.1), or your own allocator. */
  readonly ipPool?: { readonly first?: string; readonly count?: number } | IpAllocator;
  /** Readiness probe period for every pod (default: each pod's own, 10 s when unset). */
  readonly probePeriodMs?: number;
  readonly maxEndpointsPerSlice?: number;
  readonly endpointSliceBatchMs?: number;
  /** Options of the HTTP API server (host, port, tokens, bookmarks…); its store is always ours. */
  readonly apiServer?: Omit<EmbeddedApiServerOptions, 'store'>;
  /** Namespaces to create at start (default, kube-system… exist already). */
  readonly namespaces?: readonly string[];
  /** Reconcile and pod errors (each is retried or reported once); default: ignored. */
  readonly onError?: (where: string, key: string, err: unknown) => void;
  readonly random?: () => number;
  /**
   * Project a ServiceAccount token into each pod (service-account.ts): its containers reach this API
   * server as system:serviceaccount:NS:NAME with `rules` (default none: every request is a 403).
   * Needs `apiServer.tls` (in-cluster configuration speaks HTTPS).
   */
  readonly serviceAccountTokens?: {
    readonly rules?: (namespace: string, serviceAccount: string) => readonly AccessRule[];
  };
}

export interface EmbeddedCluster extends Workloads {
  readonly store: MemoryStore;
  /** The store behind the Kube contract: the lab's own calls, which an API outage does not cut. */
  readonly kube: Kube;
  readonly apiServer: EmbeddedApiServer;
  readonly kubelet: Kubelet;
  readonly controllers: {
    readonly deployment: DeploymentController;
    readonly replicaSet: ReplicaSetController;
    readonly endpointSlice: EndpointSliceController;
  };
  /** Resolves when every controller and the kubelet have nothing queued. */
  settled(): Promise<void>;
  /** Stops controllers and kubelet (pod processes: SIGTERM, then SIGKILL) and closes the API server. */
  stop(): Promise<void>;
}

export async function startEmbeddedCluster(opts: EmbeddedClusterOptions): Promise<EmbeddedCluster> {
  const store = new MemoryStore(opts.random ? { random: opts.random } : {});
  const kube = storeKube(store);
  const w = workloads(kube);
  for (const ns of opts.namespaces ?? []) await w.ensureNamespace(ns);
  const apiServer = new EmbeddedApiServer({ ...(opts.apiServer ?? {}), store });
  const report = (where: string) => (key: string, err: unknown) => opts.onError?.(where, key, err);
  const replicaSet = new ReplicaSetController(store, {
    onError: report('replicaset'),
    ...(opts.random ? { random: opts.random } : {}),
  });
  const deployment = new DeploymentController(store, { onError: report('deployment') });
  const endpointSlice = new EndpointSliceController(store, {
    onError: report('endpointslice'),
    ...(opts.maxEndpointsPerSlice !== undefined ? { maxEndpointsPerSlice: opts.maxEndpointsPerSlice } : {}),
    ...(opts.endpointSliceBatchMs !== undefined ? { batchMs: opts.endpointSliceBatchMs } : {}),
  });
  const pool = opts.ipPool;
  const ipAllocator: IpAllocator = pool && 'allocate' in pool ? pool : new IpPool(pool ?? {});
  let accounts: EmbeddedServiceAccounts | undefined;
  if (opts.serviceAccountTokens !== undefined) {
    const tls = opts.apiServer?.tls;
    if (tls === undefined) {
      throw new InvalidOptionError(
        'serviceAccountTokens',
        'needs apiServer.tls: in-cluster configuration reaches the API over HTTPS',
      );
    }
    accounts = new EmbeddedServiceAccounts(apiServer, {
      caPem: String(tls.ca ?? tls.cert),
      ...(opts.serviceAccountTokens.rules ? { rules: opts.serviceAccountTokens.rules } : {}),
    });
  }
  const kubelet = new Kubelet(storeKube(store), {
    runtime: opts.runtime,
    ...(accounts ? { podEnvironment: accounts } : {}),
    nodes: opts.nodes ?? [
      { name: 'lab-node-1', zone: 'zone-a' },
      { name: 'lab-node-2', zone: 'zone-b' },
    ],
    ipAllocator,
    ...(opts.probePeriodMs !== undefined ? { probePeriodMs: opts.probePeriodMs } : {}),
    onError: report('kubelet'),
  });
  await apiServer.start();
  replicaSet.start();
  deployment.start();
  endpointSlice.start();
  await kubelet.start();
  let stopping: Promise<void> | undefined;
  return {
    ...w,
    store,
    kube,
    apiServer,
    kubelet,
    controllers: { deployment, replicaSet, endpointSlice },
    settled: async () => {
      await Promise.all([deployment.idle(), replicaSet.idle(), endpointSlice.idle(), kubelet.idle()]);
    },
    stop: () => {
      stopping ??= (async () => {
        deployment.stop();
        replicaSet.stop();
        endpointSlice.stop();
        await kubelet.stop();
        kube.close();
        await apiServer.close();
      })();
      return stopping;
    },
  };
}
