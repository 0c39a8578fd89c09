// The kubeconfig reader (packages/grpc-kube/src/kube/kubeconfig.ts) against a real TLS API server on loopback: a pod's
// two ServiceAccount files (a rotated token is read by the next request), client certificates from
// relative paths, KUBECONFIG merged as kubectl merges it, an exec plugin through client-node (loaded
// only then), client-node's own KubeConfig accepted as is, and typed errors for bad files.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { KubeConfig as ClientNodeKubeConfig } from '@kubernetes/client-node';
import { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { loadKubeConfig } from 'grpc-kube/internal/kube/config.js';
import { parseKubeConfig, type KubeConfigLike } from 'grpc-kube/internal/kube/kubeconfig.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { testPki, type TestPki } from '../helpers/pki.js';

const SLICES = { group: 'discovery.k8s.io', version: 'v1', resource: 'endpointslices' };
const ADMIN = {
  user: 'system:serviceaccount:team:app',
  rules: [{ verbs: ['*'], apiGroups: ['*'], resources: ['*'] }],
};

function tmp(t: { after(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'gk-kubeconfig-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function tlsApi(t: {
  after(fn: () => unknown): void;
}): Promise<{ api: EmbeddedApiServer; pki: TestPki }> {
  const pki = await testPki();
  t.after(() => pki.remove());
  const s = await pki.server('api');
  const api = new EmbeddedApiServer({
    tls: { key: readFileSync(s.keyFile), cert: readFileSync(s.certFile), ca: readFileSync(pki.ca) },
  });
  await api.start();
  t.after(() => api.close());
  return { api, pki };
}

async function listOk(client: KubeClient, namespace = 'default'): Promise<void> {
  const l = await client.list({ ...SLICES, namespace });
  assert.ok(Array.isArray(l.items));
}

async function rejects401(client: KubeClient): Promise<void> {
  await assert.rejects(client.list({ ...SLICES, namespace: 'default' }), (e: unknown) => {
    return e instanceof GrpcKubeError && e.code === 'GK_ERR_KUBE_UNAUTHORIZED';
  });
}

test('in a pod: the ServiceAccount token and CA are two files; a rotated token is read by the next request', async (t) => {
  const { api, pki } = await tlsApi(t);
  const sa = tmp(t);
  writeFileSync(join(sa, 'ca.crt'), readFileSync(pki.ca));
  writeFileSync(join(sa, 'namespace'), 'team\n');
  api.addToken('first', ADMIN);
  writeFileSync(join(sa, 'token'), 'first');
  const port = new URL(api.url).port;
  const kc = loadKubeConfig({
    env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port },
    home: tmp(t),
    serviceAccountDir: sa,
  });
  const client = new KubeClient(kc);
  t.after(() => client.close());
  assert.equal(client.defaultNamespace, 'team');
  await listOk(client, 'team');
  // The kubelet rotates the projected token: the old one stops working, the file has the new one.
  api.addToken('second', ADMIN);
  api.removeToken('first');
  writeFileSync(join(sa, 'token'), 'second');
  await listOk(client, 'team');
  api.removeToken('second');
  await rejects401(client);
});

test('GRPC_KUBE_SERVICEACCOUNT_DIR moves the ServiceAccount mount (the lab kubelet projects one per pod)', async (t) => {
  const { api, pki } = await tlsApi(t);
  const sa = tmp(t);
  writeFileSync(join(sa, 'ca.crt'), readFileSync(pki.ca));
  writeFileSync(join(sa, 'namespace'), 'moved\n');
  api.addToken('moved-token', ADMIN);
  writeFileSync(join(sa, 'token'), 'moved-token');
  const port = new URL(api.url).port;
  const kc = loadKubeConfig({
    env: {
      KUBERNETES_SERVICE_HOST: '127.0.0.1',
      KUBERNETES_SERVICE_PORT: port,
      GRPC_KUBE_SERVICEACCOUNT_DIR: sa,
    },
    home: tmp(t),
  });
  const client = new KubeClient(kc);
  t.after(() => client.close());
  assert.equal(client.defaultNamespace, 'moved');
  await listOk(client, 'moved');
});

test('client certificates and CA from files relative to the kubeconfig; KUBECONFIG merges first-wins', async (t) => {
  const { api, pki } = await tlsApi(t);
  const dir = tmp(t);
  const client = await pki.client('me', 'default');
  writeFileSync(join(dir, 'ca.crt'), readFileSync(pki.ca));
  writeFileSync(join(dir, 'me.crt'), readFileSync(client.certFile));
  writeFileSync(join(dir, 'me.key'), readFileSync(client.keyFile));
  const first = join(dir, 'a.yaml');
  const second = join(dir, 'b.yaml');
  api.addToken('tok', ADMIN);
  writeFileSync(
    first,
    [
      'apiVersion: v1',
      'clusters:',
      '- name: lab',
      `  cluster: {server: "${api.url}/", certificate-authority: ca.crt}`,
      'contexts:',
      '- name: lab',
      '  context: {cluster: lab, user: me, namespace: web}',
      'current-context: lab',
      'users:',
      '- name: me',
      '  user: {client-certificate: me.crt, client-key: me.key, token: tok}',
      '',
    ].join('\n'),
  );
  // The second file's current-context and its own "lab" cluster lose to the first file's.
  writeFileSync(
    second,
    JSON.stringify({
      clusters: [{ name: 'lab', cluster: { server: 'https://127.0.0.1:1' } }],
      contexts: [{ name: 'other', context: { cluster: 'lab' } }],
      'current-context': 'other',
    }),
  );
  const kc = loadKubeConfig({ env: { KUBECONFIG: [first, second].join(delimiter) }, home: dir });
  assert.equal(kc.getCurrentContext(), 'lab');
  assert.deepEqual(
    kc.getContexts().map((c) => c.name),
    ['lab', 'other'],
  );
  assert.equal(kc.getCurrentCluster()?.server, api.url);
  assert.equal(kc.getCurrentCluster()?.caFile, join(dir, 'ca.crt'));
  const opts: { cert?: Buffer; key?: Buffer; ca?: Buffer; headers?: Record<string, string> } = {};
  await kc.applyOptions(opts);
  assert.deepEqual(opts.cert, readFileSync(client.certFile));
  assert.deepEqual(opts.key, readFileSync(client.keyFile));
  assert.equal(opts.headers?.Authorization, 'Bearer tok');
  const c = new KubeClient(kc);
  t.after(() => c.close());
  assert.equal(c.defaultNamespace, 'web');
  await listOk(c); // the TLS handshake verified the server against ca.crt from the relative path
});

test('an exec credential plugin runs through @kubernetes/client-node, loaded only for it', async (t) => {
  const { api } = await tlsApi(t);
  const dir = tmp(t);
  api.addToken('from-plugin', ADMIN);
  const plugin = join(dir, 'plugin.mjs');
  writeFileSync(
    plugin,
    `process.stdout.write(JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: 'from-plugin' } }));\n`,
  );
  const yaml = api
    .kubeConfigYaml()
    .replace(
      / {2}user:\n {4}token: .*\n/,
      [
        '  user:',
        '    exec:',
        '      apiVersion: client.authentication.k8s.io/v1',
        `      command: ${JSON.stringify(process.execPath)}`,
        `      args: [${JSON.stringify(plugin)}]`,
        '      interactiveMode: Never',
        '',
      ].join('\n'),
    );
  assert.match(yaml, /exec:/);
  const client = KubeClient.fromKubeConfigString(yaml);
  t.after(() => client.close());
  await listOk(client);
  api.removeToken('from-plugin');
  await rejects401(client);
});

test("@kubernetes/client-node's own KubeConfig is a KubeConfigLike", async (t) => {
  const { api } = await tlsApi(t);
  const kc = new ClientNodeKubeConfig();
  kc.loadFromString(api.kubeConfigYaml());
  const like: KubeConfigLike = kc; // compile-time: the structural contract holds
  const client = new KubeClient(like);
  t.after(() => client.close());
  await listOk(client);
});

test('bad kubeconfigs are typed errors naming the field', () => {
  const cases: Array<[string, RegExp]> = [
    ['clusters: {a: 1}', /clusters is not a list/],
    ['clusters:\n- cluster: {server: "https://x"}', /clusters\[0\]\.name is missing/],
    ['clusters:\n- name: a\n  cluster: {}', /clusters\[0\]\.cluster\.server is missing/],
    ['users:\n- name: u\n  user: {token: [1]}', /users\[0\]\.user\.token must be a string/],
    ['contexts:\n- name: c\n  context: {user: u}', /contexts\[0\]\.context\.cluster is missing/],
    ['clusters: [', /not valid YAML\/JSON/],
    ['{"clusters": ', /not valid YAML\/JSON/],
    ['- a\n- b', /is not a mapping/],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseKubeConfig(text),
      (e: unknown) =>
        e instanceof GrpcKubeError && e.code === 'GK_ERR_KUBE_CONFIG' && message.test(e.message),
      text,
    );
  }
  assert.equal(parseKubeConfig('').getCurrentCluster(), null);
});

