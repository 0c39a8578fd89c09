// The lab kubelet: the node agent of the embedded (and later the real) lab cluster. It registers Node
// objects (with their zone label), binds pending pods to them, gives each pod its own IP, runs it
// through a PodRuntime and reports status as the real kubelet does: podIP and podIPs, phase Running,
// PodScheduled / Initialized / ContainersReady / Ready with real lastTransitionTime. Readiness comes
// from a real grpc.health.v1 Check on the pod's ip:port (periodSeconds, timeoutSeconds,
// successThreshold, failureThreshold; sub-second periods through the probe-period-ms annotation or
// the probePeriodMs option). On deletion: SIGTERM, keep probing (so `serving` stays honest), SIGKILL
// after deletionGracePeriodSeconds, Ready=False and a terminal phase, then DELETE with
// gracePeriodSeconds 0 and the uid precondition. A process that dies by itself is restarted
// (restartPolicy Always, or OnFailure after a failure) with capped backoff, or left Failed/Succeeded.

import { RESOURCES, type ObjectStore } from './store-api.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { WorkQueue } from './controllers/queue.js';
import {
  HOSTNAME_LABEL,
  ZONE_LABEL,
  isPodTerminal,
  keyOf,
  splitKey,
  type Node,
  type Pod,
  type PodStatus,
  putStatus,
} from './controllers/kinds.js';
import type { PodProcess, PodRuntime } from './pod-runtime.js';
import { PodWorker, deletionGraceMs, setCondition, type PodWorkerHost } from './pod-worker.js';

export { PROBE_PERIOD_MS_ANNOTATION } from './pod-worker.js';

export interface KubeletNode {
  readonly name: string;
  readonly zone?: string;
  readonly labels?: Readonly<Record<string, string>>;
}

export interface IpAllocator {
  allocate(): string;
  release(ip: string): void;
}

function ipToInt(ip: string): number {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new InvalidOptionError('ipPool.first', `must be a dotted IPv4 address, got "${ip}"`);
  }
  return (((parts[0] ?? 0) << 24) | ((parts[1] ?? 0) << 16) | ((parts[2] ?? 0) << 8) | (parts[3] ?? 0)) >>> 0;
}

function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/**
 * Hands out addresses from `first` upwards, skipping .0 and .255 in the last octet. Released addresses
 * are reused oldest-released first and only once the fresh ones run out, so a client that still holds
 * a dead pod's address does not reach its successor by accident.
 */
export class IpPool implements IpAllocator {
  private readonly first: number;
  private readonly count: number;
  private next = 0;
  private readonly free: string[] = [];
  private readonly used = new Set<string>();

  constructor(opts: { first?: string; count?: number } = {}) {
    this.first = ipToInt(opts.first ?? '127.0.2.1');
    this.count = opts.count ?? 250 * 64;
    if (!Number.isInteger(this.count) || this.count < 1) {
      throw new InvalidOptionError('ipPool.count', `must be a positive integer, got ${this.count}`);
    }
  }

  allocate(): string {
    while (this.next < this.count) {
      const ip = intToIp((this.first + this.next++) >>> 0);
      const last = Number(ip.slice(ip.lastIndexOf('.') + 1));
      if (last !== 0 && last !== 255 && !this.used.has(ip)) {
        this.used.add(ip);
        return ip;
      }
    }
    const ip = this.free.shift();
    if (ip === undefined)
      throw new GrpcKubeError(
        'GK_ERR_LAB',
        `pod IP pool exhausted (${this.count} addresses); stop some pods or give a larger pool`,
      );
    this.used.add(ip);
    return ip;
  }

  release(ip: string): void {
    if (this.used.delete(ip)) this.free.push(ip);
  }
}

/** What both lab kubelets (the embedded one here, the real one in real/kubelet.ts) are given alike. */
export interface KubeletCommonOptions {
  readonly runtime: PodRuntime;
  /** Nodes this kubelet registers and runs pods on. Default: one node `lab-node-1` in zone `zone-a`. */
  readonly nodes?: readonly KubeletNode[];
  readonly ipAllocator?: IpAllocator;
  /** Overrides every pod's readiness periodSeconds (the probe-period-ms annotation still wins). */
  readonly probePeriodMs?: number;
  /** Container port when the container declares none. Default 50051. */
  readonly defaultPort?: number;
  /** First restart delay of a crashed container; doubles up to restartBackoffMaxMs. Default 100. */
  readonly restartBackoffMs?: number;
  /** Longest restart delay of a crash-looping container. Default 5 000. */
  readonly restartBackoffMaxMs?: number;
  /** On stop(): SIGTERM, then SIGKILL after this long. Default 2 000. */
  readonly stopGraceMs?: number;
  readonly onError?: (what: string, err: unknown) => void;
}

