// What the lab and its tests do to workloads, written once over the Kube contract (kube-api.ts), so
// the embedded cluster (its store) and the real one (kube-apiserver over HTTP) answer alike: the
// manifests of a Deployment and its headless Service, create-or-patch them, scale, restart a
// rollout, and waits driven by watches — N ready pods, a finished rollout, any state of the objects.

import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import type { KubeObject } from 'grpc-kube/internal/kube/types.js';
import { isRolloutComplete } from './controllers/deployment.js';
import {
  POD_TEMPLATE_HASH_LABEL,
  isPodReady,
  mapSelectorMatches,
  type Deployment,
  type Pod,
  type Service,
} from './controllers/kinds.js';
import { KINDS, statusOf, type Kube, type ResourceType } from './kube-api.js';
import { PROBE_PERIOD_MS_ANNOTATION } from './kubelet.js';

/** A Deployment of one container plus its headless Service, as the lab and the field write-ups use them. */
export interface AppSpec {
  readonly name: string;
  readonly namespace?: string;
  readonly replicas: number;
  /** Container port, Service targetPort. Default 50051. */
  readonly port?: number;
  /** Service port name. Default 'grpc'. */
  readonly portName?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly image?: string;
  readonly maxSurge?: number | string;
  readonly maxUnavailable?: number | string;
  readonly terminationGracePeriodSeconds?: number;
  /** Readiness probe (grpc.health.v1 on the container port, or on `port`). */
  readonly probe?: {
    /** A plaintext health port apart from a TLS container port (the kubelet probes in plaintext). */
    port?: number;
    periodMs?: number;
    failureThreshold?: number;
    successThreshold?: number;
    timeoutSeconds?: number;
  };
  /** Extra pod labels (e.g. one a Service shared by two Deployments selects on, for a canary). */
  readonly labels?: Readonly<Record<string, string>>;
  /** The headless Service: its name (default the app's) and selector (default { app: name }). */
  readonly serviceName?: string;
  readonly serviceSelector?: Readonly<Record<string, string>>;
}

export function deploymentManifest(app: AppSpec): Deployment {
  if (!Number.isInteger(app.replicas) || app.replicas < 0) {
    throw new InvalidOptionError('replicas', `must be a non-negative integer, got ${app.replicas}`);
  }
  const port = app.port ?? 50051;
  const labels = { app: app.name, ...(app.labels ?? {}) };
  const periodMs = app.probe?.periodMs;
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: app.name, namespace: app.namespace ?? 'default', labels: { app: app.name } },
    spec: {
      replicas: app.replicas,
      selector: { matchLabels: { app: app.name } },
      strategy: {
        type: 'RollingUpdate',
        rollingUpdate: { maxSurge: app.maxSurge ?? '25%', maxUnavailable: app.maxUnavailable ?? '25%' },
      },
      template: {
        metadata: {
          labels,
          ...(periodMs !== undefined
            ? { annotations: { [PROBE_PERIOD_MS_ANNOTATION]: String(periodMs) } }
            : {}),
        },
        spec: {
          terminationGracePeriodSeconds: app.terminationGracePeriodSeconds ?? 30,
          containers: [
            {
              name: app.name,
              image: app.image ?? 'grpc-kube/hello',
              env: Object.entries(app.env ?? {}).map(([name, value]) => ({ name, value })),
              ports: [{ name: app.portName ?? 'grpc', containerPort: port, protocol: 'TCP' }],
              readinessProbe: {
                grpc: { port: app.probe?.port ?? port },
                periodSeconds: Math.max(1, Math.ceil((periodMs ?? 10_000) / 1000)),
                failureThreshold: app.probe?.failureThreshold ?? 3,
                successThreshold: app.probe?.successThreshold ?? 1,
                timeoutSeconds: app.probe?.timeoutSeconds ?? 1,
              },
            },
          ],
        },
      },
    },
  };
}

export function headlessServiceManifest(
  app: Pick<AppSpec, 'name' | 'namespace' | 'port' | 'portName' | 'serviceName' | 'serviceSelector'>,
): Service {
  const port = app.port ?? 50051;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: app.serviceName ?? app.name, namespace: app.namespace ?? 'default' },
    spec: {
      clusterIP: 'None',
      type: 'ClusterIP',
      selector: { ...(app.serviceSelector ?? { app: app.name }) },
      ports: [{ name: app.portName ?? 'grpc', port, targetPort: port, protocol: 'TCP' }],
    },
  };
}

