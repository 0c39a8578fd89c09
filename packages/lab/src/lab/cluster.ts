// The cluster a lab scenario runs on, behind one interface: `embedded` (in-process API server and
// controllers, pods on 127.B.x.y; unprivileged) or `real` (etcd, kube-apiserver and
// kube-controller-manager built from their Go modules, the lab kubelet running pods in network
// namespaces on 10.244.x.y; root). The runner only creates objects, scales, restarts rollouts, kills
// pod processes, takes the API down, and watches pods — the same calls on both.

import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEmbeddedCluster, type EmbeddedCluster } from '../cluster/embedded.js';
import { ImageRuntime, NodeScriptRuntime, type PodRuntime } from '../cluster/pod-runtime.js';
import type { AccessRule } from '../cluster/apiserver.js';
import { RESOURCES, type ResourceType } from '../cluster/store-api.js';
import type { Deployment, Pod, Service } from '../cluster/controllers/kinds.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import type { KubeObject, WatchEvent } from 'grpc-kube/internal/kube/types.js';
import type { KubeObject as ManifestObject } from '../manifests/kustomize.js';
import { packageRoot } from './paths.js';
import { POD_MAIN_SCRIPT } from './pod-main.js';
import type { PodSignal } from './scenario.js';
import { createLabTls, TlsPodRuntime, type LabTls } from './tls.js';

export type ClusterKind = 'embedded' | 'real';

export interface LabCluster {
  readonly kind: ClusterKind;
  /**
   * `127.B`: the loopback /16 this lab owns for its virtual IPs (`127.B.1.n`) and, on the embedded
   * cluster, its pods (`127.B.2.1` up). B is drawn at random per lab, so two labs on one machine
   * (a lab beside the test suite) do not answer each other's probes and RPCs.
   */
  readonly loopbackPrefix: string;
  /** Admin kubeconfig (clients, resolvers, the lab's stand-ins). */
  readonly kubeConfigYaml: string;
  create(kind: 'deployments' | 'services', obj: Deployment | Service): Promise<void>;
  /**
   * `lab --manifests`: create one rendered object of an overlay (a Namespace that exists is kept).
   * Resolves to why it was not applied when this cluster does not serve its kind (the embedded API
   * server serves no RBAC objects: its authorization is its own policy), else undefined.
   */
  apply(obj: ManifestObject): Promise<string | undefined>;
  /**
   * The last lines a container logged, where the cluster keeps them; undefined where it does not
   * (then only the termination message in the pod's status is read).
   */
  containerLog(namespace: string, pod: string, container: string): Promise<string | undefined>;
  /** Create or replace a GRPCRoute (gateway.networking.k8s.io/v1): the canary's weights. */
  applyRoute(route: KubeObject): Promise<void>;
  scale(namespace: string, name: string, replicas: number): Promise<void>;
  /** What `kubectl rollout restart` does: a new template annotation, hence a rolling update. */
  restartRollout(namespace: string, name: string, stamp: string): Promise<void>;
  listPods(namespace: string, labelSelector: string): Promise<Pod[]>;
  /**
   * Signal a pod's process directly (a crash, an OOM kill): the kubelet sees it die. SIGSTOP is the
   * blackhole: the embedded cluster freezes the process (its kernel still accepts connections); the
   * real one drops every packet to and from the pod in its network namespace, the process runs on.
   */
  killPodProcess(namespace: string, name: string, signal: PodSignal): void | Promise<void>;
  /** Take the Kubernetes API away from clients until apiUp(). */
  apiDown(): Promise<void>;
  apiUp(): Promise<void>;
  waitForReadyPods(
    namespace: string,
    selector: Record<string, string>,
    count: number,
    timeoutMs: number,
  ): Promise<void>;
  /** Pod events in order (an initial ADDED per existing pod first); returns the stop function. */
  watchPods(
    namespace: string,
    labelSelector: string,
    onEvent: (type: WatchEvent['type'], pod: Pod) => void,
  ): () => void;
  stop(): Promise<void>;
}

