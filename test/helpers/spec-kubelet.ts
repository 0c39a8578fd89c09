// A lab kubelet over the embedded store running pod specs as written (ImageRuntime with one test
// image, spec-pod:test = test/cluster/fixtures/spec-pod.ts), and the ways its tests build pods and
// wait on them (pod-wait.ts). Shared by the kubelet spec tests; each file passes its own block of
// pod addresses.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ObjectStore } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { Kubelet, IpPool } from '@grpc-kube/lab/internal/cluster/kubelet.js';
import { storeKube } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import { ImageRuntime } from '@grpc-kube/lab/internal/cluster/pod-runtime.js';
import type { Container, Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { newStore } from '../cluster/fixtures/store.js';
import { testPod } from './pods.js';

export const FIXTURE_DIR = dirname(
  fileURLToPath(new URL('../cluster/fixtures/spec-pod.js', import.meta.url)),
);
export const IMAGE = 'spec-pod:test';

/** A pod of one container `main` running the fixture, probed every 50 ms, 5 s of grace. */
export function specPod(name: string, container: Partial<Container>, spec: Partial<Pod['spec']> = {}): Pod {
  const main = { name: 'main', image: IMAGE, command: ['node', 'spec-pod.js'], ...container };
  return testPod(
    name,
    { app: 'spec' },
    { terminationGracePeriodSeconds: 5, containers: [main], ...spec },
    { note: 'from-annotation' },
  );
}

export interface SpecKubelet {
  readonly store: ObjectStore;
  readonly kubelet: Kubelet;
  /** A scratch directory, removed after the test. */
  readonly dir: string;
  /** What the kubelet reported through onError. */
  readonly errors: unknown[];
}

/**
 * A started kubelet (node-a in zone-a, 50 ms → 400 ms restart back-off) whose pods take addresses
 * from 127.0.`block`.1; stopped after the test, checking that no pod process outlives it.
 */
export async function startSpecKubelet(
  t: { after: (fn: () => Promise<void> | void) => void },
  block: number,
): Promise<SpecKubelet> {
  const store = newStore();
  const dir = mkdtempSync(join(tmpdir(), 'kubelet-spec-'));
  const runtime = new ImageRuntime({ images: { [IMAGE]: { cwd: FIXTURE_DIR, env: { FROM_IMAGE: 'yes' } } } });
  const errors: unknown[] = [];
  const kubelet = new Kubelet(storeKube(store), {
    runtime,
    nodes: [{ name: 'node-a', zone: 'zone-a' }],
    ipAllocator: new IpPool({ first: `127.0.${block}.1` }),
    onError: (_p, e) => void errors.push(e),
    stopGraceMs: 500,
    restartBackoffMs: 50,
    restartBackoffMaxMs: 400,
  });
  await kubelet.start();
  t.after(async () => {
    await kubelet.stop();
    assert.equal(runtime.running, 0, 'every pod process is gone after stop()');
    rmSync(dir, { recursive: true, force: true });
  });
  return { store, kubelet, dir, errors };
}

export { waitForPod } from './pods.js';