export interface KubeletOptions extends KubeletCommonOptions {
  /** Address reported as the Node's InternalIP and the pods' hostIP. */
  readonly hostIP?: string;
  /**
   * Renew each Node's Ready heartbeat this often (the real node-lifecycle controller marks pods of a
   * silent node NotReady after 50 s). 0 (default): register once, as the embedded cluster needs.
   */
  readonly nodeHeartbeatMs?: number;
  /**
   * How a pod is bound to a node. Default: an update setting spec.nodeName (what the in-process store
   * accepts); a real API server wants POST pods/<name>/binding instead.
   */
  readonly bindPod?: (pod: Pod, nodeName: string) => void;
  readonly now?: () => number;
  /** The node's part of each pod's environment (PodWorkerHost.podEnvironment), e.g. its ServiceAccount mount. */
  readonly podEnvironment?: (pod: Pod, podIP: string) => Promise<Record<string, string>>;
  readonly releasePodEnvironment?: (pod: Pod) => Promise<void>;
}

/** The Node object a lab kubelet registers: hostname/os/arch/zone labels, Ready, its addresses. */
export function labNodeObject(n: KubeletNode, hostIP: string, at: string): Node {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: n.name,
      labels: {
        ...(n.labels ?? {}),
        [HOSTNAME_LABEL]: n.name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': process.arch === 'x64' ? 'amd64' : process.arch,
        ...(n.zone ? { [ZONE_LABEL]: n.zone } : {}),
      },
    },
    spec: {},
    status: {
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          message: 'lab kubelet is posting ready status',
          lastHeartbeatTime: at,
          lastTransitionTime: at,
        },
      ],
      addresses: [
        { type: 'InternalIP', address: hostIP },
        { type: 'Hostname', address: n.name },
      ],
    },
  };
}

/**
 * What the two lab kubelets share: their options, checked once, and the pod workers they run (one per
 * pod: its address, process, probes and logs). How pods reach a kubelet and where status goes differ:
 * the embedded Kubelet below reads and writes the in-process store, RealKubelet talks HTTP to
 * kube-apiserver.
 */
export abstract class KubeletBase {
  readonly runtime: PodRuntime;
  readonly nodes: readonly KubeletNode[];
  readonly ipAllocator: IpAllocator;
  readonly hostIP: string;
  readonly probePeriodMs: number | undefined;
  readonly defaultPort: number;
  readonly restartBackoffMs: number;
  readonly restartBackoffMaxMs: number;
  protected readonly stopGraceMs: number;
  protected readonly onError: ((what: string, err: unknown) => void) | undefined;
  /** The worker of each pod this kubelet runs, by `namespace/name`. */
  protected readonly workers = new Map<string, PodWorker>();
  /** Disposals of workers already forgotten (retire()), which stop() still waits for. */
  private readonly retiring = new Set<Promise<void>>();

  protected constructor(
    opts: KubeletCommonOptions,
    node: { hostIP: string; ipAllocator: () => IpAllocator },
  ) {
    this.runtime = opts.runtime;
    this.nodes = (opts.nodes ?? [{ name: 'lab-node-1', zone: 'zone-a' }]).map((n) => ({ ...n }));
    if (this.nodes.length === 0) throw new InvalidOptionError('nodes', 'must name at least one node');
    this.ipAllocator = opts.ipAllocator ?? node.ipAllocator();
    this.hostIP = node.hostIP;
    this.probePeriodMs = opts.probePeriodMs;
    if (this.probePeriodMs !== undefined && !(this.probePeriodMs >= 10)) {
      throw new InvalidOptionError('probePeriodMs', `must be at least 10, got ${this.probePeriodMs}`);
    }
    this.defaultPort = opts.defaultPort ?? 50051;
    this.restartBackoffMs = opts.restartBackoffMs ?? 100;
    this.restartBackoffMaxMs = opts.restartBackoffMaxMs ?? 5000;
    this.stopGraceMs = opts.stopGraceMs ?? 2000;
    this.onError = opts.onError;
  }

  /** The running process of a pod (for scenarios that kill a pod's process behind the kubelet's back). */
  podProcess(namespace: string, name: string): PodProcess | undefined {
    return this.workers.get(`${namespace}/${name}`)?.proc;
  }

  /**
   * The last lines a pod's container wrote (LOG_TAIL_LINES at most): of its current run — while a
   * crashed container waits to restart, the crashed one — or with `previous`, of the run before.
   * `container` must name the pod's container when given. Undefined for a pod this kubelet does not run.
   */
  logs(
    namespace: string,
    pod: string,
    opts: { container?: string; previous?: boolean } = {},
  ): string[] | undefined {
    return this.workers.get(`${namespace}/${pod}`)?.logs(opts);
  }

