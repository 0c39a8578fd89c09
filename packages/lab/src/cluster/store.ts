// MemoryStore: the in-process ObjectStore (store-api.ts) behind the embedded API server and the
// embedded lab cluster. It keeps kube-apiserver + etcd semantics that clients depend on: one global
// revision stamped on every write, no-op updates that write nothing, optimistic concurrency, graceful
// pod deletion and finalizers, consistent paginated lists at the first page's revision, and a bounded
// event history whose compaction turns old watches into 410 Expired. Watch delivery is synchronous
// and globally ordered: writes made from inside a handler are queued and delivered after the current
// event to every watcher, so all watchers see one sequence.

import { randomUUID } from 'node:crypto';
import type { KubeObject, ObjectMeta, WatchEvent, WatchEventType } from 'grpc-kube/internal/kube/types.js';
import {
  RESOURCES,
  type DeleteOptions,
  type ListResult,
  type ObjectStore,
  type ResourceType,
  type WatchOptions,
} from './store-api.js';
import {
  STALE_OBJECT,
  alreadyExists,
  badRequest,
  conflict,
  expired,
  internalError,
  invalid,
  notFound,
  preconditionConflict,
  tooLargeResourceVersion,
  tooOldResourceVersion,
  type FieldCause,
} from './apiserver-status.js';
import { applyPatch, deepEqualJson, type PatchType } from './apiserver-patch.js';
import {
  parseFieldSelector,
  parseLabelSelector,
  type FieldSelector,
  type LabelSelector,
} from './selector.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';

export interface MemoryStoreOptions {
  /** Events kept for watch-from-resourceVersion; older ones are compacted (410). Default 10000. */
  readonly historyLimit?: number;
  /** Wall clock in ms, for creationTimestamp and deletionTimestamp. Default Date.now. */
  readonly now?: () => number;
  /** Source of uids. Default crypto.randomUUID. */
  readonly uid?: () => string;
  /** Uniform [0,1) source for generateName suffixes. Default Math.random. */
  readonly random?: () => number;
  /** Namespaces that exist from the start, as in a fresh cluster. Default default, kube-system, kube-public, kube-node-lease. */
  readonly initialNamespaces?: readonly string[];
  /** Creating in a namespace that does not exist answers 404 (as the real API does). Default true. */
  readonly requireNamespace?: boolean;
}

export interface StoreListOptions {
  readonly namespace?: string;
  readonly labelSelector?: string;
  /** `metadata.name=x`, `metadata.namespace!=y`, and per-kind fields (pods: spec.nodeName, status.phase…). */
  readonly fieldSelector?: string;
  /** Page size; 0 or absent returns everything. */
  readonly limit?: number;
  /** The opaque token from a previous page. */
  readonly continue?: string;
  /** '' / '0' / absent: the latest state. With resourceVersionMatch 'Exact': the state at that revision. */
  readonly resourceVersion?: string;
  readonly resourceVersionMatch?: 'Exact' | 'NotOlderThan';
}

export interface ListPage<T extends KubeObject> extends ListResult<T> {
  /** Set when more items remain; pass it back as `continue`. */
  readonly continue?: string;
  /** Items after this page, when no selector was given (as the real API reports it). */
  readonly remainingItemCount?: number;
}

export interface StoreWatchOptions extends WatchOptions {
  readonly fieldSelector?: string;
  /** Who watches, shown in stats() (the HTTP server passes the user name). */
  readonly client?: string;
}

export interface StoreDeleteOptions extends DeleteOptions {
  readonly preconditionResourceVersion?: string;
}

export interface StoreUpdateOptions {
  /** Keep the stored status and ignore the one given (the main resource of kinds with a status subresource). */
  readonly keepStatus?: boolean;
}

export interface WatchInfo {
  readonly id: number;
  readonly resource: string;
  readonly group: string;
  readonly namespace: string | undefined;
  readonly labelSelector: string | undefined;
  readonly fieldSelector: string | undefined;
  readonly client: string | undefined;
  /** The resourceVersion the watch was started from ('' when absent). */
  readonly resourceVersion: string;
}

export interface RequestCounts {
  get: number;
  list: number;
  watch: number;
  create: number;
  update: number;
  delete: number;
}

export interface StoreStats {
  readonly resourceVersion: string;
  /** Oldest resourceVersion a watch may start from without 410. */
  readonly compactedResourceVersion: string;
  readonly historySize: number;
  /** Stored objects per resource (plural name). */
  readonly objects: Record<string, number>;
  /** Open watches, HTTP ones included. */
  readonly watches: WatchInfo[];
  /** Calls per resource (plural name), since construction or resetStats(). */
  readonly requests: Record<string, RequestCounts>;
}

/** Kinds whose main resource ignores status and whose `/status` subresource changes only status. */
export const STATUS_SUBRESOURCE: ReadonlySet<string> = new Set([
  'namespaces',
  'pods',
  'services',
  'nodes',
  'deployments',
  'replicasets',
  'grpcroutes',
]);

// Kinds whose strategy sets metadata.generation = 1 on create and bumps it on a spec change.
const GENERATION_KINDS: ReadonlySet<string> = new Set([
  'pods',
  'deployments',
  'replicasets',
  'grpcroutes',
  'endpointslices',
]);

