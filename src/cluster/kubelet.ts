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

import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { RESOURCES, type ObjectStore } from './store-api.js';
import { GrpcKubeError, InvalidOptionError } from '../errors.js';
import { WorkQueue } from './controllers/queue.js';
import {
  HOSTNAME_LABEL,
  ZONE_LABEL,
  isPodTerminal,
  keyOf,
  splitKey,
  type Container,
  type ContainerStatus,
  type Node,
  type Pod,
  type PodCondition,
  type PodStatus,
  putStatus,
} from './controllers/kinds.js';
import type { PodExit, PodProcess, PodRuntime } from './pod-runtime.js';

/** Per-pod override of the readiness probe period, for sub-second lab probes. */
export const PROBE_PERIOD_MS_ANNOTATION = 'grpc-kube.io/probe-period-ms';

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

export interface KubeletOptions {
  readonly runtime: PodRuntime;
  /** Nodes this kubelet registers and runs pods on. Default: one node `lab-node-1` in zone `zone-a`. */
  readonly nodes?: readonly KubeletNode[];
  readonly ipAllocator?: IpAllocator;
  /** Address reported as the Node's InternalIP and the pods' hostIP. */
  readonly hostIP?: string;
  /** Overrides every pod's readiness periodSeconds (the annotation still wins). */
  readonly probePeriodMs?: number;
  /** Container port when the container declares none. */
  readonly defaultPort?: number;
  /** First restart delay of a crashed container; doubles up to restartBackoffMaxMs. */
  readonly restartBackoffMs?: number;
  readonly restartBackoffMaxMs?: number;
  /** On stop(): SIGTERM, then SIGKILL after this long. */
  readonly stopGraceMs?: number;
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
  readonly onError?: (pod: string, err: unknown) => void;
}

const CHECK_PATH = '/grpc.health.v1.Health/Check';
interface HealthCheckResponse {
  status?: string;
}

/** The states of one pod's container, as the real kubelet's pod worker tracks them. */
class PodWorker {
  ip: string | undefined;
  proc: PodProcess | undefined;
  ready = false;
  restartCount = 0;
  terminating = false;
  disposed = false;
  private client: grpc.Client | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private successes = 0;
  private failures = 0;
  private probing = false;
  private starting: Promise<void> | undefined;
  private done: Promise<void> | undefined;
  private killAt = Infinity;

  constructor(
    private readonly kubelet: Kubelet,
    readonly key: string,
    readonly uid: string,
    private readonly pod: Pod,
  ) {}

  private get container(): Container {
    const c = this.pod.spec.containers[0];
    if (!c) throw new GrpcKubeError('GK_ERR_LAB', `pod ${this.key} has no container`);
    return c;
  }

  get port(): number {
    return this.container.ports?.[0]?.containerPort ?? this.kubelet.defaultPort;
  }

