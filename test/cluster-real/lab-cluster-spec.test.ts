// startLabCluster('real', { specRuntime }): pod specs run as written inside their network namespaces,
// with their ServiceAccount's token projected — the pod turns Ready only through an exec probe that
// finds the image's files, a fieldRef variable and the token. Needs root and the built binaries.
import { describe, it } from 'node:test';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startLabCluster } from '@grpc-kube/lab/internal/lab/cluster.js';
import type { Deployment } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { realLabSkip } from '../helpers/real.js';

const FIXTURE_DIR = dirname(fileURLToPath(new URL('../cluster/fixtures/spec-pod.js', import.meta.url)));
const NS = 'spec-runtime-real';

describe('the lab real cluster with specRuntime', { skip: realLabSkip() }, () => {
  it('runs a pod spec as written, with its ServiceAccount token in the pod', async (t) => {
    const cluster = await startLabCluster('real', {
      namespace: NS,
      probePeriodMs: 100,
      random: Math.random,
      podNice: 0,
      specRuntime: { images: { 'spec-pod:test': { cwd: FIXTURE_DIR, cmd: ['node', 'spec-pod.js'] } } },
    });
    t.after(() => cluster.stop());
    const probe =
      'test -f spec-pod.js && test "$MY_NAME" = "$HOSTNAME" && test -s "$GRPC_KUBE_SERVICEACCOUNT_DIR/token" && test -n "$KUBERNETES_SERVICE_HOST"';
    const deployment: Deployment = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'spec', namespace: NS },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'spec' } },
        template: {
          metadata: { labels: { app: 'spec' } },
          spec: {
            containers: [
              {
                name: 'main',
                image: 'spec-pod:test',
                env: [{ name: 'MY_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
                readinessProbe: { exec: { command: ['sh', '-c', probe] } },
              },
            ],
          },
        },
      },
    };
    await cluster.create('deployments', deployment);
    await cluster.waitForReadyPods(NS, { app: 'spec' }, 1, 60_000);
  });
});
