// The one way the lab talks to its Kubernetes: an async API keyed by the resource table, with two
// backends that answer alike — the embedded cluster's in-memory store (storeKube) and a real
// kube-apiserver over HTTPS with a kubeconfig's credentials (httpKube). The kubelet, the lab cluster
// and the tests call this, never a hand-written URL. Failures are KubeApiErrors with the HTTP status
// the API answers (404, 409 …), so callers branch on `status`, never on text; no answer at all, 429
// and 5xx are GK_ERR_KUBE_UNREACHABLE (`isTransient`).
//
// watch() follows a collection the way an informer does: synthetic ADDED events for the objects that
// exist, then the API's events; over HTTP, after 410 Expired a re-list is turned into the events that
// bring the caller's view up to date (ADDED / MODIFIED / DELETED), and other failures are retried
// with jittered backoff. The store's events arrive synchronously, HTTP's asynchronously.

import * as http from 'node:http';
import * as https from 'node:https';
import { KubeConfig } from '@kubernetes/client-node';

import { Backoff } from 'grpc-kube/internal/discovery/backoff.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import {
  KubeClient,
  errorFromStatus,
  isExpired,
  resourceUrlPath,
  type ResourcePath,
  type WatchHandle,
} from 'grpc-kube/internal/kube/client.js';
import type { KubeObject, KubeStatus, WatchEvent } from 'grpc-kube/internal/kube/types.js';
import { badRequest, conflict, notFound, preconditionConflict } from './apiserver-status.js';
import { STATUS_SUBRESOURCE, type MemoryStore } from './store.js';
import {
  RESOURCES,
  type DeleteOptions,
  type ListResult,
  type ResourceType,
  type WatchOptions,
} from './store-api.js';

export type { DeleteOptions, ListResult, ResourceType, WatchOptions } from './store-api.js';

/**
 * Every kind the lab reads or writes: what the embedded API server serves (RESOURCES) and what only
 * the real one does (Leases, RBAC, ServiceAccounts, CRDs). The store backend answers 404 for the rest.
 */
export const KINDS = {
  ...RESOURCES,
  leases: {
    group: 'coordination.k8s.io',
    version: 'v1',
    resource: 'leases',
    kind: 'Lease',
    listKind: 'LeaseList',
    namespaced: true,
  },
  serviceaccounts: {
    group: '',
    version: 'v1',
    resource: 'serviceaccounts',
    kind: 'ServiceAccount',
    listKind: 'ServiceAccountList',
    namespaced: true,
  },
  roles: {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    resource: 'roles',
    kind: 'Role',
    listKind: 'RoleList',
    namespaced: true,
  },
  rolebindings: {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    resource: 'rolebindings',
    kind: 'RoleBinding',
    listKind: 'RoleBindingList',
    namespaced: true,
  },
  clusterroles: {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    resource: 'clusterroles',
    kind: 'ClusterRole',
    listKind: 'ClusterRoleList',
    namespaced: false,
  },
  clusterrolebindings: {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    resource: 'clusterrolebindings',
    kind: 'ClusterRoleBinding',
    listKind: 'ClusterRoleBindingList',
    namespaced: false,
  },
  customresourcedefinitions: {
    group: 'apiextensions.k8s.io',
    version: 'v1',
    resource: 'customresourcedefinitions',
    kind: 'CustomResourceDefinition',
    listKind: 'CustomResourceDefinitionList',
    namespaced: false,
  },
} as const satisfies Record<string, ResourceType>;

/** `v1` or `group/version`, as an object's apiVersion reads. */
export function apiVersionOf(rt: Pick<ResourceType, 'group' | 'version'>): string {
  return rt.group === '' ? rt.version : `${rt.group}/${rt.version}`;
}

/** The resource an object of this apiVersion and kind lives in, if the lab knows it. */
export function kindOf(apiVersion: string, kind: string): ResourceType | undefined {
  return (Object.values(KINDS) as ResourceType[]).find(
    (r) => r.kind === kind && apiVersionOf(r) === apiVersion,
  );
}

