// One backend (pod endpoint) of the proxy: its HTTP/2 client session(s), its load stats for the
// picker, and connect-failure ejection. Every RPC the proxy forwards becomes a new stream on the
// backend's current session; a session that received GOAWAY (or failed) is retired — no new streams,
// the ones in flight finish — and the next RPC opens a fresh session.

import http2 from 'node:http2';
import { performance } from 'node:perf_hooks';
import { checkServerIdentity, type PeerCertificate, type SecureContext } from 'node:tls';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { EndpointStats } from 'grpc-kube/internal/balancer/endpoint-balancer.js';
import type { Endpoint } from 'grpc-kube/internal/discovery/endpoint.js';
import { endpointKey } from 'grpc-kube/internal/discovery/endpoint.js';
import { instruments } from 'grpc-kube/internal/metrics/instruments.js';

export interface BackendOptions {
  /** Close a session after this long without streams. */
  idleMs: number;
  /** Connect timeout; a session not connected by then is destroyed (its streams are retryable). */
  connectTimeoutMs: number;
  /** First and longest ejection after a connect failure (doubles per consecutive failure, ±20 % jitter). */
  ejectBaseMs: number;
  ejectMaxMs: number;
  now: () => number;
  random: () => number;
  /** TLS to backends; without it, h2c. */
  tls?: BackendTls;
  /**
   * The DNS names of the Service these backends belong to (`svc.ns`, `svc.ns.svc`, …): without a
   * `tls.serverName`, a certificate naming one of them (or the pod address) is accepted.
   */
  serviceNames?: readonly string[];
}

export interface BackendTls {
  /** Identity for mutual TLS and the CA to verify backends, read at each new session so rotated
   * files apply to the next connection. */
  context: () => SecureContext;
  /**
   * The name every backend's certificate must carry: a DNS SAN (wildcards as in HTTPS; also sent as
   * SNI) or, for `spiffe://…`, an exact URI SAN. Default: the pod address dialled (an IP SAN) or one
   * of `serviceNames` (DNS SANs), what cert-manager's and the lab's pod certificates carry.
   */
  serverName?: string;
  /** Called for each handshake refused because the certificate names someone else. */
  onPeerNameError?: (err: PeerNameError) => void;
}

/** A backend's certificate chains to the CA but names someone else: the handshake is refused. */
export class PeerNameError extends GrpcKubeError {
  readonly backend: string;
  constructor(backend: string, wanted: readonly string[], cert: PeerCertificate) {
    super(
      'GK_ERR_TLS_PEER_NAME',
      `backend ${backend}: its TLS certificate names ${cert.subjectaltname ?? 'nothing (no SANs)'}, none of ${wanted.join(', ')}; issue it for the pod address or the Service DNS name, or set --backend-tls-server-name to a name it carries`,
    );
    this.name = 'PeerNameError';
    this.backend = backend;
  }
}

/** Names a certificate may carry for this backend, best first (the first DNS one is the SNI). */
export function acceptedPeerNames(
  address: string,
  tls: Pick<BackendTls, 'serverName'>,
  serviceNames: readonly string[] = [],
): string[] {
  return tls.serverName !== undefined ? [tls.serverName] : [...serviceNames, address];
}

/** True when `cert` carries none of `names` (a URI SAN exactly; other names as node:tls checks hosts). */
export function peerNameMismatch(names: readonly string[], cert: PeerCertificate): boolean {
  const uris = (cert.subjectaltname ?? '').split(', ').filter((e) => e.startsWith('URI:'));
  return !names.some((n) =>
    /^[a-z][a-z0-9+.-]*:\/\//i.test(n)
      ? uris.includes(`URI:${n}`)
      : checkServerIdentity(n, cert) === undefined,
  );
}

/** What the proxy knows about a session, to decide whether a failed stream may be retried. */
export interface SessionInfo {
  readonly session: http2.ClientHttp2Session;
  connected: boolean;
  /** Last stream id the backend said (in GOAWAY) it will process; streams above it were not processed. */
  goawayLastStreamId: number | undefined;
  streams: number;
  /** performance.now() when the backend's SETTINGS arrived (the HTTP/2 handshake completed). */
  handshakeAtMs?: number;
}

export class Backend {
  readonly key: string;
  endpoint: Endpoint;
  readonly stats: EndpointStats;
  /** Until this time the backend is skipped (unless every backend is). */
  ejectedUntilMs = 0;
  private failures = 0;
  private current: SessionInfo | undefined;
  private readonly sessions = new Set<SessionInfo>();
  private closed = false;
  private readonly opts: BackendOptions;

