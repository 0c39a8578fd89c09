// One pod's container as the lab kubelets run it — the embedded one (status written to the
// in-process store) and the real one (status PUT to kube-apiserver, the pod in a network namespace)
// share this: start and restart with backoff (restartPolicy), the readiness probe (a real
// grpc.health.v1 Check on ip:port with periodSeconds, timeoutSeconds, success/failure thresholds),
// the status it implies (phase, podIP(s), conditions with real lastTransitionTime, container
// status), graceful termination (SIGTERM, SIGKILL after the grace, probing until the exit) and
// disposal. What differs between the kubelets is behind `PodWorkerHost`.

import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import {
  splitKey,
  type Container,
  type ContainerStatus,
  type Pod,
  type PodCondition,
  type PodStatus,
} from './controllers/kinds.js';
import type { IpAllocator } from './kubelet.js'; // type only: no cycle at load
import type { PodExit, PodProcess, PodRuntime } from './pod-runtime.js';

/** Lets tests and the lab speed up or slow down one pod's probe: `metadata.annotations[...] = "250"`. */
export const PROBE_PERIOD_MS_ANNOTATION = 'grpc-kube.io/probe-period-ms';

const CHECK_PATH = '/grpc.health.v1.Health/Check';

/** What a PodWorker needs from its kubelet. */
export interface PodWorkerHost {
  readonly runtime: PodRuntime;
  readonly ipAllocator: IpAllocator;
  /** The node's address: status.hostIP(s). */
  readonly hostIP: string;
  /** Overrides every pod's readiness periodSeconds (the annotation still wins). */
  readonly probePeriodMs: number | undefined;
  /** Container port when the container declares none. */
  readonly defaultPort: number;
  /** First restart delay of a crashed container; doubles up to restartBackoffMaxMs. */
  readonly restartBackoffMs: number;
  readonly restartBackoffMaxMs: number;
  nowIso(): string;
  /** Apply `mutate` to the pod's status; the host writes it (in order per pod) where it belongs. */
  updateStatus(key: string, uid: string, mutate: (s: PodStatus) => void): void;
  reportError(key: string, err: unknown): void;
  /** Make a freshly allocated pod address reachable (the real kubelet's network namespace). */
  addPodAddress?(ip: string): Promise<void>;
  /** Undo addPodAddress once the pod's process is gone. */
  removePodAddress?(ip: string): Promise<void>;
  /** A container process started (counters). */
  onContainerStart?(): void;
}

