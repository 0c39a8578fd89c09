// The cluster a lab scenario runs on, behind one interface: `embedded` (in-process API server and
// controllers, pods on 127.B.x.y; unprivileged) or `real` (etcd, kube-apiserver and
// kube-controller-manager built from their Go modules, the lab kubelet running pods in network
// namespaces on 10.244.x.y; root). The runner only creates objects, scales, restarts rollouts, kills
// pod processes, takes the API down, and watches pods — the same calls on both, written once here
// over the cluster's Kube (kube-api.ts); a backend adds only what truly differs: how the API goes
// down, how a pod is blackholed, and which kinds it is given at start rather than by apply().

import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEmbeddedCluster } from '../cluster/embedded.js';
import { ImageRuntime, NodeScriptRuntime, type PodRuntime } from '../cluster/pod-runtime.js';
import type { AccessRule } from '../cluster/apiserver.js';
import { KINDS, kindOf, statusOf, type Kube, type ResourceType } from '../cluster/kube-api.js';
import { RESOURCES } from '../cluster/store-api.js';
import type { Deployment, Pod, Service } from '../cluster/controllers/kinds.js';
import type { Workloads } from '../cluster/workloads.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { KubeObject, WatchEvent } from 'grpc-kube/internal/kube/types.js';
import type { KubeObject as ManifestObject } from '../manifests/kustomize.js';
import { packageRoot } from './paths.js';
import { POD_MAIN_SCRIPT } from './pod-main.js';
import type { PodSignal } from './scenario.js';
import { createLabTls, TlsPodRuntime, type LabTls } from './tls.js';

export type ClusterKind = 'embedded' | 'real';

/** Scale, restart a rollout, list pods and wait for N ready: workloads.ts, the same on both. */
export interface LabCluster extends Pick<
  Workloads,
  'scale' | 'restartRollout' | 'listPods' | 'waitForReadyPods'
> {
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
  /**
   * Signal a pod's process directly (a crash, an OOM kill): the kubelet sees it die. SIGSTOP is the
   * blackhole: the embedded cluster freezes the process (its kernel still accepts connections); the
   * real one drops every packet to and from the pod in its network namespace, the process runs on.
   */
  killPodProcess(namespace: string, name: string, signal: PodSignal): void | Promise<void>;
  /** Take the Kubernetes API away from clients until apiUp(). */
  apiDown(): Promise<void>;
  apiUp(): Promise<void>;
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
  return labCluster(kind === 'embedded' ? await embedded(opts) : await real(opts));
}

/**
 * A random `127.B` with B in 2..254: 127.0.x is left to tests and tools that pick fixed loopback
 * addresses, 127.1.x to the default of other programs, 127.255 is avoided.
 */
export function labLoopbackPrefix(): string {
  return `127.${randomInt(2, 255)}`;
}

/** What differs between the two clusters; everything else is labCluster() over `kube`. */
interface Backend extends Workloads {
  readonly kind: ClusterKind;
  readonly loopbackPrefix: string;
  readonly kubeConfigYaml: string;
  /** The lab's own API: the store on embedded (an outage cuts only clients), HTTP with retries on real. */
  readonly kube: Kube;
  readonly kubelet: {
    logs(namespace: string, pod: string, opts: { container: string }): readonly string[] | undefined;
    podProcess(namespace: string, name: string): { kill(signal: PodSignal): unknown } | undefined;
  };
  /** Kinds apply() leaves alone: given at start (embedded: RBAC as rules; real: CRDs installed). */
  readonly givenAtStart: ReadonlySet<string>;
  /** Whether its API server serves a kind (the embedded one: only RESOURCES). */
  serves(rt: ResourceType): boolean;
  /** SIGSTOP (see LabCluster.killPodProcess). */
  blackhole(namespace: string, name: string): void | Promise<void>;
  apiDown(): Promise<void>;
  apiUp(): Promise<void>;
  stop(): Promise<void>;
}

