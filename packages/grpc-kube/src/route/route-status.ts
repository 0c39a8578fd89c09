// What a GRPCRoute's server writes back (Gateway API route status): one `status.parents[]` entry per
// Service parent, with our controllerName and two conditions — Accepted (the route's shape is one we
// serve: reason Accepted, else UnsupportedValue) and ResolvedRefs (every backendRef resolves: reason
// ResolvedRefs, else InvalidKind, RefNotPermitted or BackendNotFound). Written through the status
// subresource with the resourceVersion read, so a concurrent writer makes it a 409 (the watch brings
// the newer object and it is judged again); only our own entries are replaced, other controllers'
// stay; nothing is written when our entries would not change (so our own write's MODIFIED event ends
// there). Cross-namespace backendRefs are allowed by a ReferenceGrant (gateway.networking.k8s.io
// v1beta1) in the backend's namespace, watched per namespace a route points into.

import { GrpcKubeError, KubeApiError } from '../errors.js';
import type { KubeClient, ResourcePath } from '../kube/client.js';
import type { KubeObject } from '../kube/types.js';
import { ListWatch, type ListWatchOptions } from '../kube/watch.js';
import { compileGrpcRoute, InvalidRouteError, type GrpcRoute, type GrpcRouteParentRef } from './grpcroute.js';

export const ROUTE_CONTROLLER_NAME = 'grpc-kube.io/route-controller';

const GRPCROUTES: ResourcePath = {
  group: 'gateway.networking.k8s.io',
  version: 'v1',
  resource: 'grpcroutes',
};
const GRANTS: ResourcePath = {
  group: 'gateway.networking.k8s.io',
  version: 'v1beta1',
  resource: 'referencegrants',
};
const SERVICES: ResourcePath = { group: '', version: 'v1', resource: 'services' };
const ROUTE_GROUP = 'gateway.networking.k8s.io';

export interface ReferenceGrant extends KubeObject {
  spec?: {
    from?: Array<{ group?: string; kind?: string; namespace?: string }>;
    to?: Array<{ group?: string; kind?: string; name?: string }>;
  };
}

/** May a GRPCRoute in `fromNamespace` send to Service `toNamespace/service`? */
export type ReferencePolicy = (fromNamespace: string, toNamespace: string, service: string) => boolean;

/** Whether `grants` (objects of the backend's namespace) let a GRPCRoute of `from` reach `service`. */
export function grantsPermit(grants: Iterable<ReferenceGrant>, from: string, service: string): boolean {
  for (const g of grants) {
    const spec = g.spec;
    if (spec === null || typeof spec !== 'object') continue;
    const fromOk = (Array.isArray(spec.from) ? spec.from : []).some(
      (f) => f?.group === ROUTE_GROUP && f.kind === 'GRPCRoute' && f.namespace === from,
    );
    const toOk = (Array.isArray(spec.to) ? spec.to : []).some(
      (t) =>
        (t?.group ?? '') === '' &&
        t?.kind === 'Service' &&
        (t.name === undefined || t.name === '' || t.name === service),
    );
    if (fromOk && toOk) return true;
  }
  return false;
}

/**
 * ReferenceGrants of the namespaces routes point into, each kept by a list-watch of its own (a
 * namespaced Role per backend namespace suffices). A missing CRD (404) or RBAC (403) means no grant.
 */
export class ReferenceGrants {
  private readonly watches = new Map<
    string,
    { lw: ListWatch<ReferenceGrant>; grants: Map<string, ReferenceGrant> }
  >();
  private stopped = false;

  constructor(
    private readonly client: KubeClient,
    private readonly onChange: () => void,
    private readonly onError: (err: GrpcKubeError) => void,
    private readonly lwOpts: Omit<ListWatchOptions, 'labelSelector'> = {},
  ) {}

  readonly permits: ReferencePolicy = (from, to, service) => {
    const w = this.watches.get(to);
    return w !== undefined && grantsPermit(w.grants.values(), from, service);
  };

