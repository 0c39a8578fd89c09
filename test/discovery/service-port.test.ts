// Ports as Kubernetes means them: in `kubernetes:///hello.default:80` the 80 is the Service port.
// A user moving from `dns:///hello.default.svc.cluster.local:80` (Service port 80 → targetPort 50051)
// got GK_ERR_PORT_NOT_FOUND, because the number was taken as the endpoint (container) port. The
// source reads the Service and follows its port to the slice port of the same name; without such a
// Service port, or without `get services`, a number is an endpoint port as before. On the embedded
// API server (real HTTP and RBAC), and with GRPC_KUBE_REAL=1 on the real kube-apiserver.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { KubernetesEndpointSource } from 'grpc-kube/internal/discovery/kube-source.js';
import type { PortSelector } from 'grpc-kube/internal/discovery/slices.js';
import type { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { SERVICE_NAME_LABEL } from 'grpc-kube/internal/kube/types.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { realControlPlaneSkip, startRealApi } from '../helpers/real.js';

/** Service hello: port 80 → targetPort 50051, named `portName` ('' = the one unnamed port). */
function service(portName: string): {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string };
  spec: unknown;
} {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'hello', namespace: 'default' },
    spec: {
      selector: { app: 'hello' },
      ports: [
        { ...(portName === '' ? {} : { name: portName }), port: 80, targetPort: 50051, protocol: 'TCP' },
      ],
    },
  };
}

/** The endpoints (or the error code) a source of Service hello delivers first for `port`. */
async function firstAnswer(
  t: { after(fn: () => unknown): void },
  kubeConfigYaml: string,
  port: PortSelector,
): Promise<string[] | string> {
  const src = new KubernetesEndpointSource(
    KubeClient.fromKubeConfigString(kubeConfigYaml),
    'default',
    'hello',
    {
      backoff: { initialMs: 20, maxMs: 100 },
    },
  );
  t.after(() => src.stop());
  let answer: string[] | string | undefined;
  src.subscribe(port, {
    onEndpoints: (view) => (answer ??= view.endpoints().map((e) => `${e.address}:${e.port}`)),
    onError: (err: GrpcKubeError) => (answer ??= err.code),
  });
  await until(() => answer !== undefined, 20_000);
  return answer as string[] | string;
}

async function embedded(t: { after(fn: () => unknown): void }, portName: string): Promise<EmbeddedApiServer> {
  const api = await startApi();
  t.after(() => api.close());
  api.store.create(RESOURCES.services, service(portName) as never);
  new SliceWriter(api, 'hello', 50051, 'default', portName).put('hello-a', [
    { ip: '10.1.0.1' },
    { ip: '10.1.0.2' },
  ]);
  return api;
}

test('a numeric port is the Service port: 80 → targetPort 50051 gives the pods on 50051', async (t) => {
  const api = await embedded(t, 'grpc');
  const kc = api.kubeConfigYaml();
  assert.deepEqual(await firstAnswer(t, kc, { kind: 'number', port: 80 }), [
    '10.1.0.1:50051',
    '10.1.0.2:50051',
  ]);
  // A number the Service does not have is an endpoint port, as before.
  assert.deepEqual(await firstAnswer(t, kc, { kind: 'number', port: 50051 }), [
    '10.1.0.1:50051',
    '10.1.0.2:50051',
  ]);
  // The Service's one unnamed port: its slices' port has the name ''.
  const unnamed = await embedded(t, '');
  assert.deepEqual(await firstAnswer(t, unnamed.kubeConfigYaml(), { kind: 'number', port: 80 }), [
    '10.1.0.1:50051',
    '10.1.0.2:50051',
  ]);
});

