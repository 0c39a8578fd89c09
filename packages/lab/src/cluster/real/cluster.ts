// The real lab cluster as one handle, shaped like EmbeddedCluster: the control plane, the lab
// network, the lab kubelet, `kube` (kube-apiserver over HTTP) and the same workload helpers over it
// (workloads.ts: apply a Deployment and its headless Service, scale, wait for N ready pods or a
// finished rollout). stop() ends pods, removes every namespace and route, and stops the control
// plane, in that order, and is safe to call after a failed start.

import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { Kubelet, type KubeletNode } from '../kubelet.js';
import { httpKube, type Kube } from '../kube-api.js';
import { workloads, type Workloads } from '../workloads.js';
import {
  startRealControlPlane,
  type RealControlPlane,
  type RealControlPlaneOptions,
} from './control-plane.js';
import { installCrds, readCrds } from './crds.js';
import { realNodeOptions } from './kubelet.js';
import { NetnsScriptRuntime } from './kubelet-runtime.js';
import type { PodRuntime } from '../pod-runtime.js';
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

export interface RealLabCluster extends Workloads {
  readonly controlPlane: RealControlPlane;
  readonly network: LabNetwork;
  readonly kubelet: Kubelet;
  /**
   * The admin's API, riding over an outage the lab itself caused (stopApiServer / startApiServer):
   * requests are retried for up to a minute while the server is away.
   */
  readonly kube: Kube;
  /** Admin kubeconfig YAML (for KubeClient.fromKubeConfigString, sources, resolvers). */
  readonly kubeConfigYaml: string;
  stop(): Promise<void>;
}

export async function startRealLabCluster(opts: RealLabClusterOptions): Promise<RealLabCluster> {
  if (opts?.podRuntime === undefined && (typeof opts?.podScript !== 'string' || opts.podScript === '')) {
    throw new InvalidOptionError('podScript', 'must be the path of the pod program (or give podRuntime)');
  }
  let cp: RealControlPlane | undefined;
  let network: LabNetwork | undefined;
  let kubelet: Kubelet | undefined;
  let labKube: Kube | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      labKube?.close();
      await kubelet?.stop();
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
    labKube = httpKube(cp.adminKubeConfig, { retryTransientMs: 60_000 });
    // The kubelet's own Kube, which it closes: it retries its writes itself (retryTransientMs).
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
  } catch (err) {
    await stop();
    throw err;
  }
  const kube = labKube;
  const w = workloads(kube, {
    waitForDefaultServiceAccount: true,
    readyTimeoutMs: 60_000,
    rolloutTimeoutMs: 120_000,
  });
  try {
    if (opts.crdDir !== undefined) await installCrds(kube, readCrds(opts.crdDir));
    for (const ns of opts.namespaces ?? []) await w.ensureNamespace(ns);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    ...w,
    controlPlane: cp,
    network,
    kubelet,
    kube,
    kubeConfigYaml: cp.adminKubeConfig,
    stop,
  };
}
