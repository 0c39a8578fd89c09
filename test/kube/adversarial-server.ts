// An API server that misbehaves on purpose, for testing the Kubernetes client and its watch loop.
// Independent of the embedded API server: its own tiny store (any resource, `key=value` label
// selectors, an event history that compacts into 410s) served over TLS with HTTP/2 and HTTP/1.1 by
// ALPN, TLS with HTTP/1.1 only, or plain HTTP. Every request passes through a TCP relay in front of
// the server, so a connection can be made half-open (both directions silently stop) as a vanished
// peer would. Each list or watch asks `fault()` how to misbehave: drop the connection at a random
// byte offset, drip slowly, send garbage or truncated JSON, a huge line, an empty watch, a 410, hang,
// go half-open, or behave.

import { seededRandom } from 'grpc-kube/internal/balancer/runtime.js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as https from 'node:https';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type Fault =
  | 'none'
  | 'drop' // cut the connection (or the stream) at a random byte offset of the answer
  | 'drip' // the answer a few bytes at a time, slowly
  | 'garbage' // a line that is not JSON
  | 'null' // a watch line `null`
  | 'error-no-object' // {"type":"ERROR"}
  | 'no-metadata' // an ADDED event whose object has no metadata
  | 'truncated' // JSON cut short, then a clean end
  | 'huge' // a line (or list body) far over any sane bound, with no newline
  | 'empty' // a watch answered 200 with no event, ended at once
  | 'gone' // 410 Expired (as an ERROR event on a watch, as a status on a list)
  | 'status-500'
  | 'hang' // accept the request, never answer
  | 'half-open'; // answer the headers, then the connection goes silent both ways

export const FAULTS: readonly Fault[] = [
  'drop',
  'drip',
  'garbage',
  'null',
  'error-no-object',
  'no-metadata',
  'truncated',
  'huge',
  'empty',
  'gone',
  'status-500',
  'hang',
  'half-open',
];

export type Transport = 'h2' | 'https1' | 'http';

export interface AdversarialOptions {
  transport: Transport;
  /** Seed of the byte offsets and drip sizes. */
  seed?: number;
  bookmarkIntervalMs?: number;
  /** Events kept for watches to resume from; older resourceVersions answer 410. */
  historyLimit?: number;
  /** Bytes of a 'huge' line. */
  hugeBytes?: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (Go's default is 250; clients must open more sessions). */
  maxConcurrentStreams?: number;
}

interface Obj {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
  };
  [k: string]: unknown;
}

interface Change {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  resource: string;
  obj: Obj;
}

interface Selection {
  resource: string;
  namespace: string | undefined;
  selector: [string, string] | undefined;
}

interface WatchSub extends Selection {
  send: (c: Change) => void;
}

export const TOKEN = 'adversary-token';

let pemCache: { key: Buffer; cert: Buffer } | undefined;

