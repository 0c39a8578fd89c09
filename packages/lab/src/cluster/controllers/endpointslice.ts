// The embedded EndpointSlice controller, mirroring kube-controller-manager's: for every Service with
// a selector it publishes EndpointSlices (addressType IPv4) labelled kubernetes.io/service-name and
// endpointslice.kubernetes.io/managed-by, owned by the Service, with at most maxEndpointsPerSlice
// (default 100) endpoints each. Conditions follow the API's rules: serving = pod Ready, terminating =
// deletionTimestamp set, ready = serving && !terminating (publishNotReadyAddresses makes both true).
// Churn is minimal as in the real reconciler: an endpoint stays in its slice, changed slices are
// filled first, then an unchanged slice that can take all the rest, then new slices; emptied slices
// go, except one placeholder when the Service has no endpoints at all. Reconciles are per Service,
// coalesced: a burst of pod events in one tick (or one batchMs window) becomes one write per slice.

import { RESOURCES, type ObjectStore } from '../store-api.js';
import {
  MANAGED_BY_LABEL,
  SERVICE_NAME_LABEL,
  type EndpointPort,
  type EndpointSlice,
  type KubeObject,
  type SliceEndpoint,
} from 'grpc-kube/internal/kube/types.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { QueueController, isChange } from './queue.js';
import {
  ZONE_LABEL,
  isPodReady,
  isPodTerminal,
  keyOf,
  mapSelectorMatches,
  splitKey,
  type Node,
  type Pod,
  type Service,
} from './kinds.js';

export const CONTROLLER_NAME = 'endpointslice-controller.k8s.io';
export const DEFAULT_MAX_ENDPOINTS_PER_SLICE = 100;

export interface EndpointSliceControllerOptions {
  /** At most this many endpoints per slice (the real controller's --max-endpoints-per-slice). */
  readonly maxEndpointsPerSlice?: number;
  /** Coalesce events for this long before reconciling (the real --endpoint-updates-batch-period). */
  readonly batchMs?: number;
  readonly onError?: (key: string, err: unknown) => void;
}

interface Desired {
  ports: EndpointPort[];
  sig: string;
  endpoints: Map<string, SliceEndpoint>;
}

function podAddress(pod: Pod): string | undefined {
  return pod.status?.podIPs?.[0]?.ip ?? (pod.status?.podIP || undefined);
}

/** The slice ports for one pod: targetPort resolved to a number (by name through the pod's containers). */
function portsFor(svc: Service, pod: Pod): EndpointPort[] | undefined {
  const out: EndpointPort[] = [];
  for (const p of svc.spec.ports ?? []) {
    let port: number | undefined;
    const tp = p.targetPort ?? p.port;
    if (typeof tp === 'number') port = tp;
    else if (/^\d+$/.test(tp)) port = Number(tp);
    else {
      for (const c of pod.spec.containers)
        for (const cp of c.ports ?? []) if (cp.name === tp) port ??= cp.containerPort;
    }
    // A named port the pod does not have: the real controller leaves the pod out of that mapping.
    if (port === undefined) return undefined;
    out.push({
      name: p.name ?? '',
      port,
      protocol: p.protocol ?? 'TCP',
      ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}),
    });
  }
  return out;
}

function endpointUid(ep: SliceEndpoint): string {
  return ep.targetRef?.uid ?? ep.addresses[0] ?? '';
}

export class EndpointSliceController extends QueueController {
  private readonly store: ObjectStore;
  private readonly max: number;
  private readonly podServices = new Map<string, Set<string>>();
  private readonly nodeZones = new Map<string, string | undefined>();

  constructor(store: ObjectStore, opts: EndpointSliceControllerOptions = {}) {
    super({ batchMs: opts.batchMs ?? 0, onError: opts.onError });
    this.store = store;
    this.max = opts.maxEndpointsPerSlice ?? DEFAULT_MAX_ENDPOINTS_PER_SLICE;
    if (!Number.isInteger(this.max) || this.max < 1 || this.max > 1000) {
      throw new InvalidOptionError(
        'maxEndpointsPerSlice',
        `must be an integer from 1 to 1000, got ${this.max}`,
      );
    }
  }

