// A small Kubernetes API client for the two calls discovery needs: a paginated list and a streaming
// watch, over HTTP/2 when the server speaks it (ALPN over TLS, as client-go does: every watch is a
// stream, sessions are added when one reaches the server's stream limit, PING finds half-open
// connections) and over HTTP/1.1 otherwise (plain http:// servers such as `kubectl proxy`, TLS servers
// without h2), where each watch holds a socket and the number of watches is capped explicitly
// (`maxHttp1Watches`; over it → GK_ERR_KUBE_WATCH_LIMIT, counted in stats, never a silent queue).
// Authentication and TLS come from a KubeConfigLike (ours, kubeconfig.ts, or client-node's), applied to
// every request so a rotated credential is picked up by the next one. kubeconfig `proxy-url` (http://) is honoured with an
// HTTP CONNECT tunnel. Bodies and lines are bounded, lists and watches abortable; answers become typed
// KubeApiErrors and malformed events are rejected before anyone sees them.

import { setMaxListeners } from 'node:events';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { readFileSync } from 'node:fs';
import type { Duplex, Readable } from 'node:stream';
import { GrpcKubeError, InvalidOptionError, KubeApiError, type ErrorCode } from '../errors.js';
import { kubeConfigFromString, loadDefaultKubeConfig } from './config.js';
import { applyRequestOptions, type KubeConfigLike, type RequestAuthOptions } from './kubeconfig.js';
import { LineSplitter, LineTooLongError } from './framing.js';
import type { KubeList, KubeObject, KubeStatus, WatchEvent } from './types.js';

const IN_CLUSTER_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

export interface ListOptions {
  labelSelector?: string;
  /** Page size; the client follows `continue` tokens until the list is whole. */
  limit?: number;
  /** Abort the list (its time-out, or the caller stopping). */
  signal?: AbortSignal;
}

export interface WatchOptions {
  labelSelector?: string;
  resourceVersion: string;
  allowWatchBookmarks?: boolean;
  /** Server-side timeout; the stream ends cleanly after it and the caller re-watches. */
  timeoutSeconds?: number;
  /** No byte for this long (not even a bookmark) → the stream is treated as dead. */
  idleTimeoutMs?: number;
  /** Aborting ends the watch (done resolves). */
  signal?: AbortSignal;
  /** Called once the server has accepted the watch (status 200), before any event. */
  onOpen?: () => void;
}

export interface WatchHandle {
  /** Resolves when the stream ends: cleanly (server timeout), by abort(), or rejects on an error. */
  readonly done: Promise<void>;
  abort(): void;
}

/** Resource identification used to build paths and error messages. */
export interface ResourcePath {
  group: string;
  version: string;
  resource: string;
  namespace?: string | undefined;
  /** One object (get), not the collection. */
  name?: string | undefined;
  /** A subresource of the object (`status`). */
  subresource?: string | undefined;
}

/** A request with a body (only status writes use one). */
interface Write {
  readonly method: 'PUT';
  readonly body: string;
}

export interface KubeClientOptions {
  /** 'auto': HTTP/2 when a TLS server offers it by ALPN, else HTTP/1.1. */
  protocol?: 'auto' | 'h2' | 'http/1.1';
  /** Largest watch line (one event) accepted. Default 16 MiB. */
  maxLineBytes?: number;
  /** Largest list page body accepted. Default 64 MiB. */
  maxBodyBytes?: number;
  /** HTTP/1.1 only: watches open at once (each holds a socket). Default 500. */
  maxHttp1Watches?: number;
  /** HTTP/2: PING every session this often; no answer within `pingTimeoutMs` → the session is dropped. */
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** TCP + TLS connect (and CONNECT tunnel) time-out. Default 10 s. */
  connectTimeoutMs?: number;
}

export interface KubeClientStats {
  protocol: 'h2' | 'http/1.1' | 'unknown';
  requests: number;
  sessions: number;
  activeWatches: number;
  watchLimitRejections: number;
  pingTimeouts: number;
}

/** What one request gives back: the status and a body stream. */
interface Exchange {
  status: number;
  body: Readable;
  cancel(): void;
}

interface Credentials {
  headers: Record<string, string>;
  tls: tls.ConnectionOptions;
}

interface H2Session {
  session: http2.ClientHttp2Session;
  /** Streams open (or reserved); the session keeps the process alive only while > 0. */
  active: number;
  ping: NodeJS.Timeout;
  /** The server's SETTINGS (its stream limit) arrived. */
  settled: boolean;
  /** Resolves with this entry once settled; rejects if the session dies first. */
  ready: Promise<H2Session>;
}

const DEFAULTS = {
  maxLineBytes: 16 * 1024 * 1024,
  maxBodyBytes: 64 * 1024 * 1024,
  maxHttp1Watches: 500,
  pingIntervalMs: 30_000,
  pingTimeoutMs: 15_000,
  connectTimeoutMs: 10_000,
};

