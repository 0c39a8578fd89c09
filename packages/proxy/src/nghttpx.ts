// `NghttpxDataPlane`: grpc-kube's discovery driving a native HTTP/2 proxy. nghttpx (Debian's
// nghttp2-proxy, C) carries the RPCs and balances them per request over h2 backends; grpc-kube
// watches the Service's EndpointSlices (the same SourceRegistry as the library and the Node proxy)
// and, on every change, replaces nghttpx's backend list through its API
// (`POST /api/v1beta1/backendconfig` on a loopback-only API frontend). Only Ready endpoints are
// listed, so a terminating pod gets no new RPCs once its endpoint flips; RPCs in flight on it finish
// on their connections, as nghttpx keeps the old backend group alive until they do.
//
// This is the native data path for Services whose callers need more requests per core than
// node:http2 can forward: per core, nghttpx forwards roughly ten times what the Node proxy does
// (`npm run bench -- proxy`). What it gives up against `GrpcProxy`: one target (ingress), round
// robin only, no GRPCRoute weights or matches, and no proxy-side replay of refused requests.
//
// With no Ready endpoint the list points at a local "no endpoints" responder, so callers get
// UNAVAILABLE with a message naming the Service, not a bare HTTP 502.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import http2 from 'node:http2';
import type net from 'node:net';
import type { SourceRegistry } from 'grpc-kube/internal/discovery/registry.js';
import { readyEndpoints, type EndpointView } from 'grpc-kube/internal/discovery/endpoint.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { freePorts, waitForListen } from 'grpc-kube/internal/net/ports.js';
import { GrpcStatus, trailersOnly } from './grpc-wire.js';
import { staticFeed, type EndpointFeed } from './pool.js';
import { parseServiceTarget, targetName, type ServiceTarget } from './target.js';

export const DEFAULT_NGHTTPX = '/usr/sbin/nghttpx';

export interface NghttpxDataPlaneOptions {
  /** The one Service RPCs go to, `svc.ns:port` (or `svc:port` in defaultNamespace). */
  target: string;
  defaultNamespace?: string;
  /** Endpoint source; required unless `staticTargets` has the target. */
  registry?: SourceRegistry;
  staticTargets?: Readonly<Record<string, readonly { address: string; port: number }[]>>;
  /** Listen address. Default 127.0.0.1. */
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  /** nghttpx worker threads. Default 1. */
  workers?: number;
  /** The nghttpx binary. Default /usr/sbin/nghttpx. */
  bin?: string;
  /** How long start() waits for the first endpoint list. Default 5 s. */
  syncTimeoutMs?: number;
  /** A backend update nghttpx refused, or (without onExit) nghttpx exiting on its own. */
  onError?: (err: GrpcKubeError) => void;
  /**
   * nghttpx exited on its own after start() (killed, crashed): nothing carries RPCs any more. The
   * error is GK_ERR_PROXY_DATA_PLANE with the exit status and nghttpx's last words. Default: onError.
   */
  onExit?: (err: GrpcKubeError) => void;
}

interface Backend {
  readonly address: string;
  readonly port: number;
}

const hostPort = (b: Backend): string =>
  (b.address.includes(':') ? `[${b.address}]` : b.address) + `,${b.port}`;

/** nghttpx backend lines for a list of h2c backends (the API takes the config-file syntax). */
export function backendConfig(backends: readonly Backend[]): string {
  return backends.map((b) => `backend=${hostPort(b)};;proto=h2`).join('\n') + '\n';
}

export class NghttpxDataPlane {
  private readonly target: ServiceTarget;
  private readonly feed: EndpointFeed;
  private readonly host: string;
  private readonly bin: string;
  private readonly workers: number;
  private readonly syncTimeoutMs: number;
  private readonly onError: (err: GrpcKubeError) => void;
  private readonly onExit: (err: GrpcKubeError) => void;
  private portOption: number;
  private child: ChildProcess | undefined;
  private apiPort = 0;
  private api: http2.ClientHttp2Session | undefined;
  private sorry: http2.Http2Server | undefined;
  private sorryBackend: Backend | undefined;
  private unsubscribe: (() => void) | undefined;
  private wanted: readonly Backend[] | undefined;
  private pushing: Promise<void> | undefined;
  private dirty = false;
  private stopping = false;
  private stderr = '';
  /** Backend lists nghttpx accepted so far. */
  version = 0;
  /** The Ready endpoints in the list nghttpx last accepted (empty: the "no endpoints" responder). */
  backends: readonly string[] = [];

