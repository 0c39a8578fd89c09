// The real lab cluster as one handle, shaped like EmbeddedCluster (but async: everything goes through
// kube-apiserver): the control plane, the lab network, the lab kubelet, and the helpers the lab and the
// tests need — apply a Deployment and its headless Service, scale, wait for N ready pods or a finished
// rollout. stop() ends pods, removes every namespace and route, and stops the control plane, in that
// order, and is safe to call after a failed start.

import { setTimeout as delay } from 'node:timers/promises';

import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { isRolloutComplete } from '../controllers/deployment.js';
import {
  POD_TEMPLATE_HASH_LABEL,
  isPodReady,
  mapSelectorMatches,
  type Deployment,
  type Pod,
} from '../controllers/kinds.js';
import { deploymentManifest, headlessServiceManifest, type AppSpec } from '../embedded.js';
import { Kubelet, type KubeletNode } from '../kubelet.js';
import { httpKube } from '../kube-api.js';
import type { ResourcePath } from 'grpc-kube/internal/kube/client.js';
import {
  startRealControlPlane,
  type RealControlPlane,
  type RealControlPlaneOptions,
} from './control-plane.js';
import { installCrds, readCrds } from './crds.js';
import { LabApi, statusOf } from './kube-http.js';
import { realNodeOptions } from './kubelet.js';
import { NetnsScriptRuntime } from './kubelet-runtime.js';
import type { PodRuntime } from '../pod-runtime.js';
import { httpWatchStore, type WatchStore } from './watch-store.js';
import { createLabNetwork, type LabNetwork, type LabNetworkOptions } from './netns.js';

export interface RealLabClusterOptions {
  /** The pod program (e.g. POD_MAIN_SCRIPT of src/lab/pod-main.ts), run with this Node.js. */
  readonly podScript?: string;
  /**
   * Instead of podScript: the pods' runtime, given the lab network (e.g. pod specs as written:
   * `(network) => new ImageRuntime({ wrap: netnsWrap(network), podIpEnv: false })`).
   */
  readonly podRuntime?: (network: LabNetwork) => PodRuntime;
  /** Pod CPU niceness and an optional shell command instead of the script (NodeScriptRuntimeOptions). */
  readonly podNice?: number;
  readonly podShellCommand?: string;
  /** Wraps the pods' runtime (the lab's TLS gives each pod a certificate before it starts). */
  readonly wrapRuntime?: (runtime: PodRuntime) => PodRuntime;
  /** Default: lab-node-1 in zone-a and lab-node-2 in zone-b (as the embedded cluster). */
  readonly nodes?: readonly KubeletNode[];
  readonly probePeriodMs?: number;
  /** Namespaces to create (and wait for their default ServiceAccount) at start. */
  readonly namespaces?: readonly string[];
  /**
   * A kustomization directory of CustomResourceDefinitions (deploy/crds: the GRPCRoute CRD) to
   * install at start, waiting until each is Established.
   */
  readonly crdDir?: string;
  readonly controlPlane?: RealControlPlaneOptions;
  readonly network?: LabNetworkOptions;
  readonly heartbeatMs?: number;
  readonly onError?: (where: string, err: unknown) => void;
  /**
   * Project each pod's ServiceAccount token into it (realNodeOptions): the pods
   * talk to the API as their ServiceAccount, under the RBAC applied. Default false.
   */
  readonly serviceAccountTokens?: boolean;
}

export interface RealLabCluster {
  readonly controlPlane: RealControlPlane;
  readonly network: LabNetwork;
  readonly kubelet: Kubelet;
  readonly api: LabApi;
  /** Admin kubeconfig YAML (for KubeClient.fromKubeConfigString, sources, resolvers). */
  readonly kubeConfigYaml: string;
  /**
   * ObjectStore.watch over HTTP (events arrive asynchronously): for code written against the embedded
   * store's watch, e.g. the lab's PodTimelineRecorder.
   */
  readonly watchStore: WatchStore;
  ensureNamespace(name: string): Promise<void>;
  /** Pods of a namespace (optionally by label selector), deleting ones included. */
  listPods(namespace: string, labelSelector?: string): Promise<Pod[]>;
  /** What `kubectl rollout restart` does: stamp the template's restartedAt annotation. */
  restartRollout(namespace: string, name: string, stamp?: string): Promise<void>;
  /** Creates, or replaces the spec of, the app's Deployment and headless Service. */
  applyApp(app: AppSpec): Promise<void>;
  scale(namespace: string, name: string, replicas: number): Promise<void>;
  waitForReadyPods(
    namespace: string,
    selector: Record<string, string>,
    count: number,
    timeoutMs?: number,
  ): Promise<Pod[]>;
  /** Every replica updated, available, and no pod of an older template left (terminating included). */
  waitForRollout(namespace: string, name: string, timeoutMs?: number): Promise<Deployment>;
  stop(): Promise<void>;
}

