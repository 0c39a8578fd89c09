// Child-process plumbing for the real control plane: start a binary with its output in a log file,
// wait for a health endpoint while watching for an early exit, stop with SIGTERM then SIGKILL, and never
// leave a process behind — not on stop(), not on exit or SIGINT/SIGTERM of this process, and not even
// after a SIGKILL of this process: every start records its children in a run file, and the next start
// reaps the records whose owner is gone.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

export interface ManagedProcess {
  readonly name: string;
  readonly exe: string;
  readonly pid: number;
  readonly logFile: string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  hasExited(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. Idempotent. */
  stop(graceMs: number): Promise<void>;
  /** Synchronous SIGKILL for exit handlers. */
  killNow(): void;
}

export function startProcess(
  name: string,
  exe: string,
  args: readonly string[],
  logFile: string,
): ManagedProcess {
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(exe, args, { stdio: ['ignore', fd, fd] });
  } finally {
    closeSync(fd); // the child holds its own copy
  }
  let exitedFlag = false;
  // Listen before anything can throw: a failed spawn (ENOENT, EACCES) reports through 'error', which
  // would crash the process if nobody listened.
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      exitedFlag = true;
      resolve(code ?? signal ?? 'unknown');
    });
    child.once('error', () => {
      exitedFlag = true;
      resolve('spawn-error');
    });
  });
  const pid = child.pid;
  if (pid === undefined) {
    throw new GrpcKubeError('GK_ERR_LAB', `could not start ${name} (${exe}): not executable or not found`);
  }
  let stopping: Promise<void> | undefined;
  return {
    name,
    exe,
    pid,
    logFile,
    exited,
    hasExited: () => exitedFlag,
    killNow() {
      if (!exitedFlag) child.kill('SIGKILL');
    },
    stop(graceMs: number): Promise<void> {
      stopping ??= (async () => {
        if (exitedFlag) return;
        child.kill('SIGTERM');
        const ac = new AbortController();
        const timedOut = delay(graceMs, true, { signal: ac.signal }).catch(() => false);
        const done = await Promise.race([exited.then(() => false), timedOut]);
        ac.abort();
        if (done && !exitedFlag) {
          child.kill('SIGKILL');
          await exited;
        }
      })();
      return stopping;
    },
  };
}

/** The last `lines` lines of a log file, for error messages; never throws. */
export async function tailFile(path: string, lines = 30, maxBytes = 64 * 1024): Promise<string> {
  try {
    const size = (await stat(path)).size;
    const start = Math.max(0, size - maxBytes);
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.alloc(size - start);
      await fh.read(buf, 0, buf.length, start);
      return buf
        .toString('utf8')
        .split('\n')
        .slice(-lines - 1)
        .join('\n')
        .trimEnd();
    } finally {
      await fh.close();
    }
  } catch {
    return '(no log)';
  }
}

export { freePorts } from 'grpc-kube/internal/net/ports.js';

export interface ProbeTarget {
  readonly url: string;
  /** TLS material for https probes; `insecure` accepts a self-signed serving cert (loopback only). */
  readonly tls?: { ca?: string; cert?: string; key?: string; insecure?: boolean };
}

/** One GET; resolves with the status code and body, or rejects on a network error or timeout. */
export function httpGet(target: ProbeTarget, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(target.url);
    const onResponse = (res: http.IncomingMessage): void => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    };
    const req =
      url.protocol === 'https:'
        ? https.get(
            url,
            {
              ca: target.tls?.ca,
              cert: target.tls?.cert,
              key: target.tls?.key,
              rejectUnauthorized: target.tls?.insecure !== true,
              timeout: timeoutMs,
              agent: false,
            },
            onResponse,
          )
        : http.get(url, { timeout: timeoutMs, agent: false }, onResponse);
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/**
 * Polls `target` until it answers 200, with jittered backoff (50 ms doubling to 1 s). Fails fast with
 * the log tail if the process exits first, and with the last probe result at the deadline.
 */
