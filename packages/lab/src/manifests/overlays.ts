// `grpc-kube lab --manifests`: which deploy/ overlay stands for each lab strategy, and how a rendered
// overlay becomes one strategy's run. The overlay is rendered (kustomize.ts) into a namespace of the
// run's own (two strategies of one lab may share an overlay: the headless pair), and its objects are
// applied as written, save the adaptations listed in OverlayPlan.adaptations (each said in the run's
// progress). The lab's in-process clients dial what the overlay's client Deployment would dial: its
// TARGET, LB_POLICY and AUTHORITY env after $(VAR) expansion; for the sidecar overlay the client pod
// itself runs (its proxy container is what the clients dial).

import { join } from 'node:path';
import { EWMA_POLICY_NAME, P2C_POLICY_NAME } from 'grpc-kube/internal/balancer/index.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { applyOrder, inNamespace, renderKustomization, type KubeObject } from './kustomize.js';

/** The overlay of each strategy, and the policy the strategy names where the overlay's LB_POLICY is not it. */
export const STRATEGY_OVERLAYS: Readonly<Record<string, { readonly dir: string; readonly policy?: string }>> =
  Object.freeze({
    clusterip: { dir: 'clusterip' },
    'headless-pick-first': { dir: 'headless', policy: 'pick_first' },
    'headless-dns-round-robin': { dir: 'headless' },
    'max-connection-age': { dir: 'max-connection-age' },
    kubernetes: { dir: 'kubernetes' },
    'kubernetes-p2c': { dir: 'kubernetes', policy: P2C_POLICY_NAME },
    'kubernetes-ewma': { dir: 'kubernetes', policy: EWMA_POLICY_NAME },
    proxy: { dir: 'proxy' },
    sidecar: { dir: 'sidecar' },
    xds: { dir: 'xds' },
  });

/** canary-shift runs the routing strategies on deploy/canary (the xds overlay plus a v2 and a route). */
export const CANARY_OVERLAY = 'canary';
const CANARY_BASE = 'xds';

/** The Deployment of the overlays' servers, their label, and the client Deployment. */
export const SERVER_DEPLOYMENT = 'hello';
export const CANARY_DEPLOYMENT = 'hello-v2';
export const CLIENT_DEPLOYMENT = 'hello-client';
const SERVER_SELECTOR = Object.freeze({ app: 'hello' });

export interface OverlayClient {
  /** The client container's TARGET, expanded (e.g. `kubernetes:///hello.lab-kubernetes:50051`). */
  readonly target: string;
  /** LB_POLICY of the overlay's client, or the strategy's own policy (STRATEGY_OVERLAYS). */
  readonly lbPolicy: string;
  /** AUTHORITY (the sidecar overlay's `hello.NS:50051`), if the client sets one. */
  readonly authority?: string;
  /** The xds overlay: the ADS server URI of the client's bootstrap. */
  readonly xdsServer?: string;
  /** The sidecar overlay: the client pod's proxy container and the port it listens on. */
  readonly sidecar?: { readonly container: string; readonly port: number };
}

export interface OverlayPlan {
  readonly strategy: string;
  /** `deploy/<dir>`: recorded in every run of this strategy. */
  readonly overlay: string;
  readonly namespace: string;
  /** In apply order: namespaces, CRDs, ServiceAccounts and RBAC, then the rest as kustomize rendered them. */
  readonly objects: readonly KubeObject[];
  readonly client: OverlayClient;
  /** Label selector of the server pods the scenario's steps act on. */
  readonly serverSelector: Readonly<Record<string, string>>;
  /** Deployments the scale and rollout steps act on. */
  readonly serverDeployments: readonly string[];
  /** Every Deployment applied, with its pod selector and replicas: all must be Ready before clients start. */
  readonly deployments: readonly {
    name: string;
    selector: Readonly<Record<string, string>>;
    replicas: number;
  }[];
  /** What the lab changed in the overlay's objects, one line each. */
  readonly adaptations: readonly string[];
}

