// The ADS protocol as raw streams see it (no xDS client smoothing anything over): A27 resource
// shapes, ACK/NACK, pushes only to subscribers, unsubscribe by an empty list and immediate answers
// on resubscribe, stale nonces, and GRPCRoute validation that never breaks the good config.
// Negative checks ("no push") use a sequence point: a later request whose answer must come first.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { SERVICE_NAME_LABEL, type EndpointSlice } from 'grpc-kube/internal/kube/types.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import { InvalidRouteError } from 'grpc-kube/internal/route/grpcroute.js';
import {
  CDS,
  EDS,
  HCM,
  LDS,
  RDS,
  ROUTER,
  decodeMessage,
  type DecodedResponse,
} from '@grpc-kube/xds/internal/protos.js';
import { startApi, until } from '../helpers/kube.js';
import { nextEvent, openAds, openDeltaAds, putRoute, routeObject, type RawAds } from './fixture.js';

const PORT = 7070;
const LISTENER = `svc.default:${PORT}`;
const CLUSTER = `default/svc:${PORT}`;
let api: EmbeddedApiServer;
let cp: XdsControlPlane;
const logs: string[] = [];
const streams: RawAds[] = [];

function putSlice(
  service: string,
  eps: Array<{ ip: string; zone: string; state: 'ready' | 'draining' | 'unready' }>,
): void {
  const slice: EndpointSlice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${service}-a`, namespace: 'default', labels: { [SERVICE_NAME_LABEL]: service } },
    addressType: 'IPv4',
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      zone: e.zone,
      conditions: {
        ready: e.state === 'ready',
        serving: e.state !== 'unready',
        terminating: e.state === 'draining',
      },
    })),
    ports: [{ name: 'grpc', port: PORT, protocol: 'TCP' }],
  };
  const existing = api.store.get<EndpointSlice>(
    RESOURCES.endpointslices,
    'default',
    slice.metadata.name ?? '',
  );
  if (existing === undefined) api.store.create(RESOURCES.endpointslices, slice);
  else api.store.update(RESOURCES.endpointslices, { ...slice, metadata: { ...existing.metadata } });
}

function decoded(r: DecodedResponse): Array<Record<string, unknown>> {
  return r.resources.map((a) => decodeMessage(a.type_url, a.value));
}

function open(): RawAds {
  const s = openAds(cp.address);
  streams.push(s);
  return s;
}

before(async () => {
  api = await startApi();
  putSlice('svc', [
    { ip: '10.0.0.1', zone: 'zone-a', state: 'ready' },
    { ip: '10.0.0.2', zone: 'zone-a', state: 'ready' },
    { ip: '10.0.0.3', zone: 'zone-b', state: 'draining' },
    { ip: '10.0.0.4', zone: 'zone-b', state: 'unready' },
  ]);
  putSlice('other', [{ ip: '10.0.1.1', zone: 'zone-a', state: 'ready' }]);
  cp = await XdsControlPlane.start({ kubeConfigYaml: api.kubeConfigYaml(), log: (l) => logs.push(l) });
});

after(async () => {
  for (const s of streams) s.close();
  await cp?.close();
  await api?.stop();
});

test('LDS → RDS → CDS → EDS follow gRFC A27, and an ACK gets no answer', async () => {
  const s = open();
  s.send({ type: LDS, names: [LISTENER] });
  const lds = await s.next();
  assert.equal(lds.type_url, LDS);
  const [listener] = decoded(lds) as [
    { name: string; api_listener: { api_listener: { type_url: string; value: Uint8Array } } },
  ];
  assert.equal(listener.name, LISTENER);
  assert.equal(listener.api_listener.api_listener.type_url, HCM);
  const hcm = decodeMessage(HCM, listener.api_listener.api_listener.value) as {
    rds: { route_config_name: string; config_source: { ads: unknown } };
    http_filters: Array<{ typed_config: { type_url: string } }>;
  };
  assert.equal(hcm.rds.route_config_name, LISTENER);
  assert.ok(hcm.rds.config_source.ads !== undefined);
  assert.equal(hcm.http_filters.at(-1)?.typed_config.type_url, ROUTER);
  s.send({ type: LDS, names: [LISTENER], nonce: lds.nonce, version: lds.version_info });

  s.send({ type: RDS, names: [LISTENER] });
  const rds = await s.next();
  // The ACK above got no answer: the next message is the RDS response.
  assert.equal(rds.type_url, RDS);
  const [rc] = decoded(rds) as [{ virtual_hosts: Array<{ domains: string[]; routes: unknown[] }> }];
  assert.deepEqual(rc.virtual_hosts[0]?.domains, [LISTENER]);
  assert.deepEqual(rc.virtual_hosts[0]?.routes, [
    {
      name: 'default',
      match: { prefix: '' },
      route: { weighted_clusters: { clusters: [{ name: CLUSTER, weight: { value: 1 } }] } },
    },
  ]);

  s.send({ type: CDS, names: [CLUSTER] });
  const [cluster] = decoded(await s.next()) as [Record<string, unknown>];
  assert.equal(cluster['type'], 'EDS');
  assert.equal(cluster['lb_policy'], 'ROUND_ROBIN');
  assert.deepEqual(cluster['eds_cluster_config'], { eds_config: { ads: {}, resource_api_version: 'V3' } });

  s.send({ type: EDS, names: [CLUSTER] });
  const [cla] = decoded(await s.next()) as [{ cluster_name: string; endpoints: unknown[] }];
  assert.equal(cla.cluster_name, CLUSTER);
  const ep = (ip: string, health: string): unknown => ({
    endpoint: { address: { socket_address: { address: ip, port_value: PORT } } },
    health_status: health,
  });
  assert.deepEqual(cla.endpoints, [
    {
      locality: { zone: 'zone-a' },
      load_balancing_weight: { value: 2 },
      lb_endpoints: [ep('10.0.0.1', 'HEALTHY'), ep('10.0.0.2', 'HEALTHY')],
    },
    // Draining only: weight 1 keeps the locality valid; the unready endpoint is left out.
    {
      locality: { zone: 'zone-b' },
      load_balancing_weight: { value: 1 },
      lb_endpoints: [ep('10.0.0.3', 'DRAINING')],
    },
  ]);
});

test('a change is pushed only to streams subscribed to it; many streams share one cache', async () => {
  const a = open();
  const b = open();
  a.send({ type: EDS, names: [CLUSTER] });
  b.send({ type: EDS, names: [`default/other:${PORT}`] });
  // `other` is not referenced by any route yet: nothing to answer. Build it by subscribing its listener.
  b.send({ type: LDS, names: [`other.default:${PORT}`] });
  const first = await a.next();
  assert.equal(first.type_url, EDS);
  const bl = await b.next();
  assert.equal(bl.type_url, LDS);
  const bo = await b.next();
  assert.equal(bo.type_url, EDS);
  const v = Number(cp.cache.version(EDS));
  putSlice('svc', [{ ip: '10.0.0.9', zone: 'zone-a', state: 'ready' }]);
  const pushed = await a.next();
  assert.equal(pushed.type_url, EDS);
  assert.ok(Number(pushed.version_info) > v);
  assert.match(JSON.stringify(decoded(pushed)), /10\.0\.0\.9/);
  // Sequence point for b: its next message must be the answer to this request, not an EDS push.
  b.send({ type: CDS, names: [`default/other:${PORT}`] });
  assert.equal((await b.next()).type_url, CDS);
});

test('an empty name list unsubscribes; a later request re-subscribes and is answered at once', async () => {
  const s = open();
  s.send({ type: EDS, names: [CLUSTER] });
  const r1 = await s.next();
  const unsubscribed = nextEvent(cp, (e) => e.kind === 'request' && e.type === EDS && e.names.length === 0);
  s.send({ type: EDS, names: [], nonce: r1.nonce, version: r1.version_info });
  await unsubscribed;
  const v = Number(cp.cache.version(EDS));
  putSlice('svc', [{ ip: '10.0.0.10', zone: 'zone-a', state: 'ready' }]);
  await until(() => Number(cp.cache.version(EDS)) > v);
  // Sequence point: had the EDS change been pushed, it would come before this LDS answer.
  s.send({ type: LDS, names: [LISTENER] });
  assert.equal((await s.next()).type_url, LDS);
  s.send({ type: EDS, names: [CLUSTER], nonce: r1.nonce, version: r1.version_info });
  const again = await s.next();
  assert.equal(again.type_url, EDS);
  assert.match(JSON.stringify(decoded(again)), /10\.0\.0\.10/);
});

test('NACK is logged with the client error; a stale nonce is neither ACK nor NACK', async () => {
  const s = open();
  s.send({ type: CDS, names: [CLUSTER], nodeId: 'nack-node' });
  const r = await s.next();
  const nacks = cp.ads.stats.nacks;
  const stale = cp.ads.stats.stale;
  s.send({ type: CDS, names: [CLUSTER], nonce: 'not-ours', error: 'ignored' });
  s.send({ type: CDS, names: [CLUSTER], nonce: r.nonce, version: '', error: 'cluster rejected: test' });
  await until(() => cp.ads.stats.nacks === nacks + 1);
  assert.equal(cp.ads.stats.stale, stale + 1);
  assert.ok(logs.some((l) => l.startsWith('NACK from nack-node') && l.includes('cluster rejected: test')));
  // No re-send after a NACK: the sequence point's answer comes first.
  s.send({ type: LDS, names: [LISTENER] });
  assert.equal((await s.next()).type_url, LDS);
});

test('GRPCRoute: method and header matches in precedence order; a bad edit is reported and never breaks the good config', async () => {
  const s = open();
  s.send({ type: RDS, names: [LISTENER] });
  await s.next();
  const good = routeObject(
    'svc-route',
    'svc',
    PORT,
    [
      { service: 'svc', weight: 90 },
      { service: 'other', weight: 10 },
    ],
    [
      {
        matches: [{ headers: [{ name: 'x-canary', value: 'yes' }] }],
        backendRefs: [{ name: 'other', port: PORT }],
      },
      {
        matches: [{ method: { service: 'pkg.Echo', method: 'Who' } }],
        backendRefs: [{ name: 'svc', port: PORT }],
      },
    ],
  );
  putRoute(api, good);
  const pushed = await s.next();
  const [rc] = decoded(pushed) as [
    {
      virtual_hosts: Array<{
        routes: Array<{ match: unknown; route: { weighted_clusters: { clusters: unknown[] } } }>;
      }>;
    },
  ];
  const routes = rc.virtual_hosts[0]?.routes ?? [];
  assert.deepEqual(
    routes.map((r) => r.match),
    [
      { path: '/pkg.Echo/Who' },
      { prefix: '', headers: [{ name: 'x-canary', string_match: { exact: 'yes' } }] },
      { prefix: '' },
    ],
  );
  assert.deepEqual(routes[2]?.route.weighted_clusters.clusters, [
    { name: CLUSTER, weight: { value: 90 } },
    { name: `default/other:${PORT}`, weight: { value: 10 } },
  ]);
  const version = cp.cache.version(RDS);
  const errors: InvalidRouteError[] = [];
  cp.onRouteError((e) => errors.push(e));
  const bad = structuredClone(good);
  delete bad.spec?.rules?.[2]?.backendRefs?.[1]?.port;
  putRoute(api, bad);
  await until(() => errors.length > 0);
  assert.ok(errors[0] instanceof InvalidRouteError);
  assert.equal(errors[0].code, 'GK_ERR_INVALID_ROUTE');
  assert.equal(errors[0].route, 'default/svc-route');
  assert.equal(errors[0].field, 'spec.rules[2].backendRefs[1].port');
  assert.equal(cp.cache.version(RDS), version);
  assert.ok(
    logs.some((l) => l.includes('spec.rules[2].backendRefs[1].port') && l.includes('last good version')),
  );
  // A brand-new bad route is ignored too, and the good one still serves.
  putRoute(api, { ...routeObject('broken', 'svc', PORT, [{ service: 'svc', weight: -1 }]) });
  await until(() => errors.length > 1);
  assert.equal(errors[1]?.field, 'spec.rules[0].backendRefs[0].weight');
  assert.equal(cp.cache.version(RDS), version);
  assert.deepEqual(
    cp
      .routeErrors()
      .map((e) => e.route)
      .sort(),
    ['default/broken', 'default/svc-route'],
  );
});

test('delta xDS: subscribe, per-resource versions, only changed resources, removals, unsubscribe', async () => {
  const s = openDeltaAds(cp.address);
  streams.push({ close: () => s.close() } as RawAds);
  s.send({ type: LDS, subscribe: [LISTENER, 'not-a-target'] });
  const l = await s.next();
  assert.equal(l.type_url, LDS);
  assert.deepEqual(
    l.resources.map((r) => r.name),
    [LISTENER],
  );
  // A Listener that does not exist is named as removed, so the client stops waiting for it.
  assert.deepEqual(l.removed_resources, ['not-a-target']);
  s.send({ type: LDS, nonce: l.nonce });
  s.send({ type: EDS, subscribe: [CLUSTER] });
  const e1 = await s.next();
  assert.equal(e1.type_url, EDS);
  assert.equal(e1.resources[0]?.name, CLUSTER);
  const v1 = e1.resources[0]?.version ?? '';
  s.send({ type: EDS, nonce: e1.nonce });
  putSlice('svc', [{ ip: '10.0.0.20', zone: 'zone-a', state: 'ready' }]);
  const e2 = await s.next();
  assert.equal(e2.resources.length, 1);
  assert.notEqual(e2.resources[0]?.version, v1);
  assert.match(
    JSON.stringify(decodeMessage(EDS, e2.resources[0]?.resource.value ?? new Uint8Array())),
    /10\.0\.0\.20/,
  );
  // Unsubscribed: a further change is not sent (sequence point: the LDS answer comes first).
  s.send({ type: EDS, unsubscribe: [CLUSTER], nonce: e2.nonce });
  const v = Number(cp.cache.version(EDS));
  const unsub = nextEvent(cp, (e) => e.kind === 'request' && e.type === EDS && e.nonce === e2.nonce);
  await unsub;
  putSlice('svc', [{ ip: '10.0.0.21', zone: 'zone-a', state: 'ready' }]);
  await until(() => Number(cp.cache.version(EDS)) > v);
  s.send({ type: CDS, subscribe: [CLUSTER] });
  const c = await s.next();
  assert.equal(c.type_url, CDS);
  // Re-subscribing: the current version differs from the one it last had, so it is sent at once.
  s.send({ type: EDS, subscribe: [CLUSTER], nonce: c.nonce });
  const e3 = await s.next();
  assert.equal(e3.type_url, EDS);
  assert.match(
    JSON.stringify(decodeMessage(EDS, e3.resources[0]?.resource.value ?? new Uint8Array())),
    /10\.0\.0\.21/,
  );
});
