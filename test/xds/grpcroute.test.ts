// GRPCRoute validation and translation, table-driven: each bad field gets InvalidRouteError naming
// that field; good routes compile to the exact xDS matches and weights.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compileGrpcRoute,
  InvalidRouteError,
  routesForTarget,
  type GrpcRoute,
} from 'grpc-kube/internal/route/grpcroute.js';
import { parseClusterName, parseListenerName } from '@grpc-kube/xds/internal/resources.js';

function route(spec: GrpcRoute['spec'], name = 'r'): GrpcRoute {
  return { metadata: { name, namespace: 'ns' }, spec };
}
const parent = [{ kind: 'Service', name: 'app', port: 80 }];
const backend = [{ name: 'app-v1', port: 80 }];

test('bad fields are reported with the route and the field path', () => {
  const cases: Array<[GrpcRoute['spec'], string]> = [
    [{ parentRefs: parent }, 'spec.rules'],
    [{ parentRefs: [{ name: 'App_' }], rules: [{ backendRefs: backend }] }, 'spec.parentRefs[0].name'],
    [
      { parentRefs: [{ name: 'app', namespace: 'other' }], rules: [{ backendRefs: backend }] },
      'spec.parentRefs[0].namespace',
    ],
    [{ parentRefs: parent, rules: [{ backendRefs: [] }] }, 'spec.rules[0].backendRefs'],
    [{ parentRefs: parent, rules: [{ backendRefs: [{ name: 'a' }] }] }, 'spec.rules[0].backendRefs[0].port'],
    [
      { parentRefs: parent, rules: [{ backendRefs: [{ name: 'a', port: 80, weight: 1.5 }] }] },
      'spec.rules[0].backendRefs[0].weight',
    ],
    [
      { parentRefs: parent, rules: [{ backendRefs: [{ name: 'a', port: 80, weight: 0 }] }] },
      'spec.rules[0].backendRefs',
    ],
    [
      { parentRefs: parent, rules: [{ backendRefs: [{ name: 'a', port: 80, kind: 'Pod' }] }] },
      'spec.rules[0].backendRefs[0].kind',
    ],
    [
      { parentRefs: parent, rules: [{ backendRefs: [{ name: 'a', port: 80, namespace: 'x' }] }] },
      'spec.rules[0].backendRefs[0].namespace',
    ],
    [{ parentRefs: parent, rules: [{ filters: [{}], backendRefs: backend }] }, 'spec.rules[0].filters'],
    [
      { parentRefs: parent, rules: [{ matches: [{ method: {} }], backendRefs: backend }] },
      'spec.rules[0].matches[0].method',
    ],
    [
      { parentRefs: parent, rules: [{ matches: [{ method: { service: 'a/b' } }], backendRefs: backend }] },
      'spec.rules[0].matches[0].method.service',
    ],
    [
      {
        parentRefs: parent,
        rules: [{ matches: [{ method: { type: 'RegularExpression', method: '(' } }], backendRefs: backend }],
      },
      'spec.rules[0].matches[0].method.method',
    ],
    [
      {
        parentRefs: parent,
        rules: [{ matches: [{ headers: [{ name: 'a b', value: 'x' }] }], backendRefs: backend }],
      },
      'spec.rules[0].matches[0].headers[0].name',
    ],
  ];
  for (const [spec, field] of cases) {
    assert.throws(
      () => compileGrpcRoute(route(spec)),
      (e: unknown) =>
        e instanceof InvalidRouteError &&
        e.field === field &&
        e.route === 'ns/r' &&
        e.code === 'GK_ERR_INVALID_ROUTE',
      field,
    );
  }
});

test('a route without a Service parent is not ours (a Gateway route), not an error', () => {
  assert.equal(
    compileGrpcRoute(
      route({ parentRefs: [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'gw' }], rules: [] }),
    ),
    undefined,
  );
});

test('matches become exact/prefix/regex paths and headers, ordered by precedence, default last', () => {
  const c = compileGrpcRoute(
    route({
      parentRefs: parent,
      rules: [
        {
          matches: [{ method: { service: 'pkg.Svc' } }],
          backendRefs: [
            { name: 'a', port: 80, weight: 3 },
            { name: 'b', port: 80, weight: 0 },
          ],
        },
        {
          matches: [
            {
              method: { method: 'Get' },
              headers: [{ name: 'X-User', value: 'u', type: 'RegularExpression' }],
            },
          ],
          backendRefs: [{ name: 'b', port: 80 }],
        },
        {
          matches: [{ method: { service: 'pkg.Svc', method: 'Get' } }],
          backendRefs: [{ name: 'c', port: 80 }],
        },
      ],
    }),
  );
  assert.ok(c);
  const table = routesForTarget({ namespace: 'ns', service: 'app', port: 80 }, [c]);
  assert.deepEqual(
    table.map((r) => [r.path, r.headers, r.clusters]),
    [
      [{ kind: 'exact', value: '/pkg.Svc/Get' }, [], [{ cluster: 'ns/c:80', weight: 1 }]],
      [{ kind: 'prefix', value: '/pkg.Svc/' }, [], [{ cluster: 'ns/a:80', weight: 3 }]],
      [
        { kind: 'regex', value: '/[^/]+/Get' },
        [{ name: 'x-user', kind: 'regex', value: 'u' }],
        [{ cluster: 'ns/b:80', weight: 1 }],
      ],
      [{ kind: 'prefix', value: '' }, [], [{ cluster: 'ns/app:80', weight: 1 }]],
    ],
  );
  // Another port of the Service is not attached (parentRef names port 80).
  assert.deepEqual(
    routesForTarget({ namespace: 'ns', service: 'app', port: 81 }, [c]).map((r) => r.name),
    ['default'],
  );
});

test('listener and cluster names round-trip and reject what we do not serve', () => {
  assert.deepEqual(parseListenerName('app.ns:80'), { service: 'app', namespace: 'ns', port: 80 });
  assert.deepEqual(parseClusterName('ns/app:80'), { namespace: 'ns', service: 'app', port: 80 });
  for (const bad of ['app:80', 'app.ns', 'app.ns:0', 'App.ns:80', 'app.ns.svc:80', 'app.ns:70000'])
    assert.equal(parseListenerName(bad), undefined, bad);
});

test('regular expressions are RE2: what RE2 rejects (backreferences, lookaround, unbalanced) is an invalid route with the reason', () => {
  const withRegex = (value: string): GrpcRoute['spec'] => ({
    parentRefs: parent,
    rules: [
      {
        matches: [{ headers: [{ type: 'RegularExpression', name: 'x-user', value }] }],
        backendRefs: backend,
      },
    ],
  });
  const cases: Array<[string, RegExp]> = [
    ['(a)\\1', /invalid escape sequence/],
    ['(?=admin)a.*', /invalid perl operator/],
    ['(?<!x)y', /invalid perl operator/],
    // Valid inside the `^(?:…)$` the match wraps it in, invalid on its own.
    ['a)|(b', /unexpected \)|missing \)/],
    ['a{1001}', /invalid repetition size/],
  ];
  for (const [value, reason] of cases) {
    assert.throws(
      () => compileGrpcRoute(route(withRegex(value))),
      (e: unknown) =>
        e instanceof InvalidRouteError &&
        e.field === 'spec.rules[0].matches[0].headers[0].value' &&
        /RE2/.test(e.message) &&
        reason.test(e.message),
      value,
    );
  }
  // RE2 syntax JavaScript lacks is accepted.
  assert.ok(compileGrpcRoute(route(withRegex('(?i)alice|\\pL+'))));
});