/** Set (or keep, if unchanged) a pod condition, with the real kubelet's lastTransitionTime rule. */
export function setCondition(
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

/** A container's exit code as the kubelet reports it: the code, or 128 + the signal number. */
export function exitCodeOf(exit: PodExit): number {
  if (exit.code !== null) return exit.code;
  return (
    128 + (exit.signal === 'SIGKILL' ? 9 : exit.signal === 'SIGTERM' ? 15 : exit.signal === 'SIGINT' ? 2 : 0)
  );
}

/** The grace a deleted pod's container gets: the DELETE's, else the pod spec's, else 30 s. */
export function deletionGraceMs(pod: Pod): number {
  return (pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30) * 1000;
}

/** The states of one pod's container, as the real kubelet's pod worker tracks them. */
export class PodWorker {
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
    private readonly host: PodWorkerHost,
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
    return this.container.ports?.[0]?.containerPort ?? this.host.defaultPort;
  }

  /** The pod is bound to this node: Pending with PodScheduled, then its container starts. */
  admit(): Promise<void> {
    const at = this.host.nowIso();
    this.host.updateStatus(this.key, this.uid, (s) => {
      s.phase ??= 'Pending';
      setCondition(s, 'PodScheduled', 'True', at);
    });
    return this.start();
  }

  /** Starts the container (first start or restart) and its probe loop. */
  start(): Promise<void> {
    this.starting ??= this.doStart().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const h = this.host;
    if (this.ip === undefined) {
      const ip = h.ipAllocator.allocate();
      try {
        await h.addPodAddress?.(ip);
      } catch (err) {
        // No address, no pod: give it back and try again later, like a failed container start.
        h.ipAllocator.release(ip);
        h.reportError(this.key, err);
        if (!this.disposed && !this.terminating) this.scheduleRestart();
        return;
      }
      this.ip = ip;
    }
    const c = this.container;
    const env: Record<string, string> = {};
    for (const e of c.env ?? []) env[e.name] = e.value ?? '';
    const { namespace, name } = splitKey(this.key);
    let proc: PodProcess;
    try {
      proc = await h.runtime.start({
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
      h.reportError(this.key, err);
      if (!this.disposed && !this.terminating) this.scheduleRestart();
      return;
    }
    h.onContainerStart?.();
    this.proc = proc;
    if (this.disposed || this.terminating) {
      proc.kill('SIGKILL');
      return;
    }
    const at = h.nowIso();
    const ip = this.ip;
    h.updateStatus(this.key, this.uid, (s) => {
      s.phase = 'Running';
      s.hostIP = h.hostIP;
      s.hostIPs = [{ ip: h.hostIP }];
      s.podIP = ip;
      s.podIPs = [{ ip }];
      s.startTime ??= at;
      setCondition(s, 'PodScheduled', 'True', at);
      setCondition(s, 'Initialized', 'True', at);
      setCondition(s, 'ContainersReady', 'False', at, 'ContainersNotReady');
      setCondition(s, 'Ready', 'False', at, 'ContainersNotReady');
      s.containerStatuses = [this.containerStatus({ running: { startedAt: at } })];
    });
    void proc.exited.then((exit) => this.onExit(proc, exit));
    this.successes = 0;
    this.failures = 0;
    this.scheduleProbe((c.readinessProbe?.initialDelaySeconds ?? 0) * 1000);
  }

  private containerStatus(state: ContainerStatus['state']): ContainerStatus {
    return {
      name: this.container.name,
      ready: this.ready,
      started: state?.running !== undefined,
      restartCount: this.restartCount,
      image: this.container.image ?? '',
      imageID: '',
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
    return {
      periodMs: ann > 0 ? ann : (this.host.probePeriodMs ?? (p?.periodSeconds ?? 10) * 1000),
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
      const deserialize = healthService.Check?.responseDeserialize as (b: Buffer) => { status?: string };
      this.healthClient().makeUnaryRequest<{ service: string }, { status?: string }>(
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
    const at = this.host.nowIso();
    this.host.updateStatus(this.key, this.uid, (s) => {
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
    const at = this.host.nowIso();
    const exitCode = exitCodeOf(exit);
    const failed = exitCode !== 0;
    const policy = this.pod.spec.restartPolicy ?? 'Always';
    const restart = policy === 'Always' || (policy === 'OnFailure' && failed);
    this.ready = false;
    this.host.updateStatus(this.key, this.uid, (s) => {
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
      this.host.restartBackoffMaxMs,
      this.host.restartBackoffMs * 2 ** Math.min(this.restartCount, 16),
    );
    this.restartCount++;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.disposed && !this.terminating) void this.start();
    }, delay);
    this.restartTimer.unref();
  }

  /**
   * Graceful termination: SIGTERM now, SIGKILL after graceMs, probing until the exit (so the
   * slice's `serving` stays honest); the caller deletes the pod afterwards. Called again with a
   * shorter grace (a second DELETE that shortened it), the SIGKILL comes sooner.
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
        if (this.killTimer) clearTimeout(this.killTimer);
        this.stopProbing();
        if (!this.disposed) {
          const at = this.host.nowIso();
          const exitCode = exitCodeOf(exit);
          this.ready = false;
          this.host.updateStatus(this.key, this.uid, (s) => {
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

  /**
   * Immediate end (pod removed, or kubelet stop after the grace): SIGKILL at once; the address (and
   * its namespace) go once the process is gone. Resolves then.
   */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.terminating = true;
    for (const t of [this.restartTimer, this.killTimer]) if (t) clearTimeout(t);
    this.stopProbing();
    this.proc?.kill('SIGKILL');
    await this.starting?.catch(() => undefined);
    this.proc?.kill('SIGKILL');
    if (this.proc) await this.proc.exited;
    const ip = this.ip;
    if (ip !== undefined) {
      if (this.host.removePodAddress !== undefined) {
        await this.host.removePodAddress(ip).catch((err: unknown) => this.host.reportError(this.key, err));
      }
      this.host.ipAllocator.release(ip);
    }
  }
}
