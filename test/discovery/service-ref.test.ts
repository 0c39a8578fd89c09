import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  checkServiceRef,
  isDnsLabel,
  parseServiceRef,
  tryParseServiceRef,
  type ServiceRefRules,
} from 'grpc-kube/internal/discovery/service-ref.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';

const num = (port: number) => ({ kind: 'number', port });
const named = (name: string) => ({ kind: 'name', name });
const label63 = 'a'.repeat(63);
const label64 = 'a'.repeat(64);

// [text, rules, the ServiceRef, or a pattern of the reason it is not one]
const table: Array<[string, ServiceRefRules<string | undefined>, unknown]> = [
  ['hello.default:50051', {}, { service: 'hello', namespace: 'default', port: num(50051) }],
  ['hello.default:grpc', {}, { service: 'hello', namespace: 'default', port: named('grpc') }],
  ['hello:80', {}, { service: 'hello', namespace: undefined, port: num(80) }],
  ['hello:80', { defaultNamespace: 'apps' }, { service: 'hello', namespace: 'apps', port: num(80) }],
  ['hello.prod.svc.cluster.local:80', {}, { service: 'hello', namespace: 'prod', port: num(80) }],
  ['Hello.Prod:80', { caseInsensitive: true }, { service: 'hello', namespace: 'prod', port: num(80) }],
  [`${label63}.ns:80`, {}, { service: label63, namespace: 'ns', port: num(80) }],
  ['app.ns:80', { exact: true }, { service: 'app', namespace: 'ns', port: num(80) }],
  ['hello.default', {}, /port is missing/],
  ['hello.default:0', {}, /out of range/],
  ['hello.default:65536', {}, /out of range/],
  ['hello.default:Grpc_Port', {}, /port name/],
  ['hello.default:a-very-long-port-name', {}, /port name/],
  ['Hello.default:80', {}, /not a valid Service name/],
  [`${label64}.ns:80`, {}, /not a valid Service name/],
  [`svc.${label64}:80`, {}, /not a valid namespace name/],
  ['hello:80', { defaultNamespace: 'Bad_Ns' }, /not a valid namespace name/],
  ['a.b.c:80', {}, /not service\.namespace/],
  ['app:80', { exact: true }, /not service\.namespace/],
  ['app.ns.svc:80', { exact: true }, /not service\.namespace/],
  ['app.ns:grpc', { exact: true }, /port name/],
];

test('ServiceRef parser: the table, in both error modes', () => {
  for (const [text, rules, want] of table) {
    if (want instanceof RegExp) {
      assert.match(checkServiceRef(text, rules) as string, want, text);
      assert.equal(tryParseServiceRef(text, rules), undefined, text);
      assert.throws(
        () => parseServiceRef(text, rules),
        (err: unknown) =>
          err instanceof GrpcKubeError &&
          err.code === 'GK_ERR_INVALID_TARGET' &&
          want.test(err.message) &&
          // the message says what to use instead
          err.message.includes('kubernetes:///service.namespace:port'),
        text,
      );
    } else {
      assert.deepEqual(parseServiceRef(text, rules), want, text);
      assert.deepEqual(tryParseServiceRef(text, rules), want, text);
    }
  }
});

test('the throwing mode raises the error the caller makes of the reason', () => {
  assert.throws(
    () => parseServiceRef('svc', {}, (why) => new InvalidOptionError('target', why)),
    (err: unknown) => err instanceof InvalidOptionError && /port is missing/.test(err.message),
  );
});

test('one DNS label rule: RFC 1123, at most 63 characters', () => {
  assert.ok(isDnsLabel(label63));
  assert.ok(!isDnsLabel(label64));
  for (const bad of ['', '-a', 'a-', 'A', 'a_b', 'a.b']) assert.ok(!isDnsLabel(bad), bad);
});
