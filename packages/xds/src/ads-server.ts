// The Aggregated Discovery Service (envoy.service.discovery.v3, state of the world) over grpc-js.
// Contract, per stream and per resource type: the first request (or one with an empty nonce)
// gets the current resources at once; a request naming new resources gets them at once; a request
// carrying the nonce of our last response is an ACK, or a NACK when it has error_detail (logged with
// the client's message; nothing is re-sent, so the client keeps its last good config until the next
// change); a request with an empty name list unsubscribes the type, and a later request with names
// re-subscribes and is answered immediately (the idle-channel bug of go-control-plane). Requests
// with an older nonce are superseded and never read as ACK/NACK. A cache change is pushed only to
// streams subscribed to a changed name. All streams share one SnapshotCache.
// DeltaAggregatedResources (incremental xDS, for clients that ask, e.g. Envoy) shares the cache, the
// demand counts and the ACK/NACK rules; it sends only resources whose per-resource version differs
// from what the client holds, and names deletions (and unknown Listeners/Clusters) as removed.
//
// Access, per node: a name is served only when its namespace is one the node may read (default:
// the node's own — from its mTLS certificate's SPIFFE URI SAN, else node metadata `namespace`, else
// a node id `<namespace>/<pod>`, else `default`) and the stream holds at most `maxNamesPerStream` names of the type. A refused name is
// not an error on the wire: it is left out of the subscription (no demand, so no watch and no API
// request), the client hears that it does not exist, and the refusal is logged once per stream and
// published as a 'refused' event (XdsRefusedError).

import * as grpc from '@grpc/grpc-js';
import { channel } from 'node:diagnostics_channel';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { SnapshotCache } from './cache.js';
import {
  adsServiceDefinition,
  allRequiredInSotw,
  CDS,
  EDS,
  isResourceTypeUrl,
  LDS,
  type DeltaDiscoveryRequest,
  type DeltaResponseFrame,
  type DiscoveryRequest,
  type DiscoveryResponseFrame,
  type ResourceTypeUrl,
} from './protos.js';
import { parseClusterName, parseListenerName, parseServerListenerName } from './resources.js';
import { TlsFiles, type TlsFilesOptions } from 'grpc-kube/internal/tls/files.js';
import { instruments, registerGauges, secondsSince } from 'grpc-kube/internal/metrics/instruments.js';
import { addCsdsService } from './csds.js';
import { DNS_LABEL } from 'grpc-kube/internal/discovery/service-ref.js';

export interface XdsNodeInfo {
  readonly id: string;
  readonly zone: string;
  readonly userAgent: string;
  /** The namespace the node belongs to, which it may read. */
  readonly namespace: string;
  /** Where `namespace` came from: its mTLS certificate, its node metadata or id, or neither. */
  readonly namespaceFrom: 'certificate' | 'metadata' | 'default';
}

/** Names refused to a node: outside the namespaces it may read, or over the cap per stream. */
export class XdsRefusedError extends GrpcKubeError {
  constructor(
    readonly node: string,
    readonly type: ResourceTypeUrl,
    readonly names: readonly string[],
    readonly reason: 'namespace' | 'cap',
    detail: string,
  ) {
    super(
      'GK_ERR_XDS_REFUSED',
      `node "${node}": ${names.length} ${shortType(type)} name(s) refused (${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''}): ${detail}`,
    );
    this.name = 'XdsRefusedError';
  }
}

/** Who may subscribe to what. */
export interface AdsAccessOptions {
  /**
   * Namespaces a node may read beyond its own, keyed by the node's namespace ('*': every node), or
   * 'all' to let every node read every namespace (a trusted network, or one process-wide client
   * as in the lab). Default: its own namespace only.
   */
  readonly allowNamespaces?: 'all' | Readonly<Record<string, readonly string[]>>;
  /**
   * Most names of one type one stream may hold. Default 100: a proxyless client holds one Listener
   * per target it dials, and each name may cost an EndpointSlice watch.
   */
  readonly maxNamesPerStream?: number;
}

