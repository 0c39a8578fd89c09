// The real control plane: starts etcd + kube-apiserver + kube-controller-manager built from the pinned
// Go modules and checks the facts the lab rests on (version stamp, controllers running, EndpointSlice
// address validation per CVE-2021-25737), then that stop() leaves nothing behind.
// Skips only when the binaries are absent and GRPC_KUBE_REAL is unset; with GRPC_KUBE_REAL=1 a missing
// binary fails.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import {
  ApiException,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  RbacAuthorizationV1Api,
  VersionApi,
} from '@kubernetes/client-node';
import type { V1EndpointSlice } from '@kubernetes/client-node';

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import {
  ETCD_VERSION,
  KUBE_VERSION,
  controlPlaneBinDir,
  controlPlaneBinariesPresent,
  findControlPlaneBinaries,
} from '@grpc-kube/lab/internal/cluster/real/binaries.js';
import {
  startRealControlPlane,
  type RealControlPlane,
} from '@grpc-kube/lab/internal/cluster/real/control-plane.js';
import { reapLeftovers } from '@grpc-kube/lab/internal/cluster/real/processes.js';

const repoRoot = join(import.meta.dirname, '..', '..', '..');
const realRequired = (process.env['GRPC_KUBE_REAL'] ?? '') !== '';
const skipReal =
  !realRequired && !controlPlaneBinariesPresent()
    ? `real control plane not built (${controlPlaneBinDir()}); run scripts/build-control-plane.sh ` +
      'or set GRPC_KUBE_REAL=1 to make this a failure'
    : false;

describe('control plane binaries', () => {
  it('pins the same versions as the wrapper go.mod files', () => {
    const kubeMod = readFileSync(join(repoRoot, 'go', 'kube', 'go.mod'), 'utf8');
    const etcdMod = readFileSync(join(repoRoot, 'go', 'etcd', 'go.mod'), 'utf8');
    assert.match(
      kubeMod,
      new RegExp(`^\\s*k8s\\.io/kubernetes ${KUBE_VERSION.replace(/\./g, '\\.')}\\b`, 'm'),
    );
    assert.match(
      etcdMod,
      new RegExp(`^\\s*go\\.etcd\\.io/etcd/server/v3 ${ETCD_VERSION.replace(/\./g, '\\.')}\\b`, 'm'),
    );
    // Every staging module must be replaced by its published tag, or `go build` resolves a local path.
    const staging = `v0.${KUBE_VERSION.slice(3)}`;
    const replaces = kubeMod.match(/^\s*k8s\.io\/[\w-]+ => k8s\.io\/[\w-]+ (v\S+)$/gm) ?? [];
    assert.ok(replaces.length >= 33, `expected >= 33 staging replaces, got ${replaces.length}`);
    for (const line of replaces) assert.ok(line.endsWith(staging), line);
  });

  it('names the build script when binaries are missing', () => {
    const empty = mkdtempSync(join(tmpdir(), 'grpc-kube-nobin-'));
    try {
      assert.throws(
        () => findControlPlaneBinaries(empty),
        (err: unknown) =>
          err instanceof GrpcKubeError &&
          err.code === 'GK_ERR_LAB' &&
          err.message.includes('scripts/build-control-plane.sh') &&
          err.message.includes(join(empty, 'kube-apiserver')),
      );
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('resolves the bin dir from GRPC_KUBE_BIN_DIR, then GRPC_KUBE_CACHE', () => {
    assert.equal(controlPlaneBinDir({ GRPC_KUBE_BIN_DIR: '/opt/k' }), '/opt/k');
    assert.equal(
      controlPlaneBinDir({ GRPC_KUBE_CACHE: '/c' }),
      `/c/bin/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}`,
    );
  });

  it('rejects bad options before starting anything', async () => {
    await assert.rejects(
      startRealControlPlane({ serviceClusterIpRange: '10.96.0.0' }),
      (err: unknown) => err instanceof GrpcKubeError && err.code === 'GK_ERR_INVALID_OPTION',
    );
    await assert.rejects(
      startRealControlPlane({ startTimeoutMs: -1 }),
      (err: unknown) => err instanceof GrpcKubeError && err.code === 'GK_ERR_INVALID_OPTION',
    );
  });
});

function apiCode(err: unknown): number | undefined {
  return err instanceof ApiException ? (err as ApiException<unknown>).code : undefined;
}

function slice(name: string, service: string, address: string): V1EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      labels: {
        'kubernetes.io/service-name': service,
        // Not the endpointslice controller's value, so the controller leaves this slice alone.
        'endpointslice.kubernetes.io/managed-by': 'grpc-kube-test',
      },
    },
    addressType: 'IPv4',
    endpoints: [{ addresses: [address], conditions: { ready: true } }],
    ports: [{ name: 'grpc', port: 50051, protocol: 'TCP' }],
  };
}