const rp = (resource: string, namespace?: string): ResourcePath => ({
  group: resource === 'deployments' ? 'apps' : '',
  version: 'v1',
  resource,
  namespace,
});

/** Polls `check` until it returns a value; bounded by `timeoutMs` (the real API has no clock to inject). */
async function poll<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (let i = 0; ; i++) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new GrpcKubeError('GK_ERR_LAB', `${what}: not within ${timeoutMs} ms`);
    await delay(Math.min(20 * 2 ** Math.min(i, 3), 150));
  }
}

export async function startRealLabCluster(opts: RealLabClusterOptions): Promise<RealLabCluster> {
  if (opts?.podRuntime === undefined && (typeof opts?.podScript !== 'string' || opts.podScript === '')) {
    throw new InvalidOptionError('podScript', 'must be the path of the pod program (or give podRuntime)');
  }
  let cp: RealControlPlane | undefined;
  let network: LabNetwork | undefined;
  let kubelet: Kubelet | undefined;
  let api: LabApi | undefined;
  let watchStore: (WatchStore & { close(): void }) | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      watchStore?.close();
      await kubelet?.stop();
      api?.close();
      await network?.teardown();
      await cp?.stop();
    })();
    return stopping;
  };
  try {
    // The network first: the API's serving certificate must name its gateway, where pods reach the API.
    network = await createLabNetwork(opts.network);
    cp = await startRealControlPlane({
      ...(opts.controlPlane ?? {}),
      extraServingIps: [...(opts.controlPlane?.extraServingIps ?? []), network.gateway],
    });
    // The lab's own writes ride over an API outage the lab itself caused (stopApiServer/startApiServer).
    api = new LabApi(cp.adminKubeConfig, { retryTransientMs: 60_000 });
    const kube = httpKube(cp.adminKubeConfig);
    kubelet = new Kubelet(kube, {
      ...realNodeOptions(
        kube,
        network,
        opts.serviceAccountTokens === true ? { caPem: cp.caPem, apiUrl: cp.url } : undefined,
      ),
      runtime: (opts.wrapRuntime ?? ((r: PodRuntime) => r))(
        opts.podRuntime !== undefined
          ? opts.podRuntime(network)
          : new NetnsScriptRuntime({
              network,
              script: opts.podScript ?? '',
              ...(opts.podNice !== undefined ? { nice: opts.podNice } : {}),
              ...(opts.podShellCommand !== undefined ? { shellCommand: opts.podShellCommand } : {}),
            }),
      ),
      nodes: opts.nodes ?? [
        { name: 'lab-node-1', zone: 'zone-a' },
        { name: 'lab-node-2', zone: 'zone-b' },
      ],
      ...(opts.probePeriodMs !== undefined ? { probePeriodMs: opts.probePeriodMs } : {}),
      ...(opts.heartbeatMs !== undefined ? { heartbeatMs: opts.heartbeatMs } : {}),
      ...(opts.onError ? { onError: opts.onError } : {}),
    });
    await kubelet.start();
    watchStore = httpWatchStore(cp.adminKubeConfig);
  } catch (err) {
    await stop();
    throw err;
  }
  const a = api;

  const ensureNamespace = async (name: string): Promise<void> => {
    try {
      await a.request(
        'POST',
        '/api/v1/namespaces',
        { apiVersion: 'v1', kind: 'Namespace', metadata: { name } },
        rp('namespaces'),
      );
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
    }
    // Pods are refused until the namespace's default ServiceAccount exists.
    await poll(`ServiceAccount ${name}/default`, 30_000, async () => {
      try {
        await a.request(
          'GET',
          `/api/v1/namespaces/${name}/serviceaccounts/default`,
          undefined,
          rp('serviceaccounts', name),
        );
        return true;
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
        return undefined;
      }
    });
  };

  const upsert = async (
    path: string,
    resource: string,
    obj: { metadata: { name?: string; namespace?: string } },
  ): Promise<void> => {
    const ns = obj.metadata.namespace ?? 'default';
    try {
      await a.request('POST', path, obj, rp(resource, ns));
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
      // A merge patch of labels and spec: arrays (containers, ports) are replaced whole, as wanted.
      const { metadata, ...rest } = obj as { metadata: { labels?: Record<string, string> } };
      await a.request(
        'PATCH',
        `${path}/${obj.metadata.name ?? ''}`,
        { metadata: { labels: metadata.labels }, ...rest },
        rp(resource, ns),
      );
    }
  };

  try {
    if (opts.crdDir !== undefined) await installCrds(a, readCrds(opts.crdDir));
    for (const ns of opts.namespaces ?? []) await ensureNamespace(ns);
  } catch (err) {
    await stop();
    throw err;
  }

  const listPods = async (ns: string, labelSelector?: string): Promise<Pod[]> => {
    const q = labelSelector ? `?labelSelector=${encodeURIComponent(labelSelector)}` : '';
    const path = `/api/v1/namespaces/${ns}/pods${q}`;
    return (await a.request<{ items: Pod[] }>('GET', path, undefined, rp('pods', ns))).items;
  };

  return {
    controlPlane: cp,
    network,
    kubelet,
    api: a,
    kubeConfigYaml: cp.adminKubeConfig,
    watchStore: watchStore as WatchStore,
    ensureNamespace,
    listPods,
    async restartRollout(ns: string, name: string, stamp = new Date().toISOString()): Promise<void> {
      await a.request(
        'PATCH',
        `/apis/apps/v1/namespaces/${ns}/deployments/${name}`,
        { spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': stamp } } } } },
        rp('deployments', ns),
      );
    },
    async applyApp(app: AppSpec): Promise<void> {
      const ns = app.namespace ?? 'default';
      const svc = headlessServiceManifest(app);
      const dep = deploymentManifest(app);
      // The apiserver assigns clusterIP None itself on create; on a patch it must not change.
      await upsert(`/api/v1/namespaces/${ns}/services`, 'services', svc);
      await upsert(`/apis/apps/v1/namespaces/${ns}/deployments`, 'deployments', dep);
    },
    async scale(ns: string, name: string, replicas: number): Promise<void> {
      if (!Number.isInteger(replicas) || replicas < 0) {
        throw new InvalidOptionError('replicas', `must be a non-negative integer, got ${replicas}`);
      }
      await a.request(
        'PATCH',
        `/apis/apps/v1/namespaces/${ns}/deployments/${name}`,
        { spec: { replicas } },
        rp('deployments', ns),
      );
    },
    waitForReadyPods: (ns, selector, count, timeoutMs = 60_000) =>
      poll(`${count} ready pods in ${ns}`, timeoutMs, async () => {
        const ready = (await listPods(ns)).filter(
          (p) =>
            !p.metadata.deletionTimestamp && mapSelectorMatches(selector, p.metadata.labels) && isPodReady(p),
        );
        return ready.length >= count ? ready : undefined;
      }),
    waitForRollout: (ns, name, timeoutMs = 120_000) =>
      poll(`rollout of ${ns}/${name}`, timeoutMs, async () => {
        const d = await a.request<Deployment>(
          'GET',
          `/apis/apps/v1/namespaces/${ns}/deployments/${name}`,
          undefined,
          rp('deployments', ns),
        );
        if (!isRolloutComplete(d)) return undefined;
        const hashes = new Set(
          (await listPods(ns))
            .filter((p) => mapSelectorMatches(d.spec.selector.matchLabels ?? {}, p.metadata.labels))
            .map((p) => p.metadata.labels?.[POD_TEMPLATE_HASH_LABEL]),
        );
        return hashes.size <= 1 ? d : undefined;
      }),
    stop,
  };
}