  /** Starts the container (first start or restart) and its probe loop. */
  start(): Promise<void> {
    if (this.starting) return this.starting;
    this.starting = this.doStart().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private async doStart(): Promise<void> {
    this.ip ??= this.kubelet.ipAllocator.allocate();
    const c = this.container;
    const env: Record<string, string> = {};
    for (const e of c.env ?? []) env[e.name] = e.value ?? '';
    const { namespace, name } = splitKey(this.key);
    let proc: PodProcess;
    try {
      proc = await this.kubelet.runtime.start({
        namespace,
        name,
        uid: this.uid,
        ip: this.ip,
        port: this.port,
        env,
        container: c,
        restartCount: this.restartCount,
      });
    } catch (err) {
      this.kubelet.reportError(this.key, err);
      if (!this.disposed && !this.terminating) this.scheduleRestart();
      return;
    }
    if (this.disposed || this.terminating) {
      proc.kill('SIGKILL');
      this.proc = proc;
      return;
    }
    this.proc = proc;
    const startedAt = this.kubelet.nowIso();
    this.kubelet.patchStatus(this.key, this.uid, (s) => {
      s.phase = 'Running';
      s.hostIP = this.kubelet.hostIP;
      s.hostIPs = [{ ip: this.kubelet.hostIP }];
      s.podIP = this.ip;
      s.podIPs = [{ ip: this.ip as string }];
      s.startTime ??= startedAt;
      setCondition(s, 'Initialized', 'True', startedAt);
      setCondition(s, 'ContainersReady', 'False', startedAt, 'ContainersNotReady');
      setCondition(s, 'Ready', 'False', startedAt, 'ContainersNotReady');
      s.containerStatuses = [this.containerStatus({ running: { startedAt } })];
    });
    void proc.exited.then((exit) => this.onExit(proc, exit));
    this.successes = 0;
    this.failures = 0;
    this.scheduleProbe((this.pod.spec.containers[0]?.readinessProbe?.initialDelaySeconds ?? 0) * 1000);
  }

  private containerStatus(state: ContainerStatus['state']): ContainerStatus {
    return {
      name: this.container.name,
      ready: this.ready,
      started: state?.running !== undefined,
      restartCount: this.restartCount,
      image: this.container.image ?? '',
      state,
    };
  }

  private probeSettings(): {
    periodMs: number;
    timeoutMs: number;
    success: number;
    failure: number;
    service: string;
  } {
    const p = this.container.readinessProbe;
    const ann = Number(this.pod.metadata.annotations?.[PROBE_PERIOD_MS_ANNOTATION]);
    const periodMs = ann > 0 ? ann : (this.kubelet.probePeriodMs ?? (p?.periodSeconds ?? 10) * 1000);
    return {
      periodMs,
      timeoutMs: (p?.timeoutSeconds ?? 1) * 1000,
      success: p?.successThreshold ?? 1,
      failure: p?.failureThreshold ?? 3,
      service: p?.grpc?.service ?? '',
    };
  }

  private scheduleProbe(delayMs: number): void {
    if (this.disposed || this.probeTimer) return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      void this.probe();
    }, delayMs);
    this.probeTimer.unref();
  }

  private healthClient(): grpc.Client {
    const port = this.container.readinessProbe?.grpc?.port ?? this.port;
    this.client ??= new grpc.Client(`${this.ip ?? ''}:${port}`, grpc.credentials.createInsecure(), {
      // A private subchannel with quick reconnects: a probe must see the server as soon as it listens.
      'grpc.use_local_subchannel_pool': 1,
      'grpc.enable_http_proxy': 0,
      'grpc.initial_reconnect_backoff_ms': 50,
      'grpc.max_reconnect_backoff_ms': Math.max(100, this.probeSettings().periodMs),
      'grpc.enable_retries': 0,
    });
    return this.client;
  }

  private async probe(): Promise<void> {
    if (this.disposed || this.probing || !this.proc) return;
    this.probing = true;
    const s = this.probeSettings();
    const ok = await new Promise<boolean>((resolve) => {
      const serialize = healthService.Check?.requestSerialize as (v: object) => Buffer;
      const deserialize = healthService.Check?.responseDeserialize as (b: Buffer) => HealthCheckResponse;
      this.healthClient().makeUnaryRequest<{ service: string }, HealthCheckResponse>(
        CHECK_PATH,
        serialize,
        deserialize,
        { service: s.service },
        new grpc.Metadata(),
        { deadline: Date.now() + s.timeoutMs },
        (err, res) => resolve(!err && res?.status === 'SERVING'),
      );
    });
    this.probing = false;
    if (this.disposed) return;
    if (ok) {
      this.failures = 0;
      this.successes++;
      if (!this.ready && this.successes >= s.success) this.setReady(true);
    } else {
      this.successes = 0;
      this.failures++;
      if (this.ready && this.failures >= s.failure) this.setReady(false);
    }
    this.scheduleProbe(s.periodMs);
  }

  setReady(ready: boolean, reason = 'ContainersNotReady'): void {
    this.ready = ready;
    const at = this.kubelet.nowIso();
    this.kubelet.patchStatus(this.key, this.uid, (s) => {
      setCondition(s, 'ContainersReady', ready ? 'True' : 'False', at, ready ? undefined : reason);
      setCondition(s, 'Ready', ready ? 'True' : 'False', at, ready ? undefined : reason);
      for (const c of s.containerStatuses ?? []) c.ready = ready;
    });
  }

  private stopProbing(): void {
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    this.client?.close();
    this.client = undefined;
  }

  private onExit(proc: PodProcess, exit: PodExit): void {
    if (proc !== this.proc || this.terminating || this.disposed) return;
    this.stopProbing();
    const at = this.kubelet.nowIso();
    const exitCode = exit.code ?? 128 + signalNumber(exit.signal);
    const failed = exitCode !== 0;
    const policy = this.pod.spec.restartPolicy ?? 'Always';
    const restart = policy === 'Always' || (policy === 'OnFailure' && failed);
    this.ready = false;
    this.kubelet.patchStatus(this.key, this.uid, (s) => {
      setCondition(s, 'ContainersReady', 'False', at, 'ContainersNotReady');
      setCondition(
        s,
        'Ready',
        'False',
        at,
        restart ? 'ContainersNotReady' : failed ? 'PodFailed' : 'PodCompleted',
      );
      s.containerStatuses = [
        this.containerStatus({
          terminated: { exitCode, reason: failed ? 'Error' : 'Completed', finishedAt: at },
        }),
      ];
      if (!restart) s.phase = failed ? 'Failed' : 'Succeeded';
    });
    if (restart) this.scheduleRestart();
  }

  private scheduleRestart(): void {
    const delay = Math.min(
      this.kubelet.restartBackoffMaxMs,
      this.kubelet.restartBackoffMs * 2 ** Math.min(this.restartCount, 16),
    );
    this.restartCount++;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.disposed && !this.terminating) void this.start();
    }, delay);
    this.restartTimer.unref();
  }

  /**
   * Graceful termination: SIGTERM now, SIGKILL after graceMs; the caller deletes the pod afterwards.
   * Called again with a shorter grace (a second DELETE that shortened it), the SIGKILL comes sooner.
   */
  terminate(graceMs: number): Promise<void> {
    if (this.done) {
      this.shortenGrace(graceMs);
      return this.done;
    }
    this.terminating = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.done = (async () => {
      await this.starting;
      const proc = this.proc;
      if (proc) {
        proc.kill('SIGTERM');
        this.shortenGrace(graceMs);
        const exit = await proc.exited;
        clearTimeout(this.killTimer);
        this.stopProbing();
        if (!this.disposed) {
          const at = this.kubelet.nowIso();
          const exitCode = exit.code ?? 128 + signalNumber(exit.signal);
          this.ready = false;
          this.kubelet.patchStatus(this.key, this.uid, (s) => {
            setCondition(s, 'ContainersReady', 'False', at, 'PodCompleted');
            setCondition(s, 'Ready', 'False', at, 'PodCompleted');
            s.containerStatuses = [
              this.containerStatus({
                terminated: { exitCode, reason: exitCode === 0 ? 'Completed' : 'Error', finishedAt: at },
              }),
            ];
            s.phase = exitCode === 0 ? 'Succeeded' : 'Failed';
          });
        }
      }
      this.stopProbing();
    })();
    return this.done;
  }

  private shortenGrace(graceMs: number): void {
    const at = Date.now() + graceMs;
    if (at >= this.killAt || !this.proc) return;
    this.killAt = at;
    if (this.killTimer) clearTimeout(this.killTimer);
    const proc = this.proc;
    this.killTimer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    this.killTimer.unref();
  }

  /** Immediate end (pod removed from the store, or kubelet stop after the grace). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.terminating = true;
    for (const t of [this.restartTimer, this.killTimer]) if (t) clearTimeout(t);
    this.stopProbing();
    this.proc?.kill('SIGKILL');
    void this.starting?.then(() => this.proc?.kill('SIGKILL'));
    const ip = this.ip;
    if (ip !== undefined) {
      // Only once the process is gone may another pod get its address.
      const release = (): void => this.kubelet.ipAllocator.release(ip);
      if (this.proc) void this.proc.exited.then(release);
      else release();
    }
  }
}

function signalNumber(sig: NodeJS.Signals | null): number {
  return sig === 'SIGKILL' ? 9 : sig === 'SIGTERM' ? 15 : sig === 'SIGINT' ? 2 : 0;
}

function setCondition(
  s: PodStatus,
  type: string,
  status: 'True' | 'False',
  at: string,
  reason?: string,
): void {
  s.conditions ??= [];
  const prev = s.conditions.find((c) => c.type === type);
  const next: PodCondition = {
    type,
    status,
    lastProbeTime: null,
    lastTransitionTime: prev && prev.status === status ? (prev.lastTransitionTime ?? at) : at,
    ...(reason ? { reason } : {}),
  };
  if (prev) s.conditions[s.conditions.indexOf(prev)] = next;
  else s.conditions.push(next);
}

export class Kubelet {
  readonly runtime: PodRuntime;
  readonly ipAllocator: IpAllocator;
  readonly hostIP: string;
  readonly probePeriodMs: number | undefined;
  readonly defaultPort: number;
  readonly restartBackoffMs: number;
  readonly restartBackoffMaxMs: number;
  readonly nodes: readonly KubeletNode[];
  private readonly stopGraceMs: number;
  private readonly now: () => number;
  private readonly onError: ((pod: string, err: unknown) => void) | undefined;
  private readonly queue: WorkQueue;
  private readonly workers = new Map<string, PodWorker>();
  /** Workers whose graceful termination (and final DELETE) is under way. */
  private readonly deleting = new Set<PodWorker>();
  private readonly nodeHeartbeatMs: number;
  private readonly bindPod: ((pod: Pod, nodeName: string) => void) | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly podNodes = new Map<string, string>();
  private stopWatch: (() => void) | undefined;
  private stopped = false;

  constructor(
    private readonly store: ObjectStore,
    opts: KubeletOptions,
  ) {
    this.runtime = opts.runtime;
    this.nodes = (opts.nodes ?? [{ name: 'lab-node-1', zone: 'zone-a' }]).map((n) => ({ ...n }));
    if (this.nodes.length === 0) throw new InvalidOptionError('nodes', 'must name at least one node');
    this.ipAllocator = opts.ipAllocator ?? new IpPool();
    this.hostIP = opts.hostIP ?? '127.0.0.1';
    this.probePeriodMs = opts.probePeriodMs;
    if (this.probePeriodMs !== undefined && !(this.probePeriodMs >= 10)) {
      throw new InvalidOptionError('probePeriodMs', `must be at least 10, got ${this.probePeriodMs}`);
    }
    this.defaultPort = opts.defaultPort ?? 50051;
    this.restartBackoffMs = opts.restartBackoffMs ?? 100;
    this.restartBackoffMaxMs = opts.restartBackoffMaxMs ?? 5000;
    this.stopGraceMs = opts.stopGraceMs ?? 2000;
    this.now = opts.now ?? Date.now;
    this.onError = opts.onError;
    this.nodeHeartbeatMs = opts.nodeHeartbeatMs ?? 0;
    if (!(this.nodeHeartbeatMs >= 0)) {
      throw new InvalidOptionError('nodeHeartbeatMs', `must be >= 0, got ${this.nodeHeartbeatMs}`);
    }
    this.bindPod = opts.bindPod;
    this.queue = new WorkQueue({ handler: (key) => this.syncPod(key), onError: opts.onError });
  }

  /** Registers the Nodes, then runs every pod bound (or bindable) to them. */
  start(): void {
    if (this.stopWatch || this.stopped) return;
    const at = this.nowIso();
    for (const n of this.nodes) {
      const node: Node = {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: {
          name: n.name,
          labels: {
            ...(n.labels ?? {}),
            [HOSTNAME_LABEL]: n.name,
            'kubernetes.io/os': 'linux',
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
              lastHeartbeatTime: at,
              lastTransitionTime: at,
              message: 'lab kubelet is posting ready status',
            },
          ],
          addresses: [
            { type: 'InternalIP', address: this.hostIP },
            { type: 'Hostname', address: n.name },
          ],
        },
      };
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
    const workers = [...this.workers.values()];
    this.workers.clear();
    await Promise.all(
      workers.map(async (w) => {
        // Status writes are off once stopped: this only ends the process, gracefully first.
        await w.terminate(this.stopGraceMs);
        w.dispose();
      }),
    );
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

  /** The running process of a pod (for scenarios that kill a pod's process behind the kubelet's back). */
  podProcess(namespace: string, name: string): PodProcess | undefined {
    return this.workers.get(`${namespace}/${name}`)?.proc;
  }

  /** The address given to a pod, while it runs. */
  podIP(namespace: string, name: string): string | undefined {
    return this.workers.get(`${namespace}/${name}`)?.ip;
  }

  /** Resolves when no pod sync is queued or running (processes may still be starting). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  nowIso(): string {
    return new Date(this.now()).toISOString();
  }

  reportError(pod: string, err: unknown): void {
    this.onError?.(pod, err);
  }

  /** Read-modify-write of a pod's status, skipped when the pod is gone or was replaced (new uid). */
  patchStatus(key: string, uid: string, mutate: (s: PodStatus) => void): void {
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
      worker.dispose();
      this.workers.delete(key);
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
      const graceSec =
        pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
      const w = worker;
      const done = w.terminate(graceSec * 1000);
      if (this.deleting.has(w)) return;
      this.deleting.add(w);
      void done.then(() => {
        this.deleting.delete(w);
        if (this.stopped) return;
        w.dispose();
        if (this.workers.get(key) === w) this.workers.delete(key);
        this.finalDelete(key, uid);
      });
      return;
    }
    if (!worker && !isPodTerminal(pod)) {
      worker = new PodWorker(this, key, uid, pod);
      this.workers.set(key, worker);
      const at = this.nowIso();
      this.patchStatus(key, uid, (s) => {
        s.phase ??= 'Pending';
        setCondition(s, 'PodScheduled', 'True', at);
      });
      void worker.start();
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
    this.patchStatus(keyOf(pod), pod.metadata.uid ?? '', (s) => {
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
