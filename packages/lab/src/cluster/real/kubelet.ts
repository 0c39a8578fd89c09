// The lab kubelet for the REAL control plane: the node agent the kube-apiserver and its controllers
// expect, in TypeScript. It registers Node objects (zone label, InternalIP) and keeps each Node's
// Ready heartbeat and its Lease in kube-node-lease fresh; it follows every pod through list+watch
// (re-list on 410, jittered backoff on errors), binds pending pods itself (POST pods/<name>/binding:
// there is no scheduler), and runs each bound pod as a real process in its own network namespace on
// a 10.244.x.y address. Status is what the controllers read: phase, podIP AND podIPs, PodScheduled /
// Initialized / ContainersReady / Ready with real lastTransitionTime (Ready follows a real
// grpc.health.v1 Check on ip:port), container statuses. On deletion: SIGTERM, keep probing (so the
// slice's `serving` stays honest), SIGKILL after deletionGracePeriodSeconds, Ready=False and a terminal
// phase, then DELETE with gracePeriodSeconds 0 and the uid precondition.
//
// All writes are async HTTP and per pod strictly in order (one chain per pod); a status write is
// GET → mutate → PUT status, retried on 409.

import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { Backoff } from 'grpc-kube/internal/discovery/backoff.js';
import {
  KubeClient,
  isExpired,
  type ResourcePath,
  type WatchHandle,
} from 'grpc-kube/internal/kube/client.js';
import type { WatchEvent } from 'grpc-kube/internal/kube/types.js';
import { isPodTerminal, keyOf, splitKey, type Node, type Pod, type PodStatus } from '../controllers/kinds.js';
import {
  IpPool,
  KubeletBase,
  labNodeObject,
  type KubeletCommonOptions,
  type KubeletNode,
} from '../kubelet.js';
import { PodWorker, deletionGraceMs, type PodWorkerHost } from '../pod-worker.js';
import { LabApi, isTransient, statusOf } from './kube-http.js';
import type { LabNetwork } from './netns.js';
import { ApiRelay, ServiceAccountProjector } from './service-account.js';

export interface RealKubeletOptions extends KubeletCommonOptions {
  /** Kubeconfig YAML with rights on nodes, leases, pods, pods/status and pods/binding (the lab admin). */
  readonly kubeConfig: string;
  /** Where pod addresses live; the kubelet adds and removes one namespace per pod. The node's address is its gateway. */
  readonly network: LabNetwork;
  /** Only pods of this namespace (default: every namespace). */
  readonly namespace?: string;
  /** Lease renewal and Node Ready heartbeat period. Default 10 000 (the real kubelet's). */
  readonly heartbeatMs?: number;
  /** Lease spec.leaseDurationSeconds. Default 40 (the real kubelet's). */
  readonly leaseDurationSeconds?: number;
  /**
   * Project each pod's ServiceAccount token (TokenRequest, bound to the pod) with this CA into a
   * directory of its own, and give its containers KUBERNETES_SERVICE_HOST/PORT (a relay on the lab
   * gateway to `apiUrl`) and GRPC_KUBE_SERVICEACCOUNT_DIR. Off by default: the lab's own pods take
   * their configuration from the lab.
   */
  readonly serviceAccounts?: { readonly caPem: string; readonly apiUrl: string };
}

export interface RealKubeletStats {
  binds: number;
  starts: number;
  statusWrites: number;
  conflicts: number;
  deletes: number;
  /** Final DELETEs answered 404: the pod was already gone (e.g. a retried DELETE whose first try landed). */
  deletesAlreadyGone: number;
  heartbeats: number;
  lists: number;
  watches: number;
  expired: number;
  errors: number;
}

const PODS: ResourcePath = { group: '', version: 'v1', resource: 'pods' };

function podsPath(ns: string, name?: string, sub?: string): string {
  const base = `/api/v1/namespaces/${encodeURIComponent(ns)}/pods`;
  return name === undefined ? base : `${base}/${encodeURIComponent(name)}${sub ? `/${sub}` : ''}`;
}

/** RFC 3339 with microseconds, as metav1.MicroTime (Lease renewTime) is parsed. */
function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, '000Z');
}