const COMMON_FIELDS = ['metadata.name', 'metadata.namespace'];
const EXTRA_FIELDS: Record<string, readonly string[]> = {
  pods: [
    'spec.nodeName',
    'spec.restartPolicy',
    'spec.schedulerName',
    'spec.serviceAccountName',
    'spec.hostNetwork',
    'status.phase',
    'status.podIP',
    'status.nominatedNodeName',
  ],
  namespaces: ['status.phase'],
  nodes: ['spec.unschedulable'],
  services: ['spec.clusterIP', 'spec.type'],
  replicasets: ['status.replicas'],
};

/** The field paths a fieldSelector may name for this resource. */
export function supportedFields(rt: ResourceType): readonly string[] {
  return [...COMMON_FIELDS, ...(EXTRA_FIELDS[rt.resource] ?? [])];
}

function fieldValue(obj: KubeObject, path: string): string {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (typeof cur !== 'object' || cur === null) return '';
    cur = (cur as Record<string, unknown>)[part];
  }
  if (cur === undefined || cur === null) return '';
  return typeof cur === 'string' ? cur : String(cur);
}

const GENERATE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789'; // k8s utilrand: no vowels, no confusable digits

const DNS1123_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035_LABEL = /^(?=.{1,63}$)[a-z]([-a-z0-9]*[a-z0-9])?$/;

const LABEL_VALUE = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

function isQualifiedName(key: string): boolean {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && !DNS1123_SUBDOMAIN.test(prefix)) return false;
  return name.length > 0 && name.length <= 63 && LABEL_VALUE.test(name);
}

function nameCause(rt: ResourceType, name: string): FieldCause | undefined {
  if (rt.resource === 'services') {
    return DNS1035_LABEL.test(name)
      ? undefined
      : {
          reason: 'FieldValueInvalid',
          field: 'metadata.name',
          message:
            `Invalid value: "${name}": a DNS-1035 label must consist of lower case alphanumeric characters or ` +
            `'-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  ` +
            `or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')`,
        };
  }
  if (rt.resource === 'namespaces') {
    return DNS1123_LABEL.test(name)
      ? undefined
      : {
          reason: 'FieldValueInvalid',
          field: 'metadata.name',
          message:
            `Invalid value: "${name}": a lowercase RFC 1123 label must consist of lower case alphanumeric ` +
            `characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or ` +
            `'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`,
        };
  }
  return DNS1123_SUBDOMAIN.test(name)
    ? undefined
    : {
        reason: 'FieldValueInvalid',
        field: 'metadata.name',
        message:
          `Invalid value: "${name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric ` +
          `characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', ` +
          `regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`,
      };
}

/** RFC 3339 with seconds precision, as metav1.Time serialises. */
export function rfc3339(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Deep copy of a JSON value. Stored objects are plain JSON (stamp() round-trips them), and this is
 * several times faster than structuredClone, which matters with many watchers and large lists.
 */
function cloneJson<T>(v: T): T {
  if (typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) return v.map(cloneJson) as T;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v)) out[k] = cloneJson((v as Record<string, unknown>)[k]);
  return out as T;
}

/** What the API would receive: the caller's object as JSON (undefined fields dropped, Dates as strings). */
function fromInput<T>(v: T): T {
  if (typeof v !== 'object' || v === null) return v;
  return JSON.parse(JSON.stringify(v)) as T;
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const child of Object.values(v as object)) deepFreeze(child);
  }
  return v;
}

function apiVersionOf(rt: ResourceType): string {
  return rt.group === '' ? rt.version : `${rt.group}/${rt.version}`;
}

function rtKey(rt: ResourceType): string {
  return `${rt.group}/${rt.resource}`;
}

function objKey(namespace: string | undefined, name: string): string {
  return namespace === undefined || namespace === '' ? name : `${namespace}/${name}`;
}

/** Everything of an object but metadata and status: what "spec changed" means for generation. */
function specPart(obj: KubeObject): Record<string, unknown> {
  const {
    metadata: _m,
    status: _s,
    kind: _k,
    apiVersion: _a,
    ...rest
  } = obj as KubeObject & { status?: unknown };
  return rest;
}

function parseRv(rv: string, what: string): number {
  if (!/^[0-9]+$/.test(rv)) throw badRequest(`invalid ${what}: "${rv}"`);
  return Number(rv);
}

const CONTINUE_TOO_OLD =
  'The provided continue parameter is too old to display a consistent list result. You can start a new ' +
  'list without the continue parameter, or use the continue token in this response to retrieve the ' +
  'remainder of the results. Continuing with the provided token results in an inconsistent list - objects ' +
  'that were created, modified, or deleted between the time the first chunk was returned and now may show up ' +
  'in the list.';

interface ContinueToken {
  readonly rv: number;
  readonly start: string;
}

function encodeContinue(rv: number, start: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start })).toString('base64url');
}

function decodeContinue(token: string): ContinueToken {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw badRequest('continue key is not valid: illegal base64 data');
  }
  const p = parsed as { v?: unknown; rv?: unknown; start?: unknown };
  if (p.v !== 'meta.k8s.io/v1' || typeof p.rv !== 'number' || typeof p.start !== 'string') {
    throw badRequest(
      'continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)',
    );
  }
  return { rv: p.rv, start: p.start };
}