export class KubeClient {
  readonly kubeConfig: KubeConfigLike;
  readonly server: string;
  /** Namespace of the current context (or of the pod, in cluster); 'default' when none is set. */
  readonly defaultNamespace: string;
  readonly stats: KubeClientStats = {
    protocol: 'unknown',
    requests: 0,
    sessions: 0,
    activeWatches: 0,
    watchLimitRejections: 0,
    pingTimeouts: 0,
  };
  private readonly url: URL;
  private readonly proxy: URL | undefined;
  private readonly opts: Required<KubeClientOptions>;
  private readonly agent: http.Agent;
  /**
   * Aborted by close(). Every request in flight follows it (one abort listener each, removed when the
   * request ends), so hundreds of watches on one client are hundreds of listeners by design: no
   * MaxListenersExceededWarning for them.
   */
  private readonly closing = unboundedAbortController();
  private protocol: Promise<'h2' | 'http/1.1'> | undefined;
  private readonly sessions = new Set<H2Session>();
  private opening: Promise<H2Session> | undefined;
  private http1Watches = 0;
  /** How the list pool connects (set per request: credentials may have rotated). */
  private connectFn: () => Promise<net.Socket> = () => Promise.reject(destroyed());

  constructor(kubeConfig: KubeConfigLike, options: KubeClientOptions = {}) {
    const cluster = kubeConfig.getCurrentCluster();
    if (cluster === null || !cluster.server) {
      throw new GrpcKubeError(
        'GK_ERR_KUBE_CONFIG',
        'the Kubernetes configuration has no current cluster: run in a pod with a ServiceAccount token, ' +
          'set KUBECONFIG, or pass a KubeConfig to setup()',
      );
    }
    this.kubeConfig = kubeConfig;
    this.server = cluster.server.replace(/\/+$/, '');
    try {
      this.url = new URL(this.server);
    } catch {
      throw new GrpcKubeError('GK_ERR_KUBE_CONFIG', `the cluster server "${cluster.server}" is not a URL`);
    }
    if (this.url.protocol !== 'https:' && this.url.protocol !== 'http:') {
      throw new GrpcKubeError(
        'GK_ERR_KUBE_CONFIG',
        `the cluster server "${cluster.server}" must be an https:// or http:// URL`,
      );
    }
    this.proxy = parseProxyUrl(cluster.proxyUrl);
    this.opts = { ...DEFAULTS, protocol: 'auto', ...definedOnly(options) };
    for (const k of Object.keys(DEFAULTS) as Array<keyof typeof DEFAULTS>) {
      const v = this.opts[k];
      if (!Number.isFinite(v) || v <= 0)
        throw new InvalidOptionError(`kubeClient.${k}`, `must be > 0, got ${v}`);
    }
    const ctx = kubeConfig.getContextObject(kubeConfig.getCurrentContext());
    this.defaultNamespace = ctx?.namespace ?? readInClusterNamespace() ?? 'default';
    // Lists share keep-alive sockets; each HTTP/1.1 watch holds one, bounded by maxHttp1Watches, so
    // the agent itself must never queue (a queued watch would look open and stay silent forever).
    this.agent = new ConnectAgent(() => this.connectFn(), { keepAlive: true, maxSockets: Infinity });
    if (this.opts.protocol === 'h2' && this.url.protocol === 'http:') {
      throw new InvalidOptionError('kubeClient.protocol', 'h2 needs an https:// server');
    }
  }

  /** In cluster when a ServiceAccount token is mounted, else KUBECONFIG / ~/.kube/config. */
  static fromDefault(options?: KubeClientOptions): KubeClient {
    return new KubeClient(loadDefaultKubeConfig(), options);
  }

  static fromKubeConfigString(yaml: string, options?: KubeClientOptions): KubeClient {
    return new KubeClient(kubeConfigFromString(yaml), options);
  }

  /** List every object (following continue tokens). */
  async list<T extends KubeObject>(rp: ResourcePath, opts: ListOptions = {}): Promise<KubeList<T>> {
    const items: T[] = [];
    let cont: string | undefined;
    let first: KubeList<T> | undefined;
    do {
      const q = new URLSearchParams();
      if (opts.labelSelector) q.set('labelSelector', opts.labelSelector);
      if (opts.limit !== undefined) q.set('limit', String(opts.limit));
      if (cont) q.set('continue', cont);
      const page = (await this.requestJson(rp, 'list', q, opts.signal)) as KubeList<T>;
      if (page === null || typeof page !== 'object' || !Array.isArray(page.items)) {
        throw protocolError(rp, 'the list answer has no items array');
      }
      for (const it of page.items) {
        const why = objectProblem(it);
        if (why !== undefined) throw protocolError(rp, `a listed object ${why}`);
      }
      first ??= page;
      items.push(...page.items);
      const c = page.metadata?.continue;
      cont = typeof c === 'string' && c !== '' ? c : undefined;
    } while (cont);
    const rv = first.metadata?.resourceVersion;
    return {
      ...(first as KubeList<T>),
      metadata: { resourceVersion: typeof rv === 'string' ? rv : undefined },
      items,
    };
  }

  /** Read one object (`get`): the answer is checked as a list item is. */
  async get<T extends KubeObject>(
    rp: ResourcePath,
    name: string,
    opts: { signal?: AbortSignal } = {},
  ): Promise<T> {
    const one = { ...rp, name };
    const o = (await this.requestJson(one, 'get', new URLSearchParams(), opts.signal)) as T;
    const why = objectProblem(o);
    if (why !== undefined) throw protocolError(one, `the object ${why}`);
    return o;
  }

