// clientDefaults(): the service config it builds, option validation, and, against real grpc-js
// servers on 127.0.0.1, that a call whose first attempt gets UNAVAILABLE succeeds by retrying.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { clientDefaults, defaultServiceConfig } from 'grpc-kube/internal/client/defaults.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { echo, startEchoServer, ECHO_PATH } from '../server/echo.js';

test('defaults: retry UNAVAILABLE for every method, keepalive in seconds, no proxy, round_robin', () => {
  const opts = clientDefaults();
  assert.equal(opts['grpc.keepalive_time_ms'], 10_000);
  assert.equal(opts['grpc.keepalive_timeout_ms'], 5_000);
  assert.equal(opts['grpc.keepalive_permit_without_calls'], 1);
  assert.equal(opts['grpc.enable_http_proxy'], 0);
  assert.equal(opts['grpc.enable_retries'], 1);
  assert.deepEqual(JSON.parse(String(opts['grpc.service_config'])), {
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [
      {
        name: [{}],
        retryPolicy: {
          maxAttempts: 5,
          initialBackoff: '0.1s',
          maxBackoff: '1s',
          backoffMultiplier: 2,
          retryableStatusCodes: ['UNAVAILABLE'],
        },
      },
    ],
    retryThrottling: { maxTokens: 20, tokenRatio: 0.2 },
  });
});

test('defaults: chosen policy and config, idempotent methods get more codes, extra options win', () => {
  const sc = defaultServiceConfig({
    lbPolicy: 'grpc_kube_ewma',
    lbConfig: { decayMs: 5000 },
    retry: { maxAttempts: 3, initialBackoffMs: 50, maxBackoffMs: 250 },
    idempotentMethods: [{ service: 'shop.Catalog' }, { service: 'shop.Cart', method: 'Get' }],
  });
  assert.deepEqual(sc.loadBalancingConfig, [{ grpc_kube_ewma: { decayMs: 5000 } }]);
  assert.equal(sc.methodConfig.length, 2);
  assert.deepEqual(sc.methodConfig[1], {
    name: [{ service: 'shop.Catalog' }, { service: 'shop.Cart', method: 'Get' }],
    retryPolicy: {
      maxAttempts: 3,
      initialBackoff: '0.05s',
      maxBackoff: '0.25s',
      backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE', 'RESOURCE_EXHAUSTED', 'ABORTED'],
    },
  });
  assert.equal(
    clientDefaults({ extra: { 'grpc.keepalive_time_ms': 30_000 } })['grpc.keepalive_time_ms'],
    30_000,
  );
  const off = clientDefaults({ retry: false });
  assert.equal(off['grpc.enable_retries'], 0);
  assert.deepEqual(JSON.parse(String(off['grpc.service_config'])).methodConfig, []);
});

test('defaults: bad options throw InvalidOptionError naming the field', () => {
  const rows: Array<[Parameters<typeof clientDefaults>[0], string]> = [
    [{ retry: { maxAttempts: 6 } }, 'retry.maxAttempts'],
    [{ retry: { maxAttempts: 1 } }, 'retry.maxAttempts'],
    [{ retry: { initialBackoffMs: 0 } }, 'retry.initialBackoffMs'],
    [{ retry: { initialBackoffMs: 500, maxBackoffMs: 100 } }, 'retry.maxBackoffMs'],
    [{ retry: { retryableStatusCodes: ['UNAVAILABLE', 'NOPE' as 'OK'] } }, 'retry.retryableStatusCodes[1]'],
    [{ retry: { retryableStatusCodes: [] } }, 'retry.retryableStatusCodes'],
    [{ idempotentMethods: [{ service: '' }] }, 'idempotentMethods[0].service'],
    [{ idempotentMethods: [{ service: 'a.B' }, { service: 'a.B' }] }, 'idempotentMethods'],
    [{ retry: false, idempotentMethods: [{ service: 'a.B' }] }, 'idempotentMethods'],
    [{ lbPolicy: 'round robin' }, 'lbPolicy'],
    [{ keepaliveTimeMs: 1.5 }, 'keepaliveTimeMs'],
    [{ keepaliveTimeoutMs: -1 }, 'keepaliveTimeoutMs'],
  ];
  for (const [opts, field] of rows) {
    assert.throws(
      () => clientDefaults(opts),
      (e: unknown) => e instanceof InvalidOptionError && e.field === field,
      field,
    );
  }
});

test('a call whose first attempt gets UNAVAILABLE succeeds with the defaults, and fails without retries', async (t) => {
  let attempts = 0;
  const s = await startEchoServer((call, cb) => {
    attempts++;
    if (attempts % 2 === 1) cb({ code: grpc.status.UNAVAILABLE, details: 'shutting down' });
    else cb(null, Buffer.from(`ok after ${attempts}`));
  });
  t.after(() => s.server.forceShutdown());
  const client = new grpc.Client(
    s.address,
    grpc.credentials.createInsecure(),
    clientDefaults({ retry: { initialBackoffMs: 10, maxBackoffMs: 20 } }),
  );
  t.after(() => client.close());
  const ok = await echo(client, 'x');
  assert.deepEqual(ok, { code: grpc.status.OK, details: '', body: 'ok after 2' });
  assert.equal(attempts, 2);

  const plain = new grpc.Client(
    s.address,
    grpc.credentials.createInsecure(),
    clientDefaults({ retry: false }),
  );
  t.after(() => plain.close());
  const failed = await echo(plain, 'x');
  assert.equal(failed.code, grpc.status.UNAVAILABLE);
  assert.equal(attempts, 3);
});

test('ABORTED is retried only for methods marked idempotent', async (t) => {
  let attempts = 0;
  const s = await startEchoServer((call, cb) => {
    attempts++;
    if (attempts % 2 === 1) cb({ code: grpc.status.ABORTED, details: 'conflict' });
    else cb(null, Buffer.from('ok'));
  });
  t.after(() => s.server.forceShutdown());
  const backoff = { initialBackoffMs: 10, maxBackoffMs: 20 };
  const plain = new grpc.Client(
    s.address,
    grpc.credentials.createInsecure(),
    clientDefaults({ retry: backoff }),
  );
  t.after(() => plain.close());
  assert.equal((await echo(plain, 'x')).code, grpc.status.ABORTED);
  assert.equal(attempts, 1);
  const [service, method] = ECHO_PATH.slice(1).split('/') as [string, string];
  const idem = new grpc.Client(
    s.address,
    grpc.credentials.createInsecure(),
    clientDefaults({ retry: backoff, idempotentMethods: [{ service, method }] }),
  );
  t.after(() => idem.close());
  attempts = 0;
  assert.equal((await echo(idem, 'x')).code, grpc.status.OK);
  assert.equal(attempts, 2);
});