type Stored = Readonly<KubeObject>;

// ObjectMeta's field order in Go, so responses read like kube-apiserver's.
const METADATA_ORDER = [
  'name',
  'generateName',
  'namespace',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'labels',
  'annotations',
  'ownerReferences',
  'finalizers',
];

interface HistoryEntry {
  readonly rv: number;
  readonly rtKey: string;
  readonly key: string;
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  /** State after the event (for DELETED: the last state, with the deletion's resourceVersion). */
  readonly object: Stored;
  /** State before the event (absent for ADDED). */
  readonly prev: Stored | undefined;
}

interface Watcher {
  readonly info: WatchInfo;
  readonly rtKey: string;
  readonly namespace: string | undefined;
  readonly labels: LabelSelector;
  readonly fields: FieldSelector;
  readonly fieldPaths: readonly string[];
  readonly onEvent: (event: WatchEvent) => void;
  sinceRv: number;
  active: boolean;
}

function emptyCounts(): RequestCounts {
  return { get: 0, list: 0, watch: 0, create: 0, update: 0, delete: 0 };
}

export class MemoryStore implements ObjectStore {
  private rv = 0;
  private compactedRv = 0;
  private readonly historyLimit: number;
  private readonly history: HistoryEntry[] = [];
  private historyHead = 0;
  private readonly objects = new Map<string, Map<string, Stored>>();
  private readonly watchers = new Map<number, Watcher>();
  private nextWatchId = 1;
  private readonly pending: HistoryEntry[] = [];
  private pendingHead = 0;
  private delivering = false;
  private counts = new Map<string, RequestCounts>();
  private readonly now: () => number;
  private readonly newUid: () => string;
  private readonly random: () => number;
  private readonly requireNamespace: boolean;

