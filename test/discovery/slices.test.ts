import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  endpointState,
  sliceEndpoints,
  slicePort,
  slicePortsText,
} from 'grpc-kube/internal/discovery/slices.js';
import type { EndpointSlice, SliceEndpoint } from 'grpc-kube/internal/kube/types.js';

const slice = (
  endpoints: SliceEndpoint[],
  ports: EndpointSlice['ports'] = [{ name: 'grpc', port: 50051 }],
): EndpointSlice => ({
  metadata: { name: 's1' },
  addressType: 'IPv4',
  endpoints,
  ports,
});

test('endpoint conditions map to states as the API defines them', () => {
  const table: Array<[SliceEndpoint['conditions'], string]> = [
    [undefined, 'ready'],
    [{}, 'ready'],
    [{ ready: null }, 'ready'],
    [{ ready: true, serving: true, terminating: false }, 'ready'],
    [{ ready: false, serving: true, terminating: true }, 'draining'],
    [{ ready: false, serving: false, terminating: true }, 'unready'],
    [{ ready: false, serving: false, terminating: false }, 'unready'],
    [{ ready: false }, 'unready'],
    [{ ready: null, terminating: true }, 'unready'],
  ];
  for (const [conditions, want] of table) {
    assert.equal(endpointState({ addresses: ['10.0.0.1'], conditions }), want, JSON.stringify(conditions));
  }
});

test('ports match by number or by name; a portless slice serves any number', () => {
  const s = slice(
    [],
    [
      { name: 'http', port: 8080 },
      { name: 'grpc', port: 50051 },
    ],
  );
  assert.equal(slicePort(s, { kind: 'number', port: 50051 }), 50051);
  assert.equal(slicePort(s, { kind: 'name', name: 'http' }), 8080);
  assert.equal(slicePort(s, { kind: 'name', name: 'metrics' }), undefined);
  assert.equal(slicePort(s, { kind: 'number', port: 9 }), undefined);
  assert.equal(slicePort(slice([], []), { kind: 'number', port: 9 }), 9);
  assert.equal(slicePort(slice([], null), { kind: 'name', name: 'x' }), undefined);
  assert.equal(
    slicePort(slice([], [{ port: 80 }]), { kind: 'name', name: '' }),
    80,
    'unnamed port has name ""',
  );
  assert.equal(slicePortsText([s]), '50051 (grpc), 8080 (http)');
});

test('sliceEndpoints carries pod, node, zone, hostname and hints, one endpoint per address', () => {
  const eps = sliceEndpoints(
    slice([
      {
        addresses: ['10.0.0.1'],
        conditions: { ready: true },
        targetRef: { kind: 'Pod', name: 'hello-abc', namespace: 'default' },
        nodeName: 'node-1',
        zone: 'z1',
        hostname: 'h1',
        hints: { forZones: [{ name: 'z1' }] },
      },
      { addresses: ['10.0.0.2', '10.0.0.3'], conditions: { ready: false, serving: true, terminating: true } },
    ]),
    { kind: 'name', name: 'grpc' },
  );
  assert.deepEqual(eps[0], {
    address: '10.0.0.1',
    port: 50051,
    state: 'ready',
    pod: 'hello-abc',
    node: 'node-1',
    zone: 'z1',
    hostname: 'h1',
    zoneHints: ['z1'],
  });
  assert.deepEqual(
    eps.slice(1).map((e) => `${e.address}:${e.port}=${e.state}`),
    ['10.0.0.2:50051=draining', '10.0.0.3:50051=draining'],
  );
});

test('FQDN slices and slices without the port give no endpoints; null endpoints is empty', () => {
  assert.deepEqual(
    sliceEndpoints(
      { ...slice([{ addresses: ['a.example'] }]), addressType: 'FQDN' },
      { kind: 'number', port: 50051 },
    ),
    [],
  );
  assert.deepEqual(sliceEndpoints(slice([{ addresses: ['10.0.0.1'] }]), { kind: 'number', port: 1 }), []);
  assert.deepEqual(sliceEndpoints({ ...slice([]), endpoints: null }, { kind: 'number', port: 50051 }), []);
});
