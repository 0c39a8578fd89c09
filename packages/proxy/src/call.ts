// One proxied RPC: an incoming HTTP/2 stream forwarded to a new stream on a picked backend session.
//
// Both directions are piped chunk by chunk with backpressure (a full side pauses the other), so the
// proxy holds at most one flow-control window per direction. Headers, trailers and `-bin` metadata
// pass through untouched; `grpc-timeout` is re-stamped with what is left of the deadline, and the
// proxy ends the RPC with DEADLINE_EXCEEDED itself when it expires. A client reset cancels the
// backend stream; a backend reset gives the client a status naming the backend.
//
// Retries happen only when the request provably never reached a backend: the session never
// connected, the stream was refused (REFUSED_STREAM), or it was above the last stream id of the
// backend's GOAWAY. Request bytes are kept for replay until the backend answers, up to a bound;
// past it the RPC is no longer retryable (as Envoy's retry buffer).

import http2 from 'node:http2';
import { performance } from 'node:perf_hooks';
import type { Backend, SessionInfo } from './backend.js';
import {
  GrpcStatus,
  forwardHeaders,
  formatGrpcTimeout,
  statusForRstCode,
  statusTrailers,
  trailersOnly,
} from './grpc-wire.js';
import type { CallToken } from './picker.js';
import type { ServicePool } from './pool.js';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_FLAG_END_STREAM } = http2.constants;

/** Request headers the proxy rewrites rather than copies. */
const DROP_REQUEST = new Set(['grpc-timeout']);

export interface CallSettings {
  readonly maxAttempts: number;
  readonly retryBufferBytes: number;
  /** How long an RPC waits for a Service's first endpoint list. */
  readonly syncTimeoutMs: number;
  /** After the proxy decided a status, how long the client gets to read it before a reset. */
  readonly finishGraceMs: number;
  /**
   * The status message a client gets for a failure the proxy decided; `detail` names backends and
   * Services, which an ingress keeps from external callers (the detail goes to the 'fail' event).
   */
  clientMessage(code: number, detail: string): string;
  now(): number;
}

/**
 * Where one RPC's time went inside the proxy, in ms (performance.now()): `queueMs` from accepting the
 * stream to sending it to the backend it ended on (endpoint-list wait, picks, earlier attempts);
 * `connectMs` the wait, after sending, for the backend's HTTP/2 handshake (0 on a session that had
 * it already);
 * `firstByteMs` from sending to the backend's response headers; `totalMs` to the end. undefined where
 * the RPC never got that far.
 */
export interface CallTiming {
  queueMs: number | undefined;
  connectMs: number | undefined;
  firstByteMs: number | undefined;
  totalMs: number;
}

export interface CallEvents {
  retry(call: ProxyCall, reason: string): void;
  done(call: ProxyCall, code: number, byProxy: boolean): void;
}

interface Attempt {
  readonly stream: http2.ClientHttp2Stream;
  readonly backend: Backend;
  readonly info: SessionInfo;
  readonly token: CallToken;
  responded: boolean;
  trailers: http2.IncomingHttpHeaders | undefined;
  error: (Error & { code?: string }) | undefined;
}

export class ProxyCall {
  /** Backend keys of every attempt, in order (tests, access logs). */
  readonly backends: string[] = [];
  private readonly tried = new Set<Backend>();
  private attempt: Attempt | undefined;
  private attempts = 0;
  private replay: Buffer[] | null = [];
  private replayBytes = 0;
  private clientEnded = false;
  private clientAttached = false;
  private done = false;
  /** The backend's response ended; trailers are on their way to the client. */
  private ending = false;
  private finalTrailers: http2.OutgoingHttpHeaders | undefined;
  private finalCode: number = GrpcStatus.UNKNOWN;
  /** Why the proxy ended the RPC itself, with backend and Service names (events, logs). */
  failure = '';
  private lastError = '';
  private deadlineTimer: NodeJS.Timeout | undefined;
  private waitTimer: NodeJS.Timeout | undefined;
  private resetTimer: NodeJS.Timeout | undefined;
  private cancelWait: (() => void) | undefined;
  private readonly acceptedAt = performance.now();
  /** The session of the last attempt (its handshake time, for timing). */
  private lastInfo: SessionInfo | undefined;
  private sentAt: number | undefined;
  private sentOnConnected = true;
  private respondedAt: number | undefined;
  private endedAt: number | undefined;

