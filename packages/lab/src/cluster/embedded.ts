// The embedded lab cluster: MemoryStore + EmbeddedApiServer (real HTTP, what clients and resolvers
// talk to) + the Deployment, ReplicaSet and EndpointSlice controllers + the lab kubelet running pods
// through a given PodRuntime. Controllers use the store directly and the kubelet the store's Kube
// (storeKube), as kube-controller-manager and the kubelet would a never-failing API; an API outage
// (apiServer.stop()) therefore cuts off only the clients, which is what the lab's outage scenario
// measures.
// Also the convenience helpers the lab and tests need: manifests for a Deployment and a headless
// Service, apply / scale, and watch-driven waits for N ready pods and for a finished rollout.

import { MemoryStore } from './store.js';
import { EmbeddedApiServer, type AccessRule, type EmbeddedApiServerOptions } from './apiserver.js';
import { EmbeddedServiceAccounts } from './service-account.js';
import { RESOURCES, type ObjectStore } from './store-api.js';
import { DeploymentController, isRolloutComplete, templateHash } from './controllers/deployment.js';
import { ReplicaSetController } from './controllers/replicaset.js';
import { EndpointSliceController } from './controllers/endpointslice.js';
import {
  IpPool,
  Kubelet,
  PROBE_PERIOD_MS_ANNOTATION,
  type IpAllocator,
  type KubeletNode,
} from './kubelet.js';
import { storeKube } from './kube-api.js';
import type { PodRuntime } from './pod-runtime.js';
import {
  POD_TEMPLATE_HASH_LABEL,
  isPodReady,
  mapSelectorMatches,
  type Deployment,
  type Pod,
  type Service,
} from './controllers/kinds.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';

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

export interface EmbeddedCluster {
  readonly store: MemoryStore;
  readonly apiServer: EmbeddedApiServer;
  readonly kubelet: Kubelet;
  readonly controllers: {
    readonly deployment: DeploymentController;
    readonly replicaSet: ReplicaSetController;
    readonly endpointSlice: EndpointSliceController;
  };
  /** Creates (or replaces the spec of) a Deployment and its headless Service. */
  applyApp(app: AppSpec): { deployment: Deployment; service: Service };
  scale(namespace: string, name: string, replicas: number): Deployment;
  waitForReadyPods(
    namespace: string,
    selector: Record<string, string>,
    count: number,
    timeoutMs?: number,
  ): Promise<Pod[]>;
  waitForRollout(namespace: string, name: string, timeoutMs?: number): Promise<Deployment>;
  /** Resolves when every controller and the kubelet have nothing queued. */
  settled(): Promise<void>;
  /** Stops controllers and kubelet (pod processes: SIGTERM, then SIGKILL) and closes the API server. */
  stop(): Promise<void>;
}

export async function startEmbeddedCluster(opts: EmbeddedClusterOptions): Promise<EmbeddedCluster> {
  const store = new MemoryStore(opts.random ? { random: opts.random } : {});
  for (const ns of opts.namespaces ?? []) ensureNamespace(store, ns);
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
    store,
    apiServer,
    kubelet,
    controllers: { deployment, replicaSet, endpointSlice },
    applyApp: (app) => applyApp(store, app),
    scale: (ns, name, replicas) => scaleDeployment(store, ns, name, replicas),
    waitForReadyPods: (ns, selector, count, timeoutMs) =>
      waitForReadyPods(store, ns, selector, count, timeoutMs),
    waitForRollout: (ns, name, timeoutMs) => waitForRollout(store, ns, name, timeoutMs),
    settled: async () => {
      await Promise.all([deployment.idle(), replicaSet.idle(), endpointSlice.idle(), kubelet.idle()]);
    },
    stop: () => {
      stopping ??= (async () => {
        deployment.stop();
        replicaSet.stop();
        endpointSlice.stop();
        await kubelet.stop();
        await apiServer.close();
      })();
      return stopping;
    },
  };
}