/** The namespace an object of `rt` is addressed in: its own (default `default`), none if cluster-scoped. */
export function namespaceOf(rt: ResourceType, obj: KubeObject): string | undefined {
  return rt.namespaced ? (obj.metadata.namespace ?? 'default') : undefined;
}

/** The POST subresources the lab uses: binding a pod to a node, a ServiceAccount token request. */
export type PostSubresource = 'binding' | 'token';

export interface FollowHooks {
  /** A failed list or watch, before the backoff and retry (HTTP only). */
  readonly onError?: (err: unknown) => void;
  /** A list (the first one, and each after 410 Expired) (HTTP only). */
  readonly onList?: () => void;
  /**
   * The events of a list are delivered (the first list's ADDED, and each re-list's catch-up): the
   * caller's view is whole, as an informer's HasSynced says. Both backends.
   */
  readonly onSynced?: () => void;
}

export interface Kube {
  /** One object, or undefined when the API answers 404. */
  get<T extends KubeObject>(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
  ): Promise<T | undefined>;
  list<T extends KubeObject>(
    rt: ResourceType,
    opts?: { namespace?: string; labelSelector?: string },
  ): Promise<ListResult<T>>;
  /** 409 when it exists. */
  create<T extends KubeObject>(rt: ResourceType, obj: T): Promise<T>;
  /**
   * PUT: the whole object, or with `status` only its status (the status subresource). A set
   * metadata.resourceVersion that is stale is a 409.
   */
  replace<T extends KubeObject>(rt: ResourceType, obj: T, opts?: { status?: boolean }): Promise<T>;
  /** A JSON merge patch (RFC 7386) of the object, or with `status` of its status subresource. */
  patch<T extends KubeObject>(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    mergePatch: unknown,
    opts?: { status?: boolean },
  ): Promise<T>;
  /** 404 when absent; 409 when `preconditionUid` names another object. */
  delete(rt: ResourceType, namespace: string | undefined, name: string, opts?: DeleteOptions): Promise<void>;
  /** POST to one object's subresource: `pods/NAME/binding`, `serviceaccounts/NAME/token`. */
  post<T>(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    subresource: PostSubresource,
    body: unknown,
  ): Promise<T>;
  /** Follow a collection (see the file comment); returns the function that stops following. */
  watch<T extends KubeObject>(
    rt: ResourceType,
    opts: Omit<WatchOptions, 'resourceVersion'>,
    onEvent: (event: WatchEvent<T>) => void,
    hooks?: FollowHooks,
  ): () => void;
  /** Ends every watch and connection. */
  close(): void;
}

/** HTTP status of a KubeApiError (0 for anything else). */
export function statusOf(err: unknown): number {
  const s = (err as { status?: unknown } | null)?.status;
  return typeof s === 'number' ? s : 0;
}

/** No answer, 429, or a server error (all GK_ERR_KUBE_UNREACHABLE): worth trying again shortly. */
export function isTransient(err: unknown): boolean {
  return err instanceof GrpcKubeError && err.code === 'GK_ERR_KUBE_UNREACHABLE';
}

// ---- the in-memory store ----

/**
 * The embedded cluster's store behind the contract. Kinds it does not hold answer 404 (as a real
 * API server without that API would), and so does a token request: the embedded cluster issues
 * ServiceAccount tokens itself.
 */
export function storeKube(store: MemoryStore): Kube {
  return new StoreKube(store);
}

class StoreKube implements Kube {
  private readonly following = new Following();

  constructor(private readonly store: MemoryStore) {}

  // Errors thrown by the store are the API's (KubeStatusError); async turns them into rejections.
  async get<T extends KubeObject>(
    rt: ResourceType,
    ns: string | undefined,
    name: string,
  ): Promise<T | undefined> {
    served(rt, name);
    return this.store.get<T>(rt, ns, name);
  }

