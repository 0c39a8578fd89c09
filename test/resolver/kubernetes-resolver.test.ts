import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { setup, type GrpcKube } from 'grpc-kube/internal/index.js';
import { newEchoClient, startEchoServer, who, type Echo, type EchoServer } from '../helpers/echo.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';

interface Fixture {
  api: EmbeddedApiServer;
  gk: GrpcKube;
  servers: EchoServer[];
  port: number;
  slices: SliceWriter;
}

/** n echo servers on 127.0.10.(base+i), all on one port, and a grpc-kube setup pointed at the API server. */
async function fixture(
  t: { after(fn: () => unknown): void },
  n: number,
  base: number,
  token?: string,
): Promise<Fixture> {
  const api = await startApi();
  const first = await startEchoServer(`pod-${base}`, `127.0.10.${base}`);
  const servers = [first];
  for (let i = 1; i < n; i++)
    servers.push(await startEchoServer(`pod-${base + i}`, `127.0.10.${base + i}`, first.port));
  const gk = setup({
    kubeConfig: api.kubeConfigYaml(token ?? api.adminToken),
    source: { backoff: { initialMs: 50, maxMs: 250 } },
  });
  t.after(async () => {
    await gk.close();
    for (const s of servers) s.kill();
    await api.close();
  });
  return { api, gk, servers, port: first.port, slices: new SliceWriter(api, 'hello', first.port) };
}

const ep = (s: EchoServer, extra: { ready?: boolean; serving?: boolean; terminating?: boolean } = {}) => ({
  ip: s.host,
  pod: s.name,
  ...extra,
});

async function rpcs(client: Echo, n: number, deadlineMs = 30_000): Promise<Map<string, number>> {
  const by = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = await who(client, deadlineMs);
    by.set(r.server, (by.get(r.server) ?? 0) + 1);
  }
  return by;
}

test('3 pods scaled to 5: the two new pods receive RPCs', async (t) => {
  const f = await fixture(t, 5, 1);
  f.slices.put(
    'hello-a',
    f.servers.slice(0, 3).map((s) => ep(s)),
  );
  const client = newEchoClient(`kubernetes:///hello.default:${f.port}`);
  t.after(() => client.close());
  // round_robin picks among connected subchannels: warm up until all three are, then count.
  await until(async () => (await rpcs(client, 3)).size === 3, 30_000, 0);
  const before = await rpcs(client, 30);
  assert.deepEqual([...before.keys()].sort(), ['pod-1', 'pod-2', 'pod-3']);
  assert.deepEqual([...before.values()], [10, 10, 10], 'round_robin spreads evenly');
  f.slices.put(
    'hello-a',
    f.servers.map((s) => ep(s)),
  );
  // All five connected, not only pod-5: one still connecting gets no round_robin share.
  await until(async () => (await rpcs(client, 5)).size === 5, 30_000, 0);
  const after = await rpcs(client, 50);
  assert.deepEqual([...after.keys()].sort(), ['pod-1', 'pod-2', 'pod-3', 'pod-4', 'pod-5']);
  for (const n of after.values()) assert.equal(n, 10);
});

test('an endpoint turning terminating gets no new RPCs while its in-flight ones finish', async (t) => {
  const f = await fixture(t, 2, 11);
  const [a, b] = f.servers as [EchoServer, EchoServer];
  f.slices.put('hello-a', [ep(a), ep(b)]);
  const client = newEchoClient(`kubernetes:///hello.default:${f.port}`);
  t.after(() => client.close());
  await until(async () => (await rpcs(client, 2)).size === 2, 30_000, 0);
  // Four held RPCs: round_robin puts two on each pod. They stay in flight until released, however long
  // the checks below take (a fixed delay could run out first on a stalled machine).
  const slow = Array.from({ length: 4 }, () => who(client, 120_000, { hold: true }));
  await until(() => a.inFlight === 2 && b.inFlight === 2);
  f.slices.put('hello-a', [ep(a, { ready: false, serving: true, terminating: true }), ep(b)]);
  // Wait until the channel has the change: 20 RPCs in a row on b.
  await until(async () => (await rpcs(client, 20)).get('pod-12') === 20, 30_000, 0);
  const servedByA = a.served;
  const later = await rpcs(client, 100);
  assert.equal(later.get('pod-12'), 100);
  assert.equal(a.served, servedByA, 'the draining pod got no new RPC');
  assert.equal(a.inFlight, 2, 'its in-flight RPCs are still running');
  a.release();
  b.release();
  const replies = await Promise.all(slow);
  assert.deepEqual(replies.map((r) => r.server).sort(), ['pod-11', 'pod-11', 'pod-12', 'pod-12']);
});

