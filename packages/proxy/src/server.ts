// `GrpcProxy`: the L7 gRPC proxy of grpc-kube. An h2c (cleartext HTTP/2) server on node:http2 that
// balances every RPC — not every connection — over the ready pods of a Service, from the same
// EndpointSlice watch (SourceRegistry) and the same policies as the library.
//
// Modes: `sidecar` listens on loopback and takes the target Service from each request's
// `:authority` (`svc.ns:port`); `ingress` sends everything to one configured target, or to the
// first matching route. Limits: max header list size, max concurrent streams per client
// connection, idle connection timeouts, a bound on watched Services. Every failure the proxy decides
// itself is a gRPC status whose message names the Service. drain() is the SIGTERM sequence: stop
// accepting, GOAWAY every client, let RPCs finish within a grace, then
// reset what is left.
//
// TLS: `tls` terminates TLS (ALPN h2) for clients — mutual TLS with a CA file, the client
// certificate's URI SAN (a SPIFFE id) then travels as the `x-grpc-kube-peer-id` header, which route
// rules can match and backends can read (a client cannot send it: the proxy always replaces it);
// `backendTls` originates (mutual) TLS to backends. Both follow their files (packages/grpc-kube/src/tls/files.ts):
// a rotated certificate applies to the next handshake, connections in use carry on.

import diagnostics from 'node:diagnostics_channel';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import type { SourceRegistry } from 'grpc-kube/internal/discovery/registry.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import type { BackendOptions } from './backend.js';
import { GrpcRouteTable } from './grpc-routes.js';
import { instruments } from 'grpc-kube/internal/metrics/instruments.js';
import { ProxyCall, type CallEvents, type CallSettings } from './call.js';
import { GrpcStatus, isGrpcContentType, parseGrpcTimeout, statusName, trailersOnly } from './grpc-wire.js';
import { createPicker, parseProxyPolicy, type ProxyPolicy } from './picker.js';
import { systemRuntime, type PolicyRuntime } from 'grpc-kube/internal/balancer/runtime.js';
import { ServicePool, staticFeed, type EndpointFeed } from './pool.js';
import { ProxyTimings } from './timing.js';
import { TlsFiles, type TlsFilesOptions } from 'grpc-kube/internal/tls/files.js';
import { serviceDnsNames } from 'grpc-kube/internal/tls/names.js';
import {
  compileRoutes,
  parseServiceAuthority,
  parseServiceTarget,
  staticRoute,
  targetName,
  AUTHORITY_HEADER,
  type ProxyRoute,
  type StaticRoutes,
  type ServiceTarget,
} from './target.js';

export const PROXY_CHANNEL_NAME = 'grpc-kube:proxy';

/** The request header carrying the client certificate's URI SAN (mutual TLS); never a client's own. */
export const PEER_ID_HEADER = 'x-grpc-kube-peer-id';
const channel = diagnostics.channel(PROXY_CHANNEL_NAME);

/** Published on 'grpc-kube:proxy' for every retry and every RPC the proxy failed itself. */
export interface ProxyEvent {
  readonly kind: 'retry' | 'fail' | 'route-error';
  readonly service: string;
  readonly backends: readonly string[];
  readonly code?: number;
  readonly detail: string;
}

export type ProxyMode = 'sidecar' | 'ingress';