export interface PlanOptions {
  /** The checkout's root (deploy/ lives there). */
  readonly root: string;
  readonly strategy: string;
  /** canary-shift: deploy/canary instead of the strategy's own overlay. */
  readonly canary: boolean;
  readonly replicas: number;
  readonly canaryReplicas?: number;
  readonly maxSurge?: number | string;
  readonly maxUnavailable?: number | string;
  /** The embedded cluster: every pod on the host's network (listeners on 0.0.0.0 would collide). */
  readonly sharedNetwork?: boolean;
}

/** The namespace a strategy's overlay runs in: one per strategy, so overlays never collide. */
export function overlayNamespace(strategy: string): string {
  return `lab-${strategy}`.slice(0, 63).replace(/-+$/, '');
}

/** Thrown for a strategy without an overlay: that strategy fails alone, with this reason. */
export function noOverlayError(strategy: string): GrpcKubeError {
  return new GrpcKubeError(
    'GK_ERR_LAB_MANIFESTS',
    `strategy ${strategy} has no overlay in deploy/ (overlays: ${[...new Set(Object.values(STRATEGY_OVERLAYS).map((o) => o.dir))].join(', ')}); run it without --manifests`,
  );
}

export function planOverlay(o: PlanOptions): OverlayPlan {
  const entry = STRATEGY_OVERLAYS[o.strategy];
  if (entry === undefined) throw noOverlayError(o.strategy);
  // deploy/canary is deploy/xds with a v2 and a weighted GRPCRoute: no other overlay has a canary.
  if (o.canary && entry.dir !== CANARY_BASE)
    throw new GrpcKubeError(
      'GK_ERR_LAB_MANIFESTS',
      `strategy ${o.strategy} has no canary overlay in deploy/ (deploy/${CANARY_OVERLAY} builds on deploy/${CANARY_BASE}); run canary-shift with --strategy xds, or without --manifests`,
    );
  const dir = o.canary ? CANARY_OVERLAY : entry.dir;
  const namespace = overlayNamespace(o.strategy);
  const adaptations: string[] = [`namespace ${namespace} (one per strategy)`];
  let objects = inNamespace(renderKustomization(join(o.root, 'deploy', dir)), namespace);
  const client = findDeployment(objects, CLIENT_DEPLOYMENT, dir);
  const clientEnv = containerEnv(client, 'client', dir);
  const sidecar = sidecarOf(client);
  if (sidecar === undefined) {
    objects = objects.filter((x) => x !== client);
    adaptations.push(`Deployment ${CLIENT_DEPLOYMENT} not applied: the lab's own clients dial its TARGET`);
  } else if (o.sharedNetwork === true) {
    adaptations.push(...exposeSidecar(client, sidecar.container));
  } else {
    adaptations.push(...portForwardSidecar(client, sidecar.port));
  }
  if (o.sharedNetwork === true) {
    for (const d of objects.filter((x) => x.kind === 'Deployment')) {
      const spec = podSpec(d);
      for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
        if (listenOnPodIp(c, /^--listen=0\.0\.0\.0:/))
          adaptations.push(
            `container ${c.name} of ${d.metadata.name}: --listen=$(POD_IP):… instead of 0.0.0.0 (embedded pods share one network: a wildcard bind takes the port from every pod)`,
          );
      }
    }
  }
  const server = findDeployment(objects, SERVER_DEPLOYMENT, dir);
  setReplicas(server, o.replicas, adaptations);
  setStrategy(server, o, adaptations);
  const serverDeployments = [SERVER_DEPLOYMENT];
  if (o.canary) {
    const v2 = findDeployment(objects, CANARY_DEPLOYMENT, dir);
    setReplicas(v2, o.canaryReplicas ?? replicasOf(v2), adaptations);
  }
  const vars = { POD_NAMESPACE: namespace, POD_NAME: `${CLIENT_DEPLOYMENT}-lab` };
  const target = expand(clientEnv.get('TARGET'), vars);
  if (target === undefined) throw manifestError(dir, `Deployment ${CLIENT_DEPLOYMENT} sets no TARGET`);
  const authority = expand(clientEnv.get('AUTHORITY'), vars);
  const xdsServer = xdsServerOf(expand(clientEnv.get('GRPC_XDS_BOOTSTRAP_CONFIG'), vars), dir);
  const deployments = objects
    .filter((x) => x.kind === 'Deployment')
    .map((d) => ({ name: d.metadata.name, selector: selectorOf(d), replicas: replicasOf(d) }));
  return Object.freeze({
    strategy: o.strategy,
    overlay: `deploy/${dir}`,
    namespace,
    objects: accountsFirst(applyOrder(objects)),
    client: Object.freeze({
      target,
      lbPolicy: entry.policy ?? clientEnv.get('LB_POLICY') ?? 'pick_first',
      ...(authority !== undefined ? { authority } : {}),
      ...(xdsServer !== undefined ? { xdsServer } : {}),
      ...(sidecar !== undefined ? { sidecar } : {}),
    }),
    serverSelector: SERVER_SELECTOR,
    serverDeployments,
    deployments,
    adaptations,
  });
}