  async list<T extends KubeObject>(
    rt: ResourceType,
    opts: { namespace?: string; labelSelector?: string } = {},
  ): Promise<ListResult<T>> {
    served(rt, '');
    return this.store.list<T>(rt, opts);
  }

  async create<T extends KubeObject>(rt: ResourceType, obj: T): Promise<T> {
    served(rt, obj.metadata.name ?? '');
    return this.store.create(rt, obj);
  }

  async replace<T extends KubeObject>(rt: ResourceType, obj: T, opts: { status?: boolean } = {}): Promise<T> {
    served(rt, obj.metadata.name ?? '');
    return opts.status === true
      ? this.store.updateStatus(rt, obj)
      : this.store.update(rt, obj, { keepStatus: STATUS_SUBRESOURCE.has(rt.resource) });
  }

  async patch<T extends KubeObject>(
    rt: ResourceType,
    ns: string | undefined,
    name: string,
    mergePatch: unknown,
    opts: { status?: boolean } = {},
  ): Promise<T> {
    served(rt, name);
    return this.store.patch<T>(rt, ns, name, mergePatch, {
      type: 'merge',
      ...(opts.status === true ? { subresource: 'status' as const } : {}),
      keepStatus: STATUS_SUBRESOURCE.has(rt.resource),
    });
  }

  async delete(rt: ResourceType, ns: string | undefined, name: string, opts?: DeleteOptions): Promise<void> {
    served(rt, name);
    this.store.delete(rt, ns, name, opts);
  }

  async post<T>(
    rt: ResourceType,
    ns: string | undefined,
    name: string,
    sub: PostSubresource,
    body: unknown,
  ): Promise<T> {
    if (sub !== 'binding' || !sameResource(rt, RESOURCES.pods)) throw notFound(rt, `${name}/${sub}`);
    return bindPod(this.store, ns ?? 'default', name, body) as T;
  }

  watch<T extends KubeObject>(
    rt: ResourceType,
    opts: Omit<WatchOptions, 'resourceVersion'>,
    onEvent: (event: WatchEvent<T>) => void,
    hooks: FollowHooks = {},
  ): () => void {
    served(rt, '');
    // Without a resourceVersion the store replays what exists as ADDED, synchronously.
    const stop = this.following.add(this.store.watch<T>(rt, opts, onEvent));
    hooks.onSynced?.();
    return stop;
  }

  close(): void {
    this.following.stopAll();
  }
}

/** The watches a backend follows, so close() ends every one still running. */
class Following {
  private readonly stops = new Set<() => void>();

  /** Keeps `stop` until it is called; returns the caller's stop function. */
  add(stop: () => void): () => void {
    this.stops.add(stop);
    return () => {
      this.stops.delete(stop);
      stop();
    };
  }

  stopAll(): void {
    for (const s of [...this.stops]) s();
    this.stops.clear();
  }
}

/**
 * POST pods/NAME/binding, as kube-apiserver answers it: sets spec.nodeName once (409 when the pod is
 * bound already, 404 when it is gone or its uid is not the binding's), and answers a Success Status.
 */
export function bindPod(store: MemoryStore, namespace: string, name: string, body: unknown): KubeStatus {
  const b = body as { target?: { name?: unknown }; metadata?: { name?: unknown; uid?: unknown } } | null;
  if (b?.metadata?.name !== undefined && b.metadata.name !== name)
    throw badRequest('name in URL does not match name in Binding object');
  const node = b?.target?.name;
  if (typeof node !== 'string' || node === '')
    throw badRequest(`the binding of pod ${namespace}/${name} names no target node`);
  const pods = RESOURCES.pods;
  const pod = store.get<KubeObject & { spec?: { nodeName?: string } }>(pods, namespace, name);
  if (pod === undefined) throw notFound(pods, name);
  const uid = b?.metadata?.uid;
  if (typeof uid === 'string' && uid !== '' && uid !== pod.metadata.uid)
    throw preconditionConflict(
      pods,
      name,
      `UID in precondition: ${uid}, UID in object meta: ${pod.metadata.uid ?? ''}`,
    );
  if (pod.spec?.nodeName)
    throw conflict(pods, name, `pod ${name} is already assigned to node "${pod.spec.nodeName}"`);
  store.update(pods, { ...pod, spec: { ...pod.spec, nodeName: node } }, { keepStatus: true });
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 } as KubeStatus;
}

