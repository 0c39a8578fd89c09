// CSDS, the Client Status Discovery Service (envoy.service.status.v3, the service gRFC A40 names),
// served by the control plane on the gRPC server that serves ADS: for each connected client, every
// resource it subscribed by type, the version it holds or was sent, and whether it ACKed or NACKed
// it (with the NACK's error_detail), as GenericXdsConfig entries. The control plane answers for its
// clients, as Istio's does: one ClientConfig per ADS stream (a node with two streams appears twice).
//
// ClientStatusRequest.node_matchers select nodes by node id (exact, prefix, suffix, contains, with
// ignore_case); any matcher matching is enough, none means every node. Regex and metadata matchers
// are refused with UNIMPLEMENTED rather than run (a regex from the network could be made slow).

import * as grpc from '@grpc/grpc-js';
import type { XdsClientStatus, XdsResourceStatus } from './ads-server.js';
import { decodeMessage, encodeMessage } from './protos.js';

export const CSDS_SERVICE = 'envoy.service.status.v3.ClientStatusDiscoveryService';
const REQUEST = 'envoy.service.status.v3.ClientStatusRequest';
const RESPONSE = 'envoy.service.status.v3.ClientStatusResponse';
const ANY = 'google.protobuf.Any';

interface StringMatcher {
  exact?: string;
  prefix?: string;
  suffix?: string;
  contains?: string;
  safe_regex?: unknown;
  ignore_case?: boolean;
}

export interface ClientStatusRequest {
  node_matchers?: Array<{ node_id?: StringMatcher; node_metadatas?: unknown[] }>;
  exclude_resource_contents?: boolean;
}

/** A request CSDS does not serve, with the gRPC status to answer it with. */
export class CsdsRequestError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
    this.name = 'CsdsRequestError';
  }
}

type NodeFilter = (id: string) => boolean;

function matcher(m: StringMatcher | undefined, i: number): NodeFilter {
  if (m === undefined) return () => true;
  if (m.safe_regex !== undefined)
    throw new CsdsRequestError(
      grpc.status.UNIMPLEMENTED,
      `node_matchers[${i}].node_id.safe_regex is not supported; use exact, prefix, suffix or contains`,
    );
  const fold = m.ignore_case === true ? (s: string) => s.toLowerCase() : (s: string) => s;
  if (m.exact !== undefined) {
    const v = fold(m.exact);
    return (id) => fold(id) === v;
  }
  if (m.prefix !== undefined) {
    const v = fold(m.prefix);
    return (id) => fold(id).startsWith(v);
  }
  if (m.suffix !== undefined) {
    const v = fold(m.suffix);
    return (id) => fold(id).endsWith(v);
  }
  if (m.contains !== undefined) {
    const v = fold(m.contains);
    return (id) => fold(id).includes(v);
  }
  return () => true;
}

/** Which node ids a request selects. */
export function nodeFilter(req: ClientStatusRequest): NodeFilter {
  const matchers = req.node_matchers ?? [];
  if (matchers.length === 0) return () => true;
  const filters = matchers.map((m, i) => {
    if ((m.node_metadatas ?? []).length > 0)
      throw new CsdsRequestError(
        grpc.status.UNIMPLEMENTED,
        `node_matchers[${i}].node_metadatas is not supported; match by node_id`,
      );
    return matcher(m.node_id, i);
  });
  return (id) => filters.some((f) => f(id));
}

function timestamp(ms: number): { seconds: number; nanos: number } {
  return { seconds: Math.floor(ms / 1000), nanos: Math.round((ms % 1000) * 1e6) };
}

function genericConfig(r: XdsResourceStatus, withContents: boolean): Record<string, unknown> {
  return {
    type_url: r.type,
    name: r.name,
    version_info: r.version,
    config_status: r.config,
    client_status: r.status,
    ...(r.ackedAtMs !== undefined ? { last_updated: timestamp(r.ackedAtMs) } : {}),
    ...(r.nack !== undefined
      ? {
          error_state: {
            details: r.nack.message,
            version_info: r.nack.version,
            last_update_attempt: timestamp(r.nack.atMs),
          },
        }
      : {}),
    ...(withContents && r.resource !== undefined ? { xds_config: decodeMessage(ANY, r.resource) } : {}),
  };
}

/** The ClientStatusResponse (as a plain snake_case object) for `req` over the clients' status. */
export function clientStatusResponse(
  clients: readonly XdsClientStatus[],
  req: ClientStatusRequest,
): Record<string, unknown> {
  const selects = nodeFilter(req);
  const withContents = req.exclude_resource_contents !== true;
  return {
    config: clients
      .filter((c) => selects(c.node.id))
      .map((c) => ({
        node: {
          id: c.node.id,
          user_agent_name: c.node.userAgent,
          ...(c.node.zone !== '' ? { locality: { zone: c.node.zone } } : {}),
        },
        generic_xds_configs: c.resources.map((r) => genericConfig(r, withContents)),
      })),
  };
}

const serializeResponse = (r: Record<string, unknown>): Buffer => Buffer.from(encodeMessage(RESPONSE, r));
const deserializeRequest = (b: Buffer): ClientStatusRequest =>
  decodeMessage(REQUEST, b) as ClientStatusRequest;

/** Both sides of the CSDS service; the client side (tests, `xds status`) decodes responses. */
export function csdsServiceDefinition(): grpc.ServiceDefinition {
  const common = {
    requestSerialize: (r: ClientStatusRequest): Buffer =>
      Buffer.from(encodeMessage(REQUEST, r as Record<string, unknown>)),
    requestDeserialize: deserializeRequest,
    responseSerialize: serializeResponse,
    responseDeserialize: (b: Buffer): Record<string, unknown> => decodeMessage(RESPONSE, b),
  };
  return {
    FetchClientStatus: {
      path: `/${CSDS_SERVICE}/FetchClientStatus`,
      requestStream: false,
      responseStream: false,
      ...common,
    },
    StreamClientStatus: {
      path: `/${CSDS_SERVICE}/StreamClientStatus`,
      requestStream: true,
      responseStream: true,
      ...common,
    },
  } as unknown as grpc.ServiceDefinition;
}

function answer(
  status: () => readonly XdsClientStatus[],
  req: ClientStatusRequest,
): { ok: Record<string, unknown> } | { error: grpc.StatusObject } {
  try {
    return { ok: clientStatusResponse(status(), req) };
  } catch (err) {
    const code = err instanceof CsdsRequestError ? err.code : grpc.status.INTERNAL;
    return { error: { code, details: String((err as Error).message), metadata: new grpc.Metadata() } };
  }
}

/** Add CSDS to a grpc-js server, answering from `status` (AdsServer.clientStatus) at each request. */
export function addCsdsService(server: grpc.Server, status: () => readonly XdsClientStatus[]): void {
  server.addService(csdsServiceDefinition(), {
    FetchClientStatus: (
      call: grpc.ServerUnaryCall<ClientStatusRequest, Record<string, unknown>>,
      cb: grpc.sendUnaryData<Record<string, unknown>>,
    ) => {
      const r = answer(status, call.request);
      if ('ok' in r) cb(null, r.ok);
      else cb(r.error);
    },
    StreamClientStatus: (call: grpc.ServerDuplexStream<ClientStatusRequest, Record<string, unknown>>) => {
      call.on('data', (req: ClientStatusRequest) => {
        const r = answer(status, req);
        if ('ok' in r) call.write(r.ok);
        else call.emit('error', r.error);
      });
      call.on('end', () => call.end());
      call.on('error', () => {});
    },
  });
}