export async function waitHealthy(
  proc: ManagedProcess,
  target: ProbeTarget,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let backoffMs = 50;
  let last = 'no answer yet';
  for (;;) {
    if (proc.hasExited()) {
      const code = await proc.exited;
      throw new GrpcKubeError(
        'GK_ERR_LAB',
        `${proc.name} exited (${code}) before ${target.url} was healthy; last lines of ` +
          `${proc.logFile}:\n${await tailFile(proc.logFile)}`,
      );
    }
    const left = deadline - Date.now();
    if (left <= 0) break;
    try {
      const res = await httpGet(target, Math.min(2000, left));
      if (res.status === 200) return;
      last = `HTTP ${res.status}: ${res.body.slice(0, 500)}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    const wait = Math.min(backoffMs * (0.5 + Math.random()), Math.max(0, deadline - Date.now()));
    await Promise.race([delay(wait), proc.exited]);
    backoffMs = Math.min(1000, backoffMs * 2);
  }
  throw new GrpcKubeError(
    'GK_ERR_LAB',
    `${proc.name} was not healthy at ${target.url} within ${timeoutMs} ms (last probe: ${last}); ` +
      `last lines of ${proc.logFile}:\n${await tailFile(proc.logFile)}`,
  );
}

// ---- crash safety -------------------------------------------------------------------------------

interface RunRecord {
  readonly ownerPid: number;
  readonly tmpDir: string;
  readonly children: { pid: number; exe: string }[];
}

/** A run file naming this process's children and temp dir, rewritten as children start. */
export class RunRecordFile {
  readonly path: string;
  private readonly record: RunRecord;

  constructor(runDir: string, tmpDir: string) {
    this.path = join(runDir, `control-plane-${process.pid}-${Date.now().toString(36)}.json`);
    this.record = { ownerPid: process.pid, tmpDir, children: [] };
    this.write();
  }

  addChild(pid: number, exe: string): void {
    this.record.children.push({ pid, exe });
    this.write();
  }

  remove(): void {
    rmSync(this.path, { force: true });
  }

  private write(): void {
    writeFileSync(this.path, JSON.stringify(this.record));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Kills the children and removes the temp dirs of runs whose owner process is gone (a crashed or
 * SIGKILLed test). A child is killed only if /proc says it still runs the recorded binary, so a
 * recycled pid is never hit. Returns how many processes were killed.
 */
export function reapLeftovers(runDir: string): number {
  let killed = 0;
  let names: string[];
  try {
    names = readdirSync(runDir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.startsWith('control-plane-') || !name.endsWith('.json')) continue;
    const path = join(runDir, name);
    let rec: RunRecord;
    try {
      rec = JSON.parse(readFileSync(path, 'utf8')) as RunRecord;
    } catch {
      rmSync(path, { force: true });
      continue;
    }
    if (rec.ownerPid !== process.pid && alive(rec.ownerPid)) continue;
    if (rec.ownerPid === process.pid) continue; // our own live run
    for (const child of rec.children ?? []) {
      let exe: string;
      try {
        exe = readlinkSync(`/proc/${child.pid}/exe`);
      } catch {
        continue; // gone already
      }
      if (exe !== child.exe) continue;
      try {
        process.kill(child.pid, 'SIGKILL');
        killed++;
      } catch {
        // raced with its exit
      }
    }
    if (typeof rec.tmpDir === 'string' && rec.tmpDir.includes('grpc-kube-cp-')) {
      rmSync(rec.tmpDir, { recursive: true, force: true });
    }
    rmSync(path, { force: true });
  }
  return killed;
}

// One set of process hooks for every live control plane in this process, installed while any exists.
const exitCleanups = new Set<() => void>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function runExitCleanups(): void {
  for (const fn of [...exitCleanups]) {
    try {
      fn();
    } catch {
      // best effort: the process is going away
    }
  }
  exitCleanups.clear();
}

function onSignal(signal: NodeJS.Signals): void {
  runExitCleanups();
  uninstallHooks();
  // Our listener suppressed the default action; restore it unless someone else handles the signal.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function installHooks(): void {
  process.on('exit', runExitCleanups);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstallHooks(): void {
  process.off('exit', runExitCleanups);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/** Registers a synchronous cleanup run on exit or a fatal signal; the returned function unregisters. */
export function onProcessExit(fn: () => void): () => void {
  if (exitCleanups.size === 0) installHooks();
  exitCleanups.add(fn);
  return () => {
    if (exitCleanups.delete(fn) && exitCleanups.size === 0) uninstallHooks();
  };
}
