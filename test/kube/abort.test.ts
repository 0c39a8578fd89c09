// Aborts and time-outs that hold whatever the server does: a source or a request aborted while its
// connection is still being set up (a TLS server that offers h2 and never sends its HTTP/2 SETTINGS)
// ends at once, not when the connect time-out fires; a list the server never answers times out even
// when garbage collections run meanwhile.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { KubernetesEndpointSource } from 'grpc-kube/internal/discovery/kube-source.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import v8 from 'node:v8';
import vm from 'node:vm';
import { testPki } from '../helpers/pki.js';
import { AdversarialApiServer, slice } from './adversarial-server.js';
import { until } from '../helpers/wait.js';
import { servedIps } from '../helpers/kube.js';

/** Far longer than any wait below: finishing before it means the abort, not the time-out, ended it. */
const CONNECT_TIMEOUT_MS = 120_000;
const BOUND_MS = 60_000;

async function silentH2Server(t: { after(fn: () => unknown): void }) {
  const pki = await testPki();
  t.after(() => pki.remove());
  const { certFile, keyFile } = await pki.server('silent');
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer(
    { cert: readFileSync(certFile), key: readFileSync(keyFile), ALPNProtocols: ['h2'] },
    (s) => {
      sockets.add(s); // handshake done; never a byte of HTTP/2 back
      s.on('error', () => {});
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  const yaml = [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: c',
    '  cluster:',
    `    server: https://127.0.0.1:${port}`,
    `    certificate-authority-data: ${readFileSync(pki.ca).toString('base64')}`,
    'contexts:',
    '- name: c',
    '  context: {cluster: c, user: u, namespace: default}',
    'current-context: c',
    'users:',
    '- name: u',
    '  user: {token: t}',
  ].join('\n');
  return { sockets, yaml };
}

/** Resolves to how `p` settled, or 'pending' after BOUND_MS. */
function within(p: Promise<unknown>): Promise<'resolved' | 'rejected' | 'pending'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.then(
      () => 'resolved' as const,
      () => 'rejected' as const,
    ),
    new Promise<'pending'>((r) => (timer = setTimeout(() => r('pending'), BOUND_MS))),
  ]).finally(() => clearTimeout(timer));
}

test('stop() ends a source whose HTTP/2 connection never gets SETTINGS, without waiting for the connect time-out', async (t) => {
  const { sockets, yaml } = await silentH2Server(t);
  const client = KubeClient.fromKubeConfigString(yaml, { connectTimeoutMs: CONNECT_TIMEOUT_MS });
  t.after(() => client.close());
  const src = new KubernetesEndpointSource(client, 'default', 'a', { listTimeoutMs: CONNECT_TIMEOUT_MS });
  src.subscribe({ kind: 'number', port: 50051 }, { onEndpoints: () => {}, onError: () => {} });
  await until(() => sockets.size >= 1, 10_000, 5, 'the client connected');
  assert.equal(await within(src.stop()), 'resolved', 'stop() waited on the connection');
  assert.equal(src.status, 'stopped');
});

test('a list aborted while its connection waits for SETTINGS rejects with the abort, at once', async (t) => {
  const { sockets, yaml } = await silentH2Server(t);
  const client = KubeClient.fromKubeConfigString(yaml, { connectTimeoutMs: CONNECT_TIMEOUT_MS });
  t.after(() => client.close());
  const ac = new AbortController();
  const list = client.list(
    { group: 'discovery.k8s.io', version: 'v1', resource: 'endpointslices', namespace: 'default' },
    { signal: ac.signal },
  );
  list.catch(() => {});
  await until(() => sockets.size >= 1, 10_000, 5, 'the client connected');
  ac.abort();
  assert.equal(await within(list), 'rejected', 'the aborted list stayed pending');
  await list.catch((err: unknown) => {
    assert.ok(err instanceof GrpcKubeError, String(err));
  });
});

test('a list the server never answers times out (and is retried) while garbage collections run', async (t) => {
  v8.setFlagsFromString('--expose_gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const api = await AdversarialApiServer.start({ transport: 'https1' });
  api.put('endpointslices', slice('default', 'a', ['10.9.0.1']));
  let hung = 0;
  api.fault = (kind) => (kind === 'list' && hung++ === 0 ? 'hang' : 'none');
  const client = KubeClient.fromKubeConfigString(api.kubeConfigYaml());
  const src = new KubernetesEndpointSource(client, 'default', 'a', {
    listTimeoutMs: 300,
    backoff: { initialMs: 10, maxMs: 50 },
  });
  const ips = servedIps(src);
  // Collect garbage all through the hung list: the time-out must still fire.
  const collector = setInterval(gc, 20);
  // In the order a user tears down: collections stop, the source, the client, the server.
  t.after(async () => {
    clearInterval(collector);
    await src.stop();
    client.close();
    await api.close();
  });
  await until(() => ips() === '10.9.0.1', BOUND_MS, 5, 'the hung list timed out and the retry listed');
  assert.ok(api.requests.list >= 2, `${api.requests.list} lists`);
});