  /**
   * Replace one object's status (PUT …/NAME/status, the status subresource): only status changes,
   * and the object's metadata.resourceVersion turns a concurrent writer's change into a 409
   * (GK_ERR_KUBE_CONFLICT) instead of a lost update.
   */
  async replaceStatus<T extends KubeObject>(
    rp: ResourcePath,
    obj: T,
    opts: { signal?: AbortSignal } = {},
  ): Promise<T> {
    const one = { ...rp, name: obj.metadata.name, subresource: 'status' };
    const write: Write = { method: 'PUT', body: JSON.stringify(obj) };
    const o = (await this.requestJson(one, 'update', new URLSearchParams(), opts.signal, write)) as T;
    const why = objectProblem(o);
    if (why !== undefined) throw protocolError(one, `the object ${why}`);
    return o;
  }

  /**
   * Open a watch stream. Events are validated and delivered in order; an ERROR event ends the stream
   * and rejects `done` with a KubeApiError carrying the Status's code (410 → reason 'Expired'); a
   * malformed line, a line over `maxLineBytes`, a stream cut mid-line or an idle stream reject it
   * with a typed error. Nothing is thrown out of a stream handler: an `onEvent` that throws rejects
   * `done` too.
   */
  watch<T extends KubeObject>(
    rp: ResourcePath,
    opts: WatchOptions,
    onEvent: (event: WatchEvent<T>) => void,
  ): WatchHandle {
    const q = new URLSearchParams({ watch: '1', resourceVersion: opts.resourceVersion });
    if (opts.labelSelector) q.set('labelSelector', opts.labelSelector);
    if (opts.allowWatchBookmarks !== false) q.set('allowWatchBookmarks', 'true');
    if (opts.timeoutSeconds !== undefined) q.set('timeoutSeconds', String(opts.timeoutSeconds));
    const ac = new AbortController();
    const signal = opts.signal === undefined ? ac.signal : AbortSignal.any([ac.signal, opts.signal]);
    const done = this.runWatch(rp, q, signal, opts, onEvent);
    return { done, abort: () => ac.abort() };
  }

  /** Drop every connection, end every list and watch. Idempotent; no socket outlives it. */
  close(): void {
    if (this.closing.signal.aborted) return;
    this.closing.abort();
    for (const s of this.sessions) {
      clearInterval(s.ping);
      s.session.destroy();
    }
    this.sessions.clear();
    this.agent.destroy();
  }

  private async runWatch<T extends KubeObject>(
    rp: ResourcePath,
    q: URLSearchParams,
    signal: AbortSignal,
    opts: WatchOptions,
    onEvent: (event: WatchEvent<T>) => void,
  ): Promise<void> {
    if (signal.aborted) return;
    let ex: Exchange;
    // A server that accepts the watch and never answers its headers is as dead as a silent stream.
    // A healthy server answers a watch's headers at once (before any event), so this bound is short.
    const headersMs = Math.min(opts.idleTimeoutMs ?? Infinity, this.opts.connectTimeoutMs);
    const headers = new AbortController();
    const timer = setTimeout(
      () => headers.abort(new DOMException(`no watch headers in ${headersMs} ms`, 'TimeoutError')),
      headersMs,
    );
    timer.unref();
    try {
      ex = await this.send(rp, q, AbortSignal.any([signal, headers.signal]), true);
    } catch (err) {
      if (signal.aborted) return;
      throw err;
    } finally {
      clearTimeout(timer);
    }
    try {
      if (ex.status >= 300) {
        const body = await readBody(ex.body, 64 * 1024, signal).catch(() => '');
        throw errorFromResponse(rp, 'watch', ex.status, body);
      }
      opts.onOpen?.();
      await new Promise<void>((resolve, reject) => {
        const lines = new LineSplitter(this.opts.maxLineBytes);
        let settled = false;
        let idle: NodeJS.Timeout | undefined;
        const finish = (err?: unknown): void => {
          if (settled) return;
          settled = true;
          if (idle !== undefined) clearTimeout(idle);
          signal.removeEventListener('abort', onAbort);
          ex.cancel();
          if (err === undefined || signal.aborted) resolve();
          else reject(err instanceof GrpcKubeError ? err : unreachable(rp, err));
        };
        const onAbort = (): void => finish();
        signal.addEventListener('abort', onAbort, { once: true });
        const idleMs = opts.idleTimeoutMs;
        const arm = (): void => {
          if (idleMs === undefined) return;
          if (idle !== undefined) idle.refresh();
          else {
            idle = setTimeout(
              () => finish(unreachable(rp, new Error(`no data on the watch for ${idleMs} ms`))),
              idleMs,
            );
            idle.unref();
          }
        };
        arm();
        const onLine = (line: Buffer): void => {
          if (settled) return;
          const ev = parseWatchLine<T>(rp, line);
          if (ev === undefined) return;
          if (ev.type === 'ERROR') {
            const st = ev.object as KubeStatus;
            finish(errorFromStatus(rp, 'watch', typeof st.code === 'number' ? st.code : 500, st));
            return;
          }
          onEvent(ev);
        };
        ex.body.on('data', (chunk: Buffer) => {
          if (settled) return;
          arm();
          try {
            lines.push(chunk, onLine);
          } catch (err) {
            finish(
              err instanceof LineTooLongError
                ? tooLarge(rp, `a watch line exceeded ${err.limitBytes} bytes`)
                : err,
            );
          }
        });
        ex.body.on('end', () => {
          if (lines.bufferedBytes > 0) finish(protocolError(rp, 'the watch stream ended mid-event'));
          else finish();
        });
        ex.body.on('error', (err) => finish(err));
        ex.body.on('close', () => finish(unreachable(rp, new Error('the watch stream closed'))));
      });
    } finally {
      ex.cancel();
    }
  }

