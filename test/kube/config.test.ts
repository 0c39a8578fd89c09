// Where the API is and how to reach it: CLI errors that name the missing kubeconfig file, the bad
// context or the absence of any configuration (each with its code, no stack trace), and kubeconfig
// `proxy-url` through a real HTTP CONNECT proxy on loopback.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { loadKubeConfig } from 'grpc-kube/internal/kube/config.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { KubernetesEndpointSource } from 'grpc-kube/internal/discovery/kube-source.js';
import { servedIps, until } from '../helpers/kube.js';
import { AdversarialApiServer, slice } from './adversarial-server.js';

const MAIN = fileURLToPath(new URL('../../../packages/cli/dist/src/main.js', import.meta.url));

function tmp(t: { after(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'gk-kubeconfig-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function cli(args: string[], env: NodeJS.ProcessEnv): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000, env });
  return { status: r.status, stderr: r.stderr };
}

const KUBECONFIG = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "http://127.0.0.1:1"}
contexts:
- name: dev
  context: {cluster: c, user: u}
- name: prod
  context: {cluster: c, user: u}
current-context: dev
users:
- name: u
  user: {token: t}
`;

test('CLI: a missing --kubeconfig file, a bad --context and no configuration at all are named, with codes', (t) => {
  const dir = tmp(t);
  const home = join(dir, 'home');
  const env = { PATH: process.env.PATH, HOME: home };
  const missing = join(dir, 'nope.yaml');
  for (const args of [
    ['resolve', 'kubernetes:///a.b:1', '--kubeconfig', missing, '--once'],
    ['xds', 'serve', '--kubeconfig', missing],
  ]) {
    const r = cli(args, env);
    // `xds` exits 2 with its usage after any error of its own (its existing contract).
    assert.equal(r.status, args[0] === 'xds' ? 2 : 1, r.stderr);
    assert.match(r.stderr, /^grpc-kube( xds)?: GK_ERR_KUBECONFIG_NOT_FOUND: /);
    assert.ok(r.stderr.includes(missing), r.stderr);
    assert.doesNotMatch(r.stderr, /\n {4}at /, 'no stack trace');
  }
  const file = join(dir, 'config.yaml');
  writeFileSync(file, KUBECONFIG);
  const bad = cli(
    ['resolve', 'kubernetes:///a.b:1', '--kubeconfig', file, '--context', 'staging', '--once'],
    env,
  );
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /GK_ERR_KUBE_CONTEXT_NOT_FOUND: .*"staging".*"dev", "prod"/);
  const none = cli(['resolve', 'kubernetes:///a.b:1', '--once'], env);
  assert.equal(none.status, 1);
  assert.match(none.stderr, /GK_ERR_KUBE_CONFIG: no Kubernetes configuration: .*--kubeconfig/);
  assert.doesNotMatch(none.stderr, /HTTP protocol is not allowed/);
  const gone = cli(['resolve', 'kubernetes:///a.b:1', '--once'], { ...env, KUBECONFIG: missing });
  assert.match(gone.stderr, /GK_ERR_KUBECONFIG_NOT_FOUND: KUBECONFIG names ".*nope\.yaml"/);
});

test('loadKubeConfig picks the context asked for; an unsupported proxy-url is a typed error', (t) => {
  const dir = tmp(t);
  const file = join(dir, 'config.yaml');
  writeFileSync(file, KUBECONFIG);
  assert.equal(loadKubeConfig({ kubeconfig: file, context: 'prod' }).getCurrentContext(), 'prod');
  const socks = KUBECONFIG.replace(
    '{server: "http://127.0.0.1:1"}',
    '{server: "https://127.0.0.1:1", proxy-url: "socks5://127.0.0.1:1080"}',
  );
  assert.throws(
    () => KubeClient.fromKubeConfigString(socks),
    (e: unknown) =>
      e instanceof GrpcKubeError && e.code === 'GK_ERR_KUBE_CONFIG' && /only http:\/\//.test(e.message),
  );
});

/** A minimal HTTP CONNECT proxy on loopback that counts its tunnels. */
async function connectProxy(t: {
  after(fn: () => unknown): void;
}): Promise<{ port: number; tunnels: () => number }> {
  let tunnels = 0;
  const socks = new Set<net.Socket>();
  const server = net.createServer((c) => {
    socks.add(c);
    c.on('error', () => {});
    c.once('data', (head) => {
      const m = /^CONNECT 127\.0\.0\.1:(\d+) HTTP\/1\.1\r\n/.exec(head.toString('latin1'));
      if (m === null) {
        c.end('HTTP/1.1 403 Forbidden\r\n\r\n');
        return;
      }
      const up = net.connect(Number(m[1]), '127.0.0.1', () => {
        tunnels++;
        c.write('HTTP/1.1 200 Connection established\r\n\r\n');
        c.pipe(up);
        up.pipe(c);
      });
      socks.add(up);
      up.on('error', () => c.destroy());
      c.once('close', () => up.destroy());
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => {
    for (const s of socks) s.destroy();
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, tunnels: () => tunnels };
}

for (const transport of ['h2', 'http'] as const) {
  test(`kubeconfig proxy-url: lists and watches go through an HTTP CONNECT tunnel (${transport})`, async (t) => {
    const api = await AdversarialApiServer.start({ transport });
    t.after(() => api.close());
    api.put('endpointslices', slice('default', 'a', ['10.4.0.1']));
    const proxy = await connectProxy(t);
    const c = KubeClient.fromKubeConfigString(
      api.kubeConfigYaml([`    proxy-url: http://127.0.0.1:${proxy.port}`]),
    );
    t.after(() => c.close());
    const src = new KubernetesEndpointSource(c, 'default', 'a', { backoff: { initialMs: 10, maxMs: 50 } });
    t.after(() => src.stop());
    const ips = servedIps(src);
    await until(() => ips() === '10.4.0.1');
    api.put('endpointslices', slice('default', 'a', ['10.4.0.2']));
    await until(() => ips() === '10.4.0.2');
    assert.ok(proxy.tunnels() >= 1, 'traffic went through the proxy');
  });
}