test('an unreadable tokenFile or CA file is a typed error when the request is made', async (t) => {
  const dir = tmp(t);
  const kc = parseKubeConfig(
    [
      'clusters:',
      '- {name: c, cluster: {server: "https://127.0.0.1:1", certificate-authority: nope.crt}}',
      'users:',
      '- {name: u, user: {tokenFile: /nonexistent/token}}',
      'contexts:',
      '- {name: c, context: {cluster: c, user: u}}',
      'current-context: c',
    ].join('\n'),
    dir,
  );
  await assert.rejects(
    kc.applyOptions({}),
    (e: unknown) =>
      e instanceof GrpcKubeError &&
      e.code === 'GK_ERR_KUBE_CONFIG' &&
      e.message.includes(join(dir, 'nope.crt')),
  );
  const noCa = parseKubeConfig(
    [
      'clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]',
      'users: [{name: u, user: {tokenFile: /nonexistent/token}}]',
      'contexts: [{name: c, context: {cluster: c, user: u}}]',
      'current-context: c',
    ].join('\n'),
  );
  await assert.rejects(noCa.applyOptions({}), /tokenFile "\/nonexistent\/token"/);
});

test('TLS and identity fields: -data material, insecure-skip-tls-verify, tls-server-name, as', async () => {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const kc = parseKubeConfig(
    JSON.stringify({
      clusters: [
        {
          name: 'c',
          cluster: {
            server: 'https://127.0.0.1:1',
            'certificate-authority-data': b64('CA'),
            'insecure-skip-tls-verify': true,
            'tls-server-name': 'api.internal',
          },
        },
      ],
      users: [
        {
          name: 'u',
          user: {
            'client-certificate-data': b64('CERT'),
            'client-key-data': b64('KEY'),
            token: 'tok',
            as: 'someone-else',
          },
        },
      ],
      contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'c',
    }),
  );
  const o: {
    ca?: Buffer;
    cert?: Buffer;
    key?: Buffer;
    rejectUnauthorized?: boolean;
    servername?: string;
    headers?: Record<string, string>;
  } = {};
  await kc.applyOptions(o);
  assert.deepEqual(
    {
      ca: o.ca?.toString(),
      cert: o.cert?.toString(),
      key: o.key?.toString(),
      rejectUnauthorized: o.rejectUnauthorized,
      servername: o.servername,
      headers: o.headers,
    },
    {
      ca: 'CA',
      cert: 'CERT',
      key: 'KEY',
      rejectUnauthorized: false,
      servername: 'api.internal',
      headers: { Authorization: 'Bearer tok', 'Impersonate-User': 'someone-else' },
    },
  );
});

test('tls-server-name is the name the server certificate is checked against', async (t) => {
  const { api } = await tlsApi(t);
  // The serving certificate names 127.0.0.1 and localhost, not nope.example.
  for (const [name, ok] of [
    ['localhost', true],
    ['nope.example', false],
  ] as const) {
    const yaml = api
      .kubeConfigYaml()
      .replace(/( {4}certificate-authority-data: .*\n)/, `$1    tls-server-name: ${name}\n`);
    assert.match(yaml, new RegExp(`tls-server-name: ${name}`));
    const client = KubeClient.fromKubeConfigString(yaml);
    t.after(() => client.close());
    if (ok) await listOk(client);
    else await assert.rejects(client.list({ ...SLICES, namespace: 'default' }), /nope\.example/);
  }
});