export type AdsEvent =
  | { readonly kind: 'stream-open'; readonly stream: number; readonly peer: string }
  | { readonly kind: 'stream-close'; readonly stream: number; readonly node: XdsNodeInfo | undefined }
  | {
      readonly kind: 'request';
      readonly stream: number;
      readonly node: XdsNodeInfo | undefined;
      readonly type: ResourceTypeUrl;
      readonly names: readonly string[];
      readonly nonce: string;
      readonly version: string;
    }
  | {
      readonly kind: 'response';
      readonly stream: number;
      readonly type: ResourceTypeUrl;
      readonly version: string;
      readonly nonce: string;
      readonly names: readonly string[];
    }
  | {
      readonly kind: 'refused';
      readonly stream: number;
      readonly node: XdsNodeInfo | undefined;
      readonly error: XdsRefusedError;
    }
  | {
      readonly kind: 'ack';
      readonly stream: number;
      readonly node: XdsNodeInfo | undefined;
      readonly type: ResourceTypeUrl;
      readonly version: string;
    }
  | {
      readonly kind: 'nack';
      readonly stream: number;
      readonly node: XdsNodeInfo | undefined;
      readonly type: ResourceTypeUrl;
      /** The version the client rejected. */
      readonly version: string;
      /** The version the client still runs (its last ACKed). */
      readonly keptVersion: string;
      readonly error: string;
    };

/** diagnostics_channel carrying every AdsEvent. */
export const adsChannel = channel('grpc-kube:xds-ads');

export interface AdsServerOptions {
  readonly cache: SnapshotCache;
  /**
   * A resource name gained its first subscriber (true) or lost its last (false), across streams.
   * Called synchronously before the answer is built, so a demand-driven translator can fill the
   * cache and the very first response already carries the resource.
   */
  readonly onDemand?: (type: ResourceTypeUrl, name: string, wanted: boolean) => void;
  /** Where NACKs and protocol errors are logged; default: stderr. */
  readonly log?: (line: string) => void;
  readonly access?: AdsAccessOptions;
}

interface TypeSub {
  names: Set<string>;
  wildcard: boolean;
  seen: boolean;
  nonce: string;
  sentVersion: string;
  ackedVersion: string;
  /** performance.now() when the response with `nonce` was sent, for the push latency. */
  sentAtMs?: number;
  // What CSDS reports (gRFC A40): names in the response awaiting an answer (→ their version), names
  // the client ACKed (→ version and when), and the last NACK until the next ACK.
  pending: Map<string, string>;
  readonly acked: Map<string, { readonly version: string; readonly atMs: number }>;
  nack?: { readonly version: string; readonly message: string; readonly atMs: number };
}

/** One subscribed resource of one client as CSDS reports it. */
export interface XdsResourceStatus {
  readonly type: ResourceTypeUrl;
  readonly name: string;
  /** The version the client holds (ACKed), else the one sent to it, else ''. */
  readonly version: string;
  /** REQUESTED: asked for, not (yet) sent or not yet answered; ACKED; NACKED: the last response was. */
  readonly status: 'REQUESTED' | 'ACKED' | 'NACKED';
  /** SYNCED: holds what was last sent; NOT_SENT; STALE: a response awaits its answer; ERROR: NACKed. */
  readonly config: 'SYNCED' | 'NOT_SENT' | 'STALE' | 'ERROR';
  /** Date.now() of the last ACK of this name. */
  readonly ackedAtMs?: number;
  readonly nack?: { readonly version: string; readonly message: string; readonly atMs: number };
  /** The resource (google.protobuf.Any bytes) when the cache still holds the version the client has. */
  readonly resource?: Uint8Array;
}

/** One connected client (an ADS stream) as CSDS reports it. */
export interface XdsClientStatus {
  readonly stream: number;
  readonly node: XdsNodeInfo;
  readonly resources: readonly XdsResourceStatus[];
}

/** A type's subscription before its first request is read. */
function newTypeSub(): TypeSub {
  return {
    names: new Set(),
    wildcard: false,
    seen: false,
    nonce: '',
    sentVersion: '',
    ackedVersion: '',
    pending: new Map(),
    acked: new Map(),
  };
}

interface DeltaSub extends TypeSub {
  /** What the client holds: name → version (from initial_resource_versions, then what we sent). */
  readonly sent: Map<string, string>;
}

