// The lab kubelet: the node agent of both lab clusters, over the lab's Kubernetes API (Kube: the
// embedded cluster's store or a real kube-apiserver) and a PodRuntime. It registers Node objects
// (zone label, InternalIP) and, where asked, keeps their Ready heartbeat and their Leases in
// kube-node-lease fresh; it follows every pod (Kube.watch), binds pending pods itself (POST
// pods/NAME/binding: there is no scheduler), and runs each bound pod through a PodWorker at its own
// address. Status is what the controllers read: phase, podIP AND podIPs, PodScheduled / Initialized /
// ContainersReady / Ready with real lastTransitionTime (Ready follows a real probe), container
// statuses. On deletion: SIGTERM, keep probing (so the slice's `serving` stays honest), SIGKILL after
// deletionGracePeriodSeconds, Ready=False and a terminal phase, then DELETE with gracePeriodSeconds 0
// and the uid precondition.
//
// All writes go through Kube and are per pod strictly in order (one chain of promises per pod); a
// status write is GET → mutate → PUT status, retried on 409. Writes the controllers wait for survive
// an API outage (retried while the API is unreachable, until stop()). What differs between the
// clusters is options, not subclasses: where pod addresses come from and how they become reachable
// (podNetwork: the real cluster's network namespaces), heartbeats and Leases, the node's part of each
// pod's environment (podEnvironment: ServiceAccount tokens), timestamp resolution.

import { Backoff } from 'grpc-kube/internal/discovery/backoff.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import type { WatchEvent } from 'grpc-kube/internal/kube/types.js';
import {
  HOSTNAME_LABEL,
  ZONE_LABEL,
  isPodTerminal,
  keyOf,
  splitKey,
  type Node,
  type Pod,
  type PodStatus,
} from './controllers/kinds.js';
import { IpPool, type IpAllocator } from './ip-pool.js';
import { KINDS, isTransient, statusOf, type Kube } from './kube-api.js';
import type { PodProcess, PodRuntime } from './pod-runtime.js';
import { PodWorker, deletionGraceMs, type PodWorkerHost } from './pod-worker.js';

export { IpPool, type IpAllocator } from './ip-pool.js';
export { PROBE_PERIOD_MS_ANNOTATION } from './pod-worker.js';

export interface KubeletNode {
  readonly name: string;
  readonly zone?: string;
  readonly labels?: Readonly<Record<string, string>>;
}

/** Makes pod addresses reachable: the real cluster's LabNetwork (one network namespace per pod). */
export interface PodNetworkHooks {
  /** Called with a freshly allocated address before the pod's first container starts. */
  addPod(ip: string): Promise<unknown>;
  /** Undoes addPod once the pod's processes are gone. */
  removePod(ip: string): Promise<void>;
}

/**
 * The node's part of each pod's environment, e.g. its ServiceAccount mount and the variables that
 * point at it and at the API (KUBERNETES_SERVICE_HOST/PORT).
 */
export interface PodEnvironment {
  /** Called once per pod, before its first container starts. */
  project(pod: Pod, podIP: string): Promise<Record<string, string>>;
  /** Undoes project once the pod is gone. */
  release(pod: Pod): Promise<void>;
  /** Called by the kubelet's stop(), after every pod's release. */
  close?(): Promise<void>;
}

export interface KubeletOptions {
  readonly runtime: PodRuntime;
  /** Nodes this kubelet registers and runs pods on. Default: one node `lab-node-1` in zone `zone-a`. */
  readonly nodes?: readonly KubeletNode[];
  /** Only pods of this namespace (default: every namespace). */
  readonly namespace?: string;
  /** Address reported as the Node's InternalIP and the pods' hostIP. Default 127.0.0.1. */
  readonly hostIP?: string;
  /** Pod addresses. Default: an IpPool from 127.0.2.1. */
  readonly ipAllocator?: IpAllocator;
  /** Makes each pod address reachable before the pod starts; default: nothing to do (loopback). */
  readonly podNetwork?: PodNetworkHooks;
  readonly podEnvironment?: PodEnvironment;
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
  /**
   * Renew each Node's Ready heartbeat (and Lease) this often; the real node-lifecycle controller
   * marks the pods of a node silent for 40 s NotReady. 0 (default): register once, as the embedded
   * cluster, which has no such controller, needs.
   */
  readonly heartbeatMs?: number;
  /**
   * Give each Node a Lease in kube-node-lease with this spec.leaseDurationSeconds, renewed with each
   * heartbeat (the real kubelet's is 40). Default: no Leases (the embedded store serves none).
   */
  readonly leaseDurationSeconds?: number;
  /**
   * Resolution of the times the kubelet writes. 's' where the API keeps metav1.Time to the second
   * (kube-apiserver): a time written with milliseconds would always differ from the one stored, and
   * no status write would be skipped as unchanged. Default 'ms'.
   */
  readonly timestamps?: 'ms' | 's';
  /**
   * How long a write the controllers wait for (status, binding, final DELETE) is retried while the
   * API is unreachable or overloaded. Default 120 000.
   */
  readonly retryTransientMs?: number;
  readonly now?: () => number;
  /** Errors of pod syncs, status writes, heartbeats and the pod watch; none after stop(). */
  readonly onError?: (what: string, err: unknown) => void;
}