  /** The address given to a pod, while it runs. */
  podIP(namespace: string, name: string): string | undefined {
    return this.workers.get(`${namespace}/${name}`)?.ip;
  }

  /**
   * Forget a pod's worker (if it is still the one for `key`) and end its processes at once; stop()
   * waits for that too, so no process of this kubelet outlives it.
   */
  protected retire(key: string, worker: PodWorker): void {
    if (this.workers.get(key) === worker) this.workers.delete(key);
    const done = worker.dispose().finally(() => this.retiring.delete(done));
    this.retiring.add(done);
  }

  /** Ends every pod's process (SIGTERM, SIGKILL after stopGraceMs) and forgets the workers. */
  protected async stopWorkers(): Promise<void> {
    const workers = [...this.workers.values()];
    this.workers.clear();
    await Promise.all([
      ...workers.map(async (w) => {
        // Status writes are off once stopped: this only ends the process, gracefully first.
        await w.terminate(this.stopGraceMs);
        await w.dispose();
      }),
      ...this.retiring,
    ]);
  }
}

export class Kubelet extends KubeletBase implements PodWorkerHost {
  private readonly now: () => number;
  private readonly queue: WorkQueue;
  /** Workers whose graceful termination (and final DELETE) is under way. */
  private readonly deleting = new Set<PodWorker>();
  private readonly nodeHeartbeatMs: number;
  private readonly bindPod: ((pod: Pod, nodeName: string) => void) | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly podNodes = new Map<string, string>();
  private stopWatch: (() => void) | undefined;
  private stopped = false;
  private readonly envHooks: Pick<KubeletOptions, 'podEnvironment' | 'releasePodEnvironment'>;

  constructor(
    private readonly store: ObjectStore,
    opts: KubeletOptions,
  ) {
    super(opts, { hostIP: opts.hostIP ?? '127.0.0.1', ipAllocator: () => new IpPool() });
    this.now = opts.now ?? Date.now;
    this.nodeHeartbeatMs = opts.nodeHeartbeatMs ?? 0;
    if (!(this.nodeHeartbeatMs >= 0)) {
      throw new InvalidOptionError('nodeHeartbeatMs', `must be >= 0, got ${this.nodeHeartbeatMs}`);
    }
    this.bindPod = opts.bindPod;
    this.envHooks = {
      podEnvironment: opts.podEnvironment,
      releasePodEnvironment: opts.releasePodEnvironment,
    };
    this.queue = new WorkQueue({ handler: (key) => this.syncPod(key), onError: opts.onError });
  }

  /** Registers the Nodes, then runs every pod bound (or bindable) to them. */
  start(): void {
    if (this.stopWatch || this.stopped) return;
    const at = this.nowIso();
    for (const n of this.nodes) {
      const node = labNodeObject(n, this.hostIP, at);
      const existing = this.store.get<Node>(RESOURCES.nodes, undefined, n.name);
      if (existing)
        this.store.update<Node>(RESOURCES.nodes, {
          ...node,
          metadata: { ...existing.metadata, labels: node.metadata.labels },
        });
      else this.store.create<Node>(RESOURCES.nodes, node);
    }
    if (this.nodeHeartbeatMs > 0) {
      this.heartbeatTimer = setInterval(() => this.heartbeat(), this.nodeHeartbeatMs);
      this.heartbeatTimer.unref();
    }
    this.stopWatch = this.store.watch<Pod>(RESOURCES.pods, {}, (ev) => {
      if (ev.type !== 'ADDED' && ev.type !== 'MODIFIED' && ev.type !== 'DELETED') return;
      const pod = ev.object as Pod;
      const key = keyOf(pod);
      // Where pods are bound, for spreading, kept from events (no list per binding).
      if (ev.type === 'DELETED' || !pod.spec.nodeName) this.podNodes.delete(key);
      else this.podNodes.set(key, pod.spec.nodeName);
      this.queue.add(key);
    });
  }