type AdsCall = grpc.ServerDuplexStream<DiscoveryRequest, DiscoveryResponseFrame>;
type DeltaCall = grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaResponseFrame>;

class AdsStream {
  node: XdsNodeInfo | undefined;
  /** Namespaces this stream's node may read (undefined: all), set with the node. */
  readable: ReadonlySet<string> | undefined;
  readonly subs = new Map<ResourceTypeUrl, TypeSub>();
  readonly deltaSubs = new Map<ResourceTypeUrl, DeltaSub>();
  /** Refusal kinds already logged on this stream (one line each, however many requests). */
  readonly logged = new Set<string>();
  closed = false;
  constructor(
    readonly id: number,
    readonly call: AdsCall | DeltaCall,
    readonly delta: boolean,
    /** The namespace in the peer's mTLS certificate (SPIFFE URI SAN), if any. */
    readonly certNamespace: string | undefined,
  ) {}
}

/** `spiffe://<trust domain>/ns/<namespace>/sa/<account>` in a certificate's subjectaltname. */
export function spiffeNamespace(subjectAltName: string | undefined): string | undefined {
  if (subjectAltName === undefined) return undefined;
  for (const part of subjectAltName.split(/,\s*/)) {
    const m = /^URI:spiffe:\/\/[^/]+\/ns\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/sa\/[^/]+$/.exec(part);
    if (m !== null) return m[1];
  }
  return undefined;
}

/** The namespace a resource name lives in (`svc.ns:port` for LDS/RDS, `ns/svc:port` for CDS/EDS). */
function nameNamespace(type: ResourceTypeUrl, name: string): string | undefined {
  return (type === CDS || type === EDS ? parseClusterName(name) : parseListenerName(name))?.namespace;
}

/** A string field of a google.protobuf.Struct as protobufjs decodes it. */
function structString(struct: unknown, key: string): string | undefined {
  const v = (struct as { fields?: Record<string, { stringValue?: unknown }> } | null | undefined)?.fields?.[
    key
  ]?.stringValue;
  return typeof v === 'string' && v !== '' ? v : undefined;
}

export class AdsServer {
  private readonly cache: SnapshotCache;
  private readonly onDemand: AdsServerOptions['onDemand'];
  private readonly log: (line: string) => void;
  private readonly streams = new Map<number, AdsStream>();
  private readonly demand = new Map<ResourceTypeUrl, Map<string, number>>();
  private readonly listeners = new Set<(e: AdsEvent) => void>();
  private readonly unlisten: () => void;
  private readonly unregisterGauges: () => void;
  private server: grpc.Server | undefined;
  private tls: TlsFiles | undefined;
  private nextStream = 1;
  private nextNonce = 1;
  private closed = false;
  private readonly allow: 'all' | ReadonlyMap<string, readonly string[]>;
  private readonly maxNames: number;
  readonly stats = { streams: 0, requests: 0, responses: 0, acks: 0, nacks: 0, stale: 0, refused: 0 };

  constructor(opts: AdsServerOptions) {
    this.cache = opts.cache;
    const allow = opts.access?.allowNamespaces ?? {};
    this.allow = allow === 'all' ? 'all' : new Map(Object.entries(allow));
    this.maxNames = opts.access?.maxNamesPerStream ?? 100;
    if (!Number.isInteger(this.maxNames) || this.maxNames < 1)
      throw new InvalidOptionError(
        'access.maxNamesPerStream',
        `must be an integer >= 1, got ${this.maxNames}`,
      );
    this.onDemand = opts.onDemand;
    this.log = opts.log ?? ((line) => process.stderr.write(`grpc-kube xds: ${line}\n`));
    this.unlisten = this.cache.onChange((type, changed) => this.push(type, changed));
    this.unregisterGauges = registerGauges((observe) => {
      observe('grpc_kube.xds.clients', this.streams.size, {});
      for (const stream of this.streams.values()) {
        for (const [type, sub] of [...stream.subs, ...stream.deltaSubs]) {
          const version = Number(sub.ackedVersion);
          if (sub.ackedVersion === '' || !Number.isFinite(version)) continue;
          observe('grpc_kube.xds.version', version, { 'xds.type': type, 'xds.node': stream.node?.id ?? '' });
        }
      }
    });
  }