export interface KubeletStats {
  binds: number;
  starts: number;
  statusWrites: number;
  conflicts: number;
  deletes: number;
  /** Final DELETEs answered 404: the pod was already gone (e.g. a retried DELETE whose first try landed). */
  deletesAlreadyGone: number;
  heartbeats: number;
  /** Lists of the pod watch (the first, and each after 410 Expired; HTTP only). */
  lists: number;
  errors: number;
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

/** RFC 3339 with microseconds, as metav1.MicroTime (Lease renewTime) is parsed. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, '000Z');
}

const NODE_LEASE_NAMESPACE = 'kube-node-lease';

function isKube(x: unknown): x is Kube {
  const o = x as Record<string, unknown> | null;
  return typeof o === 'object' && o !== null && KUBE_METHODS.every((m) => typeof o[m] === 'function');
}

const KUBE_METHODS = ['get', 'list', 'create', 'replace', 'patch', 'delete', 'post', 'watch', 'close'];

/** The options as given, or a typed error before anything reads them. */
function checked(kube: Kube, opts: KubeletOptions): KubeletOptions {
  if (!isKube(kube))
    throw new InvalidOptionError('kube', 'must be a Kube (kube-api.ts: storeKube or httpKube)');
  if (typeof opts !== 'object' || opts === null) throw new InvalidOptionError('options', 'must be an object');
  const atLeast = (name: keyof KubeletOptions, min: number, zeroOk = false): void => {
    const v = opts[name];
    if (v === undefined || (zeroOk && v === 0)) return;
    if (typeof v !== 'number' || !(v >= min))
      throw new InvalidOptionError(name, `must be ${zeroOk ? '0 or ' : ''}at least ${min}, got ${String(v)}`);
  };
  atLeast('probePeriodMs', 10);
  atLeast('heartbeatMs', 10, true);
  atLeast('leaseDurationSeconds', 1);
  atLeast('retryTransientMs', 0);
  return opts;
}

export class Kubelet implements PodWorkerHost {
  readonly runtime: PodRuntime;
  readonly nodes: readonly KubeletNode[];
  readonly ipAllocator: IpAllocator;
  readonly hostIP: string;
  readonly probePeriodMs: number | undefined;
  readonly defaultPort: number;
  readonly restartBackoffMs: number;
  readonly restartBackoffMaxMs: number;
  readonly stats: KubeletStats = {
    binds: 0,
    starts: 0,
    statusWrites: 0,
    conflicts: 0,
    deletes: 0,
    deletesAlreadyGone: 0,
    heartbeats: 0,
    lists: 0,
    errors: 0,
  };
  private readonly opts: KubeletOptions;
  private readonly stopGraceMs: number;
  private readonly heartbeatMs: number;
  private readonly retryTransientMs: number;
  private readonly now: () => number;
  /** The worker of each pod this kubelet runs, by `namespace/name`. */
  private readonly workers = new Map<string, PodWorker>();
  /** Disposals of workers already forgotten (retire()), which stop() still waits for. */
  private readonly retiring = new Set<Promise<void>>();
  /** Every pod as the watch last delivered it, by `namespace/name`. */
  private readonly pods = new Map<string, Pod>();
  /** Pods whose graceful termination (and final DELETE) is under way. */
  private readonly deleting = new Set<string>();
  /** Per pod: the tail of its chain of syncs and status writes, so they run one at a time, in order. */
  private readonly chains = new Map<string, Promise<void>>();
  private readonly pendingSync = new Set<string>();
  /**
   * Node chosen per pod at the moment of choosing, before its binding is written: pods pending in the
   * same burst bind concurrently, and each choice must see the ones made just before it.
   */
  private readonly assigned = new Map<string, string>();
  private readonly abort = new AbortController();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private stopWatch: (() => void) | undefined;
  private started = false;