/** The store holds what the embedded API server serves (RESOURCES); anything else is a 404. */
function served(rt: ResourceType, name: string): void {
  if (!(Object.values(RESOURCES) as ResourceType[]).some((r) => sameResource(r, rt)))
    throw notFound(rt, name);
}

function sameResource(a: ResourceType, b: ResourceType): boolean {
  return a.group === b.group && a.version === b.version && a.resource === b.resource;
}

// ---- HTTP to a real kube-apiserver ----

export interface HttpKubeOptions {
  /**
   * Retry a request for up to this long while the API is unreachable or answers 429 / 5xx (jittered
   * backoff, 200 ms → 2 s), e.g. the lab's own writes right after an outage it caused. Default 0.
   */
  readonly retryTransientMs?: number;
  /** Per request: no answer in this long is a GK_ERR_KUBE_UNREACHABLE. Default 30 000. */
  readonly requestTimeoutMs?: number;
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** A kube-apiserver reached with the credentials of `kubeConfigYaml`. */
export function httpKube(kubeConfigYaml: string, opts: HttpKubeOptions = {}): Kube {
  return new HttpKube(kubeConfigYaml, opts);
}

class HttpKube implements Kube {
  private readonly server: URL;
  private readonly agent: https.Agent | http.Agent;
  private readonly kc: KubeConfig;
  private readonly client: KubeClient;
  private readonly retryTransientMs: number;
  private readonly timeoutMs: number;
  private readonly following = new Following();
  private closed = false;

  constructor(kubeConfigYaml: string, opts: HttpKubeOptions) {
    this.retryTransientMs = opts.retryTransientMs ?? 0;
    this.timeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.kc = new KubeConfig();
    this.kc.loadFromString(kubeConfigYaml);
    const cluster = this.kc.getCurrentCluster();
    if (cluster === null) throw new GrpcKubeError('GK_ERR_KUBE_CONFIG', 'the lab kubeconfig has no cluster');
    this.server = new URL(cluster.server);
    this.agent =
      this.server.protocol === 'https:'
        ? new https.Agent({ keepAlive: true, maxSockets: 32 })
        : new http.Agent({ keepAlive: true, maxSockets: 32 });
    this.client = KubeClient.fromKubeConfigString(kubeConfigYaml);
  }

  async get<T extends KubeObject>(
    rt: ResourceType,
    ns: string | undefined,
    name: string,
  ): Promise<T | undefined> {
    try {
      return await this.request<T>('GET', rp(rt, ns, name), undefined);
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw err;
    }
  }

  async list<T extends KubeObject>(
    rt: ResourceType,
    opts: { namespace?: string; labelSelector?: string } = {},
  ): Promise<ListResult<T>> {
    const l = await this.client.list<T>(rp(rt, opts.namespace), {
      ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
      limit: 500,
    });
    return { items: l.items, resourceVersion: l.metadata.resourceVersion ?? '0' };
  }

  create<T extends KubeObject>(rt: ResourceType, obj: T): Promise<T> {
    return this.request<T>('POST', rp(rt, namespaceOf(rt, obj)), obj);
  }

  replace<T extends KubeObject>(rt: ResourceType, obj: T, opts: { status?: boolean } = {}): Promise<T> {
    const sub = opts.status === true ? 'status' : undefined;
    return this.request<T>('PUT', rp(rt, namespaceOf(rt, obj), obj.metadata.name ?? '', sub), obj);
  }

