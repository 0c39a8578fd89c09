// The proxy over TLS, with a test CA made by openssl: ingress TLS termination (ALPN h2) with mutual
// TLS, the client certificate's SPIFFE id as a route match and a header for backends (which a
// client cannot forge), mutual TLS to grpc-js backends, and certificate files rotated under load
// with no RPC lost.

import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { connect, type PeerCertificate } from 'node:tls';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { GrpcProxy, PEER_ID_HEADER, type GrpcProxyOptions } from '@grpc-kube/proxy/internal/index.js';
import { until } from '../helpers/kube.js';
import { testPki, type TestPki } from '../helpers/pki.js';
import {
  newJsonClient,
  startJsonServer,
  unary,
  type Json,
  type JsonServer,
} from './fixtures/json-service.js';

type T = { after(fn: () => unknown): void };

let pki: TestPki;
let ca: Buffer;
const WEB = 'spiffe://cluster.local/ns/prod/sa/web';

before(async () => {
  pki = await testPki();
  ca = await readFile(pki.ca);
  await pki.server('proxy');
  await pki.server('backend');
  await pki.client('proxy-client', 'mesh', 'proxy');
  await pki.client('web', 'prod', 'web');
  await pki.client('batch', 'prod', 'batch');
});
after(() => pki?.remove());

async function clientCreds(name?: string): Promise<grpc.ChannelCredentials> {
  if (name === undefined) return grpc.credentials.createSsl(ca);
  const c = pki.cert(name);
  return grpc.credentials.createSsl(ca, await readFile(c.keyFile), await readFile(c.certFile));
}

/** A grpc-js backend that requires a client certificate from the test CA. */
async function tlsBackend(t: T, name: string, host: string): Promise<JsonServer> {
  const c = pki.cert('backend');
  const creds = grpc.ServerCredentials.createSsl(
    ca,
    [{ private_key: await readFile(c.keyFile), cert_chain: await readFile(c.certFile) }],
    true,
  );
  const s = await startJsonServer(name, host, 0, () => {}, creds);
  t.after(() => s.kill());
  return s;
}

async function tlsProxy(
  t: T,
  backends: Record<string, JsonServer>,
  extra: Partial<GrpcProxyOptions>,
): Promise<GrpcProxy> {
  const staticTargets: Record<string, { address: string; port: number }[]> = {};
  for (const [target, b] of Object.entries(backends))
    staticTargets[target] = [{ address: b.address.split(':')[0] as string, port: b.port }];
  const proxy = new GrpcProxy({
    mode: 'ingress',
    target: Object.keys(backends)[0],
    staticTargets,
    tls: { ...pki.cert('proxy'), caFile: pki.ca, refreshMs: 50 },
    // The test CA's backend certificate names localhost, not the 127.0.0.x each backend listens on.
    backendTls: { ...pki.cert('proxy-client'), caFile: pki.ca, refreshMs: 50, serverName: 'localhost' },
    debugStatuses: true,
    ...extra,
  });
  await proxy.listen();
  t.after(() => proxy.close());
  return proxy;
}

function client(
  t: T,
  proxy: GrpcProxy,
  creds: grpc.ChannelCredentials,
  options: grpc.ChannelOptions = {},
): Json {
  // The certificate names 127.0.0.1 and localhost; the proxy's address is 127.0.0.1:port.
  const c = newJsonClient(proxy.address, options, creds);
  t.after(() => c.close());
  return c;
}

test('ingress mutual TLS: routes on the client certificate’s SPIFFE id, backends read it, a client cannot forge it', async (t) => {
  const app = await tlsBackend(t, 'app', '127.0.0.21');
  const fallback = await tlsBackend(t, 'fallback', '127.0.0.22');
  const proxy = await tlsProxy(
    t,
    { 'fallback.prod:9000': fallback, 'app.prod:9000': app },
    { routes: [{ match: { header: { name: PEER_ID_HEADER, value: WEB } }, target: 'app.prod:9000' }] },
  );
  const web = await unary(client(t, proxy, await clientCreds('web')), {});
  assert.equal(web.err, undefined, web.err?.details);
  assert.equal(web.res?.server, 'app');
  assert.equal(web.res?.metadata?.[PEER_ID_HEADER], WEB);

  // `batch` claims to be `web` in its metadata: the proxy replaces the header with its certificate's id.
  const forged = new grpc.Metadata();
  forged.set(PEER_ID_HEADER, WEB);
  const batch = await unary(client(t, proxy, await clientCreds('batch')), {}, { metadata: forged });
  assert.equal(batch.err, undefined, batch.err?.details);
  assert.equal(batch.res?.server, 'fallback');
  assert.equal(batch.res?.metadata?.[PEER_ID_HEADER], 'spiffe://cluster.local/ns/prod/sa/batch');

  // No client certificate, or no TLS at all: no call.
  const anon = await unary(client(t, proxy, await clientCreds()), {}, { deadlineMs: 3000 });
  assert.equal(anon.err?.code, grpc.status.UNAVAILABLE);
  const plain = await unary(client(t, proxy, grpc.credentials.createInsecure()), {}, { deadlineMs: 3000 });
  assert.ok(plain.err !== undefined);
  assert.equal(app.started['Unary'], 1);
  assert.equal(fallback.started['Unary'], 1);
});

