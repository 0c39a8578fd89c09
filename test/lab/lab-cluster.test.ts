// LabCluster, what the lab runner drives, on both clusters through the same calls (lab/cluster.ts,
// one implementation over each backend's Kube): apply() keeps a Namespace that exists and says why
// it does not apply a kind the API server does not serve; applyRoute() creates the canary's route,
// then patches its weights (on the real cluster through the GRPCRoute CRD installed at start — the
// lab once died there with GK_ERR_KUBE_NOT_FOUND); create, waitForReadyPods, restartRollout, scale,
// listPods and watchPods. What the cluster holds is read back over HTTP with the admin kubeconfig.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { deploymentManifest, headlessServiceManifest } from '@grpc-kube/lab/internal/cluster/workloads.js';
import type { Deployment } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { KINDS, httpKube } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import { startLabCluster, type ClusterKind } from '@grpc-kube/lab/internal/lab/cluster.js';
import { canaryGrpcRoute } from '@grpc-kube/lab/internal/lab/strategies/xds.js';
import type { KubeObject } from 'grpc-kube/internal/kube/types.js';
import type { GrpcRoute } from 'grpc-kube/internal/route/grpcroute.js';
import { realLabSkip } from '../helpers/real.js';
import { eventually } from '../helpers/wait.js';

const NS = 'lab';
const APP = {
  name: 'hello',
  namespace: NS,
  replicas: 2,
  terminationGracePeriodSeconds: 2,
  probe: { periodMs: 100, failureThreshold: 1 },
};

const route = (stable: number, canary: number): KubeObject =>
  canaryGrpcRoute({
    namespace: NS,
    service: 'hello',
    port: 50051,
    stableService: 'hello',
    canaryService: 'hello-canary',
    weights: { stable, canary },
  }) as unknown as KubeObject;

for (const kind of ['embedded', 'real'] as const satisfies readonly ClusterKind[]) {
  test(
    `${kind}: apply, applyRoute, create, ready pods, restartRollout, scale, listPods, watchPods`,
    { skip: kind === 'real' ? realLabSkip() : false, timeout: 300_000 },
    async (t) => {
      const cluster = await startLabCluster(kind, {
        namespace: NS,
        probePeriodMs: 100,
        random: Math.random,
        podNice: 10,
      });
      t.after(() => cluster.stop());
      const kube = httpKube(cluster.kubeConfigYaml);
      t.after(() => kube.close());

      const namespace = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } };
      assert.equal(await cluster.apply(namespace), undefined, 'a Namespace that exists is kept');
      const role = {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'Role',
        metadata: { name: 'reader', namespace: NS },
        rules: [{ apiGroups: [''], resources: ['services'], verbs: ['get'] }],
      };
      if (kind === 'embedded') {
        // No serviceAccountRules given: the embedded API server serves no RBAC objects.
        assert.match(
          (await cluster.apply(role)) ?? '',
          /embedded cluster's API server does not serve rbac\.authorization\.k8s\.io\/v1 Role/,
        );
      } else {
        assert.equal(await cluster.apply(role), undefined);
        assert.ok(await kube.get(KINDS.roles, NS, 'reader'), 'the Role is stored');
      }
      assert.match(
        (await cluster.apply({ apiVersion: 'v1', kind: 'Gadget', metadata: { name: 'g', namespace: NS } })) ??
          '',
        /does not serve v1 Gadget/,
      );

      await cluster.applyRoute(route(90, 10));
      await cluster.applyRoute(route(50, 50));
      const routes = await kube.list<GrpcRoute & KubeObject>(KINDS.grpcroutes, { namespace: NS });
      assert.deepEqual(
        routes.items.map((r) =>
          r.spec?.rules?.flatMap((x) => (x.backendRefs ?? []).map((b) => `${b.name}=${b.weight}`)),
        ),
        [['hello=50', 'hello-canary=50']],
      );

      const added = new Set<string>();
      const stop = cluster.watchPods(NS, 'app=hello', (type, pod) => {
        if (type === 'ADDED') added.add(pod.metadata.name ?? '');
      });
      t.after(stop);
      await cluster.create('services', headlessServiceManifest(APP));
      await cluster.create('deployments', deploymentManifest(APP));
      await cluster.waitForReadyPods(NS, { app: 'hello' }, 2, 60_000);

      await cluster.restartRollout(NS, 'hello', '2026-12-03T00:00:00Z');
      const d = await kube.get<Deployment>(KINDS.deployments, NS, 'hello');
      assert.equal(
        d?.spec.template.metadata?.annotations?.['kubectl.kubernetes.io/restartedAt'],
        '2026-12-03T00:00:00Z',
      );
      assert.equal(d?.spec.replicas, 2, 'the merge patch keeps the rest of the spec');

      await cluster.scale(NS, 'hello', 1);
      await cluster.waitForReadyPods(NS, { app: 'hello' }, 1, 60_000);
      const live = (await cluster.listPods(NS, 'app=hello')).filter((p) => !p.metadata.deletionTimestamp);
      assert.ok(live.length >= 1, `live pods: ${live.length}`);
      await eventually(
        'every pod listed to have been ADDED on the watch',
        () => live.every((p) => added.has(p.metadata.name ?? '')),
        30_000,
      );
    },
  );
}