  /** Stops watching and ends every pod process: SIGTERM, SIGKILL after stopGraceMs. Pod objects stay. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.stopWatch?.();
    this.queue.close();
    await this.stopWorkers();
  }

  private heartbeat(): void {
    if (this.stopped) return;
    const at = this.nowIso();
    for (const n of this.nodes) {
      try {
        const node = this.store.get<Node>(RESOURCES.nodes, undefined, n.name);
        if (!node) continue;
        const conditions = (node.status?.conditions ?? []).map((c) =>
          c.type === 'Ready' ? { ...c, lastHeartbeatTime: at } : c,
        );
        putStatus<Node>(this.store, RESOURCES.nodes, { ...node, status: { ...node.status, conditions } });
      } catch (err) {
        this.reportError(`node/${n.name}`, err);
      }
    }
  }

  /** Resolves when no pod sync is queued or running (processes may still be starting). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  nowIso(): string {
    return new Date(this.now()).toISOString();
  }

  reportError(what: string, err: unknown): void {
    this.onError?.(what, err);
  }

  async podEnvironment(pod: Pod, podIP: string): Promise<Record<string, string>> {
    return (await this.envHooks.podEnvironment?.(pod, podIP)) ?? {};
  }

  async releasePodEnvironment(pod: Pod): Promise<void> {
    await this.envHooks.releasePodEnvironment?.(pod);
  }

  /** Read-modify-write of a pod's status, skipped when the pod is gone or was replaced (new uid). */
  updateStatus(key: string, uid: string, mutate: (s: PodStatus) => void): void {
    if (this.stopped) return;
    const { namespace, name } = splitKey(key);
    for (let attempt = 0; attempt < 5; attempt++) {
      const pod = this.store.get<Pod>(RESOURCES.pods, namespace, name);
      if (!pod || pod.metadata.uid !== uid) return;
      const status: PodStatus = structuredClone(pod.status ?? {});
      mutate(status);
      if (JSON.stringify(status) === JSON.stringify(pod.status ?? {})) return;
      try {
        putStatus<Pod>(this.store, RESOURCES.pods, { ...pod, status });
        return;
      } catch (err) {
        const code = (err as { status?: number }).status;
        if (code === 404) return;
        if (code !== 409) {
          this.reportError(key, err);
          return;
        }
      }
    }
  }

  private myNode(name: string | undefined): boolean {
    return name !== undefined && this.nodes.some((n) => n.name === name);
  }

  private syncPod(key: string): void {
    if (this.stopped) return;
    const { namespace, name } = splitKey(key);
    const pod = this.store.get<Pod>(RESOURCES.pods, namespace, name);
    let worker = this.workers.get(key);
    if (worker && (!pod || pod.metadata.uid !== worker.uid)) {
      // Removed (or replaced by a namesake) without our graceful path: the process goes at once.
      this.retire(key, worker);
      worker = undefined;
    }
    if (!pod) return;
    const uid = pod.metadata.uid ?? '';
    if (!pod.spec.nodeName) {
      if (pod.metadata.deletionTimestamp) this.finalDelete(key, uid);
      else this.bind(pod);
      return;
    }
    if (!this.myNode(pod.spec.nodeName)) return;
    if (pod.metadata.deletionTimestamp) {
      if (!worker) {
        this.finalDelete(key, uid);
        return;
      }
      const w = worker;
      const done = w.terminate(deletionGraceMs(pod));
      if (this.deleting.has(w)) return;
      this.deleting.add(w);
      void done.then(() => {
        this.deleting.delete(w);
        if (this.stopped) return;
        this.retire(key, w);
        this.finalDelete(key, uid);
      });
      return;
    }
    if (!worker && !isPodTerminal(pod)) {
      worker = new PodWorker(this, key, uid, pod);
      this.workers.set(key, worker);
      void worker.admit();
    }
  }

  private bind(pod: Pod): void {
    // Spread: the node with the fewest pods of ours, first in the list on a tie.
    const counts = new Map(this.nodes.map((n) => [n.name, 0]));
    for (const n of this.podNodes.values()) if (counts.has(n)) counts.set(n, (counts.get(n) ?? 0) + 1);
    let best = this.nodes[0]?.name ?? '';
    for (const n of this.nodes) if ((counts.get(n.name) ?? 0) < (counts.get(best) ?? 0)) best = n.name;
    try {
      if (this.bindPod) this.bindPod(pod, best);
      else this.store.update<Pod>(RESOURCES.pods, { ...pod, spec: { ...pod.spec, nodeName: best } });
      this.podNodes.set(keyOf(pod), best);
    } catch (err) {
      // A conflict means the pod changed meanwhile; its event brings us back here.
      const code = (err as { status?: number }).status;
      if (code !== 409 && code !== 404) throw err;
      return;
    }
    const at = this.nowIso();
    this.updateStatus(keyOf(pod), pod.metadata.uid ?? '', (s) => {
      s.phase ??= 'Pending';
      setCondition(s, 'PodScheduled', 'True', at);
    });
  }

  private finalDelete(key: string, uid: string): void {
    const { namespace, name } = splitKey(key);
    try {
      this.store.delete(RESOURCES.pods, namespace, name, { gracePeriodSeconds: 0, preconditionUid: uid });
    } catch (err) {
      const code = (err as { status?: number }).status;
      if (code !== 404 && code !== 409) this.reportError(key, err);
    }
  }
}
