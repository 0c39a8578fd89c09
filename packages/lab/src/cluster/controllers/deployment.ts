// The embedded Deployment controller, mirroring kube-controller-manager's deployment controller:
// one ReplicaSet per pod template, named `<deployment>-<hash>` and labelled pod-template-hash; a
// RollingUpdate scales the new ReplicaSet up while the total stays within replicas + maxSurge and
// scales old ones down while available pods stay at or above replicas - maxUnavailable (surge rounds
// up, unavailable rounds down, both 0 → unavailable 1). Each sync does one step (scale up, else scale
// down), the next step runs on the events it causes. Availability is counted from the pods themselves:
// Ready, not terminating (minReadySeconds is 0), capped by the ReplicaSet's spec so pods its controller
// is about to delete never count. Recreate scales everything old to zero and waits for the pods to go.

import { RESOURCES, type ObjectStore } from '../store-api.js';
import type { KubeObject } from 'grpc-kube/internal/kube/types.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { QueueController, isChange } from './queue.js';
import { SAFE_ALPHABET, isPodActive } from './replicaset.js';
import {
  POD_TEMPLATE_HASH_LABEL,
  controllerOf,
  isPodReady,
  isPodTerminal,
  keyOf,
  podAvailableAtMs,
  splitKey,
  type Deployment,
  type DeploymentCondition,
  type DeploymentStatus,
  type Pod,
  type PodTemplateSpec,
  type ReplicaSet,
  putStatus,
} from './kinds.js';

export const REVISION_ANNOTATION = 'deployment.kubernetes.io/revision';
export const DESIRED_REPLICAS_ANNOTATION = 'deployment.kubernetes.io/desired-replicas';
export const MAX_REPLICAS_ANNOTATION = 'deployment.kubernetes.io/max-replicas';

/** JSON with sorted keys, so equal templates hash equal whatever order their fields were written in. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * The pod-template-hash: FNV-1a 32 of the template (plus the collision count), its decimal digits
 * mapped through the safe alphabet, as Kubernetes' ComputeHash + SafeEncodeString do.
 */
export function templateHash(template: PodTemplateSpec, collisionCount = 0): string {
  const text = canonicalJson(template) + (collisionCount > 0 ? String(collisionCount) : '');
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  let out = '';
  for (const c of String(h)) out += SAFE_ALPHABET[c.charCodeAt(0) % SAFE_ALPHABET.length] ?? 'b';
  return out;
}

function resolveIntOrPercent(
  field: string,
  value: number | string | undefined,
  fallback: string,
  total: number,
  roundUp: boolean,
): number {
  const v = value ?? fallback;
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0)
      throw new InvalidOptionError(field, `must be a non-negative integer or a percentage, got ${v}`);
    return v;
  }
  const m = /^(\d+)%$/.exec(v);
  if (!m)
    throw new InvalidOptionError(
      field,
      `must be a non-negative integer or a percentage like "25%", got "${v}"`,
    );
  const scaled = (Number(m[1]) * total) / 100;
  return roundUp ? Math.ceil(scaled) : Math.floor(scaled);
}

/** maxSurge and maxUnavailable as pod counts for `replicas`, with Kubernetes' rounding rules. */
export function resolveSurgeUnavailable(d: Deployment): { maxSurge: number; maxUnavailable: number } {
  const replicas = d.spec.replicas ?? 1;
  const ru = d.spec.strategy?.rollingUpdate;
  const maxSurge = resolveIntOrPercent(
    'strategy.rollingUpdate.maxSurge',
    ru?.maxSurge,
    '25%',
    replicas,
    true,
  );
  let maxUnavailable = resolveIntOrPercent(
    'strategy.rollingUpdate.maxUnavailable',
    ru?.maxUnavailable,
    '25%',
    replicas,
    false,
  );
  if (maxSurge === 0 && maxUnavailable === 0) maxUnavailable = 1;
  return { maxSurge, maxUnavailable: Math.min(maxUnavailable, replicas) };
}

export interface DeploymentControllerOptions {
  readonly onError?: (key: string, err: unknown) => void;
  readonly now?: () => number;
}

/** One ReplicaSet with its pod counts as this sync sees them. */
interface RsView {
  rs: ReplicaSet;
  spec: number;
  active: number;
  ready: number;
  /** Available active pods, capped by spec: the pods that will still be available once the RS settles. */
  available: number;
  /** Available active pods, uncapped (for status). */
  availablePods: number;
  /** Pods not in a terminal phase, terminating ones included: what Recreate waits to be gone. */
  present: number;
}