describe('real control plane', { skip: skipReal }, () => {
  let cp: RealControlPlane;
  let core: CoreV1Api;
  let discovery: DiscoveryV1Api;
  const ns = 'gk-cp-test';

  before(async () => {
    const t0 = Date.now();
    cp = await startRealControlPlane();
    console.log(`# control plane up in ${Date.now() - t0} ms at ${cp.url}`);
    const kc = new KubeConfig();
    kc.loadFromString(cp.adminKubeConfig);
    core = kc.makeApiClient(CoreV1Api);
    discovery = kc.makeApiClient(DiscoveryV1Api);
  });
  after(async () => {
    await cp?.stop();
  });

  it('reports the pinned version (the -ldflags stamp took)', async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(cp.adminKubeConfigPath);
    const v = await kc.makeApiClient(VersionApi).getCode();
    assert.equal(v.gitVersion, KUBE_VERSION);
    assert.equal(v.major, '1');
    assert.equal(v.minor, KUBE_VERSION.split('.')[1]);
  });

  it('runs the controllers: a new namespace gets its default ServiceAccount', async () => {
    await core.createNamespace({ body: { metadata: { name: ns } } });
    // The serviceaccount controller is asynchronous; poll with a deadline (there is no clock to inject
    // into a real controller).
    const deadline = Date.now() + 30_000;
    for (let wait = 50; ; wait = Math.min(wait * 2, 500)) {
      try {
        const sa = await core.readNamespacedServiceAccount({ name: 'default', namespace: ns });
        assert.equal(sa.metadata?.namespace, ns);
        break;
      } catch (err) {
        if (apiCode(err) !== 404 || Date.now() > deadline) throw err;
      }
      await delay(wait);
    }
    // The root-ca publisher puts our CA into every namespace: in-cluster clients trust the apiserver.
    const deadline2 = Date.now() + 30_000;
    for (let wait = 50; ; wait = Math.min(wait * 2, 500)) {
      try {
        const cm = await core.readNamespacedConfigMap({ name: 'kube-root-ca.crt', namespace: ns });
        assert.equal(cm.data?.['ca.crt']?.trim(), cp.caPem.trim());
        break;
      } catch (err) {
        if (apiCode(err) !== 404 || Date.now() > deadline2) throw err;
      }
      await delay(wait);
    }
  });

  it('stores an EndpointSlice with a lab-CIDR address and lists it back', async () => {
    await core.createNamespacedService({
      namespace: ns,
      body: {
        metadata: { name: 'echo' },
        // No selector: the endpointslice controller publishes nothing for it, the test's slice is the only one.
        spec: { ports: [{ name: 'grpc', port: 50051, protocol: 'TCP' }] },
      },
    });
    await discovery.createNamespacedEndpointSlice({
      namespace: ns,
      body: slice('echo-lab', 'echo', '10.244.0.5'),
    });
    const list = await discovery.listNamespacedEndpointSlice({
      namespace: ns,
      labelSelector: 'kubernetes.io/service-name=echo',
    });
    assert.deepEqual(
      list.items.map((s) => [s.metadata?.name, s.endpoints.flatMap((e) => e.addresses)]),
      [['echo-lab', ['10.244.0.5']]],
    );
  });

  for (const [what, address, range] of [
    ['loopback', '127.0.0.1', 'loopback range'],
    ['loopback (not .1)', '127.0.0.5', 'loopback range'],
    ['link-local', '169.254.10.10', 'link-local range'],
  ] as const) {
    it(`rejects a ${what} address in an EndpointSlice with 422 (CVE-2021-25737)`, async () => {
      await assert.rejects(
        discovery.createNamespacedEndpointSlice({
          namespace: ns,
          body: slice(`bad-${address}`, 'echo', address),
        }),
        (err: unknown) => {
          assert.equal(apiCode(err), 422, String(err));
          // The right reason, on the right field: not some other validation failure.
          const body = String((err as ApiException<unknown>).body);
          assert.ok(body.includes('endpoints[0].addresses[0]'), body);
          assert.ok(body.includes(`Invalid value: \\"${address}\\": may not be in the ${range}`), body);
          return true;
        },
      );
    });
  }

  it('issues ServiceAccount tokens (TokenRequest) that RBAC authorizes per namespace', async () => {
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'reader' } } });
    const tr = await core.createNamespacedServiceAccountToken({
      name: 'reader',
      namespace: ns,
      body: { spec: { audiences: [], expirationSeconds: 600 } },
    });
    const token = tr.status?.token ?? '';
    assert.ok(token.split('.').length === 3, 'a JWT');
    const asReader = new KubeConfig();
    asReader.loadFromString(cp.kubeConfigFor({ token }, 'reader'));
    const readerDiscovery = asReader.makeApiClient(DiscoveryV1Api);
    const list = (): Promise<unknown> => readerDiscovery.listNamespacedEndpointSlice({ namespace: ns });
    await assert.rejects(list(), (err: unknown) => {
      assert.equal(apiCode(err), 403, String(err));
      assert.match(String((err as ApiException<unknown>).body), /system:serviceaccount:gk-cp-test:reader/);
      return true;
    });

    const rbac = new KubeConfig();
    rbac.loadFromString(cp.adminKubeConfig);
    const rbacApi = rbac.makeApiClient(RbacAuthorizationV1Api);
    await rbacApi.createNamespacedRole({
      namespace: ns,
      body: {
        metadata: { name: 'endpointslice-reader' },
        rules: [
          { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
        ],
      },
    });
    await rbacApi.createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name: 'reader' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'endpointslice-reader' },
        subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace: ns }],
      },
    });
    // The RBAC authorizer reads through an informer: the binding takes effect shortly, not at once.
    const deadline = Date.now() + 30_000;
    for (let wait = 20; ; wait = Math.min(wait * 2, 250)) {
      try {
        const slices = (await list()) as { items: V1EndpointSlice[] };
        assert.deepEqual(
          slices.items.map((x) => x.metadata?.name),
          ['echo-lab'],
        );
        break;
      } catch (err) {
        if (apiCode(err) !== 403 || Date.now() > deadline) throw err;
      }
      await delay(wait);
    }
    // Still nothing outside its namespace.
    await assert.rejects(
      readerDiscovery.listNamespacedEndpointSlice({ namespace: 'default' }),
      (err: unknown) => {
        assert.equal(apiCode(err), 403);
        return true;
      },
    );
  });

  it('stop() kills every component and removes the temp dir and run record', async () => {
    assert.ok(existsSync(join(cp.dir, 'etcd')));
    const runDir = join(
      process.env['GRPC_KUBE_CACHE'] || join(process.env['HOME'] ?? '', '.cache', 'grpc-kube'),
      'run',
    );
    const mine = (): string[] =>
      readdirSync(runDir).filter((f) => f.startsWith(`control-plane-${process.pid}-`));
    assert.equal(mine().length, 1);
    const children = (
      JSON.parse(readFileSync(join(runDir, mine()[0] ?? ''), 'utf8')) as {
        children: { pid: number }[];
      }
    ).children.map((c) => c.pid);
    assert.equal(children.length, 3);
    await cp.stop();
    await cp.stop(); // idempotent
    assert.equal(existsSync(cp.dir), false);
    assert.deepEqual(mine(), []);
    for (const pid of children) {
      assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `pid ${pid} still alive`);
    }
  });
});

