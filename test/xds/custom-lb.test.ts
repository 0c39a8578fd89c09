// Our own balancing policies through xDS: CDS carries load_balancing_policy with a TypedStruct naming
// grpc_kube_p2c (gRFC A52); a grpc-js-xds client that has grpc-kube's policies registered accepts it
// (no NACK) and balances with it. A slow endpoint gets fewer RPCs under P2C least-request.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { registerPolicies } from 'grpc-kube/internal/balancer/index.js';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import { CDS, decodeMessage } from '@grpc-kube/xds/internal/protos.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { answers, newEchoClient, startEchoServer, type Echo, type EchoServer } from '../helpers/echo.js';
import { registerXdsClient, spread } from './fixture.js';

let api: EmbeddedApiServer;
let cp: XdsControlPlane;
let client: Echo;
let port: number;
const servers: EchoServer[] = [];
let nacks = 0;

before(async () => {
  registerPolicies();
  api = await startApi();
  const fast = await startEchoServer('fast', '127.0.0.31');
  port = fast.port;
  servers.push(fast, await startEchoServer('slow', '127.0.0.32', port, 40));
  new SliceWriter(api, 'p2c', port).put('p2c-a', [{ ip: '127.0.0.31' }, { ip: '127.0.0.32' }]);
  cp = await XdsControlPlane.start({
    kubeConfigYaml: api.kubeConfigYaml(),
    lbPolicy: 'grpc_kube_p2c',
    log: () => {},
  });
  cp.onAdsEvent((e) => {
    if (e.kind === 'nack') nacks++;
  });
  await registerXdsClient(cp.address, 'lb-node');
  client = newEchoClient(`xds:///p2c.default:${port}`);
  await until(() => answers(client), 60_000, 50);
  // Both endpoints connected before the count: while one is still connecting the other takes all.
  await until(
    async () => {
      const { by } = await spread(client, 40, 20);
      return (by['fast'] ?? 0) > 0 && (by['slow'] ?? 0) > 0;
    },
    60_000,
    20,
  );
});

after(async () => {
  client?.close();
  await cp?.close();
  for (const s of servers) s.kill();
  await api?.stop();
});

test('CDS names grpc_kube_p2c through a TypedStruct and the client balances with it', async () => {
  const bytes = cp.cache.get(CDS, `default/p2c:${port}`);
  assert.ok(bytes);
  const any = decodeMessage('google.protobuf.Any', bytes) as { type_url: string; value: Uint8Array };
  const cluster = decodeMessage(CDS, any.value) as {
    load_balancing_policy?: {
      policies: Array<{ typed_extension_config: { name: string; typed_config: { type_url: string } } }>;
    };
    outlier_detection?: Record<string, { value?: number; seconds?: unknown }>;
  };
  // gRFC A50 outlier detection rides along; the client below accepting the Cluster (no NACK) is
  // grpc-js-xds validating it.
  const od = cluster.outlier_detection;
  assert.ok(od !== undefined);
  assert.equal(Number(od['interval']?.seconds), 10);
  assert.equal(Number(od['base_ejection_time']?.seconds), 30);
  assert.equal(od['max_ejection_percent']?.value, 20);
  assert.equal(od['failure_percentage_threshold']?.value, 50);
  assert.equal(od['enforcing_failure_percentage']?.value, 100);
  assert.equal(od['failure_percentage_minimum_hosts']?.value, 3);
  assert.equal(od['success_rate_stdev_factor']?.value, 1900);
  assert.equal(cluster.load_balancing_policy?.policies[0]?.typed_extension_config.name, 'grpc_kube_p2c');
  assert.equal(
    cluster.load_balancing_policy?.policies[0]?.typed_extension_config.typed_config.type_url,
    'type.googleapis.com/xds.type.v3.TypedStruct',
  );
  const r = await spread(client, 600, 20);
  assert.equal(r.failed, 0);
  assert.equal(nacks, 0);
  // round_robin would give 300/300; least-request keeps the 40 ms server's share well below half.
  const slow = r.by['slow'] ?? 0;
  console.log(`P2C over xDS: ${JSON.stringify(r.by)}`);
  assert.ok(slow > 0 && slow < 200, JSON.stringify(r.by));
});