export class DeploymentController extends QueueController {
  private readonly now: () => number;
  private readonly onError: ((key: string, err: unknown) => void) | undefined;

  constructor(
    private readonly store: ObjectStore,
    opts: DeploymentControllerOptions = {},
  ) {
    super({ onError: opts.onError });
    this.now = opts.now ?? Date.now;
    this.onError = opts.onError;
  }

  protected watches(): Array<() => void> {
    return [
      this.store.watch<Deployment>(RESOURCES.deployments, {}, (ev) => {
        if (isChange(ev.type)) this.queue.add(keyOf(ev.object as KubeObject));
      }),
      this.store.watch<ReplicaSet>(RESOURCES.replicasets, {}, (ev) => {
        if (!isChange(ev.type)) return;
        const rs = ev.object as ReplicaSet;
        const owner = controllerOf(rs);
        if (owner?.kind === 'Deployment') this.queue.add(`${rs.metadata.namespace ?? ''}/${owner.name}`);
      }),
      this.store.watch<Pod>(RESOURCES.pods, {}, (ev) => {
        if (!isChange(ev.type)) return;
        const pod = ev.object as Pod;
        const owner = controllerOf(pod);
        if (owner?.kind !== 'ReplicaSet') return;
        const rs = this.store.get<ReplicaSet>(RESOURCES.replicasets, pod.metadata.namespace, owner.name);
        const dep = rs ? controllerOf(rs) : undefined;
        if (dep?.kind === 'Deployment') this.queue.add(`${pod.metadata.namespace ?? ''}/${dep.name}`);
      }),
    ];
  }

  protected reconcile(key: string): void {
    const { namespace, name } = splitKey(key);
    const d = this.store.get<Deployment>(RESOURCES.deployments, namespace, name);
    const allRs = this.store.list<ReplicaSet>(RESOURCES.replicasets, { namespace }).items;
    if (!d) {
      // The garbage collector's part: a deleted Deployment takes its ReplicaSets (and so its pods).
      for (const rs of allRs) {
        const owner = controllerOf(rs);
        if (owner?.kind === 'Deployment' && owner.name === name) {
          this.tolerateGone(() =>
            this.store.delete(RESOURCES.replicasets, namespace, rs.metadata.name ?? ''),
          );
        }
      }
      return;
    }
    let bounds: { maxSurge: number; maxUnavailable: number };
    try {
      bounds = resolveSurgeUnavailable(d);
    } catch (err) {
      // A spec the API would have rejected: report once, do not retry until the object changes.
      this.onError?.(key, err);
      return;
    }
    const pods = this.store.list<Pod>(RESOURCES.pods, { namespace }).items;
    const views = allRs
      .filter((rs) => controllerOf(rs)?.uid === d.metadata.uid)
      .map((rs) => this.view(d, rs, pods))
      .sort(
        (a, b) =>
          creation(a.rs) - creation(b.rs) ||
          ((a.rs.metadata.name ?? '') < (b.rs.metadata.name ?? '') ? -1 : 1),
      );
    const hash = templateHash(d.spec.template);
    let newRs = views.find((v) => v.rs.metadata.labels?.[POD_TEMPLATE_HASH_LABEL] === hash);
    const old = views.filter((v) => v !== newRs);
    const replicas = d.spec.replicas ?? 1;

    if (d.spec.strategy?.type === 'Recreate') {
      this.syncRecreate(d, newRs, old, hash);
    } else if (!newRs) {
      const current = sum(old, (v) => v.spec);
      newRs = this.createNewRs(
        d,
        hash,
        old,
        Math.max(0, Math.min(replicas, replicas + bounds.maxSurge - current)),
      );
      views.push(newRs);
    } else if (!this.reconcileNewRs(d, newRs, old, bounds)) {
      this.reconcileOldRses(d, newRs, old, bounds);
    }
    this.cleanupHistory(d, old);
    this.writeStatus(d, newRs, views, bounds);
  }

