import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LAB_DEFAULTS, POD_NICE, labConfig } from '@grpc-kube/lab/internal/lab/config.js';
import { LAB_DEFAULTS as CLI_DEFAULTS } from '@grpc-kube/cli/internal/lab.js';
import { POD_SHUTDOWNS } from '@grpc-kube/lab/internal/lab/runner.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

test("the CLI's lab defaults are the library's: the same frozen object", () => {
  assert.equal(CLI_DEFAULTS, LAB_DEFAULTS);
  assert.ok(Object.isFrozen(LAB_DEFAULTS) && Object.isFrozen(LAB_DEFAULTS.workload));
  assert.equal(LAB_DEFAULTS.podNice, POD_NICE);
  assert.ok(POD_SHUTDOWNS.includes(LAB_DEFAULTS.pods));
});

test('labConfig: defaults from the one table, pacing held about constant per strategy, frozen', () => {
  const c = labConfig({ strategyCount: 2 });
  assert.ok(Object.isFrozen(c));
  assert.deepEqual(c, {
    cluster: 'embedded',
    clients: 2,
    concurrency: 5,
    pacingMs: 50,
    pods: 'kit',
    clientDefaults: false,
    idempotent: false,
    hedgeMs: undefined,
    podCommand: undefined,
    podNice: POD_NICE,
    tls: false,
    manifests: false,
  });
  assert.equal(labConfig({ strategyCount: 9 }).pacingMs, 90);
  assert.equal(labConfig({ strategyCount: 9, pacingMs: 0 }).pacingMs, 0);
});

test('labConfig: each bad option is an InvalidOptionError naming its flag', () => {
  const bad: Array<[Parameters<typeof labConfig>[0], RegExp]> = [
    [{ strategyCount: 1, cluster: 'kind' }, /--cluster/],
    [{ strategyCount: 1, clients: 0 }, /--clients/],
    [{ strategyCount: 1, pacingMs: -1 }, /--pacing/],
    [{ strategyCount: 1, pacingMs: Number.NaN }, /--pacing/],
    [{ strategyCount: 1, pods: 'nice' }, /--pods/],
    [{ strategyCount: 1, podCommand: ' ' }, /--pod-command/],
    [{ strategyCount: 1, podCommand: 'x', tls: true }, /--tls/],
    [{ strategyCount: 1, clientDefaults: true, hedgeMs: 1.5 }, /--hedge.*whole number/],
    [{ strategyCount: 1, hedgeMs: 100 }, /--hedge.*needs --client-defaults/],
    [{ strategyCount: 1, idempotent: true }, /--idempotent.*needs --client-defaults/],
    [{ strategyCount: 1, podNice: 20 }, /--pod-nice/],
  ];
  for (const [input, re] of bad) {
    assert.throws(
      () => labConfig(input),
      (err: unknown) =>
        err instanceof GrpcKubeError && err.code === 'GK_ERR_INVALID_OPTION' && re.test(err.message),
      JSON.stringify(input),
    );
  }
});
