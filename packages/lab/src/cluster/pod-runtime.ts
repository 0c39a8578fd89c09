// The contract between the lab kubelet and whatever runs a pod's container: start a process for a pod
// on its own IP and port, signal it, learn when it exits. The lab plugs in its Hello server; tests plug
// in their fixtures. NodeScriptRuntime is the one real implementation here: a Node.js script run as a
// child process with the pod's identity in its environment, killed with the parent if the parent exits
// — even by a signal: where util-linux's setpriv is present, the pod runs under
// `setpriv --pdeathsig KILL`, so the kernel kills it when the kubelet's process dies.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Container } from './controllers/kinds.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';

export interface PodStartSpec {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  /** The pod's own address; the process must listen on it. */
  readonly ip: string;
  readonly port: number;
  /** The container's env (name → value), plus nothing else: runtimes add the POD_* identity themselves. */
  readonly env: Readonly<Record<string, string>>;
  readonly container: Readonly<Container>;
  /** 0 on the first start, then the container's restart count. */
  readonly restartCount: number;
}

export interface PodExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface PodProcess {
  readonly pid: number | undefined;
  /** Sends a signal (the lab also sends SIGSTOP and SIGUSR2); a no-op once the process has exited. */
  kill(signal: NodeJS.Signals): void;
  /** Settles (never rejects) when the process has exited. */
  readonly exited: Promise<PodExit>;
}

export interface PodRuntime {
  /** Resolves once the process runs (not once it serves); rejects when it cannot be started. */
  start(spec: PodStartSpec): Promise<PodProcess>;
}

export interface NodeScriptRuntimeOptions {
  /** Path of the JavaScript file to run with this Node.js binary. */
  readonly script: string;
  /**
   * Instead of the script: a command line run as `/bin/sh -c 'exec CMD'` (`grpc-kube lab --pod-command`),
   * given the pod's identity in its environment, including PORT (= POD_PORT).
   */
  readonly shellCommand?: string;
  readonly args?: (spec: PodStartSpec) => string[];
  /** Extra environment for every pod (the pod's container env wins). */
  readonly env?: Readonly<Record<string, string>>;
  /** Where the child's stdout/stderr go: dropped (default) or passed to a callback line by line. */
  readonly onOutput?: (pod: string, stream: 'stdout' | 'stderr', line: string) => void;
  /**
   * CPU niceness of every pod process (0..19, default 0). The lab runs its pods nicer than the process
   * that drives the clients: on a small machine, five pods booting at once would otherwise take the
   * clients' core and the lab would measure its own start-up instead of the strategies. Applied by
   * exec'ing through nice(1), so the pod is nice from its first instruction.
   */
  readonly nice?: number;
}

/** The POD_* variables every runtime gives a pod, so a pod process knows who and where it is. */
export function podIdentityEnv(spec: PodStartSpec): Record<string, string> {
  return {
    POD_NAME: spec.name,
    POD_NAMESPACE: spec.namespace,
    POD_UID: spec.uid,
    POD_IP: spec.ip,
    POD_PORT: String(spec.port),
  };
}

const SETPRIV = '/usr/bin/setpriv';
const NICE = '/usr/bin/nice';

export class NodeScriptRuntime implements PodRuntime {
  private readonly opts: NodeScriptRuntimeOptions;
  private readonly live = new Set<ChildProcess>();
  private readonly onParentExit = (): void => {
    for (const c of this.live) c.kill('SIGKILL');
  };

  constructor(opts: NodeScriptRuntimeOptions) {
    const nice = opts.nice ?? 0;
    if (!Number.isInteger(nice) || nice < 0 || nice > 19)
      throw new InvalidOptionError('nice', `must be an integer 0..19, got ${String(opts.nice)}`);
    this.opts = { ...opts };
  }

  /** Processes started and not yet exited. */
  get running(): number {
    return this.live.size;
  }

  /**
   * The program and arguments that run `spec`'s pod: node and the script here; subclasses wrap it
   * (e.g. in `ip netns exec`). Throwing rejects start() with that error.
   */
  protected command(spec: PodStartSpec): readonly [string, string[]] {
    // `exec`: the user's program replaces the shell, so it is the pod's process — it gets SIGTERM and
    // SIGKILL, and dies with the kubelet (a shell in between would leave it running and undrained).
    if (this.opts.shellCommand !== undefined) return ['/bin/sh', ['-c', `exec ${this.opts.shellCommand}`]];
    return [process.execPath, [this.opts.script, ...(this.opts.args?.(spec) ?? [])]];
  }

  start(spec: PodStartSpec): Promise<PodProcess> {
    let file: string;
    let args: string[];
    try {
      [file, args] = this.command(spec);
    } catch (err) {
      return Promise.reject(err);
    }
    // setpriv execs the command in place (same pid), with SIGKILL on its parent's death.
    if (existsSync(SETPRIV)) [file, args] = [SETPRIV, ['--pdeathsig', 'KILL', '--', file, ...args]];
    // nice(1) execs in place too: the pid stays the pod's.
    const nice = this.opts.nice ?? 0;
    if (nice > 0 && existsSync(NICE)) [file, args] = [NICE, ['-n', String(nice), file, ...args]];
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      NODE_ENV: process.env.NODE_ENV ?? 'production',
      ...(this.opts.env ?? {}),
      ...podIdentityEnv(spec),
      PORT: String(spec.port),
      ...spec.env,
    };
    const pipe = this.opts.onOutput !== undefined;
    const child = spawn(file, args, {
      env,
      stdio: ['ignore', pipe ? 'pipe' : 'ignore', pipe ? 'pipe' : 'ignore'],
    });
    if (pipe) {
      const on = this.opts.onOutput as NonNullable<NodeScriptRuntimeOptions['onOutput']>;
      for (const stream of ['stdout', 'stderr'] as const) {
        let buf = '';
        child[stream]?.setEncoding('utf8');
        child[stream]?.on('data', (chunk: string) => {
          buf += chunk;
          let i: number;
          while ((i = buf.indexOf('\n')) >= 0) {
            on(spec.name, stream, buf.slice(0, i));
            buf = buf.slice(i + 1);
          }
        });
      }
    }
    if (this.live.size === 0) process.once('exit', this.onParentExit);
    this.live.add(child);
    const exited = new Promise<PodExit>((resolve) => {
      child.once('exit', (code, signal) => {
        this.forget(child);
        resolve({ code, signal });
      });
    });
    return new Promise<PodProcess>((resolve, reject) => {
      child.once('spawn', () => {
        resolve({
          pid: child.pid,
          kill: (signal) => {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          },
          exited,
        });
      });
      child.once('error', (err) => {
        this.forget(child);
        reject(
          new GrpcKubeError(
            'GK_ERR_LAB',
            `pod ${spec.namespace}/${spec.name}: cannot start ${this.opts.script}: ${err.message}`,
            { cause: err },
          ),
        );
      });
    });
  }

  private forget(child: ChildProcess): void {
    this.live.delete(child);
    if (this.live.size === 0) process.removeListener('exit', this.onParentExit);
  }
}