  /** `kube` is the kubelet's own: stop() closes it. */
  constructor(
    private readonly kube: Kube,
    opts: KubeletOptions,
  ) {
    this.opts = { ...checked(kube, opts) };
    this.runtime = opts.runtime;
    this.nodes = (opts.nodes ?? [{ name: 'lab-node-1', zone: 'zone-a' }]).map((n) => ({ ...n }));
    if (this.nodes.length === 0) throw new InvalidOptionError('nodes', 'must name at least one node');
    this.ipAllocator = opts.ipAllocator ?? new IpPool();
    this.hostIP = opts.hostIP ?? '127.0.0.1';
    this.probePeriodMs = opts.probePeriodMs;
    this.defaultPort = opts.defaultPort ?? 50051;
    this.restartBackoffMs = opts.restartBackoffMs ?? 100;
    this.restartBackoffMaxMs = opts.restartBackoffMaxMs ?? 5000;
    this.stopGraceMs = opts.stopGraceMs ?? 2000;
    this.heartbeatMs = opts.heartbeatMs ?? 0;
    this.retryTransientMs = opts.retryTransientMs ?? 120_000;
    this.now = opts.now ?? Date.now;
  }

  /** Registers the Nodes (and their Leases), then follows pods. Resolves once the Nodes exist. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    for (const n of this.nodes) await this.registerNode(n);
    if (this.abort.signal.aborted) return;
    if (this.heartbeatMs > 0) {
      this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.heartbeatMs);
      this.heartbeatTimer.unref();
    }
    this.stopWatch = this.kube.watch<Pod>(
      KINDS.pods,
      this.opts.namespace !== undefined ? { namespace: this.opts.namespace } : {},
      (ev) => this.onPodEvent(ev),
      {
        onList: () => void this.stats.lists++,
        onError: (err) => this.reportError('pods watch', err),
      },
    );
  }

  /**
   * Stops following pods and ends every process (SIGTERM, SIGKILL after stopGraceMs), then closes the
   * Kube. API objects stay.
   */
  async stop(): Promise<void> {
    if (this.abort.signal.aborted) return;
    this.abort.abort();
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.stopWatch?.();
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
    await Promise.allSettled([...this.chains.values()]);
    await this.opts.podEnvironment?.close?.();
    this.kube.close();
  }

