// `grpc-kube lab --cluster real` died at canary-shift with GK_ERR_KUBE_NOT_FOUND: the real
// kube-apiserver serves GRPCRoutes only through their CRD, and the lab never installed it. The lab's
// real cluster now installs deploy/crds at start; here the canary's route is applied through the
// lab's own cluster handle, then read back from the API.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { readCrds } from '@grpc-kube/lab/internal/cluster/real/crds.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { startLabCluster } from '@grpc-kube/lab/internal/lab/cluster.js';
import { packageRoot } from '@grpc-kube/lab/internal/lab/paths.js';
import { canaryGrpcRoute } from '@grpc-kube/lab/internal/lab/strategies/xds.js';
import type { KubeObject } from 'grpc-kube/internal/kube/types.js';
import type { GrpcRoute } from 'grpc-kube/internal/route/grpcroute.js';
import { join } from 'node:path';
import { realLabSkip } from '../helpers/real.js';

const skip = realLabSkip();

describe('the real lab cluster', () => {
  it('reads deploy/crds as its kustomization lists it: the GRPCRoute CRD', () => {
    assert.deepEqual(
      readCrds(join(packageRoot(), 'deploy', 'crds')).map((c) => c.metadata.name),
      ['grpcroutes.gateway.networking.k8s.io', 'referencegrants.gateway.networking.k8s.io'],
    );
  });

  it(
    'installs the GRPCRoute CRD at start: the canary route applies',
    { skip, timeout: 300_000 },
    async (t) => {
      const cluster = await startLabCluster('real', {
        namespace: 'lab',
        probePeriodMs: 100,
        random: Math.random,
        podNice: 10,
      });
      t.after(() => cluster.stop());
      const route = (stable: number, canary: number): KubeObject =>
        canaryGrpcRoute({
          namespace: 'lab',
          service: 'hello',
          port: 50051,
          stableService: 'hello',
          canaryService: 'hello-canary',
          weights: { stable, canary },
        }) as unknown as KubeObject;
      await cluster.applyRoute(route(90, 10));
      // Again: the weight change canary-shift makes (a patch of the spec).
      await cluster.applyRoute(route(50, 50));
      const client = KubeClient.fromKubeConfigString(cluster.kubeConfigYaml);
      t.after(() => client.close());
      const list = await client.list<GrpcRoute & KubeObject>({
        group: 'gateway.networking.k8s.io',
        version: 'v1',
        resource: 'grpcroutes',
        namespace: 'lab',
      });
      assert.deepEqual(
        list.items.map((r) =>
          r.spec?.rules?.flatMap((x) => (x.backendRefs ?? []).map((b) => `${b.name}=${b.weight}`)),
        ),
        [['hello=50', 'hello-canary=50']],
      );
    },
  );
});
