import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import {
  LabDnsServer,
  dnsTarget,
  grpcUsesAlternativeResolver,
} from '@grpc-kube/lab/internal/lab/dns-server.js';

// grpc-js reads this once when it loads; every grpc-js import in this file is dynamic, after this line.
process.env['GRPC_NODE_USE_ALTERNATIVE_RESOLVER'] = 'true';

async function server(t: { after: (fn: () => Promise<void>) => void }, ttlS = 0): Promise<LabDnsServer> {
  const dns = new LabDnsServer({ host: '127.0.0.1', port: 0, ttlS });
  t.after(() => dns.close());
  await dns.listen();
  return dns;
}

function resolverFor(dns: LabDnsServer): Resolver {
  const r = new Resolver({ timeout: 500, tries: 1 });
  r.setServers([dns.address]);
  return r;
}

/** A hand-built query (no EDNS0), answered as raw bytes. */
function rawQuery(dns: LabDnsServer, name: string, type: number, flags = 0x0100): Promise<Buffer> {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const q = Buffer.concat([
    Buffer.from([0x12, 0x34, flags >> 8, flags & 0xff, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...labels,
    Buffer.from([0, type >> 8, type & 0xff, 0, 1]),
  ]);
  const sock = dgram.createSocket('udp4');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sock.close();
      reject(new Error('no answer'));
    }, 30_000);
    sock.on('message', (m) => {
      clearTimeout(timer);
      sock.close();
      resolve(m);
    });
    sock.send(q, dns.port, '127.0.0.1');
  });
}

test('answers A with the current list, AAAA with no data, unknown names with NXDOMAIN', async (t) => {
  const dns = await server(t, 7);
  dns.setRecords('hello.lab.', ['127.0.3.1', '127.0.3.2']);
  const r = resolverFor(dns);
  assert.deepEqual((await r.resolve4('hello.lab')).sort(), ['127.0.3.1', '127.0.3.2']);
  assert.deepEqual(
    (await r.resolve4('HELLO.Lab', { ttl: true })).map((a) => a.ttl),
    [7, 7],
  );
  await assert.rejects(r.resolve6('hello.lab'), { code: 'ENODATA' });
  await assert.rejects(r.resolveTxt('hello.lab'), { code: 'ENODATA' });
  await assert.rejects(r.resolve4('nope.lab'), { code: 'ENOTFOUND' });
  dns.setRecords('hello.lab', ['127.0.3.3']);
  assert.deepEqual(await resolverFor(dns).resolve4('hello.lab'), ['127.0.3.3']);
  dns.setRecords('hello.lab', []);
  await assert.rejects(resolverFor(dns).resolve4('hello.lab'), { code: 'ENODATA' });
  dns.deleteRecords('hello.lab');
  await assert.rejects(resolverFor(dns).resolve4('hello.lab'), { code: 'ENOTFOUND' });
  assert.equal(dns.queries.get('hello.lab'), 7);
});

test('wire format: authoritative flag, id echoed, truncation at 512 bytes without EDNS0, FORMERR', async (t) => {
  const dns = await server(t, 0);
  const ips = Array.from({ length: 40 }, (_, i) => `127.0.4.${i + 1}`);
  dns.setRecords('big.lab', ips);
  const res = await rawQuery(dns, 'big.lab', 1);
  assert.equal(res.readUInt16BE(0), 0x1234);
  const flags = res.readUInt16BE(2);
  assert.equal(flags & 0x8000, 0x8000, 'QR');
  assert.equal(flags & 0x0400, 0x0400, 'AA');
  assert.equal(flags & 0x0200, 0x0200, 'TC: 40 records do not fit in 512 bytes');
  assert.equal(flags & 0x0100, 0x0100, 'RD echoed');
  assert.equal(flags & 0xf, 0);
  // 12 header + 13 question bytes; each answer is 16 bytes: floor((512 - 25) / 16) = 30.
  assert.equal(res.readUInt16BE(6), 30);
  assert.ok(res.length <= 512);
  assert.deepEqual([...res.subarray(res.length - 4)], [127, 0, 4, 30]);

  const nx = await rawQuery(dns, 'missing.lab', 1);
  assert.equal(nx.readUInt16BE(2) & 0xf, 3);
  const notImp = await rawQuery(dns, 'big.lab', 1, 0x2100); // opcode 4 (NOTIFY)
  assert.equal(notImp.readUInt16BE(2) & 0xf, 4);

  const sock = dgram.createSocket('udp4');
  t.after(() => sock.close());
  const formerr = await new Promise<Buffer>((resolve) => {
    sock.on('message', resolve);
    sock.send(Buffer.from([0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, 0x61]), dns.port, '127.0.0.1');
  });
  assert.equal(formerr.readUInt16BE(0), 0xabcd);
  assert.equal(formerr.readUInt16BE(2) & 0xf, 1);
});