/**
 * ServiceAccounts and their RBAC before the workloads that name them: a pod whose ServiceAccount does
 * not exist yet is refused, and its ReplicaSet retries only after a backoff.
 */
function accountsFirst(objects: readonly KubeObject[]): KubeObject[] {
  const early = (o: KubeObject): boolean =>
    o.kind === 'Namespace' ||
    o.kind === 'CustomResourceDefinition' ||
    o.kind === 'ServiceAccount' ||
    o.kind === 'Role' ||
    o.kind === 'RoleBinding';
  return [...objects.filter(early), ...objects.filter((o) => !early(o))];
}

interface ContainerSpec {
  name: string;
  args?: string[];
  command?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: unknown }>;
  restartPolicy?: string;
  ports?: Array<{ containerPort: number }>;
}
interface PodSpecLike {
  containers: ContainerSpec[];
  initContainers?: ContainerSpec[];
}

function podSpec(d: KubeObject): PodSpecLike {
  return (d['spec'] as { template: { spec: PodSpecLike } }).template.spec;
}

function manifestError(dir: string, what: string): GrpcKubeError {
  return new GrpcKubeError('GK_ERR_LAB_MANIFESTS', `deploy/${dir}: ${what}; fix the overlay`);
}

function findDeployment(objects: readonly KubeObject[], name: string, dir: string): KubeObject {
  const d = objects.find((x) => x.kind === 'Deployment' && x.metadata.name === name);
  if (d === undefined) throw manifestError(dir, `renders no Deployment ${name}`);
  return d;
}

function containerEnv(d: KubeObject, name: string, dir: string): Map<string, string> {
  const c = podSpec(d).containers.find((x) => x.name === name);
  if (c === undefined) throw manifestError(dir, `Deployment ${d.metadata.name} has no container ${name}`);
  return new Map((c.env ?? []).flatMap((e) => (e.value !== undefined ? [[e.name, e.value]] : [])));
}

function replicasOf(d: KubeObject): number {
  return (d['spec'] as { replicas?: number }).replicas ?? 1;
}

function selectorOf(d: KubeObject): Record<string, string> {
  return {
    ...((d['spec'] as { selector?: { matchLabels?: Record<string, string> } }).selector?.matchLabels ?? {}),
  };
}

function setReplicas(d: KubeObject, replicas: number, adaptations: string[]): void {
  const spec = d['spec'] as { replicas?: number };
  if (spec.replicas === replicas) return;
  adaptations.push(
    `Deployment ${d.metadata.name}: replicas ${spec.replicas ?? 1} → ${replicas} (the scenario's)`,
  );
  spec.replicas = replicas;
}