  constructor(options: NghttpxDataPlaneOptions) {
    const ns = options.defaultNamespace ?? 'default';
    this.target = parseServiceTarget(options.target, ns, 'target');
    this.host = options.host ?? '127.0.0.1';
    this.portOption = options.port ?? 0;
    this.bin = options.bin ?? DEFAULT_NGHTTPX;
    this.workers = options.workers ?? 1;
    if (!Number.isInteger(this.workers) || this.workers < 1) {
      throw new InvalidOptionError('workers', `must be an integer >= 1, got ${String(options.workers)}`);
    }
    this.syncTimeoutMs = options.syncTimeoutMs ?? 5000;
    this.onError = options.onError ?? (() => {});
    this.onExit = options.onExit ?? this.onError;
    const name = targetName(this.target);
    const fixed = Object.entries(options.staticTargets ?? {}).find(
      ([k]) => targetName(parseServiceTarget(k, ns, `staticTargets.${k}`)) === name,
    )?.[1];
    if (fixed !== undefined) {
      this.feed = staticFeed(fixed);
    } else if (options.registry !== undefined) {
      const registry = options.registry;
      const t = this.target;
      this.feed = (l) => registry.subscribe(t.namespace, t.service, t.port, l);
    } else {
      throw new InvalidOptionError('registry', `is required: ${name} is a Service, not a static target`);
    }
  }

  /** `host:port` clients dial. */
  get address(): string {
    if (this.child === undefined)
      throw new GrpcKubeError('GK_ERR_DESTROYED', 'the data plane is not running; call start()');
    return `${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.portOption}`;
  }