export interface LabClusterOptions {
  readonly namespace: string;
  /** More namespaces to create with the cluster (`lab --manifests`: one per strategy's overlay). */
  readonly extraNamespaces?: readonly string[];
  readonly probePeriodMs: number;
  readonly random: () => number;
  /** CPU niceness of the pods (0..19): above the clients' 0, so pods starting cannot starve them. */
  readonly podNice: number;
  /** The user's server instead of the lab's Hello (`--pod-command`), run by /bin/sh -c. */
  readonly podCommand?: string;
  /** `lab --tls`: each pod gets a certificate from this CA when it starts. */
  readonly tls?: LabTls;
  /**
   * `lab --manifests`: pods run their spec as written (ImageRuntime: image → a local command, env,
   * command and args as the kubelet resolves them) instead of the lab's Hello server.
   */
  readonly images?: boolean;
  /**
   * With `images`: what each ServiceAccount may do (the overlays' Roles and RoleBindings). The real
   * cluster reads those objects; the embedded API server is given their rules, and every pod its
   * ServiceAccount's token.
   */
  readonly serviceAccountRules?: (namespace: string, serviceAccount: string) => readonly AccessRule[];
}

export async function startLabCluster(kind: ClusterKind, opts: LabClusterOptions): Promise<LabCluster> {
  return kind === 'embedded' ? embedded(opts) : real(opts);
}

/**
 * A random `127.B` with B in 2..254: 127.0.x is left to tests and tools that pick fixed loopback
 * addresses, 127.1.x to the default of other programs, 127.255 is avoided.
 */
export function labLoopbackPrefix(): string {
  return `127.${randomInt(2, 255)}`;
}

async function embedded(opts: LabClusterOptions): Promise<LabCluster> {
  const loopbackPrefix = labLoopbackPrefix();
  const runtime = new NodeScriptRuntime({
    script: POD_MAIN_SCRIPT,
    nice: opts.podNice,
    ...(opts.podCommand !== undefined ? { shellCommand: opts.podCommand } : {}),
  });
  // --manifests: pods as written, each with its ServiceAccount's token for the API server, which then
  // speaks HTTPS (in-cluster configuration does) with a certificate from a CA made for the run.
  const rules = opts.images === true ? opts.serviceAccountRules : undefined;
  const apiPki = rules !== undefined ? await createLabTls('lab-api') : undefined;
  const apiCert = await apiPki?.issue('kube-apiserver', { ips: ['127.0.0.1'], dns: ['localhost'] });
  const c: EmbeddedCluster = await startEmbeddedCluster({
    runtime:
      opts.images === true
        ? new ImageRuntime({ nice: opts.podNice })
        : opts.tls === undefined
          ? runtime
          : new TlsPodRuntime(runtime, opts.tls),
    ipPool: { first: `${loopbackPrefix}.2.1` },
    probePeriodMs: opts.probePeriodMs,
    namespaces: [opts.namespace, ...(opts.extraNamespaces ?? [])],
    apiServer: {
      bookmarkIntervalMs: 5000,
      ...(apiCert !== undefined && apiPki !== undefined
        ? {
            tls: {
              key: readFileSync(apiCert.keyFile),
              cert: readFileSync(apiCert.certFile),
              ca: readFileSync(apiPki.caFile),
            },
          }
        : {}),
    },
    ...(rules !== undefined ? { serviceAccountTokens: { rules } } : {}),
    random: opts.random,
  });
  return {
    kind: 'embedded',
    loopbackPrefix,
    kubeConfigYaml: c.apiServer.kubeConfigYaml(),
    create: async (kind, obj) => void c.store.create(RESOURCES[kind], obj),
    apply: async (obj) => {
      const rt = (Object.values(RESOURCES) as ResourceType[]).find(
        (r) => r.kind === obj.kind && apiVersionOf(r) === obj.apiVersion,
      );
      // RBAC: the embedded API server holds the rules of every ServiceAccount (serviceAccountRules).
      if (rules !== undefined && RBAC_KINDS.has(obj.kind)) return undefined;
      if (rt === undefined) return `the embedded API server does not serve ${obj.apiVersion} ${obj.kind}`;
      if (
        c.store.get(rt, obj.metadata.namespace, obj.metadata.name ?? '') !== undefined &&
        obj.kind === 'Namespace'
      )
        return undefined;
      c.store.create(rt, obj);
      return undefined;
    },
    containerLog: async (ns, pod, container) => c.kubelet.logs(ns, pod, { container })?.join('\n'),
    applyRoute: async (route) => {
      const ns = route.metadata.namespace ?? 'default';
      const cur = c.store.get(RESOURCES.grpcroutes, ns, route.metadata.name ?? '');
      if (cur === undefined) c.store.create(RESOURCES.grpcroutes, route);
      else
        c.store.update(RESOURCES.grpcroutes, {
          ...route,
          metadata: { ...cur.metadata, ...route.metadata, resourceVersion: cur.metadata.resourceVersion },
        });
    },
    scale: async (ns, name, replicas) => void c.scale(ns, name, replicas),
    restartRollout: async (ns, name, stamp) => {
      const d = c.store.get<Deployment>(RESOURCES.deployments, ns, name);
      if (d === undefined) throw new GrpcKubeError('GK_ERR_LAB', `deployment ${ns}/${name} vanished`);
      c.store.update(RESOURCES.deployments, withRestartStamp(d, stamp));
    },
    listPods: async (ns, labelSelector) =>
      c.store.list<Pod>(RESOURCES.pods, { namespace: ns, labelSelector }).items,
    killPodProcess: (ns, name, signal) => c.kubelet.podProcess(ns, name)?.kill(signal),
    apiDown: () => c.apiServer.stop(),
    apiUp: () => c.apiServer.start(),
    waitForReadyPods: async (ns, selector, count, timeoutMs) =>
      void (await c.waitForReadyPods(ns, selector, count, timeoutMs)),
    watchPods: (ns, labelSelector, onEvent) =>
      c.store.watch<Pod>(RESOURCES.pods, { namespace: ns, labelSelector }, (ev) =>
        onEvent(ev.type, ev.object as Pod),
      ),
    stop: async () => {
      await c.stop();
      await apiPki?.remove();
    },
  };
}

