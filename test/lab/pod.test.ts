import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { checkHealth } from '../helpers/health.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  countFiles,
  GreeterClient,
  MAX_COUNTED_CLIENTS,
  OTHER_CLIENTS,
  readReceivedCounts,
  ReceivedCounter,
} from '@grpc-kube/lab/internal/lab/hello.js';
import { retryLoad } from '@grpc-kube/lab/internal/lab/runner.js';
import { execFileSync, spawn as spawnProcess } from 'node:child_process';
import {
  COUNT_FLUSH_MS,
  POD_MAIN_SCRIPT,
  parsePodConfig,
  podConfigFromEnv,
  spawnPod,
  startPod,
  type PodProcess,
} from '@grpc-kube/lab/internal/lab/pod-main.js';

function rpcResult(
  client: GreeterClient,
  counter: number,
  deadlineMs = 30_000,
): Promise<{ code: number; pod: string }> {
  return new Promise((resolve) => {
    client.sayHelloCb({ client: 'c', counter }, deadlineMs, (err, reply) =>
      resolve({ code: err ? err.code : 0, pod: reply?.pod ?? '' }),
    );
  });
}

/** Resolves once the pod of `dir` has counted a request of `client` (it is in its handler). */
async function received(dir: string, client: string): Promise<void> {
  for (let i = 0; i < 3000 && !readReceivedCounts(dir).get(client); i++) await delay(COUNT_FLUSH_MS / 10);
  assert.ok(readReceivedCounts(dir).get(client), `the pod counted a request of ${client}`);
}

function countDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'gk-pod-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function spawn(t: { after: (fn: () => void) => void }, opts: Parameters<typeof spawnPod>[0]): PodProcess {
  const pod = spawnPod(opts);
  t.after(() => pod.kill('SIGKILL'));
  return pod;
}

test('parsePodConfig fills defaults, freezes, and names the bad field', () => {
  const c = parsePodConfig({ name: 'p', host: '127.0.2.1' });
  assert.equal(c.port, 50051);
  assert.equal(c.shutdown, 'immediate');
  assert.ok(Object.isFrozen(c));
  const bad: [unknown, string][] = [
    [null, 'pod config'],
    [{ host: '127.0.0.1' }, 'pod config.name'],
    [{ name: 'p', host: 'h', port: 70000 }, 'pod config.port'],
    [{ name: 'p', host: 'h', responseDelayMs: -1 }, 'pod config.responseDelayMs'],
    [{ name: 'p', host: 'h', shutdown: 'soon' }, 'pod config.shutdown'],
    [{ name: 'p', host: 'h', colour: 'red' }, 'pod config.colour'],
  ];
  for (const [input, field] of bad) {
    assert.throws(
      () => parsePodConfig(input),
      (e: unknown) => {
        assert.ok(e instanceof GrpcKubeError);
        assert.equal(e.code, 'GK_ERR_INVALID_OPTION');
        assert.equal((e as GrpcKubeError & { field: string }).field, field);
        return true;
      },
    );
  }
});

test('pod process: listens on its own address, turns SERVING after the readiness delay, echoes its name', async (t) => {
  // A readiness delay long enough that the first check comes before it even on a stalling machine.
  const pod = spawn(t, { name: 'hello-abc', host: '127.0.2.7', port: 0, readinessDelayMs: 5000 });
  const { host, port } = await pod.listening;
  assert.equal(host, '127.0.2.7');
  const target = `127.0.2.7:${port}`;
  assert.equal(await checkHealth(target), 'NOT_SERVING');
  await pod.ready;
  assert.equal(await checkHealth(target), 'SERVING');
  assert.equal(await checkHealth(target, 'hello.Greeter'), 'SERVING');
  const client = new GreeterClient(target);
  t.after(() => client.close());
  const reply = await client.sayHello({ client: 'client-1', counter: 42 });
  assert.deepEqual(reply, { message: 'hello-abc: hello client-1 #42', pod: 'hello-abc' });
  pod.kill('SIGTERM');
  assert.deepEqual(await pod.exited, { code: null, signal: 'SIGTERM' });
});