  private async requestJson(
    rp: ResourcePath,
    verb: string,
    q: URLSearchParams,
    callerSignal: AbortSignal | undefined,
    write?: Write,
  ): Promise<unknown> {
    const signal = callerSignal ?? new AbortController().signal;
    const ex = await this.send(rp, q, signal, false, write);
    let body: string;
    try {
      body = await readBody(ex.body, this.opts.maxBodyBytes, signal);
    } catch (err) {
      if (err instanceof BodyTooLargeError)
        throw tooLarge(rp, `the ${verb} answer exceeded ${this.opts.maxBodyBytes} bytes`);
      throw aborted(rp, verb, signal) ?? unreachable(rp, err);
    } finally {
      ex.cancel();
    }
    if (ex.status >= 300) throw errorFromResponse(rp, verb, ex.status, body);
    try {
      return JSON.parse(body);
    } catch {
      throw protocolError(rp, `the ${verb} answer is not JSON`);
    }
  }

  /** One GET: the status line answered, the body still to read. Rejects on abort or close. */
  private async send(
    rp: ResourcePath,
    q: URLSearchParams,
    signal: AbortSignal,
    watch: boolean,
    write?: Write,
  ): Promise<Exchange> {
    if (this.closing.signal.aborted) throw destroyed();
    const all = AbortSignal.any([signal, this.closing.signal]);
    const path = this.url.pathname.replace(/\/+$/, '') + resourceUrlPath(rp) + '?' + q.toString();
    try {
      // Setting up a connection (credentials, ALPN, an HTTP/2 session's SETTINGS) is shared and bounded
      // by connectTimeoutMs; a caller that aborts meanwhile leaves at once instead of waiting it out.
      const creds = await abortable(this.credentials(), all);
      this.stats.requests++;
      const protocol = await abortable(this.negotiated(creds), all);
      return protocol === 'h2'
        ? await this.sendH2(path, creds, all, watch, write)
        : await this.sendH1(rp, path, creds, all, watch, write);
    } catch (err) {
      if (all.aborted) throw aborted(rp, watch ? 'watch' : 'list', all) ?? destroyed();
      if (err instanceof GrpcKubeError) throw err;
      throw aborted(rp, watch ? 'watch' : 'list', all) ?? unreachable(rp, err);
    }
  }

  private async credentials(): Promise<Credentials> {
    const o: RequestAuthOptions = { headers: {} };
    try {
      // Applied per request: token files and exec credentials may have rotated since the last one.
      await applyRequestOptions(this.kubeConfig, o);
    } catch (err) {
      if (err instanceof GrpcKubeError) throw err;
      throw new GrpcKubeError(
        'GK_ERR_KUBE_CONFIG',
        `could not apply Kubernetes credentials: ${String(err)}`,
        {
          cause: err,
        },
      );
    }
    const user = this.kubeConfig.getCurrentUser();
    const headers: Record<string, string> = { accept: 'application/json', ...lowerKeys(o.headers ?? {}) };
    if (user?.username) {
      headers.authorization = `Basic ${Buffer.from(`${user.username}:${user.password ?? ''}`).toString('base64')}`;
    }
    const t: tls.ConnectionOptions = {};
    if (o.ca !== undefined) t.ca = o.ca;
    if (o.cert !== undefined) t.cert = o.cert;
    if (o.key !== undefined) t.key = o.key;
    if (o.rejectUnauthorized !== undefined) t.rejectUnauthorized = o.rejectUnauthorized;
    t.servername = o.servername ?? (net.isIP(this.hostname) ? undefined : this.hostname);
    return { headers, tls: t };
  }

  private get hostname(): string {
    return this.url.hostname.replace(/^\[|\]$/g, '');
  }

  private get port(): number {
    return Number(this.url.port || (this.url.protocol === 'https:' ? 443 : 80));
  }

  /** The protocol, decided once per client: ALPN on the first TLS connection (its socket is kept). */
  private negotiated(creds: Credentials): Promise<'h2' | 'http/1.1'> {
    if (this.url.protocol === 'http:' || this.opts.protocol === 'http/1.1') {
      this.stats.protocol = 'http/1.1';
      return Promise.resolve('http/1.1');
    }
    if (this.opts.protocol === 'h2') {
      this.stats.protocol = 'h2';
      return Promise.resolve('h2');
    }
    this.protocol ??= (async () => {
      const socket = await this.connectTls(creds, ['h2', 'http/1.1']);
      const p = socket.alpnProtocol === 'h2' ? 'h2' : 'http/1.1';
      this.stats.protocol = p;
      if (p === 'h2' && !this.closing.signal.aborted) this.adoptSession(socket);
      else socket.destroy();
      return p;
    })();
    // A failed probe (server down) is retried by the next request.
    this.protocol.catch(() => (this.protocol = undefined));
    return this.protocol;
  }

