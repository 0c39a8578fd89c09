// The lab kubelet against the REAL control plane: the real deployment, replicaset and endpointslice
// controllers act on the Nodes, Leases and pod statuses it writes, and pods are real processes in
// their own network namespaces on 10.244.x.y. Asserted through our KubernetesEndpointSource and real
// gRPC calls to the pod addresses. Needs root (network namespaces) and the built binaries.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { deploymentManifest, headlessServiceManifest } from '@grpc-kube/lab/internal/cluster/embedded.js';
import {
  startRealControlPlane,
  type RealControlPlane,
} from '@grpc-kube/lab/internal/cluster/real/control-plane.js';
import { KINDS, httpKube, type Kube } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import { Kubelet } from '@grpc-kube/lab/internal/cluster/kubelet.js';
import { realNodeOptions } from '@grpc-kube/lab/internal/cluster/real/kubelet.js';
import { NetnsScriptRuntime } from '@grpc-kube/lab/internal/cluster/real/kubelet-runtime.js';
import { createLabNetwork, type LabNetwork } from '@grpc-kube/lab/internal/cluster/real/netns.js';
import type { Node, Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import type { Endpoint } from 'grpc-kube/internal/discovery/endpoint.js';
import type { KubeObject } from 'grpc-kube/internal/kube/types.js';
import { KubernetesEndpointSource } from 'grpc-kube/internal/discovery/kube-source.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { GreeterClient } from '@grpc-kube/lab/internal/lab/hello.js';
import { POD_MAIN_SCRIPT } from '@grpc-kube/lab/internal/lab/pod-main.js';
import { eventually } from '../helpers/wait.js';
import { realLabSkip } from '../helpers/real.js';

const skip = realLabSkip();

const NS = 'lab';
const CIDR = '10.246.0.0/16';

describe('the lab kubelet on the real control plane', { skip }, () => {
  let cp: RealControlPlane;
  let net: LabNetwork;
  let kubelet: Kubelet;
  let kube: Kube;
  let source: KubernetesEndpointSource;
  let client: KubeClient;
  const errors: string[] = [];
  let current: readonly Endpoint[] = [];
  /** Per address: the states it went through, consecutive duplicates dropped, 'gone' when removed. */
  const history = new Map<string, string[]>();
  const note = (addr: string, state: string): void => {
    const h = history.get(addr) ?? [];
    if (h.at(-1) !== state) h.push(state);
    history.set(addr, h);
  };

  before(async () => {
    cp = await startRealControlPlane();
    // A CIDR of its own: another lab (or test file) on this machine may hold the default 10.244.0.0/16.
    net = await createLabNetwork({ cidr: CIDR });
    kube = httpKube(cp.adminKubeConfig);
    const kubeletKube = httpKube(cp.adminKubeConfig);
    kubelet = new Kubelet(kubeletKube, {
      ...realNodeOptions(kubeletKube, net),
      runtime: new NetnsScriptRuntime({ network: net, script: POD_MAIN_SCRIPT }),
      nodes: [
        { name: 'lab-node-1', zone: 'zone-a' },
        { name: 'lab-node-2', zone: 'zone-b' },
      ],
      probePeriodMs: 200,
      heartbeatMs: 1_000,
      onError: (what, err) => errors.push(`${what}: ${String(err)}`),
    });
    await kubelet.start();
    client = KubeClient.fromKubeConfigString(cp.adminKubeConfig);
    source = new KubernetesEndpointSource(client, NS, 'hello', { backoff: { initialMs: 100, maxMs: 1000 } });
  });

  after(async () => {
    await source?.stop();
    client?.close();
    await kubelet?.stop();
    kube?.close();
    await net?.teardown();
    await cp?.stop();
  });

  it('registers Nodes with zone labels, a Ready condition and Leases it keeps renewing', async () => {
    const node = await kube.get<Node>(KINDS.nodes, undefined, 'lab-node-2');
    assert.ok(node);
    assert.equal(node.metadata.labels?.['topology.kubernetes.io/zone'], 'zone-b');
    assert.equal(node.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
    assert.deepEqual(node.status?.addresses?.[0], { type: 'InternalIP', address: net.gateway });
    type Lease = KubeObject & { spec: { renewTime: string; holderIdentity: string } };
    const lease = (): Promise<Lease | undefined> =>
      kube.get<Lease>(KINDS.leases, 'kube-node-lease', 'lab-node-1');
    const l1 = await lease();
    assert.equal(l1?.spec.holderIdentity, 'lab-node-1');
    await eventually(
      'a renewed lease',
      async () => ((await lease())?.spec.renewTime ?? '') > (l1?.spec.renewTime ?? ''),
    );
  });

  it('runs a real Deployment: pods bound, started in their namespaces, Ready from the gRPC probe, published by the real controller', async () => {
    await kube.create(KINDS.namespaces, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    // Pods are refused until the namespace's default ServiceAccount exists.
    await eventually(
      'default ServiceAccount',
      async () => (await kube.get(KINDS.serviceaccounts, NS, 'default')) !== undefined,
      30_000,
    );
    const app = {
      name: 'hello',
      namespace: NS,
      replicas: 3,
      // The drain must outlast the real controller's lag in publishing `terminating` (seconds on a
      // loaded machine), or the deleted pod's endpoint would go from ready straight to gone.
      terminationGracePeriodSeconds: 12,
      probe: { periodMs: 200 },
      env: { HELLO_SHUTDOWN: 'graceful', HELLO_DRAIN_DELAY_MS: '5000', HELLO_GRACE_MS: '8000' },
    };
    await kube.create(KINDS.services, headlessServiceManifest(app));
    await kube.create(KINDS.deployments, deploymentManifest(app));
    source.subscribe(
      { kind: 'number', port: 50051 },
      {
        onEndpoints: (view, diff) => {
          current = view.endpoints();
          for (const e of [...diff.added, ...diff.changed.map((c) => c.after)]) note(e.address, e.state);
          for (const e of diff.removed) note(e.address, 'gone');
        },
        onError: (err) => errors.push(`source: ${err.message}`),
      },
    );
    const t0 = Date.now();
    await eventually(
      '3 ready endpoints',
      () => current.filter((e) => e.state === 'ready').length === 3,
      60_000,
    );
    console.log(`# 3 pods ready through the real controllers in ${Date.now() - t0} ms`);
    for (const e of current) {
      assert.match(e.address, /^10\.246\.\d+\.\d+$/);
      assert.ok(e.zone === 'zone-a' || e.zone === 'zone-b', `zone ${e.zone}`);
      assert.ok(e.pod?.startsWith('hello-'), `pod ${e.pod}`);
    }
    assert.deepEqual(
      new Set(current.map((e) => e.zone)),
      new Set(['zone-a', 'zone-b']),
      'spread over both nodes',
    );
    const pods = await kube.list<Pod>(KINDS.pods, { namespace: NS });
    for (const p of pods.items) {
      assert.equal(p.status?.phase, 'Running');
      assert.deepEqual(p.status?.podIPs, [{ ip: p.status?.podIP }]);
      assert.equal(kubelet.podIP(NS, p.metadata.name ?? ''), p.status?.podIP);
    }
    // Real traffic to each pod address, inside its namespace.
    for (const e of current) {
      const g = new GreeterClient(`${e.address}:50051`, undefined, { 'grpc.enable_http_proxy': 0 });
      try {
        const reply = await g.sayHello({ client: 'contract', counter: 1 }, 30_000);
        assert.equal(reply.pod, e.pod);
      } finally {
        g.close();
      }
    }
  });

  it('a deleted pod drains (SIGTERM, serving && terminating), then is DELETEd; its namespace goes; a replacement turns Ready', async () => {
    const victim = current.find((e) => e.state === 'ready');
    assert.ok(victim?.pod);
    const proc = kubelet.podProcess(NS, victim.pod);
    assert.ok(proc);
    await kube.delete(KINDS.pods, NS, victim.pod);
    await eventually('victim gone', () => history.get(victim.address)?.at(-1) === 'gone');
    const h = history.get(victim.address) ?? [];
    console.log(`# deleted pod: ${h.join(' → ')}`);
    assert.ok(h.includes('draining'), `states of the deleted pod: ${h.join(' → ')}`);
    assert.ok(h.indexOf('ready') < h.indexOf('draining'), h.join(' → '));
    const exit = await proc.exited;
    assert.equal(exit.code, 0, 'graceful pod exits 0 on SIGTERM within the grace');
    await eventually(
      'pod object deleted',
      async () => (await kube.get(KINDS.pods, NS, victim.pod ?? '')) === undefined,
      30_000,
    );
    await eventually('namespace removed', () => !net.pods().some((p) => p.ip === victim.address));
    await eventually('3 ready again', () => current.filter((e) => e.state === 'ready').length === 3, 30_000);
    assert.ok(kubelet.stats.binds >= 4);
    // Under load a DELETE can be retried after its first try landed: the retry then reads 404.
    assert.ok(kubelet.stats.deletes + kubelet.stats.deletesAlreadyGone >= 1);
    assert.ok(kubelet.stats.heartbeats >= 2);
    assert.deepEqual(errors, []);
  });

  it('an API outage: pods keep serving; a crash during it is restarted and its status written once the API is back', async () => {
    const victim = current.find((e) => e.state === 'ready');
    assert.ok(victim?.pod);
    const proc = kubelet.podProcess(NS, victim.pod);
    assert.ok(proc);
    await cp.stopApiServer();
    proc.kill('SIGKILL');
    // The kubelet restarts the container without the API (restartPolicy Always)…
    await eventually('restarted', () => kubelet.podProcess(NS, victim.pod ?? '') !== proc);
    const g = new GreeterClient(`${victim.address}:50051`, undefined, { 'grpc.enable_http_proxy': 0 });
    try {
      await eventually('the restarted pod answers on the same address', async () => {
        try {
          return (await g.sayHello({ client: 'outage', counter: 1 }, 500)).pod === victim.pod;
        } catch {
          return false;
        }
      });
    } finally {
      g.close();
    }
    errors.length = 0; // heartbeats and watches fail while the API is down: expected
    await cp.startApiServer();
    // …and the status writes it could not make are retried once the API answers.
    await eventually(
      'restartCount written',
      async () => {
        const p = await kube.get<Pod>(KINDS.pods, NS, victim.pod ?? '');
        const cs = p?.status?.containerStatuses?.[0];
        return (cs?.restartCount ?? 0) >= 1 && cs?.ready === true;
      },
      30_000,
    );
    await eventually(
      '3 ready endpoints again',
      () => current.filter((e) => e.state === 'ready').length === 3,
      30_000,
    );
    assert.equal(current.find((e) => e.pod === victim.pod)?.address, victim.address);
  });
});