  constructor(opts: MemoryStoreOptions = {}) {
    const limit = opts.historyLimit ?? 10_000;
    if (!Number.isInteger(limit) || limit < 1)
      throw new InvalidOptionError('historyLimit', 'must be an integer >= 1');
    this.historyLimit = limit;
    this.now = opts.now ?? Date.now;
    this.newUid = opts.uid ?? randomUUID;
    this.random = opts.random ?? Math.random;
    this.requireNamespace = opts.requireNamespace ?? true;
    for (const ns of opts.initialNamespaces ?? ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
      this.create(RESOURCES.namespaces, { metadata: { name: ns } });
    }
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  // ---- reads ----

  get<T extends KubeObject>(rt: ResourceType, namespace: string | undefined, name: string): T | undefined {
    this.count(rt).get++;
    const o = this.table(rt).get(objKey(rt.namespaced ? namespace : undefined, name));
    return o === undefined ? undefined : (cloneJson(o) as T);
  }

  /** Whether the object exists; not counted in stats() (for the API server's own bookkeeping). */
  has(rt: ResourceType, namespace: string | undefined, name: string): boolean {
    return this.table(rt).has(objKey(rt.namespaced ? namespace : undefined, name));
  }

  list<T extends KubeObject>(
    rt: ResourceType,
    opts: { namespace?: string; labelSelector?: string } = {},
  ): ListResult<T> {
    const page = this.listPage<T>(rt, opts);
    return { items: page.items, resourceVersion: page.resourceVersion };
  }

  /** list() with field selectors, pagination and resourceVersion semantics of the API. */
  listPage<T extends KubeObject>(rt: ResourceType, opts: StoreListOptions = {}): ListPage<T> {
    this.count(rt).list++;
    const labels = parseLabelSelector(opts.labelSelector);
    const fieldPaths = supportedFields(rt);
    const fields = parseFieldSelector(opts.fieldSelector, fieldPaths);
    const limit = opts.limit ?? 0;
    if (!Number.isInteger(limit) || limit < 0) throw badRequest(`invalid limit: ${String(opts.limit)}`);

    let atRv = this.rv;
    let startAfter: string | undefined;
    if (opts.continue !== undefined && opts.continue !== '') {
      const token = decodeContinue(opts.continue);
      if (token.rv >= 0) {
        if (token.rv < this.compactedRv) throw expired(CONTINUE_TOO_OLD, encodeContinue(-1, token.start));
        atRv = token.rv;
      }
      startAfter = token.start;
    } else if (
      opts.resourceVersion !== undefined &&
      opts.resourceVersion !== '' &&
      opts.resourceVersion !== '0'
    ) {
      const want = parseRv(opts.resourceVersion, 'resource version');
      if (want > this.rv) throw tooLargeResourceVersion(want, this.rv);
      if (opts.resourceVersionMatch === 'Exact') {
        if (want < this.compactedRv) throw tooOldResourceVersion(want, this.compactedRv);
        atRv = want;
      }
    }

    const table = atRv === this.rv ? this.table(rt) : this.snapshotAt(rt, atRv);
    const nsPrefix = rt.namespaced && opts.namespace ? `${opts.namespace}/` : undefined;
    const keys = [...table.keys()]
      .filter(
        (k) =>
          (nsPrefix === undefined || k.startsWith(nsPrefix)) && (startAfter === undefined || k > startAfter),
      )
      .sort();
    const items: T[] = [];
    let lastKey: string | undefined;
    let i = 0;
    for (; i < keys.length; i++) {
      if (limit > 0 && items.length === limit) break;
      const k = keys[i] ?? '';
      const o = table.get(k);
      if (o === undefined || !this.matches(o, labels, fields, fieldPaths)) continue;
      items.push(cloneJson(o) as T);
      lastKey = k;
    }
    const more = limit > 0 && i < keys.length && lastKey !== undefined;
    const page: { items: T[]; resourceVersion: string; continue?: string; remainingItemCount?: number } = {
      items,
      resourceVersion: String(atRv),
    };
    if (more) {
      page.continue = encodeContinue(atRv, lastKey ?? '');
      if (labels.empty && fields.empty) page.remainingItemCount = keys.length - i;
    }
    return page;
  }

  // ---- writes ----

  create<T extends KubeObject>(rt: ResourceType, input: T): T {
    this.count(rt).create++;
    const obj = fromInput(input) as T & { status?: unknown; spec?: unknown };
    if (
      typeof obj !== 'object' ||
      obj === null ||
      typeof obj.metadata !== 'object' ||
      obj.metadata === null
    ) {
      throw invalid(rt, '', [{ reason: 'FieldValueRequired', field: 'metadata', message: 'Required value' }]);
    }
    const meta: ObjectMeta = obj.metadata;
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== '' && meta.resourceVersion !== '0') {
      // etcd3 store.Create's plain error, which the API answers as a 500.
      throw internalError('resourceVersion should not be set on objects to be created');
    }
    if (!rt.namespaced) delete meta.namespace; // cluster-scoped: the API clears it
    const generated = !meta.name && !!meta.generateName;
    const causes: FieldCause[] = [];
    if (!meta.name && !meta.generateName) {
      causes.push({
        reason: 'FieldValueRequired',
        field: 'metadata.name',
        message: 'Required value: name or generateName is required',
      });
    }
    if (rt.namespaced && !meta.namespace) {
      causes.push({ reason: 'FieldValueRequired', field: 'metadata.namespace', message: 'Required value' });
    }
    if (causes.length > 0) throw invalid(rt, meta.name ?? '', causes);
    const ns = rt.namespaced ? meta.namespace : undefined;
    if (rt.namespaced && this.requireNamespace && ns !== undefined) {
      if (!this.table(RESOURCES.namespaces).has(ns)) throw notFound(RESOURCES.namespaces, ns);
    }
    const table = this.table(rt);
    if (generated) {
      // Same as the API server's bounded retry on generateName collisions.
      for (let attempt = 0; attempt < 8; attempt++) {
        let suffix = '';
        for (let j = 0; j < 5; j++) {
          suffix += GENERATE_ALPHABET[Math.floor(this.random() * GENERATE_ALPHABET.length)] ?? 'x';
        }
        meta.name = `${meta.generateName ?? ''}${suffix}`;
        if (!table.has(objKey(ns, meta.name))) break;
      }
    }
    const name = meta.name ?? '';
    const bad = nameCause(rt, name);
    if (bad !== undefined) throw invalid(rt, name, [bad]);
    this.validateKind(rt, obj, name);
    const key = objKey(ns, name);
    if (table.has(key)) throw alreadyExists(rt, name);

    const rv = ++this.rv;
    meta.uid = this.newUid();
    meta.resourceVersion = String(rv);
    meta.creationTimestamp = rfc3339(this.now());
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    if (GENERATION_KINDS.has(rt.resource)) meta.generation = 1;
    else delete meta.generation;
    if (rt.resource === 'namespaces') {
      // NamespaceStrategy.PrepareForCreate
      (obj as { spec?: unknown }).spec = { finalizers: ['kubernetes'] };
      (obj as { status?: unknown }).status = { phase: 'Active' };
    }
    const stored = this.stamp(rt, obj);
    table.set(key, stored);
    this.commit({ rv, rtKey: rtKey(rt), key, type: 'ADDED', object: stored, prev: undefined });
    return cloneJson(stored) as T;
  }

  update<T extends KubeObject>(rt: ResourceType, input: T, opts: StoreUpdateOptions = {}): T {
    this.count(rt).update++;
    const obj = fromInput(input) as T;
    const { cur, key, name } = this.current(rt, obj);
    const meta = obj.metadata;
    this.checkVersion(rt, name, cur, meta);
    if (opts.keepStatus) {
      const s = (cur as { status?: unknown }).status;
      if (s === undefined) delete (obj as { status?: unknown }).status;
      else (obj as { status?: unknown }).status = cloneJson(s);
    }
    this.validateKind(rt, obj, name);
    return this.write(rt, key, cur, obj) as T;
  }

  /** PUT …/status: only status changes; everything else is kept from the stored object. */
  updateStatus<T extends KubeObject>(rt: ResourceType, input: T): T {
    this.count(rt).update++;
    const obj = fromInput(input) as T & { status?: unknown };
    const { cur, key, name } = this.current(rt, obj);
    this.checkVersion(rt, name, cur, obj.metadata);
    const next = cloneJson(cur) as KubeObject & { status?: unknown };
    if (obj.status === undefined) delete next.status;
    else next.status = obj.status;
    return this.write(rt, key, cur, next) as T;
  }

