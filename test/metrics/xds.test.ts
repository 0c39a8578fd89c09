import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { SERVICE_NAME_LABEL, type EndpointSlice } from 'grpc-kube/internal/kube/types.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import { CDS, LDS } from '@grpc-kube/xds/internal/protos.js';
import { startApi, until } from '../helpers/kube.js';
import { installTestMetrics, pointsOf, total } from '../helpers/metrics.js';
import { openAds } from '../xds/fixture.js';

const PORT = 7070;

test('xDS series: connected clients, ACK and NACK per type and node, ACKed version per node, push latency', async (t) => {
  const m = installTestMetrics();
  t.after(() => m.close());
  const api = await startApi();
  t.after(() => api.stop());
  const slice: EndpointSlice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'svc-a', namespace: 'default', labels: { [SERVICE_NAME_LABEL]: 'svc' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['10.0.0.1'], conditions: { ready: true } }],
    ports: [{ name: 'grpc', port: PORT, protocol: 'TCP' }],
  };
  api.store.create(RESOURCES.endpointslices, slice);
  const cp = await XdsControlPlane.start({ kubeConfigYaml: api.kubeConfigYaml(), log: () => {} });
  t.after(() => cp.close());

  const a = openAds(cp.address);
  t.after(() => a.close());
  a.send({ type: LDS, names: [`svc.default:${PORT}`], nodeId: 'node-a' });
  const lds = await a.next();
  a.send({ type: LDS, names: [`svc.default:${PORT}`], nonce: lds.nonce, version: lds.version_info });
  a.send({ type: CDS, names: [`default/svc:${PORT}`] });
  const cds = await a.next();
  a.send({
    type: CDS,
    names: [`default/svc:${PORT}`],
    nonce: cds.nonce,
    version: '',
    error: 'rejected: test',
  });

  const b = openAds(cp.address);
  t.after(() => b.close());
  b.send({ type: LDS, names: [`svc.default:${PORT}`], nodeId: 'node-b' });
  const ldsB = await b.next();
  b.send({ type: LDS, names: [`svc.default:${PORT}`], nonce: ldsB.nonce, version: ldsB.version_info });
  await until(() => cp.ads.stats.acks === 2 && cp.ads.stats.nacks === 1);

  const all = await m.collect();
  assert.deepEqual(
    pointsOf(all, 'grpc_kube.xds.clients').map((p) => p.value),
    [2],
  );
  assert.equal(total(all, 'grpc_kube.xds.acks', { 'xds.type': LDS, 'xds.node': 'node-a' }), 1);
  assert.equal(total(all, 'grpc_kube.xds.acks', { 'xds.type': LDS, 'xds.node': 'node-b' }), 1);
  assert.equal(total(all, 'grpc_kube.xds.acks', { 'xds.type': CDS }), 0);
  assert.deepEqual(
    pointsOf(all, 'grpc_kube.xds.nacks').map((p) => [
      p.attributes['xds.type'],
      p.attributes['xds.node'],
      p.value,
    ]),
    [[CDS, 'node-a', 1]],
  );
  // Each node's ACKed LDS version; the NACKed CDS shows none.
  const versions = pointsOf(all, 'grpc_kube.xds.version');
  assert.deepEqual(
    versions.map((p) => [p.attributes['xds.node'], p.attributes['xds.type'], p.value]).sort(),
    [
      ['node-a', LDS, Number(lds.version_info)],
      ['node-b', LDS, Number(ldsB.version_info)],
    ],
  );
  assert.equal(total(all, 'grpc_kube.xds.push.duration', { 'xds.type': LDS }), 2);
  assert.equal(total(all, 'grpc_kube.xds.push.duration', { 'xds.type': CDS }), 1);

  b.close();
  await until(async () => pointsOf(await m.collect(), 'grpc_kube.xds.clients')[0]?.value === 1, 30_000, 10);
});
