// Route status written back by whoever serves GRPCRoutes (the watcher the xDS control plane and the
// proxy share): Accepted and ResolvedRefs per Service parent under our controllerName, through the
// status subresource of the embedded API server (real HTTP, real RBAC); other controllers' entries
// kept; cross-namespace backends refused (RefNotPermitted) until a ReferenceGrant allows them.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { installCrds, readCrds } from '@grpc-kube/lab/internal/cluster/real/crds.js';
import { packageRoot } from '@grpc-kube/lab/internal/lab/paths.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { compileGrpcRoute, type GrpcRoute } from 'grpc-kube/internal/route/grpcroute.js';
import {
  mergeParents,
  ROUTE_CONTROLLER_NAME,
  type RouteParentStatus,
} from 'grpc-kube/internal/route/route-status.js';
import { GrpcRouteWatcher } from 'grpc-kube/internal/route/route-watcher.js';
import { startApi, until } from '../helpers/kube.js';
import { realControlPlaneSkip, startRealApi } from '../helpers/real.js';

const GRPCROUTES = { group: 'gateway.networking.k8s.io', version: 'v1', resource: 'grpcroutes' };

function service(namespace: string, name: string): never {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace },
    spec: { ports: [{ name: 'grpc', port: 80, targetPort: 50051 }] },
  } as never;
}

function route(name: string, backend: { name: string; namespace?: string; kind?: string }): GrpcRoute {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    metadata: { name, namespace: 'default' },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: 'app', port: 80 }],
      rules: [{ backendRefs: [{ ...backend, port: 80 }] }],
    },
  };
}

/** Our entry's conditions as `type=status/reason`, once written. */
function ours(api: EmbeddedApiServer, name: string): string[] | undefined {
  const r = api.store.get<GrpcRoute & { status?: { parents?: RouteParentStatus[] } }>(
    RESOURCES.grpcroutes,
    'default',
    name,
  );
  const mine = r?.status?.parents?.find((p) => p.controllerName === ROUTE_CONTROLLER_NAME);
  return mine?.conditions.map((c) => `${c.type}=${c.status}/${c.reason}`);
}

async function watching(
  t: { after(fn: () => unknown): void },
  api: EmbeddedApiServer,
): Promise<GrpcRouteWatcher> {
  const client = KubeClient.fromKubeConfigString(api.kubeConfigYaml());
  t.after(() => client.close());
  const errors: string[] = [];
  const w = new GrpcRouteWatcher(client, {
    backoff: { initialMs: 20, maxMs: 100 },
    onChange: () => {},
    onError: (e) => errors.push(e.message),
  });
  t.after(() => w.stop());
  await w.start();
  return w;
}

test('status.parents: Accepted and ResolvedRefs with Gateway API reasons, other controllers kept', async (t) => {
  const api = await startApi();
  t.after(() => api.stop());
  for (const svc of ['app', 'app-v2']) api.store.create(RESOURCES.services, service('default', svc));
  api.store.create(RESOURCES.grpcroutes, route('good', { name: 'app-v2' }));
  api.store.create(RESOURCES.grpcroutes, route('missing', { name: 'nope' }));
  api.store.create(RESOURCES.grpcroutes, route('pod', { name: 'app-v2', kind: 'Pod' }));
  const filtered = route('filters', { name: 'app-v2' });
  const rule = filtered.spec?.rules?.[0];
  if (rule !== undefined) rule.filters = [{ type: 'RequestHeaderModifier' }];
  api.store.create(RESOURCES.grpcroutes, filtered);
  // Another controller's entry, written before ours, through the status subresource.
  const admin = KubeClient.fromKubeConfigString(api.kubeConfigYaml());
  t.after(() => admin.close());
  const stored = api.store.get<GrpcRoute>(RESOURCES.grpcroutes, 'default', 'good');
  assert.ok(stored);
  const other = {
    parentRef: { name: 'gw', kind: 'Gateway', group: 'gateway.networking.k8s.io' },
    controllerName: 'example.com/other',
    conditions: [],
  };
  await admin.replaceStatus({ ...GRPCROUTES, namespace: 'default' }, {
    ...stored,
    status: { parents: [other] },
  } as GrpcRoute);

  await watching(t, api);
  await until(() => ours(api, 'good') !== undefined && ours(api, 'missing') !== undefined, 20_000);
  await until(() => ours(api, 'pod') !== undefined, 20_000);
  assert.deepEqual(ours(api, 'good'), ['Accepted=True/Accepted', 'ResolvedRefs=True/ResolvedRefs']);
  assert.deepEqual(ours(api, 'missing'), ['Accepted=True/Accepted', 'ResolvedRefs=False/BackendNotFound']);
  assert.deepEqual(ours(api, 'pod'), ['Accepted=True/Accepted', 'ResolvedRefs=False/InvalidKind']);
  await until(() => ours(api, 'filters') !== undefined, 20_000);
  assert.deepEqual(ours(api, 'filters'), [
    'Accepted=False/UnsupportedValue',
    'ResolvedRefs=True/ResolvedRefs',
  ]);
  const good = api.store.get<GrpcRoute & { status: { parents: RouteParentStatus[] } }>(
    RESOURCES.grpcroutes,
    'default',
    'good',
  );
  assert.deepEqual(good?.status.parents[0], other);
  assert.deepEqual(good?.status.parents[1]?.parentRef, { group: '', kind: 'Service', name: 'app', port: 80 });
});