  constructor(
    private readonly client: http2.ServerHttp2Stream,
    private readonly headers: http2.IncomingHttpHeaders,
    private readonly pool: ServicePool,
    private readonly settings: CallSettings,
    private readonly events: CallEvents,
    private readonly deadlineAt: number | undefined,
  ) {}

  get service(): string {
    return this.pool.name;
  }

  get finished(): boolean {
    return this.done;
  }

  get timing(): CallTiming {
    const sent = this.sentAt;
    const connectedAt = this.lastInfo?.handshakeAtMs;
    return {
      queueMs: sent === undefined ? undefined : sent - this.acceptedAt,
      connectMs:
        sent === undefined
          ? undefined
          : this.sentOnConnected
            ? 0
            : connectedAt === undefined
              ? undefined
              : Math.max(0, connectedAt - sent),
      firstByteMs: sent === undefined || this.respondedAt === undefined ? undefined : this.respondedAt - sent,
      totalMs: (this.endedAt ?? performance.now()) - this.acceptedAt,
    };
  }

  start(): void {
    const c = this.client;
    c.on('error', () => {});
    c.on('close', () => this.onClientClose());
    c.on('wantTrailers', () => {
      c.sendTrailers(this.finalTrailers ?? statusTrailers(GrpcStatus.INTERNAL, 'proxy lost the trailers'));
    });
    if (this.deadlineAt !== undefined) {
      const left = this.deadlineAt - this.settings.now();
      if (left <= 0) {
        this.fail(GrpcStatus.DEADLINE_EXCEEDED, 'deadline exceeded before the proxy forwarded the call');
        return;
      }
      this.deadlineTimer = setTimeout(
        () =>
          this.fail(GrpcStatus.DEADLINE_EXCEEDED, `deadline exceeded (in proxy, Service ${this.pool.name})`),
        left,
      );
      this.deadlineTimer.unref();
    }
    this.next();
  }

  /** End the RPC with a status decided by the proxy (shutdown, deadline, no backend). */
  abort(code: number, message: string): void {
    this.fail(code, message, message);
  }

  private next(): void {
    if (this.done) return;
    if (this.attempts >= this.settings.maxAttempts) {
      this.fail(
        GrpcStatus.UNAVAILABLE,
        `Service ${this.pool.name}: no backend took the call in ${this.attempts} attempts (last: ${this.lastError})`,
      );
      return;
    }
    const outcome = this.pool.pick(this.tried);
    if (outcome.kind === 'fail') {
      const why = this.lastError === '' ? outcome.message : `${outcome.message} (last: ${this.lastError})`;
      this.fail(GrpcStatus.UNAVAILABLE, why);
      return;
    }
    if (outcome.kind === 'wait') {
      this.client.pause();
      if (this.cancelWait !== undefined) return;
      this.cancelWait = this.pool.onChange(() => {
        this.cancelWait = undefined;
        clearTimeout(this.waitTimer);
        this.waitTimer = undefined;
        this.next();
      });
      this.waitTimer = setTimeout(() => {
        this.fail(
          GrpcStatus.UNAVAILABLE,
          `Service ${this.pool.name}: no endpoint list within ${this.settings.syncTimeoutMs} ms`,
        );
      }, this.settings.syncTimeoutMs);
      this.waitTimer.unref();
      return;
    }
    this.open(outcome.backend);
  }

