// Pods on the real control plane talk to kube-apiserver as their ServiceAccount: the lab kubelet
// requests a token bound to the pod (TokenRequest), writes it with ca.crt and the namespace into the
// pod's own directory, and the container's grpc-kube in-cluster config (KUBERNETES_SERVICE_HOST/PORT,
// GRPC_KUBE_SERVICEACCOUNT_DIR) lists EndpointSlices through the relay on the lab gateway. RBAC
// applies for real: the ServiceAccount the Role is bound to lists; the other gets 403 naming it.
// Needs root (network namespaces) and the built binaries.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { KINDS } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import { ImageRuntime } from '@grpc-kube/lab/internal/cluster/pod-runtime.js';
import { netnsWrap } from '@grpc-kube/lab/internal/cluster/real/kubelet-runtime.js';
import { startRealLabCluster, type RealLabCluster } from '@grpc-kube/lab/internal/cluster/real/cluster.js';
import { OUTCOME, listSlicesPod } from '../cluster/fixtures/list-slices.js';
import { eventually } from '../helpers/wait.js';
import { realLabSkip } from '../helpers/real.js';

const skip = realLabSkip();
const NS = 'sa-lab';

describe('ServiceAccount tokens projected into real-cluster pods', { skip }, () => {
  let cluster: RealLabCluster;
  const errors: string[] = [];
  before(async () => {
    cluster = await startRealLabCluster({
      podRuntime: (network) => new ImageRuntime({ wrap: netnsWrap(network), podIpEnv: false }),
      namespaces: [NS],
      serviceAccountTokens: true,
      network: { cidr: '10.251.58.0/24' },
      onError: (where, err) => void errors.push(`${where}: ${String(err)}`),
    });
  });
  after(async () => {
    await cluster?.stop();
  });

  it('RBAC applies: the bound ServiceAccount lists, the unbound one gets 403 in its log', async () => {
    const rbac = 'rbac.authorization.k8s.io/v1';
    for (const sa of ['reader', 'nobody']) {
      await cluster.kube.create(KINDS.serviceaccounts, {
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: { name: sa, namespace: NS },
      });
    }
    await cluster.kube.create(KINDS.roles, {
      apiVersion: rbac,
      kind: 'Role',
      metadata: { name: 'endpoints', namespace: NS },
      rules: [
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
      ],
    });
    await cluster.kube.create(KINDS.rolebindings, {
      apiVersion: rbac,
      kind: 'RoleBinding',
      metadata: { name: 'reader-endpoints', namespace: NS },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'endpoints' },
      subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace: NS }],
    });
    await cluster.kube.create(KINDS.pods, listSlicesPod('allowed', NS, 'reader'));
    await cluster.kube.create(KINDS.pods, listSlicesPod('denied', NS, 'nobody'));
    const outcome = async (name: string): Promise<string> => {
      let line: string | undefined;
      await eventually(
        `pod ${name} to print its outcome`,
        () => {
          line = cluster.kubelet.logs(NS, name)?.find((l) => OUTCOME.test(l));
          return line !== undefined;
        },
        60_000,
      ).catch((err: unknown) => {
        const log = JSON.stringify(cluster.kubelet.logs(NS, name));
        throw new Error(`${String(err)}; log ${log}; kubelet errors ${JSON.stringify(errors)}`);
      });
      return line ?? '';
    };
    assert.match(await outcome('allowed'), /^listed \d+$/);
    const denied = await outcome('denied');
    assert.match(denied, /^failed GK_ERR_KUBE_FORBIDDEN /);
    assert.match(denied, /system:serviceaccount:sa-lab:nobody/);
  });
});