export interface Workloads {
  /** Create the Namespace (one that exists is kept); on a real cluster, wait for its default ServiceAccount. */
  ensureNamespace(name: string): Promise<void>;
  /** Creates, or merge-patches the labels and spec of, the app's headless Service and Deployment. */
  applyApp(app: AppSpec): Promise<void>;
  scale(namespace: string, name: string, replicas: number): Promise<void>;
  /** What `kubectl rollout restart` does: stamp the template's restartedAt annotation. */
  restartRollout(namespace: string, name: string, stamp?: string): Promise<void>;
  /** Pods of a namespace (optionally by label selector), deleting ones included. */
  listPods(namespace: string, labelSelector?: string): Promise<Pod[]>;
  /** Exactly `count` pods matching `selector` Ready and not terminating. */
  waitForReadyPods(
    namespace: string,
    selector: Record<string, string>,
    count: number,
    timeoutMs?: number,
  ): Promise<Pod[]>;
  /** Every replica updated and available, and no pod of an older template left (terminating included). */
  waitForRollout(namespace: string, name: string, timeoutMs?: number): Promise<Deployment>;
}

export interface WorkloadsOptions {
  /**
   * kube-apiserver admits pods into a namespace only once its default ServiceAccount exists (the
   * serviceaccount controller makes it); the embedded API server has no ServiceAccounts. Default false.
   */
  readonly waitForDefaultServiceAccount?: boolean;
  /** Default timeouts of the waits (the real cluster's controllers are slower). */
  readonly readyTimeoutMs?: number;
  readonly rolloutTimeoutMs?: number;
}