/** A Deployment of one container plus its headless Service, as the lab and the field write-ups use them. */
export interface AppSpec {
  readonly name: string;
  readonly namespace?: string;
  readonly replicas: number;
  /** Container port, Service targetPort. Default 50051. */
  readonly port?: number;
  /** Service port name. Default 'grpc'. */
  readonly portName?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly image?: string;
  readonly maxSurge?: number | string;
  readonly maxUnavailable?: number | string;
  readonly terminationGracePeriodSeconds?: number;
  /** Readiness probe (grpc.health.v1 on the container port, or on `port`). */
  readonly probe?: {
    /** A plaintext health port apart from a TLS container port (the kubelet probes in plaintext). */
    port?: number;
    periodMs?: number;
    failureThreshold?: number;
    successThreshold?: number;
    timeoutSeconds?: number;
  };
  /** Extra pod labels (e.g. one a Service shared by two Deployments selects on, for a canary). */
  readonly labels?: Readonly<Record<string, string>>;
  /** The headless Service: its name (default the app's) and selector (default { app: name }). */
  readonly serviceName?: string;
  readonly serviceSelector?: Readonly<Record<string, string>>;
}

export function deploymentManifest(app: AppSpec): Deployment {
  if (!Number.isInteger(app.replicas) || app.replicas < 0) {
    throw new InvalidOptionError('replicas', `must be a non-negative integer, got ${app.replicas}`);
  }
  const port = app.port ?? 50051;
  const labels = { app: app.name, ...(app.labels ?? {}) };
  const periodMs = app.probe?.periodMs;
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: app.name, namespace: app.namespace ?? 'default', labels: { app: app.name } },
    spec: {
      replicas: app.replicas,
      selector: { matchLabels: { app: app.name } },
      strategy: {
        type: 'RollingUpdate',
        rollingUpdate: { maxSurge: app.maxSurge ?? '25%', maxUnavailable: app.maxUnavailable ?? '25%' },
      },
      template: {
        metadata: {
          labels,
          ...(periodMs !== undefined
            ? { annotations: { [PROBE_PERIOD_MS_ANNOTATION]: String(periodMs) } }
            : {}),
        },
        spec: {
          terminationGracePeriodSeconds: app.terminationGracePeriodSeconds ?? 30,
          containers: [
            {
              name: app.name,
              image: app.image ?? 'grpc-kube/hello',
              env: Object.entries(app.env ?? {}).map(([name, value]) => ({ name, value })),
              ports: [{ name: app.portName ?? 'grpc', containerPort: port, protocol: 'TCP' }],
              readinessProbe: {
                grpc: { port: app.probe?.port ?? port },
                periodSeconds: Math.max(1, Math.ceil((periodMs ?? 10_000) / 1000)),
                failureThreshold: app.probe?.failureThreshold ?? 3,
                successThreshold: app.probe?.successThreshold ?? 1,
                timeoutSeconds: app.probe?.timeoutSeconds ?? 1,
              },
            },
          ],
        },
      },
    },
  };
}

export function headlessServiceManifest(
  app: Pick<AppSpec, 'name' | 'namespace' | 'port' | 'portName' | 'serviceName' | 'serviceSelector'>,
): Service {
  const port = app.port ?? 50051;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: app.serviceName ?? app.name, namespace: app.namespace ?? 'default' },
    spec: {
      clusterIP: 'None',
      type: 'ClusterIP',
      selector: { ...(app.serviceSelector ?? { app: app.name }) },
      ports: [{ name: app.portName ?? 'grpc', port, targetPort: port, protocol: 'TCP' }],
    },
  };
}