test('a cross-namespace backend is refused (RefNotPermitted) until a ReferenceGrant allows it', async (t) => {
  const api = await startApi();
  t.after(() => api.stop());
  api.store.create(RESOURCES.namespaces, {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: 'other' },
  });
  api.store.create(RESOURCES.services, service('default', 'app'));
  api.store.create(RESOURCES.services, service('other', 'shared'));
  const r = route('cross', { name: 'shared', namespace: 'other' });
  api.store.create(RESOURCES.grpcroutes, r);
  const w = await watching(t, api);
  await until(() => ours(api, 'cross') !== undefined, 20_000);
  assert.deepEqual(ours(api, 'cross'), ['Accepted=True/Accepted', 'ResolvedRefs=False/RefNotPermitted']);
  assert.throws(() => compileGrpcRoute(r, w.permits), /no ReferenceGrant in namespace other/);

  // A grant for another Service, or from another namespace, does not count.
  const grant = (name: string, from: string, to: string | undefined): never =>
    ({
      apiVersion: 'gateway.networking.k8s.io/v1beta1',
      kind: 'ReferenceGrant',
      metadata: { name, namespace: 'other' },
      spec: {
        from: [{ group: 'gateway.networking.k8s.io', kind: 'GRPCRoute', namespace: from }],
        to: [{ group: '', kind: 'Service', ...(to !== undefined ? { name: to } : {}) }],
      },
    }) as never;
  api.store.create(RESOURCES.referencegrants, grant('wrong-service', 'default', 'private'));
  api.store.create(RESOURCES.referencegrants, grant('wrong-from', 'elsewhere', undefined));
  api.store.create(RESOURCES.referencegrants, grant('right', 'default', 'shared'));
  await until(() => ours(api, 'cross')?.[1] === 'ResolvedRefs=True/ResolvedRefs', 20_000);
  const compiled = compileGrpcRoute(r, w.permits);
  assert.deepEqual(compiled?.routes[0]?.clusters, [{ cluster: 'other/shared:80', weight: 1 }]);
  // Taking the right grant away refuses the backend again.
  api.store.delete(RESOURCES.referencegrants, 'other', 'right');
  await until(() => ours(api, 'cross')?.[1] === 'ResolvedRefs=False/RefNotPermitted', 20_000);
});

test('mergeParents: no write when our entries would not change; a kept status keeps its transition time', () => {
  const r = route('x', { name: 'b' });
  r.metadata.generation = 3;
  const verdict = [
    { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'm' },
    { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'm' },
  ] as const;
  const first = mergeParents(r, verdict, 't1');
  assert.ok(first);
  assert.equal(first[0]?.conditions[0]?.observedGeneration, 3);
  const written = { ...r, status: { parents: first } } as GrpcRoute;
  assert.equal(mergeParents(written, verdict, 't2'), undefined);
  // As the real API server hands it back: keys sorted. Still unchanged.
  const sorted = JSON.parse(
    JSON.stringify(first, (_k, x: unknown) =>
      x !== null && typeof x === 'object' && !Array.isArray(x)
        ? Object.fromEntries(Object.entries(x).sort())
        : x,
    ),
  ) as RouteParentStatus[];
  assert.equal(mergeParents({ ...r, status: { parents: sorted } } as GrpcRoute, verdict, 't2'), undefined);
  const changed = mergeParents(
    written,
    [verdict[0], { type: 'ResolvedRefs', status: 'False', reason: 'BackendNotFound', message: 'm' }],
    't3',
  );
  assert.deepEqual(
    changed?.[0]?.conditions.map((c) => c.lastTransitionTime),
    ['t1', 't3'],
  );
});

test(
  'on the real kube-apiserver (deploy/crds installed): status written, a ReferenceGrant honoured',
  {
    skip: realControlPlaneSkip(),
    timeout: 300_000,
  },
  async (t) => {
    const { cp, kube } = await startRealApi(t);
    await installCrds(kube, readCrds(join(packageRoot(), 'deploy', 'crds')));
    await kube.create(RESOURCES.namespaces, {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'other' },
    });
    await kube.create(RESOURCES.services, service('default', 'app'));
    await kube.create(RESOURCES.services, service('other', 'shared'));
    await kube.create(RESOURCES.grpcroutes, route('cross', { name: 'shared', namespace: 'other' }));
    const client = KubeClient.fromKubeConfigString(cp.adminKubeConfig);
    t.after(() => client.close());
    const errors: string[] = [];
    const w = new GrpcRouteWatcher(client, {
      backoff: { initialMs: 20, maxMs: 200 },
      onChange: () => {},
      onError: (e) => errors.push(e.message),
    });
    t.after(() => w.stop());
    await w.start();
    const resolvedRefs = async (): Promise<string | undefined> => {
      const r = await kube.get<GrpcRoute & { status?: { parents?: RouteParentStatus[] } }>(
        RESOURCES.grpcroutes,
        'default',
        'cross',
      );
      const c = r?.status?.parents
        ?.find((p) => p.controllerName === ROUTE_CONTROLLER_NAME)
        ?.conditions.find((x) => x.type === 'ResolvedRefs');
      return c === undefined ? undefined : `${c.status}/${c.reason}`;
    };
    let seen: string | undefined;
    await until(async () => (seen = await resolvedRefs()) !== undefined, 60_000, 50).catch((err: Error) => {
      throw new Error(`${err.message}; watcher errors: ${errors.join(' | ')}`);
    });
    assert.equal(seen, 'False/RefNotPermitted');
    await kube.create(RESOURCES.referencegrants, {
      apiVersion: 'gateway.networking.k8s.io/v1beta1',
      kind: 'ReferenceGrant',
      metadata: { name: 'from-default', namespace: 'other' },
      spec: {
        from: [{ group: 'gateway.networking.k8s.io', kind: 'GRPCRoute', namespace: 'default' }],
        to: [{ group: '', kind: 'Service', name: 'shared' }],
      },
    });
    await until(async () => (await resolvedRefs()) === 'True/ResolvedRefs', 60_000, 50);
  },
);
