// One pod's container as the lab kubelets run it — the embedded one (status written to the
// in-process store) and the real one (status PUT to kube-apiserver, the pod in a network namespace)
// share this. The pod spec is run as written: the container's env (fieldRef, `$(VAR)` expansion),
// command and args; startup, liveness and readiness probes (grpc, tcpSocket, httpGet, exec) with their
// timings and thresholds — a failed startup or liveness probe restarts the container; the preStop
// hook (exec, httpGet, sleep) before SIGTERM, SIGKILL when terminationGracePeriodSeconds (counting the
// hook) are over; restarts by restartPolicy with CrashLoopBackOff (exponential backoff, reset after a
// long enough run), lastState and restartCount; the last lines of output (logs()). The status it
// implies: phase, podIP(s), conditions with real lastTransitionTime, container statuses with
// Waiting reasons (ErrImagePull/ImagePullBackOff, CreateContainerConfigError, RunContainerError,
// CrashLoopBackOff). What differs between the kubelets is behind `PodWorkerHost`.

import * as grpc from '@grpc/grpc-js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import {
  splitKey,
  type Container,
  type ContainerState,
  type ContainerStatus,
  type LifecycleHandler,
  type Pod,
  type PodCondition,
  type PodStatus,
  type Probe,
} from './controllers/kinds.js';
import { containerEnv, expandedCommand } from './container-spec.js';
import type { IpAllocator } from './kubelet.js'; // type only: no cycle at load
import type { PodExit, PodProcess, PodRuntime, PodStartSpec } from './pod-runtime.js';
import { ProbeLoop, handlerKind, probeSettings, runHandler, type HandlerTarget } from './probes.js';

/** Lets tests and the lab speed up or slow down one pod's probe: `metadata.annotations[...] = "250"`. */
export const PROBE_PERIOD_MS_ANNOTATION = 'grpc-kube.io/probe-period-ms';

/** Lines of a container's output kept for logs(), per run (the current one and the previous one). */
export const LOG_TAIL_LINES = 1000;

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
  /**
   * What the node gives the pod's containers before their own env: the ServiceAccount's token, CA
   * and namespace written to a directory, and the variables that point at it and at the API
   * (KUBERNETES_SERVICE_HOST/PORT). Called once per pod, before its first start.
   */
  podEnvironment?(pod: Pod, podIP: string): Promise<Record<string, string>>;
  /** Undo podEnvironment once the pod is gone. */
  releasePodEnvironment?(pod: Pod): Promise<void>;
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

const SIGNAL_NUMBERS: Readonly<Record<string, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGTERM: 15,
};

/** A container's exit code as the kubelet reports it: the code, or 128 + the signal number. */
export function exitCodeOf(exit: PodExit): number {
  if (exit.code !== null) return exit.code;
  return 128 + (SIGNAL_NUMBERS[exit.signal ?? ''] ?? 0);
}

/** The container status Waiting reason of a container that could not be started by this error. */
export function waitingReasonOf(err: unknown, attempt: number): string {
  const code = (err as { code?: string }).code;
  if (code === 'GK_ERR_LAB_IMAGE') return attempt === 0 ? 'ErrImagePull' : 'ImagePullBackOff';
  if (code === 'GK_ERR_LAB_POD_SPEC') return 'CreateContainerConfigError';
  return 'RunContainerError';
}

/** The grace a deleted pod's container gets: the DELETE's, else the pod spec's, else 30 s. */
export function deletionGraceMs(pod: Pod): number {
  return (pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30) * 1000;
}