/** The options as given, or a typed error before anything reads them. */
function checked(opts: RealKubeletOptions): RealKubeletOptions {
  if (typeof opts !== 'object' || opts === null) throw new InvalidOptionError('options', 'must be an object');
  if (typeof opts.kubeConfig !== 'string')
    throw new InvalidOptionError('kubeConfig', 'must be kubeconfig YAML');
  return opts;
}

function firstPoolAddress(cidr: string): string {
  const [addr] = cidr.split('/');
  const o = (addr ?? '').split('.').map(Number);
  return `${o[0]}.${o[1]}.${o[2]}.${(o[3] ?? 0) + 1}`;
}

export class RealKubelet extends KubeletBase implements PodWorkerHost {
  readonly network: LabNetwork;
  readonly stats: RealKubeletStats = {
    binds: 0,
    starts: 0,
    statusWrites: 0,
    conflicts: 0,
    deletes: 0,
    deletesAlreadyGone: 0,
    heartbeats: 0,
    lists: 0,
    watches: 0,
    expired: 0,
    errors: 0,
  };
  private readonly api: LabApi;
  private readonly client: KubeClient;
  private readonly namespace: string | undefined;
  private readonly heartbeatMs: number;
  private readonly leaseDurationSeconds: number;
  private readonly pods = new Map<string, Pod>();
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
  private watch: WatchHandle | undefined;
  private loopDone: Promise<void> | undefined;
  private started = false;
  private readonly serviceAccounts: RealKubeletOptions['serviceAccounts'];
  private relay: ApiRelay | undefined;
  private projector: ServiceAccountProjector | undefined;

  constructor(opts: RealKubeletOptions) {
    super(checked(opts), {
      hostIP: opts.network.gateway,
      ipAllocator: () => new IpPool({ first: firstPoolAddress(opts.network.cidr), count: 4000 }),
    });
    this.network = opts.network;
    this.heartbeatMs = opts.heartbeatMs ?? 10_000;
    if (!(this.heartbeatMs >= 100)) throw new InvalidOptionError('heartbeatMs', 'must be at least 100');
    this.leaseDurationSeconds = opts.leaseDurationSeconds ?? 40;
    this.namespace = opts.namespace;
    this.api = new LabApi(opts.kubeConfig);
    this.client = KubeClient.fromKubeConfigString(opts.kubeConfig);
    this.serviceAccounts = opts.serviceAccounts ? { ...opts.serviceAccounts } : undefined;
  }

  /** Registers the Nodes and their Leases, then follows pods. Resolves once the Nodes exist. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (this.serviceAccounts !== undefined) {
      const u = new URL(this.serviceAccounts.apiUrl);
      this.relay = new ApiRelay(this.network.gateway, {
        host: u.hostname.replace(/^\[|\]$/g, ''),
        port: Number(u.port || 443),
      });
      await this.relay.start();
      this.projector = new ServiceAccountProjector({
        api: this.api,
        caPem: this.serviceAccounts.caPem,
        host: this.network.gateway,
        port: this.relay.port,
      });
    }
    for (const n of this.nodes) await this.registerNode(n);
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.heartbeatMs);
    this.heartbeatTimer.unref();
    this.loopDone = this.podLoop();
  }

  /** Stops following pods and ends every process (SIGTERM, SIGKILL after stopGraceMs). API objects stay. */
  async stop(): Promise<void> {
    if (this.abort.signal.aborted) return;
    this.abort.abort();
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.watch?.abort();
    await this.loopDone;
    await this.stopWorkers();
    await Promise.allSettled([...this.chains.values()]);
    await this.relay?.close();
    await this.projector?.releaseAll();
    this.client.close();
    this.api.close();
  }

  async addPodAddress(ip: string): Promise<void> {
    await this.network.addPod(ip);
  }

  removePodAddress(ip: string): Promise<void> {
    return this.network.removePod(ip);
  }

  onContainerStart(): void {
    this.stats.starts++;
  }

  async podEnvironment(pod: Pod): Promise<Record<string, string>> {
    return (await this.projector?.project(pod)) ?? {};
  }

  async releasePodEnvironment(pod: Pod): Promise<void> {
    await this.projector?.release(pod);
  }