export interface GrpcProxyOptions {
  mode: ProxyMode;
  /** Listen address; sidecar mode accepts loopback addresses only. Default 127.0.0.1. */
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Endpoint source for Services; required unless every target is in `staticTargets`. */
  registry?: SourceRegistry;
  /** Namespace for `svc:port` authorities and targets. Default 'default'. */
  defaultNamespace?: string;
  /** Ingress: where RPCs that match no route go (`svc.ns:port`). */
  target?: string;
  /** Ingress: first match wins, then `target`. */
  routes?: readonly ProxyRoute[];
  /** Fixed endpoint lists by target name (`svc.ns:port` as written), used instead of the registry. */
  staticTargets?: Readonly<Record<string, readonly { address: string; port: number }[]>>;
  /** Default policy for every Service. Default round_robin. */
  policy?: ProxyPolicy;
  /**
   * Follow GRPCRoute objects (weighted backends, method and header matches), read through the
   * registry's Kubernetes client; `{ namespace }` watches one namespace only. Default off.
   */
  grpcRoutes?: boolean | { namespace?: string };
  /** Policy per Service, keyed `ns/svc`. */
  servicePolicies?: Readonly<Record<string, ProxyPolicy>>;
  /** Attempts per RPC, counting the first (retries only when the request never reached a backend). Default 3. */
  maxAttempts?: number;
  /** Request bytes kept for a replay; beyond this an RPC is not retried. Default 64 KiB. */
  retryBufferBytes?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE offered to clients. Default 16 KiB (grpc-go's default is the same order). */
  maxHeaderListSize?: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS per client connection. Default 1000. */
  maxConcurrentStreams?: number;
  /** Close client connections without streams after this long. Default 5 min. */
  clientIdleMs?: number;
  /**
   * GOAWAY each client connection after this long (±10 % jitter), so clients reconnect and new
   * proxy replicas behind a ClusterIP get their share. Default: never.
   */
  maxConnectionAgeMs?: number;
  /** Close backend sessions without streams after this long. Default 5 min. */
  backendIdleMs?: number;
  /** Backend connect timeout. Default 5 s. */
  connectTimeoutMs?: number;
  /** How long an RPC waits for a Service's first endpoint list. Default 5 s. */
  syncTimeoutMs?: number;
  /** Most Services watched at once (sidecar authorities come from the client). Default 256. */
  maxServices?: number;
  /**
   * Put backend addresses and Service names in the statuses the proxy decides itself (no backend,
   * backend reset, deadline...). Default: on for a sidecar (its caller is the pod's own app), off for
   * an ingress, whose callers are outside and get a generic message; the full detail is always on the
   * 'grpc-kube:proxy' channel.
   */
  debugStatuses?: boolean;
  /** Serve TLS (ALPN h2); with `caFile`, mutual TLS, and the client's URI SAN in PEER_ID_HEADER. */
  tls?: TlsFilesOptions;
  /** TLS to backends, verified against `caFile`; `certFile`/`keyFile` are the proxy's client identity. */
  backendTls?: TlsFilesOptions & {
    caFile: string;
    /** The name backends' certificates must carry (backend.ts); default: pod address or Service DNS name. */
    serverName?: string;
  };
  /** Where TLS file problems are reported (a rotation that is not a valid identity). Default: stderr. */
  onTlsError?: (err: GrpcKubeError) => void;
  /**
   * Where GRPCRoute watch errors (403, 404 without the CRD, an outage) and rejected routes are
   * reported, besides the 'grpc-kube:proxy' channel. Default: nowhere else.
   */
  onRouteError?: (err: GrpcKubeError) => void;
  /** Clock and RNG for the pickers and ejection jitter. */
  runtime?: PolicyRuntime;
}

interface Resolved {
  readonly mode: ProxyMode;
  readonly host: string;
  readonly port: number;
  readonly defaultNamespace: string;
  readonly target: ServiceTarget | undefined;
  readonly routes: StaticRoutes;
  readonly policy: ProxyPolicy;
  readonly servicePolicies: Readonly<Record<string, ProxyPolicy>>;
  readonly maxAttempts: number;
  readonly retryBufferBytes: number;
  readonly maxHeaderListSize: number;
  readonly maxConcurrentStreams: number;
  readonly clientIdleMs: number;
  readonly backendIdleMs: number;
  readonly maxConnectionAgeMs: number | undefined;
  readonly connectTimeoutMs: number;
  readonly syncTimeoutMs: number;
  readonly maxServices: number;
  readonly debugStatuses: boolean;
}

export interface ProxyStats {
  /** Client connections accepted since start. */
  connections: number;
  /** RPCs accepted. */
  rpcs: number;
  /** RPCs in flight. */
  active: number;
  /** Attempts re-sent to another backend because the first never reached one. */
  retries: number;
  /** RPCs the proxy ended with its own status (no backend, deadline, shutdown...). */
  proxyFailures: number;
  /** Final status per code name, backends' and the proxy's. */
  byCode: Record<string, number>;
  /** Where the RPCs' time went inside the proxy (see timing.ts). */
  readonly timings: ProxyTimings;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

function intOption(value: number | undefined, field: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) {
    throw new InvalidOptionError(field, `must be an integer >= ${min}, got ${String(value)}`);
  }
  return value;
}

function resolveOptions(o: GrpcProxyOptions): Resolved {
  if (o.mode !== 'sidecar' && o.mode !== 'ingress') {
    throw new InvalidOptionError('mode', `must be "sidecar" or "ingress", got ${JSON.stringify(o.mode)}`);
  }
  const host = o.host ?? '127.0.0.1';
  if (o.mode === 'sidecar' && !LOOPBACK.test(host)) {
    throw new InvalidOptionError('host', `a sidecar listens on loopback only, got "${host}"`);
  }
  const ns = o.defaultNamespace ?? 'default';
  const target = o.target === undefined ? undefined : parseServiceTarget(o.target, ns, 'target');
  const routes = compileRoutes(o.routes ?? [], ns);
  if (o.mode === 'ingress' && target === undefined && routes.specs.length === 0) {
    throw new InvalidOptionError('target', 'ingress mode needs a target (svc.ns:port) or routes');
  }
  const servicePolicies: Record<string, ProxyPolicy> = {};
  for (const [k, v] of Object.entries(o.servicePolicies ?? {})) {
    servicePolicies[k] = parseProxyPolicy(v, `servicePolicies.${k}`);
  }
  return Object.freeze({
    mode: o.mode,
    host,
    port: intOption(o.port, 'port', 0, 0),
    defaultNamespace: ns,
    target,
    routes,
    policy: parseProxyPolicy(o.policy ?? 'round_robin'),
    servicePolicies: Object.freeze(servicePolicies),
    maxAttempts: intOption(o.maxAttempts, 'maxAttempts', 3, 1),
    retryBufferBytes: intOption(o.retryBufferBytes, 'retryBufferBytes', 64 * 1024, 0),
    maxHeaderListSize: intOption(o.maxHeaderListSize, 'maxHeaderListSize', 16 * 1024, 1024),
    maxConcurrentStreams: intOption(o.maxConcurrentStreams, 'maxConcurrentStreams', 1000, 1),
    clientIdleMs: intOption(o.clientIdleMs, 'clientIdleMs', 300_000, 1),
    backendIdleMs: intOption(o.backendIdleMs, 'backendIdleMs', 300_000, 1),
    maxConnectionAgeMs:
      o.maxConnectionAgeMs === undefined
        ? undefined
        : intOption(o.maxConnectionAgeMs, 'maxConnectionAgeMs', 0, 1),
    connectTimeoutMs: intOption(o.connectTimeoutMs, 'connectTimeoutMs', 5000, 1),
    syncTimeoutMs: intOption(o.syncTimeoutMs, 'syncTimeoutMs', 5000, 1),
    maxServices: intOption(o.maxServices, 'maxServices', 256, 1),
    debugStatuses: o.debugStatuses ?? o.mode === 'sidecar',
  });
}

export class GrpcProxy {
  readonly options: Resolved;
  readonly stats: ProxyStats = {
    connections: 0,
    rpcs: 0,
    active: 0,
    retries: 0,
    proxyFailures: 0,
    byCode: {},
    timings: new ProxyTimings(),
  };
  private server: http2.Http2Server | http2.Http2SecureServer | undefined;
  private readonly tlsOptions: GrpcProxyOptions['tls'];
  private readonly backendTlsOptions: GrpcProxyOptions['backendTls'];
  private readonly onTlsError: (err: GrpcKubeError) => void;
  private readonly tlsFiles: TlsFiles[] = [];
  private readonly peerIds = new WeakMap<http2.Http2Session, string | undefined>();
  private backendContext: { generation: number; context: SecureContext } | undefined;
  private readonly pools = new Map<string, ServicePool>();
  private readonly calls = new Set<ProxyCall>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly registry: SourceRegistry | undefined;
  private readonly staticTargets: Map<string, readonly { address: string; port: number }[]>;
  private readonly runtime: PolicyRuntime;
  private readonly backendOpts: BackendOptions;
  private readonly settings: CallSettings;
  private readonly events: CallEvents;
  private readonly routeTable: GrpcRouteTable | undefined;
  private draining: Promise<void> | undefined;
  private closed = false;
  private bound: AddressInfo | undefined;

