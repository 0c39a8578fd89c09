// The bootstrap a proxyless gRPC client needs to reach our control plane (gRFC A27): one xDS server
// with insecure channel credentials (all @grpc/grpc-js-xds 1.14 offers for the control plane) and
// server_features ["xds_v3"], and a node with an id and a locality (grpc-js-xds requires one).
// Set it as GRPC_XDS_BOOTSTRAP_CONFIG (JSON text) before @grpc/grpc-js-xds is loaded.
// For gRFC A29 it also lists `certificate_providers`: file_watcher instances (the only plugin
// grpc-js-xds 1.14 knows) that the Clusters' UpstreamTlsContext names (resources.ts).

import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { isDnsLabel } from 'grpc-kube/internal/discovery/service-ref.js';
import { SERVER_LISTENER_TEMPLATE } from './resources.js';

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
  /** For an XdsServer (gRFC A36): add the server Listener name template our control plane answers. */
  readonly forXdsServer?: boolean;
  /** Certificate-provider instances by name (gRFC A29), re-read every `refreshIntervalMs`. */
  readonly certificateProviders?: Readonly<Record<string, FileWatcherProvider>>;
}

/** grpc-js-xds's file_watcher: a certificate and its key, a CA, or both. */
export interface FileWatcherProvider {
  readonly certificateFile?: string;
  readonly privateKeyFile?: string;
  readonly caCertificateFile?: string;
  /** Default 10 s. */
  readonly refreshIntervalMs?: number;
}

interface FileWatcherJson {
  plugin_name: 'file_watcher';
  config: {
    certificate_file?: string;
    private_key_file?: string;
    ca_certificate_file?: string;
    refresh_interval: string;
  };
}

function fileWatcher(name: string, p: FileWatcherProvider): FileWatcherJson {
  const field = `certificateProviders.${name}`;
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(name))
    throw new InvalidOptionError(
      'certificateProviders',
      `instance names are [A-Za-z0-9_.-]{1,128}, got "${name}"`,
    );
  for (const k of ['certificateFile', 'privateKeyFile', 'caCertificateFile'] as const)
    if (p[k] !== undefined && (typeof p[k] !== 'string' || p[k] === ''))
      throw new InvalidOptionError(`${field}.${k}`, 'must be a file path');
  // The same rules grpc-js-xds applies when it loads the bootstrap, said here with the field's name.
  if ((p.certificateFile === undefined) !== (p.privateKeyFile === undefined))
    throw new InvalidOptionError(field, 'certificateFile and privateKeyFile go together');
  if (p.certificateFile === undefined && p.caCertificateFile === undefined)
    throw new InvalidOptionError(
      field,
      'needs certificateFile and privateKeyFile, or caCertificateFile, or all three',
    );
  const refreshMs = p.refreshIntervalMs ?? 10_000;
  if (!Number.isInteger(refreshMs) || refreshMs < 1)
    throw new InvalidOptionError(
      `${field}.refreshIntervalMs`,
      `must be a whole number of ms >= 1, got ${refreshMs}`,
    );
  return {
    plugin_name: 'file_watcher',
    config: {
      ...(p.certificateFile !== undefined ? { certificate_file: p.certificateFile } : {}),
      ...(p.privateKeyFile !== undefined ? { private_key_file: p.privateKeyFile } : {}),
      ...(p.caCertificateFile !== undefined ? { ca_certificate_file: p.caCertificateFile } : {}),
      // A protobuf Duration in JSON: seconds with up to 9 decimals.
      refresh_interval: `${Math.floor(refreshMs / 1000)}${refreshMs % 1000 === 0 ? '' : `.${String(refreshMs % 1000).padStart(3, '0')}`}s`,
    },
  };
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
  certificate_providers?: Record<string, FileWatcherJson>;
  server_listener_resource_name_template?: string;
}

export function xdsBootstrap(opts: BootstrapOptions): XdsBootstrap {
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(opts.server))
    throw new InvalidOptionError('server', `must be host:port, got "${opts.server}"`);
  if (typeof opts.nodeId !== 'string' || opts.nodeId === '')
    throw new InvalidOptionError('nodeId', 'must be a non-empty string');
  if (opts.namespace !== undefined && !isDnsLabel(opts.namespace))
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
    ...(opts.forXdsServer === true
      ? { server_listener_resource_name_template: SERVER_LISTENER_TEMPLATE }
      : {}),
    ...(opts.certificateProviders !== undefined
      ? {
          certificate_providers: Object.fromEntries(
            Object.entries(opts.certificateProviders).map(([name, p]) => [name, fileWatcher(name, p)]),
          ),
        }
      : {}),
  };
}

/** The GRPC_XDS_BOOTSTRAP_CONFIG value. */
export function xdsBootstrapJson(opts: BootstrapOptions): string {
  return JSON.stringify(xdsBootstrap(opts));
}