  patch<T extends KubeObject>(
    rt: ResourceType,
    ns: string | undefined,
    name: string,
    mergePatch: unknown,
    opts: { status?: boolean } = {},
  ): Promise<T> {
    return this.request<T>(
      'PATCH',
      rp(rt, ns, name, opts.status === true ? 'status' : undefined),
      mergePatch,
    );
  }

  async delete(
    rt: ResourceType,
    ns: string | undefined,
    name: string,
    opts: DeleteOptions = {},
  ): Promise<void> {
    const body: Record<string, unknown> = { apiVersion: 'v1', kind: 'DeleteOptions' };
    if (opts.gracePeriodSeconds !== undefined) body['gracePeriodSeconds'] = opts.gracePeriodSeconds;
    if (opts.preconditionUid !== undefined) body['preconditions'] = { uid: opts.preconditionUid };
    await this.request('DELETE', rp(rt, ns, name), body);
  }

  post<T>(
    rt: ResourceType,
    ns: string | undefined,
    name: string,
    sub: PostSubresource,
    body: unknown,
  ): Promise<T> {
    return this.request<T>('POST', rp(rt, ns, name, sub), body);
  }

  watch<T extends KubeObject>(
    rt: ResourceType,
    opts: Omit<WatchOptions, 'resourceVersion'>,
    onEvent: (event: WatchEvent<T>) => void,
    hooks: FollowHooks = {},
  ): () => void {
    return this.following.add(follow<T>(this.client, rt, opts, onEvent, hooks));
  }

  close(): void {
    this.closed = true;
    this.following.stopAll();
    this.client.close();
    this.agent.destroy();
  }

  private async request<T>(method: Method, path: ResourcePath, body: unknown): Promise<T> {
    const deadline = Date.now() + this.retryTransientMs;
    const backoff = new Backoff({ initialMs: 200, maxMs: 2_000 });
    for (;;) {
      try {
        return await this.once<T>(method, path, body);
      } catch (err) {
        if (!isTransient(err) || this.closed || Date.now() + 200 > deadline) throw err;
        // Not unref()ed: a caller is awaiting this request, the process must not exit under it.
        await new Promise((r) => setTimeout(r, backoff.next()));
      }
    }
  }