function setStrategy(d: KubeObject, o: PlanOptions, adaptations: string[]): void {
  if (o.maxSurge === undefined && o.maxUnavailable === undefined) return;
  const spec = d['spec'] as { strategy?: unknown };
  spec.strategy = {
    type: 'RollingUpdate',
    rollingUpdate: {
      ...(o.maxSurge !== undefined ? { maxSurge: o.maxSurge } : {}),
      ...(o.maxUnavailable !== undefined ? { maxUnavailable: o.maxUnavailable } : {}),
    },
  };
  adaptations.push(
    `Deployment ${d.metadata.name}: rolling update maxSurge ${String(o.maxSurge ?? '25%')}, maxUnavailable ${String(o.maxUnavailable ?? '25%')} (the scenario's)`,
  );
}

/** A sidecar: an init container that keeps running (restartPolicy Always) and listens on a port. */
function sidecarOf(client: KubeObject): { container: string; port: number } | undefined {
  for (const c of podSpec(client).initContainers ?? []) {
    if (c.restartPolicy !== 'Always') continue;
    const listen = (c.args ?? []).find((a) => a.startsWith('--listen='));
    const port = Number(listen?.slice(listen.lastIndexOf(':') + 1));
    if (Number.isInteger(port) && port > 0) return { container: c.name, port };
  }
  return undefined;
}

/**
 * The sidecar listens on the pod's loopback, which only its own pod reaches; the lab's clients run
 * outside the pod, so the proxy listens on the pod's address instead (POD_IP from the downward API).
 */
function exposeSidecar(client: KubeObject, name: string): string[] {
  const c = (podSpec(client).initContainers ?? []).find((x) => x.name === name) as ContainerSpec;
  listenOnPodIp(c, /^--listen=127\.0\.0\.1:/);
  const port = sidecarOf(client)?.port;
  const probe = (c as { startupProbe?: { exec?: unknown; tcpSocket?: unknown } }).startupProbe;
  if (probe?.exec === undefined || port === undefined)
    return [
      `container ${name} of ${CLIENT_DEPLOYMENT}: --listen=$(POD_IP):… instead of 127.0.0.1 (the lab's clients are outside the pod)`,
    ];
  // Its exec probe dials 127.0.0.1: now the proxy is on the pod's address, where a tcp probe goes.
  delete probe.exec;
  probe.tcpSocket = { port };
  return [
    `container ${name} of ${CLIENT_DEPLOYMENT}: --listen=$(POD_IP):… instead of 127.0.0.1 (the lab's clients are outside the pod), its startup probe tcpSocket :${port} instead of exec`,
  ];
}

/** The container the lab adds to the client pod on the real cluster (packages/lab/src/manifests/port-forward.ts). */
export const PORT_FORWARD_CONTAINER = 'lab-port-forward';

/**
 * On the real cluster a pod's address is not loopback, and a sidecar proxy listens on loopback only:
 * the sidecar stays as written, and the lab adds what `kubectl port-forward` does — a container in
 * the client pod (its network namespace) that pipes $(POD_IP):port to 127.0.0.1:port. The pod is
 * Ready only once it listens (a tcp readiness probe), so the lab's clients dial a forwarder that is up.
 */
function portForwardSidecar(client: KubeObject, port: number): string[] {
  const spec = podSpec(client);
  const forwarder = {
    name: PORT_FORWARD_CONTAINER,
    image: 'grpc-kube:0.1.0',
    command: ['node', 'packages/lab/dist/src/manifests/port-forward.js'],
    args: [`$(POD_IP):${port}`, `127.0.0.1:${port}`],
    env: [{ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } }],
    readinessProbe: { tcpSocket: { port }, periodSeconds: 1 },
  } as unknown as ContainerSpec;
  spec.containers = [...spec.containers, forwarder];
  return [
    `container ${PORT_FORWARD_CONTAINER} added to ${CLIENT_DEPLOYMENT}: $(POD_IP):${port} → 127.0.0.1:${port}, as kubectl port-forward (the sidecar listens on loopback; the lab's clients are outside the pod)`,
  ];
}