  /**
   * Applies a merge patch (RFC 7386; strategic merge treated the same) or a JSON patch (RFC 6902).
   * With subresource 'status' only the patched status is kept; with keepStatus the status is ignored.
   */
  patch<T extends KubeObject>(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    patch: unknown,
    opts: { type?: PatchType; subresource?: 'status'; keepStatus?: boolean } = {},
  ): T {
    const key = objKey(rt.namespaced ? namespace : undefined, name);
    const cur = this.table(rt).get(key);
    if (cur === undefined) throw notFound(rt, name);
    const patched = applyPatch(opts.type ?? 'merge', cur, patch);
    if (typeof patched !== 'object' || patched === null || Array.isArray(patched)) {
      throw badRequest('the patch did not produce an object');
    }
    const obj = patched as unknown as T;
    if (typeof obj.metadata !== 'object' || obj.metadata === null) obj.metadata = {};
    // Identity cannot be patched away: the URL names the object.
    obj.metadata.name = name;
    if (rt.namespaced) obj.metadata.namespace = namespace;
    if (opts.subresource === 'status') return this.updateStatus(rt, obj);
    return this.update(rt, obj, { keepStatus: opts.keepStatus === true });
  }

  delete<T extends KubeObject>(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    opts: StoreDeleteOptions = {},
  ): T | undefined {
    this.count(rt).delete++;
    const ns = rt.namespaced ? namespace : undefined;
    const key = objKey(ns, name);
    const table = this.table(rt);
    const cur = table.get(key);
    if (cur === undefined) throw notFound(rt, name);
    if (opts.preconditionUid !== undefined && opts.preconditionUid !== cur.metadata.uid) {
      throw preconditionConflict(
        rt,
        name,
        `the UID in the precondition (${opts.preconditionUid}) does not match the UID in record ` +
          `(${cur.metadata.uid ?? ''}). The object might have been deleted and then recreated`,
      );
    }
    if (
      opts.preconditionResourceVersion !== undefined &&
      opts.preconditionResourceVersion !== cur.metadata.resourceVersion
    ) {
      throw preconditionConflict(
        rt,
        name,
        `the ResourceVersion in the precondition (${opts.preconditionResourceVersion}) does not match the ` +
          `ResourceVersion in record (${cur.metadata.resourceVersion ?? ''}). The object might have been modified`,
      );
    }
    if (opts.gracePeriodSeconds !== undefined && !Number.isInteger(opts.gracePeriodSeconds)) {
      throw badRequest(`invalid gracePeriodSeconds: ${String(opts.gracePeriodSeconds)}`);
    }
    const hasFinalizers = (cur.metadata.finalizers?.length ?? 0) > 0;

    if (rt.resource === 'namespaces') return this.deleteNamespace(name, cur) as T;

    if (cur.metadata.deletionTimestamp !== undefined) {
      // Already being deleted (rest.BeforeDelete): the grace period may only shrink.
      const existing = cur.metadata.deletionGracePeriodSeconds ?? 0;
      if (existing === 0) {
        if (hasFinalizers) return cloneJson(cur) as T;
        return this.remove(rt, key, cur) as T;
      }
      const period = opts.gracePeriodSeconds;
      if (period === undefined || period >= existing) return cloneJson(cur) as T;
      const p = Math.max(period, 0);
      const startMs = Date.parse(cur.metadata.deletionTimestamp) - existing * 1000;
      const next = cloneJson(cur) as KubeObject;
      next.metadata.deletionTimestamp = rfc3339(startMs + p * 1000);
      next.metadata.deletionGracePeriodSeconds = p;
      const written = this.write(rt, key, cur, next, true);
      if (p > 0 || hasFinalizers) return written as T;
      return this.remove(rt, key, this.table(rt).get(key) ?? cur) as T;
    }

    if (rt.resource === 'pods') {
      // podStrategy.CheckGracefulDelete
      const pod = cur as KubeObject & {
        spec?: { nodeName?: string; terminationGracePeriodSeconds?: number };
        status?: { phase?: string };
      };
      let period = opts.gracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
      if (!pod.spec?.nodeName) period = 0; // never scheduled: nothing to stop
      if (pod.status?.phase === 'Failed' || pod.status?.phase === 'Succeeded') period = 0;
      if (period < 0) period = 1;
      const next = cloneJson(cur) as KubeObject;
      next.metadata.deletionTimestamp = rfc3339(this.now() + period * 1000);
      next.metadata.deletionGracePeriodSeconds = period;
      if ((next.metadata.generation ?? 0) > 0) next.metadata.generation = (next.metadata.generation ?? 0) + 1;
      const written = this.write(rt, key, cur, next, true);
      if (period > 0 || hasFinalizers) return written as T;
      return this.remove(rt, key, this.table(rt).get(key) ?? cur) as T;
    }

    if (hasFinalizers) {
      const next = cloneJson(cur) as KubeObject;
      next.metadata.deletionTimestamp = rfc3339(this.now());
      next.metadata.deletionGracePeriodSeconds = 0;
      if ((next.metadata.generation ?? 0) > 0) next.metadata.generation = (next.metadata.generation ?? 0) + 1;
      return this.write(rt, key, cur, next, true) as T;
    }
    return this.remove(rt, key, cur) as T;
  }