  /** TCP (through the CONNECT proxy if any), then TLS with these ALPN protocols. */
  private async connectTls(creds: Credentials, alpn: string[]): Promise<tls.TLSSocket> {
    const raw = await this.connectRaw();
    return await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ ...creds.tls, host: this.hostname, socket: raw, ALPNProtocols: alpn });
      const timer = setTimeout(
        () => s.destroy(new Error('TLS handshake timed out')),
        this.opts.connectTimeoutMs,
      );
      timer.unref();
      const onClose = (): void => {
        s.destroy();
      };
      this.closing.signal.addEventListener('abort', onClose, { once: true });
      s.once('secureConnect', () => {
        clearTimeout(timer);
        this.closing.signal.removeEventListener('abort', onClose);
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        this.closing.signal.removeEventListener('abort', onClose);
        reject(err);
      });
    });
  }

  private connectRaw(): Promise<net.Socket> {
    if (this.closing.signal.aborted) return Promise.reject(destroyed());
    const target = { host: this.hostname, port: this.port };
    if (this.proxy !== undefined)
      return connectTunnel(this.proxy, target, this.opts.connectTimeoutMs, this.closing.signal);
    return new Promise((resolve, reject) => {
      const s = net.connect(target);
      s.setTimeout(this.opts.connectTimeoutMs, () => s.destroy(new Error('connect timed out')));
      s.once('connect', () => {
        s.setTimeout(0);
        if (this.closing.signal.aborted) {
          s.destroy();
          reject(destroyed());
        } else resolve(s);
      });
      s.once('error', reject);
    });
  }

  private adoptSession(socket: tls.TLSSocket): H2Session {
    const session = http2.connect(this.url.origin, { createConnection: () => socket });
    let settle!: (e: H2Session) => void;
    let fail!: (err: Error) => void;
    const entry: H2Session = {
      session,
      active: 0,
      ping: setInterval(() => this.ping(entry), this.opts.pingIntervalMs),
      settled: false,
      ready: new Promise<H2Session>((resolve, reject) => {
        settle = resolve;
        fail = reject;
      }),
    };
    entry.ready.catch(() => {});
    entry.ping.unref();
    session.unref();
    this.sessions.add(entry);
    this.stats.sessions = this.sessions.size;
    session.once('remoteSettings', () => {
      entry.settled = true;
      settle(entry);
    });
    const timer = setTimeout(
      () => session.destroy(new Error('no HTTP/2 SETTINGS from the server')),
      this.opts.connectTimeoutMs,
    );
    timer.unref();
    session.once('remoteSettings', () => clearTimeout(timer));
    const drop = (): void => {
      clearTimeout(timer);
      clearInterval(entry.ping);
      fail(new Error('the HTTP/2 session closed'));
      if (this.sessions.delete(entry)) this.stats.sessions = this.sessions.size;
    };
    session.on('close', drop);
    session.on('goaway', drop);
    session.on('error', () => {
      drop();
      session.destroy();
    });
    return entry;
  }

  private ping(entry: H2Session): void {
    if (entry.session.destroyed) return;
    const timer = setTimeout(() => {
      this.stats.pingTimeouts++;
      entry.session.destroy(new Error(`no HTTP/2 PING answer within ${this.opts.pingTimeoutMs} ms`));
    }, this.opts.pingTimeoutMs);
    timer.unref();
    try {
      entry.session.ping((err) => {
        clearTimeout(timer);
        if (err) entry.session.destroy(err);
      });
    } catch {
      clearTimeout(timer);
    }
  }

  /**
   * A session with a free stream, reserved for the caller (active already counted); a new session
   * when every one is at the server's stream limit. A new session is used only once the server's
   * SETTINGS arrived, so its limit is known before streams are opened on it (nghttp2 would queue
   * streams over the limit silently: a watch that looks open and never starts).
   */
  private async session(creds: Credentials, signal: AbortSignal): Promise<H2Session> {
    for (;;) {
      if (this.closing.signal.aborted) throw destroyed();
      signal.throwIfAborted();
      for (const s of this.sessions) {
        const max = Math.min(s.session.remoteSettings.maxConcurrentStreams ?? 100, 1000);
        if (s.settled && !s.session.closed && !s.session.destroyed && s.active < max) {
          if (s.active++ === 0) s.session.ref();
          return s;
        }
      }
      if (this.opening === undefined) {
        const opening = this.connectTls(creds, ['h2']).then((sock) => {
          if (sock.alpnProtocol !== 'h2') {
            sock.destroy();
            throw new Error('the server stopped offering HTTP/2');
          }
          return this.adoptSession(sock).ready;
        });
        this.opening = opening;
        opening.then(
          () => (this.opening = undefined),
          () => (this.opening = undefined),
        );
      }
      await abortable(this.opening, signal);
    }
  }

  private async sendH2(
    path: string,
    creds: Credentials,
    signal: AbortSignal,
    watch: boolean,
    write?: Write,
  ): Promise<Exchange> {
    const entry = await this.session(creds, signal);
    if (watch) this.stats.activeWatches++;
    const stream = entry.session.request(
      {
        ':method': write?.method ?? 'GET',
        ':path': path,
        ...creds.headers,
        ...(write !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      { signal },
    );
    if (write !== undefined) stream.end(write.body);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      if (--entry.active === 0) entry.session.unref();
      if (watch) this.stats.activeWatches--;
    };
    stream.once('close', release);
    return await new Promise<Exchange>((resolve, reject) => {
      const timer = watch
        ? undefined
        : setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), this.opts.connectTimeoutMs * 6);
      timer?.unref();
      stream.once('response', (headers) => {
        if (timer !== undefined) clearTimeout(timer);
        resolve({
          status: Number(headers[':status'] ?? 0),
          body: stream,
          cancel: () => {
            if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
            release();
          },
        });
      });
      stream.once('error', (err) => {
        if (timer !== undefined) clearTimeout(timer);
        release();
        reject(err);
      });
      stream.once('close', () => reject(new Error('the stream closed before an answer')));
    });
  }

  private async sendH1(
    rp: ResourcePath,
    path: string,
    creds: Credentials,
    signal: AbortSignal,
    watch: boolean,
    write?: Write,
  ): Promise<Exchange> {
    if (watch && this.http1Watches >= this.opts.maxHttp1Watches) {
      this.stats.watchLimitRejections++;
      throw new KubeApiError(
        'GK_ERR_KUBE_WATCH_LIMIT',
        `${this.opts.maxHttp1Watches} watches are already open over HTTP/1.1 (one socket each); the watch of ` +
          `${describe(rp)} waits. Serve the API over TLS with HTTP/2, or raise maxHttp1Watches`,
        0,
        undefined,
      );
    }
    const https = this.url.protocol === 'https:';
    const reqOpts: http.RequestOptions = {
      method: write?.method ?? 'GET',
      host: this.hostname,
      port: this.port,
      path,
      headers:
        write !== undefined
          ? {
              ...creds.headers,
              'content-type': 'application/json',
              'content-length': String(Buffer.byteLength(write.body)),
            }
          : creds.headers,
      agent: this.agent,
      signal,
    };
    // Every socket (plain, TLS, tunnelled) is made by connect() so proxy and TLS work the same way.
    const connect = (): Promise<net.Socket> =>
      https ? this.connectTls(creds, ['http/1.1']) : this.connectRaw();
    if (watch) {
      this.http1Watches++;
      this.stats.activeWatches++;
      // A watch holds its socket for minutes: never take it from (or give it back to) the list pool.
      reqOpts.agent = new ConnectAgent(connect, { keepAlive: false });
    } else {
      this.connectFn = connect;
    }
    let released = !watch;
    const release = (): void => {
      if (released) return;
      released = true;
      this.http1Watches--;
      this.stats.activeWatches--;
    };
    return await new Promise<Exchange>((resolve, reject) => {
      const req = http.request(reqOpts);
      req.once('close', release);
      req.once('response', (res) => {
        resolve({
          status: res.statusCode ?? 0,
          body: res,
          cancel: () => {
            release();
            if (!res.complete) req.destroy();
          },
        });
      });
      req.once('error', (err) => {
        release();
        reject(err);
      });
      req.end(write?.body);
    });
  }
}

