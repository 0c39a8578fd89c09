// Pods of the cluster tests' namespace: building one, and waiting on one in the embedded store by its
// watch events, not by polling (a predicate checked on each event of the pod, with a deadline that
// names the pod's state).
import type { WatchEvent } from 'grpc-kube/internal/kube/types.js';
import { RESOURCES, type ObjectStore } from '@grpc-kube/lab/internal/cluster/store-api.js';
import type { Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { PROBE_PERIOD_MS_ANNOTATION } from '@grpc-kube/lab/internal/cluster/kubelet.js';
import { TEST_NAMESPACE as NS } from '../cluster/fixtures/store.js';

/** A pod of the tests' namespace, its probes every 50 ms (`annotations` add to that). */
export function testPod(
  name: string,
  labels: Record<string, string>,
  spec: Pod['spec'],
  annotations: Record<string, string> = {},
): Pod {
  const meta = { name, namespace: NS, labels };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { ...meta, annotations: { [PROBE_PERIOD_MS_ANNOTATION]: '50', ...annotations } },
    spec,
  };
}

/**
 * Resolves with pred's first non-undefined answer, checked now and on each event of the pod (`p`
 * undefined once it is gone; `ev` the event, none for the first check). The cap only bounds a hang.
 */
export function waitForPodEvent<T>(
  store: ObjectStore,
  name: string,
  pred: (p: Pod | undefined, ev: WatchEvent<Pod> | undefined) => T | undefined,
  timeoutMs = 30_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    let stop = (): void => {};
    const timer = setTimeout(() => {
      stop();
      reject(
        new Error(`timed out waiting on ${name}: ${JSON.stringify(store.get(RESOURCES.pods, NS, name))}`),
      );
    }, timeoutMs);
    const check = (ev?: WatchEvent<Pod>): void => {
      const v = pred(store.get<Pod>(RESOURCES.pods, NS, name), ev);
      if (v !== undefined) {
        clearTimeout(timer);
        setImmediate(() => stop());
        resolve(v);
      }
    };
    stop = store.watch<Pod>(RESOURCES.pods, { resourceVersion: store.resourceVersion }, (ev) => {
      if ((ev.object as Pod).metadata.name === name) check(ev);
    });
    check();
  });
}

/** waitForPodEvent for a pod that exists: pred sees it while it does. */
export function waitForPod<T>(
  store: ObjectStore,
  name: string,
  pred: (p: Pod) => T | undefined,
  timeoutMs = 30_000,
): Promise<T> {
  return waitForPodEvent(store, name, (p) => (p ? pred(p) : undefined), timeoutMs);
}
