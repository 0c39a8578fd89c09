// A lab strategy whose clients dial `dns:` (the lab's DNS server as the target's authority) needs
// grpc-js's c-ares resolver, fixed when grpc-js loads (GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true).
// This process loads grpc-js without it: every such strategy must fail by name with
// GK_ERR_LAB_DNS_RESOLVER, never run with every RPC UNAVAILABLE. `grpc-kube lab` checked only the
// headless and max-connection-age strategies by name; with --manifests the clusterip and proxy
// overlays' clients dial dns: too.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';

// Before anything loads grpc-js: every import below that could is dynamic.
delete process.env['GRPC_NODE_USE_ALTERNATIVE_RESOLVER'];

const { grpcUsesAlternativeResolver } = await import('@grpc-kube/lab/internal/lab/dns-server.js');
const { STRATEGIES } = await import('@grpc-kube/lab/internal/lab/strategies/index.js');
const { dnsDialingStrategies, runScenario } = await import('@grpc-kube/lab/internal/lab/runner.js');
const { labCommand } = await import('@grpc-kube/cli/internal/lab.js');
const { labConfig } = await import('@grpc-kube/lab/internal/lab/config.js');
const { builtinScenarios, scaleScenario } = await import('@grpc-kube/lab/internal/lab/scenario.js');
const { seededRandom } = await import('grpc-kube/internal/balancer/index.js');

const isResolverError = (names: readonly string[]) => (e: unknown) =>
  e instanceof GrpcKubeError &&
  e.code === 'GK_ERR_LAB_DNS_RESOLVER' &&
  names.every((n) => e.message.includes(n)) &&
  e.message.includes('GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true before anything imports @grpc/grpc-js');

test('the strategies that dial dns:, with and without --manifests', () => {
  assert.equal(grpcUsesAlternativeResolver(), false, 'this test needs grpc-js without c-ares');
  assert.deepEqual(dnsDialingStrategies(STRATEGIES, { manifests: false }), [
    'headless-pick-first',
    'headless-dns-round-robin',
    'max-connection-age',
  ]);
  // The overlays' clients: deploy/base (clusterip), deploy/headless, deploy/max-connection-age and
  // deploy/proxy dial dns:; kubernetes, sidecar (ipv4:) and xds do not; dns-poll has no overlay.
  assert.deepEqual(dnsDialingStrategies(STRATEGIES, { manifests: true }), [
    'clusterip',
    'headless-pick-first',
    'headless-dns-round-robin',
    'max-connection-age',
    'proxy',
  ]);
});

test('grpc-kube lab --manifests --strategy proxy: GK_ERR_LAB_DNS_RESOLVER before anything runs', async () => {
  await assert.rejects(
    labCommand(['--manifests', '--quick', '--scenario', 'scale-up', '--strategy', 'kubernetes,proxy']),
    isResolverError(['proxy']),
  );
});

test(
  'runScenario: a strategy that dials dns: fails alone by name, declared or not',
  { timeout: 120_000 },
  async () => {
    const scenario = scaleScenario(
      builtinScenarios().find((s) => s.name === 'scale-up')!,
      0.3,
    );
    const random = seededRandom(1);
    // Declared (or an overlay's TARGET): refused before the cluster starts.
    const early = await runScenario({
      scenario,
      strategies: STRATEGIES.filter((s) => s.name === 'proxy'),
      timeScale: 0.3,
      random,
      config: labConfig({ strategyCount: 1, manifests: true }),
    });
    assert.deepEqual(
      early.failed.map((f) => f.strategy),
      ['proxy'],
    );
    assert.match(early.failed[0]?.reason ?? '', /^GK_ERR_LAB_DNS_RESOLVER: proxy dials a dns: target/);
    // Undeclared: its started target gives it away.
    const undeclared = await runScenario({
      scenario,
      strategies: [
        {
          name: 'own-dns',
          description: 'dials dns: without saying so',
          flavour: 'plain',
          canRoute: false,
          start: async (env) => ({
            target: `dns://${env.dns.address}/${env.apps.plain.dnsName}:${env.port}`,
            close: async () => {},
          }),
        },
      ],
      timeScale: 0.3,
      random,
      config: labConfig({ strategyCount: 1 }),
    });
    assert.deepEqual(
      undeclared.failed.map((f) => f.strategy),
      ['own-dns'],
    );
    assert.match(undeclared.failed[0]?.reason ?? '', /^GK_ERR_LAB_DNS_RESOLVER: own-dns dials a dns: target/);
    assert.deepEqual(undeclared.runs, []);
  },
);