/** `--listen=<host>:port` → `--listen=$(POD_IP):port`, POD_IP from the downward API; false if none. */
function listenOnPodIp(c: ContainerSpec, host: RegExp): boolean {
  if (!(c.args ?? []).some((a) => host.test(a))) return false;
  c.args = (c.args ?? []).map((a) => a.replace(host, '--listen=$(POD_IP):'));
  c.env = [
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    ...(c.env ?? []).filter((e) => e.name !== 'POD_IP'),
  ];
  return true;
}

/** Kubernetes' $(VAR) expansion of an env value ($$ escapes; an unknown $(X) stays as written). */
export function expand(
  value: string | undefined,
  vars: Readonly<Record<string, string>>,
): string | undefined {
  if (value === undefined) return undefined;
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) =>
    m === '$$' ? '$' : (vars[name as string] ?? m),
  );
}

function xdsServerOf(bootstrap: string | undefined, dir: string): string | undefined {
  if (bootstrap === undefined) return undefined;
  try {
    const b = JSON.parse(bootstrap) as { xds_servers?: Array<{ server_uri?: string }> };
    const uri = b.xds_servers?.[0]?.server_uri;
    if (typeof uri === 'string') return uri;
  } catch {
    // reported below
  }
  throw manifestError(
    dir,
    'GRPC_XDS_BOOTSTRAP_CONFIG of the client is not a bootstrap with xds_servers[0].server_uri',
  );
}

/** A Service's DNS name and port, `svc.ns.svc[.cluster.local]:port`, → its parts; else undefined. */
export function serviceAddress(
  hostPort: string,
): { service: string; namespace: string; port: number } | undefined {
  const m = /^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)$/.exec(hostPort);
  if (m === null) return undefined;
  return { service: m[1] as string, namespace: m[2] as string, port: Number(m[3]) };
}

/** An RBAC rule as the embedded API server takes it (src/cluster/apiserver.ts AccessRule). */
export interface RbacRule {
  readonly verbs: readonly string[];
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly namespaces?: readonly string[];
  readonly resourceNames?: readonly string[];
}

/**
 * What each ServiceAccount may do under these objects' Roles and RoleBindings (namespaced, as
 * deploy/ writes them): a RoleBinding gives its ServiceAccount subjects its Role's rules in its
 * namespace. The embedded API server enforces these; the real one reads the objects themselves.
 */
export function serviceAccountRules(
  objects: readonly KubeObject[],
): (namespace: string, serviceAccount: string) => RbacRule[] {
  const roles = new Map<string, RbacRule[]>();
  for (const o of objects)
    if (o.kind === 'Role')
      roles.set(`${o.metadata.namespace ?? ''}/${o.metadata.name}`, (o['rules'] as RbacRule[]) ?? []);
  const grants = new Map<string, RbacRule[]>();
  for (const o of objects) {
    if (o.kind !== 'RoleBinding') continue;
    const ns = o.metadata.namespace ?? '';
    const ref = o['roleRef'] as { kind?: string; name?: string } | undefined;
    if (ref?.kind !== 'Role') continue;
    const rules = (roles.get(`${ns}/${ref.name ?? ''}`) ?? []).map((r) => ({ ...r, namespaces: [ns] }));
    for (const subject of (o['subjects'] as { kind?: string; name?: string; namespace?: string }[]) ?? []) {
      if (subject.kind !== 'ServiceAccount') continue;
      const key = `${subject.namespace ?? ns}/${subject.name ?? ''}`;
      grants.set(key, [...(grants.get(key) ?? []), ...rules]);
    }
  }
  return (namespace, serviceAccount) => grants.get(`${namespace}/${serviceAccount}`) ?? [];
}
