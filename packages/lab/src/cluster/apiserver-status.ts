// meta/v1 Status errors of the embedded API server, worded and shaped like kube-apiserver's
// (k8s.io/apimachinery/pkg/api/errors). The store throws them; the HTTP layer sends `status` as the body,
// so in-process callers and HTTP clients see the same message, reason and code.

import { KubeApiError, type ErrorCode } from 'grpc-kube/internal/errors.js';
import type { KubeStatus } from 'grpc-kube/internal/kube/types.js';
import type { ResourceType } from './store-api.js';

/** A KubeApiError that carries the exact Status object the API server answers with. */
export class KubeStatusError extends KubeApiError {
  readonly statusObject: KubeStatus;
  constructor(code: ErrorCode, statusObject: KubeStatus) {
    super(code, statusObject.message ?? '', statusObject.code, statusObject.reason);
    this.statusObject = statusObject;
    this.name = 'KubeStatusError';
  }
}

type Details = NonNullable<KubeStatus['details']>;

function failure(
  code: number,
  reason: string,
  message: string,
  details: Details | undefined,
  extra?: { continue?: string },
): KubeStatus {
  // Key order as kube-apiserver serialises a Status.
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: extra?.continue !== undefined ? { continue: extra.continue } : {},
    status: 'Failure',
    message,
    reason,
    ...(details !== undefined ? { details } : {}),
    code,
  };
}

/** `endpointslices.discovery.k8s.io`, or `pods` for the core group (schema.GroupResource.String()). */
export function qualifiedResource(rt: Pick<ResourceType, 'group' | 'resource'>): string {
  return rt.group === '' ? rt.resource : `${rt.resource}.${rt.group}`;
}

function resourceDetails(rt: Pick<ResourceType, 'group' | 'resource'>, name: string): Details {
  // Go's omitempty drops an empty group and an empty name.
  const d: Details = {};
  if (name !== '') d.name = name;
  if (rt.group !== '') d.group = rt.group;
  d.kind = rt.resource;
  return d;
}

export function notFound(rt: Pick<ResourceType, 'group' | 'resource'>, name: string): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_NOT_FOUND',
    failure(404, 'NotFound', `${qualifiedResource(rt)} "${name}" not found`, resourceDetails(rt, name)),
  );
}

export function alreadyExists(rt: ResourceType, name: string): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_CONFLICT',
    failure(
      409,
      'AlreadyExists',
      `${qualifiedResource(rt)} "${name}" already exists`,
      resourceDetails(rt, name),
    ),
  );
}

export function conflict(rt: ResourceType, name: string, why: string): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_CONFLICT',
    failure(
      409,
      'Conflict',
      `Operation cannot be fulfilled on ${qualifiedResource(rt)} "${name}": ${why}`,
      resourceDetails(rt, name),
    ),
  );
}

/** rest.BeforeDelete's precondition conflict: it names the Kind (not the resource) as the resource. */
export function preconditionConflict(rt: ResourceType, name: string, why: string): KubeStatusError {
  const kindResource = { group: rt.group, resource: rt.kind };
  return new KubeStatusError(
    'GK_ERR_KUBE_CONFLICT',
    failure(
      409,
      'Conflict',
      `Operation cannot be fulfilled on ${qualifiedResource(kindResource)} "${name}": ${why}`,
      resourceDetails(kindResource, name),
    ),
  );
}

export const STALE_OBJECT =
  'the object has been modified; please apply your changes to the latest version and try again';

export interface FieldCause {
  /** FieldValueRequired, FieldValueInvalid, FieldValueForbidden… */
  readonly reason: string;
  readonly field: string;
  /** The text after the field, e.g. `Required value: name or generateName is required`. */
  readonly message: string;
}

