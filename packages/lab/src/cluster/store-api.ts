// The in-process contract of the embedded cluster's object store. The embedded API server serves it
// over real HTTP (list, watch, get, create, update, patch, delete); the embedded controllers and the lab
// use it directly. Semantics are the Kubernetes API's: one global, increasing resourceVersion; watch
// from a resourceVersion replays the retained history after it, or fails with 410 Expired when that
// history was compacted away; DELETED events carry the object's last state with a new resourceVersion.

import type { KubeObject, WatchEvent } from 'grpc-kube/internal/kube/types.js';

export interface ResourceType {
  /** '' for the core group. */
  readonly group: string;
  readonly version: string;
  /** Plural, lower case: 'endpointslices', 'pods'. */
  readonly resource: string;
  readonly kind: string;
  readonly listKind: string;
  readonly namespaced: boolean;
}

export const RESOURCES = {
  namespaces: {
    group: '',
    version: 'v1',
    resource: 'namespaces',
    kind: 'Namespace',
    listKind: 'NamespaceList',
    namespaced: false,
  },
  pods: { group: '', version: 'v1', resource: 'pods', kind: 'Pod', listKind: 'PodList', namespaced: true },
  services: {
    group: '',
    version: 'v1',
    resource: 'services',
    kind: 'Service',
    listKind: 'ServiceList',
    namespaced: true,
  },
  nodes: {
    group: '',
    version: 'v1',
    resource: 'nodes',
    kind: 'Node',
    listKind: 'NodeList',
    namespaced: false,
  },
  endpointslices: {
    group: 'discovery.k8s.io',
    version: 'v1',
    resource: 'endpointslices',
    kind: 'EndpointSlice',
    listKind: 'EndpointSliceList',
    namespaced: true,
  },
  deployments: {
    group: 'apps',
    version: 'v1',
    resource: 'deployments',
    kind: 'Deployment',
    listKind: 'DeploymentList',
    namespaced: true,
  },
  replicasets: {
    group: 'apps',
    version: 'v1',
    resource: 'replicasets',
    kind: 'ReplicaSet',
    listKind: 'ReplicaSetList',
    namespaced: true,
  },
  grpcroutes: {
    group: 'gateway.networking.k8s.io',
    version: 'v1',
    resource: 'grpcroutes',
    kind: 'GRPCRoute',
    listKind: 'GRPCRouteList',
    namespaced: true,
  },
  referencegrants: {
    group: 'gateway.networking.k8s.io',
    version: 'v1beta1',
    resource: 'referencegrants',
    kind: 'ReferenceGrant',
    listKind: 'ReferenceGrantList',
    namespaced: true,
  },
} as const satisfies Record<string, ResourceType>;

export interface ListResult<T extends KubeObject> {
  readonly items: T[];
  readonly resourceVersion: string;
}

export interface DeleteOptions {
  /** Pods only: 0 removes at once; otherwise deletionTimestamp is set and the object stays. */
  readonly gracePeriodSeconds?: number;
  /** Delete only if the stored object still has this uid (else 409 Conflict). */
  readonly preconditionUid?: string;
}

export interface WatchOptions {
  readonly namespace?: string;
  /** Label selector in the API's syntax: `a=b,c!=d,e,!f,g in (x,y)`. */
  readonly labelSelector?: string;
  /** Absent or '0': start with synthetic ADDED events for every current object. */
  readonly resourceVersion?: string;
}

/** Synchronous store; errors are thrown as KubeApiError with the HTTP status the API would answer. */
export interface ObjectStore {
  get<T extends KubeObject>(rt: ResourceType, namespace: string | undefined, name: string): T | undefined;
  list<T extends KubeObject>(
    rt: ResourceType,
    opts?: { namespace?: string; labelSelector?: string },
  ): ListResult<T>;
  /** Assigns uid, resourceVersion, creationTimestamp (and a name from generateName). 409 if it exists. */
  create<T extends KubeObject>(rt: ResourceType, obj: T): T;
  /** Replaces the object; 409 Conflict when metadata.resourceVersion is set and stale; 404 if absent. */
  update<T extends KubeObject>(rt: ResourceType, obj: T): T;
  delete<T extends KubeObject>(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    opts?: DeleteOptions,
  ): T | undefined;
  /** Events after opts.resourceVersion; returns the function that stops the watch. */
  watch<T extends KubeObject>(
    rt: ResourceType,
    opts: WatchOptions,
    onEvent: (event: WatchEvent<T>) => void,
  ): () => void;
  /** Current resourceVersion of the whole store. */
  readonly resourceVersion: string;
}