test('bad options and use after close are typed errors', async () => {
  assert.throws(() => new LabDnsServer({ host: 'localhost' }), { code: 'GK_ERR_INVALID_OPTION' });
  assert.throws(() => new LabDnsServer({ ttlS: -1 }), { code: 'GK_ERR_INVALID_OPTION' });
  const dns = new LabDnsServer();
  assert.throws(() => dns.setRecords('a.lab', ['::1']), { code: 'GK_ERR_INVALID_OPTION' });
  await dns.close();
  await assert.rejects(
    dns.listen(),
    (e: unknown) => e instanceof GrpcKubeError && e.code === 'GK_ERR_DESTROYED',
  );
});

test("grpc-js's own dns: resolver resolves through the lab server (headless round_robin and pick_first)", async (t) => {
  const { startPod, parsePodConfig } = await import('@grpc-kube/lab/internal/lab/pod-main.js');
  const { GreeterClient } = await import('@grpc-kube/lab/internal/lab/hello.js');
  assert.equal(grpcUsesAlternativeResolver(), true);
  const pods = [];
  let port = 0;
  for (let i = 1; i <= 4; i++) {
    const pod = await startPod(parsePodConfig({ name: `hello-${i}`, host: `127.0.3.${i}`, port }));
    t.after(() => pod.close());
    port = pod.port;
    pods.push(pod);
  }
  const dns = await server(t, 5);
  dns.setRecords('hello.default.svc.cluster.local', ['127.0.3.1', '127.0.3.2', '127.0.3.3']);
  const target = dnsTarget(dns.address, 'hello.default.svc.cluster.local', port);
  assert.equal(target, `dns://127.0.0.1:${dns.port}/hello.default.svc.cluster.local:${port}`);

  const served = async (
    client: InstanceType<typeof GreeterClient>,
    n: number,
  ): Promise<Map<string, number>> => {
    const counts = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const reply = await client.sayHello({ client: 't', counter: i }, 30_000);
      counts.set(reply.pod, (counts.get(reply.pod) ?? 0) + 1);
    }
    return counts;
  };

  const rr = new GreeterClient(target, undefined, {
    'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
    'grpc.use_local_subchannel_pool': 1,
  });
  t.after(() => rr.close());
  // round_robin spreads over READY subchannels only: warm up until all three are connected.
  for (let i = 0; i < 20 && (await served(rr, 10)).size < 3; i++);
  assert.deepEqual([...(await served(rr, 30)).entries()].sort(), [
    ['hello-1', 10],
    ['hello-2', 10],
    ['hello-3', 10],
  ]);
  // The headless finding: a pod added to DNS gets nothing; grpc-js does not re-resolve a healthy channel.
  dns.setRecords('hello.default.svc.cluster.local', ['127.0.3.1', '127.0.3.2', '127.0.3.3', '127.0.3.4']);
  assert.equal((await served(rr, 30)).get('hello-4'), undefined);
  assert.equal(dns.queries.get('hello.default.svc.cluster.local'), 3, 'one resolution so far: A, AAAA, TXT');

  const pf = new GreeterClient(target, undefined, { 'grpc.use_local_subchannel_pool': 1 });
  t.after(() => pf.close());
  assert.equal((await served(pf, 20)).size, 1, 'pick_first: one pod takes every RPC');
});