/** 422 Invalid, worded like errors.NewInvalid: `Pod "x" is invalid: metadata.name: Required value`. */
export function invalid(rt: ResourceType, name: string, causes: readonly FieldCause[]): KubeStatusError {
  const parts = causes.map((c) => `${c.field}: ${c.message}`);
  const joined = parts.length === 1 ? (parts[0] ?? '') : `[${parts.join(', ')}]`;
  const details: Details = {};
  if (name !== '') details.name = name;
  if (rt.group !== '') details.group = rt.group;
  details.kind = rt.kind;
  details.causes = causes.map((c) => ({ reason: c.reason, message: c.message, field: c.field }));
  return new KubeStatusError(
    'GK_ERR_KUBE_INVALID',
    failure(422, 'Invalid', `${rt.kind} "${name}" is invalid: ${joined}`, details),
  );
}

export function badRequest(message: string): KubeStatusError {
  return new KubeStatusError('GK_ERR_KUBE_INVALID', failure(400, 'BadRequest', message, undefined));
}

export function expired(message: string, continueToken?: string): KubeStatusError {
  const extra = continueToken !== undefined ? { continue: continueToken } : undefined;
  return new KubeStatusError('GK_ERR_KUBE_EXPIRED', failure(410, 'Expired', message, undefined, extra));
}

export function tooOldResourceVersion(requested: number, oldest: number): KubeStatusError {
  return expired(`too old resource version: ${requested} (${oldest})`);
}

export function unauthorized(): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_UNAUTHORIZED',
    failure(401, 'Unauthorized', 'Unauthorized', undefined),
  );
}

export interface AuthzAttributes {
  readonly user: string;
  readonly verb: string;
  readonly group: string;
  readonly resource: string;
  readonly subresource: string;
  readonly namespace: string;
  readonly name: string;
}

/** The RBAC denial text of kube-apiserver's responsewriters.forbiddenMessage + errors.NewForbidden. */
export function forbidden(a: AuthzAttributes): KubeStatusError {
  const res = a.subresource !== '' ? `${a.resource}/${a.subresource}` : a.resource;
  const scope = a.namespace !== '' ? `in the namespace "${a.namespace}"` : 'at the cluster scope';
  const why = `User "${a.user}" cannot ${a.verb} resource "${res}" in API group "${a.group}" ${scope}`;
  const qr = qualifiedResource(a);
  const message = a.name !== '' ? `${qr} "${a.name}" is forbidden: ${why}` : `${qr} is forbidden: ${why}`;
  return new KubeStatusError(
    'GK_ERR_KUBE_FORBIDDEN',
    failure(403, 'Forbidden', message, resourceDetails(a, a.name)),
  );
}

/** A non-resource path the identity may not read, e.g. `/api`. */
export function forbiddenPath(user: string, verb: string, path: string): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_FORBIDDEN',
    failure(403, 'Forbidden', `forbidden: User "${user}" cannot ${verb} path "${path}"`, {}),
  );
}

export function pathNotFound(): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_NOT_FOUND',
    failure(404, 'NotFound', 'the server could not find the requested resource', {}),
  );
}

export function methodNotAllowed(): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_INVALID',
    failure(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource', {}),
  );
}

export function unsupportedMediaType(contentType: string): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_INVALID',
    failure(
      415,
      'UnsupportedMediaType',
      `the body of the request was in an unknown format - accepted media types include: ` +
        `application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, ` +
        `application/strategic-merge-patch+json (got "${contentType}")`,
      undefined,
    ),
  );
}

export function requestTooLarge(limit: number): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_INVALID',
    failure(413, 'RequestEntityTooLarge', `Request entity too large: limit is ${limit}`, undefined),
  );
}

export function tooLargeResourceVersion(requested: number, current: number): KubeStatusError {
  const st = failure(504, 'Timeout', `Too large resource version: ${requested}, current: ${current}`, {
    causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
    retryAfterSeconds: 1,
  });
  return new KubeStatusError('GK_ERR_KUBE_UNREACHABLE', st);
}

export function internalError(message: string): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_UNREACHABLE',
    failure(500, 'InternalError', `Internal error occurred: ${message}`, { causes: [{ message }] }),
  );
}

export function serviceUnavailable(message: string): KubeStatusError {
  return new KubeStatusError(
    'GK_ERR_KUBE_UNREACHABLE',
    failure(503, 'ServiceUnavailable', message, undefined),
  );
}
