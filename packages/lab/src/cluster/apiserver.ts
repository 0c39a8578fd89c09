// EmbeddedApiServer: the Kubernetes API over real HTTP, served from a MemoryStore. It answers the
// subset grpc-kube and its lab use with kube-apiserver's paths, JSON shapes, status codes and watch
// semantics (chunked JSON lines, bookmarks, ERROR 410 after compaction, timeoutSeconds), bearer-token
// authentication and RBAC-style authorization with the real denial messages. stop() is an API outage:
// the listener and every socket go at once, the data stays, and start() listens again on the same port.

import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import type { KubeObject, WatchEvent } from 'grpc-kube/internal/kube/types.js';
import { RESOURCES, type ResourceType } from './store-api.js';
import { bindPod } from './kube-api.js';
import { MemoryStore, STATUS_SUBRESOURCE, type StoreDeleteOptions, type StoreListOptions } from './store.js';
import {
  KubeStatusError,
  badRequest,
  forbidden,
  internalError,
  methodNotAllowed,
  notFound,
  pathNotFound,
  requestTooLarge,
  serviceUnavailable,
  unauthorized,
  unsupportedMediaType,
} from './apiserver-status.js';
import { patchTypeOf } from './apiserver-patch.js';
import { parseFieldSelector, parseLabelSelector } from './selector.js';
import { supportedFields } from './store.js';

/** An RBAC PolicyRule; '*' is a wildcard in every list. Without `namespaces` the rule is cluster-wide. */
export interface AccessRule {
  readonly verbs: readonly string[];
  readonly apiGroups: readonly string[];
  /** Plural resources; 'pods/status' or '*\/status' for the status subresource. */
  readonly resources: readonly string[];
  /** Namespaces the rule applies in (a RoleBinding); '*' = every namespace but not cluster scope. */
  readonly namespaces?: readonly string[];
  readonly resourceNames?: readonly string[];
}

export interface Identity {
  /** e.g. `system:serviceaccount:default:reader`. */
  readonly user: string;
  readonly groups?: readonly string[];
  readonly rules: readonly AccessRule[];
}

export interface EmbeddedApiServerOptions {
  /** The store to serve; default a new MemoryStore(). */
  readonly store?: MemoryStore;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 0 (ephemeral); the port chosen first is reused by every later start(). */
  readonly port?: number;
  /** Interval between BOOKMARK events on watches that allow them. Default 60000 (as kube-apiserver). */
  readonly bookmarkIntervalMs?: number;
  /** Server-side end of watches without timeoutSeconds; default a random 1800–3600 s per watch (min-request-timeout). */
  readonly watchTimeoutSeconds?: number;
  /** Token with full access; default a random one. */
  readonly adminToken?: string;
  /** Request bodies larger than this answer 413. Default 3 MiB (as kube-apiserver). */
  readonly maxBodyBytes?: number;
  /** A watch whose unsent output exceeds this is closed, as the API closes slow watchers. Default 16 MiB. */
  readonly maxWatchBufferBytes?: number;
  /** Serve HTTPS with this key and certificate; `ca` (default: cert) goes into kubeConfig() as caData. */
  readonly tls?: {
    readonly key: string | Buffer;
    readonly cert: string | Buffer;
    readonly ca?: string | Buffer;
  };
}

/** Options for `new KubeConfig().loadFromOptions(...)` of @kubernetes/client-node. */
export interface KubeConfigObject {
  clusters: Array<{ name: string; server: string; skipTLSVerify: boolean; caData?: string }>;
  users: Array<{ name: string; token: string }>;
  contexts: Array<{ name: string; cluster: string; user: string; namespace?: string }>;
  currentContext: string;
}

export interface ApiServerStats extends ReturnType<MemoryStore['stats']> {
  /** HTTP requests by `${verb} ${resource}` (verb as RBAC names it), since construction. */
  readonly httpRequests: Record<string, number>;
  /** Open HTTP watch streams. */
  readonly watchStreams: number;
  /** Open TCP connections. */
  readonly connections: number;
}

export const EMBEDDED_GIT_VERSION = 'v1.36.3-grpc-kube-embedded';
const CLUSTER_NAME = 'grpc-kube-embedded';
const ADMIN_IDENTITY: Identity = {
  user: 'kubernetes-admin',
  groups: ['system:masters', 'system:authenticated'],
  rules: [{ verbs: ['*'], apiGroups: ['*'], resources: ['*'] }],
};

interface Route {
  readonly group: string;
  readonly version: string;
  readonly resource: string;
  readonly namespace: string;
  readonly name: string;
  readonly subresource: string;
  readonly watchPath: boolean;
  readonly rt: ResourceType | undefined;
}