  protected watches(): Array<() => void> {
    return [
      this.store.watch<Service>(RESOURCES.services, {}, (ev) => {
        if (isChange(ev.type)) this.queue.add(keyOf(ev.object as KubeObject));
      }),
      this.store.watch<Pod>(RESOURCES.pods, {}, (ev) => {
        if (isChange(ev.type)) this.onPod(ev.object as Pod, ev.type === 'DELETED');
      }),
      this.store.watch<Node>(RESOURCES.nodes, {}, (ev) => {
        // Only zones matter; heartbeats and other Node writes must not resync every Service.
        if (!isChange(ev.type)) return;
        const node = ev.object as Node;
        const name = node.metadata.name ?? '';
        const zone = ev.type === 'DELETED' ? undefined : node.metadata.labels?.[ZONE_LABEL];
        const before = this.nodeZones.get(name);
        if (ev.type === 'DELETED') this.nodeZones.delete(name);
        else this.nodeZones.set(name, zone);
        if (before === zone) return;
        for (const svc of this.store.list<Service>(RESOURCES.services).items) this.queue.add(keyOf(svc));
      }),
      this.store.watch<EndpointSlice>(RESOURCES.endpointslices, {}, (ev) => {
        // Repairs slices changed or deleted by someone else; our own writes reconcile to no-ops.
        if (!isChange(ev.type)) return;
        const slice = ev.object as EndpointSlice;
        const svc = slice.metadata.labels?.[SERVICE_NAME_LABEL];
        if (svc && slice.metadata.labels?.[MANAGED_BY_LABEL] === CONTROLLER_NAME) {
          this.queue.add(`${slice.metadata.namespace ?? ''}/${svc}`);
        }
      }),
    ];
  }

  override stop(): void {
    super.stop();
    this.podServices.clear();
    this.nodeZones.clear();
  }

  private onPod(pod: Pod, deleted: boolean): void {
    const podKey = keyOf(pod);
    const before = this.podServices.get(podKey) ?? new Set<string>();
    const now = new Set<string>();
    if (!deleted) {
      for (const svc of this.store.list<Service>(RESOURCES.services, { namespace: pod.metadata.namespace })
        .items) {
        if (mapSelectorMatches(svc.spec.selector, pod.metadata.labels)) now.add(keyOf(svc));
      }
    }
    for (const k of before) this.queue.add(k);
    for (const k of now) this.queue.add(k);
    if (now.size > 0) this.podServices.set(podKey, now);
    else this.podServices.delete(podKey);
  }

