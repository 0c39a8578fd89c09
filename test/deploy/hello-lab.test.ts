// The Hello example, deployed from deploy/kubernetes, runs in the lab with the kubernetes strategy:
// the rendered `hello` Deployment and Service go into the embedded cluster and into the real one
// (kube-apiserver + kube-controller-manager + the lab kubelet), whose pods run as written: image
// grpc-kube:0.1.0 is the repository root (ImageRuntime), the container's command
// `node dist/examples/hello/server.js` runs there with its env (POD_NAME from the downward API), its
// readiness and liveness grpc probes; the example client (runHelloClient, the same loop as its main)
// dials kubernetes:///hello.hello-kubernetes:<port> through setup() and clientDefaults(). Checked:
// every pod answers, no RPC fails, and after a scale-up 3 → 5 the new pods answer on the client's
// own connections, no restart or reconnect — the east-west demo's headless failure, gone. How soon
// after Ready is printed (under the lab's load it is tens of ms; `grpc-kube lab` measures it).
//
// Adapted here and nowhere else: the port is moved off 50051 so a wildcard listener elsewhere on a
// shared machine cannot block the pods' binds (the embedded cluster's pods share the host network;
// ImageRuntime gives each its POD_IP to bind); drain timings are shortened so teardown takes a second
// instead of the manifests' 25 s; the readiness period is the lab's 200 ms.
// The real half needs root (network namespaces) and the built binaries; it skips otherwise unless
// GRPC_KUBE_REAL=1.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';

import { startEmbeddedCluster } from '@grpc-kube/lab/internal/cluster/embedded.js';
import { ImageRuntime } from '@grpc-kube/lab/internal/cluster/pod-runtime.js';
import { netnsWrap } from '@grpc-kube/lab/internal/cluster/real/kubelet-runtime.js';
import { KINDS } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import { realLabSkip } from '../helpers/real.js';
import { startRealLabCluster } from '@grpc-kube/lab/internal/cluster/real/cluster.js';
import type { Deployment, Service } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { setup } from 'grpc-kube/internal/resolver/setup.js';
import { clientConfigFromEnv } from '../../examples/hello/config.js';
import { runHelloClient, type RoundResult } from '../../examples/hello/client.js';
import { renderKustomization, type KubeObject } from '@grpc-kube/lab/internal/manifests/kustomize.js';

const repoRoot = join(import.meta.dirname, '..', '..', '..');
const NS = 'hello-kubernetes';
const PORT = 51957;
const PROBE_MS = 200;
const LAB_CIDR = '10.251.57.0/24';

const skipReal = realLabSkip();

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: unknown;
}

/** deploy/kubernetes's `hello` Service and Deployment, adapted to the lab kubelets (see header). */
function helloManifests(): { service: Service; deployment: Deployment } {
  const objects = renderKustomization(join(repoRoot, 'deploy', 'kubernetes'));
  const pick = (kind: string): KubeObject => {
    const o = objects.find((x) => x.kind === kind && x.metadata.name === 'hello');
    assert.ok(o, `deploy/kubernetes renders ${kind}/hello`);
    return JSON.parse(JSON.stringify(o).replaceAll('50051', String(PORT))) as KubeObject;
  };
  const deployment = pick('Deployment') as unknown as Deployment;
  const service = pick('Service') as unknown as Service;
  const pod = deployment.spec.template.spec as unknown as {
    terminationGracePeriodSeconds: number;
    containers: Array<{ env: EnvVar[] }>;
  };
  const container = pod.containers[0];
  assert.ok(container);
  const overrides: Record<string, string> = { DRAIN_PROPAGATION_MS: '200', DRAIN_GRACE_MS: '1000' };
  container.env = container.env.map((e) =>
    e.name in overrides ? { name: e.name, value: overrides[e.name] } : e,
  );
  assert.deepEqual(container.env.map((e) => e.name).sort(), [
    'DRAIN_GRACE_MS',
    'DRAIN_PROPAGATION_MS',
    'POD_NAME',
    'PORT',
  ]);
  assert.ok(
    container.env.some((e) => e.name === 'POD_NAME' && e.valueFrom !== undefined),
    'POD_NAME from the downward API',
  );
  pod.terminationGracePeriodSeconds = 5;
  return { service, deployment };
}

interface Backend {
  readonly kubeConfigYaml: string;
  scale(replicas: number): Promise<void>;
  readyPods(count: number): Promise<string[]>;
}

interface Observed {
  readonly initial: string[];
  readonly added: string[];
  readonly rounds: RoundResult[];
  /**
   * From the moment all five pods were Ready until a round had been answered by each of them: printed,
   * not asserted (a figure of the machine's load; `grpc-kube lab` measures it as readyToFirstRpc).
   */
  readonly allFiveAnsweredAfterMs: number;
}