  constructor(options: GrpcProxyOptions) {
    this.options = resolveOptions(options);
    this.registry = options.registry;
    this.runtime = options.runtime ?? systemRuntime;
    this.staticTargets = new Map();
    for (const [name, eps] of Object.entries(options.staticTargets ?? {})) {
      const t = parseServiceTarget(name, this.options.defaultNamespace, `staticTargets.${name}`);
      this.staticTargets.set(targetName(t), Object.freeze(eps.map((e) => Object.freeze({ ...e }))));
    }
    const o = this.options;
    const needsRegistry =
      (o.mode === 'sidecar' && this.staticTargets.size === 0) ||
      [o.target, ...o.routes.targets.values()].some(
        (t) => t !== undefined && !this.staticTargets.has(targetName(t)),
      );
    if (needsRegistry && this.registry === undefined) {
      throw new InvalidOptionError('registry', 'is required: some targets are Services, not staticTargets');
    }
    this.tlsOptions = options.tls;
    this.backendTlsOptions = options.backendTls;
    if (this.backendTlsOptions !== undefined && typeof this.backendTlsOptions.caFile !== 'string')
      throw new InvalidOptionError('backendTls.caFile', 'is required: backends are verified against it');
    this.onTlsError =
      options.onTlsError ??
      ((err) => process.stderr.write(`grpc-kube proxy: ${err.code}: ${err.message} (previous files kept)\n`));
    this.backendOpts = Object.freeze({
      ...(this.backendTlsOptions !== undefined
        ? {
            tls: {
              context: () => this.backendSecureContext(),
              ...(this.backendTlsOptions.serverName !== undefined
                ? { serverName: this.backendTlsOptions.serverName }
                : {}),
              onPeerNameError: (e: GrpcKubeError) => this.onTlsError(e),
            },
          }
        : {}),
      idleMs: o.backendIdleMs,
      connectTimeoutMs: o.connectTimeoutMs,
      ejectBaseMs: 250,
      ejectMaxMs: 10_000,
      now: () => this.runtime.now(),
      random: () => this.runtime.random(),
    });
    this.settings = Object.freeze<CallSettings>({
      maxAttempts: o.maxAttempts,
      retryBufferBytes: o.retryBufferBytes,
      syncTimeoutMs: o.syncTimeoutMs,
      finishGraceMs: 1000,
      now: () => Date.now(),
      clientMessage: (code, detail) => this.clientMessage(code, detail),
    });
    this.events = {
      retry: (call, reason) => {
        this.stats.retries++;
        instruments()?.['grpc_kube.proxy.retries'].add(1, { 'grpc_kube.route': call.service });
        if (channel.hasSubscribers) {
          channel.publish({
            kind: 'retry',
            service: call.service,
            backends: call.backends,
            detail: reason,
          } satisfies ProxyEvent);
        }
      },
      done: (call, code, byProxy) => {
        const name = statusName(code);
        this.stats.byCode[name] = (this.stats.byCode[name] ?? 0) + 1;
        const m = instruments();
        if (m !== undefined) {
          const attrs = {
            'grpc_kube.route': call.service,
            'grpc_kube.backend': call.backends.at(-1) ?? 'none',
            'grpc.status': name,
          };
          m['grpc_kube.proxy.requests'].add(1, attrs);
          m['grpc_kube.proxy.request.duration'].record(call.timing.totalMs / 1000, attrs);
        }
        this.stats.timings.record(
          { service: call.service, backends: call.backends, status: name },
          call.timing,
        );
        if (byProxy) {
          this.stats.proxyFailures++;
          if (channel.hasSubscribers) {
            channel.publish({
              kind: 'fail',
              service: call.service,
              backends: call.backends,
              code,
              detail: `${name}: ${call.failure}`,
            } satisfies ProxyEvent);
          }
        }
      },
    };
    if (options.grpcRoutes !== undefined && options.grpcRoutes !== false) {
      if (this.registry === undefined) {
        throw new InvalidOptionError(
          'grpcRoutes',
          'needs a registry (its Kubernetes client reads the GRPCRoutes)',
        );
      }
      const ns = typeof options.grpcRoutes === 'object' ? options.grpcRoutes.namespace : undefined;
      this.routeTable = new GrpcRouteTable(this.registry.kubeClient, {
        namespace: ns,
        random: () => this.runtime.random(),
        onError: (err) => {
          options.onRouteError?.(err);
          if (channel.hasSubscribers) {
            channel.publish({
              kind: 'route-error',
              service: '',
              backends: [],
              detail: err.message,
            } satisfies ProxyEvent);
          }
        },
      });
    }
  }