export function resourceUrlPath(rp: ResourcePath): string {
  const base = rp.group === '' ? `/api/${rp.version}` : `/apis/${rp.group}/${rp.version}`;
  const ns = rp.namespace !== undefined ? `/namespaces/${encodeURIComponent(rp.namespace)}` : '';
  const name = rp.name !== undefined ? `/${encodeURIComponent(rp.name)}` : '';
  const sub = rp.name !== undefined && rp.subresource !== undefined ? `/${rp.subresource}` : '';
  return `${base}${ns}/${rp.resource}${name}${sub}`;
}

/** Why a decoded object cannot be used (undefined when it can): the checks every watch event passes. */
export function objectProblem(o: unknown): string | undefined {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return 'is not an object';
  const m = (o as { metadata?: unknown }).metadata;
  if (m === null || typeof m !== 'object' || Array.isArray(m)) return 'has no metadata';
  const meta = m as { name?: unknown; resourceVersion?: unknown };
  if (meta.name !== undefined && typeof meta.name !== 'string') return 'has a non-string metadata.name';
  if (meta.resourceVersion !== undefined && typeof meta.resourceVersion !== 'string')
    return 'has a non-string metadata.resourceVersion';
  return undefined;
}

const EVENT_TYPES = new Set(['ADDED', 'MODIFIED', 'DELETED', 'BOOKMARK', 'ERROR']);

/** One watch line → a validated event (undefined for a blank line). Throws a typed error. */
function parseWatchLine<T extends KubeObject>(rp: ResourcePath, line: Buffer): WatchEvent<T> | undefined {
  const text = line.toString('utf8').trim();
  if (text === '') return undefined;
  let ev: unknown;
  try {
    ev = JSON.parse(text);
  } catch {
    throw protocolError(rp, `a watch line is not JSON: ${text.slice(0, 120)}`);
  }
  if (ev === null || typeof ev !== 'object' || Array.isArray(ev))
    throw protocolError(rp, `a watch line is not an event object: ${text.slice(0, 120)}`);
  const { type, object } = ev as { type?: unknown; object?: unknown };
  if (typeof type !== 'string' || !EVENT_TYPES.has(type))
    throw protocolError(rp, `a watch event has an unknown type: ${text.slice(0, 120)}`);
  if (type === 'ERROR') {
    if (object === null || typeof object !== 'object')
      throw protocolError(rp, 'a watch ERROR event carries no Status object');
    return ev as WatchEvent<T>;
  }
  const why = objectProblem(object);
  if (why !== undefined) throw protocolError(rp, `a ${type} watch event's object ${why}`);
  const meta = (object as KubeObject).metadata;
  if (type === 'BOOKMARK' ? !meta.resourceVersion : !meta.name)
    throw protocolError(
      rp,
      `a ${type} watch event has no metadata.${type === 'BOOKMARK' ? 'resourceVersion' : 'name'}`,
    );
  return ev as WatchEvent<T>;
}

