// The kubelet's probe and hook handlers, as Kubernetes runs them: grpc (grpc.health.v1 Check, with
// `service`; SERVING = success), tcpSocket (a connection opens), httpGet (a status 200..399, over
// HTTP or HTTPS — like the kubelet, without verifying the server's certificate), exec (the
// command in the container's environment exits 0). Each attempt is bounded by its timeout. ProbeLoop
// is one probe's schedule and thresholds (initialDelaySeconds, periodSeconds, successThreshold,
// failureThreshold) reporting transitions only.

import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { Container, Handler, LifecycleHandler, Probe } from './controllers/kinds.js';
import { resolvePort } from './container-spec.js';
import type { ExecResult } from './pod-runtime.js';

const CHECK_PATH = '/grpc.health.v1.Health/Check';

/** Where a handler runs: the pod's address, its container, and a way to exec in it. */
export interface HandlerTarget {
  readonly ip: string;
  readonly container: Container;
  /** Runs argv in the container's environment; undefined when the runtime cannot exec. */
  readonly exec: ((argv: readonly string[], timeoutMs: number) => Promise<ExecResult>) | undefined;
  /** A grpc-js client per address, kept across probes (a channel per probe would reconnect each time). */
  grpcClient(address: string): grpc.Client;
}

/** Which handler a probe or hook names: the first present, as the API server validates exactly one. */
export function handlerKind(h: Handler | LifecycleHandler): string | undefined {
  for (const k of ['exec', 'httpGet', 'tcpSocket', 'grpc', 'sleep'] as const) {
    if ((h as Record<string, unknown>)[k] !== undefined) return k;
  }
  return undefined;
}

function grpcCheck(t: HandlerTarget, port: number, service: string, timeoutMs: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const serialize = healthService.Check?.requestSerialize as (v: object) => Buffer;
    const deserialize = healthService.Check?.responseDeserialize as (b: Buffer) => { status?: string };
    t.grpcClient(`${t.ip}:${port}`).makeUnaryRequest<{ service: string }, { status?: string }>(
      CHECK_PATH,
      serialize,
      deserialize,
      { service },
      new grpc.Metadata(),
      { deadline: Date.now() + timeoutMs },
      (err, res) => resolve(!err && res?.status === 'SERVING'),
    );
  });
}

function tcpCheck(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    timer.unref();
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

function httpCheck(
  host: string,
  port: number,
  h: NonNullable<Handler['httpGet']>,
  timeoutMs: number,
): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const headers: Record<string, string> = { 'User-Agent': 'kube-probe/lab', Accept: '*/*' };
    for (const x of h.httpHeaders ?? []) headers[x.name] = x.value;
    const opts = {
      host,
      port,
      path: h.path ?? '/',
      method: 'GET',
      headers,
      agent: false,
      timeout: timeoutMs,
    };
    // HTTPS as the kubelet probes it: encrypted, the certificate not verified (a pod's own, for its names).
    const req = (h.scheme === 'HTTPS' ? https : http).request(
      h.scheme === 'HTTPS' ? { ...opts, rejectUnauthorized: false } : opts,
      (res) => {
        res.resume();
        const code = res.statusCode ?? 0;
        clearTimeout(timer);
        resolve(code >= 200 && code < 400);
      },
    );
    // A whole-request bound: `timeout` above only bounds idle time.
    const timer = setTimeout(() => req.destroy(), timeoutMs);
    timer.unref();
    req.once('timeout', () => req.destroy());
    req.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
    req.end();
  });
}

/**
 * Runs one probe or hook handler against the target within timeoutMs: true on success. A handler the
 * lab does not run (none given, an unknown scheme, an exec without a runtime that can) throws
 * GK_ERR_LAB_POD_SPEC.
 */
