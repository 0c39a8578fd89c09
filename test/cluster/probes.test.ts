// The lab kubelet's httpGet handler over HTTP and HTTPS, against real servers on loopback: HTTPS is
// probed as the kubelet probes it (the pod's certificate is not verified: here one from a CA the
// probe does not know), a status 200..399 is success, anything else or no answer is failure.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { runHandler, type HandlerTarget } from '@grpc-kube/lab/internal/cluster/probes.js';
import { createLabTls } from '@grpc-kube/lab/internal/lab/tls.js';

function target(): HandlerTarget {
  return {
    ip: '127.0.0.1',
    container: { name: 'c', image: 'x' },
    exec: undefined,
    grpcClient: () => {
      throw new Error('no grpc here');
    },
  };
}

const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
  res.writeHead(req.url === '/healthz' ? 200 : 503);
  res.end();
};

async function listen(server: http.Server | https.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

test('httpGet over HTTPS succeeds on 200 without verifying the certificate, fails on 503 and on plain HTTP', async (t) => {
  const tls = await createLabTls('probe-test');
  t.after(() => tls.remove());
  const cert = await tls.issue('pod', { ips: ['127.0.0.1'] });
  const server = https.createServer(
    { key: readFileSync(cert.keyFile), cert: readFileSync(cert.certFile) },
    handler,
  );
  const port = await listen(server);
  t.after(() => server.close());
  const probe = (path: string, scheme?: 'HTTP' | 'HTTPS') =>
    runHandler({ httpGet: { port, path, ...(scheme ? { scheme } : {}) } }, target(), 2000);
  assert.equal(await probe('/healthz', 'HTTPS'), true);
  assert.equal(await probe('/other', 'HTTPS'), false, 'a 503 fails');
  assert.equal(
    await probe('/healthz'),
    false,
    'plain HTTP to a TLS port fails, as the default scheme is HTTP',
  );
});

test('httpGet over HTTP: 200 succeeds, 503 fails, an HTTPS probe of a plain server fails; an unknown scheme is a typed error', async (t) => {
  const server = http.createServer(handler);
  const port = await listen(server);
  t.after(() => server.close());
  const probe = (path: string, scheme?: string) =>
    runHandler({ httpGet: { port, path, ...(scheme ? { scheme: scheme as 'HTTP' } : {}) } }, target(), 2000);
  assert.equal(await probe('/healthz'), true);
  assert.equal(await probe('/healthz', 'HTTP'), true);
  assert.equal(await probe('/other'), false);
  assert.equal(await probe('/healthz', 'HTTPS'), false);
  await assert.rejects(probe('/healthz', 'GOPHER'), {
    code: 'GK_ERR_LAB_POD_SPEC',
    message: /GOPHER.*HTTP or HTTPS/,
  });
});