test('immediate shutdown: SIGTERM kills the process at once, the RPC in flight fails UNAVAILABLE', async (t) => {
  const dir = countDir(t);
  const pod = spawn(t, { name: 'naive', host: '127.0.2.8', port: 0, responseDelayMs: 60_000, countDir: dir });
  const { port } = await pod.listening;
  await pod.ready;
  const client = new GreeterClient(`127.0.2.8:${port}`);
  t.after(() => client.close());
  const inFlight = rpcResult(client, 1);
  await received(dir, 'c');
  const t0 = Date.now();
  pod.kill('SIGTERM');
  // UNAVAILABLE, not DEADLINE_EXCEEDED (30 s) nor an answer (60 s): it failed when the process died.
  assert.equal((await inFlight).code, grpc.status.UNAVAILABLE);
  t.diagnostic(`the RPC in flight failed ${Date.now() - t0} ms after SIGTERM`);
  assert.equal((await pod.exited).signal, 'SIGTERM');
});

test('graceful shutdown: NOT_SERVING, keeps serving through drainDelayMs, finishes in-flight RPCs, exits 0', async (t) => {
  const dir = countDir(t);
  // drainDelayMs long enough that the RPC sent after SIGTERM lands within it even on a stalling machine.
  const pod = spawn(t, {
    name: 'polite',
    host: '127.0.2.9',
    port: 0,
    responseDelayMs: 600,
    shutdown: 'graceful',
    drainDelayMs: 5000,
    graceMs: 30_000,
    countDir: dir,
  });
  const { port } = await pod.listening;
  await pod.ready;
  const target = `127.0.2.9:${port}`;
  const client = new GreeterClient(target);
  t.after(() => client.close());
  const first = rpcResult(client, 1);
  await received(dir, 'c');
  pod.kill('SIGTERM');
  await pod.terminating;
  assert.equal(await checkHealth(target), 'NOT_SERVING');
  // Within drainDelayMs new RPCs are still served (endpoint removal has not reached every client yet).
  const second = rpcResult(client, 2);
  assert.deepEqual(await first, { code: 0, pod: 'polite' });
  assert.deepEqual(await second, { code: 0, pod: 'polite' });
  assert.deepEqual(await pod.exited, { code: 0, signal: null });
});

test('graceful shutdown is bounded by graceMs', async (t) => {
  const dir = countDir(t);
  const responseDelayMs = 60_000;
  const pod = spawn(t, {
    name: 'stuck',
    host: '127.0.2.10',
    port: 0,
    responseDelayMs,
    shutdown: 'graceful',
    graceMs: 300,
    countDir: dir,
  });
  const { port } = await pod.listening;
  await pod.ready;
  const client = new GreeterClient(`127.0.2.10:${port}`);
  t.after(() => client.close());
  const inFlight = rpcResult(client, 1, responseDelayMs);
  await received(dir, 'c');
  const t0 = Date.now();
  pod.kill('SIGTERM');
  assert.deepEqual(await pod.exited, { code: 0, signal: null });
  const elapsed = Date.now() - t0;
  t.diagnostic(`exited ${elapsed} ms after SIGTERM (graceMs 300)`);
  // At least the grace (the RPC was in flight); far less than the RPC would have taken to finish.
  assert.ok(elapsed >= 250 && elapsed < responseDelayMs / 2, `exited after ${elapsed} ms`);
  assert.notEqual((await inFlight).code, 0);
});

test('spawnPod: ready rejects with the pod stderr when it cannot listen', async (t) => {
  const first = spawn(t, { name: 'a', host: '127.0.2.11', port: 0 });
  const { port } = await first.listening;
  const second = spawn(t, { name: 'b', host: '127.0.2.11', port });
  await assert.rejects(second.ready, (e: unknown) => {
    assert.ok(e instanceof GrpcKubeError);
    assert.equal(e.code, 'GK_ERR_LAB');
    assert.match(e.message, /pod b exited .*cannot listen on 127\.0\.2\.11/s);
    return true;
  });
  assert.equal((await second.exited).code, 1);
});