  private async once<T>(method: Method, where: ResourcePath, body: unknown): Promise<T> {
    const path = resourceUrlPath(where);
    const tls: https.RequestOptions = { headers: {} };
    try {
      await this.kc.applyToHTTPSOptions(tls);
    } catch (err) {
      throw new GrpcKubeError(
        'GK_ERR_KUBE_CONFIG',
        `could not apply the lab's Kubernetes credentials: ${String(err)}`,
        {
          cause: err,
        },
      );
    }
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = {
      ...(tls.headers as Record<string, string>),
      Accept: 'application/json',
    };
    if (payload !== undefined) {
      headers['Content-Type'] = method === 'PATCH' ? 'application/merge-patch+json' : 'application/json';
      headers['Content-Length'] = String(payload.length);
    }
    const reqOpts: https.RequestOptions = {
      method,
      hostname: this.server.hostname,
      port: this.server.port,
      path,
      headers,
      agent: this.agent,
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      timeout: this.timeoutMs,
    };
    return new Promise<T>((resolve, reject) => {
      const req = this.server.protocol === 'https:' ? https.request(reqOpts) : http.request(reqOpts);
      req.on('timeout', () => req.destroy(new Error(`no answer in ${this.timeoutMs} ms`)));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          // An answer the lab could not need: a hostile or broken server, not an object.
          if (size > MAX_ANSWER_BYTES) {
            req.destroy(new Error(`the answer is larger than ${MAX_ANSWER_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text === '' ? {} : JSON.parse(text);
          } catch {
            parsed = { message: text.slice(0, 200) };
          }
          if (status >= 300) reject(errorFromStatus(where, method, status, parsed as Partial<KubeStatus>));
          else resolve(parsed as T);
        });
        res.on('error', reject);
      });
      req.on('error', (err) =>
        reject(
          new GrpcKubeError('GK_ERR_KUBE_UNREACHABLE', `${method} ${path}: ${err.message}`, { cause: err }),
        ),
      );
      req.end(payload);
    });
  }
}

const MAX_ANSWER_BYTES = 64 << 20;

function rp(
  rt: ResourceType,
  namespace: string | undefined,
  name?: string,
  subresource?: string,
): ResourcePath {
  return {
    group: rt.group,
    version: rt.version,
    resource: rt.resource,
    ...(rt.namespaced && namespace !== undefined ? { namespace } : {}),
    ...(name !== undefined ? { name } : {}),
    ...(subresource !== undefined ? { subresource } : {}),
  };
}

function follow<T extends KubeObject>(
  client: KubeClient,
  rt: ResourceType,
  opts: Omit<WatchOptions, 'resourceVersion'>,
  onEvent: (event: WatchEvent<T>) => void,
  hooks: FollowHooks,
): () => void {
  const where = rp(rt, opts.namespace);
  const known = new Map<string, string>(); // namespace/name → resourceVersion
  const keyOf = (o: KubeObject): string => `${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;
  let stopped = false;
  let handle: WatchHandle | undefined;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const emit = (ev: WatchEvent<T>): void => {
    if (!stopped) onEvent(ev);
  };
  void (async () => {
    const backoff = new Backoff({ initialMs: 200, maxMs: 5_000 });
    let rv: string | undefined;
    while (!stopped) {
      try {
        if (rv === undefined) {
          hooks.onList?.();
          const list = await client.list<T>(where, {
            ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
            limit: 500,
          });
          if (stopped) return;
          const seen = new Set<string>();
          for (const o of list.items) {
            const k = keyOf(o);
            seen.add(k);
            const before = known.get(k);
            const now = o.metadata.resourceVersion ?? '';
            if (before === undefined) emit({ type: 'ADDED', object: o });
            else if (before !== now) emit({ type: 'MODIFIED', object: o });
            known.set(k, now);
          }
          for (const k of [...known.keys()]) {
            if (seen.has(k)) continue;
            known.delete(k);
            const [namespace, name] = k.split('/');
            emit({
              type: 'DELETED',
              object: {
                apiVersion: apiVersionOf(rt),
                kind: rt.kind,
                metadata: { namespace, name },
              } as unknown as T,
            });
          }
          rv = list.metadata.resourceVersion ?? '0';
          backoff.reset();
          if (!stopped) hooks.onSynced?.();
        }
        handle = client.watch<T>(
          where,
          {
            resourceVersion: rv,
            ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
            allowWatchBookmarks: true,
            // Spread the re-watches of many followers, as client-go's reflector does.
            timeoutSeconds: 300 + Math.floor(Math.random() * 300),
            idleTimeoutMs: 660_000,
          },
          (ev) => {
            const o = ev.object as T;
            if (o.metadata?.resourceVersion) rv = o.metadata.resourceVersion;
            if (ev.type === 'BOOKMARK') return;
            if (ev.type === 'DELETED') known.delete(keyOf(o));
            else known.set(keyOf(o), o.metadata.resourceVersion ?? '');
            backoff.reset();
            emit(ev);
          },
        );
        await handle.done;
      } catch (err) {
        if (stopped) return;
        if (isExpired(err)) {
          rv = undefined;
          continue;
        }
        hooks.onError?.(err);
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, backoff.next());
          timer.unref();
        });
        wake = undefined;
      } finally {
        handle = undefined;
      }
    }
  })();
  return () => {
    stopped = true;
    handle?.abort();
    if (timer) clearTimeout(timer);
    wake?.();
  };
}
