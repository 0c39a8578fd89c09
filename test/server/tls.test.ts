// Server kit TLS: grpc-js server credentials that follow certificate files. Mutual TLS refuses
// clients without a certificate from the CA; files rotated in place under load (a new client
// connection every few RPCs, so handshakes keep happening) lose no RPC, and new handshakes get the
// new certificate; a half-written set is reported and never used.

import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { connect, type PeerCertificate } from 'node:tls';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { serverTlsCredentials } from 'grpc-kube/internal/server/index.js';
import { until } from '../helpers/kube.js';
import { testPki } from '../helpers/pki.js';
import { echo, startEchoServer } from './echo.js';

function peerCert(port: number, ca: Buffer, cert: Buffer, key: Buffer): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, cert, key, ALPNProtocols: ['h2'] }, () => {
      resolve(socket.getPeerCertificate());
      socket.end();
    });
    socket.on('error', reject);
  });
}

test('serverTlsCredentials: mutual TLS, and files rotated under load with no RPC lost', async (t) => {
  const pki = await testPki();
  t.after(() => pki.remove());
  const serving = await pki.server('server');
  const clientId = await pki.client('client', 'prod', 'web');
  const ca = await readFile(pki.ca);
  const [cert, key] = [await readFile(clientId.certFile), await readFile(clientId.keyFile)];
  const errors: string[] = [];
  const tls = await serverTlsCredentials({ ...serving, caFile: pki.ca, refreshMs: 50 }, (e) =>
    errors.push(e.code),
  );
  t.after(() => tls.close());
  const s = await startEchoServer((call, cb) => cb(null, call.request), {}, tls.credentials);
  t.after(() => s.server.forceShutdown());
  const creds = grpc.credentials.createSsl(ca, key, cert);

  const first = new grpc.Client(s.address, creds);
  assert.equal((await echo(first, 'hi')).body, 'hi');
  first.close();
  const anon = new grpc.Client(s.address, grpc.credentials.createSsl(ca));
  assert.equal((await echo(anon, 'x')).code, grpc.status.UNAVAILABLE);
  anon.close();

  const before = await peerCert(s.port, ca, cert, key);
  let swapped = false;
  let total = 0;
  let afterSwap = 0;
  const failures: string[] = [];
  const loops = Array.from({ length: 4 }, async () => {
    while (!swapped || afterSwap < 100) {
      // A fresh connection every 5 RPCs.
      const c = new grpc.Client(s.address, creds, { 'grpc.use_local_subchannel_pool': 1 });
      for (let i = 0; i < 5; i++) {
        const r = await echo(c, 'x', 30_000);
        total++;
        if (swapped) afterSwap++;
        if (r.code !== 0) failures.push(`${r.code}: ${r.details}`);
      }
      c.close();
      if (total > 20_000) break;
    }
  });
  await until(() => total >= 50, 60_000);
  const next = await pki.server('server-next');
  await copyFile(next.certFile, serving.certFile);
  await until(() => errors.length > 0, 30_000);
  await copyFile(next.keyFile, serving.keyFile);
  swapped = true;
  await Promise.all(loops);
  assert.deepEqual(failures, []);
  assert.deepEqual(errors, ['GK_ERR_TLS'], 'the half-written set was reported once');
  await until(
    async () => (await peerCert(s.port, ca, cert, key)).serialNumber !== before.serialNumber,
    30_000,
  );
  assert.equal(tls.files.generation, 2);

  // Garbage in the key file: reported, the current set stays in use.
  await writeFile(serving.keyFile, 'not a key');
  await until(() => errors.length === 2, 30_000);
  const c = new grpc.Client(s.address, creds);
  assert.equal((await echo(c, 'still')).body, 'still');
  c.close();
  t.diagnostic(
    `${total} RPCs over ${Math.ceil(total / 5)} connections, ${afterSwap} after the swap, 0 failed`,
  );
});