async function runScenario(backend: Backend): Promise<Observed> {
  const initial = await backend.readyPods(3);
  const gk = setup({ kubeConfig: backend.kubeConfigYaml });
  const ac = new AbortController();
  const rounds: RoundResult[] = [];
  let wake: () => void = () => {};
  const config = clientConfigFromEnv({
    TARGET: `kubernetes:///hello.${NS}:${PORT}`,
    CLIENT_ID: 'lab-client',
    INTERVAL_MS: '50',
  });
  const running = runHelloClient({
    config,
    signal: ac.signal,
    onRound: (r) => {
      rounds.push(r);
      wake();
    },
  });
  const until = async (what: string, ok: () => boolean, timeoutMs: number): Promise<void> => {
    const end = Date.now() + timeoutMs;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
      await Promise.race([new Promise<void>((r) => (wake = r)), delay(200)]);
    }
  };
  try {
    const answered = (from: number): Set<string> =>
      new Set(rounds.slice(from).flatMap((r) => [...r.byPod.keys()]));
    // A pod being Ready comes before its EndpointSlice lists it (the controller's work, which a loaded
    // machine can delay by seconds) and before the client has connected to it: wait for the answers,
    // not for a number of rounds or a time. The bounds only end a run that would otherwise hang.
    await until('the three pods answer', () => answered(0).size >= 3, 60_000);
    assert.deepEqual([...answered(0)].sort(), [...initial].sort(), 'the three pods answer');

    await backend.scale(5);
    const all = await backend.readyPods(5);
    const readyAt = Date.now();
    const fromRound = rounds.length;
    const added = all.filter((p) => !initial.includes(p));
    assert.equal(added.length, 2);
    await until('the new pods answer', () => added.every((p) => answered(fromRound).has(p)), 60_000);
    const allFiveAnsweredAfterMs = Date.now() - readyAt;
    ac.abort();
    await running;
    return { initial, added, rounds, allFiveAnsweredAfterMs };
  } finally {
    ac.abort();
    await running.catch(() => {});
    await gk.close();
  }
}

function assertObserved(o: Observed): void {
  const failed = o.rounds.flatMap((r) => [...r.failedByCode.entries()]);
  assert.deepEqual(failed, [], 'no RPC failed');
  assert.ok(o.rounds.every((r) => [...r.byPod.values()].reduce((a, b) => a + b, 0) === 10));
  // Every answer came from a pod of this Deployment, named as the cluster named it.
  const pods = new Set(o.rounds.flatMap((r) => [...r.byPod.keys()]));
  assert.deepEqual([...pods].sort(), [...o.initial, ...o.added].sort());
}

describe('examples/hello in the lab, kubernetes strategy, from deploy/kubernetes', () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('embedded cluster: three pods answer; after scaling to five, all five', async () => {
    const { service, deployment } = helloManifests();
    const cluster = await startEmbeddedCluster({
      runtime: new ImageRuntime(),
      probePeriodMs: PROBE_MS,
      namespaces: [NS],
    });
    cleanups.push(() => cluster.stop());
    await cluster.kube.create(KINDS.services, service);
    await cluster.kube.create(KINDS.deployments, deployment);
    const observed = await runScenario({
      kubeConfigYaml: cluster.apiServer.kubeConfigYaml(),
      scale: (n) => cluster.scale(NS, 'hello', n),
      readyPods: async (n) =>
        (await cluster.waitForReadyPods(NS, { app: 'hello' }, n, 30_000)).map((p) => p.metadata.name ?? ''),
    });
    console.log(
      `# embedded: ${observed.rounds.length} rounds, new pods answered ${observed.allFiveAnsweredAfterMs} ms after Ready`,
    );
    assertObserved(observed);
  });

  it(
    'real cluster: the same through kube-apiserver, kube-controller-manager and the lab kubelet',
    { skip: skipReal },
    async () => {
      const { service, deployment } = helloManifests();
      const cluster = await startRealLabCluster({
        podRuntime: (network) => new ImageRuntime({ wrap: netnsWrap(network), podIpEnv: false }),
        probePeriodMs: PROBE_MS,
        namespaces: [NS],
        // Its own /24, so a lab on the default 10.244.0.0/16 running beside this test cannot collide.
        network: { cidr: LAB_CIDR },
      });
      cleanups.push(() => cluster.stop());
      await cluster.kube.create(KINDS.services, service);
      await cluster.kube.create(KINDS.deployments, deployment);
      const observed = await runScenario({
        kubeConfigYaml: cluster.kubeConfigYaml,
        scale: (n) => cluster.scale(NS, 'hello', n),
        readyPods: async (n) =>
          (await cluster.waitForReadyPods(NS, { app: 'hello' }, n, 60_000)).map((p) => p.metadata.name ?? ''),
      });
      console.log(
        `# real: ${observed.rounds.length} rounds, new pods answered ${observed.allFiveAnsweredAfterMs} ms after Ready`,
      );
      assertObserved(observed);
    },
  );
});