  private open(backend: Backend): void {
    this.attempts++;
    this.tried.add(backend);
    this.backends.push(backend.key);
    const h = forwardHeaders(this.headers, DROP_REQUEST);
    h[':method'] = 'POST';
    h[':scheme'] = 'http';
    h[':path'] = this.headers[':path'];
    h[':authority'] = this.headers[':authority'] ?? backend.key;
    if (this.deadlineAt !== undefined) {
      const left = this.deadlineAt - this.settings.now();
      if (left <= 0) {
        this.fail(GrpcStatus.DEADLINE_EXCEEDED, 'deadline exceeded in the proxy');
        return;
      }
      h['grpc-timeout'] = formatGrpcTimeout(left);
    }
    const info = backend.session();
    let stream: http2.ClientHttp2Stream;
    try {
      stream = info.session.request(h, { endStream: false });
    } catch (err) {
      // The session was closing (GOAWAY raced us): nothing was sent.
      backend.retire(info);
      this.lastError = `${backend.key}: ${(err as Error).message}`;
      this.events.retry(this, this.lastError);
      this.next();
      return;
    }
    backend.streamStarted(info);
    this.sentAt = performance.now();
    this.sentOnConnected = info.handshakeAtMs !== undefined;
    this.lastInfo = info;
    const att: Attempt = {
      stream,
      backend,
      info,
      token: this.pool.picker.begin(backend.stats),
      responded: false,
      trailers: undefined,
      error: undefined,
    };
    this.attempt = att;
    stream.on('response', (headers, flags) => this.onResponse(att, headers, flags));
    stream.on('trailers', (trailers) => {
      att.trailers = trailers;
    });
    stream.on('data', (chunk: Buffer) => {
      if (this.attempt !== att || this.done) return;
      if (!this.client.write(chunk)) stream.pause();
    });
    stream.on('end', () => this.onBackendEnd(att));
    stream.on('error', (err: Error & { code?: string }) => {
      att.error = err;
    });
    stream.on('close', () => this.onBackendClose(att));
    stream.on('drain', () => {
      if (this.attempt === att && !this.done) this.client.resume();
    });
    if (this.replay !== null) for (const chunk of this.replay) stream.write(chunk);
    if (this.clientEnded) stream.end();
    if (!this.clientAttached) {
      this.clientAttached = true;
      this.client.on('data', (chunk: Buffer) => this.onClientData(chunk));
      this.client.on('end', () => this.onClientEnd());
      this.client.on('drain', () => {
        if (this.attempt !== undefined && !this.done) this.attempt.stream.resume();
      });
    }
    // Explicitly resumed: a stream paused while waiting for endpoints stays paused when a 'data'
    // listener is added.
    this.client.resume();
  }

  private onClientData(chunk: Buffer): void {
    if (this.done) return;
    const att = this.attempt;
    if (this.replay !== null && (att === undefined || !att.responded)) {
      this.replay.push(chunk);
      this.replayBytes += chunk.length;
      if (this.replayBytes > this.settings.retryBufferBytes) this.replay = null;
    }
    if (att === undefined) {
      // Between attempts: the chunk is in the replay buffer (a call without one is not retried).
      this.client.pause();
      return;
    }
    if (!att.stream.write(chunk)) this.client.pause();
  }

  private onClientEnd(): void {
    this.clientEnded = true;
    if (!this.done) this.attempt?.stream.end();
  }

  private onResponse(att: Attempt, headers: http2.IncomingHttpHeaders, flags: number): void {
    if (this.attempt !== att || this.done) return;
    att.responded = true;
    this.respondedAt = performance.now();
    this.replay = null;
    this.pool.picker.responded(att.token);
    if (this.client.destroyed || this.client.closed) return;
    const out = forwardHeaders(headers);
    out[':status'] = headers[':status'] ?? 200;
    if ((flags & NGHTTP2_FLAG_END_STREAM) !== 0) {
      // Trailers-only: the status is in the headers and the response is complete.
      this.complete(Number(headers['grpc-status'] ?? GrpcStatus.UNKNOWN));
      this.client.respond(out, { endStream: true });
      return;
    }
    this.client.respond(out, { waitForTrailers: true });
  }

  private onBackendEnd(att: Attempt): void {
    if (this.attempt !== att || this.done || !att.responded) return;
    const t = att.trailers;
    // Without a status the readable side ended because of a reset (or a broken backend): 'close'
    // decides, with the reset code in hand.
    if (t === undefined || t['grpc-status'] === undefined) return;
    this.finalTrailers = forwardHeaders(t);
    this.complete(Number(t['grpc-status']));
    this.ending = true;
    if (!this.client.destroyed && !this.client.writableEnded) this.client.end();
  }

