// Fuzzing the parsers that read what users and the network hand us: dial targets, the proxy's
// `svc.ns:port` authorities, `grpc-timeout`, GRPCRoute objects and EndpointSlices. Thousands of
// seeded mutations of valid inputs each; the contract: a value that is well-formed, or a
// GrpcKubeError with its code — never another exception, never a malformed value.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { sliceEndpoints } from 'grpc-kube/internal/discovery/slices.js';
import type { EndpointSlice } from 'grpc-kube/internal/kube/types.js';
import { parseGrpcTimeout, MAX_TIMEOUT_MS } from '@grpc-kube/proxy/internal/grpc-wire.js';
import { parseServiceAuthority } from '@grpc-kube/proxy/internal/target.js';
import { parseKubernetesTarget } from 'grpc-kube/internal/resolver/target.js';
import { compileGrpcRoute, type GrpcRoute } from 'grpc-kube/internal/route/grpcroute.js';
import { Gen } from './gen.js';

const CASES = 5000;

/** Run `fn`; a throw must be a GrpcKubeError. Returns the value or undefined. */
function typed<T>(what: string, input: unknown, fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    assert.ok(
      err instanceof GrpcKubeError && /^GK_ERR_[A-Z_]+$/.test(err.code),
      `${what}: ${JSON.stringify(input)?.slice(0, 300)} threw ${String(err)}`,
    );
    return undefined;
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

test('dial targets and proxy authorities: a valid name or a typed error', () => {
  const g = new Gen(1);
  const seeds = ['hello.prod:8080', 'hello:grpc', 'hello.prod.svc.cluster.local:9000', 'a.b:1'];
  let ok = 0;
  for (let i = 0; i < CASES; i++) {
    const s = g.chance(0.2) ? g.string('abz09.:', 30) : g.mutateString(g.pick(seeds));
    const authority = g.chance(0.3) ? g.mutateString('prod') : undefined;
    const t = typed('parseKubernetesTarget', [authority, s], () =>
      parseKubernetesTarget(authority, `/${s}`, `kubernetes://${authority ?? ''}/${s}`),
    );
    if (t !== undefined) {
      ok++;
      assert.match(t.service, DNS_LABEL);
      if (t.namespace !== undefined) assert.match(t.namespace, DNS_LABEL);
      if (t.port.kind === 'number') assert.ok(t.port.port >= 1 && t.port.port <= 65535, s);
    }
    const a = parseServiceAuthority(s, 'default');
    if (typeof a !== 'string') {
      assert.match(a.service, DNS_LABEL);
      assert.match(a.namespace, DNS_LABEL);
    }
  }
  assert.ok(ok > 100, `${ok} valid targets among the mutations (the generator reaches the valid side)`);
});

test('grpc-timeout: any header value gives undefined or 0..2^31-1 ms', () => {
  const g = new Gen(2);
  for (let i = 0; i < CASES; i++) {
    const v = g.chance(0.5)
      ? `${g.int(10 ** (1 + g.int(9)))}${g.pick(['H', 'M', 'S', 'm', 'u', 'n', 'x', ''])}`
      : g.mutateString(g.pick(['2562047H', '100m', '99999999S', '1n']));
    const ms = parseGrpcTimeout(v);
    if (ms !== undefined) assert.ok(Number.isFinite(ms) && ms >= 0 && ms <= MAX_TIMEOUT_MS, `${v} → ${ms}`);
  }
  assert.equal(parseGrpcTimeout(['1S', '2S']), undefined);
});

const ROUTE: GrpcRoute = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'GRPCRoute',
  metadata: { name: 'r', namespace: 'prod', creationTimestamp: '2026-01-01T00:00:00Z' },
  spec: {
    parentRefs: [{ group: '', kind: 'Service', name: 'app', port: 8080 }],
    rules: [
      {
        matches: [
          {
            method: { type: 'RegularExpression', service: 'pkg\\.(a|b)+', method: 'Get.*' },
            headers: [{ type: 'RegularExpression', name: 'x-user', value: '(a|aa)+' }],
          },
          { method: { service: 'pkg.Svc', method: 'Get' }, headers: [{ name: 'x-canary', value: 'yes' }] },
        ],
        backendRefs: [
          { name: 'app-v1', port: 8080, weight: 90 },
          { name: 'app-v2', port: 8080, weight: 10 },
        ],
      },
    ],
  },
} as GrpcRoute;

test('GRPCRoute objects: a compiled route or an InvalidRouteError naming a field', () => {
  const g = new Gen(3);
  let compiled = 0;
  for (let i = 0; i < CASES; i++) {
    const route = g.mutateJson(ROUTE, g.pick([0.1, 0.3, 1])) as GrpcRoute;
    const c = typed('compileGrpcRoute', route, () => compileGrpcRoute(route));
    if (c === undefined) continue;
    compiled++;
    for (const r of c.routes) {
      assert.ok(r.clusters.length > 0);
      for (const w of r.clusters) assert.ok(Number.isInteger(w.weight) && w.weight > 0);
    }
  }
  assert.ok(compiled > 100, `${compiled} routes compiled`);
});

const SLICE: EndpointSlice = {
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: 'app-abc', namespace: 'prod', labels: { 'kubernetes.io/service-name': 'app' } },
  addressType: 'IPv4',
  ports: [{ name: 'grpc', port: 8080, protocol: 'TCP' }],
  endpoints: [
    {
      addresses: ['10.0.0.1'],
      conditions: { ready: true, serving: true, terminating: false },
      targetRef: { kind: 'Pod', name: 'app-1' },
      nodeName: 'n1',
      zone: 'z1',
    },
    { addresses: ['10.0.0.2'], conditions: { ready: false } },
  ],
} as EndpointSlice;

test('EndpointSlices: endpoints with an address and a port, or a typed error', () => {
  const g = new Gen(4);
  let eps = 0;
  for (let i = 0; i < CASES; i++) {
    const slice = g.mutateJson(SLICE, g.pick([0.2, 1])) as EndpointSlice;
    const sel = g.chance(0.5)
      ? ({ kind: 'number', port: 8080 } as const)
      : ({ kind: 'name', name: 'grpc' } as const);
    const out = typed('sliceEndpoints', slice, () => sliceEndpoints(slice, sel));
    for (const e of out ?? []) {
      eps++;
      assert.equal(typeof e.address, 'string', JSON.stringify(slice));
      assert.ok(Number.isInteger(e.port) && e.port > 0 && e.port < 65536, JSON.stringify(slice));
    }
  }
  assert.ok(eps > 100);
});