  /** Start listening; resolves with the bound address. */
  async listen(): Promise<AddressInfo> {
    if (this.closed || this.server !== undefined)
      throw new GrpcKubeError(
        'GK_ERR_DESTROYED',
        'the proxy was closed or is listening; create a new GrpcProxy',
      );
    if (this.backendTlsOptions !== undefined) {
      this.tlsFiles.push(await TlsFiles.load(this.backendTlsOptions, this.onTlsError));
    }
    const server = await this.createServer();
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    this.bound = server.address() as AddressInfo;
    await this.routeTable?.start();
    // Configured targets are watched at once, so the first RPC does not wait for a list.
    for (const t of [this.options.target, ...this.options.routes.targets.values()]) {
      if (t !== undefined) this.poolFor(t);
    }
    return this.bound;
  }

  private async createServer(): Promise<http2.Http2Server | http2.Http2SecureServer> {
    const o = this.options;
    const common = {
      maxHeaderListPairs: 256,
      maxSessionMemory: 32,
      settings: {
        maxHeaderListSize: o.maxHeaderListSize,
        maxConcurrentStreams: o.maxConcurrentStreams,
        enablePush: false,
      },
    };
    let server: http2.Http2Server | http2.Http2SecureServer;
    if (this.tlsOptions === undefined) {
      server = http2.createServer(common);
    } else {
      const files = await TlsFiles.load(this.tlsOptions, this.onTlsError);
      this.tlsFiles.push(files);
      const secure = http2.createSecureServer({
        ...common,
        ...files.secureContextOptions(),
        ALPNProtocols: ['h2'],
        allowHTTP1: false,
        requestCert: files.options.caFile !== undefined,
        rejectUnauthorized: files.mutual,
      });
      // Handshakes after a rotation use the new files; established connections keep theirs.
      files.onChange((ctx) => secure.setSecureContext(ctx));
      // A failed handshake is the client's problem, not the proxy's.
      secure.on('tlsClientError', () => {});
      server = secure;
    }
    server.on('session', (s) => this.onSession(s));
    server.on('stream', (stream, headers) => this.onStream(stream, headers));
    return server;
  }