  constructor(endpoint: Endpoint, stats: EndpointStats, opts: BackendOptions) {
    this.key = endpointKey(endpoint);
    this.endpoint = endpoint;
    this.stats = stats;
    this.opts = opts;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Open sessions (current and retiring), for tests and counters. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  ejected(nowMs: number): boolean {
    return nowMs < this.ejectedUntilMs;
  }

  /**
   * True when new streams would go on a session whose backend has answered the HTTP/2 handshake (sent
   * its SETTINGS). TCP alone is not enough: the kernel accepts for a process that is still starting.
   */
  get handshaken(): boolean {
    return this.usable()?.handshakeAtMs !== undefined;
  }

  /**
   * Open a session now if there is none, so the first RPC sent here does not wait for TCP and the
   * HTTP/2 handshake (on a busy or just-started pod that wait can outlast a deadline). Idempotent.
   */
  warm(): void {
    if (this.closed || this.usable() !== undefined) return;
    const info = this.connect();
    // Nothing runs on it yet: it must not keep the process alive.
    info.session.unref();
  }

  private usable(): SessionInfo | undefined {
    const cur = this.current;
    return cur !== undefined &&
      !cur.session.closed &&
      !cur.session.destroyed &&
      cur.goawayLastStreamId === undefined
      ? cur
      : undefined;
  }

  /** The session new streams go on; opens one when there is none usable. */
  session(): SessionInfo {
    return this.usable() ?? this.connect();
  }

  /** A stream on `info` was refused or never connected: the next RPC should not reuse it. */
  retire(info: SessionInfo): void {
    if (this.current === info) this.current = undefined;
    if (info.streams === 0 && !info.session.destroyed) info.session.close();
  }

  streamStarted(info: SessionInfo): void {
    info.streams++;
    info.session.ref();
  }

  streamEnded(info: SessionInfo): void {
    info.streams--;
    if (info.streams > 0) return;
    // An idle session should not keep the process alive; a retired one has nothing left to do.
    info.session.unref();
    if (this.current !== info || this.closed) info.session.close();
  }

  /** Graceful: no new streams, running ones finish, then the sessions close. */
  close(): void {
    this.closed = true;
    this.current = undefined;
    for (const s of this.sessions) s.session.close();
  }

  destroy(): void {
    this.closed = true;
    this.current = undefined;
    for (const s of [...this.sessions]) s.session.destroy();
    this.sessions.clear();
  }

  private connect(): SessionInfo {
    const { address, port } = this.endpoint;
    const host = address.includes(':') ? `[${address}]` : address;
    const tls = this.opts.tls;
    const session = http2.connect(`${tls === undefined ? 'http' : 'https'}://${host}:${port}`, {
      settings: { enablePush: false },
      // Plenty of headroom for metadata; the client side of the proxy enforces the real limit.
      maxHeaderListPairs: 256,
      ...(tls !== undefined ? this.tlsConnectOptions(tls, address) : {}),
    });
    const info: SessionInfo = { session, connected: false, goawayLastStreamId: undefined, streams: 0 };
    this.sessions.add(info);
    this.current = info;
    const connectTimer = setTimeout(() => {
      if (!info.connected) session.destroy(new Error(`connect to ${this.key} timed out`));
    }, this.opts.connectTimeoutMs);
    connectTimer.unref();
    session.on('connect', () => {
      clearTimeout(connectTimer);
      info.connected = true;
      this.failures = 0;
      this.ejectedUntilMs = 0;
      // A larger connection window so many concurrent streams do not starve each other; each
      // stream keeps the default 64 KiB window, which bounds what the proxy buffers per RPC.
      try {
        session.setLocalWindowSize(8 * 1024 * 1024);
      } catch {
        // Only fails on a destroyed session.
      }
    });
    session.once('remoteSettings', () => {
      info.handshakeAtMs = performance.now();
    });
    session.on('goaway', (_code: number, lastStreamID: number) => {
      info.goawayLastStreamId = lastStreamID;
      if (this.current === info) this.current = undefined;
    });
    session.on('error', () => {
      // Stream-level handlers see the consequences; a connect failure ejects the backend.
      if (!info.connected) this.ejectAfterFailure();
    });
    session.on('timeout', () => {
      if (info.streams === 0) session.close();
    });
    session.setTimeout(this.opts.idleMs);
    session.on('close', () => {
      clearTimeout(connectTimer);
      this.sessions.delete(info);
      if (this.current === info) this.current = undefined;
    });
    return info;
  }

  private tlsConnectOptions(tls: BackendTls, address: string): http2.SecureClientSessionOptions {
    const names = acceptedPeerNames(address, tls, this.opts.serviceNames);
    // SNI is a DNS name: the first one we accept, if any (never an IP or a URI).
    const sni = names.find((n) => !/:/.test(n) && !/^[0-9.]+$/.test(n));
    return {
      secureContext: tls.context(),
      ALPNProtocols: ['h2'],
      ...(sni !== undefined ? { servername: sni } : {}),
      checkServerIdentity: (_host, cert) => {
        if (!peerNameMismatch(names, cert)) return undefined;
        const err = new PeerNameError(this.key, names, cert);
        tls.onPeerNameError?.(err);
        return err;
      },
    };
  }

  private ejectAfterFailure(): void {
    this.failures++;
    const base = Math.min(this.opts.ejectMaxMs, this.opts.ejectBaseMs * 2 ** Math.min(this.failures - 1, 20));
    const jitter = 0.8 + 0.4 * this.opts.random();
    this.ejectedUntilMs = this.opts.now() + base * jitter;
    instruments()?.['grpc_kube.proxy.ejections'].add(1, { 'grpc_kube.backend': this.key });
  }
}
