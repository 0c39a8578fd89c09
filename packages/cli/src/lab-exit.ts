// The lab command's process must end when the lab has: it holds the machine's test lock, and a
// stray handle (a pod process, a server, a watch's retry timer, a channel) would keep it alive with
// nothing left to do. Every part of a lab run closes what it opened; this is the bound behind that:
// once the command has returned and cleaned up, the process gets `graceMs` to end by itself, then
// it says what was still open, ends the child processes it still holds, and exits with the
// command's code.

import type { ChildProcess } from 'node:child_process';

/** How long the process may take to end by itself after the lab has returned. */
export const LAB_EXIT_GRACE_MS = 10_000;

export interface ExitGuardOptions {
  readonly graceMs?: number;
  /** Where the warning goes. Default stderr. */
  readonly write?: (line: string) => void;
  /** How the process ends. Default process.exit (with process.exitCode). */
  readonly exit?: () => void;
}

/** What keeps the event loop alive, e.g. `2 × ChildProcess (pid 41 node pod-main.js), TCPServerWrap`. */
export function openHandles(): string {
  const counts = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) counts.set(r, (counts.get(r) ?? 0) + 1);
  const children = liveChildren().map((c) => `pid ${c.pid} ${c.spawnargs.slice(0, 3).join(' ')}`);
  const parts = [...counts].map(([kind, n]) => {
    const what = `${n > 1 ? `${n} × ` : ''}${kind}`;
    return kind === 'ProcessWrap' && children.length > 0 ? `${what} (${children.join('; ')})` : what;
  });
  return parts.length > 0 ? parts.join(', ') : 'nothing';
}

/** Child processes this process still holds (spawned and not yet exited). */
function liveChildren(): ChildProcess[] {
  const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? [];
  return handles.filter(
    (h): h is ChildProcess =>
      typeof h === 'object' &&
      h !== null &&
      typeof (h as ChildProcess).pid === 'number' &&
      Array.isArray((h as ChildProcess).spawnargs) &&
      (h as ChildProcess).exitCode === null &&
      (h as ChildProcess).signalCode === null,
  );
}

/**
 * Arms the bound: an unref'd timer, so a process that ends by itself is not held by it. When it
 * fires, the process is stuck: it warns naming every open handle, SIGKILLs the child processes it
 * still holds (a pod would otherwise outlive the lab) and exits.
 */
export function exitWhenStuck(opts: ExitGuardOptions = {}): NodeJS.Timeout {
  const graceMs = opts.graceMs ?? LAB_EXIT_GRACE_MS;
  const write = opts.write ?? ((l: string) => void process.stderr.write(l + '\n'));
  const exit = opts.exit ?? (() => process.exit());
  const timer = setTimeout(() => {
    write(
      `grpc-kube lab: warning: the process was still held ${graceMs} ms after the lab finished, by ${openHandles()}; exiting (a leak in the lab: please report it)`,
    );
    for (const c of liveChildren()) c.kill('SIGKILL');
    exit();
  }, graceMs);
  timer.unref();
  return timer;
}
