// The embedded ReplicaSet controller: keeps spec.replicas active pods per ReplicaSet, as
// kube-controller-manager's replicaset controller does. Pods are named `<rs>-<5 random>` and owned
// through a controller ownerReference; on scale-down the victims are ranked as the real controller
// ranks them (unscheduled, pending, not ready, ready for the shortest time, most restarts, newest
// first); status counts active pods (not terminating, not terminal). Pods of a vanished ReplicaSet are
// deleted (the garbage collector's job in a real cluster). Watch-driven through a WorkQueue.

import { RESOURCES, type ObjectStore } from '../store-api.js';
import type { KubeObject, WatchEvent } from 'grpc-kube/internal/kube/types.js';
import { QueueController, isChange } from './queue.js';
import {
  controllerOf,
  isPodReady,
  isPodTerminal,
  keyOf,
  podAvailableAtMs,
  podCondition,
  splitKey,
  type Pod,
  type ReplicaSet,
  type ReplicaSetStatus,
  putStatus,
} from './kinds.js';

/** Kubernetes' rand.String alphabet: no vowels (no words), no confusable characters. */
export const SAFE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

export function randomSuffix(random: () => number, length = 5): string {
  let s = '';
  for (let i = 0; i < length; i++) s += SAFE_ALPHABET[Math.floor(random() * SAFE_ALPHABET.length)] ?? 'b';
  return s;
}

export interface ReplicaSetControllerOptions {
  readonly random?: () => number;
  readonly onError?: (key: string, err: unknown) => void;
}

export function isPodActive(pod: Pod): boolean {
  return !pod.metadata.deletionTimestamp && !isPodTerminal(pod);
}

const PHASE_RANK: Record<string, number> = { Pending: 0, Unknown: 1, Running: 2 };

/** Negative when `a` should be deleted before `b` (the real controller's ActivePodsWithRanks order). */
export function compareForDeletion(a: Pod, b: Pod): number {
  const aBound = a.spec.nodeName ? 1 : 0;
  const bBound = b.spec.nodeName ? 1 : 0;
  if (aBound !== bBound) return aBound - bBound;
  const ap = PHASE_RANK[a.status?.phase ?? 'Pending'] ?? 2;
  const bp = PHASE_RANK[b.status?.phase ?? 'Pending'] ?? 2;
  if (ap !== bp) return ap - bp;
  const ar = isPodReady(a) ? 1 : 0;
  const br = isPodReady(b) ? 1 : 0;
  if (ar !== br) return ar - br;
  if (ar === 1) {
    // Ready for a shorter time goes first: the later transition sorts earlier.
    const at = Date.parse(podCondition(a, 'Ready')?.lastTransitionTime ?? '') || 0;
    const bt = Date.parse(podCondition(b, 'Ready')?.lastTransitionTime ?? '') || 0;
    if (at !== bt) return bt - at;
  }
  const arc = (a.status?.containerStatuses ?? []).reduce((n, c) => n + c.restartCount, 0);
  const brc = (b.status?.containerStatuses ?? []).reduce((n, c) => n + c.restartCount, 0);
  if (arc !== brc) return brc - arc;
  const ac = Date.parse(a.metadata.creationTimestamp ?? '') || 0;
  const bc = Date.parse(b.metadata.creationTimestamp ?? '') || 0;
  if (ac !== bc) return bc - ac;
  return (a.metadata.name ?? '') < (b.metadata.name ?? '') ? -1 : 1;
}

export class ReplicaSetController extends QueueController {
  private readonly random: () => number;

  constructor(
    private readonly store: ObjectStore,
    opts: ReplicaSetControllerOptions = {},
  ) {
    super({ onError: opts.onError });
    this.random = opts.random ?? Math.random;
  }

  protected watches(): Array<() => void> {
    return [
      this.store.watch<ReplicaSet>(RESOURCES.replicasets, {}, (ev) => {
        if (isChange(ev.type)) this.queue.add(keyOf(ev.object as KubeObject));
      }),
      this.store.watch<Pod>(RESOURCES.pods, {}, (ev: WatchEvent<Pod>) => {
        if (!isChange(ev.type)) return;
        const pod = ev.object as Pod;
        const owner = controllerOf(pod);
        if (owner?.kind === 'ReplicaSet') this.queue.add(`${pod.metadata.namespace ?? ''}/${owner.name}`);
      }),
    ];
  }