  /**
   * Start nghttpx with the Service's Ready endpoints (waiting up to syncTimeoutMs for the first
   * list), then follow every change. Throws GK_ERR_PROXY_DATA_PLANE when nghttpx is missing or
   * does not come up.
   */
  async start(): Promise<void> {
    if (!existsSync(this.bin)) {
      throw new GrpcKubeError(
        'GK_ERR_PROXY_DATA_PLANE',
        `${this.bin} not found: install nghttpx (apt-get install -y nghttp2-proxy) or use the Node data plane`,
      );
    }
    await this.startSorry();
    const first = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.syncTimeoutMs);
      timer.unref();
      const sub = this.feed({
        onEndpoints: (view) => {
          this.wanted = readyBackends(view);
          clearTimeout(timer);
          resolve();
          if (this.child !== undefined) this.schedulePush();
        },
        onError: (err) => this.onError(err),
      });
      this.unsubscribe = () => sub.unsubscribe();
    });
    await first;
    if (this.portOption === 0) this.portOption = (await freePorts(1, this.host))[0] as number;
    this.apiPort = (await freePorts(1))[0] as number;
    const initial = this.listFor(this.wanted ?? []);
    const args = [
      '--conf=/dev/null',
      `--frontend=${this.host},${this.portOption};no-tls`,
      `--frontend=127.0.0.1,${this.apiPort};api;no-tls`,
      ...initial.map((b) => `--backend=${hostPort(b)};;proto=h2`),
      `--workers=${this.workers}`,
      '--log-level=WARN',
      '--errorlog-file=/dev/stderr',
      '--accesslog-file=/dev/null',
      '--no-ocsp',
      '--backend-connect-timeout=2s',
      '--backend-keep-alive-timeout=300s',
      '--frontend-keep-alive-timeout=300s',
    ];
    const child = spawn(this.bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    child.stderr?.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    // Should this process end without stop(), nghttpx must not outlive it (its workers follow it).
    const killOnExit = (): void => void child.kill('SIGKILL');
    process.once('exit', killOnExit);
    child.once('exit', (code, signal) => {
      process.off('exit', killOnExit);
      if (!this.stopping) {
        this.onExit(
          new GrpcKubeError(
            'GK_ERR_PROXY_DATA_PLANE',
            `nghttpx exited (${signal ?? `code ${code}`}): ${this.stderr.trim().slice(-500)}`,
          ),
        );
      }
    });
    const alive = (): boolean => child.exitCode === null && child.signalCode === null;
    try {
      await waitForListen(this.host, this.portOption, alive);
      await waitForListen('127.0.0.1', this.apiPort, alive);
    } catch (err) {
      await this.stop(0);
      throw new GrpcKubeError(
        'GK_ERR_PROXY_DATA_PLANE',
        `nghttpx: ${(err as Error).message}; it said: ${this.stderr.trim().slice(-500) || '(nothing)'}`,
      );
    }
    this.version = 1;
    this.backends = (this.wanted ?? []).map((b) => `${b.address}:${b.port}`);
    // A change that arrived while nghttpx was starting.
    this.schedulePush();
  }

  /**
   * Graceful stop: SIGQUIT makes nghttpx stop accepting and finish the requests in flight; after
   * `graceMs` it is killed. Idempotent.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    const child = this.child;
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill(graceMs > 0 ? 'SIGQUIT' : 'SIGKILL');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    }
    this.api?.destroy();
    this.api = undefined;
    await new Promise<void>((r) => (this.sorry === undefined ? r() : this.sorry.close(() => r())));
    this.sorry = undefined;
  }

  private listFor(ready: readonly Backend[]): readonly Backend[] {
    return ready.length > 0 ? ready : [this.sorryBackend as Backend];
  }

  private schedulePush(): void {
    if (this.child === undefined || this.stopping) return;
    if (this.pushing !== undefined) {
      this.dirty = true;
      return;
    }
    this.pushing = (async () => {
      try {
        do {
          this.dirty = false;
          const ready = this.wanted ?? [];
          await this.post(backendConfig(this.listFor(ready)));
          this.version++;
          this.backends = ready.map((b) => `${b.address}:${b.port}`);
        } while (this.dirty && !this.stopping);
      } catch (err) {
        this.onError(
          err instanceof GrpcKubeError
            ? err
            : new GrpcKubeError(
                'GK_ERR_PROXY_DATA_PLANE',
                `backend update failed: ${(err as Error).message}`,
              ),
        );
      } finally {
        this.pushing = undefined;
      }
    })();
  }

  private async post(body: string): Promise<void> {
    if (this.api === undefined || this.api.closed || this.api.destroyed) {
      this.api = http2.connect(`http://127.0.0.1:${this.apiPort}`);
      this.api.on('error', () => {});
      this.api.unref();
    }
    const req = this.api.request({ ':method': 'POST', ':path': '/api/v1beta1/backendconfig' });
    req.end(body);
    const [status, text] = await new Promise<[number, string]>((resolve, reject) => {
      let status = 0;
      let text = '';
      req.on('response', (h) => (status = Number(h[':status'])));
      req.on('data', (d: Buffer) => (text += d.toString()));
      req.on('end', () => resolve([status, text]));
      req.on('error', reject);
    });
    if (status !== 200) {
      throw new GrpcKubeError(
        'GK_ERR_PROXY_DATA_PLANE',
        `nghttpx refused a backend update (HTTP ${status}): ${text}`,
      );
    }
  }

  /** The "no Ready endpoint" backend: every RPC gets UNAVAILABLE naming the Service. */
  private async startSorry(): Promise<void> {
    const message = `Service ${targetName(this.target)} has no ready endpoint`;
    const server = http2.createServer();
    server.on('stream', (stream) => {
      stream.on('error', () => {});
      stream.respond(trailersOnly(GrpcStatus.UNAVAILABLE, message), { endStream: true });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    server.unref();
    this.sorry = server;
    this.sorryBackend = { address: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
  }
}

function readyBackends(view: EndpointView): Backend[] {
  return readyEndpoints(view.endpoints()).map((e) => ({ address: e.address, port: e.port }));
}