  /** Streams currently open. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Names of `type` with at least one subscriber, and how many streams want each. */
  subscribed(type: ResourceTypeUrl): ReadonlyMap<string, number> {
    return this.demand.get(type) ?? new Map();
  }

  /** Node ids of the connected clients. */
  nodes(): XdsNodeInfo[] {
    return [...this.streams.values()].flatMap((s) => (s.node ? [s.node] : []));
  }

  /**
   * What each connected client asked for, was sent, and ACKed or NACKed, per resource — the
   * answer of CSDS (src/xds/csds.ts). Streams that have not said who they are yet are left out.
   */
  clientStatus(): XdsClientStatus[] {
    const out: XdsClientStatus[] = [];
    for (const stream of this.streams.values()) {
      if (stream.node === undefined) continue;
      const resources: XdsResourceStatus[] = [];
      for (const [type, sub] of [...stream.subs, ...stream.deltaSubs]) {
        const names = new Set(sub.names);
        if (sub.wildcard) for (const n of [...sub.acked.keys(), ...sub.pending.keys()]) names.add(n);
        for (const name of [...names].sort()) resources.push(this.resourceStatus(type, sub, name));
      }
      out.push({ stream: stream.id, node: stream.node, resources });
    }
    return out;
  }

  private resourceStatus(type: ResourceTypeUrl, sub: TypeSub, name: string): XdsResourceStatus {
    const acked = sub.acked.get(name);
    const pending = sub.pending.get(name);
    const base = { type, name, ...(acked !== undefined ? { ackedAtMs: acked.atMs } : {}) };
    let status: Omit<XdsResourceStatus, 'type' | 'name' | 'ackedAtMs' | 'resource'>;
    if (pending !== undefined && sub.nack !== undefined)
      status = { version: acked?.version ?? '', status: 'NACKED', config: 'ERROR', nack: sub.nack };
    else if (pending !== undefined)
      status = { version: acked?.version ?? pending, status: acked ? 'ACKED' : 'REQUESTED', config: 'STALE' };
    else if (acked !== undefined) status = { version: acked.version, status: 'ACKED', config: 'SYNCED' };
    else status = { version: '', status: 'REQUESTED', config: 'NOT_SENT' };
    // The cache's bytes are the ones the client holds while the resource has not changed since the
    // version it holds (a resource's version is the type's version when it last changed).
    const changedAt = Number(this.cache.resourceVersion(type, name) ?? NaN);
    const current =
      status.version !== '' && changedAt <= Number(status.version) ? this.cache.get(type, name) : undefined;
    return { ...base, ...status, ...(current !== undefined ? { resource: current } : {}) };
  }