  protected reconcile(key: string): void {
    const { namespace, name } = splitKey(key);
    const rs = this.store.get<ReplicaSet>(RESOURCES.replicasets, namespace, name);
    const pods = this.store.list<Pod>(RESOURCES.pods, { namespace }).items;
    if (!rs) {
      for (const pod of pods) {
        const owner = controllerOf(pod);
        if (owner?.kind === 'ReplicaSet' && owner.name === name && !pod.metadata.deletionTimestamp) {
          this.deletePod(pod);
        }
      }
      return;
    }
    const owned = pods.filter((p) => controllerOf(p)?.uid === rs.metadata.uid);
    const active = owned.filter(isPodActive);
    const want = rs.spec.replicas ?? 1;
    if (active.length < want) {
      for (let i = active.length; i < want; i++) active.push(this.createPod(rs));
    } else if (active.length > want) {
      const victims = [...active].sort(compareForDeletion).slice(0, active.length - want);
      for (const v of victims) this.deletePod(v);
      const gone = new Set(victims);
      active.splice(0, active.length, ...active.filter((p) => !gone.has(p)));
    }
    this.writeStatus(rs, active);
  }

  private createPod(rs: ReplicaSet): Pod {
    const tpl = rs.spec.template;
    for (let attempt = 0; ; attempt++) {
      const pod: Pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name: `${rs.metadata.name ?? ''}-${randomSuffix(this.random)}`,
          namespace: rs.metadata.namespace,
          labels: { ...(tpl.metadata?.labels ?? {}) },
          ...(tpl.metadata?.annotations ? { annotations: { ...tpl.metadata.annotations } } : {}),
          ownerReferences: [
            {
              apiVersion: 'apps/v1',
              kind: 'ReplicaSet',
              name: rs.metadata.name ?? '',
              uid: rs.metadata.uid ?? '',
              controller: true,
              blockOwnerDeletion: true,
            },
          ],
        },
        spec: structuredClone(tpl.spec),
        status: { phase: 'Pending' },
      };
      try {
        return this.store.create<Pod>(RESOURCES.pods, pod);
      } catch (err) {
        // A name collision (409) is retried with a new suffix, a few times.
        if (attempt >= 4 || (err as { status?: number }).status !== 409) throw err;
      }
    }
  }

  private deletePod(pod: Pod): void {
    try {
      this.store.delete(RESOURCES.pods, pod.metadata.namespace, pod.metadata.name ?? '', {
        preconditionUid: pod.metadata.uid,
      });
    } catch (err) {
      // Already gone (404) or replaced (409): nothing left to delete.
      const status = (err as { status?: number }).status;
      if (status !== 404 && status !== 409) throw err;
    }
  }

  private writeStatus(rs: ReplicaSet, active: Pod[]): void {
    const ready = active.filter(isPodReady).length;
    const now = Date.now();
    let available = 0;
    let next = Infinity;
    for (const p of active) {
      const at = podAvailableAtMs(p, rs.spec.minReadySeconds ?? 0);
      if (at === undefined) continue;
      if (at <= now) available++;
      else next = Math.min(next, at);
    }
    // A pod still inside minReadySeconds becomes available without any event: look again then.
    if (next !== Infinity) this.queue.addAfter(keyOf(rs), next - now + 1);
    const status: ReplicaSetStatus = {
      replicas: active.length,
      fullyLabeledReplicas: active.length,
      readyReplicas: ready,
      availableReplicas: available,
      ...(rs.metadata.generation !== undefined ? { observedGeneration: rs.metadata.generation } : {}),
    };
    if (JSON.stringify(status) === JSON.stringify(rs.status ?? {})) return;
    putStatus<ReplicaSet>(this.store, RESOURCES.replicasets, { ...rs, status });
  }
}