test('without RBAC `get services` a number is an endpoint port (no Service port mapping)', async (t) => {
  const api = await embedded(t, 'grpc');
  api.addToken('slices-only', {
    user: 'system:serviceaccount:default:app',
    rules: [
      { verbs: ['get', 'list', 'watch'], apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'] },
    ],
  });
  const kc = api.kubeConfigYaml('slices-only');
  assert.equal(await firstAnswer(t, kc, { kind: 'number', port: 80 }), 'GK_ERR_PORT_NOT_FOUND');
  // The error says why 80 was not followed to 50051.
  const src = new KubernetesEndpointSource(KubeClient.fromKubeConfigString(kc), 'default', 'hello');
  t.after(() => src.stop());
  let message = '';
  src.subscribe(
    { kind: 'number', port: 80 },
    { onEndpoints: () => {}, onError: (e) => (message = e.message) },
  );
  await until(() => message !== '', 20_000);
  assert.match(message, /forbidden \(403\): grant RBAC `get services`.*80 was taken as an endpoint port/);
  assert.deepEqual(await firstAnswer(t, kc, { kind: 'number', port: 50051 }), [
    '10.1.0.1:50051',
    '10.1.0.2:50051',
  ]);
});

test('a Service read that hangs delays no name and holds a number only until it answers', async (t) => {
  const api = await embedded(t, 'grpc');
  const release = api.holdRequests('/api/v1/namespaces/default/services/hello');
  t.after(release);
  const src = new KubernetesEndpointSource(
    KubeClient.fromKubeConfigString(api.kubeConfigYaml()),
    'default',
    'hello',
    { backoff: { initialMs: 20, maxMs: 100 } },
  );
  t.after(() => src.stop());
  const got: Record<string, string[]> = {};
  for (const sel of [
    { kind: 'name', name: 'grpc' },
    { kind: 'number', port: 80 },
  ] as const)
    src.subscribe(sel, {
      onEndpoints: (view) => (got[sel.kind] ??= view.endpoints().map((e) => `${e.address}:${e.port}`)),
      onError: (err) => (got[sel.kind] ??= [err.code]),
    });
  // The list is not queued behind the held Service read: the name is served while it hangs.
  await until(() => got['name'] !== undefined, 20_000);
  assert.deepEqual(got['name'], ['10.1.0.1:50051', '10.1.0.2:50051']);
  // The number waits for the Service, then means its port 80 (not an endpoint port 80: no such port).
  assert.equal(got['number'], undefined);
  release();
  await until(() => got['number'] !== undefined, 20_000);
  assert.deepEqual(got['number'], ['10.1.0.1:50051', '10.1.0.2:50051']);
});

test('a Service read that never answers is cut at listTimeoutMs: the number is an endpoint port', async (t) => {
  const api = await embedded(t, 'grpc');
  t.after(api.holdRequests('/api/v1/namespaces/default/services/hello'));
  const src = new KubernetesEndpointSource(
    KubeClient.fromKubeConfigString(api.kubeConfigYaml()),
    'default',
    'hello',
    { backoff: { initialMs: 60_000, maxMs: 60_000 }, listTimeoutMs: 300 },
  );
  t.after(() => src.stop());
  let answer: string[] | undefined;
  src.subscribe(
    { kind: 'number', port: 50051 },
    { onEndpoints: (view) => (answer ??= view.endpoints().map((e) => e.address)), onError: () => {} },
  );
  await until(() => answer !== undefined, 20_000);
  assert.deepEqual(answer, ['10.1.0.1', '10.1.0.2']);
});

test('slices without a port of the Service port name (written by hand) are matched by number', async (t) => {
  const api = await startApi();
  t.after(() => api.close());
  // Service port 50051 is named grpc; the slice's one port 50051 has no name.
  api.store.create(RESOURCES.services, {
    ...service('grpc'),
    spec: { ports: [{ name: 'grpc', port: 50051, targetPort: 50051, protocol: 'TCP' }] },
  } as never);
  new SliceWriter(api, 'hello', 50051, 'default', '').put('hello-a', [{ ip: '10.1.0.1' }]);
  assert.deepEqual(await firstAnswer(t, api.kubeConfigYaml(), { kind: 'number', port: 50051 }), [
    '10.1.0.1:50051',
  ]);
});

test(
  'on the real kube-apiserver: Service port 80 → targetPort 50051',
  {
    skip: realControlPlaneSkip(),
    timeout: 300_000,
  },
  async (t) => {
    const { cp, kube } = await startRealApi(t);
    await kube.create(RESOURCES.services, service('grpc'));
    // The EndpointSlice the controller would write (the real apiserver refuses loopback addresses).
    await kube.create(RESOURCES.endpointslices, {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'hello-a', namespace: 'default', labels: { [SERVICE_NAME_LABEL]: 'hello' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.1.0.1'], conditions: { ready: true } }],
      ports: [{ name: 'grpc', port: 50051, protocol: 'TCP' }],
    });
    assert.deepEqual(await firstAnswer(t, cp.adminKubeConfig, { kind: 'number', port: 80 }), [
      '10.1.0.1:50051',
    ]);
  },
);
