// The subset of Kubernetes object shapes grpc-kube reads and writes. Field names and optionality follow
// the API exactly (discovery.k8s.io/v1, core/v1, apps/v1, meta/v1), so objects round-trip unchanged
// between the embedded API server, the real kube-apiserver and the discovery source.

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  finalizers?: string[];
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ListMeta {
  resourceVersion?: string;
  continue?: string;
  remainingItemCount?: number;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export interface KubeList<T extends KubeObject> {
  apiVersion: string;
  kind: string;
  metadata: ListMeta;
  items: T[];
}

/** meta/v1 Status, the body of every API error and of watch ERROR events. */
export interface KubeStatus {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: ListMeta;
  status: 'Success' | 'Failure';
  message?: string;
  reason?: string;
  details?: {
    name?: string;
    group?: string;
    kind?: string;
    causes?: Array<{ reason?: string; message?: string; field?: string }>;
    retryAfterSeconds?: number;
  };
  code: number;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchEvent<T extends KubeObject = KubeObject> {
  type: WatchEventType;
  object: T | KubeStatus;
}

// discovery.k8s.io/v1

export interface EndpointConditions {
  /** null or absent means ready (API convention for unknown state). */
  ready?: boolean | null;
  serving?: boolean | null;
  terminating?: boolean | null;
}

export interface EndpointHints {
  forZones?: Array<{ name: string }>;
  forNodes?: Array<{ name: string }>;
}

export interface SliceEndpoint {
  addresses: string[];
  conditions?: EndpointConditions;
  hostname?: string;
  targetRef?: { kind?: string; namespace?: string; name?: string; uid?: string };
  nodeName?: string;
  zone?: string;
  hints?: EndpointHints;
}

export interface EndpointPort {
  name?: string | null;
  protocol?: string;
  port?: number | null;
  appProtocol?: string;
}

export interface EndpointSlice extends KubeObject {
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints: SliceEndpoint[] | null;
  ports?: EndpointPort[] | null;
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
