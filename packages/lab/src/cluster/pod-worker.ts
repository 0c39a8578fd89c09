// One pod's containers as the lab kubelet (kubelet.ts) runs it, on either lab cluster. The pod spec
// is run as written: the container's env (fieldRef, `$(VAR)` expansion), command and args; startup,
// liveness and readiness probes (grpc, tcpSocket, httpGet, exec) with their timings and thresholds —
// a failed startup or liveness probe restarts the container; the preStop hook (exec, httpGet, sleep)
// before SIGTERM, SIGKILL when terminationGracePeriodSeconds (counting the hook) are over; restarts by
// restartPolicy with CrashLoopBackOff (exponential backoff, reset after a long enough run), lastState
// and restartCount; the postStart hook (exec, httpGet, sleep) between the process's start and the
// container's Running — a failed one kills the container (FailedPostStartHook); the last lines of
// output (logs()); several containers per pod: init containers in spec order — a run-to-completion
// one must exit 0 before the next starts (retried on failure unless restartPolicy is Never, which
// fails the pod), a native sidecar (restartPolicy Always) must have started — then the main ones;
// sidecars stop last. The status it implies: phase (Pending while initializing), podIP(s), conditions
// with real lastTransitionTime (Initialized False until the init containers are done), container and
// init container statuses with Waiting reasons (PodInitializing, ErrImagePull/ImagePullBackOff,
// CreateContainerConfigError, RunContainerError, CrashLoopBackOff, PostStartHookError).
// What the pod needs from its node is behind `PodWorkerHost`.

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
import type { IpAllocator } from './ip-pool.js';
import type { PodExit, PodProcess, PodRuntime, PodStartSpec } from './pod-runtime.js';
import { ProbeLoop, handlerKind, probeSettings, runHandler, type HandlerTarget } from './probes.js';

/** Lets tests and the lab speed up or slow down one pod's probe: `metadata.annotations[...] = "250"`. */
export const PROBE_PERIOD_MS_ANNOTATION = 'grpc-kube.io/probe-period-ms';

/** Lines of a container's output kept for logs(), per run (the current one and the previous one). */
export const LOG_TAIL_LINES = 1000;

/**
 * Longest a postStart exec or httpGet hook may run. Kubernetes sets none (a hung hook holds the
 * container in Waiting until the pod is deleted); the lab bounds it, and a hook over time has failed.
 */