  private view(d: Deployment, rs: ReplicaSet, pods: Pod[]): RsView {
    const owned = pods.filter((p) => controllerOf(p)?.uid === rs.metadata.uid);
    const active = owned.filter(isPodActive);
    const present = owned.filter((p) => !isPodTerminal(p)).length;
    const ready = active.filter(isPodReady).length;
    const spec = rs.spec.replicas ?? 0;
    const now = this.now();
    let availablePods = 0;
    for (const p of active) {
      const at = podAvailableAtMs(p, d.spec.minReadySeconds ?? 0);
      if (at === undefined) continue;
      if (at <= now) availablePods++;
      // Inside minReadySeconds: no event will say when it becomes available, so look again then.
      else this.queue.addAfter(keyOf(d), at - now + 1);
    }
    return {
      rs,
      spec,
      active: active.length,
      ready,
      available: Math.min(spec, availablePods),
      availablePods,
      present,
    };
  }

  private createNewRs(d: Deployment, hash: string, old: RsView[], replicas: number): RsView {
    const revision =
      1 + Math.max(0, ...old.map((v) => Number(v.rs.metadata.annotations?.[REVISION_ANNOTATION] ?? 0) || 0));
    const labels = { ...(d.spec.template.metadata?.labels ?? {}), [POD_TEMPLATE_HASH_LABEL]: hash };
    const rs: ReplicaSet = {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name: `${d.metadata.name ?? ''}-${hash}`,
        namespace: d.metadata.namespace,
        labels,
        annotations: {
          [REVISION_ANNOTATION]: String(revision),
          [DESIRED_REPLICAS_ANNOTATION]: String(d.spec.replicas ?? 1),
        },
        ownerReferences: [
          {
            apiVersion: 'apps/v1',
            kind: 'Deployment',
            name: d.metadata.name ?? '',
            uid: d.metadata.uid ?? '',
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      spec: {
        replicas,
        minReadySeconds: d.spec.minReadySeconds ?? 0,
        selector: {
          ...d.spec.selector,
          matchLabels: { ...(d.spec.selector.matchLabels ?? {}), [POD_TEMPLATE_HASH_LABEL]: hash },
        },
        template: {
          metadata: { ...(d.spec.template.metadata ?? {}), labels },
          spec: structuredClone(d.spec.template.spec),
        },
      },
      status: { replicas: 0 },
    };
    const created = this.store.create<ReplicaSet>(RESOURCES.replicasets, rs);
    return { rs: created, spec: replicas, active: 0, ready: 0, available: 0, availablePods: 0, present: 0 };
  }

  private scale(v: RsView, replicas: number): void {
    if (v.spec === replicas) return;
    v.rs = this.store.update<ReplicaSet>(RESOURCES.replicasets, {
      ...v.rs,
      spec: { ...v.rs.spec, replicas },
    });
    v.spec = replicas;
    v.available = Math.min(v.available, replicas);
  }

  /** The real NewRSNewReplicas + reconcileNewReplicaSet. Returns true when it scaled. */
  private reconcileNewRs(d: Deployment, newRs: RsView, old: RsView[], b: { maxSurge: number }): boolean {
    const replicas = d.spec.replicas ?? 1;
    if (newRs.spec === replicas) return false;
    if (newRs.spec > replicas) {
      this.scale(newRs, replicas);
      return true;
    }
    const current = newRs.spec + sum(old, (v) => v.spec);
    const maxTotal = replicas + b.maxSurge;
    if (current >= maxTotal) return false;
    const target = newRs.spec + Math.min(maxTotal - current, replicas - newRs.spec);
    this.scale(newRs, target);
    return true;
  }

  /** The real reconcileOldReplicaSets: first unhealthy old pods, then healthy ones down to minAvailable. */
  private reconcileOldRses(
    d: Deployment,
    newRs: RsView,
    old: RsView[],
    b: { maxUnavailable: number },
  ): boolean {
    if (sum(old, (v) => v.spec) === 0) return false;
    const replicas = d.spec.replicas ?? 1;
    const all = [...old, newRs];
    const allPods = sum(all, (v) => v.spec);
    const minAvailable = replicas - b.maxUnavailable;
    const newUnavailable = newRs.spec - newRs.available;
    const maxScaledDown = allPods - minAvailable - newUnavailable;
    if (maxScaledDown <= 0) return false;
    let cleaned = 0;
    for (const v of old) {
      if (cleaned >= maxScaledDown) break;
      if (v.spec === 0) continue;
      const unhealthy = v.spec - v.available;
      if (unhealthy <= 0) continue;
      const n = Math.min(maxScaledDown - cleaned, unhealthy);
      this.scale(v, v.spec - n);
      cleaned += n;
    }
    const availableNow = sum(all, (v) => v.available);
    let toScale = availableNow - minAvailable;
    let scaled = 0;
    for (const v of old) {
      if (toScale <= 0) break;
      if (v.spec === 0) continue;
      const n = Math.min(v.spec, toScale);
      this.scale(v, v.spec - n);
      toScale -= n;
      scaled += n;
    }
    return cleaned + scaled > 0;
  }

  private syncRecreate(d: Deployment, newRs: RsView | undefined, old: RsView[], hash: string): void {
    for (const v of old) this.scale(v, 0);
    // As the real controller: the new pods start only once every old pod is gone, not just terminating.
    if (old.some((v) => v.present > 0)) return;
    if (!newRs) this.createNewRs(d, hash, old, d.spec.replicas ?? 1);
    else this.scale(newRs, d.spec.replicas ?? 1);
  }

  /** Old ReplicaSets at zero with no pods left, beyond revisionHistoryLimit (default 10), go. */
  private cleanupHistory(d: Deployment, old: RsView[]): void {
    const limit = d.spec.revisionHistoryLimit ?? 10;
    const idle = old.filter((v) => v.spec === 0 && v.present === 0);
    for (const v of idle.slice(0, Math.max(0, idle.length - limit))) {
      this.tolerateGone(() =>
        this.store.delete(RESOURCES.replicasets, v.rs.metadata.namespace, v.rs.metadata.name ?? ''),
      );
    }
  }

  private writeStatus(
    d: Deployment,
    newRs: RsView | undefined,
    views: RsView[],
    b: { maxUnavailable: number },
  ): void {
    const replicas = d.spec.replicas ?? 1;
    const total = sum(views, (v) => v.active);
    const ready = sum(views, (v) => v.ready);
    const updated = newRs?.active ?? 0;
    const available = sum(views, (v) => v.availablePods);
    const complete = updated === replicas && total === replicas && available === replicas;
    const nowIso = new Date(this.now()).toISOString();
    const cond = (
      type: string,
      status: 'True' | 'False',
      reason: string,
      message: string,
    ): DeploymentCondition => {
      const prev = d.status?.conditions?.find((c) => c.type === type);
      const same = prev?.status === status && prev.reason === reason;
      return {
        type,
        status,
        reason,
        message,
        lastUpdateTime: same ? (prev.lastUpdateTime ?? nowIso) : nowIso,
        lastTransitionTime: prev?.status === status ? (prev.lastTransitionTime ?? nowIso) : nowIso,
      };
    };
    const status: DeploymentStatus = {
      ...(d.metadata.generation !== undefined ? { observedGeneration: d.metadata.generation } : {}),
      replicas: total,
      updatedReplicas: updated,
      readyReplicas: ready,
      availableReplicas: available,
      unavailableReplicas: Math.max(0, replicas - available),
      conditions: [
        available >= replicas - b.maxUnavailable
          ? cond('Available', 'True', 'MinimumReplicasAvailable', 'Deployment has minimum availability.')
          : cond(
              'Available',
              'False',
              'MinimumReplicasUnavailable',
              'Deployment does not have minimum availability.',
            ),
        complete
          ? cond(
              'Progressing',
              'True',
              'NewReplicaSetAvailable',
              `ReplicaSet "${newRs?.rs.metadata.name ?? ''}" has successfully progressed.`,
            )
          : cond(
              'Progressing',
              'True',
              'ReplicaSetUpdated',
              `ReplicaSet "${newRs?.rs.metadata.name ?? ''}" is progressing.`,
            ),
      ],
    };
    if (JSON.stringify(status) === JSON.stringify(d.status ?? {})) return;
    putStatus<Deployment>(this.store, RESOURCES.deployments, { ...d, status });
  }

  private tolerateGone(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if ((err as { status?: number }).status !== 404) throw err;
    }
  }
}

function creation(o: KubeObject): number {
  return Date.parse(o.metadata.creationTimestamp ?? '') || 0;
}

function sum<T>(xs: T[], f: (x: T) => number): number {
  let n = 0;
  for (const x of xs) n += f(x);
  return n;
}

/** True when the Deployment's rollout is complete: all replicas updated, ready and no old pods left. */
export function isRolloutComplete(d: Deployment): boolean {
  const s = d.status;
  const replicas = d.spec.replicas ?? 1;
  if (!s) return false;
  if (d.metadata.generation !== undefined && (s.observedGeneration ?? 0) < d.metadata.generation)
    return false;
  return s.updatedReplicas === replicas && s.replicas === replicas && s.availableReplicas === replicas;
}
