// `lab --manifests` fails a strategy's run when one of its overlay's containers cannot run: a
// container in CrashLoopBackOff or restarted by a failing postStart hook (PostStartHookError, whose
// message says FailedPostStartHook), one that exited non-zero by itself, or one whose log (or its
// termination message, where the kubelet keeps the last lines) shows the API answering 403 Forbidden.
// The reason names the pod, the container and the exit code or the log line, as `kubectl describe`
// and `kubectl logs --previous` would have shown them.

import type { Pod } from '../cluster/controllers/kinds.js';

interface ContainerState {
  readonly waiting?: { readonly reason?: string; readonly message?: string };
  readonly running?: unknown;
  readonly terminated?: {
    readonly exitCode?: number;
    readonly signal?: number;
    readonly reason?: string;
    readonly message?: string;
  };
}
interface ContainerStatusLike {
  readonly name: string;
  readonly state?: ContainerState;
  readonly lastState?: ContainerState;
  readonly restartCount?: number;
}

/** Waiting reasons of a container that will not start until its spec or image changes. */
const CANNOT_START = new Set([
  'CreateContainerConfigError',
  'CreateContainerError',
  'ErrImagePull',
  'ImagePullBackOff',
  'InvalidImageName',
]);

/** A log line that says the API refused the container: an HTTP 403, Forbidden, GK_ERR_KUBE_FORBIDDEN. */
export const FORBIDDEN_LINE = /\b403\b|forbidden/i;

/** The first line of `text` matching FORBIDDEN_LINE, trimmed to 300 characters. */
export function forbiddenLine(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const line = text.split('\n').find((l) => FORBIDDEN_LINE.test(l));
  return line === undefined ? undefined : line.trim().slice(0, 300);
}

function statuses(pod: Pod): ContainerStatusLike[] {
  const s = pod.status as
    { containerStatuses?: ContainerStatusLike[]; initContainerStatuses?: ContainerStatusLike[] } | undefined;
  return [...(s?.initContainerStatuses ?? []), ...(s?.containerStatuses ?? [])];
}

function exitOf(t: NonNullable<ContainerState['terminated']>): string {
  return `exit code ${t.exitCode ?? '?'}${t.reason !== undefined ? ` (${t.reason})` : ''}`;
}

export interface PodFailure {
  readonly container: string;
  readonly reason: string;
  /** The reason quotes no log line yet: the container's log may tell more. */
  readonly wantsLog: boolean;
}

/**
 * Why `pod` fails the run, or undefined. `kills`: how often the scenario killed this pod. A container
 * that died of a kill is no failure, nor is the back-off before its restart (the kubelet says
 * CrashLoopBackOff from the first restart on); a crash loop with more restarts than kills is.
 */
export function podFailure(pod: Pod, kills: number): PodFailure | undefined {
  const name = `pod ${pod.metadata.namespace ?? ''}/${pod.metadata.name ?? ''}`;
  for (const c of statuses(pod)) {
    const where = `${name} container ${c.name}`;
    const last = c.lastState?.terminated;
    const now = c.state?.terminated;
    const fail = (reason: string, wantsLog = false): PodFailure => ({ container: c.name, reason, wantsLog });
    for (const t of [now, last]) {
      const denied = forbiddenLine(t?.message);
      if (denied !== undefined)
        return fail(`${where}: the API refused it (${t ? exitOf(t) : ''}): ${denied}`);
    }
    const denied = forbiddenLine(c.state?.waiting?.message);
    if (denied !== undefined) return fail(`${where}: the API refused it: ${denied}`);
    const waiting = c.state?.waiting;
    if (waiting?.reason !== undefined && CANNOT_START.has(waiting.reason))
      return fail(
        `${where}: ${waiting.reason}${waiting.message ? `: ${waiting.message.slice(0, 300)}` : ''}`,
      );
    // A postStart hook that keeps failing kills and restarts the container as a crash would.
    if (waiting?.reason === 'PostStartHookError' && (c.restartCount ?? 0) > kills)
      return fail(`${where}: ${(waiting.message ?? 'PostStartHookError').slice(0, 300)}`);
    if (c.state?.waiting?.reason === 'CrashLoopBackOff' && (c.restartCount ?? 0) > kills) {
      const tail = lastLine(last?.message);
      return fail(
        `${where}: CrashLoopBackOff after ${c.restartCount ?? '?'} restarts, last ${last ? exitOf(last) : 'exit unknown'}${tail ? `: ${tail}` : ''}`,
        tail === undefined,
      );
    }
    if (
      kills === 0 &&
      pod.metadata.deletionTimestamp === undefined &&
      now !== undefined &&
      now.exitCode !== 0
    ) {
      const tail = lastLine(now.message);
      return fail(`${where}: ${exitOf(now)}${tail ? `: ${tail}` : ''}`, tail === undefined);
    }
  }
  return undefined;
}

/** A line saying what went wrong: a typed code, `error`, or a command-line parser's complaint. */
const ERROR_LINE = /GK_ERR_|\berror\b|unknown option|unexpected argument|\binvalid\b/i;

/**
 * The line of a log or termination message that says why: the last one naming an error (a typed
 * GK_ERR_ code, `error`), else the last non-empty one (a usage text printed after the error would
 * otherwise hide it); at most 300 characters.
 */
export function lastLine(text: string | undefined): string | undefined {
  const lines = (text ?? '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  const why = lines.filter((l) => ERROR_LINE.test(l)).at(-1);
  return (why ?? lines.at(-1))?.slice(0, 300);
}

/** The containers of `pod` (init containers first), by name. */
export function containerNames(pod: Pod): string[] {
  const spec = pod.spec as { containers?: { name: string }[]; initContainers?: { name: string }[] };
  return [...(spec.initContainers ?? []), ...(spec.containers ?? [])].map((c) => c.name);
}
