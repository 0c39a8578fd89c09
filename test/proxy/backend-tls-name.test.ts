// The proxy's TLS to backends checks the name in the backend's certificate, not only its chain: by
// default the pod address it dials (IP SAN) or the Service's DNS name; with `serverName`, that DNS
// name or spiffe:// URI. A certificate from the right CA that names someone else is refused with a
// PeerNameError (GK_ERR_TLS_PEER_NAME) and the backend gets no call. Real grpc-js backends, a real
// plaintext client through the proxy, certificates from the lab's in-process CA.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { createCertificateAuthority, type Sans } from '@grpc-kube/lab/internal/lab/x509.js';
import { acceptedPeerNames } from '@grpc-kube/proxy/internal/backend.js';
import { GrpcProxy } from '@grpc-kube/proxy/internal/index.js';
import { newJsonClient, startJsonServer, unary, type JsonServer } from './fixtures/json-service.js';

type T = { after(fn: () => unknown): void };

const dir = mkdtempSync(path.join(tmpdir(), 'gk-backend-name-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const ca = createCertificateAuthority('lab CA', 1);
const caFile = path.join(dir, 'ca.crt');
writeFileSync(caFile, ca.cert);
let serial = 0;
function issue(sans: Sans): { certFile: string; keyFile: string; cert: string; key: string } {
  const id = ca.issue('leaf', sans);
  const certFile = path.join(dir, `${++serial}.crt`);
  const keyFile = path.join(dir, `${serial}.key`);
  writeFileSync(certFile, id.cert);
  writeFileSync(keyFile, id.key);
  return { certFile, keyFile, ...id };
}
const proxyId = issue({ uris: ['spiffe://cluster.local/ns/mesh/sa/proxy'] });

async function backend(t: T, ip: string, sans: Sans): Promise<JsonServer> {
  const id = issue(sans);
  const creds = grpc.ServerCredentials.createSsl(
    Buffer.from(ca.cert),
    [{ private_key: Buffer.from(id.key), cert_chain: Buffer.from(id.cert) }],
    true,
  );
  const s = await startJsonServer(ip, ip, 0, () => {}, creds);
  t.after(() => s.kill());
  return s;
}

/** One call through an ingress proxy to `app.prod:<port>` served by `b`; the TLS errors it reported. */
async function callThrough(
  t: T,
  b: JsonServer,
  serverName?: string,
): Promise<{ code: grpc.status | undefined; errors: GrpcKubeError[] }> {
  const errors: GrpcKubeError[] = [];
  const proxy = new GrpcProxy({
    mode: 'ingress',
    target: 'app.prod:9000',
    staticTargets: { 'app.prod:9000': [{ address: b.address.split(':')[0] as string, port: b.port }] },
    backendTls: { ...proxyId, caFile, ...(serverName !== undefined ? { serverName } : {}) },
    onTlsError: (e) => errors.push(e),
    maxAttempts: 1,
    // Generous: a loaded machine may take seconds for a handshake; refusals come at once, not by timeout.
    connectTimeoutMs: 15_000,
  });
  await proxy.listen();
  t.after(() => proxy.close());
  const c = newJsonClient(proxy.address);
  t.after(() => c.close());
  const r = await unary(c, {}, { deadlineMs: 30_000 });
  return { code: r.err?.code, errors };
}

test('backend TLS name: a certificate for the pod address or the Service DNS name is accepted', async (t) => {
  const byIp = await backend(t, '127.0.0.41', { ips: ['127.0.0.41'] });
  assert.deepEqual(await callThrough(t, byIp), { code: undefined, errors: [] });
  assert.equal(byIp.started['Unary'], 1);
  const byDns = await backend(t, '127.0.0.42', { dns: ['app.prod.svc'] });
  assert.deepEqual(await callThrough(t, byDns), { code: undefined, errors: [] });
  assert.equal(byDns.started['Unary'], 1);
});

test('backend TLS name: a certificate from the CA naming another pod or Service gets no call and a PeerNameError', async (t) => {
  for (const [ip, sans] of [
    ['127.0.0.43', { ips: ['127.0.0.99'], dns: ['other.prod.svc', 'app.staging.svc'] }],
    ['127.0.0.44', { uris: ['spiffe://cluster.local/ns/prod/sa/app'] }],
  ] as const) {
    const b = await backend(t, ip, sans);
    const r = await callThrough(t, b);
    assert.equal(r.code, grpc.status.UNAVAILABLE, ip);
    assert.equal(b.started['Unary'], undefined, ip);
    assert.ok(r.errors.length >= 1, ip);
    for (const e of r.errors) {
      assert.equal(e.code, 'GK_ERR_TLS_PEER_NAME');
      assert.equal(e.name, 'PeerNameError');
    }
  }
});

test('backend TLS name: --backend-tls-server-name wants that DNS name or spiffe:// URI, and nothing else', async (t) => {
  const spiffe = 'spiffe://cluster.local/ns/prod/sa/app';
  const b = await backend(t, '127.0.0.45', { ips: ['127.0.0.45'], dns: ['app.internal'], uris: [spiffe] });
  assert.deepEqual(await callThrough(t, b, 'app.internal'), { code: undefined, errors: [] });
  assert.deepEqual(await callThrough(t, b, spiffe), { code: undefined, errors: [] });
  assert.equal(b.started['Unary'], 2);
  // The pod address is in the certificate, but a server name replaces the default rule.
  for (const name of ['db.internal', 'spiffe://cluster.local/ns/prod/sa/db']) {
    const r = await callThrough(t, b, name);
    assert.equal(r.code, grpc.status.UNAVAILABLE, name);
    assert.equal(r.errors[0]?.code, 'GK_ERR_TLS_PEER_NAME', name);
  }
  assert.equal(b.started['Unary'], 2);
  assert.deepEqual(acceptedPeerNames('10.0.0.7', {}, ['app.prod', 'app.prod.svc']), [
    'app.prod',
    'app.prod.svc',
    '10.0.0.7',
  ]);
});