describe('real control plane after a crash of its owner', { skip: skipReal }, () => {
  it("the next start reaps the SIGKILLed owner's etcd, apiserver and controller-manager", async () => {
    const runDir = mkdtempSync(join(tmpdir(), 'grpc-kube-crash-run-'));
    const mod = fileURLToPath(
      new URL('../../../packages/lab/dist/src/cluster/real/control-plane.js', import.meta.url),
    );
    const script = `
      import { startRealControlPlane } from ${JSON.stringify(mod)};
      const cp = await startRealControlPlane({ runDir: ${JSON.stringify(runDir)} });
      console.log(JSON.stringify({ dir: cp.dir }));
      setInterval(() => {}, 1000);
    `;
    const owner = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new Error(`owner did not start: ${out}`)), 120_000);
        timer.unref();
        owner.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) {
            clearTimeout(timer);
            resolve(out.trim());
          }
        });
        owner.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`owner exited (${code}): ${out}`));
        });
      });
      const { dir } = JSON.parse(line) as { dir: string };
      const [record] = readdirSync(runDir);
      assert.ok(record);
      const pids = (
        JSON.parse(readFileSync(join(runDir, record), 'utf8')) as { children: { pid: number }[] }
      ).children.map((c) => c.pid);
      assert.equal(pids.length, 3);

      owner.kill('SIGKILL'); // no exit hook can run: only the run record is left to go on
      await new Promise((r) => owner.once('exit', r));
      for (const pid of pids) assert.doesNotThrow(() => process.kill(pid, 0), `${pid} died with its owner`);

      assert.equal(reapLeftovers(runDir), 3);
      assert.deepEqual(readdirSync(runDir), []);
      assert.equal(existsSync(dir), false);
      for (const pid of pids) assert.equal(await goneWithin(pid, 30_000), true, `${pid} survived the reaper`);
    } finally {
      owner.kill('SIGKILL');
      reapLeftovers(runDir);
      rmSync(runDir, { recursive: true, force: true });
    }
  });
});

/** A SIGKILLed orphan lingers as a zombie until init reaps it: count that as gone. */
async function goneWithin(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    let state: string | undefined;
    try {
      state = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
    } catch {
      return true;
    }
    if (state === 'Z') return true;
    if (Date.now() > deadline) return false;
    await delay(20);
  }
}
