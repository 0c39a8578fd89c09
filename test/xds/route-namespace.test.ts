// The GRPCRoute watch of `xds serve` and `proxy --grpc-routes` stays in the pod's own namespace
// unless told otherwise, because the manifests grant a namespaced Role: on the embedded API server
// (real HTTP, real RBAC decisions) the identity below may read grpcroutes and endpointslices in
// team-a only, so a cluster-wide watch answers 403 and a watch in team-a answers 200. A watch error
// goes to stderr with its code.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { podNamespace } from '@grpc-kube/cli/internal/pod-namespace.js';
import { xdsCommand } from '@grpc-kube/cli/internal/xds.js';
import { canaryGrpcRoute } from '@grpc-kube/lab/internal/lab/strategies/xds.js';
import { LDS, RDS } from '@grpc-kube/xds/internal/protos.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { openAds } from './fixture.js';

const MAIN = fileURLToPath(new URL('../../../packages/cli/dist/src/main.js', import.meta.url));
const NS = 'team-a';
const PORT = 50051;
const TOKEN = 'team-a-reader';

let api: EmbeddedApiServer;
let dir: string;
/** A kubeconfig as the ServiceAccount of team-a, its context namespace team-a. */
let kubeconfig: string;

before(async () => {
  api = await startApi();
  dir = mkdtempSync(join(tmpdir(), 'gk-route-ns-'));
  // What deploy/xds's Role grants, bound in team-a only.
  api.addToken(TOKEN, {
    user: `system:serviceaccount:${NS}:grpc-kube-xds`,
    rules: [
      {
        verbs: ['get', 'list', 'watch'],
        apiGroups: ['discovery.k8s.io', 'gateway.networking.k8s.io'],
        resources: ['endpointslices', 'grpcroutes', 'referencegrants'],
        namespaces: [NS],
      },
      { verbs: ['get'], apiGroups: [''], resources: ['services'], namespaces: [NS] },
      {
        verbs: ['update'],
        apiGroups: ['gateway.networking.k8s.io'],
        resources: ['grpcroutes/status'],
        namespaces: [NS],
      },
    ],
  });
  api.store.create(RESOURCES.namespaces, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  for (const svc of ['hello', 'hello-v1', 'hello-v2'])
    new SliceWriter(api, svc, PORT, NS).put(`${svc}-a`, [{ ip: '127.0.0.31' }]);
  api.store.create(
    RESOURCES.grpcroutes,
    canaryGrpcRoute({
      namespace: NS,
      service: 'hello',
      port: PORT,
      stableService: 'hello-v1',
      canaryService: 'hello-v2',
      weights: { stable: 90, canary: 10 },
    }),
  );
  kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, api.kubeConfigYaml(TOKEN, { namespace: NS }));
});

after(async () => {
  await api?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the pod namespace: flag, then POD_NAMESPACE, then the ServiceAccount file, then the kubeconfig', () => {
  const file = join(dir, 'namespace');
  writeFileSync(file, 'from-file\n');
  const none = join(dir, 'absent');
  const kc = (): string => 'from-kubeconfig';
  const env = { POD_NAMESPACE: 'from-env' };
  assert.deepEqual(podNamespace({ flag: 'f', env, namespaceFile: file, kubeConfigNamespace: kc }), {
    namespace: 'f',
    source: 'flag',
  });
  assert.deepEqual(podNamespace({ env, namespaceFile: file, kubeConfigNamespace: kc }), {
    namespace: 'from-env',
    source: 'POD_NAMESPACE',
  });
  assert.deepEqual(podNamespace({ env: {}, namespaceFile: file, kubeConfigNamespace: kc }), {
    namespace: 'from-file',
    source: 'serviceaccount',
  });
  assert.deepEqual(
    podNamespace({ env: { POD_NAMESPACE: ' ' }, namespaceFile: none, kubeConfigNamespace: kc }),
    {
      namespace: 'from-kubeconfig',
      source: 'kubeconfig',
    },
  );
  assert.deepEqual(podNamespace({ env: {}, namespaceFile: none }), {
    namespace: 'default',
    source: 'default',
  });
});

