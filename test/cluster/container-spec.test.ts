// The kubelet's reading of a container spec before anything starts, table-driven against the
// Kubernetes rules: `$(VAR)` expansion (only defined names, `$$` escapes, malformed references kept
// as written), env in order (a value sees only earlier entries, a repeated name takes the last value),
// fieldRef paths, ports by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  containerEnv,
  expandVars,
  expandedCommand,
  fieldRefValue,
  resolvePort,
} from '@grpc-kube/lab/internal/cluster/container-spec.js';
import type { Container, Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';

const vars: Record<string, string> = { A: 'a', EMPTY: '', B: '$(A)' };
const lookup = (n: string): string | undefined => (Object.hasOwn(vars, n) ? vars[n] : undefined);

test('expandVars follows the Kubernetes expansion rules', () => {
  const table: Array<[string, string]> = [
    ['$(A)', 'a'],
    ['x$(A)y$(A)', 'xaya'],
    ['$(EMPTY)', ''],
    ['$(MISSING)', '$(MISSING)'],
    ['$$(A)', '$(A)'],
    ['$$$(A)', '$a'],
    ['$$', '$'],
    ['$', '$'],
    ['a$', 'a$'],
    ['$A', '$A'],
    ['$(A', '$(A'],
    ['$()', '$()'],
    // No recursion: a value is not expanded again.
    ['$(B)', '$(A)'],
    ['', ''],
  ];
  for (const [input, want] of table) assert.equal(expandVars(input, lookup), want, JSON.stringify(input));
});

const pod: Pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'p', namespace: 'ns', uid: 'u-1', labels: { app: 'x' }, annotations: {} },
  spec: { nodeName: 'n1', containers: [] },
};
const at = { podIP: '10.0.0.5', hostIP: '10.0.0.1' };

test('containerEnv: in order, earlier names only, node env first, the last of a repeated name wins', () => {
  const c: Container = {
    name: 'c',
    env: [
      { name: 'LATER_REF', value: '$(X)' },
      { name: 'X', value: 'one' },
      { name: 'Y', value: '$(X)-$(HOST)' },
      { name: 'X', value: 'two' },
      { name: 'IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    ],
  };
  const env = containerEnv(pod, c, at, { HOST: 'api' });
  assert.deepEqual(env, { HOST: 'api', LATER_REF: '$(X)', X: 'two', Y: 'one-api', IP: '10.0.0.5' });
  assert.deepEqual(expandedCommand({ name: 'c', command: ['run', '$(X)'], args: ['$$(X)', '$(Y)'] }, env), {
    command: ['run', 'two'],
    args: ['$(X)', 'one-api'],
  });
  assert.deepEqual(expandedCommand({ name: 'c' }, env), {});
});

test('fieldRef paths, and a typed error naming the ones the lab resolves', () => {
  assert.equal(fieldRefValue(pod, "metadata.labels['app']", at), 'x');
  assert.equal(fieldRefValue(pod, "metadata.labels['none']", at), '');
  assert.equal(fieldRefValue(pod, 'spec.serviceAccountName', at), 'default');
  assert.equal(fieldRefValue(pod, 'status.hostIP', at), '10.0.0.1');
  assert.throws(() => fieldRefValue(pod, 'spec.schedulerName', at), {
    code: 'GK_ERR_LAB_POD_SPEC',
    message: /spec\.schedulerName.*metadata\.name/,
  });
});

test('ports by number, numeric string or name; an unknown name is a typed error', () => {
  const c: Container = { name: 'c', ports: [{ name: 'grpc', containerPort: 50051 }] };
  assert.equal(resolvePort(c, 8080), 8080);
  assert.equal(resolvePort(c, '9090'), 9090);
  assert.equal(resolvePort(c, 'grpc'), 50051);
  assert.throws(() => resolvePort(c, 'http'), {
    code: 'GK_ERR_LAB_POD_SPEC',
    message: /no port named "http".*grpc/,
  });
});