export function workloads(kube: Kube, opts: WorkloadsOptions = {}): Workloads {
  const ensureNamespace = async (name: string): Promise<void> => {
    try {
      await kube.create(KINDS.namespaces, { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
    }
    if (opts.waitForDefaultServiceAccount === true)
      await waitForState(
        kube,
        [KINDS.serviceaccounts],
        name,
        (v) => (v.get(KINDS.serviceaccounts, 'default') !== undefined ? true : undefined),
        30_000,
        () => `the ServiceAccount ${name}/default`,
      );
  };
  const upsert = async <T extends Deployment | Service>(rt: ResourceType, obj: T): Promise<void> => {
    try {
      await kube.create(rt, obj);
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
      // A merge patch of labels and spec: arrays (containers, ports) are replaced whole, as wanted.
      await kube.patch(rt, obj.metadata.namespace ?? 'default', obj.metadata.name ?? '', {
        metadata: { labels: obj.metadata.labels ?? null },
        spec: obj.spec,
      });
    }
  };
  return {
    ensureNamespace,
    async applyApp(app) {
      await ensureNamespace(app.namespace ?? 'default');
      // The Service first: the API server assigns clusterIP None on create, and a patch keeps it.
      await upsert(KINDS.services, headlessServiceManifest(app));
      await upsert(KINDS.deployments, deploymentManifest(app));
    },
    async scale(ns, name, replicas) {
      if (!Number.isInteger(replicas) || replicas < 0) {
        throw new InvalidOptionError('replicas', `must be a non-negative integer, got ${replicas}`);
      }
      try {
        await kube.patch(KINDS.deployments, ns, name, { spec: { replicas } });
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
        throw new GrpcKubeError('GK_ERR_LAB', `no Deployment ${ns}/${name} to scale; apply it first`, {
          cause: err,
        });
      }
    },
    async restartRollout(ns, name, stamp = new Date().toISOString()) {
      await kube.patch(KINDS.deployments, ns, name, {
        spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': stamp } } } },
      });
    },
    listPods: async (ns, labelSelector) =>
      (await kube.list<Pod>(KINDS.pods, { namespace: ns, ...(labelSelector ? { labelSelector } : {}) }))
        .items,
    waitForReadyPods(ns, selector, count, timeoutMs = opts.readyTimeoutMs ?? 20_000) {
      const ready = (v: WatchedObjects): Pod[] =>
        v
          .all<Pod>(KINDS.pods)
          .filter(
            (p) =>
              mapSelectorMatches(selector, p.metadata.labels) &&
              !p.metadata.deletionTimestamp &&
              isPodReady(p),
          );
      return waitForState(
        kube,
        [KINDS.pods],
        ns,
        (v) => {
          const pods = ready(v);
          return pods.length === count ? pods : undefined;
        },
        timeoutMs,
        (v) => `${count} ready pods matching ${JSON.stringify(selector)} in ${ns} (now ${ready(v).length})`,
      );
    },
    waitForRollout(ns, name, timeoutMs = opts.rolloutTimeoutMs ?? 30_000) {
      // The pods of an older template carry another pod-template-hash (whoever computes it).
      const templates = (v: WatchedObjects, d: Deployment): number =>
        new Set(
          v
            .all<Pod>(KINDS.pods)
            .filter((p) => mapSelectorMatches(d.spec.selector.matchLabels ?? {}, p.metadata.labels))
            .map((p) => p.metadata.labels?.[POD_TEMPLATE_HASH_LABEL]),
        ).size;
      return waitForState(
        kube,
        [KINDS.deployments, KINDS.pods],
        ns,
        (v) => {
          const d = v.get<Deployment>(KINDS.deployments, name);
          return d !== undefined && isRolloutComplete(d) && templates(v, d) <= 1 ? d : undefined;
        },
        timeoutMs,
        (v) => {
          const d = v.get<Deployment>(KINDS.deployments, name);
          const n = d === undefined ? 0 : templates(v, d);
          return `the rollout of ${ns}/${name} (status ${JSON.stringify(d?.status ?? null)}, pod templates ${n})`;
        },
      );
    },
  };
}

/** The objects of the watched kinds in one namespace, as their watches have delivered them. */
export interface WatchedObjects {
  get<T extends KubeObject>(rt: ResourceType, name: string): T | undefined;
  all<T extends KubeObject>(rt: ResourceType): T[];
}

/**
 * Watch-driven wait: resolves with the first value `check` returns, checked once the watches of
 * `rts` in `namespace` (undefined: cluster-scoped, or all namespaces) have synced and again after every burst of their events; rejects with
 * GK_ERR_LAB (naming `describe()`) after timeoutMs.
 */
export function waitForState<T>(
  kube: Kube,
  rts: readonly ResourceType[],
  namespace: string | undefined,
  check: (objects: WatchedObjects) => T | undefined,
  timeoutMs: number,
  describe: (objects: WatchedObjects) => string,
): Promise<T> {
  const byKind = new Map<ResourceType, Map<string, KubeObject>>(rts.map((rt) => [rt, new Map()]));
  const objects: WatchedObjects = {
    get: <O extends KubeObject>(rt: ResourceType, name: string) => byKind.get(rt)?.get(name) as O | undefined,
    all: <O extends KubeObject>(rt: ResourceType) => [...(byKind.get(rt)?.values() ?? [])] as O[],
  };
  return new Promise<T>((resolve, reject) => {
    const stops: Array<() => void> = [];
    const listed = new Set<ResourceType>();
    let done = false;
    let scheduled = false;
    const finish = (err: Error | undefined, value?: T): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      for (const s of stops) s();
      if (err) reject(err);
      else resolve(value as T);
    };
    const timer = setTimeout(
      () =>
        finish(
          new GrpcKubeError('GK_ERR_LAB', `timed out after ${timeoutMs} ms waiting for ${describe(objects)}`),
        ),
      timeoutMs,
    );
    // Not unref()ed: a caller is awaiting the wait (over the store nothing else may keep the process up).
    // Events come in bursts: check once per tick, after the burst, and only once every kind is
    // synced (before that an empty view could pass for "no pods left").
    const recheck = (): void => {
      if (scheduled || done || listed.size < rts.length) return;
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        if (done) return;
        try {
          const v = check(objects);
          if (v !== undefined) finish(undefined, v);
        } catch (err) {
          finish(err as Error);
        }
      });
    };
    for (const rt of rts) {
      const seen = byKind.get(rt) as Map<string, KubeObject>;
      stops.push(
        kube.watch(
          rt,
          namespace !== undefined ? { namespace } : {},
          (ev) => {
            const name = (ev.object as KubeObject).metadata?.name ?? '';
            if (ev.type === 'DELETED') seen.delete(name);
            else if (ev.type !== 'BOOKMARK' && ev.type !== 'ERROR') seen.set(name, ev.object as KubeObject);
            recheck();
          },
          {
            onSynced: () => {
              listed.add(rt);
              recheck();
            },
          },
        ),
      );
    }
  });
}