  nowIso(): string {
    return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  reportError(what: string, err: unknown): void {
    this.stats.errors++;
    if (!this.abort.signal.aborted) this.onError?.(what, err);
  }

  // ---- nodes and leases ----

  private async registerNode(n: KubeletNode): Promise<void> {
    const nodeRp: ResourcePath = { group: '', version: 'v1', resource: 'nodes' };
    const at = this.nowIso();
    const want = labNodeObject(n, this.hostIP, at);
    let node: Node;
    try {
      node = await this.api.request<Node>('POST', '/api/v1/nodes', want, nodeRp);
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
      const cur = await this.api.request<Node>('GET', `/api/v1/nodes/${n.name}`, undefined, nodeRp);
      node = await this.api.request<Node>(
        'PUT',
        `/api/v1/nodes/${n.name}`,
        { ...cur, metadata: { ...cur.metadata, labels: want.metadata.labels } },
        nodeRp,
      );
    }
    // Status is a subresource: a create may drop it, so write it explicitly.
    await this.api.request('PATCH', `/api/v1/nodes/${n.name}/status`, { status: want.status }, nodeRp);
    const leaseRp: ResourcePath = {
      group: 'coordination.k8s.io',
      version: 'v1',
      resource: 'leases',
      namespace: 'kube-node-lease',
    };
    const lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: n.name,
        namespace: 'kube-node-lease',
        ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: n.name, uid: node.metadata.uid }],
      },
      spec: {
        holderIdentity: n.name,
        leaseDurationSeconds: this.leaseDurationSeconds,
        renewTime: microTime(Date.now()),
      },
    };
    try {
      await this.api.request(
        'POST',
        '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases',
        lease,
        leaseRp,
      );
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
      await this.renewLease(n.name);
    }
  }

  private async renewLease(name: string): Promise<void> {
    const rp: ResourcePath = {
      group: 'coordination.k8s.io',
      version: 'v1',
      resource: 'leases',
      namespace: 'kube-node-lease',
    };
    await this.api.request(
      'PATCH',
      `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${name}`,
      { spec: { holderIdentity: name, renewTime: microTime(Date.now()) } },
      rp,
    );
  }

  private async heartbeat(): Promise<void> {
    if (this.abort.signal.aborted) return;
    const at = this.nowIso();
    for (const n of this.nodes) {
      try {
        await this.renewLease(n.name);
        const rp: ResourcePath = { group: '', version: 'v1', resource: 'nodes' };
        const node = await this.api.request<Node>('GET', `/api/v1/nodes/${n.name}`, undefined, rp);
        const conditions = (node.status?.conditions ?? []).map((c) =>
          c.type === 'Ready'
            ? { ...c, status: 'True' as const, reason: 'KubeletReady', lastHeartbeatTime: at }
            : c,
        );
        await this.api.request('PATCH', `/api/v1/nodes/${n.name}/status`, { status: { conditions } }, rp);
        this.stats.heartbeats++;
      } catch (err) {
        this.reportError(`node/${n.name}`, err);
      }
    }
  }

  // ---- following pods ----

  private async podLoop(): Promise<void> {
    const signal = this.abort.signal;
    const backoff = new Backoff({ initialMs: 200, maxMs: 5_000 });
    const rp: ResourcePath = { ...PODS, namespace: this.namespace };
    let rv: string | undefined;
    while (!signal.aborted) {
      try {
        if (rv === undefined) {
          const list = await this.client.list<Pod>(rp, { limit: 500 });
          if (signal.aborted) return;
          this.stats.lists++;
          const seen = new Set<string>();
          for (const p of list.items) {
            const key = keyOf(p);
            seen.add(key);
            this.pods.set(key, p);
            this.scheduleSync(key);
          }
          for (const key of [...this.pods.keys()]) {
            if (!seen.has(key)) {
              this.pods.delete(key);
              this.scheduleSync(key);
            }
          }
          rv = list.metadata.resourceVersion ?? '0';
          backoff.reset();
        }
        this.stats.watches++;
        const from: string = rv;
        this.watch = this.client.watch<Pod>(
          rp,
          {
            resourceVersion: from,
            allowWatchBookmarks: true,
            timeoutSeconds: 300 + Math.floor(Math.random() * 300),
            idleTimeoutMs: 660_000,
          },
          (ev: WatchEvent<Pod>) => {
            const obj = ev.object as Pod;
            const v = obj.metadata?.resourceVersion;
            if (v) rv = v;
            if (ev.type === 'BOOKMARK') return;
            const key = keyOf(obj);
            if (ev.type === 'DELETED') this.pods.delete(key);
            else this.pods.set(key, obj);
            backoff.reset();
            this.scheduleSync(key);
          },
        );
        await this.watch.done;
      } catch (err) {
        if (signal.aborted) return;
        if (isExpired(err)) {
          this.stats.expired++;
          rv = undefined;
          continue;
        }
        this.reportError('pods watch', err);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, backoff.next());
          t.unref();
          signal.addEventListener(
            'abort',
            () => {
              clearTimeout(t);
              resolve();
            },
            { once: true },
          );
        });
      } finally {
        this.watch = undefined;
      }
    }
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
   * Runs `fn` again while the API is unreachable or overloaded (status 0, 429, 5xx), with jittered
   * backoff, for at most 2 minutes and never after stop(): a write the controllers wait for (Ready, the
   * final DELETE, a binding) must survive an API outage, and no event would bring it back later.
   */
  private async retryTransient<T>(fn: () => Promise<T>): Promise<T | undefined> {
    const backoff = new Backoff({ initialMs: 200, maxMs: 2_000 });
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (this.abort.signal.aborted) return undefined;
      try {
        return await fn();
      } catch (err) {
        if (!isTransient(err) || Date.now() > deadline || this.abort.signal.aborted) throw err;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, backoff.next());
          t.unref();
          this.abort.signal.addEventListener(
            'abort',
            () => {
              clearTimeout(t);
              resolve();
            },
            { once: true },
          );
        });
      }
    }
  }

  /** GET → mutate → PUT status, in the pod's chain; skipped when the pod is gone or replaced (uid). */
  updateStatus(key: string, uid: string, mutate: (s: PodStatus) => void): void {
    void this.enqueue(key, async () => {
      const { namespace, name } = splitKey(key);
      const rpNs = { ...PODS, namespace };
      for (let attempt = 0; attempt < 5; attempt++) {
        const done = await this.retryTransient(async (): Promise<boolean> => {
          let pod: Pod;
          try {
            pod = await this.api.request<Pod>('GET', podsPath(namespace, name), undefined, rpNs);
          } catch (err) {
            if (statusOf(err) === 404) return true;
            throw err;
          }
          if (pod.metadata.uid !== uid) return true;
          const status: PodStatus = structuredClone(pod.status ?? {});
          mutate(status);
          if (JSON.stringify(status) === JSON.stringify(pod.status ?? {})) return true;
          try {
            await this.api.request('PUT', podsPath(namespace, name, 'status'), { ...pod, status }, rpNs);
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

  private myNode(name: string | undefined): boolean {
    return name !== undefined && this.nodes.some((n) => n.name === name);
  }

  private async syncPod(key: string): Promise<void> {
    if (this.abort.signal.aborted) return;
    const pod = this.pods.get(key);
    let worker = this.workers.get(key);
    if (worker && !this.deleting.has(key) && (!pod || pod.metadata.uid !== worker.uid)) {
      // Removed (or replaced by a namesake) without our graceful path: the process goes at once.
      this.workers.delete(key);
      await worker.dispose();
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
          if (this.workers.get(key) === w) this.workers.delete(key);
          await w.dispose();
          if (!this.abort.signal.aborted) await this.finalDelete(key, uid);
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
      await this.retryTransient(() =>
        this.api.request(
          'POST',
          podsPath(namespace, name, 'binding'),
          {
            apiVersion: 'v1',
            kind: 'Binding',
            metadata: { name, namespace, uid: pod.metadata.uid },
            target: { apiVersion: 'v1', kind: 'Node', name: best },
          },
          { ...PODS, namespace },
        ),
      );
      this.stats.binds++;
    } catch (err) {
      // Already bound, or gone: its next event brings us back.
      const code = statusOf(err);
      if (code !== 409 && code !== 404) throw err;
    }
  }

  private async finalDelete(key: string, uid: string): Promise<void> {
    const { namespace, name } = splitKey(key);
    try {
      await this.retryTransient(() =>
        this.api.request(
          'DELETE',
          podsPath(namespace, name),
          { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid } },
          { ...PODS, namespace },
        ),
      );
      this.stats.deletes++;
    } catch (err) {
      const code = statusOf(err);
      if (code === 404) this.stats.deletesAlreadyGone++;
      else if (code !== 409) throw err;
    }
  }
}
