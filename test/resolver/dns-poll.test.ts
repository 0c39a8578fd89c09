import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup } from 'grpc-kube/internal/index.js';
import { DnsPollFeed } from 'grpc-kube/internal/discovery/dns-source.js';
import { LabDnsServer } from '@grpc-kube/lab/internal/lab/dns-server.js';
import { newEchoClient, startEchoServer, who } from '../helpers/echo.js';
import { until } from '../helpers/kube.js';

const NAME = 'hello.default.svc.cluster.local';

test('dns-poll: a headless Service scaled from 2 to 3 pods is seen within one poll interval', async (t) => {
  const dns = new LabDnsServer({ host: '127.0.0.1', port: 0 });
  await dns.listen();
  const a = await startEchoServer('pod-a', '127.0.15.1');
  const b = await startEchoServer('pod-b', '127.0.15.2', a.port);
  const c = await startEchoServer('pod-c', '127.0.15.3', a.port);
  const gk = setup({ dnsPollIntervalMs: 100 });
  t.after(async () => {
    await gk.close();
    for (const s of [a, b, c]) s.kill();
    await dns.close();
  });
  dns.setRecords(NAME, [a.host, b.host]);
  const client = newEchoClient(`dns-poll://${dns.address}/${NAME}:${a.port}`);
  t.after(() => client.close());
  await until(
    async () =>
      new Set(await Promise.all([1, 2, 3, 4].map(async () => (await who(client, 30_000)).server))).size === 2,
    30_000,
    0,
  );
  dns.setRecords(NAME, [a.host, b.host, c.host]);
  await until(async () => (await who(client, 30_000)).server === 'pod-c', 30_000, 0);
  // and a pod leaving the answer gets no new RPC
  dns.setRecords(NAME, [b.host, c.host]);
  await until(
    async () => {
      const before = a.served;
      await Promise.all(Array.from({ length: 10 }, () => who(client, 30_000)));
      return a.served === before;
    },
    30_000,
    0,
  );
  const before = a.served;
  for (let i = 0; i < 20; i++) await who(client, 30_000);
  assert.equal(a.served, before);
});

test('dns-poll: NXDOMAIN empties the set; a failing server keeps the last answer; the first failure is typed', async (t) => {
  const answers: Array<string[] | Error> = [
    ['10.0.0.1'],
    Object.assign(new Error('timeout'), { code: 'ETIMEOUT' }),
    Object.assign(new Error('nx'), { code: 'ENOTFOUND' }),
  ];
  let i = 0;
  const feed = new DnsPollFeed('svc.example', 80, {
    intervalMs: 50,
    resolve: async () => {
      const a = answers[Math.min(i++, answers.length - 1)] as string[] | Error;
      if (a instanceof Error) throw a;
      return a;
    },
  });
  const seen: string[][] = [];
  const sub = feed.subscribe({
    onEndpoints: (view) => seen.push(view.endpoints().map((e) => e.address)),
    onError: () => assert.fail('no error after a good answer'),
  });
  t.after(() => sub.unsubscribe());
  await until(() => seen.length === 2, 30_000);
  assert.deepEqual(seen, [['10.0.0.1'], []], 'the timeout kept the answer; NXDOMAIN emptied it');

  const failing = new DnsPollFeed('svc.example', 80, {
    intervalMs: 50,
    resolve: async () => {
      throw Object.assign(new Error('refused'), { code: 'ECONNREFUSED' });
    },
  });
  const errors: string[] = [];
  const sub2 = failing.subscribe({
    onEndpoints: () => assert.fail('no answer'),
    onError: (e) => errors.push(e.code),
  });
  t.after(() => sub2.unsubscribe());
  await until(() => errors.length >= 1, 30_000);
  assert.equal(errors[0], 'GK_ERR_DNS');
});

test('dns-poll: bad targets and intervals are typed errors', () => {
  assert.throws(() => newEchoClient('dns-poll:///hello.default'), /GK_ERR_INVALID_TARGET|port is missing/);
  assert.throws(
    () => new DnsPollFeed('x', 80, { intervalMs: 1 }),
    (e: unknown) => (e as { code?: string }).code === 'GK_ERR_INVALID_OPTION',
  );
  assert.throws(
    () => setup({ dnsPollIntervalMs: 0 }),
    (e: unknown) => (e as { code?: string }).code === 'GK_ERR_INVALID_OPTION',
  );
});
