// GRPCRoute backendRef.port is the Service port (Gateway API): a route sending `app`'s port 80 to
// Service `app-v2` port 80 (targetPort 50051) gives the cluster `default/app-v2:80` the pods on
// 50051. The control plane follows the backend's Service port to the slices' port of that name, as
// the kubernetes: resolver does; before, the 80 was read as the pods' own port and the cluster had
// no endpoints (GK_ERR_PORT_NOT_FOUND in the log).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import { EDS, LDS, decodeMessage } from '@grpc-kube/xds/internal/protos.js';
import { SliceWriter, startApi } from '../helpers/kube.js';
import { openAds, putRoute, routeObject } from './fixture.js';

test('backendRef.port 80 is the Service port: the cluster has the pods on targetPort 50051', async (t) => {
  const api = await startApi();
  t.after(() => api.stop());
  for (const [svc, ip] of [
    ['app', '10.2.0.1'],
    ['app-v2', '10.2.0.2'],
  ] as const) {
    api.store.create(RESOURCES.services, {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: svc, namespace: 'default' },
      spec: { ports: [{ name: 'grpc', port: 80, targetPort: 50051, protocol: 'TCP' }] },
    } as never);
    new SliceWriter(api, svc, 50051).put(`${svc}-a`, [{ ip }]);
  }
  putRoute(api, routeObject('to-v2', 'app', 80, [{ service: 'app-v2', weight: 1 }]));
  const logs: string[] = [];
  const cp = await XdsControlPlane.start({ kubeConfigYaml: api.kubeConfigYaml(), log: (l) => logs.push(l) });
  t.after(() => cp.close());
  const s = openAds(cp.address);
  t.after(() => s.close());
  // The listener of app's port 80 brings in the route and its backend's cluster.
  s.send({ type: LDS, names: ['app.default:80'] });
  await s.next(60_000);
  s.send({ type: EDS, names: ['default/app-v2:80'] });
  const r = await s.next(60_000);
  const [cla] = r.resources.map((a) => decodeMessage(a.type_url, a.value)) as Array<{
    endpoints: Array<{ lb_endpoints: Array<{ endpoint: { address: { socket_address: unknown } } }> }>;
  }>;
  const addresses = (cla?.endpoints ?? []).flatMap((l) =>
    l.lb_endpoints.map((e) => e.endpoint.address.socket_address),
  );
  assert.deepEqual(addresses, [{ address: '10.2.0.2', port_value: 50051 }], logs.join('\n'));
});
