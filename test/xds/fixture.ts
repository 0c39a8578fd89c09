// Shared set-up of the xDS tests: an embedded API server, real echo servers on 127.0.0.x sharing one
// port (an EDS cluster is one Service port), our control plane, and @grpc/grpc-js-xds registered in
// this process with a bootstrap pointing at it (set before the module loads, as it reads it once).

import * as grpc from '@grpc/grpc-js';
import {
  adsClientDefinition,
  type DecodedDeltaResponse,
  type DecodedResponse,
} from '@grpc-kube/xds/internal/protos.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import type { GrpcRoute } from 'grpc-kube/internal/route/grpcroute.js';
import { xdsBootstrapJson } from '@grpc-kube/xds/internal/bootstrap.js';
import type { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import type { AdsEvent } from '@grpc-kube/xds/internal/ads-server.js';
import { who, type Echo } from '../helpers/echo.js';

let registered = false;

/** Point grpc-js-xds at `address` and register the xds: scheme (once per process). */
export async function registerXdsClient(address: string, nodeId: string, zone = 'zone-a'): Promise<void> {
  if (registered) return;
  process.env['GRPC_XDS_BOOTSTRAP_CONFIG'] = xdsBootstrapJson({ server: address, nodeId, zone });
  const xds = (await import('@grpc/grpc-js-xds')) as { register(): void };
  xds.register();
  registered = true;
}

export function routeObject(
  name: string,
  parent: string,
  port: number,
  backends: Array<{ service: string; weight: number }>,
  extraRules: NonNullable<GrpcRoute['spec']>['rules'] = [],
): GrpcRoute {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    metadata: { name, namespace: 'default' },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: parent, port }],
      rules: [
        ...extraRules,
        { backendRefs: backends.map((b) => ({ name: b.service, port, weight: b.weight })) },
      ],
    },
  };
}

export function putRoute(api: EmbeddedApiServer, route: GrpcRoute): void {
  const store = api.store;
  const existing = store.get<GrpcRoute>(RESOURCES.grpcroutes, 'default', route.metadata.name ?? '');
  if (existing === undefined) store.create(RESOURCES.grpcroutes, route);
  else store.update(RESOURCES.grpcroutes, { ...route, metadata: { ...existing.metadata } });
}

/** Run `count` RPCs, `concurrency` at a time; count replies per server name and failures. */
export async function spread(
  client: Echo,
  count: number,
  concurrency = 200,
): Promise<{ by: Record<string, number>; failed: number }> {
  const by: Record<string, number> = {};
  let failed = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      try {
        const r = await who(client, 5000);
        by[r.server] = (by[r.server] ?? 0) + 1;
      } catch {
        failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { by, failed };
}

/** Resolves at the first event matching `pred` (or rejects after timeoutMs). */
export function nextEvent(
  cp: XdsControlPlane,
  pred: (e: AdsEvent) => boolean,
  timeoutMs = 30_000,
): Promise<AdsEvent> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`no matching ADS event within ${timeoutMs} ms`));
    }, timeoutMs);
    t.unref();
    const off = cp.onAdsEvent((e) => {
      if (!pred(e)) return;
      clearTimeout(t);
      off();
      resolve(e);
    });
  });
}

/** A raw ADS stream (no xDS client logic): send requests, read responses in order. */
export interface RawAds {
  send(req: {
    type: string;
    names: string[];
    nonce?: string;
    version?: string;
    error?: string;
    nodeId?: string;
    /** Node metadata `namespace` (first request only). */
    namespace?: string;
  }): void;
  next(timeoutMs?: number): Promise<DecodedResponse>;
  close(): void;
}

/** A stream's responses one at a time: the function waits up to timeoutMs for the next one. */
function responses<T>(
  call: grpc.ClientDuplexStream<unknown, T>,
  what: string,
): (timeoutMs?: number) => Promise<T> {
  const queue: T[] = [];
  const waiters: Array<(r: T) => void> = [];
  call.on('data', (r: T) => {
    const w = waiters.shift();
    if (w) w(r);
    else queue.push(r);
  });
  call.on('error', () => {});
  return (timeoutMs = 30_000) => {
    const r = queue.shift();
    if (r) return Promise.resolve(r);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        waiters.splice(waiters.indexOf(done), 1);
        reject(new Error(`no ${what} response within ${timeoutMs} ms`));
      }, timeoutMs);
      t.unref();
      const done = (x: T): void => {
        clearTimeout(t);
        resolve(x);
      };
      waiters.push(done);
    });
  };
}

export function openAds(address: string, creds = grpc.credentials.createInsecure()): RawAds {
  const Client = grpc.makeGenericClientConstructor(adsClientDefinition(), 'Ads');
  const client = new Client(address, creds);
  const call = (
    client as unknown as { StreamAggregatedResources(): grpc.ClientDuplexStream<unknown, DecodedResponse> }
  ).StreamAggregatedResources();
  const next = responses(call, 'ADS');
  let first = true;
  return {
    send(req) {
      call.write({
        version_info: req.version ?? '',
        node: first
          ? {
              id: req.nodeId ?? 'raw',
              locality: { zone: 'zone-a' },
              ...(req.namespace !== undefined
                ? { metadata: { fields: { namespace: { stringValue: req.namespace } } } }
                : {}),
            }
          : null,
        resource_names: req.names,
        type_url: req.type,
        response_nonce: req.nonce ?? '',
        error_detail: req.error ? { code: 3, message: req.error } : null,
      });
      first = false;
    },
    next,
    close() {
      call.cancel();
      client.close();
    },
  };
}

/** A raw incremental (delta) ADS stream. */
export interface RawDeltaAds {
  send(req: {
    type: string;
    subscribe?: string[];
    unsubscribe?: string[];
    nonce?: string;
    initial?: Record<string, string>;
    error?: string;
  }): void;
  next(timeoutMs?: number): Promise<DecodedDeltaResponse>;
  close(): void;
}

export function openDeltaAds(address: string): RawDeltaAds {
  const Client = grpc.makeGenericClientConstructor(adsClientDefinition(), 'Ads');
  const client = new Client(address, grpc.credentials.createInsecure());
  const call = (
    client as unknown as {
      DeltaAggregatedResources(): grpc.ClientDuplexStream<unknown, DecodedDeltaResponse>;
    }
  ).DeltaAggregatedResources();
  const next = responses(call, 'delta ADS');
  let first = true;
  return {
    send(req) {
      call.write({
        node: first ? { id: 'delta', locality: { zone: 'zone-a' } } : null,
        type_url: req.type,
        resource_names_subscribe: req.subscribe ?? [],
        resource_names_unsubscribe: req.unsubscribe ?? [],
        initial_resource_versions: req.initial ?? {},
        response_nonce: req.nonce ?? '',
        error_detail: req.error ? { code: 3, message: req.error } : null,
      });
      first = false;
    },
    next,
    close() {
      call.cancel();
      client.close();
    },
  };
}