test('max connection age: the server sends GOAWAY after maxConnectionAgeMs, the client reconnects', async (t) => {
  const pod = await startPod(
    parsePodConfig({
      name: 'aged',
      host: '127.0.2.12',
      port: 0,
      maxConnectionAgeMs: 300,
      maxConnectionAgeGraceMs: 200,
    }),
  );
  t.after(() => pod.close());
  await pod.ready;
  const client = new GreeterClient(`127.0.2.12:${pod.port}`);
  t.after(() => client.close());
  const channel = client.client.getChannel();
  assert.equal((await rpcResult(client, 0)).code, 0);
  assert.equal(channel.getConnectivityState(false), grpc.connectivityState.READY);
  const left = await new Promise<grpc.connectivityState>((resolve) =>
    channel.watchConnectivityState(grpc.connectivityState.READY, Date.now() + 30_000, () =>
      resolve(channel.getConnectivityState(false)),
    ),
  );
  assert.notEqual(left, grpc.connectivityState.READY, 'GOAWAY moved the channel out of READY');
  assert.equal((await rpcResult(client, 1)).code, 0);
});

test('response delay: every reply waits responseDelayMs', async (t) => {
  const pod = await startPod(
    parsePodConfig({ name: 'slow', host: '127.0.2.13', port: 0, responseDelayMs: 150 }),
  );
  t.after(() => pod.close());
  const client = new GreeterClient(`127.0.2.13:${pod.port}`);
  t.after(() => client.close());
  await client.sayHello({ client: 'warm', counter: 0 });
  const t0 = performance.now();
  await Promise.all([1, 2, 3].map((i) => client.sayHello({ client: 'c', counter: i })));
  const elapsed = performance.now() - t0;
  t.diagnostic(`3 concurrent RPCs took ${elapsed.toFixed(0)} ms (responseDelayMs 150)`);
  assert.ok(elapsed >= 145, `took ${elapsed} ms`);
});

test('podConfigFromEnv reads POD_* and HELLO_* variables and names a bad one', () => {
  assert.deepEqual(
    {
      ...podConfigFromEnv({
        POD_NAME: 'p',
        POD_IP: '127.0.2.20',
        POD_PORT: '50051',
        HELLO_SHUTDOWN: 'graceful',
        HELLO_GRACE_MS: '2000',
      }),
    },
    {
      ...parsePodConfig({ name: 'p', host: '127.0.2.20', port: 50051, shutdown: 'graceful', graceMs: 2000 }),
    },
  );
  assert.throws(
    () => podConfigFromEnv({ POD_NAME: 'p', POD_IP: '127.0.2.20', HELLO_RESPONSE_DELAY_MS: '5ms' }),
    {
      code: 'GK_ERR_INVALID_OPTION',
      field: 'HELLO_RESPONSE_DELAY_MS',
    },
  );
  assert.throws(() => podConfigFromEnv({ POD_IP: '127.0.2.20' }), { field: 'pod config.name' });
});

test('the pod script runs from environment variables alone, without IPC (the lab kubelet runtime)', async (t) => {
  const probe = await startPod(parsePodConfig({ name: 'probe', host: '127.0.2.21', port: 0 }));
  const port = probe.port;
  probe.close();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    POD_NAME: 'env-pod',
    POD_IP: '127.0.2.21',
    POD_PORT: String(port),
  };
  delete env['GRPC_KUBE_POD_CONFIG'];
  const child = spawnProcess(process.execPath, [POD_MAIN_SCRIPT], { env, stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  const client = new GreeterClient(`127.0.2.21:${port}`);
  t.after(() => client.close());
  const reply = await new Promise<{ pod: string }>((resolve, reject) =>
    client.client.waitForReady(Date.now() + 30_000, (err) =>
      err ? reject(err) : client.sayHello({ client: 'k', counter: 1 }).then(resolve, reject),
    ),
  );
  assert.equal(reply.pod, 'env-pod');
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  assert.equal(await exit, null);
});

test('in-process pod: close() during drain() ends the drain at once', async () => {
  const pod = await startPod(
    parsePodConfig({ name: 'd', host: '127.0.2.22', port: 0, drainDelayMs: 10_000, graceMs: 20_000 }),
  );
  await pod.ready;
  const drained = pod.drain();
  assert.equal(pod.drain(), drained, 'drain() is idempotent');
  pod.close();
  await drained;
  pod.close();
  await pod.drain();
});

test('the pod counts the requests it receives per client, retries included, in its count file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gk-counts-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pod = await startPod(
    parsePodConfig({ name: 'counted', host: '127.0.2.23', port: 0, countDir: dir, overloadPushbackMs: 0 }),
  );
  t.after(() => pod.close());
  await pod.ready;
  const plain = new GreeterClient(`127.0.2.23:${pod.port}`);
  t.after(() => plain.close());
  for (let i = 0; i < 3; i++) await plain.sayHello({ client: 'a', counter: i });
  await plain.sayHello({ client: 'b', counter: 0 });
  // A client that retries RESOURCE_EXHAUSTED up to 3 attempts: one call, three requests on the pod.
  const retrying = new GreeterClient(`127.0.2.23:${pod.port}`, undefined, {
    'grpc.service_config': JSON.stringify({
      methodConfig: [
        {
          name: [{ service: 'hello.Greeter' }],
          retryPolicy: {
            maxAttempts: 3,
            initialBackoff: '0.01s',
            maxBackoff: '0.01s',
            backoffMultiplier: 1,
            retryableStatusCodes: ['RESOURCE_EXHAUSTED'],
          },
        },
      ],
    }),
  });
  t.after(() => retrying.close());
  pod.overload(true);
  await assert.rejects(retrying.sayHello({ client: 'r-0', counter: 0 }), {
    code: grpc.status.RESOURCE_EXHAUSTED,
  });
  assert.deepEqual(pod.received(), { a: 3, b: 1, 'r-0': 3 });
  pod.close();
  const counts = readReceivedCounts(dir);
  assert.deepEqual(Object.fromEntries(counts), { a: 3, b: 1, 'r-0': 3 });
  // The lab's figure: strategy r's one client (`r-0`) made 1 call and 3 attempts, +200 % load.
  assert.deepEqual(retryLoad(1, counts, 'r', 1), { attempts: 3, retryLoadPct: 200 });
  assert.equal(
    retryLoad(
      4,
      new Map([
        ['s-0', 3],
        ['s-1', 1],
        ['s-10', 9],
      ]),
      's',
      2,
    ).attempts,
    4,
  );
  assert.deepEqual(retryLoad(4, undefined, 's', 2), { attempts: null, retryLoadPct: null });
});