  /** Resolves when no pod sync or status write is queued or running (processes may still be starting). */
  async idle(): Promise<void> {
    while (this.chains.size > 0) await Promise.allSettled([...this.chains.values()]);
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

  // ---- PodWorkerHost ----

  nowIso(): string {
    const iso = new Date(this.now()).toISOString();
    return this.opts.timestamps === 's' ? iso.replace(/\.\d{3}Z$/, 'Z') : iso;
  }

  reportError(what: string, err: unknown): void {
    this.stats.errors++;
    if (!this.abort.signal.aborted) this.opts.onError?.(what, err);
  }

  async addPodAddress(ip: string): Promise<void> {
    await this.opts.podNetwork?.addPod(ip);
  }

  async removePodAddress(ip: string): Promise<void> {
    await this.opts.podNetwork?.removePod(ip);
  }

  onContainerStart(): void {
    this.stats.starts++;
  }

  async podEnvironment(pod: Pod, podIP: string): Promise<Record<string, string>> {
    return (await this.opts.podEnvironment?.project(pod, podIP)) ?? {};
  }

  async releasePodEnvironment(pod: Pod): Promise<void> {
    await this.opts.podEnvironment?.release(pod);
  }

  /** GET → mutate → PUT status, in the pod's chain; skipped when the pod is gone or replaced (uid). */
  updateStatus(key: string, uid: string, mutate: (s: PodStatus) => void): void {
    if (this.abort.signal.aborted) return;
    void this.enqueue(key, async () => {
      const { namespace, name } = splitKey(key);
      for (let attempt = 0; attempt < 5; attempt++) {
        const done = await this.retryTransient(async (): Promise<boolean> => {
          const pod = await this.kube.get<Pod>(KINDS.pods, namespace, name);
          if (pod === undefined || pod.metadata.uid !== uid) return true;
          const status: PodStatus = structuredClone(pod.status ?? {});
          mutate(status);
          if (JSON.stringify(status) === JSON.stringify(pod.status ?? {})) return true;
          try {
            await this.kube.replace<Pod>(KINDS.pods, { ...pod, status }, { status: true });
            this.stats.statusWrites++;
            return true;
          } catch (err) {
            const code = statusOf(err);
            if (code === 404) return true;
            if (code !== 409) throw err;
            this.stats.conflicts++;
            return false;
          }
        });
        if (done !== false) return;
      }
    });
  }

  // ---- nodes and leases ----

  private async registerNode(n: KubeletNode): Promise<void> {
    const want = labNodeObject(n, this.hostIP, this.nowIso());
    let node: Node;
    try {
      node = await this.kube.create<Node>(KINDS.nodes, want);
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
      const cur = await this.kube.get<Node>(KINDS.nodes, undefined, n.name);
      if (cur === undefined) throw err;
      node = await this.kube.replace<Node>(KINDS.nodes, {
        ...cur,
        metadata: { ...cur.metadata, labels: want.metadata.labels },
      });
    }
    // Status is a subresource: a create may drop it, so write it explicitly.
    await this.kube.patch(KINDS.nodes, undefined, n.name, { status: want.status }, { status: true });
    const leaseDurationSeconds = this.opts.leaseDurationSeconds;
    if (leaseDurationSeconds === undefined) return;
    const lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: n.name,
        namespace: NODE_LEASE_NAMESPACE,
        ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: n.name, uid: node.metadata.uid ?? '' }],
      },
      spec: { holderIdentity: n.name, leaseDurationSeconds, renewTime: microTime(this.now()) },
    };
    try {
      await this.kube.create(KINDS.leases, lease);
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
      await this.renewLease(n.name);
    }
  }

  private async renewLease(name: string): Promise<void> {
    await this.kube.patch(KINDS.leases, NODE_LEASE_NAMESPACE, name, {
      spec: { holderIdentity: name, renewTime: microTime(this.now()) },
    });
  }

  private async heartbeat(): Promise<void> {
    if (this.abort.signal.aborted) return;
    const at = this.nowIso();
    for (const n of this.nodes) {
      try {
        if (this.opts.leaseDurationSeconds !== undefined) await this.renewLease(n.name);
        const node = await this.kube.get<Node>(KINDS.nodes, undefined, n.name);
        if (node === undefined) continue;
        const conditions = (node.status?.conditions ?? []).map((c) =>
          c.type === 'Ready'
            ? { ...c, status: 'True' as const, reason: 'KubeletReady', lastHeartbeatTime: at }
            : c,
        );
        await this.kube.patch(KINDS.nodes, undefined, n.name, { status: { conditions } }, { status: true });
        this.stats.heartbeats++;
      } catch (err) {
        this.reportError(`node/${n.name}`, err);
      }
    }
  }

  // ---- following pods ----

  private onPodEvent(ev: WatchEvent<Pod>): void {
    if (ev.type !== 'ADDED' && ev.type !== 'MODIFIED' && ev.type !== 'DELETED') return;
    const pod = ev.object as Pod;
    const key = keyOf(pod);
    if (ev.type === 'DELETED') this.pods.delete(key);
    else this.pods.set(key, pod);
    this.scheduleSync(key);
  }

  /** Queue `fn` behind everything already queued for `key`. */
  private enqueue(key: string, fn: () => Promise<void>): Promise<void> {
    const next = (this.chains.get(key) ?? Promise.resolve())
      .then(fn)
      .catch((err: unknown) => this.reportError(key, err));
    this.chains.set(key, next);
    void next.then(() => {
      if (this.chains.get(key) === next) this.chains.delete(key);
    });
    return next;
  }

  private scheduleSync(key: string): void {
    if (this.abort.signal.aborted || this.pendingSync.has(key)) return;
    this.pendingSync.add(key);
    void this.enqueue(key, async () => {
      this.pendingSync.delete(key);
      await this.syncPod(key);
    });
  }

  /**
   * Runs `fn` again while the API is unreachable or overloaded (isTransient), with jittered backoff,
   * for at most retryTransientMs and never after stop() (then: undefined): a write the controllers
   * wait for (Ready, the final DELETE, a binding) must survive an API outage, and no event would bring
   * it back later.
   */
  private async retryTransient<T>(fn: () => Promise<T>): Promise<T | undefined> {
    const signal = this.abort.signal;
    const backoff = new Backoff({ initialMs: 200, maxMs: 2_000 });
    const deadline = Date.now() + this.retryTransientMs;
    for (;;) {
      if (signal.aborted) return undefined;
      try {
        return await fn();
      } catch (err) {
        if (!isTransient(err) || Date.now() > deadline || signal.aborted) throw err;
        await new Promise<void>((resolve) => {
          const done = (): void => {
            clearTimeout(t);
            signal.removeEventListener('abort', done);
            resolve();
          };
          const t = setTimeout(done, backoff.next());
          t.unref();
          signal.addEventListener('abort', done, { once: true });
        });
      }
    }
  }

  private myNode(name: string | undefined): boolean {
    return name !== undefined && this.nodes.some((n) => n.name === name);
  }

  /**
   * Forget a pod's worker (if it is still the one for `key`) and end its processes at once; stop()
   * waits for that too, so no process of this kubelet outlives it.
   */
  private retire(key: string, worker: PodWorker): Promise<void> {
    if (this.workers.get(key) === worker) this.workers.delete(key);
    const done = worker.dispose().finally(() => this.retiring.delete(done));
    this.retiring.add(done);
    return done;
  }

  private async syncPod(key: string): Promise<void> {
    if (this.abort.signal.aborted) return;
    const pod = this.pods.get(key);
    let worker = this.workers.get(key);
    if (worker && (!pod || pod.metadata.uid !== worker.uid)) {
      // Removed (or replaced by a namesake) without our graceful path: the process goes at once.
      void this.retire(key, worker);
      worker = undefined;
    }
    if (!pod) {
      this.assigned.delete(key);
      return;
    }
    const uid = pod.metadata.uid ?? '';
    if (!pod.spec.nodeName) {
      if (pod.metadata.deletionTimestamp) await this.finalDelete(key, uid);
      else await this.bind(pod);
      return;
    }
    if (!this.myNode(pod.spec.nodeName)) return;
    if (pod.metadata.deletionTimestamp) {
      if (!worker) {
        if (!this.deleting.has(key)) await this.finalDelete(key, uid);
        return;
      }
      const w = worker;
      const done = w.terminate(deletionGraceMs(pod));
      if (this.deleting.has(key)) return;
      this.deleting.add(key);
      // Not awaited here: the chain must stay free for this pod's status writes during the grace.
      void done.then(() =>
        this.enqueue(key, async () => {
          this.deleting.delete(key);
          if (this.workers.get(key) !== w) return; // retired meanwhile: removed or replaced
          // Its address (and namespace) go before the pod object does.
          await this.retire(key, w);
          await this.finalDelete(key, uid);
        }),
      );
      return;
    }
    if (!worker && !isPodTerminal(pod)) {
      worker = new PodWorker(this, key, uid, pod);
      this.workers.set(key, worker);
      void worker.admit().catch((err: unknown) => this.reportError(key, err));
    }
  }

  private async bind(pod: Pod): Promise<void> {
    // Spread: the node with the fewest pods of ours, first in the list on a tie.
    const counts = new Map(this.nodes.map((n) => [n.name, 0]));
    for (const [k, p] of this.pods) {
      if (p.metadata.deletionTimestamp) continue;
      const n = p.spec.nodeName ?? this.assigned.get(k);
      if (n !== undefined && counts.has(n)) counts.set(n, (counts.get(n) ?? 0) + 1);
    }
    const key = keyOf(pod);
    // Already counted if chosen before (a retry): do not count it twice.
    const prev = this.assigned.get(key);
    if (prev !== undefined) counts.set(prev, (counts.get(prev) ?? 1) - 1);
    let best = this.nodes[0]?.name ?? '';
    for (const n of this.nodes) if ((counts.get(n.name) ?? 0) < (counts.get(best) ?? 0)) best = n.name;
    this.assigned.set(key, best);
    const { namespace, name } = splitKey(key);
    try {
      const bound = await this.retryTransient(() =>
        this.kube.post(KINDS.pods, namespace, name, 'binding', {
          apiVersion: 'v1',
          kind: 'Binding',
          metadata: { name, namespace, uid: pod.metadata.uid },
          target: { apiVersion: 'v1', kind: 'Node', name: best },
        }),
      );
      if (bound !== undefined) this.stats.binds++;
    } catch (err) {
      // Already bound, or gone: its next event brings us back.
      const code = statusOf(err);
      if (code !== 409 && code !== 404) throw err;
    }
  }

  private async finalDelete(key: string, uid: string): Promise<void> {
    const { namespace, name } = splitKey(key);
    try {
      await this.retryTransient(async () => {
        await this.kube.delete(KINDS.pods, namespace, name, { gracePeriodSeconds: 0, preconditionUid: uid });
        this.stats.deletes++;
      });
    } catch (err) {
      const code = statusOf(err);
      if (code === 404) this.stats.deletesAlreadyGone++;
      else if (code !== 409) throw err;
    }
  }
}
