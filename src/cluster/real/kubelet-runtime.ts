// A PodRuntime for the real-cluster lab: a Node.js script run inside the pod's own network namespace
// (`ip netns exec <ns> node <script>`; ip execs the command, so the pid we hold — and signal — is the
// node process itself). The pod's namespace must exist (LabNetwork.addPod) before start(). Like
// NodeScriptRuntime, children die with this process.

import { spawn, type ChildProcess } from 'node:child_process';

import { GrpcKubeError } from '../../errors.js';
import {
  podIdentityEnv,
  type PodExit,
  type PodProcess,
  type PodRuntime,
  type PodStartSpec,
} from '../pod-runtime.js';
import type { LabNetwork } from './netns.js';

export interface NetnsScriptRuntimeOptions {
  readonly network: LabNetwork;
  /** JavaScript file run with this Node.js binary, e.g. POD_MAIN_SCRIPT of src/lab/pod-main.ts. */
  readonly script: string;
  /** Extra environment for every pod (the container's env wins). */
  readonly env?: Readonly<Record<string, string>>;
  readonly onOutput?: (pod: string, stream: 'stdout' | 'stderr', line: string) => void;
}

export class NetnsScriptRuntime implements PodRuntime {
  private readonly opts: NetnsScriptRuntimeOptions;
  private readonly live = new Set<ChildProcess>();
  private readonly onParentExit = (): void => {
    for (const c of this.live) c.kill('SIGKILL');
  };

  constructor(opts: NetnsScriptRuntimeOptions) {
    this.opts = { ...opts };
  }

  get running(): number {
    return this.live.size;
  }

  start(spec: PodStartSpec): Promise<PodProcess> {
    const net = this.opts.network.pods().find((p) => p.ip === spec.ip);
    if (net === undefined) {
      return Promise.reject(
        new GrpcKubeError(
          'GK_ERR_LAB',
          `pod ${spec.namespace}/${spec.name}: no network namespace for ${spec.ip}; call addPod first`,
        ),
      );
    }
    const env: Record<string, string> = {
      PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      NODE_ENV: process.env['NODE_ENV'] ?? 'production',
      ...(this.opts.env ?? {}),
      ...podIdentityEnv(spec),
      ...spec.env,
    };
    const [file, args] = net.command(process.execPath, [this.opts.script]);
    const pipe = this.opts.onOutput !== undefined;
    const child = spawn(file, args, {
      env,
      stdio: ['ignore', pipe ? 'pipe' : 'ignore', pipe ? 'pipe' : 'ignore'],
    });
    if (pipe) {
      const on = this.opts.onOutput as NonNullable<NetnsScriptRuntimeOptions['onOutput']>;
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
      child.once('spawn', () =>
        resolve({
          pid: child.pid,
          kill: (signal) => {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          },
          exited,
        }),
      );
      child.once('error', (err) => {
        this.forget(child);
        reject(
          new GrpcKubeError(
            'GK_ERR_LAB',
            `pod ${spec.namespace}/${spec.name}: cannot start: ${err.message}`,
            {
              cause: err,
            },
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
