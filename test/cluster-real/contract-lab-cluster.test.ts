// startRealLabCluster: the handle `grpc-kube lab --cluster real` builds on. What the lab runner calls
// on it — applyApp with a shared Service (svc=<name> selector), waitForReadyPods, restartRollout,
// waitForRollout, listPods, and kube.watch feeding the lab's own PodTimelineRecorder — against the real
// control plane; then stop() leaves no namespace, route or process.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';

import { startRealLabCluster } from '@grpc-kube/lab/internal/cluster/real/cluster.js';
import type { Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { KINDS } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import type { LabCluster } from '@grpc-kube/lab/internal/lab/cluster.js';
import { POD_MAIN_SCRIPT } from '@grpc-kube/lab/internal/lab/pod-main.js';
import { PodTimelineRecorder } from '@grpc-kube/lab/internal/lab/timeline.js';
import { realLabSkip } from '../helpers/real.js';

const skip = realLabSkip();

describe('startRealLabCluster', { skip }, () => {
  it('runs the lab app, restarts a rollout, feeds the pod timeline, and cleans up', async (t) => {
    const cluster = await startRealLabCluster({
      podScript: POD_MAIN_SCRIPT,
      probePeriodMs: 100,
      namespaces: ['lab'],
      // Its own CIDR: another lab on this machine may hold the default 10.244.0.0/16.
      network: { cidr: '10.247.0.0/16' },
    });
    let stopped = false;
    t.after(async () => {
      if (!stopped) await cluster.stop();
    });
    const clock = (): number => performance.now();
    // The recorder only calls watchPods(): fed here by the cluster's Kube over HTTP.
    const watching: Pick<LabCluster, 'watchPods'> = {
      watchPods: (ns, labelSelector, onEvent) =>
        cluster.kube.watch<Pod>(KINDS.pods, { namespace: ns, labelSelector }, (ev) =>
          onEvent(ev.type, ev.object as Pod),
        ),
    };
    const timeline = new PodTimelineRecorder(watching as LabCluster, 'lab', 'svc=hello', clock);
    t.after(() => timeline.stop());
    await cluster.applyApp({
      name: 'hello',
      namespace: 'lab',
      replicas: 2,
      terminationGracePeriodSeconds: 2,
      probe: { periodMs: 100, failureThreshold: 1 },
      labels: { svc: 'hello' },
      serviceName: 'hello',
      serviceSelector: { svc: 'hello' },
    });
    const first = await cluster.waitForReadyPods('lab', { svc: 'hello' }, 2, 60_000);
    timeline.setOrigin(clock());
    await cluster.restartRollout('lab', 'hello');
    await cluster.waitForRollout('lab', 'hello', 60_000);
    const now = await cluster.listPods('lab', 'svc=hello');
    assert.equal(now.filter((p) => !p.metadata.deletionTimestamp).length, 2);
    const oldNames = new Set(first.map((p) => p.metadata.name));
    assert.ok(
      now.every((p) => !oldNames.has(p.metadata.name)),
      'every pod replaced',
    );
    // Give the watch time to deliver the last DELETED events (they are async over HTTP).
    for (let i = 0; i < 1200; i++) {
      const tl = timeline.timelines();
      if (tl.filter((l) => !l.isNew && l.goneAtMs !== null).length === 2) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const tl = timeline.timelines();
    const olds = tl.filter((l) => !l.isNew);
    const news = tl.filter((l) => l.isNew);
    assert.equal(olds.length, 2, JSON.stringify(tl));
    assert.equal(news.length, 2, JSON.stringify(tl));
    for (const l of olds) assert.ok(l.terminatingAtMs !== null && l.goneAtMs !== null, JSON.stringify(l));
    for (const l of news) assert.ok(l.readyAtMs !== null && l.goneAtMs === null, JSON.stringify(l));

    const netns = cluster.network.pods().map((p) => p.netns);
    assert.equal(netns.length, 2);
    await cluster.stop();
    stopped = true;
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const n of netns) assert.ok(!left.includes(n), `${n} left behind`);
    const routes = execFileSync('ip', ['route', 'show', 'table', 'all'], { encoding: 'utf8' });
    assert.ok(!routes.includes(cluster.network.cidr), `route for ${cluster.network.cidr} left behind`);
  });
});
