// The embedded cluster (our controllers and kubelet) against the real one (kube-controller-manager's
// deployment, replicaset and endpointslice controllers with the lab kubelet): the same scenario —
// 3 replicas, scale-up to 5, then a rolling update with maxSurge 3 / maxUnavailable 2 — and, per pod,
// the sequence of endpoint states seen through OUR KubernetesEndpointSource (unready / ready /
// draining / gone, consecutive repeats dropped). Pod names differ between the two, so pods are grouped
// by role (first three, the two added by the scale-up, the five of the new template) and each role's
// multiset of sequences must be the same on both clusters.
// Needs root and the built binaries (the real half); skips otherwise unless GRPC_KUBE_REAL=1.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';

import { startEmbeddedCluster, type AppSpec } from '@grpc-kube/lab/internal/cluster/embedded.js';
import { NodeScriptRuntime } from '@grpc-kube/lab/internal/cluster/pod-runtime.js';
import { startRealLabCluster } from '@grpc-kube/lab/internal/cluster/real/cluster.js';
import { KubernetesEndpointSource } from 'grpc-kube/internal/discovery/kube-source.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { POD_MAIN_SCRIPT } from '@grpc-kube/lab/internal/lab/pod-main.js';
import { eventually } from '../helpers/wait.js';
import { realLabSkip } from '../helpers/real.js';

const skip = realLabSkip();

const NS = 'lab';
const PROBE_MS = 200;
const APP: AppSpec = {
  name: 'hello',
  namespace: NS,
  replicas: 3,
  maxSurge: 3,
  maxUnavailable: 2,
  terminationGracePeriodSeconds: 5,
  probe: { periodMs: PROBE_MS },
  // Graceful pods: NOT_SERVING at once on SIGTERM, exit after 1.5 s of drain — long enough that the
  // probe's three failures (0.6 s) flip Ready before the process is gone, on either cluster.
  env: { HELLO_SHUTDOWN: 'graceful', HELLO_DRAIN_DELAY_MS: '1500', HELLO_GRACE_MS: '3000' },
};
const UPDATED: AppSpec = { ...APP, replicas: 5, env: { ...APP.env, HELLO_RESPONSE_DELAY_MS: '1' } };

type Role = 'initial' | 'scaled' | 'updated';

interface Driver {
  readonly kubeConfigYaml: string;
  apply(app: AppSpec): Promise<void>;
  scale(replicas: number): Promise<void>;
  waitReady(count: number): Promise<void>;
  waitRollout(): Promise<void>;
}

interface Observed {
  /** Role → sorted list of per-pod state sequences joined with ' → '. */
  readonly byRole: Record<Role, string[]>;
  /** Fewest ready endpoints seen during the rolling update (maxUnavailable 2 of 5 allows 3). */
  readonly minReadyDuringUpdate: number;
}

/** Runs the scenario on one cluster and returns the per-role sequences our source saw. */
async function runScenario(d: Driver): Promise<Observed> {
  const client = KubeClient.fromKubeConfigString(d.kubeConfigYaml);
  const src = new KubernetesEndpointSource(client, NS, APP.name, {
    backoff: { initialMs: 100, maxMs: 1000 },
  });
  const seq = new Map<string, string[]>();
  const roleOf = new Map<string, Role>();
  let phase: Role = 'initial';
  const note = (pod: string | undefined, state: string): void => {
    if (pod === undefined) return;
    if (!roleOf.has(pod)) roleOf.set(pod, phase);
    const s = seq.get(pod) ?? [];
    if (s.at(-1) !== state) s.push(state);
    seq.set(pod, s);
  };
  let current = new Map<string, string>();
  let minReady = Infinity;
  const readyCount = (): number => [...current.values()].filter((s) => s === 'ready').length;
  try {
    src.subscribe(
      { kind: 'number', port: 50051 },
      {
        onEndpoints: (view, diff) => {
          for (const e of diff.added) note(e.pod, e.state);
          for (const c of diff.changed) note(c.after.pod, c.after.state);
          for (const e of diff.removed) note(e.pod, 'gone');
          current = new Map(view.endpoints().map((e) => [e.pod ?? e.address, e.state]));
          if (phase === 'updated') minReady = Math.min(minReady, readyCount());
        },
        onError: (err) => assert.fail(`source error: ${err.message}`),
      },
    );
    await d.apply(APP);
    await d.waitReady(3);
    await eventually('3 ready endpoints', () => readyCount() === 3 && current.size === 3, 30_000);

    phase = 'scaled';
    await d.scale(5);
    await d.waitReady(5);
    await eventually('5 ready endpoints', () => readyCount() === 5 && current.size === 5, 30_000);

    phase = 'updated';
    await d.apply(UPDATED);
    await d.waitRollout();
    const isNew = (pod: string): boolean => roleOf.get(pod) === 'updated';
    await eventually(
      'only the 5 new pods, all ready',
      () => current.size === 5 && readyCount() === 5 && [...current.keys()].every(isNew),
      60_000,
    );
  } finally {
    await src.stop();
    client.close();
  }
  const byRole: Record<Role, string[]> = { initial: [], scaled: [], updated: [] };
  for (const [pod, s] of seq) byRole[roleOf.get(pod) ?? 'initial'].push(s.join(' → '));
  for (const r of Object.values(byRole)) r.sort();
  return { byRole, minReadyDuringUpdate: minReady };
}