test('a Service with 3 slices and endpoints moving between them: no failed RPC, no lost endpoint', async (t) => {
  const f = await fixture(t, 6, 21);
  const s = f.servers;
  f.slices.put('hello-1', [ep(s[0]!), ep(s[1]!)]);
  f.slices.put('hello-2', [ep(s[2]!), ep(s[3]!)]);
  f.slices.put('hello-3', [ep(s[4]!), ep(s[5]!)]);
  const client = newEchoClient(`kubernetes:///hello.default:grpc`);
  t.after(() => client.close());
  await until(async () => (await rpcs(client, 6)).size === 6, 30_000, 0);
  let failed = 0;
  let ok = 0;
  let stop = false;
  const load = (async () => {
    while (!stop && ok + failed < 20000) {
      try {
        await who(client, 30_000);
        ok++;
      } catch {
        failed++;
      }
    }
  })();
  // The controller rebalances: each move lists the endpoint in its new slice before dropping it.
  const moves: Array<[string, EchoServer[], string, EchoServer[]]> = [
    ['hello-2', [s[2]!, s[3]!, s[0]!], 'hello-1', [s[1]!]],
    ['hello-3', [s[4]!, s[5]!, s[2]!], 'hello-2', [s[3]!, s[0]!]],
    ['hello-1', [s[1]!, s[4]!], 'hello-3', [s[5]!, s[2]!]],
  ];
  for (const [to, toEps, from, fromEps] of moves) {
    f.slices.put(
      to,
      toEps.map((x) => ep(x)),
    );
    await new Promise((r) => setTimeout(r, 20));
    f.slices.put(
      from,
      fromEps.map((x) => ep(x)),
    );
    await new Promise((r) => setTimeout(r, 20));
  }
  // Every pod keeps receiving RPCs after the moves: wait for each to serve more (not a fixed 200 ms,
  // in which a stalled machine may serve nothing).
  const served = s.map((x) => x.served);
  await until(() => s.every((x, i) => x.served > served[i]!), 30_000);
  stop = true;
  await load;
  assert.equal(failed, 0);
  assert.ok(ok > 0);
  s.forEach((x, i) => assert.ok(x.served > served[i]!, `${x.name} kept receiving RPCs after the moves`));
});

test('403: the call fails fast with UNAVAILABLE naming the missing RBAC permission', async (t) => {
  const f = await fixture(t, 1, 31, 'no-rbac');
  f.api.addToken('no-rbac', { user: 'system:serviceaccount:default:app', rules: [] });
  f.slices.put('hello-a', [ep(f.servers[0]!)]);
  const client = newEchoClient(`kubernetes:///hello.default:${f.port}`);
  t.after(() => client.close());
  // A deadline far longer than failing fast takes: DEADLINE_EXCEEDED would mean the call waited.
  await assert.rejects(who(client, 30_000), (err: { code: number; details: string }) => {
    assert.equal(
      err.code,
      status.UNAVAILABLE,
      'not DEADLINE_EXCEEDED: the error arrives before the deadline',
    );
    assert.match(err.details, /GK_ERR_KUBE_FORBIDDEN/);
    assert.match(err.details, /"list" on endpointslices\.discovery\.k8s\.io in namespace "default"/);
    return true;
  });
});

test('100 channels to one Service share exactly 1 watch, released with the last channel', async (t) => {
  const f = await fixture(t, 2, 41);
  f.slices.put(
    'hello-a',
    f.servers.map((s) => ep(s)),
  );
  const clients = Array.from({ length: 100 }, () => newEchoClient(`kubernetes:///hello.default:${f.port}`));
  await Promise.all(clients.map((c) => who(c, 30_000)));
  const watches = f.api.stats().watches.filter((w) => w.resource === 'endpointslices');
  assert.equal(watches.length, 1);
  assert.equal(f.api.stats().requests.endpointslices?.list, 1);
  assert.equal(f.gk.registry?.activeSources.length, 1);
  for (const c of clients) c.close();
  await until(() => f.api.stats().watches.length === 0, 30_000);
  assert.equal(f.gk.registry?.activeSources.length, 0);
});

test('a bad target fails new Client() with GK_ERR_INVALID_TARGET', async (t) => {
  const f = await fixture(t, 1, 51);
  void f;
  assert.throws(() => newEchoClient('kubernetes:///hello.default'), /GK_ERR_INVALID_TARGET|port is missing/);
});

test('a Service with no endpoints says so in the error, instead of a silent empty list', async (t) => {
  const f = await fixture(t, 1, 61);
  void f;
  const client = newEchoClient(`kubernetes:///nosuch.default:${f.port}`);
  t.after(() => client.close());
  await assert.rejects(who(client, 30_000), (err: { code: number; details: string }) => {
    assert.equal(err.code, status.UNAVAILABLE);
    assert.match(err.details, /GK_ERR_NO_ENDPOINTS: Service default\/nosuch port \d+ has no endpoints/);
    return true;
  });
});