test('a pod whose count write is held up still answers: it writes its counts off the event loop', async (t) => {
  // Its counts go through a FIFO: opening it for writing waits for a reader, as a write held by a busy
  // disk did in lab runs (a rename over the last file waiting for writeback and discard, and every pod
  // sharing the directory waiting behind it) — the pods then answered nothing for up to ~1.9 s.
  const dir = mkdtempSync(join(tmpdir(), 'gk-counts-held-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const held = `${countFiles(dir, 'held').live}.tmp`;
  execFileSync('mkfifo', [held]);
  const pod = spawn(t, { name: 'held', host: '127.0.2.24', port: 0, countDir: dir });
  const { port } = await pod.listening;
  await pod.ready;
  const client = new GreeterClient(`127.0.2.24:${port}`);
  t.after(() => client.close());
  // Each RPC changes the counts, so the pod's next write (every COUNT_FLUSH_MS) opens the FIFO and
  // waits there: every RPC after that must still be answered.
  for (let i = 0; i < 8; i++) {
    assert.deepEqual(await rpcResult(client, i), { code: 0, pod: 'held' });
    await delay(COUNT_FLUSH_MS);
  }
  // The write was waiting all along: a reader lets it through, with the counts it held.
  const written = JSON.parse(await readFile(held, 'utf8')) as Record<string, number>;
  assert.ok((written['c'] ?? 0) >= 1, JSON.stringify(written));
});

test("readReceivedCounts takes a pod's final counts over its live ones", (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gk-counts-final-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const closed = countFiles(dir, 'closed');
  writeFileSync(closed.live, JSON.stringify({ a: 1 }));
  writeFileSync(closed.final, JSON.stringify({ a: 3, b: 1 }));
  writeFileSync(countFiles(dir, 'serving').live, JSON.stringify({ a: 2 }));
  writeFileSync(countFiles(dir, 'ended').final, JSON.stringify({ b: 4 }));
  assert.deepEqual(Object.fromEntries(readReceivedCounts(dir)), { a: 5, b: 5 });
});

test('ReceivedCounter counts at most MAX_COUNTED_CLIENTS names apart, the rest together', () => {
  const c = new ReceivedCounter();
  for (let i = 0; i < MAX_COUNTED_CLIENTS + 5; i++) c.add(`n${i}`);
  c.add('n0');
  const snap = c.snapshot();
  assert.equal(Object.keys(snap).length, MAX_COUNTED_CLIENTS + 1);
  assert.equal(snap['n0'], 2);
  assert.equal(snap[OTHER_CLIENTS], 5);
});