/** "1m20s", "500ms": a back-off as the kubelet's message writes it. */
function formatDelay(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${s % 60}s` : `${s}s`;
}

/** The states of one pod's container, as the real kubelet's pod worker tracks them. */
export class PodWorker {
  ip: string | undefined;
  proc: PodProcess | undefined;
  ready = false;
  /** The startup probe has succeeded (or there is none) for the running container. */
  started = false;
  restartCount = 0;
  terminating = false;
  disposed = false;
  private alive = false;
  private readonly clients = new Map<string, grpc.Client>();
  private loops: ProbeLoop[] = [];
  private readinessLoop: ProbeLoop | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;
  private done: Promise<void> | undefined;
  /** A kill after a failed liveness or startup probe, under way. */
  private stopping: Promise<void> | undefined;
  private killAt = Infinity;
  private nodeEnv: Record<string, string> | undefined;
  private spec: PodStartSpec | undefined;
  private startedAt: string | undefined;
  private startedAtMs = 0;
  private lastState: ContainerState | undefined;
  private failedStarts = 0;
  private backoffLevel = 0;
  private log: string[] = [];
  private previousLog: string[] = [];

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

  /**
   * The last lines the container wrote (stdout and stderr interleaved as they came): of the current
   * run — which, while a crashed container waits to restart, is the crashed one — or of the one before.
   */
  logs(opts: { container?: string; previous?: boolean } = {}): string[] {
    if (opts.container !== undefined && opts.container !== this.container.name) {
      throw new GrpcKubeError(
        'GK_ERR_LAB_POD_SPEC',
        `pod ${this.key} has no container "${opts.container}" (it has ${this.pod.spec.containers.map((c) => c.name).join(', ')})`,
      );
    }
    return [...(opts.previous === true ? this.previousLog : this.log)];
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
        if (!this.disposed && !this.terminating) this.scheduleRestart(this.nextDelay(), false);
        return;
      }
      this.ip = ip;
    }
    const c = this.container;
    const { namespace, name } = splitKey(this.key);
    const ip = this.ip;
    const extra = [...(this.pod.spec.initContainers ?? []), ...this.pod.spec.containers.slice(1)];
    if (extra.length > 0) {
      // The spec cannot change, so no retry: the pod waits, saying why, until it is deleted.
      const err = new GrpcKubeError(
        'GK_ERR_LAB_POD_SPEC',
        `pod ${this.key}: the lab kubelet runs one container per pod; this one also has ` +
          `${extra.map((x) => x.name).join(', ')} (init or sidecar containers); split them into pods of their own`,
      );
      h.reportError(this.key, err);
      this.setWaiting('CreateContainerConfigError', err.message);
      return;
    }
    let proc: PodProcess;
    try {
      this.nodeEnv ??= (await h.podEnvironment?.(this.pod, ip)) ?? {};
      const env = containerEnv(this.pod, c, { podIP: ip, hostIP: h.hostIP }, this.nodeEnv);
      const spec: PodStartSpec = {
        namespace,
        name,
        uid: this.uid,
        ip,
        port: this.port,
        env,
        container: c,
        ...expandedCommand(c, env),
        restartCount: this.restartCount,
        onOutput: (_stream, line) => this.addLog(line),
      };
      if (this.disposed || this.terminating) return;
      if (this.log.length > 0) [this.previousLog, this.log] = [this.log, []];
      proc = await h.runtime.start(spec);
      this.spec = spec;
    } catch (err) {
      h.reportError(this.key, err);
      if (this.disposed || this.terminating) return;
      const reason = waitingReasonOf(err, this.failedStarts++);
      const message = err instanceof Error ? err.message : String(err);
      const delay = this.nextDelay();
      this.setWaiting(reason, message);
      this.scheduleRestart(delay, false);
      return;
    }
    this.failedStarts = 0;
    this.alive = true;
    h.onContainerStart?.();
    this.proc = proc;
    void proc.exited.then((exit) => this.onExit(proc, exit));
    if (this.disposed || this.terminating) {
      proc.kill('SIGKILL');
      return;
    }
    const at = h.nowIso();
    this.startedAt = at;
    this.startedAtMs = Date.now();
    this.started = c.startupProbe === undefined;
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
    this.startProbes();
  }

  private addLog(line: string): void {
    this.log.push(line);
    if (this.log.length > LOG_TAIL_LINES) this.log.splice(0, this.log.length - LOG_TAIL_LINES);
  }

  private containerStatus(state: ContainerState): ContainerStatus {
    return {
      name: this.container.name,
      ready: this.ready,
      started: state.running !== undefined && this.started,
      restartCount: this.restartCount,
      image: this.container.image ?? '',
      imageID: '',
      state,
      ...(this.lastState ? { lastState: this.lastState } : {}),
    };
  }

  /** The container could not be started: Waiting with the reason, the pod Pending until it first ran. */
  private setWaiting(reason: string, message: string): void {
    const at = this.host.nowIso();
    this.host.updateStatus(this.key, this.uid, (s) => {
      s.phase ??= 'Pending';
      setCondition(s, 'Initialized', 'True', at);
      setCondition(s, 'ContainersReady', 'False', at, 'ContainersNotReady');
      setCondition(s, 'Ready', 'False', at, 'ContainersNotReady');
      s.containerStatuses = [this.containerStatus({ waiting: { reason, message } })];
    });
  }

  /** The readiness and startup probe period override (annotation, then the kubelet's option). */
  private periodOverrideMs(): number | undefined {
    const ann = Number(this.pod.metadata.annotations?.[PROBE_PERIOD_MS_ANNOTATION]);
    return ann > 0 ? ann : this.host.probePeriodMs;
  }

  private target(): HandlerTarget {
    const rt = this.host.runtime;
    const spec = this.spec;
    return {
      ip: this.ip ?? '',
      container: this.container,
      exec:
        rt.exec !== undefined && spec !== undefined
          ? (argv, timeoutMs) => (rt.exec as NonNullable<PodRuntime['exec']>).call(rt, spec, argv, timeoutMs)
          : undefined,
      grpcClient: (address) => {
        let client = this.clients.get(address);
        if (client === undefined) {
          client = new grpc.Client(address, grpc.credentials.createInsecure(), {
            // A private subchannel with quick reconnects: a probe must see the server as soon as it listens.
            'grpc.use_local_subchannel_pool': 1,
            'grpc.enable_http_proxy': 0,
            'grpc.initial_reconnect_backoff_ms': 50,
            'grpc.max_reconnect_backoff_ms': Math.max(100, this.periodOverrideMs() ?? 1000),
            'grpc.enable_retries': 0,
          });
          this.clients.set(address, client);
        }
        return client;
      },
    };
  }

  private loop(
    probe: Probe,
    periodOverrideMs: number | undefined,
    onResult: (ok: boolean) => void,
  ): ProbeLoop {
    const l = new ProbeLoop(
      probeSettings(probe, periodOverrideMs),
      (timeoutMs) => runHandler(probe, this.target(), timeoutMs),
      onResult,
      (err) => this.host.reportError(this.key, err),
    );
    this.loops.push(l);
    l.start();
    return l;
  }

  /** Startup probe first; once it succeeds (or with none), liveness and readiness. */
  private startProbes(): void {
    const c = this.container;
    if (c.startupProbe === undefined) {
      this.startedProbes();
      return;
    }
    const startup = this.loop(c.startupProbe, this.periodOverrideMs(), (ok) => {
      startup.stop();
      if (!ok) {
        this.killForRestart();
        return;
      }
      this.started = true;
      const at = this.host.nowIso();
      const startedAt = this.startedAt ?? at;
      this.host.updateStatus(this.key, this.uid, (s) => {
        s.containerStatuses = [this.containerStatus({ running: { startedAt } })];
      });
      this.startedProbes();
    });
  }

  private startedProbes(): void {
    const c = this.container;
    if (c.livenessProbe !== undefined) {
      // Liveness keeps the period as written: the lab's fast period is for readiness and start-up, and
      // would kill a slow-starting container on a loaded machine.
      this.loop(c.livenessProbe, undefined, (ok) => {
        if (!ok) this.killForRestart();
      });
    }
    if (c.readinessProbe !== undefined) {
      this.readinessLoop = this.loop(c.readinessProbe, this.periodOverrideMs(), (ok) => {
        if (ok !== this.ready) this.setReady(ok);
      });
    } else {
      this.setReady(true);
    }
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

  /** Stops the probe loops; `keepReadiness` keeps the readiness one (termination probes until the exit). */
  private stopProbing(keepReadiness = false): void {
    const keep = keepReadiness ? this.readinessLoop : undefined;
    for (const l of this.loops) if (l !== keep) l.stop();
    this.loops = keep ? [keep] : [];
    this.readinessLoop = keep;
    if (keep) return;
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  /** A failed liveness or startup probe: the container is killed (with its preStop and grace) and restarts. */
  private killForRestart(): void {
    const proc = this.proc;
    if (!proc || !this.alive || this.stopping || this.terminating || this.disposed) return;
    this.stopProbing(true);
    this.stopping = this.killContainer(proc, deletionGraceMs(this.pod))
      .then(() => undefined)
      .finally(() => {
        this.stopping = undefined;
      });
  }

  /** preStop (bounded by the grace), SIGTERM, SIGKILL once graceMs from now are over; resolves at the exit. */
  private async killContainer(proc: PodProcess, graceMs: number): Promise<PodExit> {
    this.shortenGrace(graceMs);
    const preStop = this.container.lifecycle?.preStop;
    if (preStop !== undefined && this.alive) await this.runPreStop(preStop, proc);
    proc.kill('SIGTERM');
    const exit = await proc.exited;
    if (this.killTimer) clearTimeout(this.killTimer);
    this.killTimer = undefined;
    this.killAt = Infinity;
    return exit;
  }

  private async runPreStop(hook: LifecycleHandler, proc: PodProcess): Promise<void> {
    const budgetMs = this.killAt - Date.now();
    if (!(budgetMs > 0)) return;
    let timer: NodeJS.Timeout | undefined;
    // The hook ends early if the container exits meanwhile, or the grace runs out.
    const bound = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, budgetMs);
      timer.unref();
      void proc.exited.then(() => resolve());
    });
    try {
      if (hook.sleep !== undefined) {
        await Promise.race([
          bound,
          new Promise<void>((r) => setTimeout(r, hook.sleep!.seconds * 1000).unref()),
        ]);
      } else if (handlerKind(hook) !== undefined) {
        await Promise.race([
          bound,
          runHandler(hook, this.target(), budgetMs).then((ok) => {
            if (!ok) {
              this.host.reportError(
                this.key,
                new GrpcKubeError(
                  'GK_ERR_LAB',
                  `pod ${this.key}: the preStop hook failed; the container is stopped anyway`,
                ),
              );
            }
          }),
        ]);
      }
    } catch (err) {
      this.host.reportError(this.key, err);
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** The next restart delay: base × 2^n up to the maximum (CrashLoopBackOff). */
  private nextDelay(): number {
    const delay = Math.min(
      this.host.restartBackoffMaxMs,
      this.host.restartBackoffMs * 2 ** Math.min(this.backoffLevel, 30),
    );
    this.backoffLevel++;
    return delay;
  }

  private onExit(proc: PodProcess, exit: PodExit): void {
    if (proc === this.proc) this.alive = false;
    if (proc !== this.proc || this.terminating || this.disposed) return;
    this.stopProbing();
    const at = this.host.nowIso();
    const exitCode = exitCodeOf(exit);
    const failed = exitCode !== 0;
    const policy = this.pod.spec.restartPolicy ?? 'Always';
    const restart = policy === 'Always' || (policy === 'OnFailure' && failed);
    this.ready = false;
    this.started = false;
    // A container that ran long enough starts its back-off afresh, as the kubelet's does (2 × the cap).
    if (Date.now() - this.startedAtMs >= 2 * this.host.restartBackoffMaxMs) this.backoffLevel = 0;
    const terminated: ContainerState = {
      terminated: {
        exitCode,
        reason: failed ? 'Error' : 'Completed',
        ...(exit.signal ? { signal: SIGNAL_NUMBERS[exit.signal] ?? 0 } : {}),
        ...(this.startedAt ? { startedAt: this.startedAt } : {}),
        finishedAt: at,
      },
    };
    const { namespace, name } = splitKey(this.key);
    let state = terminated;
    let delay = 0;
    if (restart) {
      delay = this.nextDelay();
      this.lastState = terminated;
      this.restartCount++;
      state = {
        waiting: {
          reason: 'CrashLoopBackOff',
          message: `back-off ${formatDelay(delay)} restarting failed container=${this.container.name} pod=${name}_${namespace}(${this.uid})`,
        },
      };
    }
    this.host.updateStatus(this.key, this.uid, (s) => {
      setCondition(s, 'ContainersReady', 'False', at, 'ContainersNotReady');
      setCondition(
        s,
        'Ready',
        'False',
        at,
        restart ? 'ContainersNotReady' : failed ? 'PodFailed' : 'PodCompleted',
      );
      s.containerStatuses = [this.containerStatus(state)];
      if (!restart) s.phase = failed ? 'Failed' : 'Succeeded';
    });
    if (restart) this.scheduleRestart(delay, false);
  }

  /** Starts the container again after `delay`; `count` adds a restart (a start that failed is not one). */
  private scheduleRestart(delay: number, count: boolean): void {
    if (count) this.restartCount++;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.disposed && !this.terminating) void this.start();
    }, delay);
    this.restartTimer.unref();
  }

  /**
   * Graceful termination: the preStop hook, SIGTERM, SIGKILL once graceMs (counting the hook) are over,
   * probing readiness until the exit (so the slice's `serving` stays honest); the caller deletes the
   * pod afterwards. Called again with a shorter grace (a second DELETE that shortened it), the SIGKILL
   * comes sooner.
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
        this.stopProbing(true);
        const exit = this.stopping
          ? (this.shortenGrace(graceMs), await proc.exited)
          : await this.killContainer(proc, graceMs);
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
                terminated: {
                  exitCode,
                  reason: exitCode === 0 ? 'Completed' : 'Error',
                  ...(this.startedAt ? { startedAt: this.startedAt } : {}),
                  finishedAt: at,
                },
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
    if (this.nodeEnv !== undefined && this.host.releasePodEnvironment !== undefined) {
      await this.host
        .releasePodEnvironment(this.pod)
        .catch((err: unknown) => this.host.reportError(this.key, err));
    }
    const ip = this.ip;
    if (ip !== undefined) {
      if (this.host.removePodAddress !== undefined) {
        await this.host.removePodAddress(ip).catch((err: unknown) => this.host.reportError(this.key, err));
      }
      this.host.ipAllocator.release(ip);
    }
  }
}