  /** The backend TLS context of the current files, made once per rotation. */
  private backendSecureContext(): SecureContext {
    const files = this.tlsFiles[0] as TlsFiles;
    if (this.backendContext?.generation !== files.generation) {
      this.backendContext = {
        generation: files.generation,
        context: createSecureContext(files.secureContextOptions()),
      };
    }
    return this.backendContext.context;
  }

  /** `host:port` clients dial. */
  get address(): string {
    if (this.bound === undefined)
      throw new GrpcKubeError('GK_ERR_DESTROYED', 'the proxy is not listening; call listen()');
    const h = this.bound.address.includes(':') ? `[${this.bound.address}]` : this.bound.address;
    return `${h}:${this.bound.port}`;
  }

  /**
   * Start watching a Service (`svc.ns:port`) before its first RPC, and resolve once its first
   * endpoint list (or error) arrived, or after `timeoutMs`. Ingress targets are watched from
   * listen() on; a sidecar can warm the Services it knows it will call.
   */
  async watch(target: string, timeoutMs = this.options.syncTimeoutMs): Promise<void> {
    const t = parseServiceTarget(target, this.options.defaultNamespace, 'target');
    const pool = this.poolFor(t);
    if (typeof pool === 'string') throw new InvalidOptionError('target', pool);
    if (pool.synced) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        cancel();
        resolve();
      }, timeoutMs);
      timer.unref();
      const cancel = pool.onChange(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Route changes applied so far (0 without grpcRoutes). */
  get routeVersion(): number {
    return this.routeTable?.version ?? 0;
  }

  /** Client HTTP/2 connections open now. */
  get clientConnections(): number {
    return this.sessions.size;
  }

  /** Services with a pool, keyed `ns/svc:port`, and their backend counts. */
  services(): Record<string, { backends: number; ready: number }> {
    const out: Record<string, { backends: number; ready: number }> = {};
    for (const [k, p] of this.pools) out[k] = p.counts;
    return out;
  }

  /** The pool of a Service (tests look at backends and sessions). */
  pool(name: string): ServicePool | undefined {
    return this.pools.get(name);
  }

  /**
   * Graceful shutdown: stop accepting, GOAWAY every client, let RPCs in flight finish within
   * `graceMs`, then end the rest with UNAVAILABLE and close everything. Idempotent.
   */
  drain(graceMs = 10_000): Promise<void> {
    if (this.draining !== undefined) return this.draining;
    this.draining = this.runDrain(graceMs);
    return this.draining;
  }

  /** Immediate shutdown (drain with no grace). */
  close(): Promise<void> {
    return this.drain(0);
  }

  private async runDrain(graceMs: number): Promise<void> {
    const server = this.server;
    const serverClosed = new Promise<void>((resolve) =>
      server === undefined || !server.listening ? resolve() : server.close(() => resolve()),
    );
    for (const s of this.sessions) this.goaway(s);
    const deadline = Date.now() + graceMs;
    while (this.calls.size > 0 && Date.now() < deadline) {
      // Not unref'd: a drain in progress must keep the process alive (bounded by the grace).
      await new Promise((r) => setTimeout(r, Math.min(20, Math.max(1, deadline - Date.now()))));
    }
    for (const call of [...this.calls]) call.abort(GrpcStatus.UNAVAILABLE, 'the proxy is shutting down');
    // Give the statuses a moment to be written before sockets go.
    if (this.sessions.size > 0) await new Promise((r) => setImmediate(r));
    for (const s of this.sessions) s.destroy();
    this.closed = true;
    for (const p of this.pools.values()) {
      // Every call has ended by now: nothing on the backend sessions is worth waiting for.
      p.destroyBackends();
      p.close();
    }
    this.pools.clear();
    await this.routeTable?.stop();
    for (const f of this.tlsFiles) f.close();
    await serverClosed;
  }

  /**
   * Graceful GOAWAY: node's session.close() sends GOAWAY with the last stream id it processed and
   * closes once those streams end. (gRPC's two-step GOAWAY — first 2^31-1, then the real id after a
   * ping — lost an RPC now and then against grpc-js clients in our tests: a stream sent between the
   * two was neither served nor refused; the one-step close loses none.)
   */
  private goaway(s: http2.ServerHttp2Session): void {
    if (s.closed || s.destroyed) return;
    s.close();
  }

  private onSession(s: http2.ServerHttp2Session): void {
    this.sessions.add(s);
    this.stats.connections++;
    s.on('error', () => {});
    s.on('close', () => this.sessions.delete(s));
    if (this.draining !== undefined) {
      this.goaway(s);
      return;
    }
    // Idle = no frames at all for clientIdleMs; a session with streams in flight is never idle-closed.
    s.setTimeout(this.options.clientIdleMs, () => {
      if (this.activeStreams(s) === 0) s.close();
    });
    const age = this.options.maxConnectionAgeMs;
    if (age !== undefined) {
      const timer = setTimeout(() => this.goaway(s), age * (0.9 + 0.2 * this.runtime.random()));
      timer.unref();
      s.once('close', () => clearTimeout(timer));
    }
  }

  private activeStreams(s: http2.ServerHttp2Session): number {
    const st = s.state as { streamsOpen?: number } | undefined;
    return st?.streamsOpen ?? 0;
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => {});
    if (this.closed) {
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    if (headers[':method'] !== 'POST' || !isGrpcContentType(headers['content-type'])) {
      // Not gRPC: the spec's answer is HTTP 415, with a status for clients that read one anyway.
      stream.respond(
        { ...trailersOnly(GrpcStatus.INTERNAL, 'the proxy forwards gRPC only'), ':status': 415 },
        {
          endStream: true,
        },
      );
      return;
    }
    // The peer's identity comes from its certificate only, never from what it sent.
    delete headers[PEER_ID_HEADER];
    const peer = this.peerId(stream.session);
    if (peer !== undefined) headers[PEER_ID_HEADER] = peer;
    const authority = headers[':authority'] ?? '';
    const path = headers[':path'] ?? '';
    let target = this.route(authority, path, headers);
    if (typeof target === 'string') {
      this.reject(stream, GrpcStatus.UNAVAILABLE, target);
      return;
    }
    if (this.routeTable !== undefined) target = this.routeTable.resolve(target, path, header(headers));
    const pool = this.poolFor(target);
    if (typeof pool === 'string') {
      this.reject(stream, GrpcStatus.UNAVAILABLE, pool);
      return;
    }
    const timeoutMs = parseGrpcTimeout(headers['grpc-timeout']);
    const call = new ProxyCall(
      stream,
      headers,
      pool,
      this.settings,
      this.events,
      timeoutMs === undefined ? undefined : Date.now() + timeoutMs,
    );
    this.stats.rpcs++;
    this.stats.active++;
    this.calls.add(call);
    stream.once('close', () => {
      this.calls.delete(call);
      this.stats.active--;
    });
    call.start();
  }

  /** The first URI SAN of the session's client certificate (mutual TLS), computed once per session. */
  private peerId(session: http2.Http2Session | undefined): string | undefined {
    if (session === undefined || this.tlsOptions === undefined) return undefined;
    if (this.peerIds.has(session)) return this.peerIds.get(session);
    const socket = session.socket as TLSSocket;
    let id: string | undefined;
    if (typeof socket.getPeerCertificate === 'function' && socket.authorized) {
      const san = socket.getPeerCertificate().subjectaltname ?? '';
      id = /(?:^|,\s*)URI:([^,]+)/.exec(san)?.[1];
    }
    this.peerIds.set(session, id);
    return id;
  }

  private reject(stream: http2.ServerHttp2Stream, code: number, detail: string): void {
    this.stats.rpcs++;
    this.stats.proxyFailures++;
    const name = statusName(code);
    this.stats.byCode[name] = (this.stats.byCode[name] ?? 0) + 1;
    instruments()?.['grpc_kube.proxy.requests'].add(1, {
      'grpc_kube.route': 'none',
      'grpc_kube.backend': 'none',
      'grpc.status': name,
    });
    if (channel.hasSubscribers) {
      channel.publish({
        kind: 'fail',
        service: '',
        backends: [],
        code,
        detail: `${name}: ${detail}`,
      } satisfies ProxyEvent);
    }
    stream.respond(trailersOnly(code, this.clientMessage(code, detail)), { endStream: true });
  }

  /** What a client reads in a status the proxy decided: the detail, or a generic line (ingress). */
  private clientMessage(code: number, detail: string): string {
    if (this.options.debugStatuses) return detail;
    return GENERIC_MESSAGE[code] ?? 'the proxy could not complete the call';
  }

  private route(authority: string, path: string, headers: http2.IncomingHttpHeaders): ServiceTarget | string {
    const o = this.options;
    // Explicit routes first (rare for a sidecar), then the authority names the Service.
    const h = header(headers);
    const routed = staticRoute(o.routes, path, (name) =>
      name === AUTHORITY_HEADER ? authority.toLowerCase() : h(name),
    );
    if (routed !== undefined) return routed;
    if (o.mode === 'sidecar') return parseServiceAuthority(authority, o.defaultNamespace);
    return o.target ?? `no route for authority "${authority}" and path "${path}"`;
  }

  private poolFor(t: ServiceTarget): ServicePool | string {
    const name = targetName(t);
    let pool = this.pools.get(name);
    if (pool !== undefined) return pool;
    if (this.pools.size >= this.options.maxServices) this.evictIdlePool();
    if (this.pools.size >= this.options.maxServices) {
      return `the proxy already watches ${this.options.maxServices} Services (maxServices); cannot add ${name}`;
    }
    const fixed = this.staticTargets.get(name);
    let feed: EndpointFeed;
    if (fixed !== undefined) {
      feed = staticFeed(fixed);
    } else if (this.registry !== undefined) {
      const registry = this.registry;
      feed = (l) => registry.subscribe(t.namespace, t.service, t.port, l);
    } else {
      return `Service ${name} is not among the proxy's static targets`;
    }
    const policy = this.options.servicePolicies[`${t.namespace}/${t.service}`] ?? this.options.policy;
    // Backends of this Service may present a certificate for its DNS names (not the bare short name).
    const backendOpts = {
      ...this.backendOpts,
      serviceNames: serviceDnsNames(t.service, t.namespace).slice(1),
    };
    pool = new ServicePool(name, feed, createPicker(policy, this.runtime), backendOpts, this.runtime);
    this.pools.set(name, pool);
    return pool;
  }

  /** Drop the least recently used Service without RPCs in flight. */
  private evictIdlePool(): void {
    const busy = new Set<string>();
    for (const c of this.calls) busy.add(c.service);
    let victim: ServicePool | undefined;
    for (const p of this.pools.values()) {
      if (busy.has(p.name)) continue;
      if (victim === undefined || p.lastUsedMs < victim.lastUsedMs) victim = p;
    }
    if (victim !== undefined) {
      this.pools.delete(victim.name);
      victim.close();
    }
  }
}

const GENERIC_MESSAGE: Readonly<Record<number, string>> = Object.freeze({
  [GrpcStatus.UNAVAILABLE]: 'no backend is available for this call; retry later',
  [GrpcStatus.DEADLINE_EXCEEDED]: 'deadline exceeded in the proxy',
  [GrpcStatus.INTERNAL]: 'the backend failed the call',
  [GrpcStatus.CANCELLED]: 'the backend cancelled the call',
  [GrpcStatus.RESOURCE_EXHAUSTED]: 'the backend is overloaded',
});

function header(headers: http2.IncomingHttpHeaders): (name: string) => string | undefined {
  return (name) => {
    const v = headers[name];
    return Array.isArray(v) ? v.join(', ') : v;
  };
}