interface WatchStream {
  readonly res: http.ServerResponse;
  close(mode: 'end' | 'destroy'): void;
  /** Writes held back while partitioned, in order. */
  held: string[];
  flush(): void;
}

interface Fault {
  remaining: number;
  readonly status: number;
  readonly pathPrefix: string | undefined;
}

function apiVersionOf(rt: ResourceType): string {
  return rt.group === '' ? rt.version : `${rt.group}/${rt.version}`;
}

function boolParam(v: string | null): boolean {
  return v !== null && ['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v);
}

function intParam(v: string | null, name: string): number | undefined {
  if (v === null || v === '') return undefined;
  if (!/^-?[0-9]+$/.test(v)) throw badRequest(`invalid ${name}: "${v}"`);
  return Number(v);
}

function withoutTypeMeta(o: KubeObject): Omit<KubeObject, 'kind' | 'apiVersion'> {
  const { kind: _k, apiVersion: _a, ...rest } = o;
  return rest;
}

function yamlString(s: string): string {
  return JSON.stringify(s); // a JSON string is a valid YAML double-quoted scalar
}

function ruleAllows(r: AccessRule, verb: string, route: Route): boolean {
  if (!r.verbs.includes('*') && !r.verbs.includes(verb)) return false;
  if (!r.apiGroups.includes('*') && !r.apiGroups.includes(route.group)) return false;
  const sub = route.subresource;
  const resOk = r.resources.some((x) =>
    sub === ''
      ? x === '*' || x === route.resource
      : x === '*' || x === `${route.resource}/${sub}` || x === `*/${sub}`,
  );
  if (!resOk) return false;
  if (r.namespaces !== undefined) {
    if (route.namespace === '') return false;
    if (!r.namespaces.includes('*') && !r.namespaces.includes(route.namespace)) return false;
  }
  if (r.resourceNames !== undefined && r.resourceNames.length > 0) {
    if (route.name === '' || !r.resourceNames.includes(route.name)) return false;
  }
  return true;
}

export class EmbeddedApiServer {
  readonly store: MemoryStore;
  readonly adminToken: string;
  private readonly host: string;
  private port: number;
  private readonly bookmarkIntervalMs: number;
  private readonly watchTimeoutSeconds: number | undefined;
  private readonly maxBodyBytes: number;
  private readonly maxWatchBufferBytes: number;
  private readonly tokens = new Map<string, Identity>();
  private server: http.Server | https.Server | undefined;
  private readonly tls: EmbeddedApiServerOptions['tls'];
  private readonly sockets = new Set<Socket>();
  private readonly streams = new Set<WatchStream>();
  private readonly httpCounts = new Map<string, number>();
  private faults: Fault[] = [];
  private partitioned = false;
  private parked: Array<() => void> = [];
  /** Path prefixes whose requests are held unanswered (holdRequests), with the requests held. */
  private readonly holds = new Map<string, Array<() => void>>();
  private closed = false;
  private starting: Promise<void> | undefined;

  constructor(opts: EmbeddedApiServerOptions = {}) {
    const bookmark = opts.bookmarkIntervalMs ?? 60_000;
    if (!Number.isFinite(bookmark) || bookmark <= 0) {
      throw new InvalidOptionError('bookmarkIntervalMs', 'must be a positive number of milliseconds');
    }
    const port = opts.port ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new InvalidOptionError('port', 'must be 0–65535');
    if (opts.watchTimeoutSeconds !== undefined && !(opts.watchTimeoutSeconds > 0)) {
      throw new InvalidOptionError('watchTimeoutSeconds', 'must be a positive number of seconds');
    }
    this.store = opts.store ?? new MemoryStore();
    this.host = opts.host ?? '127.0.0.1';
    this.port = port;
    this.bookmarkIntervalMs = bookmark;
    this.watchTimeoutSeconds = opts.watchTimeoutSeconds;
    this.maxBodyBytes = opts.maxBodyBytes ?? 3 * 1024 * 1024;
    this.maxWatchBufferBytes = opts.maxWatchBufferBytes ?? 16 * 1024 * 1024;
    this.adminToken = opts.adminToken ?? randomBytes(24).toString('base64url');
    this.tls = opts.tls === undefined ? undefined : { ...opts.tls };
    this.tokens.set(this.adminToken, ADMIN_IDENTITY);
  }

  // ---- lifecycle ----

  /** Listens (again). The first start picks the port; later starts reuse it. */
  async start(): Promise<void> {
    if (this.closed)
      throw new GrpcKubeError('GK_ERR_DESTROYED', 'the embedded API server was closed; create a new one');
    if (this.server !== undefined) return this.starting;
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => this.onRequest(req, res);
    const server =
      this.tls === undefined
        ? http.createServer(handler)
        : https.createServer({ key: this.tls.key, cert: this.tls.cert }, handler);
    server.keepAliveTimeout = 60_000;
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('clientError', (_err, socket) => socket.destroy());
    this.server = server;
    this.starting = new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        this.server = undefined;
        reject(
          new GrpcKubeError(
            'GK_ERR_LAB',
            `embedded API server cannot listen on ${this.host}:${this.port}: ${err.message}`,
            { cause: err },
          ),
        );
      };
      server.once('error', onError);
      server.listen(this.port, this.host, () => {
        server.off('error', onError);
        this.port = (server.address() as AddressInfo).port;
        if (this.server !== server) server.close(); // stop() came while we were binding
        resolve();
      });
    });
    return this.starting;
  }

  /** An API outage: closes the listener and destroys every connection and watch at once. Data is kept. */
  async stop(): Promise<void> {
    // Let a start() in flight finish binding first: a server closed while binding never calls back.
    await this.starting?.catch(() => {});
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    this.starting = undefined;
    const closedP = new Promise<void>((resolve) => server.close(() => resolve()));
    this.parked = []; // their sockets go below
    for (const s of [...this.streams]) s.close('destroy');
    for (const s of [...this.sockets]) s.destroy();
    this.sockets.clear();
    await closedP;
  }

  /** Final stop; start() is refused afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    await this.stop();
  }

  get listening(): boolean {
    return this.server !== undefined;
  }

  /** `http://127.0.0.1:<port>`; valid after the first start(). */
  get url(): string {
    if (this.port === 0)
      throw new GrpcKubeError('GK_ERR_LAB', 'the embedded API server has no port yet; await start() first');
    const scheme = this.tls === undefined ? 'http' : 'https';
    return `${scheme}://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  // ---- identities and client configuration ----

  addToken(token: string, identity: Identity): void {
    if (token === '') throw new InvalidOptionError('token', 'must not be empty');
    this.tokens.set(token, structuredClone(identity));
  }

  removeToken(token: string): void {
    if (token !== this.adminToken) this.tokens.delete(token);
  }

  /** A kubeconfig for @kubernetes/client-node's KubeConfig.loadFromOptions(). */
  kubeConfig(token: string = this.adminToken, opts: { namespace?: string } = {}): KubeConfigObject {
    const user = this.tokens.get(token)?.user ?? 'user';
    // Plain HTTP: @kubernetes/client-node refuses http: servers unless skipTLSVerify is set.
    const cluster =
      this.tls === undefined
        ? { name: CLUSTER_NAME, server: this.url, skipTLSVerify: true }
        : {
            name: CLUSTER_NAME,
            server: this.url,
            skipTLSVerify: false,
            caData: Buffer.from(this.tls.ca ?? this.tls.cert).toString('base64'),
          };
    return {
      clusters: [cluster],
      users: [{ name: user, token }],
      contexts: [{ name: CLUSTER_NAME, cluster: CLUSTER_NAME, user, namespace: opts.namespace ?? 'default' }],
      currentContext: CLUSTER_NAME,
    };
  }

  /** The same kubeconfig as YAML, for files, kubectl and KubeConfig.loadFromString(). */
  kubeConfigYaml(token: string = this.adminToken, opts: { namespace?: string } = {}): string {
    const c = this.kubeConfig(token, opts);
    const user = c.users[0]?.name ?? 'user';
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      `- name: ${CLUSTER_NAME}`,
      '  cluster:',
      `    server: ${yamlString(this.url)}`,
      ...(c.clusters[0]?.caData !== undefined
        ? [`    certificate-authority-data: ${c.clusters[0].caData}`]
        : ['    insecure-skip-tls-verify: true']),
      'contexts:',
      `- name: ${CLUSTER_NAME}`,
      '  context:',
      `    cluster: ${CLUSTER_NAME}`,
      `    user: ${yamlString(user)}`,
      `    namespace: ${yamlString(opts.namespace ?? 'default')}`,
      `current-context: ${CLUSTER_NAME}`,
      'preferences: {}',
      'users:',
      `- name: ${yamlString(user)}`,
      '  user:',
      `    token: ${yamlString(token)}`,
      '',
    ].join('\n');
  }

  // ---- fault hooks and stats ----

  /** Closes every open watch stream but keeps listening. 'end' finishes the chunked body; 'destroy' resets. */
  dropWatches(mode: 'end' | 'destroy' = 'end'): number {
    const all = [...this.streams];
    for (const s of all) s.close(mode);
    return all.length;
  }

  /**
   * A network partition: while on, requests are accepted but not answered and open watches send
   * nothing (their events are held, as a stalled TCP stream holds them). Turning it off answers the
   * held requests and flushes the held events in order; stop() drops them with their connections.
   */
  setPartitioned(on: boolean): void {
    this.partitioned = on;
    if (on) return;
    const parked = this.parked;
    this.parked = [];
    for (const run of parked) run();
    for (const s of [...this.streams]) s.flush();
  }

  /**
   * Requests under `pathPrefix` are accepted and not answered (a server stuck on one resource) until
   * the returned function is called, which answers them.
   */
  holdRequests(pathPrefix: string): () => void {
    const held: Array<() => void> = [];
    this.holds.set(pathPrefix, held);
    return () => {
      if (this.holds.get(pathPrefix) === held) this.holds.delete(pathPrefix);
      for (const run of held.splice(0)) run();
    };
  }

  /** The next `count` requests (optionally only under `pathPrefix`) answer `status` (default 503). */
  failNextRequests(count: number, opts: { status?: number; pathPrefix?: string } = {}): void {
    if (!Number.isInteger(count) || count < 0)
      throw new InvalidOptionError('count', 'must be an integer >= 0');
    this.faults.push({ remaining: count, status: opts.status ?? 503, pathPrefix: opts.pathPrefix });
  }

  stats(): ApiServerStats {
    const httpRequests: Record<string, number> = {};
    for (const [k, v] of this.httpCounts) httpRequests[k] = v;
    return {
      ...this.store.stats(),
      httpRequests,
      watchStreams: this.streams.size,
      connections: this.sockets.size,
    };
  }

  // ---- request handling ----

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    res.on('error', () => {}); // a client that leaves mid-response is not our error
    req.on('error', () => {});
    const run = (): void => {
      if (res.destroyed) return;
      this.handle(req, res).catch((err: unknown) => this.sendError(res, err));
    };
    const path = req.url ?? '/';
    const held = [...this.holds].find(([prefix]) => path.startsWith(prefix))?.[1];
    if (held !== undefined) held.push(run);
    else if (this.partitioned) this.parked.push(run);
    else run();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://embedded');
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
    const method = req.method ?? 'GET';

    if (method === 'GET' && (path === '/healthz' || path === '/readyz' || path === '/livez')) {
      res.writeHead(200, {
        'Content-Type': 'text/plain; charset=utf-8',
        'X-Content-Type-Options': 'nosniff',
      });
      res.end('ok');
      return;
    }
    const fault = this.faults.find(
      (f) => f.remaining > 0 && (f.pathPrefix === undefined || path.startsWith(f.pathPrefix)),
    );
    if (fault !== undefined) {
      fault.remaining--;
      this.faults = this.faults.filter((f) => f.remaining > 0);
      throw fault.status === 503
        ? serviceUnavailable('the server is currently unable to handle the request')
        : internalError(`injected fault (HTTP ${fault.status})`);
    }
    if (method === 'GET' && path === '/version') {
      this.sendJson(res, 200, this.versionInfo());
      return;
    }
    const identity = this.authenticate(req);
    if (method === 'GET') {
      const doc = this.discovery(path);
      if (doc !== undefined) {
        this.sendJson(res, 200, doc);
        return;
      }
    }
    const route = this.route(path);
    if (route === undefined) throw pathNotFound();

    const q = url.searchParams;
    const watch = route.watchPath || boolParam(q.get('watch'));
    const verb = this.verbOf(method, route, watch);
    this.authorize(identity, verb, route);
    this.httpCounts.set(
      `${verb} ${route.resource}`,
      (this.httpCounts.get(`${verb} ${route.resource}`) ?? 0) + 1,
    );
    const rt = route.rt;
    if (rt === undefined) throw pathNotFound();
    if (route.subresource === 'binding' && rt.resource === 'pods' && verb === 'create') {
      // No scheduler here either: a kubelet binds pods as it would on a real API server.
      const out = bindPod(this.store, route.namespace, route.name, this.parseJson(await this.readBody(req)));
      this.sendJson(res, 201, out);
      return;
    }
    if (
      route.subresource !== '' &&
      !(route.subresource === 'status' && STATUS_SUBRESOURCE.has(rt.resource))
    ) {
      throw pathNotFound();
    }
    if (route.subresource !== '' && !['get', 'update', 'patch'].includes(verb)) throw methodNotAllowed();
    const ns = rt.namespaced ? route.namespace : undefined;

    switch (verb) {
      case 'get': {
        const o = this.store.get(rt, ns, route.name);
        if (o === undefined) throw notFound(rt, route.name);
        this.sendJson(res, 200, o);
        return;
      }
      case 'list':
        this.list(res, rt, ns, q);
        return;
      case 'watch':
        this.watch(res, rt, ns, route.name, q, identity);
        return;
      case 'create': {
        const body = this.objectBody(await this.readBody(req), rt, ns, undefined);
        if (STATUS_SUBRESOURCE.has(rt.resource) && rt.resource !== 'nodes' && rt.resource !== 'namespaces') {
          // PrepareForCreate of these strategies: status is the controllers' to write.
          const o = body as KubeObject & { status?: unknown };
          if (rt.resource === 'pods') o.status = { phase: 'Pending' };
          else delete o.status;
        }
        this.sendJson(res, 201, this.store.create(rt, body));
        return;
      }
      case 'update': {
        const body = this.objectBody(await this.readBody(req), rt, ns, route.name);
        const out =
          route.subresource === 'status'
            ? this.store.updateStatus(rt, body)
            : this.store.update(rt, body, { keepStatus: STATUS_SUBRESOURCE.has(rt.resource) });
        this.sendJson(res, 200, out);
        return;
      }
      case 'patch': {
        const type = patchTypeOf(req.headers['content-type']);
        if (type === undefined) throw unsupportedMediaType(req.headers['content-type'] ?? '');
        const patch = this.parseJson(await this.readBody(req));
        const out = this.store.patch(rt, ns, route.name, patch, {
          type,
          ...(route.subresource === 'status' ? { subresource: 'status' as const } : {}),
          keepStatus: STATUS_SUBRESOURCE.has(rt.resource),
        });
        this.sendJson(res, 200, out);
        return;
      }
      case 'delete': {
        const opts = this.deleteOptions(await this.readBody(req), q);
        const out = this.store.delete(rt, ns, route.name, opts);
        const stillThere = this.store.has(rt, ns, route.name);
        if (stillThere || rt.resource === 'pods' || rt.resource === 'namespaces') {
          this.sendJson(res, 200, out); // ReturnDeletedObject kinds, or deletion pending
          return;
        }
        const details: Record<string, string> = { name: route.name };
        if (rt.group !== '') details.group = rt.group;
        details.kind = rt.resource;
        details.uid = out?.metadata.uid ?? '';
        this.sendJson(res, 200, {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Success',
          details,
        });
        return;
      }
      case 'deletecollection': {
        const opts = this.deleteOptions(await this.readBody(req), q);
        const page = this.store.listPage(rt, this.listOptions(ns, q, false));
        const items: KubeObject[] = [];
        for (const o of page.items) {
          const gone = this.store.delete(rt, o.metadata.namespace, o.metadata.name ?? '', opts);
          if (gone !== undefined) items.push(gone);
        }
        this.sendJson(res, 200, {
          kind: rt.listKind,
          apiVersion: apiVersionOf(rt),
          metadata: { resourceVersion: this.store.resourceVersion },
          items: items.map(withoutTypeMeta),
        });
        return;
      }
      default:
        throw methodNotAllowed();
    }
  }

  private authenticate(req: http.IncomingMessage): Identity {
    const h = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
    const identity = m?.[1] !== undefined ? this.tokens.get(m[1]) : undefined;
    if (identity === undefined) throw unauthorized();
    return identity;
  }

  private authorize(identity: Identity, verb: string, route: Route): void {
    if (identity.rules.some((r) => ruleAllows(r, verb, route))) return;
    throw forbidden({
      user: identity.user,
      verb,
      group: route.group,
      resource: route.resource,
      subresource: route.subresource,
      namespace: route.namespace,
      name: route.name,
    });
  }

  private verbOf(method: string, route: Route, watch: boolean): string {
    switch (method) {
      case 'GET':
        if (watch) return 'watch';
        return route.name === '' ? 'list' : 'get';
      case 'POST':
        if (route.name !== '' && route.subresource !== 'binding') throw methodNotAllowed();
        if (route.rt?.namespaced && route.namespace === '') throw methodNotAllowed();
        return 'create';
      case 'PUT':
        if (route.name === '') throw methodNotAllowed();
        return 'update';
      case 'PATCH':
        if (route.name === '') throw methodNotAllowed();
        return 'patch';
      case 'DELETE':
        if (route.name === '' && route.rt?.namespaced && route.namespace === '') throw methodNotAllowed();
        return route.name === '' ? 'deletecollection' : 'delete';
      default:
        throw methodNotAllowed();
    }
  }

  /** Parses kube-apiserver's resource paths (RequestInfoFactory rules). */
  private route(path: string): Route | undefined {
    const seg = path
      .split('/')
      .filter((s) => s !== '')
      .map((s) => decodeURIComponent(s));
    let group: string;
    let version: string;
    let rest: string[];
    if (seg[0] === 'api' && seg.length >= 3) {
      group = '';
      version = seg[1] ?? '';
      rest = seg.slice(2);
    } else if (seg[0] === 'apis' && seg.length >= 4) {
      group = seg[1] ?? '';
      version = seg[2] ?? '';
      rest = seg.slice(3);
    } else return undefined;
    let watchPath = false;
    if (rest[0] === 'watch') {
      watchPath = true;
      rest = rest.slice(1);
    }
    let namespace = '';
    if (rest[0] === 'namespaces' && rest.length >= 3 && rest[2] !== 'status' && rest[2] !== 'finalize') {
      namespace = rest[1] ?? '';
      rest = rest.slice(2);
    }
    if (rest.length === 0 || rest.length > 3) return undefined;
    const resource = rest[0] ?? '';
    const name = rest[1] ?? '';
    const subresource = rest[2] ?? '';
    let rt = (Object.values(RESOURCES) as ResourceType[]).find(
      (r) => r.group === group && r.version === version && r.resource === resource,
    );
    if (rt !== undefined && !rt.namespaced && namespace !== '') rt = undefined;
    if (rt !== undefined && rt.namespaced && namespace === '' && name !== '') rt = undefined;
    return { group, version, resource, namespace, name, subresource, watchPath, rt };
  }

  private listOptions(ns: string | undefined, q: URLSearchParams, paging: boolean): StoreListOptions {
    const limit = paging ? intParam(q.get('limit'), 'limit') : undefined;
    if (limit !== undefined && limit < 0) throw badRequest(`invalid limit: ${limit}`);
    const rawMatch = q.get('resourceVersionMatch');
    if (rawMatch !== null && rawMatch !== '' && rawMatch !== 'Exact' && rawMatch !== 'NotOlderThan') {
      throw badRequest(`resourceVersionMatch: Unsupported value: "${rawMatch}"`);
    }
    const match = rawMatch as 'Exact' | 'NotOlderThan' | '' | null;
    return {
      ...(ns !== undefined ? { namespace: ns } : {}),
      ...(q.get('labelSelector') ? { labelSelector: q.get('labelSelector') ?? '' } : {}),
      ...(q.get('fieldSelector') ? { fieldSelector: q.get('fieldSelector') ?? '' } : {}),
      ...(limit !== undefined ? { limit } : {}),
      ...(paging && q.get('continue') ? { continue: q.get('continue') ?? '' } : {}),
      ...(q.get('resourceVersion') !== null ? { resourceVersion: q.get('resourceVersion') ?? '' } : {}),
      ...(match === 'Exact' || match === 'NotOlderThan' ? { resourceVersionMatch: match } : {}),
    };
  }

  private list(res: http.ServerResponse, rt: ResourceType, ns: string | undefined, q: URLSearchParams): void {
    const page = this.store.listPage(rt, this.listOptions(ns, q, true));
    const metadata: Record<string, unknown> = { resourceVersion: page.resourceVersion };
    if (page.continue !== undefined) metadata.continue = page.continue;
    if (page.remainingItemCount !== undefined) metadata.remainingItemCount = page.remainingItemCount;
    this.sendJson(res, 200, {
      kind: rt.listKind,
      apiVersion: apiVersionOf(rt),
      metadata,
      items: page.items.map(withoutTypeMeta),
    });
  }

  private watch(
    res: http.ServerResponse,
    rt: ResourceType,
    ns: string | undefined,
    name: string,
    q: URLSearchParams,
    identity: Identity,
  ): void {
    const labelSelector = q.get('labelSelector') || undefined;
    let fieldSelector = q.get('fieldSelector') || undefined;
    if (name !== '')
      fieldSelector = fieldSelector ? `${fieldSelector},metadata.name=${name}` : `metadata.name=${name}`;
    // Malformed parameters are plain 400 answers, before the stream starts.
    parseLabelSelector(labelSelector);
    parseFieldSelector(fieldSelector, supportedFields(rt));
    const timeoutSeconds = intParam(q.get('timeoutSeconds'), 'timeoutSeconds');
    const allowBookmarks = boolParam(q.get('allowWatchBookmarks'));
    const sendInitialEvents = boolParam(q.get('sendInitialEvents'));
    const resourceVersion = q.get('resourceVersion') ?? '';
    if (resourceVersion !== '' && !/^[0-9]+$/.test(resourceVersion)) {
      throw badRequest(`invalid resource version: "${resourceVersion}"`);
    }

    res.writeHead(200, {
      'Audit-Id': randomUUID(),
      'Cache-Control': 'no-cache, private',
      'Content-Type': 'application/json',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();

    let closed = false;
    let endAfterFlush = false;
    let stopWatch: (() => void) | undefined;
    let lastRv = 0;
    const timers: NodeJS.Timeout[] = [];
    const cleanup = (): void => {
      if (closed) return;
      closed = true;
      for (const t of timers) clearTimeout(t);
      stopWatch?.();
      this.streams.delete(stream);
    };
    const stream: WatchStream = {
      res,
      held: [],
      flush: () => {
        const lines = stream.held;
        stream.held = [];
        if (res.writableEnded || res.destroyed) return;
        for (const line of lines) res.write(line);
        if (endAfterFlush) stream.close('end');
      },
      close: (mode) => {
        cleanup();
        if (mode === 'destroy') res.socket?.destroy();
        else if (!res.writableEnded) res.end();
        res.destroy();
      },
    };
    const write = (ev: WatchEvent): void => {
      if (closed || res.writableEnded || res.destroyed) return;
      const line = `${JSON.stringify(ev)}\n`;
      if (this.partitioned) {
        stream.held.push(line);
        return;
      }
      res.write(line);
      if (res.writableLength > this.maxWatchBufferBytes) stream.close('destroy'); // a consumer too slow to keep
    };
    this.streams.add(stream);
    // 'close' on the response fires both when we end it and when the client goes away.
    res.on('close', cleanup);

    try {
      stopWatch = this.store.watch(
        rt,
        {
          ...(ns !== undefined ? { namespace: ns } : {}),
          ...(labelSelector !== undefined ? { labelSelector } : {}),
          ...(fieldSelector !== undefined ? { fieldSelector } : {}),
          resourceVersion: sendInitialEvents ? '' : resourceVersion,
          client: identity.user,
        },
        (ev) => {
          const rv = Number((ev.object as KubeObject).metadata.resourceVersion ?? 0);
          if (rv > lastRv) lastRv = rv;
          write(ev);
        },
      );
    } catch (err) {
      const status =
        err instanceof KubeStatusError ? err.statusObject : internalError(String(err)).statusObject;
      write({ type: 'ERROR', object: status });
      stream.close('end');
      return;
    }
    if (closed) {
      stopWatch();
      return;
    }
    const bookmark = (initialEnd: boolean): void => {
      lastRv = Math.max(lastRv, Number(this.store.resourceVersion));
      const metadata: Record<string, unknown> = { resourceVersion: String(lastRv) };
      if (initialEnd) metadata.annotations = { 'k8s.io/initial-events-end': 'true' };
      write({
        type: 'BOOKMARK',
        object: { kind: rt.kind, apiVersion: apiVersionOf(rt), metadata } as KubeObject,
      });
    };
    if (sendInitialEvents && allowBookmarks) bookmark(true);
    if (allowBookmarks) {
      const t = setInterval(() => bookmark(false), this.bookmarkIntervalMs);
      t.unref();
      timers.push(t);
    }
    const timeoutS = timeoutSeconds ?? this.watchTimeoutSeconds ?? randomInt(1800, 3600);
    if (timeoutS > 0) {
      const t = setTimeout(() => {
        if (!this.partitioned) return stream.close('end');
        // The end of the stream is held back like its events; no new events are produced.
        stopWatch?.();
        endAfterFlush = true;
      }, timeoutS * 1000);
      t.unref();
      timers.push(t);
    }
  }

  private deleteOptions(body: Buffer, q: URLSearchParams): StoreDeleteOptions {
    let grace = intParam(q.get('gracePeriodSeconds'), 'gracePeriodSeconds');
    let uid = q.get('preconditions.uid') ?? undefined;
    let rv = q.get('preconditions.resourceVersion') ?? undefined;
    if (body.length > 0) {
      const o = this.parseJson(body) as {
        gracePeriodSeconds?: unknown;
        preconditions?: { uid?: unknown; resourceVersion?: unknown };
      } | null;
      if (o !== null && typeof o === 'object') {
        if (typeof o.gracePeriodSeconds === 'number') grace = o.gracePeriodSeconds;
        if (typeof o.preconditions?.uid === 'string') uid = o.preconditions.uid;
        if (typeof o.preconditions?.resourceVersion === 'string') rv = o.preconditions.resourceVersion;
      }
    }
    return {
      ...(grace !== undefined ? { gracePeriodSeconds: grace } : {}),
      ...(uid !== undefined ? { preconditionUid: uid } : {}),
      ...(rv !== undefined ? { preconditionResourceVersion: rv } : {}),
    };
  }

  private objectBody(
    raw: Buffer,
    rt: ResourceType,
    ns: string | undefined,
    urlName: string | undefined,
  ): KubeObject {
    const body = this.parseJson(raw);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw badRequest(`Object '${rt.kind}' is missing in '${raw.toString('utf8').slice(0, 100)}'`);
    }
    const o = body as KubeObject;
    if (o.kind !== undefined && o.kind !== '' && o.kind !== rt.kind) {
      throw badRequest(
        `the kind of the provided object (${o.kind}) does not match the expected kind (${rt.kind})`,
      );
    }
    if (o.apiVersion !== undefined && o.apiVersion !== '' && o.apiVersion !== apiVersionOf(rt)) {
      throw badRequest(
        `the API version in the data (${o.apiVersion}) does not match the expected API version (${apiVersionOf(rt)})`,
      );
    }
    if (typeof o.metadata !== 'object' || o.metadata === null) o.metadata = {};
    if (ns !== undefined) {
      if (o.metadata.namespace && o.metadata.namespace !== ns) {
        throw badRequest(
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      }
      o.metadata.namespace = ns;
    }
    if (urlName !== undefined) {
      if (o.metadata.name && o.metadata.name !== urlName) {
        throw badRequest(
          `the name of the object (${o.metadata.name}) does not match the name on the URL (${urlName})`,
        );
      }
      o.metadata.name = urlName;
    }
    return o;
  }

  private parseJson(raw: Buffer): unknown {
    try {
      return JSON.parse(raw.toString('utf8'));
    } catch (err) {
      throw badRequest(`couldn't get version/kind; json parse error: ${(err as Error).message}`);
    }
  }

  private readBody(req: http.IncomingMessage): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let tooLarge = false;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > this.maxBodyBytes) tooLarge = true;
        else chunks.push(c);
      });
      req.on('end', () =>
        tooLarge ? reject(requestTooLarge(this.maxBodyBytes)) : resolve(Buffer.concat(chunks)),
      );
      req.on('error', reject);
    });
  }

  private sendJson(res: http.ServerResponse, status: number, body: unknown): void {
    if (res.headersSent || res.destroyed) return;
    const text = `${JSON.stringify(body)}\n`;
    res.writeHead(status, {
      'Audit-Id': randomUUID(),
      'Cache-Control': 'no-cache, private',
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(text),
    });
    res.end(text);
  }

  private sendError(res: http.ServerResponse, err: unknown): void {
    const st = err instanceof KubeStatusError ? err.statusObject : internalError(String(err)).statusObject;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.sendJson(res, st.code, st);
  }

  // ---- discovery ----

  private versionInfo(): Record<string, string> {
    const arch = process.arch === 'x64' ? 'amd64' : process.arch;
    return {
      major: '1',
      minor: '36',
      emulationMajor: '1',
      emulationMinor: '36',
      minCompatibilityMajor: '1',
      minCompatibilityMinor: '35',
      gitVersion: EMBEDDED_GIT_VERSION,
      gitCommit: '0000000000000000000000000000000000000000',
      gitTreeState: 'clean',
      buildDate: '2026-11-01T00:00:00Z',
      goVersion: 'go1.25.3',
      compiler: 'gc',
      platform: `linux/${arch}`,
    };
  }

  private discovery(path: string): unknown {
    const all = Object.values(RESOURCES) as ResourceType[];
    const groups = [...new Set(all.filter((r) => r.group !== '').map((r) => r.group))];
    const groupDoc = (g: string) => {
      // Preferred first: the version of the group's first resource (v1 before v1beta1).
      const versions = [...new Set(all.filter((r) => r.group === g).map((r) => r.version))];
      const gvs = versions.map((v) => ({ groupVersion: `${g}/${v}`, version: v }));
      return { name: g, versions: gvs, preferredVersion: gvs[0] };
    };
    const resourceList = (group: string, version: string) => {
      const resources: unknown[] = [];
      for (const r of all.filter((x) => x.group === group && x.version === version)) {
        resources.push({
          name: r.resource,
          singularName: r.kind.toLowerCase(),
          namespaced: r.namespaced,
          kind: r.kind,
          verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'],
        });
        if (STATUS_SUBRESOURCE.has(r.resource)) {
          resources.push({
            name: `${r.resource}/status`,
            singularName: '',
            namespaced: r.namespaced,
            kind: r.kind,
            verbs: ['get', 'patch', 'update'],
          });
        }
      }
      return resources;
    };
    if (path === '/api') {
      return {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `${this.host}:${this.port}` }],
      };
    }
    if (path === '/api/v1')
      return { kind: 'APIResourceList', groupVersion: 'v1', resources: resourceList('', 'v1') };
    if (path === '/apis') return { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map(groupDoc) };
    const m = /^\/apis\/([^/]+)(?:\/([^/]+))?$/.exec(path);
    if (m !== null && groups.includes(m[1] ?? '')) {
      const g = m[1] ?? '';
      if (m[2] === undefined) return { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(g) };
      if (all.some((r) => r.group === g && r.version === m[2])) {
        return {
          kind: 'APIResourceList',
          apiVersion: 'v1',
          groupVersion: `${g}/${m[2]}`,
          resources: resourceList(g, m[2]),
        };
      }
    }
    return undefined;
  }
}
