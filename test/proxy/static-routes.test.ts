import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileRoutes, staticRoute } from '@grpc-kube/proxy/internal/target.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

test('static routes compile to RouteSpecs and match in order: authority (any case), header, path prefix', () => {
  const routes = compileRoutes(
    [
      { match: { authority: 'API.example.com' }, target: 'api.prod:grpc' },
      { match: { header: { name: 'X-Tenant', value: 'blue' } }, target: 'blue.prod:80' },
      { match: { pathPrefix: '/hello.Greeter/' }, target: 'greeter:80' },
    ],
    'apps',
  );
  assert.deepEqual(routes.specs[0], {
    name: 'routes[0]',
    path: { kind: 'prefix', value: '' },
    headers: [{ name: ':authority', kind: 'exact', value: 'api.example.com' }],
    clusters: [{ cluster: 'prod/api:grpc', weight: 1 }],
  });
  assert.ok(Object.isFrozen(routes.specs[0]));
  const headers: Record<string, string> = { 'x-tenant': 'blue' };
  const table: Array<[string, string, Record<string, string>, unknown]> = [
    [
      'api.example.com',
      '/any.Svc/M',
      {},
      { namespace: 'prod', service: 'api', port: { kind: 'name', name: 'grpc' } },
    ],
    [
      'other',
      '/any.Svc/M',
      headers,
      { namespace: 'prod', service: 'blue', port: { kind: 'number', port: 80 } },
    ],
    [
      'other',
      '/hello.Greeter/Say',
      {},
      { namespace: 'apps', service: 'greeter', port: { kind: 'number', port: 80 } },
    ],
    ['other', '/any.Svc/M', {}, undefined],
  ];
  for (const [authority, path, h, want] of table) {
    const got = staticRoute(routes, path, (name) =>
      name === ':authority' ? authority.toLowerCase() : h[name],
    );
    assert.deepEqual(got, want, `${authority} ${path}`);
  }
});

test('bad static routes are InvalidOptionErrors naming the field', () => {
  for (const [route, field] of [
    [{ match: {}, target: 'a.b:80' }, /routes\[0\]\.match/],
    [{ match: { pathPrefix: 'x' }, target: 'a.b:80' }, /pathPrefix/],
    [{ match: { pathPrefix: '/x' }, target: 'a.b' }, /routes\[0\]\.target/],
  ] as const) {
    assert.throws(
      () => compileRoutes([route], 'default'),
      (err: unknown) =>
        err instanceof GrpcKubeError && err.code === 'GK_ERR_INVALID_OPTION' && field.test(err.message),
    );
  }
});
