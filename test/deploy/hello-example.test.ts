// examples/hello on loopback: the env contract the manifests rely on (defaults, typed errors naming
// the variable), the client's round output, and a real round: three kit servers, the client's ten
// concurrent RPCs spread over all three, then one server drained by its kit mid-loop with no RPC
// lost (clientDefaults() retries the calls the GOAWAY races).

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { clientConfigFromEnv, serverConfigFromEnv } from '../../examples/hello/config.js';
import { formatRound, runHelloClient, type RoundResult } from '../../examples/hello/client.js';
import { startHelloServer, type HelloServer } from '../../examples/hello/server.js';

const invalid = (variable: string) => (e: unknown) =>
  e instanceof GrpcKubeError && e.code === 'GK_ERR_INVALID_OPTION' && e.message.includes(variable);

describe('examples/hello configuration', () => {
  it('server: defaults match the kit and the manifests; bad values name their variable', () => {
    const c = serverConfigFromEnv({ POD_NAME: 'hello-0' });
    assert.deepEqual(
      { ...c },
      {
        podName: 'hello-0',
        version: '',
        host: '0.0.0.0',
        port: 50051,
        propagationDelayMs: 5000,
        graceMs: 20000,
        maxConnectionAgeMs: 0,
        maxConnectionAgeGraceMs: 10000,
        logRpcs: false,
      },
    );
    assert.ok(Object.isFrozen(c));
    assert.equal(serverConfigFromEnv({ POD_IP: '10.244.0.7' }).host, '10.244.0.7');
    assert.equal(serverConfigFromEnv({ POD_IP: '10.244.0.7', LISTEN_HOST: '::' }).host, '::');
    assert.throws(() => serverConfigFromEnv({ PORT: '50051x' }), invalid('PORT'));
    assert.throws(() => serverConfigFromEnv({ PORT: '70000' }), invalid('PORT'));
    assert.throws(() => serverConfigFromEnv({ DRAIN_GRACE_MS: '-1' }), invalid('DRAIN_GRACE_MS'));
    assert.throws(() => serverConfigFromEnv({ LOG_RPCS: 'yes' }), invalid('LOG_RPCS'));
  });

  it('client: the default target is the kubernetes: resolver in the pod’s namespace', () => {
    const c = clientConfigFromEnv({ POD_NAMESPACE: 'hello-kubernetes', POD_NAME: 'hello-client-1' });
    assert.equal(c.target, 'kubernetes:///hello.hello-kubernetes:50051');
    assert.equal(c.clientId, 'hello-client-1');
    assert.equal(c.concurrency, 10);
    assert.equal(c.lbPolicy, 'round_robin');
    assert.equal(c.authority, undefined);
    assert.equal(clientConfigFromEnv({ AUTHORITY: 'hello.ns:50051' }).authority, 'hello.ns:50051');
    assert.throws(() => clientConfigFromEnv({ CONCURRENCY: '0' }), invalid('CONCURRENCY'));
    assert.throws(() => clientConfigFromEnv({ LB_POLICY: 'round robin' }), invalid('LB_POLICY'));
  });

  it('client: one line per round, pods sorted, failures by code', () => {
    const r: RoundResult = {
      round: 7,
      byPod: new Map([
        ['hello-b', 3],
        ['hello-a', 4],
      ]),
      failedByCode: new Map([['UNAVAILABLE', 3]]),
    };
    assert.equal(formatRound(r, 10), 'round 7 7/10 ok  hello-a=4 hello-b=3  failed: UNAVAILABLE=3');
  });
});

describe('examples/hello server and client on loopback', () => {
  const servers: HelloServer[] = [];
  after(async () => {
    for (const s of servers) s.server.forceShutdown();
  });

  it('ten concurrent RPCs reach all three pods; a pod drained mid-loop loses none', async () => {
    for (const name of ['hello-a', 'hello-b', 'hello-c']) {
      const config = serverConfigFromEnv({
        POD_NAME: name,
        LISTEN_HOST: '127.0.0.1',
        PORT: '0',
        DRAIN_PROPAGATION_MS: '50',
        // Only bounds the drain: in-flight RPCs finish long before, however loaded the machine.
        DRAIN_GRACE_MS: '30000',
      });
      servers.push(await startHelloServer(config, { signals: [], exit: null }));
    }
    assert.ok(servers.every((s) => s.kit.ready));
    const target = `ipv4:${servers.map((s) => `127.0.0.1:${s.port}`).join(',')}`;

    const first = await runHelloClient({
      config: clientConfigFromEnv({
        TARGET: target,
        ROUNDS: '10',
        INTERVAL_MS: '0',
        DEADLINE_MS: '30000',
        CLIENT_ID: 't',
      }),
    });
    assert.equal(first.length, 10);
    // The first rounds may run before all three connections are up (later on a loaded machine).
    for (const r of first.slice(-3)) {
      // round_robin over three: 4/3/3 in some order.
      assert.deepEqual([...r.byPod.values()].sort(), [3, 3, 4], formatRound(r, 10));
      assert.equal(r.failedByCode.size, 0);
    }

    const rounds: RoundResult[] = [];
    const ac = new AbortController();
    let stopAfter = Number.POSITIVE_INFINITY;
    let onRounds: (() => void) | undefined;
    const loop = runHelloClient({
      config: clientConfigFromEnv({ TARGET: target, INTERVAL_MS: '5', DEADLINE_MS: '30000', CLIENT_ID: 't' }),
      signal: ac.signal,
      onRound: (r) => {
        rounds.push(r);
        if (r.round >= stopAfter) ac.abort();
        onRounds?.();
      },
    });
    await new Promise<void>((resolve) => {
      onRounds = () => {
        if (rounds.length >= 3) resolve();
      };
    });
    // The kit's sequence: NOT_SERVING, 50 ms, GOAWAY; in-flight RPCs finish, new ones go elsewhere.
    const result = await (servers[1] as HelloServer).kit.shutdown('test');
    assert.equal(result.forced, false);
    stopAfter = rounds.length + 5;
    await loop;
    const failed = rounds.flatMap((r) => [...r.failedByCode.entries()]);
    assert.deepEqual(failed, [], 'no RPC lost to the drain');
    const lastRounds = rounds.slice(-3);
    for (const r of lastRounds) {
      assert.deepEqual([...r.byPod.keys()].sort(), ['hello-a', 'hello-c'], formatRound(r, 10));
    }
  });
});