async function real(opts: LabClusterOptions): Promise<LabCluster> {
  const tls = opts.tls;
  // Loaded only here: the real control plane needs root, Go-built binaries and network namespaces.
  const { startRealLabCluster } = await import('../cluster/real/cluster.js');
  const { netnsWrap } = await import('../cluster/real/kubelet-runtime.js');
  // --manifests: pod specs as written, each in its pod's network namespace.
  const images = (network: import('../cluster/real/netns.js').LabNetwork): PodRuntime =>
    new ImageRuntime({ nice: opts.podNice, podIpEnv: false, wrap: netnsWrap(network) });
  const c = await startRealLabCluster({
    podScript: POD_MAIN_SCRIPT,
    podNice: opts.podNice,
    ...(opts.podCommand !== undefined ? { podShellCommand: opts.podCommand } : {}),
    // Each pod gets a certificate for its netns address and its Service's names as it starts.
    ...(tls !== undefined ? { wrapRuntime: (r: PodRuntime) => new TlsPodRuntime(r, tls) } : {}),
    // Pods as written, with their ServiceAccount's token: their controllers meet the overlay's RBAC.
    ...(opts.images === true ? { podRuntime: images, serviceAccountTokens: true } : {}),
    probePeriodMs: opts.probePeriodMs,
    namespaces: [opts.namespace, ...(opts.extraNamespaces ?? [])],
    // The GRPCRoute CRD, as a user installs it: without it canary-shift's route is a 404.
    crdDir: join(packageRoot(), 'deploy', 'crds'),
  });
  const client = KubeClient.fromKubeConfigString(c.kubeConfigYaml);
  const path = (kind: 'deployments' | 'services', ns: string): string =>
    kind === 'deployments'
      ? `/apis/apps/v1/namespaces/${ns}/deployments`
      : `/api/v1/namespaces/${ns}/services`;
  const rp = (kind: string, ns: string) => ({
    group: kind === 'deployments' ? 'apps' : '',
    version: 'v1',
    resource: kind,
    namespace: ns,
  });
  return {
    kind: 'real',
    loopbackPrefix: labLoopbackPrefix(),
    kubeConfigYaml: c.kubeConfigYaml,
    create: async (kind, obj) => {
      const ns = obj.metadata.namespace ?? 'default';
      await c.api.request('POST', path(kind, ns), obj, rp(kind, ns));
    },
    scale: (ns, name, replicas) => c.scale(ns, name, replicas),
    apply: async (obj) => {
      const p = apiPathOf(obj);
      if (p === undefined) return `the lab does not know the API path of ${obj.apiVersion} ${obj.kind}`;
      // The CRDs of deploy/crds are installed with the cluster.
      if (obj.kind === 'CustomResourceDefinition') return undefined;
      try {
        await c.api.request('POST', p.collection, obj, p.resource);
      } catch (err) {
        if (!(obj.kind === 'Namespace' && (err as { status?: number }).status === 409)) throw err;
      }
      return undefined;
    },
    containerLog: async (ns, pod, container) => c.kubelet.logs(ns, pod, { container })?.join('\n'),
    applyRoute: async (route) => {
      // Served through the GRPCRoute CRD of deploy/crds, installed by startRealLabCluster.
      const ns = route.metadata.namespace ?? 'default';
      const base = `/apis/gateway.networking.k8s.io/v1/namespaces/${ns}/grpcroutes`;
      const grp = {
        group: 'gateway.networking.k8s.io',
        version: 'v1',
        resource: 'grpcroutes',
        namespace: ns,
      };
      try {
        await c.api.request('POST', base, route, grp);
      } catch (err) {
        if ((err as { status?: number }).status !== 409) throw err;
        await c.api.request(
          'PATCH',
          `${base}/${route.metadata.name}`,
          { spec: (route as { spec?: unknown }).spec },
          grp,
        );
      }
    },
    restartRollout: async (ns, name, stamp) => {
      const patch = {
        spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': stamp } } } },
      };
      await c.api.request('PATCH', `${path('deployments', ns)}/${name}`, patch, rp('deployments', ns));
    },
    listPods: async (ns, labelSelector) =>
      (
        await client.list<Pod>(
          { group: '', version: 'v1', resource: 'pods', namespace: ns },
          { labelSelector },
        )
      ).items,
    killPodProcess: async (ns, name, signal) => {
      if (signal !== 'SIGSTOP') return void c.kubelet.podProcess(ns, name)?.kill(signal);
      const ip = c.kubelet.podIP(ns, name);
      if (ip === undefined)
        throw new GrpcKubeError('GK_ERR_LAB', `pod ${ns}/${name} has no address to blackhole`);
      await c.network.blackholePod(ip);
    },
    // kube-apiserver stopped for real: clients and controllers alike lose the API, as in an outage.
    apiDown: () => c.controlPlane.stopApiServer(),
    apiUp: () => c.controlPlane.startApiServer(),
    waitForReadyPods: async (ns, selector, count, timeoutMs) =>
      void (await c.waitForReadyPods(ns, selector, count, timeoutMs)),
    // The handle's watch store re-lists after a break and reports pods gone meanwhile as DELETED.
    watchPods: (ns, labelSelector, onEvent) =>
      c.watchStore.watch<Pod>(RESOURCES.pods, { namespace: ns, labelSelector }, (ev) =>
        onEvent(ev.type, ev.object as Pod),
      ),
    stop: async () => {
      client.close();
      await c.stop();
    },
  };
}

