// Pod lives on the lab's clock: when each pod of a Service turned Ready, started terminating and was
// gone, read from the store's watch as the kubelet and controllers write them. The metrics measure
// "Ready → first RPC" from these instants.

import { isPodReady } from '../cluster/controllers/kinds.js';
import type { LabCluster } from './cluster.js';
import type { PodTimeline } from './metrics.js';

interface Life {
  name: string;
  createdAtMs: number;
  readyAtMs: number | null;
  terminatingAtMs: number | null;
  goneAtMs: number | null;
}

export class PodTimelineRecorder {
  private readonly lives = new Map<string, Life>();
  /** Pod IP → pod name, for telling which pod answered by the connection's peer (--pod-command). */
  private readonly byIp = new Map<string, string>();
  /** Pod name → its labels, as last seen. */
  private readonly labels = new Map<string, Readonly<Record<string, string>>>();
  private readonly stopWatch: () => void;
  private readonly clock: () => number;
  private originMs: number;

  /** Records every pod matching `labelSelector` in `namespace`. Times are clock() - origin. */
  constructor(cluster: LabCluster, namespace: string, labelSelector: string, clock: () => number) {
    this.clock = clock;
    this.originMs = clock();
    this.stopWatch = cluster.watchPods(namespace, labelSelector, (type, pod) => {
      const name = pod.metadata?.name;
      if (!name) return;
      const t = this.clock() - this.originMs;
      let life = this.lives.get(name);
      if (life === undefined) {
        life = { name, createdAtMs: t, readyAtMs: null, terminatingAtMs: null, goneAtMs: null };
        this.lives.set(name, life);
      }
      const ip = pod.status?.podIP;
      if (ip) this.byIp.set(ip, name);
      this.labels.set(name, { ...(pod.metadata.labels ?? {}) });
      if (type === 'DELETED') {
        life.goneAtMs ??= t;
        return;
      }
      if (life.readyAtMs === null && isPodReady(pod) && !pod.metadata.deletionTimestamp) life.readyAtMs = t;
      if (life.terminatingAtMs === null && pod.metadata.deletionTimestamp) life.terminatingAtMs = t;
    });
  }

  /** Pods seen so far. */
  get size(): number {
    return this.lives.size;
  }

  /** Moves time zero to now (the workload's start); earlier instants become negative. */
  setOrigin(originMs: number): void {
    const shift = originMs - this.originMs;
    for (const l of this.lives.values()) {
      l.createdAtMs -= shift;
      if (l.readyAtMs !== null) l.readyAtMs -= shift;
      if (l.terminatingAtMs !== null) l.terminatingAtMs -= shift;
      if (l.goneAtMs !== null) l.goneAtMs -= shift;
    }
    this.originMs = originMs;
  }

  stop(): void {
    this.stopWatch();
  }

  /** Whether the pod's labels include every label of `selector` (false for a pod never seen). */
  podMatches(name: string, selector: Readonly<Record<string, string>>): boolean {
    const labels = this.labels.get(name);
    return labels !== undefined && Object.entries(selector).every(([k, v]) => labels[k] === v);
  }

  /** The pod that had this IP (an address `ip:port` or `[ip]:port` is accepted); undefined if none. */
  podForAddress(address: string): string | undefined {
    const ip = address.startsWith('[')
      ? address.slice(1, address.indexOf(']'))
      : address.replace(/:\d+$/, '');
    return this.byIp.get(ip);
  }

  /** Timelines for the metrics: pods created after time zero are new; earlier instants clamp to 0. */
  timelines(): PodTimeline[] {
    return [...this.lives.values()].map((l) => ({
      name: l.name,
      readyAtMs: l.readyAtMs === null ? null : Math.max(0, l.readyAtMs),
      terminatingAtMs: l.terminatingAtMs === null ? null : Math.max(0, l.terminatingAtMs),
      goneAtMs: l.goneAtMs === null ? null : Math.max(0, l.goneAtMs),
      isNew: l.createdAtMs > 0,
    }));
  }
}