  // ---- watch ----

  watch<T extends KubeObject>(
    rt: ResourceType,
    opts: StoreWatchOptions,
    onEvent: (event: WatchEvent<T>) => void,
  ): () => void {
    this.count(rt).watch++;
    const labels = parseLabelSelector(opts.labelSelector);
    const fieldPaths = supportedFields(rt);
    const fields = parseFieldSelector(opts.fieldSelector, fieldPaths);
    const rvOpt = opts.resourceVersion ?? '';
    const fromRv = rvOpt === '' || rvOpt === '0' ? undefined : parseRv(rvOpt, 'resource version');
    if (fromRv !== undefined && fromRv < this.compactedRv)
      throw tooOldResourceVersion(fromRv, this.compactedRv);

    const id = this.nextWatchId++;
    const w: Watcher = {
      info: {
        id,
        resource: rt.resource,
        group: rt.group,
        namespace: rt.namespaced && opts.namespace ? opts.namespace : undefined,
        labelSelector: opts.labelSelector || undefined,
        fieldSelector: opts.fieldSelector || undefined,
        client: opts.client,
        resourceVersion: rvOpt,
      },
      rtKey: rtKey(rt),
      namespace: rt.namespaced && opts.namespace ? opts.namespace : undefined,
      labels,
      fields,
      fieldPaths,
      onEvent: onEvent as (event: WatchEvent) => void,
      sinceRv: fromRv !== undefined && fromRv > this.rv ? fromRv : this.rv,
      active: true,
    };
    const initial: WatchEvent[] = [];
    if (fromRv === undefined) {
      const table = this.table(rt);
      for (const k of [...table.keys()].sort()) {
        const o = table.get(k);
        if (o !== undefined && this.watcherMatches(w, o)) initial.push({ type: 'ADDED', object: o });
      }
    } else {
      for (let i = this.firstHistoryAfter(fromRv); i < this.history.length; i++) {
        const e = this.history[i];
        if (e === undefined || e.rtKey !== w.rtKey) continue;
        const ev = this.convert(w, e);
        if (ev !== undefined) initial.push(ev);
      }
    }
    this.watchers.set(id, w);
    const stop = (): void => {
      w.active = false;
      this.watchers.delete(id);
    };
    // Writes made by the handler during the replay are queued behind it.
    const wasDelivering = this.delivering;
    this.delivering = true;
    try {
      for (const ev of initial) {
        if (!w.active) break;
        this.deliver(w, ev);
      }
    } finally {
      this.delivering = wasDelivering;
    }
    if (!wasDelivering) this.drain();
    return stop;
  }

  // ---- history, stats ----

  /** Drops the event history up to `resourceVersion` (default: all of it), as etcd compaction does. */
  compact(resourceVersion?: string): void {
    const target = resourceVersion === undefined ? this.rv : parseRv(resourceVersion, 'resource version');
    while (this.historyHead < this.history.length && (this.history[this.historyHead]?.rv ?? 0) <= target) {
      this.historyHead++;
    }
    this.compactedRv = Math.max(this.compactedRv, Math.min(target, this.rv));
    this.trimHistory();
  }

  stats(): StoreStats {
    const objects: Record<string, number> = {};
    for (const [k, t] of this.objects) objects[k.slice(k.indexOf('/') + 1)] = t.size;
    const requests: Record<string, RequestCounts> = {};
    for (const [k, c] of this.counts) requests[k] = { ...c };
    return {
      resourceVersion: String(this.rv),
      compactedResourceVersion: String(this.compactedRv),
      historySize: this.history.length - this.historyHead,
      objects,
      watches: [...this.watchers.values()].map((w) => ({ ...w.info })),
      requests,
    };
  }

  resetStats(): void {
    this.counts = new Map();
  }

  // ---- internals ----

  private count(rt: ResourceType): RequestCounts {
    let c = this.counts.get(rt.resource);
    if (c === undefined) {
      c = emptyCounts();
      this.counts.set(rt.resource, c);
    }
    return c;
  }

  private table(rt: ResourceType): Map<string, Stored> {
    const k = rtKey(rt);
    let t = this.objects.get(k);
    if (t === undefined) {
      t = new Map();
      this.objects.set(k, t);
    }
    return t;
  }

  private current(rt: ResourceType, obj: KubeObject): { cur: Stored; key: string; name: string } {
    if (
      typeof obj !== 'object' ||
      obj === null ||
      typeof obj.metadata !== 'object' ||
      obj.metadata === null
    ) {
      throw invalid(rt, '', [{ reason: 'FieldValueRequired', field: 'metadata', message: 'Required value' }]);
    }
    const name = obj.metadata.name ?? '';
    const causes: FieldCause[] = [];
    if (name === '')
      causes.push({
        reason: 'FieldValueRequired',
        field: 'metadata.name',
        message: 'Required value: name is required',
      });
    if (rt.namespaced && !obj.metadata.namespace) {
      causes.push({ reason: 'FieldValueRequired', field: 'metadata.namespace', message: 'Required value' });
    }
    if (causes.length > 0) throw invalid(rt, name, causes);
    const key = objKey(rt.namespaced ? obj.metadata.namespace : undefined, name);
    const cur = this.table(rt).get(key);
    if (cur === undefined) throw notFound(rt, name);
    return { cur, key, name };
  }

