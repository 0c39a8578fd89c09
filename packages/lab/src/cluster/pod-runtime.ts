// The contract between the lab kubelet and whatever runs a pod's container: start a process for a pod
// on its own IP and port, signal it, learn when it exits, and (for exec probes and hooks) run a
// command in the container's environment. The lab plugs in its Hello server; tests plug in their
// fixtures. Two real implementations here, on one ProcessRuntime base: NodeScriptRuntime runs a
// Node.js script with the pod's identity in its environment; ImageRuntime runs a pod spec as written
// — `image` looked up in a map of local images (the repository's own, grpc-kube:0.1.0, built in),
// `command`/`args` run in that image's directory. Children die with the parent even by a signal: where
// util-linux's setpriv is present, the pod runs under `setpriv --pdeathsig KILL`, so the kernel kills
// it when the kubelet's process dies.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Container } from './controllers/kinds.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';

export interface PodStartSpec {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  /** The pod's own address; the process must listen on it. */
  readonly ip: string;
  readonly port: number;
  /**
   * The container's environment as the kubelet resolved it (literal values, fieldRef, `$(VAR)`
   * expansion), plus what the node gives (service-account variables). NodeScriptRuntime adds POD_*.
   */
  readonly env: Readonly<Record<string, string>>;
  readonly container: Readonly<Container>;
  /** The container's command and args with `$(VAR)` expanded (as written when the kubelet gives none). */
  readonly command?: readonly string[];
  readonly args?: readonly string[];
  /** 0 on the first start, then the container's restart count. */
  readonly restartCount: number;
  /** Each line the process writes (the kubelet keeps the last ones for logs()). */
  readonly onOutput?: (stream: 'stdout' | 'stderr', line: string) => void;
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

export interface ExecResult {
  /** null when the command was killed at its time-out. */
  readonly exitCode: number | null;
  /** The first output bytes (stdout and stderr), bounded. */
  readonly output: string;
}

export interface PodRuntime {
  /** Resolves once the process runs (not once it serves); rejects when it cannot be started. */
  start(spec: PodStartSpec): Promise<PodProcess>;
  /**
   * Runs `argv` in the container's environment (its cwd, env, network), for exec probes and hooks;
   * kills it after timeoutMs. Runtimes without it fail exec handlers.
   */
  exec?(spec: PodStartSpec, argv: readonly string[], timeoutMs: number): Promise<ExecResult>;
}

export interface ProcessRuntimeOptions {
  /** Extra environment for every pod (the pod's container env wins). */
  readonly env?: Readonly<Record<string, string>>;
  /** Where the child's stdout/stderr also go, line by line (the kubelet keeps its own tail either way). */
  readonly onOutput?: (pod: string, stream: 'stdout' | 'stderr', line: string) => void;
  /**
   * CPU niceness of every pod process (0..19, default 0). The lab runs its pods nicer than the process
   * that drives the clients: on a small machine, five pods booting at once would otherwise take the
   * clients' core and the lab would measure its own start-up instead of the strategies. Applied by
   * exec'ing through nice(1), so the pod is nice from its first instruction.
   */
  readonly nice?: number;
  /**
   * Wraps a pod's command line, e.g. in `ip netns exec <ns>` (the real cluster's pod network); the
   * wrapper must exec in place so the pid stays the pod's. Throwing rejects start().
   */
  readonly wrap?: (spec: PodStartSpec, file: string, args: string[]) => readonly [string, string[]];
}

export interface NodeScriptRuntimeOptions extends ProcessRuntimeOptions {
  /** Path of the JavaScript file to run with this Node.js binary. */
  readonly script: string;
  /**
   * Instead of the script: a command line run as `/bin/sh -c 'exec CMD'` (`grpc-kube lab --pod-command`),
   * given the pod's identity in its environment, including PORT (= POD_PORT).
   */
  readonly shellCommand?: string;
  readonly args?: (spec: PodStartSpec) => string[];
}

/** The POD_* variables NodeScriptRuntime gives a pod, so a lab script knows who and where it is. */
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
/** Bytes of an exec probe's or hook's output kept (Kubernetes keeps 10 KiB). */
const EXEC_OUTPUT_BYTES = 10 * 1024;
/** PATH of a pod: this Node.js binary's directory first, so an image's `node` is the one running us. */
const POD_PATH = [dirname(process.execPath), process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'].join(':');

/**
 * What every process runtime shares: setpriv/nice/wrap around the command, output split into lines,
 * children killed when this process exits, exec with a time-out. Subclasses say what to run, with
 * which environment, in which directory.
 */
export abstract class ProcessRuntime implements PodRuntime {
  private readonly base: ProcessRuntimeOptions;
  private readonly live = new Set<ChildProcess>();
  private readonly onParentExit = (): void => {
    for (const c of this.live) c.kill('SIGKILL');
  };

  constructor(opts: ProcessRuntimeOptions) {
    const nice = opts.nice ?? 0;
    if (!Number.isInteger(nice) || nice < 0 || nice > 19)
      throw new InvalidOptionError('nice', `must be an integer 0..19, got ${String(opts.nice)}`);
    this.base = { ...opts };
  }

  /** Processes started and not yet exited. */
  get running(): number {
    return this.live.size;
  }

  /** The program and arguments that run `spec`'s container. Throwing rejects start(). */
  protected abstract command(spec: PodStartSpec): readonly [string, string[]];

  /** The container's whole environment (the runtime's extras, then the container's own). */
  protected abstract environment(spec: PodStartSpec): Record<string, string>;

  /** The container's working directory; undefined = this process's. */
  protected cwd(_spec: PodStartSpec): string | undefined {
    return undefined;
  }

  /** A description of what runs, for error messages. */
  protected describe(spec: PodStartSpec): string {
    return spec.container.image ?? spec.container.name;
  }

  /** `file args` with the wrapper, setpriv and nice around it (each execs in place: same pid). */
  private launch(spec: PodStartSpec, file: string, args: string[]): [string, string[]] {
    if (this.base.wrap) [file, args] = [...this.base.wrap(spec, file, args)] as [string, string[]];
    if (existsSync(SETPRIV)) [file, args] = [SETPRIV, ['--pdeathsig', 'KILL', '--', file, ...args]];
    const nice = this.base.nice ?? 0;
    if (nice > 0 && existsSync(NICE)) [file, args] = [NICE, ['-n', String(nice), file, ...args]];
    return [file, args];
  }

  private track(child: ChildProcess): void {
    if (this.live.size === 0) process.once('exit', this.onParentExit);
    this.live.add(child);
    child.once('exit', () => this.forget(child));
    child.once('error', () => this.forget(child));
  }

  start(spec: PodStartSpec): Promise<PodProcess> {
    let file: string;
    let args: string[];
    let env: Record<string, string>;
    try {
      [file, args] = this.launch(spec, ...(this.command(spec) as [string, string[]]));
      env = this.environment(spec);
    } catch (err) {
      return Promise.reject(err);
    }
    const cwd = this.cwd(spec);
    const child = spawn(file, args, {
      env,
      ...(cwd !== undefined ? { cwd } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const stream of ['stdout', 'stderr'] as const) {
      let buf = '';
      child[stream]?.setEncoding('utf8');
      const emit = (line: string): void => {
        this.base.onOutput?.(spec.name, stream, line);
        spec.onOutput?.(stream, line);
      };
      child[stream]?.on('data', (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          emit(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
        // A line without end is cut, not grown without bound.
        if (buf.length > 64 * 1024) {
          emit(buf);
          buf = '';
        }
      });
      child[stream]?.on('end', () => {
        if (buf !== '') emit(buf);
        buf = '';
      });
    }
    this.track(child);
    // Settles once the output is read too (so a crashed container's last lines are in its log), but
    // no later than 500 ms after the exit: a grandchild may hold the pipes open.
    const exited = new Promise<PodExit>((resolve) => {
      child.once('exit', (code, signal) => {
        const t = setTimeout(() => resolve({ code, signal }), 500);
        t.unref();
        child.once('close', () => {
          clearTimeout(t);
          resolve({ code, signal });
        });
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
        reject(
          new GrpcKubeError(
            'GK_ERR_LAB',
            `pod ${spec.namespace}/${spec.name}: cannot start ${this.describe(spec)}: ${err.message}`,
            { cause: err },
          ),
        );
      });
    });
  }

  exec(spec: PodStartSpec, argv: readonly string[], timeoutMs: number): Promise<ExecResult> {
    const [cmd, ...rest] = argv;
    if (cmd === undefined) {
      return Promise.reject(
        new GrpcKubeError('GK_ERR_LAB_POD_SPEC', `pod ${spec.namespace}/${spec.name}: exec with no command`),
      );
    }
    let file: string;
    let args: string[];
    let env: Record<string, string>;
    try {
      [file, args] = this.launch(spec, cmd, rest);
      env = this.environment(spec);
    } catch (err) {
      return Promise.reject(err);
    }
    const cwd = this.cwd(spec);
    return new Promise<ExecResult>((resolve) => {
      const child = spawn(file, args, {
        env,
        ...(cwd !== undefined ? { cwd } : {}),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.track(child);
      let output = '';
      const take = (b: Buffer): void => {
        if (output.length < EXEC_OUTPUT_BYTES)
          output += b.toString('utf8').slice(0, EXEC_OUTPUT_BYTES - output.length);
      };
      child.stdout?.on('data', take);
      child.stderr?.on('data', take);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      timer.unref();
      child.once('error', (err) => {
        clearTimeout(timer);
        resolve({ exitCode: 127, output: err.message });
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        resolve({ exitCode: timedOut ? null : code, output });
      });
    });
  }

  private forget(child: ChildProcess): void {
    this.live.delete(child);
    if (this.live.size === 0) process.removeListener('exit', this.onParentExit);
  }
}

export class NodeScriptRuntime extends ProcessRuntime {
  private readonly opts: NodeScriptRuntimeOptions;

  constructor(opts: NodeScriptRuntimeOptions) {
    super(opts);
    this.opts = { ...opts };
  }

  protected command(spec: PodStartSpec): readonly [string, string[]] {
    // `exec`: the user's program replaces the shell, so it is the pod's process — it gets SIGTERM and
    // SIGKILL, and dies with the kubelet (a shell in between would leave it running and undrained).
    if (this.opts.shellCommand !== undefined) return ['/bin/sh', ['-c', `exec ${this.opts.shellCommand}`]];
    return [process.execPath, [this.opts.script, ...(this.opts.args?.(spec) ?? [])]];
  }

  protected environment(spec: PodStartSpec): Record<string, string> {
    return {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      NODE_ENV: process.env.NODE_ENV ?? 'production',
      ...(this.opts.env ?? {}),
      ...podIdentityEnv(spec),
      PORT: String(spec.port),
      ...spec.env,
    };
  }

  protected override describe(): string {
    return this.opts.shellCommand ?? this.opts.script;
  }
}

/** A local stand-in for a container image: where its files are and how it starts. */
export interface LocalImage {
  /** The image's WORKDIR: the container's command runs here. */
  readonly cwd: string;
  /** The image's ENV (the container's env wins). */
  readonly env?: Readonly<Record<string, string>>;
  /** Put before every command line (e.g. a wrapper); default none. */
  readonly prefix?: readonly string[];
  /** The image's ENTRYPOINT: run with the container's `args` when it gives no `command`. */
  readonly entrypoint?: readonly string[];
  /** The image's CMD: run when the container gives neither `command` nor `args`. */
  readonly cmd?: readonly string[];
}

/** The repository root: the layout of the Dockerfile's /app (dist/examples, packages/*\/dist). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', '..');

/**
 * The images the Dockerfile builds, as they run from this checkout (after `npm run build`): WORKDIR
 * /app is the repository root's layout, ENV NODE_ENV=production, CMD per target.
 */
export function repoImages(root = REPO_ROOT): Record<string, LocalImage> {
  const img = (cmd: string[]): LocalImage => ({ cwd: root, env: { NODE_ENV: 'production' }, cmd });
  const server = img(['node', 'dist/examples/hello/server.js']);
  return {
    'grpc-kube:0.1.0': server,
    'grpc-kube-server:0.1.0': server,
    'grpc-kube-client:0.1.0': img(['node', 'dist/examples/hello/client.js']),
    'grpc-kube-proxy:0.1.0': img(['node', 'packages/cli/dist/src/main.js', 'proxy', '--help']),
    'grpc-kube-xds:0.1.0': img([
      'node',
      'packages/cli/dist/src/main.js',
      'xds',
      'serve',
      '--listen=0.0.0.0:18000',
    ]),
  };
}

export interface ImageRuntimeOptions extends ProcessRuntimeOptions {
  /** Images besides (and over) the repository's own (repoImages()). */
  readonly images?: Readonly<Record<string, LocalImage>>;
  /**
   * Give each container POD_IP = its pod's address unless its env sets it. On the embedded cluster
   * every pod shares the host's network, so a server that binds 0.0.0.0:port would take the port from
   * every other pod; grpc-kube's Hello server binds POD_IP when set. Default true; the real cluster's
   * pods have their own network namespace and need no help.
   */
  readonly podIpEnv?: boolean;
}

/** The typed error of a pod whose image has no local entry: its status says ErrImagePull. */
export class ImageNotFoundError extends GrpcKubeError {
  constructor(
    readonly image: string,
    known: readonly string[],
  ) {
    super(
      'GK_ERR_LAB_IMAGE',
      `image "${image}" is not in the lab kubelet's image map (it has ${known.join(', ')}); ` +
        `add it to ImageRuntime's \`images\`: { '${image}': { cwd, env, cmd } }`,
    );
    this.name = 'ImageNotFoundError';
  }
}

/**
 * Runs a pod spec as written: `image` names a LocalImage, and the container's `command`/`args`
 * (expanded by the kubelet) run in its directory with its env and the container's, as a container
 * runtime would run them in the image (command overrides ENTRYPOINT and CMD; args alone replace CMD).
 */
export class ImageRuntime extends ProcessRuntime {
  private readonly images: Readonly<Record<string, LocalImage>>;
  private readonly opts: ImageRuntimeOptions;

  constructor(opts: ImageRuntimeOptions = {}) {
    super(opts);
    this.opts = { ...opts };
    this.images = Object.freeze({ ...repoImages(), ...(opts.images ?? {}) });
  }

  /** The image's entry; throws ImageNotFoundError. */
  image(name: string | undefined): LocalImage {
    const img = name === undefined ? undefined : this.images[name];
    if (img === undefined) throw new ImageNotFoundError(name ?? '(none)', Object.keys(this.images));
    return img;
  }

  /** The command line a container runs: `prefix` + (command + args | entrypoint + args | entrypoint + cmd). */
  argv(spec: Pick<PodStartSpec, 'container' | 'command' | 'args' | 'namespace' | 'name'>): string[] {
    const img = this.image(spec.container.image);
    const command = spec.command ?? spec.container.command;
    const args = spec.args ?? spec.container.args;
    const main =
      command !== undefined
        ? [...command, ...(args ?? [])]
        : [...(img.entrypoint ?? []), ...(args ?? img.cmd ?? [])];
    const argv = [...(img.prefix ?? []), ...main];
    if (argv.length === 0) {
      throw new GrpcKubeError(
        'GK_ERR_LAB_POD_SPEC',
        `pod ${spec.namespace}/${spec.name} container "${spec.container.name}": no command, and image ` +
          `"${spec.container.image ?? ''}" has no entrypoint or cmd; give the container a command`,
      );
    }
    return argv;
  }

  protected command(spec: PodStartSpec): readonly [string, string[]] {
    const [file, ...args] = this.argv(spec);
    return [file ?? '', args];
  }

  protected environment(spec: PodStartSpec): Record<string, string> {
    const img = this.image(spec.container.image);
    return {
      PATH: POD_PATH,
      HOSTNAME: spec.name,
      ...(img.env ?? {}),
      ...(this.opts.env ?? {}),
      ...(this.opts.podIpEnv === false ? {} : { POD_IP: spec.ip }),
      ...spec.env,
    };
  }

  protected override cwd(spec: PodStartSpec): string {
    return this.image(spec.container.image).cwd;
  }
}
