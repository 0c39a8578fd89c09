// startLabCluster's specRuntime: the lab's embedded cluster runs a Deployment's pod spec as written
// (ImageRuntime) instead of the lab's Hello script — the pod turns Ready only through an exec
// readiness probe that needs the image's command, its HOSTNAME and a fieldRef variable.
import { test } from 'node:test';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startLabCluster } from '@grpc-kube/lab/internal/lab/cluster.js';
import type { Deployment } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';

const FIXTURE_DIR = dirname(fileURLToPath(new URL('./fixtures/spec-pod.js', import.meta.url)));
const NS = 'spec-runtime';

test('startLabCluster({ specRuntime }) runs pod specs as written on the embedded cluster', async (t) => {
  const cluster = await startLabCluster('embedded', {
    namespace: NS,
    probePeriodMs: 100,
    random: Math.random,
    podNice: 0,
    specRuntime: { images: { 'spec-pod:test': { cwd: FIXTURE_DIR, cmd: ['node', 'spec-pod.js'] } } },
  });
  t.after(() => cluster.stop());
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
              readinessProbe: {
                exec: {
                  command: [
                    'sh',
                    '-c',
                    'test -f spec-pod.js && test -n "$MY_NAME" && test "$MY_NAME" = "$HOSTNAME"',
                  ],
                },
              },
            },
          ],
        },
      },
    },
  };
  await cluster.create('deployments', deployment);
  await cluster.waitForReadyPods(NS, { app: 'spec' }, 1, 20_000);
});