/** `xds serve` in this process until the returned stop(); its stderr lines, its ADS address. */
async function serve(
  args: readonly string[],
): Promise<{ err: string[]; address: string; stop: () => Promise<number> }> {
  const ac = new AbortController();
  const err: string[] = [];
  let address = '';
  const done = xdsCommand(['serve', '--kubeconfig', kubeconfig, '--listen', '127.0.0.1:0', ...args], {
    out: () => {},
    err: (l) => err.push(l),
    signal: ac.signal,
    onListening: (a) => (address = a),
  });
  let exit: number | undefined;
  void done.then((c) => (exit = c));
  await until(() => address !== '' || exit !== undefined, 60_000);
  assert.equal(exit, undefined, err.join('\n'));
  return {
    err,
    address,
    stop: async () => {
      ac.abort();
      return done;
    },
  };
}

/** The RouteConfiguration ADS serves for hello.team-a:PORT, as the bytes of its resources. */
async function routeConfig(address: string): Promise<string> {
  const listener = `hello.${NS}:${PORT}`;
  const s = openAds(address);
  try {
    s.send({ type: LDS, names: [listener], nodeId: `${NS}/client`, namespace: NS });
    const lds = await s.next(30_000);
    s.send({ type: LDS, names: [listener], nonce: lds.nonce, version: lds.version_info });
    s.send({ type: RDS, names: [listener] });
    const rds = await s.next(30_000);
    assert.equal(rds.type_url, RDS);
    return rds.resources.map((r) => Buffer.from(r.value).toString('latin1')).join('\n');
  } finally {
    s.close();
  }
}

test('xds serve without --namespace watches the pod namespace: the namespaced Role suffices, the route is served', async () => {
  const cp = await serve([]);
  try {
    const log = cp.err.join('\n');
    assert.match(log, new RegExp(`GRPCRoutes: watching namespace ${NS} \\(from kubeconfig\\)`));
    assert.doesNotMatch(log, /GK_ERR_KUBE_FORBIDDEN/);
    // The 90/10 split of team-a's GRPCRoute is in the route table: the watch read it.
    const rc = await routeConfig(cp.address);
    assert.ok(rc.includes('hello-v1') && rc.includes('hello-v2'), rc);
  } finally {
    assert.equal(await cp.stop(), 0);
  }
});

test('xds serve --all-namespaces under a namespaced Role: 403, logged to stderr with its code; no route served', async () => {
  const cp = await serve(['--all-namespaces']);
  try {
    assert.match(cp.err.join('\n'), /GRPCRoute watch: GK_ERR_KUBE_FORBIDDEN: .*grpcroutes/);
    const rc = await routeConfig(cp.address);
    assert.ok(!rc.includes('hello-v2'), rc);
  } finally {
    assert.equal(await cp.stop(), 0);
  }
});

/** `grpc-kube proxy --grpc-routes` as a process, until it listens; then SIGTERM. */
async function proxy(
  extra: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<{ out: string; err: string }> {
  const child = spawn(
    process.execPath,
    [
      MAIN,
      'proxy',
      '--mode',
      'ingress',
      '--listen',
      '127.0.0.1:0',
      '--target',
      `hello:${PORT}`,
      '--kubeconfig',
      kubeconfig,
      '--grpc-routes',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, POD_NAMESPACE: '', ...env } },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  try {
    await until(() => out.includes('listening on') || child.exitCode !== null, 60_000, 20);
    assert.match(out, /listening on/, err);
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, err);
  return { out, err };
}

test('proxy --grpc-routes watches the pod namespace (POD_NAMESPACE) and logs a 403 to stderr with its code', async () => {
  // The kubeconfig's namespace is team-a too; POD_NAMESPACE comes first.
  const own = await proxy([], { POD_NAMESPACE: NS });
  assert.match(own.out, new RegExp(`GRPCRoutes in namespace ${NS}`));
  assert.doesNotMatch(own.err, /GK_ERR_KUBE_FORBIDDEN/);
  const wide = await proxy(['--all-namespaces'], {});
  assert.match(wide.out, /GRPCRoutes in every namespace/);
  assert.match(wide.err, /grpc-kube proxy: GRPCRoute watch: GK_ERR_KUBE_FORBIDDEN: /);
});
