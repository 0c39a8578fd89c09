import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { ClusterIpForwarder } from '@grpc-kube/lab/internal/lab/clusterip.js';
import { GreeterClient } from '@grpc-kube/lab/internal/lab/hello.js';
import { parsePodConfig, startPod, type RunningPod } from '@grpc-kube/lab/internal/lab/pod-main.js';
import { until } from '../helpers/wait.js';

type T = { after: (fn: () => unknown) => void };

async function pods(t: T, n: number, base: string): Promise<RunningPod[]> {
  const out: RunningPod[] = [];
  let port = 0;
  for (let i = 1; i <= n; i++) {
    const pod = await startPod(parsePodConfig({ name: `pod-${i}`, host: `${base}.${i}`, port }));
    t.after(() => pod.close());
    port = pod.port;
    out.push(pod);
  }
  return out;
}

/** A [0,1) source that replays `values` in order (then repeats the last). */
function replay(values: number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)] as number;
}

function client(t: T, target: string): GreeterClient {
  // A local subchannel pool per client: each stands for its own client pod with its own connection.
  const c = new GreeterClient(target, undefined, { 'grpc.use_local_subchannel_pool': 1 });
  t.after(() => c.close());
  return c;
}

async function podsReached(c: GreeterClient, n: number): Promise<string[]> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) seen.add((await c.sayHello({ client: 'c', counter: i }, 30_000)).pod);
  return [...seen];
}

function code(c: GreeterClient, deadlineMs = 30_000): Promise<number> {
  return new Promise((resolve) =>
    c.sayHelloCb({ client: 'c', counter: 0 }, deadlineMs, (err) => resolve(err ? err.code : 0)),
  );
}

test('each connection is pinned to one random Ready backend: each client reaches exactly one pod', async (t) => {
  const [p1] = await pods(t, 3, '127.0.5');
  const fwd = new ClusterIpForwarder({
    host: '127.0.1.1',
    port: 0,
    random: replay([0.9, 0.1, 0.5, 0.4, 0.0]),
    backends: [1, 2, 3].map((i) => ({ host: `127.0.5.${i}`, port: p1!.port })),
  });
  t.after(() => fwd.close());
  await fwd.listen();
  const reached: string[][] = [];
  for (let k = 0; k < 5; k++) reached.push(await podsReached(client(t, `ipv4:${fwd.address}`), 20));
  // floor(r * 3) + 1 for r = 0.9, 0.1, 0.5, 0.4, 0.0
  assert.deepEqual(reached, [['pod-3'], ['pod-1'], ['pod-2'], ['pod-2'], ['pod-1']]);
  assert.deepEqual([...fwd.picks.entries()].sort(), [
    [`127.0.5.1:${p1!.port}`, 2],
    [`127.0.5.2:${p1!.port}`, 2],
    [`127.0.5.3:${p1!.port}`, 1],
  ]);
  assert.equal(fwd.connections(), 5);
});

test('setBackends: new connections follow the list, pinned ones stay; not-ready backends are skipped', async (t) => {
  const [p1] = await pods(t, 3, '127.0.6');
  const port = p1!.port;
  const fwd = new ClusterIpForwarder({ host: '127.0.1.2', port: 0, random: () => 0 });
  t.after(() => fwd.close());
  await fwd.listen();
  fwd.setBackends([
    { host: '127.0.6.1', port, ready: false, serving: false },
    { host: '127.0.6.2', port },
  ]);
  const a = client(t, `ipv4:${fwd.address}`);
  assert.deepEqual(await podsReached(a, 5), ['pod-2']);
  // pod-2 leaves the Service: client a's connection is left alone (conntrack), new ones go to pod-3.
  fwd.setBackends([{ host: '127.0.6.3', port }]);
  assert.deepEqual(await podsReached(a, 5), ['pod-2']);
  assert.deepEqual(await podsReached(client(t, `ipv4:${fwd.address}`), 5), ['pod-3']);
  // No Ready backend: kube-proxy falls back to serving-terminating ones.
  fwd.setBackends([
    { host: '127.0.6.1', port, ready: false, serving: true },
    { host: '127.0.6.3', port, ready: false, serving: false },
  ]);
  assert.deepEqual(await podsReached(client(t, `ipv4:${fwd.address}`), 5), ['pod-1']);
});

test('no endpoints: the connection is reset and the RPC fails UNAVAILABLE', async (t) => {
  const fwd = new ClusterIpForwarder({ host: '127.0.1.3', port: 0 });
  t.after(() => fwd.close());
  await fwd.listen();
  assert.equal(await code(client(t, `ipv4:${fwd.address}`)), grpc.status.UNAVAILABLE);
  assert.ok(fwd.rejected >= 1);
});

test('a dead backend closes the client connection; the reconnect is balanced afresh', async (t) => {
  const [p1, p2] = await pods(t, 2, '127.0.7');
  const fwd = new ClusterIpForwarder({
    host: '127.0.1.4',
    port: 0,
    lingerMs: 50,
    random: replay([0, 0.99]),
    backends: [
      { host: '127.0.7.1', port: p1!.port },
      { host: '127.0.7.2', port: p2!.port },
    ],
  });
  t.after(() => fwd.close());
  await fwd.listen();
  const c = client(t, `ipv4:${fwd.address}`);
  assert.deepEqual(await podsReached(c, 3), ['pod-1']);
  p1!.close();
  // grpc-js reconnects through the VIP and lands on pod-2 (the next pick).
  assert.deepEqual(await podsReached(c, 3), ['pod-2']);
  // The half-closed side lingers lingerMs, then goes: wait for it (a loaded machine fires that late).
  await until(() => fwd.connections() === 1, 30_000, 5, 'the pair to the dead pod torn down');
  assert.equal(fwd.connections(), 1, 'the pair to the dead pod was torn down');
});

test('backpressure and byte integrity: a 4 MiB echo round-trips unchanged', async (t) => {
  const echo = net.createServer((s) => s.pipe(s));
  t.after(() => echo.close());
  await new Promise<void>((r) => echo.listen(0, '127.0.8.1', r));
  const fwd = new ClusterIpForwarder({
    host: '127.0.1.5',
    port: 0,
    backends: [{ host: '127.0.8.1', port: (echo.address() as net.AddressInfo).port }],
  });
  t.after(() => fwd.close());
  await fwd.listen();
  const payload = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7919) & 0xff;
  const sock = net.connect(fwd.port, '127.0.1.5');
  t.after(() => sock.destroy());
  const chunks: Buffer[] = [];
  let got = 0;
  const done = new Promise<void>((resolve) =>
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= payload.length) resolve();
    }),
  );
  sock.write(payload);
  await done;
  assert.ok(Buffer.concat(chunks).equals(payload));
  await fwd.close();
  await until(() => sock.destroyed || sock.readableEnded, 30_000, 5, 'the forwarded connection cut');
  assert.equal(sock.destroyed || sock.readableEnded, true, 'close() cut the forwarded connection');
});

test('bad options are typed errors', () => {
  assert.throws(() => new ClusterIpForwarder({ host: 'vip', port: 1 }), { code: 'GK_ERR_INVALID_OPTION' });
  const fwd = new ClusterIpForwarder({ host: '127.0.1.6', port: 0 });
  assert.throws(() => fwd.setBackends([{ host: '127.0.0.1', port: 0 }]), {
    code: 'GK_ERR_INVALID_OPTION',
    field: 'backends[0].port',
  });
});
