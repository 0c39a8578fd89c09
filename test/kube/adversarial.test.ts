// The seeded randomized run against the adversarial API server: rounds of faults (drops at random
// byte offsets, slow drip, garbage and truncated JSON, huge lines and bodies, empty watches, 410s,
// 5xx, hung requests, half-open connections) over TLS with HTTP/2, TLS with HTTP/1.1 and plain
// HTTP at once. After each round the faults stop, more changes are made, and every Service must
// follow the server within a bound: 0 crashes, 0 stale Services, requests and memory bounded.
// GK_ADVERSARIAL_SEED picks another seed; GK_ADVERSARIAL_ROUNDS another number of rounds per transport.

import { seededRandom } from 'grpc-kube/internal/balancer/runtime.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KubernetesEndpointSource } from 'grpc-kube/internal/discovery/kube-source.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { until } from '../helpers/kube.js';
import { AdversarialApiServer, FAULTS, slice, type Fault, type Transport } from './adversarial-server.js';

const SEED = Number(process.env.GK_ADVERSARIAL_SEED ?? 13);
const ROUNDS = Number(process.env.GK_ADVERSARIAL_ROUNDS ?? 70);
const SERVICES = 8;
/** A Service that has not followed the server this long after the faults stop is stale. */
const FOLLOW_BOUND_MS = 30_000;

interface RunResult {
  transport: Transport;
  rounds: number;
  stale: number;
  requests: number;
  faults: number;
  kinds: Fault[];
}

async function run(transport: Transport, seed: number): Promise<RunResult> {
  const rng = seededRandom(seed);
  const api = await AdversarialApiServer.start({
    transport,
    seed,
    bookmarkIntervalMs: 100,
    hugeBytes: 512 * 1024,
  });
  const client = KubeClient.fromKubeConfigString(api.kubeConfigYaml(), {
    maxLineBytes: 64 * 1024,
    maxBodyBytes: 256 * 1024,
    pingIntervalMs: 200,
    pingTimeoutMs: 300,
  });
  const want = new Map<string, string>();
  const seen = new Map<string, string>();
  const sources: KubernetesEndpointSource[] = [];
  let faults = 0;
  const kinds = new Set<Fault>();
  let stale = 0;
  const setIps = (svc: string, ip: string): void => {
    want.set(svc, ip);
    api.put('endpointslices', slice('default', svc, [ip]));
  };
  try {
    for (let i = 0; i < SERVICES; i++) setIps(`s${i}`, '10.0.0.1');
    for (let i = 0; i < SERVICES; i++) {
      const svc = `s${i}`;
      const src = new KubernetesEndpointSource(client, 'default', svc, {
        backoff: { initialMs: 10, maxMs: 100 },
        listTimeoutMs: 400,
        bookmarkIntervalMs: 100,
        random: seededRandom(seed * 31 + i),
      });
      sources.push(src);
      src.subscribe(
        { kind: 'number', port: 50051 },
        {
          onEndpoints: (v) =>
            seen.set(
              svc,
              v
                .endpoints()
                .map((e) => e.address)
                .join(),
            ),
          onError: () => {},
        },
      );
    }
    const followed = (): boolean =>
      [...want].every(([svc, ip]) => seen.get(svc) === ip) && sources.every((s) => s.status === 'synced');
    await until(followed, FOLLOW_BOUND_MS);
    for (let round = 0; round < ROUNDS; round++) {
      // Faults on: each request misbehaves with this round's probability, in a random way.
      const p = 0.2 + 0.7 * rng();
      api.fault = () => {
        if (rng() >= p) return 'none';
        faults++;
        const f = FAULTS[Math.floor(rng() * FAULTS.length)] as Fault;
        kinds.add(f);
        return f;
      };
      const kick = rng();
      if (kick < 0.4) api.dropConnections();
      else if (kick < 0.7) api.compact();
      for (let i = 0; i < SERVICES; i++) if (rng() < 0.5) setIps(`s${i}`, `10.1.${round % 250}.${i}`);
      const before = api.requests.total;
      const more = 1 + Math.floor(rng() * 4);
      // The fault window: until a few more requests came (or a short bound if none do).
      await until(() => api.requests.total >= before + more, 200).catch(() => {});
      // Faults off: one more change, then every Service must follow.
      api.fault = () => 'none';
      for (let i = 0; i < SERVICES; i++) if (rng() < 0.3) setIps(`s${i}`, `10.2.${round % 250}.${i}`);
      try {
        await until(followed, FOLLOW_BOUND_MS);
      } catch {
        stale += [...want].filter(([svc, ip]) => seen.get(svc) !== ip).length || 1;
      }
    }
    return { transport, rounds: ROUNDS, stale, requests: api.requests.total, faults, kinds: [...kinds] };
  } finally {
    await Promise.all(sources.map((s) => s.stop()));
    client.close();
    await api.close();
  }
}

test(`seeded adversarial API server: ${3 * ROUNDS} rounds over h2, TLS HTTP/1.1 and http: 0 crashes, 0 stale Services, bounded requests and memory`, async () => {
  let crashes = 0;
  const onCrash = (): void => {
    crashes++;
  };
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  const rss0 = process.memoryUsage().rss;
  try {
    const results = await Promise.all([run('h2', SEED), run('https1', SEED + 1), run('http', SEED + 2)]);
    const grew = process.memoryUsage().rss - rss0;
    process.stdout.write(
      `# adversarial seed=${SEED} ${JSON.stringify(results)} rssGrowthMiB=${Math.round(grew / 2 ** 20)}\n`,
    );
    assert.equal(crashes, 0);
    for (const r of results) {
      assert.equal(r.stale, 0, `${r.transport}: stale Services`);
      // A hot loop makes thousands of requests a round; the loop's backoff keeps it to a handful
      // per Service per round (fault window, re-list, re-watch).
      assert.ok(r.requests <= r.rounds * SERVICES * 10, `${r.transport}: ${r.requests} requests`);
    }
    // The faults did happen, of most kinds (how many depends on how many requests the run made).
    assert.ok(results.reduce((n, r) => n + r.faults, 0) >= ROUNDS, 'faults were injected');
    assert.ok(new Set(results.flatMap((r) => r.kinds)).size >= 8, 'most kinds of fault were seen');
    assert.ok(grew < 256 * 2 ** 20, `RSS grew ${grew} bytes`);
  } finally {
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
  }
});