  on(listener: (e: AdsEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Add the ADS service, and CSDS (src/xds/csds.ts) beside it, to a grpc-js server the caller owns. */
  addTo(server: grpc.Server): void {
    server.addService(adsServiceDefinition(), {
      StreamAggregatedResources: (call: AdsCall) => this.handle(call, false),
      DeltaAggregatedResources: (call: DeltaCall) => this.handle(call, true),
    });
    addCsdsService(server, () => this.clientStatus());
  }

  /**
   * Serve on `address` (host:port, port 0 picks one), over TLS when `tls` is given (mutual TLS with
   * its caFile; the files are re-read when they change); resolves with the bound port.
   */
  async listen(address: string, tls?: TlsFilesOptions): Promise<number> {
    if (this.closed) throw new Error('the ADS server was closed');
    let creds = grpc.ServerCredentials.createInsecure();
    if (tls !== undefined) {
      this.tls = await TlsFiles.load(tls, (err) =>
        this.log(`${err.message} (the previous files stay in use)`),
      );
      creds = this.tls.serverCredentials();
    }
    const server = new grpc.Server({ 'grpc.max_concurrent_streams': 100_000 });
    this.addTo(server);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(address, creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.server = server;
    return port;
  }

  /** The TLS files in use (undefined: plaintext). */
  get tlsFiles(): TlsFiles | undefined {
    return this.tls;
  }

  /** End every stream and stop serving. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unlisten();
    this.unregisterGauges();
    for (const s of [...this.streams.values()]) this.closeStream(s);
    const server = this.server;
    this.server = undefined;
    server?.forceShutdown();
    this.tls?.close();
  }

  private emit(e: AdsEvent): void {
    if (adsChannel.hasSubscribers) adsChannel.publish(e);
    for (const l of this.listeners) l(e);
  }

  private handle(call: AdsCall | DeltaCall, delta: boolean): void {
    if (this.closed) {
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'control plane shutting down' });
      return;
    }
    let certNamespace: string | undefined;
    try {
      certNamespace = spiffeNamespace(call.getAuthContext().sslPeerCertificate?.subjectaltname);
    } catch {
      // No TLS: no certificate identity.
    }
    const stream = new AdsStream(this.nextStream++, call, delta, certNamespace);
    this.streams.set(stream.id, stream);
    this.stats.streams++;
    this.emit({ kind: 'stream-open', stream: stream.id, peer: call.getPeer() });
    call.on('data', (req: DiscoveryRequest | DeltaDiscoveryRequest) => {
      try {
        if (delta) this.onDeltaRequest(stream, req as DeltaDiscoveryRequest);
        else this.onRequest(stream, req as DiscoveryRequest);
      } catch (err) {
        this.log(`stream ${stream.id}: request failed: ${String(err)}`);
      }
    });
    call.on('end', () => {
      this.closeStream(stream);
    });
    call.on('error', () => this.closeStream(stream));
    call.on('cancelled', () => this.closeStream(stream));
  }

  private closeStream(stream: AdsStream): void {
    if (stream.closed) return;
    stream.closed = true;
    this.streams.delete(stream.id);
    for (const [type, sub] of stream.subs) this.changeDemand(type, sub.names, new Set());
    for (const [type, sub] of stream.deltaSubs) this.changeDemand(type, sub.names, new Set());
    stream.subs.clear();
    stream.deltaSubs.clear();
    try {
      stream.call.end();
    } catch {
      // the transport may already be gone
    }
    this.emit({ kind: 'stream-close', stream: stream.id, node: stream.node });
  }

  private captureNode(stream: AdsStream, node: DiscoveryRequest['node']): void {
    if (stream.node !== undefined) return;
    // A certificate outranks what the node says about itself; without either, Kubernetes' default.
    // Metadata `namespace` (Istio: `NAMESPACE`), else a node id `<namespace>/<pod>` (deploy/xds).
    const claimed =
      structString(node?.metadata, 'namespace') ??
      structString(node?.metadata, 'NAMESPACE') ??
      /^([^/]+)\/[^/]+$/.exec(node?.id ?? '')?.[1];
    const fromMetadata = claimed !== undefined && DNS_LABEL.test(claimed) ? claimed : undefined;
    const namespace = stream.certNamespace ?? fromMetadata ?? 'default';
    stream.node = {
      id: node?.id ?? '',
      zone: node?.locality?.zone ?? '',
      userAgent: node?.user_agent_name ?? '',
      namespace,
      namespaceFrom:
        stream.certNamespace !== undefined
          ? 'certificate'
          : fromMetadata !== undefined
            ? 'metadata'
            : 'default',
    };
    if (this.allow === 'all') return;
    stream.readable = new Set([
      namespace,
      ...(this.allow.get(namespace) ?? []),
      ...(this.allow.get('*') ?? []),
    ]);
  }

  /** Whether the stream's node may read `name`. */
  private mayRead(stream: AdsStream, type: ResourceTypeUrl, name: string): boolean {
    if (stream.readable === undefined) return true;
    // A server Listener (gRFC A36) is named by the asking server's own address and holds no pod
    // address: any node may read it.
    if (type === LDS && parseServerListenerName(name) !== undefined) return true;
    const ns = nameNamespace(type, name);
    return ns !== undefined && stream.readable.has(ns);
  }

  /**
   * Split requested names into those the node may hold and those refused; names already held stay
   * first in line for the cap, so a re-sent list never loses what it had.
   */
  private admit(
    stream: AdsStream,
    type: ResourceTypeUrl,
    held: ReadonlySet<string>,
    requested: Iterable<string>,
  ): Set<string> {
    const out = new Set<string>();
    const outside: string[] = [];
    const over: string[] = [];
    const wanted = [...requested];
    const ordered = [...wanted.filter((n) => held.has(n)), ...wanted.filter((n) => !held.has(n))];
    for (const n of ordered) {
      if (out.has(n)) continue;
      if (!this.mayRead(stream, type, n)) outside.push(n);
      else if (out.size >= this.maxNames) over.push(n);
      else out.add(n);
    }
    const node = stream.node;
    const why = {
      namespace: `node namespace "${node?.namespace ?? '?'}" (from its ${node?.namespaceFrom ?? '?'}) may read only ${[...(stream.readable ?? [])].join(', ')}`,
      cap: `more than ${this.maxNames} names on one stream`,
    } as const;
    for (const [reason, names] of [
      ['namespace', outside],
      ['cap', over],
    ] as const) {
      if (names.length > 0)
        this.refuse(stream, new XdsRefusedError(node?.id ?? '?', type, names, reason, why[reason]));
    }
    return out;
  }

  private refuse(stream: AdsStream, error: XdsRefusedError): void {
    this.stats.refused += error.names.length;
    const key = `${error.type} ${error.reason}`;
    if (!stream.logged.has(key)) {
      stream.logged.add(key);
      this.log(`stream ${stream.id}: ${error.message} (logged once per stream)`);
    }
    this.emit({ kind: 'refused', stream: stream.id, node: stream.node, error });
  }

  /** ACK / NACK / stale bookkeeping shared by both protocol variants. */
  private readAck(
    stream: AdsStream,
    type: ResourceTypeUrl,
    sub: TypeSub,
    nonce: string,
    error: DiscoveryRequest['error_detail'],
    keptVersion: string,
  ): void {
    if (nonce === '') return;
    if (nonce !== sub.nonce) {
      // Answers an older response; a newer one is on its way to the client.
      this.stats.stale++;
    } else if (error !== null && (error.code ?? 0) !== 0) {
      this.stats.nacks++;
      this.recordAnswer('grpc_kube.xds.nacks', stream, type, sub);
      const message = error.message ?? '';
      sub.nack = { version: sub.sentVersion, message, atMs: Date.now() };
      this.log(
        `NACK from ${stream.node?.id ?? '?'} (stream ${stream.id}) for ${shortType(type)} version ` +
          `${sub.sentVersion}; the client keeps version ${keptVersion || '(none)'}: ${message}`,
      );
      this.emit({
        kind: 'nack',
        stream: stream.id,
        node: stream.node,
        type,
        version: sub.sentVersion,
        keptVersion,
        error: message,
      });
    } else {
      this.stats.acks++;
      this.recordAnswer('grpc_kube.xds.acks', stream, type, sub);
      sub.ackedVersion = sub.sentVersion;
      const atMs = Date.now();
      // State of the world: the ACKed response is all the client holds of the type.
      if (!stream.delta) sub.acked.clear();
      for (const [n, v] of sub.pending) sub.acked.set(n, { version: v, atMs });
      sub.pending = new Map();
      sub.nack = undefined;
      this.emit({ kind: 'ack', stream: stream.id, node: stream.node, type, version: sub.sentVersion });
    }
  }

  private recordAnswer(
    name: 'grpc_kube.xds.acks' | 'grpc_kube.xds.nacks',
    stream: AdsStream,
    type: ResourceTypeUrl,
    sub: TypeSub,
  ): void {
    const m = instruments();
    if (m === undefined) return;
    m[name].add(1, { 'xds.type': type, 'xds.node': stream.node?.id ?? '' });
    if (sub.sentAtMs !== undefined)
      m['grpc_kube.xds.push.duration'].record(secondsSince(sub.sentAtMs), { 'xds.type': type });
  }

  private onRequest(stream: AdsStream, req: DiscoveryRequest): void {
    if (stream.closed) return;
    this.stats.requests++;
    this.captureNode(stream, req.node);
    const type = req.type_url;
    if (!isResourceTypeUrl(type)) {
      this.log(`stream ${stream.id} (${stream.node?.id ?? '?'}): ignoring unknown type_url "${type}"`);
      return;
    }
    this.emit({
      kind: 'request',
      stream: stream.id,
      node: stream.node,
      type,
      names: req.resource_names,
      nonce: req.response_nonce,
      version: req.version_info,
    });
    let sub = stream.subs.get(type);
    if (sub === undefined) stream.subs.set(type, (sub = newTypeSub()));

    this.readAck(stream, type, sub, req.response_nonce, req.error_detail, req.version_info);

    const first = !sub.seen;
    sub.seen = true;
    const names = this.admit(
      stream,
      type,
      sub.names,
      req.resource_names.filter((n) => n !== '*'),
    );
    const wasWildcard = sub.wildcard;
    // An empty list is a wildcard subscription (LDS/CDS); one whose names were all refused is not.
    sub.wildcard =
      req.resource_names.includes('*') ||
      (req.resource_names.length === 0 && allRequiredInSotw(type) && (first || wasWildcard));
    let added = false;
    for (const n of names) if (!sub.names.has(n)) added = true;
    // Demand first, so a translator can fill the cache before we answer from it.
    this.changeDemand(type, sub.names, names);
    sub.names = names;

    const initial = first || req.response_nonce === '';
    const wants = sub.wildcard || sub.names.size > 0;
    if (wants && (initial || added || (sub.wildcard && !wasWildcard))) this.send(stream, type, sub);
  }

  private changeDemand(type: ResourceTypeUrl, before: ReadonlySet<string>, after: ReadonlySet<string>): void {
    let counts = this.demand.get(type);
    if (counts === undefined) {
      counts = new Map();
      this.demand.set(type, counts);
    }
    for (const n of after) {
      if (before.has(n)) continue;
      const c = (counts.get(n) ?? 0) + 1;
      counts.set(n, c);
      if (c === 1) this.onDemand?.(type, n, true);
    }
    for (const n of before) {
      if (after.has(n)) continue;
      const c = (counts.get(n) ?? 1) - 1;
      if (c <= 0) {
        counts.delete(n);
        this.onDemand?.(type, n, false);
      } else counts.set(n, c);
    }
  }

  private push(type: ResourceTypeUrl, changed: ReadonlySet<string>): void {
    for (const stream of this.streams.values()) {
      if (stream.delta) {
        const dsub = stream.deltaSubs.get(type);
        if (dsub !== undefined) this.sendDelta(stream, type, dsub, changed);
        continue;
      }
      const sub = stream.subs.get(type);
      if (sub === undefined) continue;
      let hit = sub.wildcard;
      if (!hit) {
        for (const n of changed) {
          if (sub.names.has(n)) {
            hit = true;
            break;
          }
        }
      }
      if (hit) this.send(stream, type, sub);
    }
  }

  private send(stream: AdsStream, type: ResourceTypeUrl, sub: TypeSub): void {
    if (stream.closed) return;
    const names = sub.wildcard
      ? this.cache.names(type).filter((n) => this.mayRead(stream, type, n))
      : [...sub.names].filter((n) => this.cache.has(type, n));
    // RDS/EDS: absence means "not yet", so there is nothing to say until one exists. LDS/CDS: the
    // answer lists everything, and a missing name tells the client the resource does not exist.
    if (names.length === 0 && !allRequiredInSotw(type)) return;
    const resources: Uint8Array[] = [];
    for (const n of names) {
      const r = this.cache.get(type, n);
      if (r !== undefined) resources.push(r);
    }
    const version = this.cache.version(type);
    const nonce = String(this.nextNonce++);
    sub.nonce = nonce;
    sub.sentVersion = version;
    sub.sentAtMs = performance.now();
    sub.pending = new Map(names.map((n) => [n, version]));
    this.stats.responses++;
    (stream.call as AdsCall).write({ version_info: version, type_url: type, nonce, resources });
    this.emit({ kind: 'response', stream: stream.id, type, version, nonce, names });
  }

  // Incremental xDS: the client names what it adds and drops; we send only resources whose version
  // differs from what it holds, and name deletions in removed_resources.
  private onDeltaRequest(stream: AdsStream, req: DeltaDiscoveryRequest): void {
    if (stream.closed) return;
    this.stats.requests++;
    this.captureNode(stream, req.node);
    const type = req.type_url;
    if (!isResourceTypeUrl(type)) {
      this.log(`delta stream ${stream.id} (${stream.node?.id ?? '?'}): ignoring unknown type_url "${type}"`);
      return;
    }
    this.emit({
      kind: 'request',
      stream: stream.id,
      node: stream.node,
      type,
      names: req.resource_names_subscribe,
      nonce: req.response_nonce,
      version: '',
    });
    let sub = stream.deltaSubs.get(type);
    if (sub === undefined) stream.deltaSubs.set(type, (sub = { ...newTypeSub(), sent: new Map() }));
    this.readAck(stream, type, sub, req.response_nonce, req.error_detail, sub.ackedVersion);
    const first = !sub.seen;
    sub.seen = true;
    if (first) for (const [n, v] of Object.entries(req.initial_resource_versions)) sub.sent.set(n, v);
    const names = new Set(sub.names);
    const fresh = new Set<string>();
    let wildcardOn = false;
    const admitted = this.admit(stream, type, names, [
      ...names,
      ...req.resource_names_subscribe.filter((n) => n !== '*'),
    ]);
    for (const n of req.resource_names_subscribe) {
      if (n === '*') {
        wildcardOn = !sub.wildcard;
        sub.wildcard = true;
      } else if (!names.has(n) && admitted.has(n)) {
        names.add(n);
        fresh.add(n);
      }
    }
    if (first && req.resource_names_subscribe.length === 0 && allRequiredInSotw(type)) {
      wildcardOn = true;
      sub.wildcard = true;
    }
    for (const n of req.resource_names_unsubscribe) {
      if (n === '*') sub.wildcard = false;
      else {
        names.delete(n);
        sub.sent.delete(n);
        sub.acked.delete(n);
      }
    }
    this.changeDemand(type, sub.names, names);
    sub.names = names;
    const candidates = wildcardOn ? new Set([...this.cache.names(type), ...names]) : fresh;
    // A refused Listener/Cluster does not exist for this node: say so, as for any unknown one.
    const refused = allRequiredInSotw(type)
      ? req.resource_names_subscribe.filter((n) => n !== '*' && !admitted.has(n))
      : [];
    if (candidates.size > 0 || refused.length > 0)
      this.sendDelta(stream, type, sub, candidates, fresh, refused);
  }

  private sendDelta(
    stream: AdsStream,
    type: ResourceTypeUrl,
    sub: DeltaSub,
    candidates: ReadonlySet<string>,
    fresh: ReadonlySet<string> = new Set(),
    refused: readonly string[] = [],
  ): void {
    if (stream.closed) return;
    const resources: Array<{ name: string; version: string; any: Uint8Array }> = [];
    const removed: string[] = [...refused];
    for (const name of candidates) {
      if (!sub.wildcard && !sub.names.has(name)) continue;
      if (sub.wildcard && !sub.names.has(name) && !this.mayRead(stream, type, name)) continue;
      const bytes = this.cache.get(type, name);
      const version = this.cache.resourceVersion(type, name);
      if (bytes !== undefined && version !== undefined) {
        if (sub.sent.get(name) === version) continue;
        resources.push({ name, version, any: bytes });
        sub.sent.set(name, version);
      } else if (sub.sent.has(name) || (fresh.has(name) && allRequiredInSotw(type))) {
        // Deleted, or a Listener/Cluster asked for that does not exist: say so.
        removed.push(name);
        sub.sent.delete(name);
      }
    }
    if (resources.length === 0 && removed.length === 0) return;
    const version = this.cache.version(type);
    const nonce = String(this.nextNonce++);
    sub.nonce = nonce;
    sub.sentVersion = version;
    sub.sentAtMs = performance.now();
    sub.pending = new Map(resources.map((r) => [r.name, r.version]));
    for (const n of removed) sub.acked.delete(n);
    this.stats.responses++;
    (stream.call as DeltaCall).write({
      system_version_info: version,
      type_url: type,
      nonce,
      resources,
      removed_resources: removed,
    });
    this.emit({
      kind: 'response',
      stream: stream.id,
      type,
      version,
      nonce,
      names: resources.map((r) => r.name),
    });
  }
}

function shortType(type: string): string {
  return type.slice(type.lastIndexOf('.') + 1);
}