function readInClusterNamespace(): string | undefined {
  try {
    return readFileSync(IN_CLUSTER_NAMESPACE_FILE, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

class BodyTooLargeError extends Error {}

/** An agent whose sockets come from an async connect (TLS with our ALPN, a CONNECT tunnel). */
class ConnectAgent extends http.Agent {
  constructor(
    private readonly connectSocket: () => Promise<net.Socket>,
    opts: http.AgentOptions,
  ) {
    super(opts);
  }

  // Node's Agent accepts a socket handed to the callback later (oncreate) when this returns nothing.
  override createConnection(
    _opts: http.ClientRequestArgs,
    cb?: (err: Error | null, stream: Duplex) => void,
  ): undefined {
    this.connectSocket().then(
      (s) => cb?.(null, s),
      (err: Error) => cb?.(err, undefined as unknown as Duplex),
    );
    return undefined;
  }
}

/** `p`, or a rejection with the signal's reason as soon as it aborts (`p` itself runs on). */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}

function readBody(res: Readable, maxBytes: number, signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    const onAbort = (): void => {
      res.destroy();
      reject(new Error('aborted'));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    const done = (err?: Error): void => {
      signal.removeEventListener('abort', onAbort);
      if (err !== undefined) reject(err);
      else resolve(Buffer.concat(chunks, n).toString('utf8'));
    };
    res.on('data', (c: Buffer) => {
      n += c.length;
      if (n > maxBytes) {
        res.destroy();
        done(new BodyTooLargeError());
        return;
      }
      chunks.push(c);
    });
    res.on('end', () => done());
    res.on('error', (err) => done(err));
    res.on('close', () => done(new Error('the answer was cut off')));
  });
}

function describe(rp: ResourcePath): string {
  const gr = rp.group === '' ? rp.resource : `${rp.resource}.${rp.group}`;
  return rp.namespace !== undefined ? `${gr} in namespace "${rp.namespace}"` : gr;
}

function errorFromResponse(rp: ResourcePath, verb: string, status: number, body: string): KubeApiError {
  let st: Partial<KubeStatus> = {};
  try {
    const parsed = JSON.parse(body) as unknown;
    st = parsed !== null && typeof parsed === 'object' ? (parsed as KubeStatus) : {};
  } catch {
    st = { message: body.slice(0, 200) };
  }
  return errorFromStatus(rp, verb, status, st);
}

const READ_VERBS = new Set(['get', 'list', 'watch']);

/** The Kubernetes verb of a request named by its verb or its HTTP method (POST → create …). */
function kubeVerb(verb: string, rp: ResourcePath): string {
  switch (verb) {
    case 'GET':
      return rp.name === undefined ? 'list' : 'get';
    case 'POST':
      return 'create';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return 'delete';
    default:
      return verb;
  }
}

/** Map an API answer to the error a user can act on. */
export function errorFromStatus(
  rp: ResourcePath,
  verb: string,
  status: number,
  st: Partial<KubeStatus>,
): KubeApiError {
  const server = typeof st.message === 'string' && st.message ? ` (API server: ${st.message})` : '';
  const gr = rp.group === '' ? rp.resource : `${rp.resource}.${rp.group}`;
  const where = rp.namespace !== undefined ? ` in namespace "${rp.namespace}"` : '';
  let code: ErrorCode;
  let message: string;
  switch (status) {
    case 401:
      code = 'GK_ERR_KUBE_UNAUTHORIZED';
      message = `the Kubernetes API rejected the credentials for ${verb} ${describe(rp)}${server}; check the token or kubeconfig user`;
      break;
    case 403: {
      code = 'GK_ERR_KUBE_FORBIDDEN';
      const v = kubeVerb(verb, rp);
      // RBAC's denial reads `… is forbidden: User "u" cannot <verb> resource …`; an admission plugin's
      // (a missing ServiceAccount, a quota, a policy) says what it refused and why, never "cannot".
      const rbac = typeof st.message !== 'string' || / cannot /.test(st.message);
      message = rbac
        ? `RBAC forbids "${v}" on ${gr}${where}${server}; grant the client's ServiceAccount a Role with ` +
          (rp.subresource !== undefined
            ? `verb ${v} on resource "${rp.resource}/${rp.subresource}"`
            : READ_VERBS.has(v)
              ? `verbs get, list, watch on resource "${rp.resource}"`
              : `verb ${v} on resource "${rp.resource}"`) +
          ` in apiGroup "${rp.group}"${where} and a RoleBinding to it`
        : `the API server refused "${v}" on ${gr}${where} after authorization (an admission check, not RBAC)${server}; fix what it names`;
      break;
    }
    case 404:
      code = 'GK_ERR_KUBE_NOT_FOUND';
      message = `the Kubernetes API has no ${describe(rp)}${server}; ${rp.group === 'discovery.k8s.io' ? 'EndpointSlices (discovery.k8s.io/v1) need Kubernetes >= 1.21' : 'check the resource name'}`;
      break;
    case 409:
      code = 'GK_ERR_KUBE_CONFLICT';
      message = `the ${verb} of ${describe(rp)} conflicts with a newer version${server}; re-read and retry`;
      break;
    case 410:
      code = 'GK_ERR_KUBE_EXPIRED';
      message = `the watch resourceVersion of ${describe(rp)} expired${server}; the list must be re-read`;
      break;
    default:
      code =
        status >= 500 || status === 429 || status === 0 ? 'GK_ERR_KUBE_UNREACHABLE' : 'GK_ERR_KUBE_PROTOCOL';
      message = `the Kubernetes API answered ${status} to ${verb} ${describe(rp)}${server}`;
  }
  return new KubeApiError(code, message, status, typeof st.reason === 'string' ? st.reason : undefined);
}

function unreachable(rp: ResourcePath, err: unknown): KubeApiError {
  const why = err instanceof Error ? err.message : String(err);
  return new KubeApiError(
    'GK_ERR_KUBE_UNREACHABLE',
    `the Kubernetes API could not be reached for ${describe(rp)}: ${why}`,
    0,
    undefined,
    { cause: err },
  );
}

function protocolError(rp: ResourcePath, why: string): KubeApiError {
  return new KubeApiError(
    'GK_ERR_KUBE_PROTOCOL',
    `bad answer from the Kubernetes API for ${describe(rp)}: ${why}`,
    0,
    undefined,
  );
}

function tooLarge(rp: ResourcePath, why: string): KubeApiError {
  return new KubeApiError(
    'GK_ERR_KUBE_TOO_LARGE',
    `${why} for ${describe(rp)}; the answer was dropped and will be re-read (raise maxLineBytes / maxBodyBytes if the objects are really this large)`,
    0,
    undefined,
  );
}

/** The typed error for a request ended by its signal (a time-out names itself), else undefined. */
function aborted(rp: ResourcePath, verb: string, signal: AbortSignal): KubeApiError | undefined {
  if (!signal.aborted) return undefined;
  const r: unknown = signal.reason;
  const timeout = r instanceof Error && r.name === 'TimeoutError';
  return new KubeApiError(
    timeout ? 'GK_ERR_KUBE_TIMEOUT' : 'GK_ERR_DESTROYED',
    timeout
      ? `the ${verb} of ${describe(rp)} got no complete answer in time; it will be retried`
      : `the ${verb} of ${describe(rp)} was aborted`,
    0,
    undefined,
  );
}

function destroyed(): GrpcKubeError {
  return new GrpcKubeError('GK_ERR_DESTROYED', 'the Kubernetes client was closed');
}

/** True for the answer that means "your resourceVersion is too old: list again". */
export function isExpired(err: unknown): boolean {
  return (
    err instanceof KubeApiError && (err.status === 410 || err.reason === 'Expired' || err.reason === 'Gone')
  );
}

function parseProxyUrl(proxyUrl: string | undefined): URL | undefined {
  if (proxyUrl === undefined || proxyUrl === '') return undefined;
  let u: URL;
  try {
    u = new URL(proxyUrl);
  } catch {
    throw new GrpcKubeError('GK_ERR_KUBE_CONFIG', `the cluster's proxy-url "${proxyUrl}" is not a URL`);
  }
  if (u.protocol !== 'http:') {
    throw new GrpcKubeError(
      'GK_ERR_KUBE_CONFIG',
      `the cluster's proxy-url "${proxyUrl}" is not supported: only http:// proxies (HTTP CONNECT) are`,
    );
  }
  return u;
}

/** An HTTP CONNECT tunnel to `target` through `proxy`. */
function connectTunnel(
  proxy: URL,
  target: { host: string; port: number },
  timeoutMs: number,
  closing: AbortSignal,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const authority = `${net.isIPv6(target.host) ? `[${target.host}]` : target.host}:${target.port}`;
    const headers: Record<string, string> = { host: authority };
    if (proxy.username !== '') {
      const cred = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
      headers['proxy-authorization'] = `Basic ${Buffer.from(cred).toString('base64')}`;
    }
    const req = http.request({
      host: proxy.hostname.replace(/^\[|\]$/g, ''),
      port: Number(proxy.port || 80),
      method: 'CONNECT',
      path: authority,
      headers,
      agent: false,
      timeout: timeoutMs,
      signal: closing,
    });
    req.once('timeout', () =>
      req.destroy(new Error(`the proxy ${proxy.host} did not answer CONNECT in time`)),
    );
    req.once('connect', (res, socket, head) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        reject(new Error(`the proxy ${proxy.host} answered ${res.statusCode} to CONNECT ${authority}`));
        return;
      }
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    req.once('error', reject);
    req.end();
  });
}

function lowerKeys(h: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k.toLowerCase()] = String(v);
  return out;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function unboundedAbortController(): AbortController {
  const ac = new AbortController();
  setMaxListeners(0, ac.signal);
  return ac;
}
