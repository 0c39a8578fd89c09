// `grpc-kube lab --cluster real` died at canary-shift with GK_ERR_KUBE_NOT_FOUND: the real
// kube-apiserver serves GRPCRoutes only through their CRD, and the lab never installed it. The lab's
// real cluster now installs deploy/crds at start, read as their kustomization lists them (here); that
// the canary's route then applies on the real cluster is test/lab/lab-cluster.test.ts.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { readCrds } from '@grpc-kube/lab/internal/cluster/real/crds.js';
import { packageRoot } from '@grpc-kube/lab/internal/lab/paths.js';

describe('the real lab cluster', () => {
  it('reads deploy/crds as its kustomization lists it: the GRPCRoute CRD', () => {
    assert.deepEqual(
      readCrds(join(packageRoot(), 'deploy', 'crds')).map((c) => c.metadata.name),
      ['grpcroutes.gateway.networking.k8s.io', 'referencegrants.gateway.networking.k8s.io'],
    );
  });
});