  private checkVersion(rt: ResourceType, name: string, cur: Stored, meta: ObjectMeta): void {
    if (
      meta.resourceVersion !== undefined &&
      meta.resourceVersion !== '' &&
      meta.resourceVersion !== cur.metadata.resourceVersion
    ) {
      throw conflict(rt, name, STALE_OBJECT);
    }
    if (meta.uid !== undefined && meta.uid !== '' && meta.uid !== cur.metadata.uid) {
      throw conflict(
        rt,
        name,
        `Precondition failed: UID in precondition: ${meta.uid}, UID in object meta: ${cur.metadata.uid ?? ''}`,
      );
    }
  }

  private validateKind(rt: ResourceType, obj: KubeObject, name: string): void {
    const labels = obj.metadata.labels;
    if (labels !== undefined && labels !== null) {
      const causes: FieldCause[] = [];
      for (const [k, v] of Object.entries(labels)) {
        if (!isQualifiedName(k)) {
          causes.push({
            reason: 'FieldValueInvalid',
            field: 'metadata.labels',
            message:
              `Invalid value: "${k}": name part must consist of alphanumeric characters, '-', '_' or '.', ` +
              `and must start and end with an alphanumeric character`,
          });
        }
        if (typeof v !== 'string' || (v !== '' && (v.length > 63 || !LABEL_VALUE.test(v)))) {
          causes.push({
            reason: 'FieldValueInvalid',
            field: 'metadata.labels',
            message:
              `Invalid value: "${String(v)}": a valid label must be an empty string or consist of alphanumeric ` +
              `characters, '-', '_' or '.', and must start and end with an alphanumeric character`,
          });
        }
      }
      if (causes.length > 0) throw invalid(rt, name, causes);
    }
    if (rt.resource === 'endpointslices') {
      const t = (obj as { addressType?: unknown }).addressType;
      if (t !== 'IPv4' && t !== 'IPv6' && t !== 'FQDN') {
        throw invalid(rt, name, [
          t === undefined || t === ''
            ? { reason: 'FieldValueRequired', field: 'addressType', message: 'Required value' }
            : {
                reason: 'FieldValueNotSupported',
                field: 'addressType',
                message: `Unsupported value: "${String(t)}": supported values: "FQDN", "IPv4", "IPv6"`,
              },
        ]);
      }
    }
  }

  /** Replaces `cur` by `next` unless nothing but resourceVersion differs (etcd skips no-op writes). */
  private write(rt: ResourceType, key: string, cur: Stored, next: KubeObject, internal = false): KubeObject {
    const meta = next.metadata;
    // Fields the API server owns; an update cannot change them.
    meta.name = cur.metadata.name;
    if (rt.namespaced) meta.namespace = cur.metadata.namespace;
    else delete meta.namespace;
    meta.uid = cur.metadata.uid;
    meta.creationTimestamp = cur.metadata.creationTimestamp;
    if (!internal) {
      if (cur.metadata.deletionTimestamp === undefined) delete meta.deletionTimestamp;
      else meta.deletionTimestamp = cur.metadata.deletionTimestamp;
      if (cur.metadata.deletionGracePeriodSeconds === undefined) delete meta.deletionGracePeriodSeconds;
      else meta.deletionGracePeriodSeconds = cur.metadata.deletionGracePeriodSeconds;
      if (cur.metadata.generation === undefined) delete meta.generation;
      else {
        meta.generation = cur.metadata.generation;
        if (!deepEqualJson(specPart(cur), specPart(next))) meta.generation = cur.metadata.generation + 1;
      }
    }
    if (rt.resource === 'namespaces') {
      // Namespace spec is owned by the finalize subresource.
      (next as { spec?: unknown }).spec = cloneJson((cur as { spec?: unknown }).spec);
    }
    meta.resourceVersion = cur.metadata.resourceVersion;
    next.kind = rt.kind;
    next.apiVersion = apiVersionOf(rt);
    if (deepEqualJson(JSON.parse(JSON.stringify(next)), cur)) return cloneJson(cur);

    const table = this.table(rt);
    const rv = ++this.rv;
    meta.resourceVersion = String(rv);
    const stored = this.stamp(rt, next);
    table.set(key, stored);
    this.commit({ rv, rtKey: rtKey(rt), key, type: 'MODIFIED', object: stored, prev: cur });
    const gone =
      stored.metadata.deletionTimestamp !== undefined &&
      (stored.metadata.finalizers?.length ?? 0) === 0 &&
      (stored.metadata.deletionGracePeriodSeconds ?? 0) === 0 &&
      !internal;
    // The update removed the last finalizer of an object being deleted: it goes now.
    if (gone) return this.remove(rt, key, stored);
    return cloneJson(stored);
  }