export async function runHandler(
  h: Handler | LifecycleHandler,
  t: HandlerTarget,
  timeoutMs: number,
): Promise<boolean> {
  const c = t.container;
  if (h.exec !== undefined) {
    if (t.exec === undefined) {
      throw new GrpcKubeError(
        'GK_ERR_LAB_POD_SPEC',
        `container "${c.name}": an exec handler needs a runtime that can exec (ImageRuntime, NodeScriptRuntime)`,
      );
    }
    const r = await t.exec(h.exec.command ?? [], timeoutMs);
    return r.exitCode === 0;
  }
  if (h.httpGet !== undefined) {
    const scheme = h.httpGet.scheme ?? 'HTTP';
    if (scheme !== 'HTTP' && scheme !== 'HTTPS') {
      throw new GrpcKubeError(
        'GK_ERR_LAB_POD_SPEC',
        `container "${c.name}": httpGet scheme "${String(scheme)}" is not HTTP or HTTPS`,
      );
    }
    return httpCheck(h.httpGet.host ?? t.ip, resolvePort(c, h.httpGet.port), h.httpGet, timeoutMs);
  }
  if (h.tcpSocket !== undefined) {
    return tcpCheck(h.tcpSocket.host ?? t.ip, resolvePort(c, h.tcpSocket.port), timeoutMs);
  }
  const g = (h as Handler).grpc;
  if (g !== undefined) return grpcCheck(t, g.port, g.service ?? '', timeoutMs);
  throw new GrpcKubeError(
    'GK_ERR_LAB_POD_SPEC',
    `container "${c.name}": a probe or hook with no handler; give exec, httpGet, tcpSocket or grpc`,
  );
}

export interface ProbeSettings {
  readonly initialDelayMs: number;
  readonly periodMs: number;
  readonly timeoutMs: number;
  readonly successThreshold: number;
  readonly failureThreshold: number;
}

/** A probe's settings with Kubernetes's defaults; `periodOverrideMs` replaces periodSeconds. */
export function probeSettings(p: Probe, periodOverrideMs?: number): ProbeSettings {
  return {
    initialDelayMs: (p.initialDelaySeconds ?? 0) * 1000,
    periodMs: periodOverrideMs ?? (p.periodSeconds ?? 10) * 1000,
    timeoutMs: (p.timeoutSeconds ?? 1) * 1000,
    successThreshold: p.successThreshold ?? 1,
    failureThreshold: p.failureThreshold ?? 3,
  };
}

/**
 * One probe's schedule: the first attempt after initialDelay, then one per period (never two at once),
 * counting consecutive results. `onResult` hears the result state when a threshold is crossed: true
 * after successThreshold successes in a row, false after failureThreshold failures in a row (once per
 * run of failures, then again after a success in between). A handler that throws counts as a failure
 * and goes to onError.
 */
export class ProbeLoop {
  private timer: NodeJS.Timeout | undefined;
  private successes = 0;
  private failures = 0;
  private state: boolean | undefined;
  private stopped = false;

  constructor(
    private readonly settings: ProbeSettings,
    private readonly attempt: (timeoutMs: number) => Promise<boolean>,
    private readonly onResult: (ok: boolean) => void,
    private readonly onError: (err: unknown) => void,
  ) {}

  start(): void {
    this.schedule(this.settings.initialDelayMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.run(), ms);
    this.timer.unref();
  }

  private async run(): Promise<void> {
    this.timer = undefined;
    if (this.stopped) return;
    let ok: boolean;
    try {
      ok = await this.attempt(this.settings.timeoutMs);
    } catch (err) {
      ok = false;
      this.onError(err);
    }
    if (this.stopped) return;
    if (ok) {
      this.failures = 0;
      this.successes++;
      if (this.state !== true && this.successes >= this.settings.successThreshold) {
        this.state = true;
        this.onResult(true);
      }
    } else {
      this.successes = 0;
      this.failures++;
      if (this.state !== false && this.failures >= this.settings.failureThreshold) {
        this.state = false;
        this.onResult(false);
      }
    }
    this.schedule(this.settings.periodMs);
  }
}