describe('the same scenario on the embedded and on the real cluster', { skip }, () => {
  const results: { embedded?: Observed; real?: Observed } = {};
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('embedded: scale-up 3→5, then a rolling update (maxSurge 3, maxUnavailable 2)', async () => {
    const cluster = await startEmbeddedCluster({
      runtime: new NodeScriptRuntime({ script: POD_MAIN_SCRIPT }),
      probePeriodMs: PROBE_MS,
      namespaces: [NS],
    });
    cleanups.push(() => cluster.stop());
    results.embedded = await runScenario({
      kubeConfigYaml: cluster.apiServer.kubeConfigYaml(),
      apply: (app) => cluster.applyApp(app),
      scale: (n) => cluster.scale(NS, APP.name, n),
      waitReady: async (n) => void (await cluster.waitForReadyPods(NS, { app: APP.name }, n, 30_000)),
      waitRollout: async () => void (await cluster.waitForRollout(NS, APP.name, 60_000)),
    });
    console.log(`# embedded: ${JSON.stringify(results.embedded)}`);
  });

  it('real: the same, through kube-controller-manager and the lab kubelet', async () => {
    const cluster = await startRealLabCluster({
      podScript: POD_MAIN_SCRIPT,
      probePeriodMs: PROBE_MS,
      namespaces: [NS],
      // Its own CIDR: another lab on this machine may hold the default 10.244.0.0/16.
      network: { cidr: '10.248.0.0/16' },
    });
    cleanups.push(() => cluster.stop());
    results.real = await runScenario({
      kubeConfigYaml: cluster.kubeConfigYaml,
      apply: (app) => cluster.applyApp(app),
      scale: (n) => cluster.scale(NS, APP.name, n),
      waitReady: async (n) => void (await cluster.waitForReadyPods(NS, { app: APP.name }, n, 60_000)),
      waitRollout: async () => void (await cluster.waitForRollout(NS, APP.name, 120_000)),
    });
    console.log(`# real: ${JSON.stringify(results.real)}`);
  });

  it('every pod role went through the same sequences of endpoint states on both', () => {
    const { embedded, real } = results;
    assert.ok(embedded && real, 'both runs finished');
    assert.equal(real.byRole.initial.length, 3);
    assert.equal(real.byRole.scaled.length, 2);
    assert.equal(real.byRole.updated.length, 5);
    // A new pod's first state may be unready or already ready: the endpointslice controller coalesces
    // the changes of one sync, and on a busy machine the pod's Ready can come before the slice that
    // would have listed it unready (kube-controller-manager did so beside a one-core hog). Both are
    // Kubernetes; from the first ready on, the sequences must be the same. Likewise at the end: a
    // draining pod's Ready turns false 0.6 s into its 1.5 s drain, and whether a slice lists it
    // unready before it is gone depends on when the controller syncs (a stalled machine can fold the
    // two into one write). Draining, then gone, with or without unready between, is the same story.
    const fromReady = (byRole: Record<Role, string[]>): Record<Role, string[]> => {
      const out = { initial: [], scaled: [], updated: [] } as Record<Role, string[]>;
      for (const [role, seqs] of Object.entries(byRole) as [Role, string[]][])
        out[role] = seqs
          .map((q) =>
            q.replace(/^unready → (?=ready)/, '').replace(/draining → unready → gone$/, 'draining → gone'),
          )
          .sort();
      return out;
    };
    assert.deepEqual(fromReady(embedded.byRole), fromReady(real.byRole));
    // The old pods' draining is not availability: neither controller may go below 5 - maxUnavailable.
    assert.ok(embedded.minReadyDuringUpdate >= 3, `embedded: ${embedded.minReadyDuringUpdate} ready`);
    assert.ok(real.minReadyDuringUpdate >= 3, `real: ${real.minReadyDuringUpdate} ready`);
  });
});