  /** Watch exactly these namespaces (those a route's backendRef points into from elsewhere). */
  watchNamespaces(namespaces: ReadonlySet<string>): void {
    if (this.stopped) return;
    for (const [ns, w] of this.watches) {
      if (namespaces.has(ns)) continue;
      this.watches.delete(ns);
      void w.lw.stop();
    }
    for (const ns of namespaces) {
      if (this.watches.has(ns)) continue;
      const grants = new Map<string, ReferenceGrant>();
      const lw = new ListWatch<ReferenceGrant>(
        this.client,
        { ...GRANTS, namespace: ns },
        {
          onList: (items) => {
            grants.clear();
            for (const g of items) grants.set(g.metadata.name ?? '', g);
            this.onChange();
          },
          onEvent: (type, g) => {
            if (type === 'DELETED') grants.delete(g.metadata.name ?? '');
            else grants.set(g.metadata.name ?? '', g);
            this.onChange();
          },
          onError: (err) => this.onError(err),
        },
        { ...this.lwOpts, backoff: { initialMs: 500, maxMs: 30_000, ...this.lwOpts.backoff } },
      );
      this.watches.set(ns, { lw, grants });
      lw.start();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const all = [...this.watches.values()];
    this.watches.clear();
    await Promise.all(all.map((w) => w.lw.stop()));
  }
}

/** Namespaces other than the route's own that its backendRefs name. */
export function crossNamespaces(route: GrpcRoute): string[] {
  const ns = route.metadata.namespace ?? 'default';
  const out = new Set<string>();
  const rules = route.spec?.rules;
  for (const rule of Array.isArray(rules) ? rules : [])
    for (const b of Array.isArray(rule?.backendRefs) ? rule.backendRefs : [])
      if (typeof b?.namespace === 'string' && b.namespace !== ns) out.add(b.namespace);
  return [...out];
}

export interface Condition {
  type: 'Accepted' | 'ResolvedRefs';
  status: 'True' | 'False';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
}

export interface RouteParentStatus {
  parentRef: GrpcRouteParentRef;
  controllerName: string;
  conditions: Condition[];
}

type Verdict = Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;

function isServiceParent(p: GrpcRouteParentRef): boolean {
  return (
    (p.group === undefined || p.group === '' || p.group === 'core') && (p.kind ?? 'Service') === 'Service'
  );
}

/**
 * Accepted and ResolvedRefs for a route, or undefined when it is not ours (no Service parent).
 * `backendExists` answers for each backend Service (false: BackendNotFound).
 */
export async function judgeRoute(
  route: GrpcRoute,
  permits: ReferencePolicy,
  backendExists: (namespace: string, service: string) => Promise<boolean>,
): Promise<[Verdict, Verdict] | undefined> {
  let compiled;
  try {
    compiled = compileGrpcRoute(route, permits);
  } catch (err) {
    if (!(err instanceof InvalidRouteError)) throw err;
    if (err.reason === 'UnsupportedValue')
      return [
        { type: 'Accepted', status: 'False', reason: 'UnsupportedValue', message: err.message },
        {
          type: 'ResolvedRefs',
          status: 'True',
          reason: 'ResolvedRefs',
          message: 'not checked: the route is not accepted',
        },
      ];
    return [
      { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'the route is valid' },
      { type: 'ResolvedRefs', status: 'False', reason: err.reason, message: err.message },
    ];
  }
  if (compiled === undefined) return undefined;
  const accepted: Verdict = {
    type: 'Accepted',
    status: 'True',
    reason: 'Accepted',
    message: 'the route is served',
  };
  for (const b of compiled.backends) {
    if (!(await backendExists(b.namespace, b.service)))
      return [
        accepted,
        {
          type: 'ResolvedRefs',
          status: 'False',
          reason: 'BackendNotFound',
          message: `backendRef Service ${b.namespace}/${b.service} does not exist; its share of the RPCs fails with UNAVAILABLE`,
        },
      ];
  }
  return [
    accepted,
    { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'every backendRef resolves' },
  ];
}

/**
 * The route's status.parents with ours replaced by `verdict` for each Service parent; undefined when
 * that changes nothing. A condition whose status stays keeps its lastTransitionTime.
 */
export function mergeParents(
  route: GrpcRoute,
  verdict: readonly Verdict[],
  now: string,
): RouteParentStatus[] | undefined {
  const existing = (route as { status?: { parents?: unknown } }).status?.parents;
  const parents = (Array.isArray(existing) ? existing : []) as RouteParentStatus[];
  const others = parents.filter((p) => p?.controllerName !== ROUTE_CONTROLLER_NAME);
  const oursBefore = parents.filter((p) => p?.controllerName === ROUTE_CONTROLLER_NAME);
  const generation = route.metadata.generation;
  const refs = route.spec?.parentRefs;
  const ours: RouteParentStatus[] = (Array.isArray(refs) ? refs : []).filter(isServiceParent).map((ref) => {
    const before = oursBefore.find((p) => canonical(p.parentRef) === canonical(ref));
    return {
      parentRef: ref,
      controllerName: ROUTE_CONTROLLER_NAME,
      conditions: verdict.map((v) => {
        const prev = before?.conditions?.find((c) => c?.type === v.type);
        return {
          ...v,
          ...(generation !== undefined ? { observedGeneration: generation } : {}),
          lastTransitionTime: prev?.status === v.status ? prev.lastTransitionTime : now,
        };
      }),
    };
  });
  // The API server hands objects back with its own key order: compare canonically.
  if (canonical(ours) === canonical(oursBefore)) return undefined;
  return [...others, ...ours];
}

/** JSON with object keys sorted, so equal values compare equal whoever serialised them. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x !== null && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(
          Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : x,
  );
}

/** Whether a Service exists (a 403 or an outage answers yes: we cannot tell, so we do not claim it missing). */
export async function serviceExists(
  client: KubeClient,
  namespace: string,
  service: string,
): Promise<boolean> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new DOMException('no answer in 10000 ms', 'TimeoutError')), 10_000);
  timer.unref();
  try {
    await client.get({ ...SERVICES, namespace }, service, { signal: ac.signal });
    return true;
  } catch (err) {
    return !(err instanceof KubeApiError && err.status === 404);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Writes each route's status when it changes, one write per route at a time (a change meanwhile is
 * judged again after it). Errors (403 without `update grpcroutes/status`, a 409) go to onError.
 */