/** A self-signed P-256 certificate for 127.0.0.1 (made once per process). */
function selfSigned(): { key: Buffer; cert: Buffer } {
  if (pemCache !== undefined) return pemCache;
  const dir = mkdtempSync(join(tmpdir(), 'gk-adv-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore', timeout: 10_000 },
    );
    pemCache = { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
    return pemCache;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

type Req = http.IncomingMessage | http2.Http2ServerRequest;
/** Both protocols' responses, used through the API they share. */
type Res = http.ServerResponse;

export class AdversarialApiServer {
  readonly requests = { list: 0, watch: 0, total: 0 };
  /** How to misbehave on this request (default: behave). */
  fault: (kind: 'list' | 'watch', resource: string) => Fault = () => 'none';
  private readonly objects = new Map<string, Obj>();
  private readonly history: Change[] = [];
  private floorRv = 0;
  private rv = 1;
  private readonly subs = new Set<WatchSub>();
  private readonly rng: () => number;
  private readonly opts: Required<AdversarialOptions>;
  private server!: http.Server | https.Server | http2.Http2SecureServer;
  private relay!: net.Server;
  private readonly pairs = new Map<number, { client: net.Socket; up: net.Socket }>();
  /** Every socket and HTTP/2 session either server ever had, for close() to end them all. */
  private readonly live = new Set<{ destroy(): unknown }>();
  private readonly hung = new Set<() => void>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private pem: { key: Buffer; cert: Buffer } | undefined;
  port = 0;

  constructor(opts: AdversarialOptions) {
    this.opts = {
      seed: 1,
      bookmarkIntervalMs: 1000,
      historyLimit: 10_000,
      hugeBytes: 1 << 20,
      maxConcurrentStreams: 100,
      ...opts,
    };
    this.rng = seededRandom(this.opts.seed);
  }

  static async start(opts: AdversarialOptions): Promise<AdversarialApiServer> {
    const s = new AdversarialApiServer(opts);
    await s.listen();
    return s;
  }

  get url(): string {
    return `${this.opts.transport === 'http' ? 'http' : 'https'}://127.0.0.1:${this.port}`;
  }

  get openWatches(): number {
    return this.subs.size;
  }

  /** Client connections open through the relay now. */
  get connections(): number {
    return this.pairs.size;
  }

  /** The label values (`key=value` → value) of the watches open now, sorted: who holds a watch. */
  get watchedSelectors(): string[] {
    return [...this.subs].map((s) => s.selector?.[1] ?? '').sort();
  }

  kubeConfigYaml(extraCluster: string[] = []): string {
    const tlsLines =
      this.pem === undefined ? [] : [`    certificate-authority-data: ${this.pem.cert.toString('base64')}`];
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: adv',
      '  cluster:',
      `    server: ${this.url}`,
      ...tlsLines,
      ...extraCluster,
      'contexts:',
      '- name: adv',
      '  context: {cluster: adv, user: adv, namespace: default}',
      'current-context: adv',
      'users:',
      '- name: adv',
      `  user: {token: ${TOKEN}}`,
      '',
    ].join('\n');
  }

  /** Create or replace an object (its resourceVersion is assigned here). */
  put(resource: string, obj: Obj): void {
    const key = `${resource}/${obj.metadata.namespace}/${obj.metadata.name}`;
    const type = this.objects.has(key) ? 'MODIFIED' : 'ADDED';
    const stored: Obj = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(++this.rv) } };
    this.objects.set(key, stored);
    this.record({ rv: this.rv, type, resource, obj: stored });
  }

  remove(resource: string, namespace: string, name: string): void {
    const key = `${resource}/${namespace}/${name}`;
    const o = this.objects.get(key);
    if (o === undefined) return;
    this.objects.delete(key);
    const gone: Obj = { ...o, metadata: { ...o.metadata, resourceVersion: String(++this.rv) } };
    this.record({ rv: this.rv, type: 'DELETED', resource, obj: gone });
  }

  get(resource: string, namespace: string, name: string): Obj | undefined {
    return this.objects.get(`${resource}/${namespace}/${name}`);
  }

  /** Cut every connection at once (whatever byte each answer was at). */
  dropConnections(): void {
    for (const { client, up } of this.pairs.values()) {
      client.destroy();
      up.destroy();
    }
  }

  /** Forget history: any watch from before now answers 410. */
  compact(): void {
    this.history.length = 0;
    this.floorRv = this.rv;
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const h of this.hung) h();
    this.hung.clear();
    for (const { client, up } of this.pairs.values()) {
      client.destroy();
      up.destroy();
    }
    // Also what pairs may not hold yet (a relay socket still connecting) and the servers' own
    // sessions: server.close() waits for every one of them.
    for (const x of this.live) x.destroy();
    this.live.clear();
    this.subs.clear();
    await Promise.all([
      new Promise<void>((r) => this.relay.close(() => r())),
      new Promise<void>((r) => {
        this.server.close(() => r());
        (this.server as http.Server).closeAllConnections?.();
      }),
    ]);
  }

  private record(c: Change): void {
    this.history.push(c);
    if (this.history.length > this.opts.historyLimit) {
      const dropped = this.history.splice(0, this.history.length - this.opts.historyLimit);
      this.floorRv = dropped.at(-1)?.rv ?? this.floorRv;
    }
    for (const s of this.subs) if (matches(s, c.resource, c.obj)) s.send(c);
  }

  private async listen(): Promise<void> {
    const handler = (req: Req, res: Res | http2.Http2ServerResponse): void =>
      this.handle(req, res as unknown as Res);
    if (this.opts.transport === 'http') this.server = http.createServer(handler);
    else {
      this.pem = selfSigned();
      this.server =
        this.opts.transport === 'h2'
          ? http2.createSecureServer(
              {
                ...this.pem,
                allowHTTP1: true,
                settings: { maxConcurrentStreams: this.opts.maxConcurrentStreams },
              },
              handler,
            )
          : https.createServer({ ...this.pem }, handler);
    }
    this.server.on('error', () => {});
    this.server.on('connection', (sock: net.Socket) => this.track(sock));
    (this.server as http2.Http2SecureServer).on('session', (s: http2.ServerHttp2Session) => {
      s.on('error', () => {});
      this.track(s);
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    const inner = (this.server.address() as net.AddressInfo).port;
    this.relay = net.createServer((client) => {
      const up = net.connect(inner, '127.0.0.1');
      this.track(client);
      this.track(up);
      client.on('error', () => up.destroy());
      up.on('error', () => client.destroy());
      // Keyed by the server side's peer port, kept here: a destroyed socket no longer knows its port.
      let port: number | undefined;
      up.once('connect', () => {
        port = up.localPort;
        if (port !== undefined) this.pairs.set(port, { client, up });
      });
      client.pipe(up);
      up.pipe(client);
      const drop = (): void => {
        if (port !== undefined) this.pairs.delete(port);
        client.destroy();
        up.destroy();
      };
      client.once('close', drop);
      up.once('close', drop);
    });
    await new Promise<void>((r) => this.relay.listen(0, '127.0.0.1', () => r()));
    this.port = (this.relay.address() as net.AddressInfo).port;
  }

  private track(x: { destroy(): unknown; once(ev: 'close', fn: () => void): unknown }): void {
    this.live.add(x);
    x.once('close', () => this.live.delete(x));
  }

  /** Silence a connection both ways without closing it (a peer that vanished). */
  private halfOpen(remotePort: number | undefined): void {
    const p = this.pairs.get(remotePort ?? -1);
    if (p === undefined) return;
    p.client.unpipe(p.up);
    p.up.unpipe(p.client);
    p.client.pause();
    p.up.pause();
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private handle(req: Req, res: Res): void {
    res.on('error', () => {});
    this.requests.total++;
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/apis?\/(?:[^/]+\/)?[^/]+\/(?:namespaces\/([^/]+)\/)?([^/]+)$/.exec(url.pathname);
    if (m === null) return this.status(res, 404, 'NotFound', 'no such path');
    if (req.headers.authorization !== `Bearer ${TOKEN}`)
      return this.status(res, 401, 'Unauthorized', 'bad token');
    const namespace = m[1] === undefined ? undefined : decodeURIComponent(m[1]);
    const resource = m[2] ?? '';
    const sel = url.searchParams.get('labelSelector');
    const kv = sel === null ? undefined : (sel.split('=') as [string, string]);
    const watch = url.searchParams.get('watch') === '1' || url.searchParams.get('watch') === 'true';
    if (watch) this.requests.watch++;
    else this.requests.list++;
    const fault = this.fault(watch ? 'watch' : 'list', resource);
    if (fault === 'hang') {
      this.hung.add(() => res.destroy());
      return;
    }
    if (fault === 'status-500') return this.status(res, 500, 'InternalError', 'adversary says no');
    if (watch) this.watch(req, res, fault, { resource, namespace, selector: kv }, url);
    else this.list(req, res, fault, { resource, namespace, selector: kv });
  }

  private status(res: Res, code: number, reason: string, message: string): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code, reason, message }));
  }

  private list(req: Req, res: Res, fault: Fault, w: Selection): void {
    if (fault === 'gone') return this.status(res, 410, 'Expired', 'too old');
    const items = [...this.objects.entries()]
      .filter(([k, o]) => k.startsWith(`${w.resource}/`) && matches(w, w.resource, o))
      .map(([, o]) => o);
    let body = JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      metadata: { resourceVersion: String(this.rv) },
      items,
    });
    if (fault === 'garbage') body = `<html>${body.slice(0, 40)}`;
    else if (fault === 'null' || fault === 'error-no-object') body = 'null';
    else if (fault === 'no-metadata') body = JSON.stringify({ items: [{ kind: 'x' }], metadata: {} });
    else if (fault === 'truncated') body = body.slice(0, Math.floor(body.length * this.rng()));
    else if (fault === 'huge') body = `{"items":[${'"x",'.repeat(this.opts.hugeBytes / 4)}"x"]`;
    res.writeHead(200, { 'content-type': 'application/json' });
    this.emit(req, res, Buffer.from(body), fault, true);
  }

  /** Write `data` according to the fault (whole, dripped, cut at a random offset, or half-open). */
  private emit(req: Req, res: Res, data: Buffer, fault: Fault, end: boolean): void {
    if (fault === 'drop') {
      res.write(data.subarray(0, Math.floor(data.length * this.rng())));
      this.later(1, () => this.cut(req, res));
      return;
    }
    if (fault === 'half-open') {
      res.write(data.subarray(0, Math.floor(data.length * this.rng())));
      this.later(1, () => this.halfOpen(req.socket?.remotePort));
      return;
    }
    if (fault === 'drip') {
      let off = 0;
      const step = (): void => {
        if (res.destroyed || res.writableEnded) return;
        const n = 1 + Math.floor(this.rng() * 64);
        res.write(data.subarray(off, off + n));
        off += n;
        if (off < data.length) this.later(2, step);
        else if (end) res.end();
      };
      step();
      return;
    }
    if (end) res.end(data);
    else res.write(data);
  }

  /** Cut: the whole connection (HTTP/1.1, or sometimes HTTP/2) or just the stream (HTTP/2). */
  private cut(req: Req, res: Res): void {
    const stream = (res as unknown as { stream?: http2.ServerHttp2Stream }).stream;
    if (stream !== undefined && this.rng() < 0.5) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    else {
      const p = this.pairs.get(req.socket?.remotePort ?? -1);
      if (p !== undefined) {
        p.client.destroy();
        p.up.destroy();
      } else res.destroy();
    }
  }

  private watch(req: Req, res: Res, fault: Fault, w: Selection, url: URL): void {
    const from = Number(url.searchParams.get('resourceVersion') ?? '0');
    const line = (o: unknown): Buffer => Buffer.from(JSON.stringify(o) + '\n');
    const gone = (): Buffer =>
      line({
        type: 'ERROR',
        object: {
          kind: 'Status',
          apiVersion: 'v1',
          status: 'Failure',
          code: 410,
          reason: 'Expired',
          message: 'too old',
        },
      });
    res.writeHead(200, { 'content-type': 'application/json' });
    // As kube-apiserver does: the watch's headers go out at once, before any event.
    res.flushHeaders();
    if (from !== 0 && from < this.floorRv) {
      res.end(gone());
      return;
    }
    switch (fault) {
      case 'empty':
        res.end();
        return;
      case 'gone':
        res.end(gone());
        return;
      case 'garbage':
        res.end(Buffer.from('{"type":"ADDED","object":{]]\n'));
        return;
      case 'null':
        res.end(Buffer.from('null\n'));
        return;
      case 'error-no-object':
        res.end(Buffer.from('{"type":"ERROR"}\n'));
        return;
      case 'no-metadata':
        res.end(line({ type: 'ADDED', object: { kind: 'EndpointSlice' } }));
        return;
      case 'truncated':
        res.end(Buffer.from('{"type":"MODIFIED","object":{"metadata":{"na'));
        return;
      case 'huge': {
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        let sent = 0;
        const step = (): void => {
          if (res.destroyed || res.writableEnded || sent >= this.opts.hugeBytes) return;
          sent += chunk.length;
          if (res.write(chunk)) setImmediate(step);
          else res.once('drain', step);
        };
        res.write(Buffer.from('{"type":"ADDED","object":{"metadata":{"name":"'));
        step();
        return;
      }
      default:
    }
    // Behaving (or drop / drip / half-open applied to the replayed history): replay since `from`,
    // then follow live changes with bookmarks until the requested timeout.
    const replay = this.history.filter((c) => c.rv > from && matches(w, c.resource, c.obj));
    const out = Buffer.concat(replay.map((c) => line({ type: c.type, object: c.obj })));
    if (fault === 'drop' || fault === 'half-open' || fault === 'drip') {
      const bookmark = line({
        type: 'BOOKMARK',
        object: { kind: 'x', metadata: { resourceVersion: String(this.rv) } },
      });
      this.emit(req, res, Buffer.concat([out, bookmark]), fault, false);
      if (fault !== 'drip') return;
    } else if (out.length > 0) res.write(out);
    const sub: WatchSub = { ...w, send: (c) => res.write(line({ type: c.type, object: c.obj })) };
    this.subs.add(sub);
    const bm = setInterval(() => {
      res.write(
        line({ type: 'BOOKMARK', object: { kind: 'x', metadata: { resourceVersion: String(this.rv) } } }),
      );
    }, this.opts.bookmarkIntervalMs);
    bm.unref();
    const timeoutS = Number(url.searchParams.get('timeoutSeconds') ?? '0');
    const end = timeoutS > 0 ? setTimeout(() => res.end(), timeoutS * 1000) : undefined;
    end?.unref();
    const stop = (): void => {
      clearInterval(bm);
      if (end !== undefined) clearTimeout(end);
      this.subs.delete(sub);
    };
    res.once('close', stop);
    res.once('finish', stop);
  }
}

function matches(s: Selection, resource: string, o: Obj): boolean {
  if (s.resource !== resource) return false;
  if (s.namespace !== undefined && o.metadata.namespace !== s.namespace) return false;
  if (s.selector !== undefined && o.metadata.labels?.[s.selector[0]] !== s.selector[1]) return false;
  return true;
}

/** An EndpointSlice of Service `service` with one ready endpoint per address. */
export function slice(namespace: string, service: string, ips: readonly string[], port = 50051): Obj {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${service}-s`, namespace, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
    ports: [{ name: 'grpc', port, protocol: 'TCP' }],
  };
}