function labCluster(b: Backend): LabCluster {
  const { kube } = b;
  return {
    kind: b.kind,
    loopbackPrefix: b.loopbackPrefix,
    kubeConfigYaml: b.kubeConfigYaml,
    create: async (kind, obj) => void (await kube.create(KINDS[kind], obj)),
    apply: async (obj) => {
      if (b.givenAtStart.has(obj.kind)) return undefined;
      const rt = kindOf(obj.apiVersion, obj.kind);
      if (rt === undefined || !b.serves(rt))
        return `the ${b.kind} cluster's API server does not serve ${obj.apiVersion} ${obj.kind}`;
      try {
        await kube.create(rt, obj);
      } catch (err) {
        // A Namespace that exists is kept.
        if (!(obj.kind === 'Namespace' && statusOf(err) === 409)) throw err;
      }
      return undefined;
    },
    containerLog: async (ns, pod, container) => b.kubelet.logs(ns, pod, { container })?.join('\n'),
    applyRoute: async (route) => {
      try {
        await kube.create(KINDS.grpcroutes, route);
      } catch (err) {
        if (statusOf(err) !== 409) throw err;
        const spec = (route as { spec?: unknown }).spec;
        await kube.patch(KINDS.grpcroutes, route.metadata.namespace ?? 'default', route.metadata.name ?? '', {
          spec,
        });
      }
    },
    scale: b.scale,
    restartRollout: b.restartRollout,
    listPods: b.listPods,
    waitForReadyPods: b.waitForReadyPods,
    killPodProcess: (ns, name, signal) =>
      signal === 'SIGSTOP' ? b.blackhole(ns, name) : void b.kubelet.podProcess(ns, name)?.kill(signal),
    apiDown: () => b.apiDown(),
    apiUp: () => b.apiUp(),
    // Over HTTP the watch re-lists after a break and reports pods gone meanwhile as DELETED.
    watchPods: (ns, labelSelector, onEvent) =>
      kube.watch<Pod>(RESOURCES.pods, { namespace: ns, labelSelector }, (ev) => {
        if (ev.type !== 'BOOKMARK') onEvent(ev.type, ev.object as Pod);
      }),
    stop: () => b.stop(),
  };
}

async function embedded(opts: LabClusterOptions): Promise<Backend> {
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
  const c = await startEmbeddedCluster({
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
    ...c,
    kind: 'embedded',
    loopbackPrefix,
    kubeConfigYaml: c.apiServer.kubeConfigYaml(),
    // RBAC: the embedded API server holds the rules of every ServiceAccount (serviceAccountRules).
    givenAtStart: rules !== undefined ? RBAC_KINDS : new Set(),
    serves: (rt) => (Object.values(RESOURCES) as ResourceType[]).includes(rt),
    // The process frozen: its kernel still accepts connections, nothing answers.
    blackhole: (ns, name) => void c.kubelet.podProcess(ns, name)?.kill('SIGSTOP'),
    apiDown: () => c.apiServer.stop(),
    apiUp: () => c.apiServer.start(),
    stop: async () => {
      await c.stop();
      await apiPki?.remove();
    },
  };
}

async function real(opts: LabClusterOptions): Promise<Backend> {
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
  return {
    ...c,
    kind: 'real',
    loopbackPrefix: labLoopbackPrefix(),
    // The CRDs of deploy/crds are installed with the cluster.
    givenAtStart: new Set(['CustomResourceDefinition']),
    serves: () => true,
    // Every packet to and from the pod dropped in its network namespace; the process runs on.
    blackhole: async (ns, name) => {
      const ip = c.kubelet.podIP(ns, name);
      if (ip === undefined)
        throw new GrpcKubeError('GK_ERR_LAB', `pod ${ns}/${name} has no address to blackhole`);
      await c.network.blackholePod(ip);
    },
    // kube-apiserver stopped for real: clients and controllers alike lose the API, as in an outage.
    apiDown: () => c.controlPlane.stopApiServer(),
    apiUp: () => c.controlPlane.startApiServer(),
  };
}

const RBAC_KINDS: ReadonlySet<string> = new Set(['ServiceAccount', 'Role', 'RoleBinding']);