  protected reconcile(key: string): void {
    const { namespace, name } = splitKey(key);
    const svc = this.store.get<Service>(RESOURCES.services, namespace, name);
    const existing = this.store
      .list<EndpointSlice>(RESOURCES.endpointslices, {
        namespace,
        labelSelector: `${SERVICE_NAME_LABEL}=${name},${MANAGED_BY_LABEL}=${CONTROLLER_NAME}`,
      })
      .items.filter(
        (s) =>
          s.metadata.labels?.[SERVICE_NAME_LABEL] === name &&
          s.metadata.labels[MANAGED_BY_LABEL] === CONTROLLER_NAME,
      )
      .sort((a, b) => ((a.metadata.name ?? '') < (b.metadata.name ?? '') ? -1 : 1));
    if (!svc || !svc.spec.selector || Object.keys(svc.spec.selector).length === 0) {
      for (const s of existing) this.deleteSlice(s);
      return;
    }
    const groups = this.desired(svc);
    const writes: Array<{
      slice: EndpointSlice;
      endpoints: SliceEndpoint[];
      ports: EndpointPort[];
      isNew: boolean;
    }> = [];
    const toDelete: EndpointSlice[] = [];
    const claimed = new Set<EndpointSlice>();

    for (const g of groups.values()) {
      const placed = new Set<string>();
      const mine = existing.filter((s) => JSON.stringify(s.ports ?? []) === g.sig);
      const changed: typeof writes = [];
      const unchanged: typeof writes = [];
      for (const s of mine) {
        claimed.add(s);
        const eps: SliceEndpoint[] = [];
        let dirty = false;
        for (const ep of s.endpoints ?? []) {
          const uid = endpointUid(ep);
          const want = g.endpoints.get(uid);
          if (!want || placed.has(uid)) {
            dirty = true;
            continue;
          }
          placed.add(uid);
          if (JSON.stringify(want) !== JSON.stringify(ep)) dirty = true;
          eps.push(want);
        }
        const w = { slice: s, endpoints: eps, ports: g.ports, isNew: false };
        (dirty || !this.labelsCurrent(s, svc) ? changed : unchanged).push(w);
      }
      const rest = [...g.endpoints.entries()]
        .filter(([uid]) => !placed.has(uid))
        .sort(([, a], [, b]) => ((a.targetRef?.name ?? '') < (b.targetRef?.name ?? '') ? -1 : 1))
        .map(([, ep]) => ep);
      // 1. Slices that are being written anyway take new endpoints first.
      for (const w of changed) {
        while (rest.length > 0 && w.endpoints.length < this.max)
          w.endpoints.push(rest.shift() as SliceEndpoint);
      }
      // 2. One unchanged slice that can take all the rest (the fullest that fits), instead of a new slice.
      if (rest.length > 0 && rest.length < this.max) {
        const fit = unchanged
          .filter((w) => this.max - w.endpoints.length >= rest.length)
          .sort((a, b) => b.endpoints.length - a.endpoints.length)[0];
        if (fit) {
          fit.endpoints.push(...rest.splice(0));
          unchanged.splice(unchanged.indexOf(fit), 1);
          changed.push(fit);
        }
      }
      // 3. New slices for whatever is left.
      while (rest.length > 0) {
        changed.push({
          slice: this.newSlice(svc),
          endpoints: rest.splice(0, this.max),
          ports: g.ports,
          isNew: true,
        });
      }
      for (const w of changed) {
        if (w.endpoints.length === 0 && !w.isNew) toDelete.push(w.slice);
        else writes.push(w);
      }
    }
    for (const s of existing) if (!claimed.has(s)) toDelete.push(s);

    const total =
      writes.reduce((n, w) => n + w.endpoints.length, 0) + this.keptCount(existing, toDelete, writes);
    if (total === 0) {
      // No endpoints at all: keep exactly one empty placeholder slice, as the real controller does.
      const keep =
        toDelete.find((s) => (s.endpoints ?? []).length === 0 && (s.ports ?? []).length === 0) ?? toDelete[0];
      if (keep) {
        toDelete.splice(toDelete.indexOf(keep), 1);
        writes.push({ slice: keep, endpoints: [], ports: [], isNew: false });
      } else if (existing.length === 0) {
        writes.push({ slice: this.newSlice(svc), endpoints: [], ports: [], isNew: true });
      }
    }

    for (const w of writes) this.writeSlice(svc, w.slice, w.endpoints, w.ports, w.isNew);
    for (const s of toDelete) this.deleteSlice(s);
  }

  /** Endpoints in existing slices that stay as they are (neither rewritten nor deleted). */
  private keptCount(
    existing: EndpointSlice[],
    toDelete: EndpointSlice[],
    writes: Array<{ slice: EndpointSlice }>,
  ): number {
    let n = 0;
    const touched = new Set<EndpointSlice>([...toDelete, ...writes.map((w) => w.slice)]);
    for (const s of existing) if (!touched.has(s)) n += (s.endpoints ?? []).length;
    return n;
  }