export class RouteStatusWriter {
  private readonly busy = new Map<string, GrpcRoute | undefined>();
  private stopped = false;

  constructor(
    private readonly client: KubeClient,
    private readonly permits: ReferencePolicy,
    private readonly onError: (err: GrpcKubeError) => void,
    private readonly now: () => string = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
  ) {}

  /** Judge `route` and write its status if ours changed. */
  sync(route: GrpcRoute): void {
    const key = `${route.metadata.namespace ?? 'default'}/${route.metadata.name ?? ''}`;
    if (this.stopped) return;
    if (this.busy.has(key)) {
      this.busy.set(key, route); // judged again when the write in flight ends
      return;
    }
    this.busy.set(key, undefined);
    void this.write(route)
      .catch((err: unknown) => {
        if (this.stopped) return;
        if (err instanceof KubeApiError && err.status === 409) return; // the watch brings the newer one
        this.onError(
          err instanceof GrpcKubeError
            ? err
            : new GrpcKubeError('GK_ERR_KUBE_PROTOCOL', `status of GRPCRoute ${key}: ${String(err)}`),
        );
      })
      .finally(() => {
        const next = this.busy.get(key);
        this.busy.delete(key);
        if (next !== undefined) this.sync(next);
      });
  }

  stop(): void {
    this.stopped = true;
  }

  private async write(route: GrpcRoute): Promise<void> {
    const verdict = await judgeRoute(route, this.permits, (ns, svc) => serviceExists(this.client, ns, svc));
    if (verdict === undefined || this.stopped) return;
    const parents = mergeParents(route, verdict, this.now());
    if (parents === undefined) return;
    const ns = route.metadata.namespace ?? 'default';
    const ac = new AbortController();
    const timer = setTimeout(
      () => ac.abort(new DOMException('no answer in 10000 ms', 'TimeoutError')),
      10_000,
    );
    timer.unref();
    try {
      await this.client.replaceStatus(
        { ...GRPCROUTES, namespace: ns },
        { ...route, status: { ...(route as { status?: object }).status, parents } } as GrpcRoute,
        { signal: ac.signal },
      );
    } finally {
      clearTimeout(timer);
    }
  }
}