test('backend TLS: a backend whose certificate is not from the CA gets no call', async (t) => {
  // A backend serving with a certificate from another CA.
  const rogue = await testPki('rogue-ca');
  t.after(() => rogue.remove());
  const rc = await rogue.server('rogue');
  const creds = grpc.ServerCredentials.createSsl(null, [
    { private_key: await readFile(rc.keyFile), cert_chain: await readFile(rc.certFile) },
  ]);
  const b = await startJsonServer('rogue', '127.0.0.23', 0, () => {}, creds);
  t.after(() => b.kill());
  const proxy = await tlsProxy(t, { 'app.prod:9000': b }, { maxAttempts: 1, connectTimeoutMs: 2000 });
  const r = await unary(client(t, proxy, await clientCreds('web')), {}, { deadlineMs: 4000 });
  assert.equal(r.err?.code, grpc.status.UNAVAILABLE);
  assert.equal(b.started['Unary'], undefined);
});

function portOf(proxy: GrpcProxy): number {
  return Number(proxy.address.split(':').pop());
}

function peerCert(port: number): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const c = pki.cert('web');
    void Promise.all([readFile(c.certFile), readFile(c.keyFile)]).then(([cert, key]) => {
      const socket = connect({ host: '127.0.0.1', port, ca, cert, key, ALPNProtocols: ['h2'] }, () => {
        resolve(socket.getPeerCertificate());
        socket.end();
      });
      socket.on('error', reject);
    });
  });
}

test('certificate rotation under load: proxy and backend-client files swapped mid-run, clients reconnecting, no RPC fails', async (t) => {
  const app = await tlsBackend(t, 'app', '127.0.0.24');
  // Files of its own, so the swap does not touch the other tests' certificates.
  const serving = await pki.server('proxy-rot');
  const tlsErrors: string[] = [];
  const backendId = await pki.client('proxy-client-rot', 'mesh', 'proxy');
  const proxy = await tlsProxy(
    t,
    { 'app.prod:9000': app },
    {
      tls: { ...serving, caFile: pki.ca, refreshMs: 50 },
      backendTls: { ...backendId, caFile: pki.ca, refreshMs: 50, serverName: 'localhost' },
      // Clients reconnect every ~150 ms: handshakes keep happening across the swap.
      maxConnectionAgeMs: 150,
      backendIdleMs: 100,
      onTlsError: (e) => tlsErrors.push(e.code),
    },
  );
  const before = await peerCert(portOf(proxy));
  const creds = await clientCreds('web');
  const clients = Array.from({ length: 4 }, () => client(t, proxy, creds));
  let swapped = false;
  let swappedAt = 0;
  let total = 0;
  let afterSwap = 0;
  const failures: string[] = [];
  const loops = clients.map(async (c) => {
    while (!swapped || afterSwap < 200) {
      const r = await unary(c, { delayMs: 2 }, { deadlineMs: 10_000 });
      total++;
      if (swapped) afterSwap++;
      if (r.err !== undefined) failures.push(`${r.err.code}: ${r.err.details}`);
      if (total > 20_000) break;
    }
  });
  await until(() => total >= 100, 20_000);
  // New files from the same CA, written in place (cert first, then key: for a moment they mismatch).
  const nextServing = await pki.server('proxy-rot-next');
  const nextBackend = await pki.client('proxy-client-rot-next', 'mesh', 'proxy');
  await copyFile(nextServing.certFile, serving.certFile);
  await copyFile(nextBackend.certFile, backendId.certFile);
  await new Promise((r) => setTimeout(r, 60));
  await copyFile(nextServing.keyFile, serving.keyFile);
  await copyFile(nextBackend.keyFile, backendId.keyFile);
  swappedAt = total;
  swapped = true;
  await Promise.all(loops);
  assert.deepEqual(failures, []);
  // The half-written set (new certificate, old key) was reported, never used.
  assert.ok(tlsErrors.every((c) => c === 'GK_ERR_TLS'));
  // The files are re-read every 50 ms: wait for it (a stalled machine may not have reached it yet).
  await until(
    async () => (await peerCert(portOf(proxy))).serialNumber !== before.serialNumber,
    30_000,
    20,
    'new handshakes get the new certificate',
  );
  assert.ok(proxy.stats.connections > 4, `${proxy.stats.connections} client connections (reconnects)`);
  t.diagnostic(
    `${total} RPCs (${total - swappedAt} after the swap), 0 failed; ${proxy.stats.connections} connections`,
  );
});
