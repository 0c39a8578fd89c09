import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseKubernetesTarget } from 'grpc-kube/internal/resolver/target.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

test('kubernetes: target forms users know', () => {
  const table: Array<[string | undefined, string, unknown]> = [
    [
      undefined,
      '/hello.default:50051',
      { service: 'hello', namespace: 'default', port: { kind: 'number', port: 50051 } },
    ],
    [
      undefined,
      'hello.default:grpc',
      { service: 'hello', namespace: 'default', port: { kind: 'name', name: 'grpc' } },
    ],
    [
      undefined,
      'hello:50051',
      { service: 'hello', namespace: undefined, port: { kind: 'number', port: 50051 } },
    ],
    [
      undefined,
      'hello.prod.svc.cluster.local:50051',
      { service: 'hello', namespace: 'prod', port: { kind: 'number', port: 50051 } },
    ],
    [
      undefined,
      'hello.prod.svc:50051',
      { service: 'hello', namespace: 'prod', port: { kind: 'number', port: 50051 } },
    ],
    ['prod', 'hello:50051', { service: 'hello', namespace: 'prod', port: { kind: 'number', port: 50051 } }],
  ];
  for (const [authority, path, want] of table) {
    assert.deepEqual(parseKubernetesTarget(authority, path, path), want, path);
  }
});

test('bad targets get GK_ERR_INVALID_TARGET saying what is wrong', () => {
  const bad: Array<[string | undefined, string, RegExp]> = [
    [undefined, 'hello.default', /port is missing/],
    [undefined, 'hello.default:0', /out of range/],
    [undefined, 'hello.default:70000', /out of range/],
    [undefined, 'hello.default:Grpc_Port', /port name/],
    [undefined, 'Hello.default:80', /not a valid Service name/],
    [undefined, 'hello.default.cluster:80', /service.namespace/],
    ['prod', 'hello.other:80', /service:port/],
    ['Prod', 'hello:80', /not a valid namespace/],
  ];
  for (const [authority, path, re] of bad) {
    assert.throws(
      () => parseKubernetesTarget(authority, path, path),
      (err: unknown) =>
        err instanceof GrpcKubeError && err.code === 'GK_ERR_INVALID_TARGET' && re.test(err.message),
      path,
    );
  }
});