export const POST_START_TIMEOUT_MS = 120_000;

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
  /** Make a freshly allocated pod address reachable (the real cluster's network namespace). */
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
  message?: string,
): void {
  s.conditions ??= [];
  const prev = s.conditions.find((c) => c.type === type);
  const next: PodCondition = {
    type,
    status,
    lastProbeTime: null,
    lastTransitionTime: prev && prev.status === status ? (prev.lastTransitionTime ?? at) : at,
    ...(reason ? { reason } : {}),
    ...(message ? { message } : {}),
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

/** `name_namespace(uid)`: a pod as the kubelet's messages name it. */
function podDesc(key: string, uid: string): string {
  const { namespace, name } = splitKey(key);
  return `${name}_${namespace}(${uid})`;
}

/**
 * One container of a pod: its process, probes, restarts, output and status entry. The pod (PodWorker)
 * owns the address and the node's environment, writes the status and orders starts and stops.
 */
class ContainerRunner {
  proc: PodProcess | undefined;
  alive = false;
  ready = false;
  /** The startup probe has succeeded (or there is none) for the running container. */
  started = false;
  restartCount = 0;
  state: ContainerState;
  lastState: ContainerState | undefined;
  /** The last exit, once the container will not be restarted. */
  final: PodExit | undefined;
  private readonly clients = new Map<string, grpc.Client>();
  private loops: ProbeLoop[] = [];
  private readinessLoop: ProbeLoop | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private killAt = Infinity;
  private spec: PodStartSpec | undefined;
  private startedAt: string | undefined;
  private startedAtMs = 0;
  private failedStarts = 0;
  private backoffLevel = 0;
  private log: string[] = [];
  private previousLog: string[] = [];
  private onStarted: (() => void) | undefined;
  private onCompleted: ((ok: boolean) => void) | undefined;
  /** Why the postStart hook failed, while the container it failed is being killed. */
  private postStartFailure: string | undefined;
  /** Resolves when the container has started (postStart done, startup probe passed) for the first time. */
  readonly firstStarted: Promise<void>;
  /** Resolves once the container will not run again: true if its last exit was 0. */
  readonly completed: Promise<boolean>;
  /** A native sidecar: an init container with restartPolicy Always, running beside the main ones. */
  readonly sidecar: boolean;

  constructor(
    private readonly pod: PodWorker,
    readonly container: Container,
    /** Listed in initContainers: a sidecar, or one that runs to completion before the main ones start. */
    readonly init: boolean,
  ) {
    this.sidecar = init && container.restartPolicy === 'Always';
    this.firstStarted = new Promise<void>((resolve) => (this.onStarted = resolve));
    this.completed = new Promise<boolean>((resolve) => (this.onCompleted = resolve));
    // The kubelet's default Waiting reason: PodInitializing in a pod with init containers.
    const initializing = (pod.spec.spec.initContainers ?? []).length > 0;
    this.state = { waiting: { reason: initializing ? 'PodInitializing' : 'ContainerCreating' } };
  }

  /** A run-to-completion init container. */
  get runsToCompletion(): boolean {
    return this.init && !this.sidecar;
  }

  /** Done as the Initialized condition counts it: a sidecar started, an init container exited 0. */
  get initDone(): boolean {
    if (this.sidecar) return this.state.running !== undefined && this.started;
    return this.state.terminated?.exitCode === 0;
  }

  private get host(): PodWorkerHost {
    return this.pod.host;
  }

  private get stopped(): boolean {
    return this.pod.disposed || this.pod.terminating;
  }

  logs(previous: boolean): string[] {
    return [...(previous ? this.previousLog : this.log)];
  }

  status(): ContainerStatus {
    return {
      name: this.container.name,
      // A completed init container counts as ready, as the kubelet's prober writes it.
      ready: this.runsToCompletion ? this.state.terminated?.exitCode === 0 : this.ready,
      started: this.state.running !== undefined && this.started,
      restartCount: this.restartCount,
      image: this.container.image ?? '',
      imageID: '',
      state: this.state,
      ...(this.lastState ? { lastState: this.lastState } : {}),
    };
  }

  start(): Promise<void> {
    this.starting ??= this.doStart().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private async doStart(): Promise<void> {
    const h = this.host;
    const c = this.container;
    const { namespace, name } = splitKey(this.pod.key);
    const ip = this.pod.ip ?? '';
    let proc: PodProcess;
    try {
      const env = containerEnv(this.pod.spec, c, { podIP: ip, hostIP: h.hostIP }, this.pod.nodeEnv ?? {});
      const spec: PodStartSpec = {
        namespace,
        name,
        uid: this.pod.uid,
        ip,
        port: this.pod.portOf(c),
        env,
        container: c,
        ...expandedCommand(c, env),
        restartCount: this.restartCount,
        onOutput: (_stream, line) => this.addLog(line),
      };
      if (this.stopped) return;
      if (this.log.length > 0) [this.previousLog, this.log] = [this.log, []];
      proc = await h.runtime.start(spec);
      this.spec = spec;
    } catch (err) {
      h.reportError(this.pod.key, err);
      if (this.stopped) return;
      const reason = waitingReasonOf(err, this.failedStarts++);
      const message = err instanceof Error ? err.message : String(err);
      const delay = this.nextDelay();
      this.state = { waiting: { reason, message } };
      this.pod.changed();
      this.scheduleRestart(delay);
      return;
    }
    this.failedStarts = 0;
    this.alive = true;
    h.onContainerStart?.();
    this.proc = proc;
    void proc.exited.then((exit) => this.onExit(proc, exit));
    if (this.stopped) {
      proc.kill('SIGKILL');
      return;
    }
    const at = h.nowIso();
    this.startedAt = at;
    this.startedAtMs = Date.now();
    const postStart = c.lifecycle?.postStart;
    if (postStart !== undefined) {
      // Not Running (nor started) until the hook returns, as in Kubernetes: the status says Waiting.
      this.pod.changed();
      const failure = await this.runPostStart(postStart, proc);
      // Exited meanwhile (onExit has said so), or the pod is going: terminate() ends the process.
      if (proc !== this.proc || !this.alive || this.stopped) return;
      if (failure !== undefined) {
        this.failPostStart(failure);
        return;
      }
    }
    this.started = c.startupProbe === undefined;
    this.state = { running: { startedAt: at } };
    this.pod.onRunning(at, !this.init);
    if (this.started) this.onStarted?.();
    this.startProbes();
  }

  private addLog(line: string): void {
    this.log.push(line);
    if (this.log.length > LOG_TAIL_LINES) this.log.splice(0, this.log.length - LOG_TAIL_LINES);
  }

  private target(): HandlerTarget {
    const rt = this.host.runtime;
    const spec = this.spec;
    return {
      ip: this.pod.ip ?? '',
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
            'grpc.max_reconnect_backoff_ms': Math.max(100, this.pod.periodOverrideMs() ?? 1000),
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
      (err) => this.host.reportError(this.pod.key, err),
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
    const startup = this.loop(c.startupProbe, this.pod.periodOverrideMs(), (ok) => {
      startup.stop();
      if (!ok) {
        this.killForRestart();
        return;
      }
      this.started = true;
      this.onStarted?.();
      this.pod.changed();
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
      this.readinessLoop = this.loop(c.readinessProbe, this.pod.periodOverrideMs(), (ok) => {
        if (ok !== this.ready) this.setReady(ok);
      });
    } else {
      this.setReady(true);
    }
  }

  private setReady(ready: boolean): void {
    this.ready = ready;
    this.pod.changed();
  }

  /** Stops the probe loops; `keepReadiness` keeps the readiness one (termination probes until the exit). */
  stopProbing(keepReadiness = false): void {
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
    if (!proc || !this.alive || this.stopping || this.stopped) return;
    this.stopProbing(true);
    this.stopping = this.killContainer(proc, deletionGraceMs(this.pod.spec))
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

  /**
   * Runs the postStart hook: undefined when it succeeded, else why not in the kubelet's words. It
   * ends early (undefined) when the container exits or the pod stops meanwhile; the caller checks.
   */
  private async runPostStart(hook: LifecycleHandler, proc: PodProcess): Promise<string | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const cut = new Promise<undefined>((resolve) => {
      void proc.exited.then(() => resolve(undefined));
      void this.pod.whenStopping().then(() => resolve(undefined));
    });
    const c = this.container;
    const where = `for Container "${c.name}" in Pod "${podDesc(this.pod.key, this.pod.uid)}" failed`;
    try {
      const sleep = hook.sleep;
      if (sleep !== undefined) {
        const slept = new Promise<undefined>((r) => {
          timer = setTimeout(() => r(undefined), sleep.seconds * 1000);
          timer.unref();
        });
        return await Promise.race([cut, slept]);
      }
      const target = this.target();
      const exec = hook.exec;
      if (exec !== undefined && target.exec !== undefined) {
        const argv = exec.command ?? [];
        const r = await Promise.race([cut, target.exec(argv, POST_START_TIMEOUT_MS)]);
        if (r === undefined || r.exitCode === 0) return undefined;
        const error =
          r.exitCode === null
            ? `command '${argv.join(' ')}' timed out after ${POST_START_TIMEOUT_MS / 1000}s`
            : `command '${argv.join(' ')}' exited with ${r.exitCode}`;
        return `Exec lifecycle hook ([${argv.join(' ')}]) ${where} - error: ${error}, message: ${JSON.stringify(r.output)}`;
      }
      const ok = await Promise.race([cut, runHandler(hook, target, POST_START_TIMEOUT_MS)]);
      if (ok !== false) return undefined;
      const path = hook.httpGet?.path ?? '/';
      return `HTTP lifecycle hook (${path}) ${where} - error: no answer with a status 200..399`;
    } catch (err) {
      return `${handlerKind(hook) ?? 'A'} lifecycle hook ${where} - error: ${err instanceof Error ? err.message : String(err)}`;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  /** The postStart hook failed: the container is killed (preStop and grace apply) and restarts by policy. */
  private failPostStart(failure: string): void {
    this.postStartFailure = failure;
    this.host.reportError(
      this.pod.key,
      new GrpcKubeError(
        'GK_ERR_LAB',
        `pod ${this.pod.key} container ${this.container.name}: FailedPostStartHook: ${failure}; ` +
          'the container is killed and restarted by restartPolicy',
      ),
    );
    this.killForRestart();
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
      const sleep = hook.sleep;
      if (sleep !== undefined) {
        await Promise.race([bound, new Promise<void>((r) => setTimeout(r, sleep.seconds * 1000).unref())]);
      } else if (handlerKind(hook) !== undefined) {
        await Promise.race([
          bound,
          runHandler(hook, this.target(), budgetMs).then((ok) => {
            if (!ok) {
              this.host.reportError(
                this.pod.key,
                new GrpcKubeError(
                  'GK_ERR_LAB',
                  `pod ${this.pod.key} container ${this.container.name}: the preStop hook failed; the container is stopped anyway`,
                ),
              );
            }
          }),
        ]);
      }
    } catch (err) {
      this.host.reportError(this.pod.key, err);
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
    if (proc !== this.proc || this.stopped) return;
    this.stopProbing();
    const at = this.host.nowIso();
    const exitCode = exitCodeOf(exit);
    const failed = exitCode !== 0;
    const postStartFailure = this.postStartFailure;
    this.postStartFailure = undefined;
    // A sidecar restarts always; an init container on failure unless the pod's restartPolicy is Never;
    // the main containers by the pod's restartPolicy.
    const podPolicy = this.pod.spec.spec.restartPolicy ?? 'Always';
    const policy = this.sidecar
      ? 'Always'
      : this.init
        ? podPolicy === 'Never'
          ? 'Never'
          : 'OnFailure'
        : podPolicy;
    // A container whose postStart hook failed has failed, whatever its exit code after the kill.
    const restart =
      policy === 'Always' || (policy === 'OnFailure' && (failed || postStartFailure !== undefined));
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
    const { namespace, name } = splitKey(this.pod.key);
    if (restart) {
      const delay = this.nextDelay();
      this.lastState = terminated;
      this.restartCount++;
      this.state = {
        waiting:
          postStartFailure !== undefined
            ? { reason: 'PostStartHookError', message: `FailedPostStartHook: ${postStartFailure}` }
            : {
                reason: 'CrashLoopBackOff',
                message: `back-off ${formatDelay(delay)} restarting failed container=${this.container.name} pod=${name}_${namespace}(${this.pod.uid})`,
              },
      };
      this.pod.onContainerExit(at, false);
      this.scheduleRestart(delay);
    } else {
      if (postStartFailure !== undefined && terminated.terminated)
        terminated.terminated.message = `FailedPostStartHook: ${postStartFailure}`;
      this.state = terminated;
      this.final = exit;
      this.pod.onContainerExit(at, true);
      this.onCompleted?.(!failed && postStartFailure === undefined);
    }
  }

  private scheduleRestart(delay: number): void {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.stopped) void this.start();
    }, delay);
    this.restartTimer.unref();
  }

  /** Graceful stop for the pod's termination: resolves with the exit, or undefined if nothing ran. */
  async terminate(graceMs: number): Promise<PodExit | undefined> {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    await this.starting;
    // Over already (a completed init container): its status stays as it ended.
    if (this.final !== undefined) return this.final;
    const proc = this.proc;
    if (!proc) return undefined;
    this.stopProbing(true);
    const exit = this.stopping
      ? (this.shortenGrace(graceMs), await proc.exited)
      : await this.killContainer(proc, graceMs);
    this.stopProbing();
    this.ready = false;
    const exitCode = exitCodeOf(exit);
    this.state = {
      terminated: {
        exitCode,
        reason: exitCode === 0 ? 'Completed' : 'Error',
        ...(this.startedAt ? { startedAt: this.startedAt } : {}),
        finishedAt: this.host.nowIso(),
      },
    };
    return exit;
  }

  shortenGrace(graceMs: number): void {
    const at = Date.now() + graceMs;
    if (at >= this.killAt || !this.proc) return;
    this.killAt = at;
    if (this.killTimer) clearTimeout(this.killTimer);
    const proc = this.proc;
    this.killTimer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    this.killTimer.unref();
  }

  async dispose(): Promise<void> {
    for (const t of [this.restartTimer, this.killTimer]) if (t) clearTimeout(t);
    this.stopProbing();
    this.proc?.kill('SIGKILL');
    await this.starting?.catch(() => undefined);
    this.proc?.kill('SIGKILL');
    if (this.proc) await this.proc.exited;
  }
}

/**
 * One pod as the kubelet runs it: its address, the node's environment, its containers — init
 * containers first, in spec order, each once the one before is done (a run-to-completion one has
 * exited 0, a native sidecar has started), then the main containers together — and the status they
 * add up to. Termination stops the main containers first, then the sidecars in reverse order, within
 * one grace period. A run-to-completion init container that fails under restartPolicy Never fails
 * the pod: its sidecars stop and nothing else starts.
 */
export class PodWorker {
  ip: string | undefined;
  terminating = false;
  disposed = false;
  nodeEnv: Record<string, string> | undefined;
  private readonly runners: ContainerRunner[];
  private starting: Promise<void> | undefined;
  private done: Promise<void> | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private addressAttempts = 0;
  /** Sticky once the init containers were all done, as the kubelet keeps Initialized once it is True. */
  private initialized = false;
  /** A run-to-completion init container failed under restartPolicy Never: the pod has failed. */
  private initFailed = false;
  private signalStop: (() => void) | undefined;
  private readonly stopSignal = new Promise<void>((resolve) => (this.signalStop = resolve));

  constructor(
    readonly host: PodWorkerHost,
    readonly key: string,
    readonly uid: string,
    readonly spec: Pod,
  ) {
    this.runners = [
      ...(spec.spec.initContainers ?? []).map((c) => new ContainerRunner(this, c, true)),
      ...spec.spec.containers.map((c) => new ContainerRunner(this, c, false)),
    ];
  }

  private get main(): ContainerRunner | undefined {
    return this.runners.find((r) => !r.init);
  }

  /** The main (first regular) container's process. */
  get proc(): PodProcess | undefined {
    return this.main?.proc;
  }

  /** Ready as the pod's Ready condition: every main container and sidecar ready. */
  get ready(): boolean {
    const running = this.runners.filter((r) => !r.runsToCompletion);
    return running.length > 0 && running.every((r) => r.ready);
  }

  get port(): number {
    const c = this.spec.spec.containers[0];
    return c ? this.portOf(c) : this.host.defaultPort;
  }

  portOf(c: Container): number {
    return c.ports?.[0]?.containerPort ?? this.host.defaultPort;
  }

  /** The readiness and startup probe period override (annotation, then the kubelet's option). */
  periodOverrideMs(): number | undefined {
    const ann = Number(this.spec.metadata.annotations?.[PROBE_PERIOD_MS_ANNOTATION]);
    return ann > 0 ? ann : this.host.probePeriodMs;
  }

  /**
   * The last lines a container wrote (stdout and stderr interleaved as they came): of its current
   * run — which, while a crashed container waits to restart, is the crashed one — or of the one
   * before. Default container: the first main one.
   */
  logs(opts: { container?: string; previous?: boolean } = {}): string[] {
    const r =
      opts.container === undefined
        ? this.main
        : this.runners.find((x) => x.container.name === opts.container);
    if (r === undefined) {
      throw new GrpcKubeError(
        'GK_ERR_LAB_POD_SPEC',
        `pod ${this.key} has no container "${opts.container ?? ''}" (it has ${this.runners.map((x) => x.container.name).join(', ')})`,
      );
    }
    return r.logs(opts.previous === true);
  }

  /** The pod is bound to this node: Pending with PodScheduled, then its containers start. */
  admit(): Promise<void> {
    const at = this.host.nowIso();
    this.host.updateStatus(this.key, this.uid, (s) => {
      s.phase ??= 'Pending';
      setCondition(s, 'PodScheduled', 'True', at);
    });
    return this.start();
  }

  private start(): Promise<void> {
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
        this.retryLater();
        return;
      }
      this.ip = ip;
    }
    if (this.nodeEnv === undefined) {
      try {
        this.nodeEnv = (await h.podEnvironment?.(this.spec, this.ip)) ?? {};
      } catch (err) {
        h.reportError(this.key, err);
        const message = err instanceof Error ? err.message : String(err);
        for (const r of this.runners)
          r.state = { waiting: { reason: 'CreateContainerConfigError', message } };
        this.changed();
        this.retryLater();
        return;
      }
    }
    // Initialized False and the containers' PodInitializing before any init container runs.
    if (this.runners.some((r) => r.init)) this.changed();
    for (const r of this.runners.filter((x) => x.init)) {
      if (this.terminating || this.disposed) return;
      await r.start();
      if (r.sidecar) {
        // The next container waits for this sidecar's start (its startup probe), as the kubelet does.
        await Promise.race([r.firstStarted, this.whenStopping()]);
        continue;
      }
      // Restarted by the container itself until it exits 0, unless restartPolicy is Never.
      const ok = await Promise.race([r.completed, this.whenStopping().then(() => undefined)]);
      if (ok === false) {
        // Not awaited: termination waits for this start to return.
        void this.failInit();
        return;
      }
    }
    if (this.terminating || this.disposed) return;
    await Promise.all(this.runners.filter((x) => !x.init).map((r) => r.start()));
  }

  /** Resolves once the pod is terminating or disposed. */
  whenStopping(): Promise<void> {
    return this.stopSignal;
  }

  /** An init container failed for good (restartPolicy Never): the pod fails, and its sidecars stop. */
  private failInit(): Promise<void> {
    this.initFailed = true;
    this.changed((s) => {
      s.phase = 'Failed';
    }, 'PodFailed');
    return this.terminate(deletionGraceMs(this.spec));
  }

  private retryLater(): void {
    if (this.disposed || this.terminating) return;
    const delay = Math.min(
      this.host.restartBackoffMaxMs,
      this.host.restartBackoffMs * 2 ** Math.min(this.addressAttempts++, 30),
    );
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.disposed && !this.terminating) void this.start();
    }, delay);
    this.restartTimer.unref();
  }

  /** Writes the pod's status from its containers' (and `extra`, applied first). */
  changed(extra?: (s: PodStatus) => void, reason = 'ContainersNotReady'): void {
    const at = this.host.nowIso();
    const ready = this.ready;
    const statuses = this.runners.filter((r) => !r.init).map((r) => r.status());
    const inits = this.runners.filter((r) => r.init).map((r) => r.status());
    const incomplete = this.runners.filter((r) => r.init && !r.initDone).map((r) => r.container.name);
    if (incomplete.length === 0) this.initialized = true;
    const initialized = this.initialized;
    this.host.updateStatus(this.key, this.uid, (s) => {
      s.phase ??= 'Pending';
      extra?.(s);
      if (initialized) setCondition(s, 'Initialized', 'True', at);
      else {
        const message = `containers with incomplete status: [${incomplete.join(' ')}]`;
        setCondition(s, 'Initialized', 'False', at, 'ContainersNotInitialized', message);
      }
      setCondition(s, 'ContainersReady', ready ? 'True' : 'False', at, ready ? undefined : reason);
      setCondition(s, 'Ready', ready ? 'True' : 'False', at, ready ? undefined : reason);
      s.containerStatuses = statuses;
      if (inits.length > 0) s.initContainerStatuses = inits;
    });
  }

  /** A container runs: the pod has its address, and is Running once a main container (not an init one) runs. */
  onRunning(at: string, main: boolean): void {
    const h = this.host;
    const ip = this.ip ?? '';
    this.changed((s) => {
      if (main) s.phase = 'Running';
      s.hostIP = h.hostIP;
      s.hostIPs = [{ ip: h.hostIP }];
      s.podIP = ip;
      s.podIPs = [{ ip }];
      s.startTime ??= at;
      setCondition(s, 'PodScheduled', 'True', at);
    });
  }

  /** A container exited; `final` when it will not restart. The pod ends when all its main containers have. */
  onContainerExit(_at: string, final: boolean): void {
    const mains = this.runners.filter((r) => !r.init);
    const over = final && mains.every((r) => r.final !== undefined);
    if (!over) {
      this.changed();
      return;
    }
    const failed = mains.some((r) => exitCodeOf(r.final as PodExit) !== 0);
    this.changed(
      (s) => {
        s.phase = failed ? 'Failed' : 'Succeeded';
      },
      failed ? 'PodFailed' : 'PodCompleted',
    );
  }

  /**
   * Graceful termination: each container's preStop hook, SIGTERM, SIGKILL once graceMs (counting the
   * hooks) are over — main containers first, then sidecars in reverse order — probing readiness until
   * the exits (so the slice's `serving` stays honest); the caller deletes the pod afterwards. Called
   * again with a shorter grace (a second DELETE that shortened it), the SIGKILLs come sooner.
   */
  terminate(graceMs: number): Promise<void> {
    const deadline = Date.now() + graceMs;
    if (this.done) {
      for (const r of this.runners) r.shortenGrace(graceMs);
      return this.done;
    }
    this.terminating = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.signalStop?.();
    this.done = (async () => {
      await this.starting;
      const mains = this.runners.filter((r) => !r.init);
      // Init containers (a sidecar, or one still running to completion) in reverse order.
      const sidecars = this.runners.filter((r) => r.init).reverse();
      const exits = await Promise.all(mains.map((r) => r.terminate(Math.max(0, deadline - Date.now()))));
      for (const r of sidecars) await r.terminate(Math.max(0, deadline - Date.now()));
      for (const r of this.runners) r.stopProbing();
      if (this.disposed || !this.runners.some((r) => r.proc)) return;
      const failed = this.initFailed || exits.some((e) => e !== undefined && exitCodeOf(e) !== 0);
      this.changed(
        (s) => {
          s.phase = failed ? 'Failed' : 'Succeeded';
        },
        this.initFailed ? 'PodFailed' : 'PodCompleted',
      );
    })();
    return this.done;
  }

  /**
   * Immediate end (pod removed, or kubelet stop after the grace): SIGKILL at once; the address (and
   * its namespace) go once the processes are gone. Resolves then.
   */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.terminating = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.signalStop?.();
    await Promise.all(this.runners.map((r) => r.dispose()));
    await this.starting?.catch(() => undefined);
    await Promise.all(this.runners.map((r) => r.dispose()));
    if (this.nodeEnv !== undefined && this.host.releasePodEnvironment !== undefined) {
      await this.host
        .releasePodEnvironment(this.spec)
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
