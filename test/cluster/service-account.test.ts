// Embedded-cluster pods talk to the embedded API server as their ServiceAccount: the kubelet registers
// a token for the pod's ServiceAccount (the rules the cluster was given for it), writes it with ca.crt
// and the namespace into the pod's own directory, and the container's grpc-kube in-cluster config
// (KUBERNETES_SERVICE_HOST/PORT, GRPC_KUBE_SERVICEACCOUNT_DIR) lists EndpointSlices over HTTPS. The
// ServiceAccount with rules lists; the other gets 403 naming it; a pod's token dies with the pod.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { startEmbeddedCluster } from '@grpc-kube/lab/internal/cluster/embedded.js';
import { ImageRuntime } from '@grpc-kube/lab/internal/cluster/pod-runtime.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { testPki } from '../helpers/pki.js';
import { eventually } from '../helpers/wait.js';
import { OUTCOME, listSlicesPod } from './fixtures/list-slices.js';

const NS = 'sa-embedded';

test('ServiceAccount token projected: the account with rules lists, the one without gets 403', async (t) => {
  const pki = await testPki();
  t.after(() => pki.remove());
  const s = await pki.server('api');
  const cluster = await startEmbeddedCluster({
    runtime: new ImageRuntime(),
    namespaces: [NS],
    ipPool: { first: '127.0.61.1' },
    apiServer: {
      tls: { key: readFileSync(s.keyFile), cert: readFileSync(s.certFile), ca: readFileSync(pki.ca) },
    },
    serviceAccountTokens: {
      rules: (ns, sa) =>
        sa === 'reader'
          ? [
              {
                verbs: ['get', 'list', 'watch'],
                apiGroups: ['discovery.k8s.io'],
                resources: ['endpointslices'],
                namespaces: [ns],
              },
            ]
          : [],
    },
  });
  t.after(() => cluster.stop());
  cluster.store.create(RESOURCES.pods, listSlicesPod('allowed', NS, 'reader'));
  cluster.store.create(RESOURCES.pods, listSlicesPod('denied', NS, 'nobody'));
  const outcome = async (name: string): Promise<string> => {
    let line: string | undefined;
    await eventually(
      `pod ${name} to print its outcome`,
      () => {
        line = cluster.kubelet.logs(NS, name)?.find((l) => OUTCOME.test(l));
        return line !== undefined;
      },
      30_000,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}; log ${JSON.stringify(cluster.kubelet.logs(NS, name))}`);
    });
    return line ?? '';
  };
  assert.match(await outcome('allowed'), /^listed \d+$/);
  const denied = await outcome('denied');
  assert.match(denied, /^failed GK_ERR_KUBE_FORBIDDEN /);
  assert.match(denied, /system:serviceaccount:sa-embedded:nobody/);
});