  private desired(svc: Service): Map<string, Desired> {
    const groups = new Map<string, Desired>();
    const pods = this.store.list<Pod>(RESOURCES.pods, { namespace: svc.metadata.namespace }).items;
    const pnra = svc.spec.publishNotReadyAddresses === true;
    const zones = new Map<string, string | undefined>();
    for (const pod of pods) {
      if (!mapSelectorMatches(svc.spec.selector, pod.metadata.labels)) continue;
      const ip = podAddress(pod);
      if (!ip || isPodTerminal(pod)) continue;
      const ports = portsFor(svc, pod);
      if (!ports) continue;
      const sig = JSON.stringify(ports);
      let g = groups.get(sig);
      if (!g) {
        g = { ports, sig, endpoints: new Map() };
        groups.set(sig, g);
      }
      const podReady = isPodReady(pod);
      const terminating = Boolean(pod.metadata.deletionTimestamp);
      const nodeName = pod.spec.nodeName;
      let zone: string | undefined;
      if (nodeName) {
        if (!zones.has(nodeName)) {
          const node = this.store.get<Node>(RESOURCES.nodes, undefined, nodeName);
          zones.set(nodeName, node?.metadata.labels?.[ZONE_LABEL]);
        }
        zone = zones.get(nodeName);
      }
      const ep: SliceEndpoint = {
        addresses: [ip],
        conditions: {
          ready: pnra || (podReady && !terminating),
          serving: pnra || podReady,
          terminating,
        },
        targetRef: {
          kind: 'Pod',
          namespace: pod.metadata.namespace ?? '',
          name: pod.metadata.name ?? '',
          uid: pod.metadata.uid ?? '',
        },
        ...(nodeName ? { nodeName } : {}),
        ...(zone ? { zone } : {}),
      };
      g.endpoints.set(pod.metadata.uid ?? ip, ep);
    }
    return groups;
  }

  private labelsFor(svc: Service): Record<string, string> {
    return {
      ...(svc.metadata.labels ?? {}),
      [SERVICE_NAME_LABEL]: svc.metadata.name ?? '',
      [MANAGED_BY_LABEL]: CONTROLLER_NAME,
    };
  }

  private labelsCurrent(slice: EndpointSlice, svc: Service): boolean {
    return JSON.stringify(slice.metadata.labels ?? {}) === JSON.stringify(this.labelsFor(svc));
  }

  private newSlice(svc: Service): EndpointSlice {
    return {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        generateName: `${svc.metadata.name ?? ''}-`,
        namespace: svc.metadata.namespace,
        labels: this.labelsFor(svc),
        ownerReferences: [
          {
            apiVersion: 'v1',
            kind: 'Service',
            name: svc.metadata.name ?? '',
            uid: svc.metadata.uid ?? '',
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      addressType: 'IPv4',
      endpoints: [],
      ports: [],
    };
  }

  private writeSlice(
    svc: Service,
    slice: EndpointSlice,
    endpoints: SliceEndpoint[],
    ports: EndpointPort[],
    isNew: boolean,
  ): void {
    const next: EndpointSlice = {
      ...slice,
      metadata: { ...slice.metadata, labels: this.labelsFor(svc) },
      endpoints,
      ports,
    };
    if (isNew) {
      this.store.create<EndpointSlice>(RESOURCES.endpointslices, next);
      return;
    }
    const same =
      JSON.stringify(slice.endpoints ?? []) === JSON.stringify(endpoints) &&
      JSON.stringify(slice.ports ?? []) === JSON.stringify(ports) &&
      this.labelsCurrent(slice, svc);
    if (!same) this.store.update<EndpointSlice>(RESOURCES.endpointslices, next);
  }

  private deleteSlice(slice: EndpointSlice): void {
    try {
      this.store.delete(RESOURCES.endpointslices, slice.metadata.namespace, slice.metadata.name ?? '', {
        preconditionUid: slice.metadata.uid,
      });
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status !== 404 && status !== 409) throw err;
    }
  }
}