export function ensureNamespace(store: ObjectStore, name: string): void {
  if (store.get(RESOURCES.namespaces, undefined, name)) return;
  store.create(RESOURCES.namespaces, { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
}

/** Create, or replace the spec (and labels) of the existing object keeping its metadata. */
function apply<T extends Deployment | Service>(
  store: ObjectStore,
  rt: typeof RESOURCES.deployments | typeof RESOURCES.services,
  obj: T,
): T {
  ensureNamespace(store, obj.metadata.namespace ?? 'default');
  const cur = store.get<T>(rt, obj.metadata.namespace, obj.metadata.name ?? '');
  if (!cur) return store.create<T>(rt, obj);
  return store.update<T>(rt, {
    ...cur,
    metadata: { ...cur.metadata, labels: obj.metadata.labels },
    spec: obj.spec,
  });
}

export function applyApp(store: ObjectStore, app: AppSpec): { deployment: Deployment; service: Service } {
  const service = apply(store, RESOURCES.services, headlessServiceManifest(app));
  const deployment = apply(store, RESOURCES.deployments, deploymentManifest(app));
  return { deployment, service };
}

export function scaleDeployment(
  store: ObjectStore,
  namespace: string,
  name: string,
  replicas: number,
): Deployment {
  if (!Number.isInteger(replicas) || replicas < 0) {
    throw new InvalidOptionError('replicas', `must be a non-negative integer, got ${replicas}`);
  }
  const d = store.get<Deployment>(RESOURCES.deployments, namespace, name);
  if (!d)
    throw new GrpcKubeError('GK_ERR_LAB', `no Deployment ${namespace}/${name} to scale; apply it first`);
  return store.update<Deployment>(RESOURCES.deployments, { ...d, spec: { ...d.spec, replicas } });
}

/**
 * Watch-driven wait: resolves with the first value `check` returns, re-checked once after every burst
 * of events on `rts` in `namespace`; rejects with GK_ERR_LAB (naming `describe()`) after timeoutMs.
 */
export function waitForState<T>(
  store: ObjectStore,
  rts: ReadonlyArray<(typeof RESOURCES)[keyof typeof RESOURCES]>,
  namespace: string,
  check: () => T | undefined,
  timeoutMs: number,
  describe: () => string,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const stops: Array<() => void> = [];
    let done = false;
    let scheduled = false;
    const finish = (err: Error | undefined, value?: T): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      for (const s of stops) s();
      if (err) reject(err);
      else resolve(value as T);
    };
    const timer = setTimeout(
      () =>
        finish(new GrpcKubeError('GK_ERR_LAB', `timed out after ${timeoutMs} ms waiting for ${describe()}`)),
      timeoutMs,
    );
    timer.unref();
    // Events come in bursts: check once per tick, after the burst.
    const onEvent = (): void => {
      if (scheduled || done) return;
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        if (done) return;
        const v = check();
        if (v !== undefined) finish(undefined, v);
      });
    };
    for (const rt of rts)
      stops.push(store.watch(rt, { namespace, resourceVersion: store.resourceVersion }, onEvent));
    onEvent();
  });
}

/** Exactly `count` pods matching `selector` Ready and not terminating. */
export function waitForReadyPods(
  store: ObjectStore,
  namespace: string,
  selector: Record<string, string>,
  count: number,
  timeoutMs = 20_000,
): Promise<Pod[]> {
  const readyPods = (): Pod[] =>
    store
      .list<Pod>(RESOURCES.pods, { namespace })
      .items.filter(
        (p) =>
          mapSelectorMatches(selector, p.metadata.labels) && !p.metadata.deletionTimestamp && isPodReady(p),
      );
  return waitForState(
    store,
    [RESOURCES.pods],
    namespace,
    () => {
      const pods = readyPods();
      return pods.length === count ? pods : undefined;
    },
    timeoutMs,
    () =>
      `${count} ready pods matching ${JSON.stringify(selector)} in ${namespace} (now ${readyPods().length})`,
  );
}

/** The rollout is complete (all replicas updated and available) and no pod of an old template is left. */
export function waitForRollout(
  store: ObjectStore,
  namespace: string,
  name: string,
  timeoutMs = 30_000,
): Promise<Deployment> {
  const state = (): { d: Deployment | undefined; old: number } => {
    const d = store.get<Deployment>(RESOURCES.deployments, namespace, name);
    if (!d) return { d, old: 0 };
    const hash = templateHash(d.spec.template);
    const old = store
      .list<Pod>(RESOURCES.pods, { namespace })
      .items.filter(
        (p) =>
          mapSelectorMatches(d.spec.selector.matchLabels, p.metadata.labels) &&
          p.metadata.labels?.[POD_TEMPLATE_HASH_LABEL] !== hash,
      ).length;
    return { d, old };
  };
  return waitForState(
    store,
    [RESOURCES.pods, RESOURCES.deployments],
    namespace,
    () => {
      const { d, old } = state();
      return d && isRolloutComplete(d) && old === 0 ? d : undefined;
    },
    timeoutMs,
    () =>
      `the rollout of ${namespace}/${name} (status ${JSON.stringify(state().d?.status ?? null)}, old pods ${state().old})`,
  );
}
