// The bootstrap a proxyless gRPC client needs to reach our control plane (gRFC A27): one xDS server
// with insecure channel credentials (all @grpc/grpc-js-xds 1.14 offers for the control plane) and
// server_features ["xds_v3"], and a node with an id and a locality (grpc-js-xds requires one).
// Set it as GRPC_XDS_BOOTSTRAP_CONFIG (JSON text) before @grpc/grpc-js-xds is loaded.

import { InvalidOptionError } from 'grpc-kube/internal/errors.js';

export interface BootstrapOptions {
  /** host:port of the control plane's ADS endpoint. */
  readonly server: string;
  readonly nodeId: string;
  readonly zone?: string;
  readonly region?: string;
  /** Node cluster (free-form; envoy requires one). */
  readonly cluster?: string;
  /**
   * The client's namespace, sent as node metadata `namespace`: the control plane serves a node its
   * own namespace only (unless the node's mTLS certificate names another). Default: none (`default`).
   */
  readonly namespace?: string;
}

export interface XdsBootstrap {
  xds_servers: Array<{
    server_uri: string;
    channel_creds: Array<{ type: string }>;
    server_features: string[];
  }>;
  node: {
    id: string;
    cluster: string;
    locality: { region?: string; zone: string };
    metadata?: { namespace: string };
  };
}

export function xdsBootstrap(opts: BootstrapOptions): XdsBootstrap {
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(opts.server))
    throw new InvalidOptionError('server', `must be host:port, got "${opts.server}"`);
  if (typeof opts.nodeId !== 'string' || opts.nodeId === '')
    throw new InvalidOptionError('nodeId', 'must be a non-empty string');
  if (opts.namespace !== undefined && !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(opts.namespace))
    throw new InvalidOptionError('namespace', `must be a Kubernetes namespace name, got "${opts.namespace}"`);
  return {
    xds_servers: [
      { server_uri: opts.server, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] },
    ],
    node: {
      id: opts.nodeId,
      cluster: opts.cluster ?? 'grpc-kube',
      locality: { ...(opts.region ? { region: opts.region } : {}), zone: opts.zone ?? '' },
      ...(opts.namespace !== undefined ? { metadata: { namespace: opts.namespace } } : {}),
    },
  };
}

/** The GRPC_XDS_BOOTSTRAP_CONFIG value. */
export function xdsBootstrapJson(opts: BootstrapOptions): string {
  return JSON.stringify(xdsBootstrap(opts));
}