  private onBackendClose(att: Attempt): void {
    att.backend.streamEnded(att.info);
    const s = att.stream;
    const code = att.trailers?.['grpc-status'];
    // The connection went away under the stream (a killed pod's socket closed: no RST_STREAM, no
    // GOAWAY). Node then closes the stream with code CANCEL, but nobody cancelled: the transport
    // failed, which gRPC reports as UNAVAILABLE.
    const connectionLost = att.info.session.destroyed;
    this.pool.picker.end(
      att.token,
      code !== undefined
        ? Number(code)
        : att.responded && !connectionLost
          ? statusForRstCode(s.rstCode ?? 0)
          : GrpcStatus.UNAVAILABLE,
    );
    if (this.attempt !== att || this.done || this.ending) return;
    const rst = s.rstCode ?? 0;
    const goaway = att.info.goawayLastStreamId;
    const neverSent =
      !att.info.connected ||
      rst === NGHTTP2_REFUSED_STREAM ||
      s.id === undefined ||
      (goaway !== undefined && s.id > goaway);
    const why = att.error?.message ?? `stream reset with code ${rst}`;
    this.lastError = `${att.backend.key}: ${why}`;
    if (!att.responded && neverSent && this.replay !== null) {
      // The backend never saw this request: another backend may take it.
      if (!att.info.connected || goaway !== undefined) att.backend.retire(att.info);
      this.attempt = undefined;
      this.client.pause();
      this.events.retry(this, this.lastError);
      this.next();
      return;
    }
    const local = (att.error !== undefined && att.error.code !== 'ERR_HTTP2_STREAM_ERROR') || connectionLost;
    let status: number = local || !att.responded ? GrpcStatus.UNAVAILABLE : statusForRstCode(rst);
    let detail = connectionLost && att.error === undefined ? 'its connection closed mid-call' : why;
    if (!local && att.responded && rst === http2.constants.NGHTTP2_NO_ERROR) {
      status = GrpcStatus.INTERNAL;
      detail = 'the response ended without a grpc-status';
    }
    this.fail(status, `backend ${att.backend.key} of Service ${this.pool.name} failed the call: ${detail}`);
  }

  private onClientClose(): void {
    if (!this.done) {
      // The client reset the stream (or its connection went away): cancel upstream.
      this.done = true;
      this.endedAt = performance.now();
      this.finalCode = GrpcStatus.CANCELLED;
      const att = this.attempt;
      if (att !== undefined && !att.stream.closed) att.stream.close(NGHTTP2_CANCEL);
      this.events.done(this, GrpcStatus.CANCELLED, false);
    }
    this.clearTimers();
  }

  /** The backend's status is final; what is left is delivering it. */
  private complete(code: number, byProxy = false): void {
    this.done = true;
    this.endedAt = performance.now();
    this.finalCode = code;
    this.clearTimers();
    this.events.done(this, code, byProxy);
  }

  /** `publicMessage`: what to tell any client, when the message names nothing internal. */
  private fail(code: number, detail: string, publicMessage?: string): void {
    if (this.done) return;
    this.failure = detail;
    const message = publicMessage ?? this.settings.clientMessage(code, detail);
    this.complete(code, true);
    const att = this.attempt;
    this.attempt = undefined;
    if (att !== undefined && !att.stream.closed) att.stream.close(NGHTTP2_CANCEL);
    const c = this.client;
    if (c.destroyed || c.closed) return;
    if (!c.headersSent) {
      c.respond(trailersOnly(code, message), { endStream: true });
      return;
    }
    this.finalTrailers = statusTrailers(code, message);
    if (!c.writableEnded) c.end();
    // A client that stopped reading would never receive the trailers: reset it after a grace.
    this.resetTimer = setTimeout(() => {
      if (!c.closed) c.close(NGHTTP2_CANCEL);
    }, this.settings.finishGraceMs);
    this.resetTimer.unref();
    c.once('close', () => clearTimeout(this.resetTimer));
  }

  get status(): number {
    return this.finalCode;
  }

  private clearTimers(): void {
    clearTimeout(this.deadlineTimer);
    clearTimeout(this.waitTimer);
    this.deadlineTimer = undefined;
    this.waitTimer = undefined;
    this.cancelWait?.();
    this.cancelWait = undefined;
  }
}