const RBAC_KINDS = new Set(['ServiceAccount', 'Role', 'RoleBinding']);

function apiVersionOf(r: ResourceType): string {
  return r.group === '' ? r.version : `${r.group}/${r.version}`;
}

/** Plural resource names of the kinds deploy/ renders. */
const PLURALS: Readonly<Record<string, string>> = {
  Namespace: 'namespaces',
  ServiceAccount: 'serviceaccounts',
  Service: 'services',
  Deployment: 'deployments',
  Role: 'roles',
  RoleBinding: 'rolebindings',
  ClusterRole: 'clusterroles',
  ClusterRoleBinding: 'clusterrolebindings',
  GRPCRoute: 'grpcroutes',
  ReferenceGrant: 'referencegrants',
  CustomResourceDefinition: 'customresourcedefinitions',
};
const CLUSTER_SCOPED = new Set([
  'Namespace',
  'ClusterRole',
  'ClusterRoleBinding',
  'CustomResourceDefinition',
]);

/** The collection path an object is POSTed to, and the resource it names (for the API client's errors). */
function apiPathOf(obj: ManifestObject):
  | {
      collection: string;
      resource: { group: string; version: string; resource: string; namespace?: string };
    }
  | undefined {
  const plural = PLURALS[obj.kind];
  if (plural === undefined) return undefined;
  const slash = obj.apiVersion.indexOf('/');
  const group = slash < 0 ? '' : obj.apiVersion.slice(0, slash);
  const version = obj.apiVersion.slice(slash + 1);
  const ns = CLUSTER_SCOPED.has(obj.kind) ? undefined : (obj.metadata.namespace ?? 'default');
  const base = group === '' ? `/api/${version}` : `/apis/${group}/${version}`;
  return {
    collection: `${base}${ns !== undefined ? `/namespaces/${ns}` : ''}/${plural}`,
    resource: { group, version, resource: plural, ...(ns !== undefined ? { namespace: ns } : {}) },
  };
}

function withRestartStamp(d: Deployment, stamp: string): Deployment {
  const tmpl = d.spec.template;
  return {
    ...d,
    spec: {
      ...d.spec,
      template: {
        ...tmpl,
        metadata: {
          ...tmpl.metadata,
          annotations: { ...(tmpl.metadata?.annotations ?? {}), 'kubectl.kubernetes.io/restartedAt': stamp },
        },
      },
    },
  };
}