  private remove(rt: ResourceType, key: string, cur: Stored): KubeObject {
    const rv = ++this.rv;
    const last = cloneJson(cur) as KubeObject;
    last.metadata.resourceVersion = String(rv);
    const stored = deepFreeze(last);
    this.table(rt).delete(key);
    this.commit({ rv, rtKey: rtKey(rt), key, type: 'DELETED', object: stored, prev: cur });
    return cloneJson(stored);
  }

  private deleteNamespace(name: string, cur: Stored): KubeObject {
    // The namespace controller's work, done at once: every object in it goes, then the namespace.
    for (const rt of Object.values(RESOURCES) as ResourceType[]) {
      if (!rt.namespaced) continue;
      const table = this.table(rt);
      for (const k of [...table.keys()].sort()) {
        const o = table.get(k);
        if (o !== undefined && o.metadata.namespace === name) this.remove(rt, k, o);
      }
    }
    return this.remove(RESOURCES.namespaces, name, cur);
  }

  /** JSON round trip (drops undefined, rejects what the API could not store), kind stamp, freeze. */
  private stamp(rt: ResourceType, obj: KubeObject): Stored {
    const { kind: _k, apiVersion: _a, metadata, ...rest } = JSON.parse(JSON.stringify(obj)) as KubeObject;
    const ordered: Record<string, unknown> = {};
    for (const k of METADATA_ORDER) if (k in metadata) ordered[k] = metadata[k as keyof ObjectMeta];
    for (const [k, v] of Object.entries(metadata)) if (!(k in ordered)) ordered[k] = v;
    return deepFreeze({
      kind: rt.kind,
      apiVersion: apiVersionOf(rt),
      metadata: ordered as ObjectMeta,
      ...rest,
    });
  }

  private matches(
    o: Stored,
    labels: LabelSelector,
    fields: FieldSelector,
    paths: readonly string[],
  ): boolean {
    if (!labels.matches(o.metadata.labels)) return false;
    if (fields.empty) return true;
    const values: Record<string, string> = {};
    for (const p of paths) values[p] = fieldValue(o, p);
    return fields.matches(values);
  }

  private watcherMatches(w: Watcher, o: Stored): boolean {
    if (w.namespace !== undefined && o.metadata.namespace !== w.namespace) return false;
    return this.matches(o, w.labels, w.fields, w.fieldPaths);
  }

  /** The watch cache's rule: a change into the selector is ADDED, out of it DELETED (old state, new rv). */
  private convert(w: Watcher, e: HistoryEntry): WatchEvent | undefined {
    const cur = e.type !== 'DELETED' && this.watcherMatches(w, e.object);
    const old = e.prev !== undefined && this.watcherMatches(w, e.prev);
    if (cur && !old) return { type: 'ADDED', object: e.object };
    if (cur && old) return { type: 'MODIFIED', object: e.object };
    if (!cur && old) {
      if (e.type === 'DELETED') return { type: 'DELETED', object: e.object };
      const last = cloneJson(e.prev) as KubeObject;
      last.metadata.resourceVersion = String(e.rv);
      return { type: 'DELETED', object: last };
    }
    return undefined;
  }

  private commit(e: HistoryEntry): void {
    this.history.push(e);
    if (this.history.length - this.historyHead > this.historyLimit) {
      const dropped = this.history[this.historyHead];
      this.historyHead++;
      if (dropped !== undefined) this.compactedRv = Math.max(this.compactedRv, dropped.rv);
      this.trimHistory();
    }
    this.pending.push(e);
    this.drain();
  }

  private trimHistory(): void {
    if (this.historyHead > 1024 && this.historyHead * 2 > this.history.length) {
      this.history.splice(0, this.historyHead);
      this.historyHead = 0;
    }
  }

  private firstHistoryAfter(rv: number): number {
    let lo = this.historyHead;
    let hi = this.history.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.history[mid]?.rv ?? 0) <= rv) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private snapshotAt(rt: ResourceType, rv: number): Map<string, Stored> {
    const key = rtKey(rt);
    const m = new Map(this.table(rt));
    for (let i = this.history.length - 1; i >= this.historyHead; i--) {
      const e = this.history[i];
      if (e === undefined || e.rv <= rv) break;
      if (e.rtKey !== key) continue;
      if (e.type === 'ADDED' || e.prev === undefined) m.delete(e.key);
      else m.set(e.key, e.prev);
    }
    return m;
  }

  private drain(): void {
    if (this.delivering) return;
    this.delivering = true;
    try {
      while (this.pendingHead < this.pending.length) {
        const e = this.pending[this.pendingHead++];
        if (e === undefined) continue;
        for (const w of [...this.watchers.values()]) {
          if (!w.active || w.rtKey !== e.rtKey || e.rv <= w.sinceRv) continue;
          w.sinceRv = e.rv;
          const ev = this.convert(w, e);
          if (ev !== undefined) this.deliver(w, ev);
        }
      }
    } finally {
      this.pending.length = 0;
      this.pendingHead = 0;
      this.delivering = false;
    }
  }

  private deliver(w: Watcher, ev: WatchEvent): void {
    try {
      w.onEvent({ type: ev.type as WatchEventType, object: cloneJson(ev.object) });
    } catch (err) {
      // A throwing handler is a bug in its owner; surface it without corrupting delivery to others.
      process.nextTick(() => {
        throw err;
      });
    }
  }
}
