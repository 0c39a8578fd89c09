// The error catalogue: every error a user can meet has a class here, a stable `code`, and a message
// that says what to do. Callers branch on `code`, never on message text. docs/errors.md lists them
// all; test/errors.test.ts fails when one is undocumented.

export const ERROR_CODES = {
  GK_ERR_INVALID_TARGET: 'A dial target could not be parsed (kubernetes:, dns-poll:).',
  GK_ERR_INVALID_OPTION: 'An option, a channel argument or a config field has a bad value.',
  GK_ERR_KUBE_CONFIG: 'No usable Kubernetes configuration (no in-cluster token, no kubeconfig).',
  GK_ERR_KUBE_UNAUTHORIZED: 'The Kubernetes API rejected the credentials (HTTP 401).',
  GK_ERR_KUBE_FORBIDDEN: 'The identity lacks an RBAC permission (HTTP 403); the message names the verb.',
  GK_ERR_KUBE_NOT_FOUND: 'The Kubernetes API has no such resource (HTTP 404).',
  GK_ERR_KUBE_CONFLICT:
    'The object already exists or changed since it was read (HTTP 409); re-read and retry.',
  GK_ERR_KUBE_INVALID:
    'The Kubernetes API rejected the request as malformed or invalid (HTTP 400, 415, 422).',
  GK_ERR_KUBE_EXPIRED:
    'The resourceVersion is older than the retained history (HTTP 410 Expired); list again.',
  GK_ERR_KUBE_UNREACHABLE: 'The Kubernetes API could not be reached or answered with a server error.',
  GK_ERR_KUBE_PROTOCOL: 'The Kubernetes API sent something that is not a valid list or watch event.',
  GK_ERR_KUBE_TOO_LARGE: 'A watch line or a list body exceeded its size bound; it was dropped and re-read.',
  GK_ERR_KUBE_TIMEOUT: 'A list or watch got no complete answer within its time-out; it is retried.',
  GK_ERR_KUBE_WATCH_LIMIT:
    'The HTTP/1.1 watch limit (one socket per watch) is reached; the Service is not watched until one frees.',
  GK_ERR_KUBECONFIG_NOT_FOUND:
    'The kubeconfig file (--kubeconfig, KUBECONFIG) does not exist or cannot be read.',
  GK_ERR_KUBE_CONTEXT_NOT_FOUND: 'The kubeconfig has no context of the name given (--context).',
  GK_ERR_PORT_NOT_FOUND: 'The Service has endpoints, but none on the port named in the target.',
  GK_ERR_NO_ENDPOINTS: 'The Service has no EndpointSlices (wrong name or namespace, or no pods).',
  GK_ERR_DNS: 'A DNS lookup for a dns-poll: target failed.',
  GK_ERR_INVALID_SCENARIO: 'A lab scenario file does not match the scenario schema.',
  GK_ERR_LAB: 'The lab could not start or run a part of its cluster.',
  GK_ERR_LAB_MANIFESTS:
    'lab --manifests: an overlay of deploy/ cannot run (none for the strategy, a container crash-looping or denied by the API).',
  GK_ERR_LAB_CANARY_WEIGHTS:
    "canary-shift: the share of a strategy's RPCs the canary's pods served did not follow the route's weights.",
  GK_ERR_LAB_DNS_RESOLVER:
    "A lab strategy dials a dns: target through the lab's DNS server, but grpc-js was loaded without GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true.",
  GK_ERR_LAB_IMAGE:
    "A lab pod's container image has no entry in the lab kubelet's image map; the container waits in ImagePullBackOff.",
  GK_ERR_LAB_POD_SPEC:
    'A lab pod spec asks for something the lab kubelet does not run (an env source, a fieldPath, a port name).',
  GK_ERR_INVALID_ASSERTION:
    'A `grpc-kube lab --assert` is malformed or names an unknown scenario, strategy or figure.',
  GK_ERR_DESTROYED: 'An object was used after destroy() or close().',
  GK_ERR_INVALID_ROUTE: 'A GRPCRoute is invalid; the error names the route and the field. It is not applied.',
  GK_ERR_PROXY_DATA_PLANE:
    'The nghttpx data plane is missing, did not start, refused a backend update, or died (the proxy exits 1).',
  GK_ERR_PROXY_WORKER: 'A `grpc-kube proxy --workers` worker exited before it could listen.',
  GK_ERR_XDS_REFUSED:
    'The xDS control plane refused resource names to a node: outside its namespaces, or over the cap per stream.',
  GK_ERR_TLS: 'A certificate, key or CA file is missing, unreadable, or does not form a usable TLS identity.',
  GK_ERR_TLS_PEER_NAME:
    "A backend's TLS certificate chains to the CA but does not name the backend (its address, Service DNS name or the configured server name).",
  GK_ERR_MISSING_PACKAGE: 'A feature needs an optional package that is not installed; the message names it.',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class GrpcKubeError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'GrpcKubeError';
  }
}

/** An optional package (peer dependency) `feature` needs is not installed. */
export function missingPackage(pkg: string, feature: string, cause: unknown): GrpcKubeError {
  return new GrpcKubeError('GK_ERR_MISSING_PACKAGE', `${feature} needs ${pkg}: npm install ${pkg}`, {
    cause,
  });
}

export class InvalidTargetError extends GrpcKubeError {
  constructor(target: string, why: string) {
    super(
      'GK_ERR_INVALID_TARGET',
      `invalid target "${target}": ${why}. Use kubernetes:///service.namespace:port, ` +
        `kubernetes:///service.namespace:portname or kubernetes://namespace/service:port`,
    );
    this.name = 'InvalidTargetError';
  }
}

export class InvalidOptionError extends GrpcKubeError {
  readonly field: string;
  constructor(field: string, why: string) {
    super('GK_ERR_INVALID_OPTION', `option "${field}" ${why}`);
    this.field = field;
    this.name = 'InvalidOptionError';
  }
}

/** An error answered by the Kubernetes API, or the lack of an answer. */
export class KubeApiError extends GrpcKubeError {
  /** HTTP status, or 0 when no answer came (connection refused, reset, timeout). */
  readonly status: number;
  /** Kubernetes Status.reason when the server sent one (Forbidden, NotFound, Expired…). */
  readonly reason: string | undefined;
  constructor(
    code: ErrorCode,
    message: string,
    status: number,
    reason: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.status = status;
    this.reason = reason;
    this.name = 'KubeApiError';
  }
}

export function isGrpcKubeError(err: unknown): err is GrpcKubeError {
  return err instanceof GrpcKubeError;
}
