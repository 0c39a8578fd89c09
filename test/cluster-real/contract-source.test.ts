// Contract of OUR Kubernetes source (KubernetesEndpointSource over KubeClient) with the REAL
// kube-apiserver: ServiceAccount tokens and RBAC, the typed 403, a token file rotated under a live
// source, bookmarks, and 410 Expired after the apiserver's watch cache lost our resourceVersion.
// It also records what the real server answers (403 Status, 401 Status, 410 ERROR event, BOOKMARK
// shapes) into fixtures/real-apiserver.json — with GRPC_KUBE_RECORD=1 it rewrites the file, otherwise
// it asserts the live server still answers exactly what is recorded (contract-embedded.test.ts holds
// the embedded stand-in to the same recording).
//
// Skips when the binaries are absent unless GRPC_KUBE_REAL=1. GRPC_KUBE_REAL_SLOW=1 adds the ~65 s
// checks that need real minutes (the periodic bookmark, client-node's 60 s token file re-read).

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';

import {
  ApiException,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  RbacAuthorizationV1Api,
  type V1EndpointSlice,
} from '@kubernetes/client-node';

import {
  controlPlaneBinDir,
  controlPlaneBinariesPresent,
} from '@grpc-kube/lab/internal/cluster/real/binaries.js';
import {
  startRealControlPlane,
  type RealControlPlane,
} from '@grpc-kube/lab/internal/cluster/real/control-plane.js';
import type { Endpoint, EndpointDiff } from 'grpc-kube/internal/discovery/endpoint.js';
import {
  KubernetesEndpointSource,
  type EndpointListener,
  type KubeSourceOptions,
} from 'grpc-kube/internal/discovery/kube-source.js';
import { GrpcKubeError, KubeApiError } from 'grpc-kube/internal/errors.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import { normalise, rawGet, rawWatch, type RawAuth } from './contract-http.js';
import { eventually } from '../helpers/wait.js';

const repoRoot = join(import.meta.dirname, '..', '..', '..');
export const RECORDING_PATH = join(repoRoot, 'test', 'cluster-real', 'fixtures', 'real-apiserver.json');
const realRequired = (process.env['GRPC_KUBE_REAL'] ?? '') !== '';
const slow = (process.env['GRPC_KUBE_REAL_SLOW'] ?? '') !== '';
const record = (process.env['GRPC_KUBE_RECORD'] ?? '') !== '';
const skipReal =
  !realRequired && !controlPlaneBinariesPresent()
    ? `real control plane not built (${controlPlaneBinDir()}); run scripts/build-control-plane.sh`
    : false;

const NS = 'gk-contract';
const SERVICE = 'echo';
const PORT = 50051;
const SLICES_PATH = `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`;
const SELECTOR = `labelSelector=${encodeURIComponent(`kubernetes.io/service-name=${SERVICE}`)}`;

interface Recorder extends EndpointListener {
  readonly diffs: EndpointDiff[];
  readonly errors: GrpcKubeError[];
  current: readonly Endpoint[];
  /** `address=state` of the current set, sorted. */
  now(): string[];
  removed(): string[];
}

function recorder(): Recorder {
  const r: Recorder = {
    diffs: [],
    errors: [],
    current: [],
    onEndpoints(view, diff) {
      r.current = view.endpoints();
      r.diffs.push(diff);
    },
    onError(err) {
      r.errors.push(err);
    },
    now: () => r.current.map((e) => `${e.address}=${e.state}`).sort(),
    removed: () => r.diffs.flatMap((d) => d.removed.map((e) => e.address)),
  };
  return r;
}

function apiCode(err: unknown): number | undefined {
  return err instanceof ApiException ? (err as ApiException<unknown>).code : undefined;
}

function slice(name: string, eps: readonly { ip: string; terminating?: boolean }[]): V1EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      labels: {
        'kubernetes.io/service-name': SERVICE,
        // Not the controller's value: the endpointslice controller leaves these slices alone.
        'endpointslice.kubernetes.io/managed-by': 'grpc-kube-contract-test',
      },
    },
    addressType: 'IPv4',
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      conditions: e.terminating
        ? { ready: false, serving: true, terminating: true }
        : { ready: true, serving: true, terminating: false },
    })),
    ports: [{ name: 'grpc', port: PORT, protocol: 'TCP' }],
  };
}

/** Compacts etcd's history up to its current revision through the v3 JSON gateway; returns it. */
async function compactEtcd(etcdUrl: string): Promise<number> {
  const post = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(`${etcdUrl}${path}`, { method: 'POST', body: JSON.stringify(body) });
    assert.equal(res.status, 200, `etcd ${path}`);
    return (await res.json()) as Record<string, unknown>;
  };
  const range = await post('/v3/kv/range', { key: Buffer.from('/').toString('base64') });
  const revision = Number((range['header'] as { revision: string }).revision);
  await post('/v3/kv/compaction', { revision: String(revision), physical: true });
  return revision;
}

const fast: KubeSourceOptions = { backoff: { initialMs: 50, maxMs: 500 } };

describe('KubernetesEndpointSource against the real kube-apiserver', { skip: skipReal }, () => {
  let cp: RealControlPlane;
  let core: CoreV1Api;
  let discovery: DiscoveryV1Api;
  let rbac: RbacAuthorizationV1Api;
  let admin: RawAuth;
  const recording: Record<string, unknown> = {};

  const putSlice = async (
    name: string,
    eps: readonly { ip: string; terminating?: boolean }[],
  ): Promise<void> => {
    try {
      await discovery.replaceNamespacedEndpointSlice({
        name,
        namespace: NS,
        body: {
          ...slice(name, eps),
          metadata: {
            ...slice(name, eps).metadata,
            resourceVersion: (await discovery.readNamespacedEndpointSlice({ name, namespace: NS })).metadata
              ?.resourceVersion,
          },
        },
      });
    } catch (err) {
      if (apiCode(err) !== 404) throw err;
      await discovery.createNamespacedEndpointSlice({ namespace: NS, body: slice(name, eps) });
    }
  };

  const tokenFor = async (sa: string, expirationSeconds = 3600): Promise<string> => {
    const tr = await core.createNamespacedServiceAccountToken({
      name: sa,
      namespace: NS,
      body: { spec: { audiences: [], expirationSeconds } },
    });
    const token = tr.status?.token ?? '';
    assert.equal(token.split('.').length, 3, 'TokenRequest returns a JWT');
    return token;
  };

  /** A ServiceAccount with (or without) a Role granting get/list/watch on endpointslices in NS. */
  const serviceAccount = async (name: string, withRole: boolean): Promise<string> => {
    await core.createNamespacedServiceAccount({ namespace: NS, body: { metadata: { name } } });
    if (withRole) {
      await rbac.createNamespacedRoleBinding({
        namespace: NS,
        body: {
          metadata: { name },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'endpointslice-reader' },
          subjects: [{ kind: 'ServiceAccount', name, namespace: NS }],
        },
      });
    }
    const token = await tokenFor(name);
    if (withRole) {
      // The RBAC authorizer reads bindings through an informer: effective shortly, not at once.
      await eventually(`RBAC for ${name}`, async () => {
        const a = await rawGet(cp.url, `${SLICES_PATH}?${SELECTOR}`, { ca: cp.caPem, token });
        return a.status === 200;
      });
    }
    return token;
  };

  const source = (
    t: TestContext,
    yaml: string | KubeConfig,
    opts: KubeSourceOptions = fast,
  ): KubernetesEndpointSource => {
    const kc = typeof yaml === 'string' ? KubeClient.fromKubeConfigString(yaml) : new KubeClient(yaml);
    const src = new KubernetesEndpointSource(kc, NS, SERVICE, opts);
    t.after(async () => {
      await src.stop();
      kc.close();
    });
    return src;
  };

  before(async () => {
    const t0 = Date.now();
    cp = await startRealControlPlane();
    console.log(`# control plane ${cp.versions.kubernetes} up in ${Date.now() - t0} ms`);
    const kc = new KubeConfig();
    kc.loadFromString(cp.adminKubeConfig);
    core = kc.makeApiClient(CoreV1Api);
    discovery = kc.makeApiClient(DiscoveryV1Api);
    rbac = kc.makeApiClient(RbacAuthorizationV1Api);
    admin = { ca: cp.caPem, certPem: cp.pki.adminCertPem, keyPem: cp.pki.adminKeyPem };
    await core.createNamespace({ body: { metadata: { name: NS } } });
    await core.createNamespacedService({
      namespace: NS,
      // No selector: only the test's own slices exist for it.
      body: { metadata: { name: SERVICE }, spec: { ports: [{ name: 'grpc', port: PORT, protocol: 'TCP' }] } },
    });
    await rbac.createNamespacedRole({
      namespace: NS,
      body: {
        metadata: { name: 'endpointslice-reader' },
        rules: [
          { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
        ],
      },
    });
    await putSlice('echo-a', [{ ip: '10.244.1.1' }, { ip: '10.244.1.2' }]);
    recording['kubernetesVersion'] = cp.versions.kubernetes;
  });

  after(async () => {
    await cp?.stop();
  });

  it('a ServiceAccount token bound to a Role with get/list/watch on endpointslices lists and watches', async (t) => {
    const token = await serviceAccount('reader', true);
    const src = source(t, cp.kubeConfigFor({ token }, 'reader'));
    const r = recorder();
    src.subscribe({ kind: 'number', port: PORT }, r);
    await eventually('first list', () => r.diffs.length >= 1);
    assert.deepEqual(r.now(), ['10.244.1.1=ready', '10.244.1.2=ready']);

    await putSlice('echo-b', [{ ip: '10.244.2.1' }]);
    await eventually('ADDED slice', () => r.now().includes('10.244.2.1=ready'));
    await putSlice('echo-a', [{ ip: '10.244.1.1', terminating: true }, { ip: '10.244.1.2' }]);
    await eventually('MODIFIED slice', () => r.now().includes('10.244.1.1=draining'));
    await discovery.deleteNamespacedEndpointSlice({ name: 'echo-b', namespace: NS });
    await eventually('DELETED slice', () => !r.now().some((e) => e.startsWith('10.244.2.1=')));
    assert.deepEqual(r.now(), ['10.244.1.1=draining', '10.244.1.2=ready']);
    assert.deepEqual(r.removed(), ['10.244.2.1']);
    assert.equal(src.stats.lists, 1);
    assert.ok(src.stats.events >= 3, `events ${src.stats.events}`);
    assert.equal(src.stats.errors, 0);
    assert.deepEqual(r.errors, []);
    await putSlice('echo-a', [{ ip: '10.244.1.1' }, { ip: '10.244.1.2' }]);
  });

  it('a token without the Role yields GK_ERR_KUBE_FORBIDDEN naming the verb and resource, and no endpoints', async (t) => {
    const token = await serviceAccount('nobody', false);
    const src = source(t, cp.kubeConfigFor({ token }, 'nobody'));
    const r = recorder();
    src.subscribe({ kind: 'number', port: PORT }, r);
    await eventually('the 403', () => r.errors.length >= 1);
    const err = r.errors[0];
    assert.ok(err instanceof KubeApiError, String(err));
    assert.equal(err.code, 'GK_ERR_KUBE_FORBIDDEN');
    assert.equal(err.status, 403);
    assert.equal(err.reason, 'Forbidden');
    assert.match(
      err.message,
      /RBAC forbids "list" on endpointslices\.discovery\.k8s\.io in namespace "gk-contract"/,
    );
    assert.match(
      err.message,
      /User "system:serviceaccount:gk-contract:nobody" cannot list resource "endpointslices"/,
    );
    assert.match(
      err.message,
      /verbs get, list, watch on resource "endpointslices" in apiGroup "discovery\.k8s\.io"/,
    );
    // It keeps retrying with backoff, and never invents an empty set.
    await eventually('a retry', () => src.stats.errors >= 2);
    assert.equal(r.diffs.length, 0);
    assert.equal(src.stats.lists, 0);
    assert.equal(src.status, 'retrying');

    const auth = { ca: cp.caPem, token };
    const list = await rawGet(cp.url, `${SLICES_PATH}?${SELECTOR}`, auth);
    const watch = await rawGet(cp.url, `${SLICES_PATH}?watch=1&${SELECTOR}&resourceVersion=0`, auth);
    const bad = await rawGet(cp.url, `${SLICES_PATH}?${SELECTOR}`, { ca: cp.caPem, token: 'not-a-token' });
    recording['forbiddenList'] = { status: list.status, contentType: list.contentType, body: list.body };
    recording['forbiddenWatch'] = { status: watch.status, contentType: watch.contentType, body: watch.body };
    recording['unauthorizedList'] = { status: bad.status, contentType: bad.contentType, body: bad.body };
    assert.equal(list.status, 403);
    assert.equal(watch.status, 403);
    assert.equal(bad.status, 401);
  });

  it('bookmarks arrive: 2 s before the watch deadline, once the resource has moved past our resourceVersion', async (t) => {
    // kube-apiserver's cacheWatcher schedules a bookmark every minute or 2 s before the watch's
    // deadline, whichever is first, carrying the last resourceVersion the watch cache PROCESSED for this
    // resource type; a bookmark not newer than the watch's starting point is never sent. In a quiet
    // cluster (no endpointslice written anywhere since our list) no bookmark comes at all. A write to
    // another Service's slice — outside our label selector — moves it.
    const token = await tokenFor('reader');
    const src = source(t, cp.kubeConfigFor({ token }, 'reader'), { ...fast, watchTimeoutSeconds: [5, 5] });
    const r = recorder();
    src.subscribe({ kind: 'number', port: PORT }, r);
    await eventually('first list', () => r.diffs.length >= 1);
    await eventually('the first watch', () => src.stats.watches >= 1);
    // Quiet: the first watch ends at its 5 s deadline without a bookmark.
    await eventually('the second watch', () => src.stats.watches >= 2);
    assert.equal(src.stats.bookmarks, 0, 'no endpointslice changed: the real server sends no bookmark');
    await discovery.createNamespacedEndpointSlice({
      namespace: NS,
      body: {
        ...slice('other-a', [{ ip: '10.244.9.1' }]),
        metadata: { name: 'other-a', labels: { 'kubernetes.io/service-name': 'other' } },
      },
    });
    await eventually('a bookmark', () => src.stats.bookmarks >= 1);
    await eventually('the next watch after the server timeout', () => src.stats.watches >= 3);
    assert.equal(src.stats.errors, 0);
    assert.equal(src.stats.lists, 1, 'a clean timeout re-watches from the bookmark, no re-list');
    assert.equal(src.stats.events, 0, "the other Service's slice is not ours");

    const list = await rawGet(cp.url, `${SLICES_PATH}?${SELECTOR}`, admin);
    const rv = (list.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    const watching = rawWatch(
      cp.url,
      `${SLICES_PATH}?watch=1&${SELECTOR}&allowWatchBookmarks=true&timeoutSeconds=4&resourceVersion=${rv}`,
      admin,
      30_000,
    );
    await delay(500);
    await discovery.deleteNamespacedEndpointSlice({ name: 'other-a', namespace: NS });
    const w = await watching;
    assert.equal(w.status, 200);
    assert.equal(w.endedByServer, true);
    const bm = w.events.filter((e) => e.type === 'BOOKMARK');
    // One, sometimes two: the cacher fires bookmarks from 1 s time buckets, so the pre-deadline one can
    // come up to a second early and be scheduled once more.
    assert.ok(bm.length >= 1 && bm.length <= 2, JSON.stringify(w.events));
    assert.deepEqual(
      w.events.map((e) => e.type),
      bm.map(() => 'BOOKMARK'),
      "only bookmarks: the deleted slice is another Service's",
    );
    recording['bookmark'] = { status: w.status, contentType: w.contentType, events: bm.slice(0, 1) };

    // sendInitialEvents (WatchList): initial ADDED events, then a BOOKMARK marked initial-events-end.
    const wl = await rawWatch(
      cp.url,
      `${SLICES_PATH}?watch=1&${SELECTOR}&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=30`,
      admin,
      30_000,
      (evs) => evs.some((e) => e.type === 'BOOKMARK'),
    );
    recording['initialEventsEnd'] = { status: wl.status, contentType: wl.contentType, events: wl.events };
    assert.equal(wl.status, 200);
    assert.deepEqual(
      wl.events.map((e) => e.type),
      ['ADDED', 'BOOKMARK'],
    );
  });

  it(
    'a periodic bookmark arrives on a long watch within ~70 s',
    { skip: slow ? false : 'needs real minutes: set GRPC_KUBE_REAL_SLOW=1' },
    async (t) => {
      const token = await tokenFor('reader');
      const src = source(t, cp.kubeConfigFor({ token }, 'reader'), {
        ...fast,
        watchTimeoutSeconds: [600, 600],
      });
      const r = recorder();
      src.subscribe({ kind: 'number', port: PORT }, r);
      await eventually('first list', () => r.diffs.length >= 1);
      // As above: the bookmark must carry a resourceVersion newer than our list's to be sent at all.
      await discovery.createNamespacedEndpointSlice({
        namespace: NS,
        body: {
          ...slice('other-b', [{ ip: '10.244.9.2' }]),
          metadata: { name: 'other-b', labels: { 'kubernetes.io/service-name': 'other' } },
        },
      });
      const t0 = Date.now();
      await eventually('a periodic bookmark', () => src.stats.bookmarks >= 1, 75_000);
      console.log(`# first periodic bookmark after ${Date.now() - t0} ms`);
      assert.equal(src.stats.watches, 1);
    },
  );

  it('a rotated token (file, in-cluster layout) keeps the watch alive after the old token is revoked', async (t) => {
    await serviceAccount('rotor', true);
    // The in-cluster layout under a prefix: client-node's loadFromCluster(prefix) reads the token FILE
    // through its tokenFile auth provider, which re-reads the file once its copy is older than 60 s.
    const prefix = mkdtempSync(join(tmpdir(), 'gk-incluster-'));
    t.after(() => rmSync(prefix, { recursive: true, force: true }));
    const saDir = join(prefix, 'var', 'run', 'secrets', 'kubernetes.io', 'serviceaccount');
    mkdirSync(saDir, { recursive: true });
    // Atomic replace, as the kubelet's projected volume writer does: no reader sees half a token.
    const writeToken = (tok: string): void => {
      writeFileSync(join(saDir, '.token.tmp'), tok);
      renameSync(join(saDir, '.token.tmp'), join(saDir, 'token'));
    };
    writeToken(await tokenFor('rotor'));
    writeFileSync(join(saDir, 'ca.crt'), cp.caPem);
    writeFileSync(join(saDir, 'namespace'), NS);
    const url = new URL(cp.url);
    const saved = [process.env['KUBERNETES_SERVICE_HOST'], process.env['KUBERNETES_SERVICE_PORT']];
    process.env['KUBERNETES_SERVICE_HOST'] = url.hostname;
    process.env['KUBERNETES_SERVICE_PORT'] = url.port;
    const kc = new KubeConfig();
    try {
      kc.loadFromCluster(prefix);
    } finally {
      for (const [k, v] of [
        ['KUBERNETES_SERVICE_HOST', saved[0]],
        ['KUBERNETES_SERVICE_PORT', saved[1]],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    assert.equal(kc.getCurrentUser()?.authProvider?.name, 'tokenFile');

    // Short server timeouts: the source re-opens its watch every 3 s, each time authenticating anew.
    const src = source(t, kc, { backoff: { initialMs: 100, maxMs: 400 }, watchTimeoutSeconds: [3, 3] });
    const r = recorder();
    src.subscribe({ kind: 'number', port: PORT }, r);
    await eventually('first list', () => r.diffs.length >= 1);
    assert.deepEqual(r.now(), ['10.244.1.1=ready', '10.244.1.2=ready']);

    // Revoke: a bound token names its ServiceAccount's uid, so a new ServiceAccount of the same name
    // invalidates it. The RoleBinding names the ServiceAccount by name and keeps applying.
    await core.deleteNamespacedServiceAccount({ name: 'rotor', namespace: NS });
    await core.createNamespacedServiceAccount({ namespace: NS, body: { metadata: { name: 'rotor' } } });
    await eventually('the old token rejected', () => src.stats.errors >= 1);
    assert.ok(
      r.errors.length === 0,
      'a synced source keeps serving and does not report the 401 as no endpoints',
    );
    assert.deepEqual(r.now(), ['10.244.1.1=ready', '10.244.1.2=ready']);

    // Rotation: the kubelet would write the new token into the same file.
    writeToken(await tokenFor('rotor'));
    await putSlice('echo-c', [{ ip: '10.244.3.1' }]);
    const errorsAtRotation = src.stats.errors;
    if (slow) {
      // Real time: client-node re-reads the file 60 s after its last read.
      await eventually('the new token used', () => r.now().includes('10.244.3.1=ready'), 75_000);
    } else {
      // client-node decides "re-read" by Date: move only Date past its 60 s, sockets and timers stay real.
      t.mock.timers.enable({ apis: ['Date'], now: Date.now() + 61_000 });
      try {
        for (let i = 0; i < 200 && !r.now().includes('10.244.3.1=ready'); i++) await delay(50);
      } finally {
        t.mock.timers.reset();
      }
    }
    assert.ok(r.now().includes('10.244.3.1=ready'), `after rotation: ${r.now().join(', ')}`);
    const errorsAfter = src.stats.errors;
    await putSlice('echo-c', [{ ip: '10.244.3.1' }, { ip: '10.244.3.2' }]);
    await eventually('updates keep coming', () => r.now().includes('10.244.3.2=ready'));
    assert.equal(src.stats.errors, errorsAfter, 'no error once the rotated token is in use');
    assert.ok(errorsAtRotation >= 1);
    assert.deepEqual(r.removed(), [], 'nothing removed while the credentials were being rotated');
    await discovery.deleteNamespacedEndpointSlice({ name: 'echo-c', namespace: NS });
  });

  it('410 Expired after an apiserver restart re-lists without losing an endpoint', async (t) => {
    const token = await tokenFor('reader');
    const src = source(t, cp.kubeConfigFor({ token }, 'reader'), {
      backoff: { initialMs: 200, maxMs: 1000 },
      watchTimeoutSeconds: [600, 600],
    });
    const r = recorder();
    src.subscribe({ kind: 'number', port: PORT }, r);
    await eventually(
      'slice-c gone, first list',
      () => r.diffs.length >= 1 && !r.now().some((e) => e.startsWith('10.244.3.')),
    );
    const before = r.now();
    assert.deepEqual(before, ['10.244.1.1=ready', '10.244.1.2=ready']);
    const list = await rawGet(cp.url, `${SLICES_PATH}?${SELECTOR}`, admin);
    const oldRv = (list.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    // Move etcd's revision past our resourceVersion (any write does), so the new watch cache starts later.
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'bump' } } });
    // etcd compaction alone does not expire a watch: with the watch cache on (the default) watches are
    // served from the apiserver's window, which still holds our resourceVersion.
    const compactedAt = await compactEtcd(cp.etcdUrl);
    assert.ok(compactedAt > Number(oldRv));
    const fromCache = await rawWatch(
      cp.url,
      `${SLICES_PATH}?watch=1&${SELECTOR}&timeoutSeconds=1&resourceVersion=${oldRv}`,
      admin,
      30_000,
    );
    assert.equal(fromCache.status, 200);
    assert.deepEqual(
      fromCache.events.filter((e) => e.type === 'ERROR'),
      [],
      'no 410 from the watch cache after etcd compaction',
    );
    assert.equal(src.stats.expired, 0);

    const t0 = Date.now();
    await cp.restartApiServer();
    console.log(`# apiserver restarted in ${Date.now() - t0} ms`);
    await putSlice('echo-d', [{ ip: '10.244.4.1' }]);
    // The old resourceVersion is gone after the restart: the source re-lists, by the 410 when its next
    // watch asks for it, or at once when the restarting server gave it an answer that is not a plain
    // disconnect (which one depends on the machine's speed). Either way it follows the new slice.
    await eventually(
      're-listed after the restart',
      () => (src.stats.expired >= 1 || src.stats.lists >= 2) && r.now().includes('10.244.4.1=ready'),
      30_000,
    );
    t.diagnostic(`expired ${src.stats.expired}, lists ${src.stats.lists}, errors ${src.stats.errors}`);
    assert.ok(src.stats.lists >= 2, `lists ${src.stats.lists}`);
    assert.deepEqual(r.removed(), [], 'the re-list is diffed: no endpoint flapped');
    assert.deepEqual(r.now(), ['10.244.1.1=ready', '10.244.1.2=ready', '10.244.4.1=ready']);
    assert.deepEqual(r.errors, []);

    // The same 410 as the server sends it: HTTP 200, then one ERROR event carrying a Status.
    const w = await rawWatch(
      cp.url,
      `${SLICES_PATH}?watch=1&${SELECTOR}&allowWatchBookmarks=true&resourceVersion=${oldRv}`,
      admin,
      30_000,
    );
    recording['expiredWatch'] = {
      status: w.status,
      contentType: w.contentType,
      events: w.events,
      endedByServer: w.endedByServer,
    };
    assert.equal(w.status, 200);
    assert.equal(w.endedByServer, true);
    assert.equal(w.events.length, 1);
    assert.equal(w.events[0]?.type, 'ERROR');
    assert.equal(w.events[0]?.object['code'], 410);
    assert.equal(w.events[0]?.object['reason'], 'Expired');
    await discovery.deleteNamespacedEndpointSlice({ name: 'echo-d', namespace: NS });
  });

  it('with the watch cache off for endpointslices, etcd compaction expires the watch: 410, re-list, nothing lost', async (t) => {
    // Second control plane: watches of endpointslices go to etcd directly, as with --watch-cache=false.
    const cp2 = await startRealControlPlane({
      extraApiServerArgs: ['--watch-cache-sizes=endpointslices.discovery.k8s.io#0'],
    });
    t.after(() => cp2.stop());
    const kc2 = new KubeConfig();
    kc2.loadFromString(cp2.adminKubeConfig);
    const core2 = kc2.makeApiClient(CoreV1Api);
    const disc2 = kc2.makeApiClient(DiscoveryV1Api);
    await core2.createNamespace({ body: { metadata: { name: NS } } });
    await disc2.createNamespacedEndpointSlice({
      namespace: NS,
      body: slice('echo-a', [{ ip: '10.244.1.1' }]),
    });
    const src = source(t, cp2.adminKubeConfig, {
      backoff: { initialMs: 50, maxMs: 500 },
      watchTimeoutSeconds: [2, 2],
    });
    const r = recorder();
    src.subscribe({ kind: 'number', port: PORT }, r);
    await eventually('first list', () => r.diffs.length >= 1);
    const admin2 = { ca: cp2.caPem, certPem: cp2.pki.adminCertPem, keyPem: cp2.pki.adminKeyPem };
    const list = await rawGet(cp2.url, `${SLICES_PATH}?${SELECTOR}`, admin2);
    const oldRv = (list.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    // Writes after our resourceVersion, then compaction past them: the next watch (in <= 2 s) from our
    // resourceVersion finds etcd's history gone.
    await core2.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'bump' } } });
    await disc2.createNamespacedEndpointSlice({
      namespace: NS,
      body: slice('echo-b', [{ ip: '10.244.2.1' }]),
    });
    await core2.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'bump2' } } });
    await eventually('echo-b through the watch', () => r.now().includes('10.244.2.1=ready'));
    const watchesBefore = src.stats.watches;
    await compactEtcd(cp2.etcdUrl);
    const w = await rawWatch(
      cp2.url,
      `${SLICES_PATH}?watch=1&${SELECTOR}&resourceVersion=${oldRv}`,
      admin2,
      30_000,
    );
    recording['expiredWatchFromEtcd'] = {
      status: w.status,
      contentType: w.contentType,
      events: w.events,
      endedByServer: w.endedByServer,
    };
    assert.equal(w.status, 200);
    assert.equal(w.events[0]?.type, 'ERROR');
    assert.equal(w.events[0]?.object['code'], 410);
    // Our source's own resourceVersion advanced with echo-b's event; push it behind compaction too:
    // a write it does not see (another Service's slice is outside its selector), then compaction.
    await disc2.createNamespacedEndpointSlice({
      namespace: NS,
      body: {
        ...slice('other', [{ ip: '10.244.9.9' }]),
        metadata: { name: 'other', labels: { 'kubernetes.io/service-name': 'other' } },
      },
    });
    await core2.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'bump3' } } });
    await compactEtcd(cp2.etcdUrl);
    await eventually('410 and a re-list', () => src.stats.expired >= 1 && src.stats.lists >= 2);
    assert.ok(src.stats.watches > watchesBefore);
    assert.deepEqual(r.removed(), [], 'the re-list is diffed: no endpoint flapped');
    assert.deepEqual(r.now(), ['10.244.1.1=ready', '10.244.2.1=ready']);
    assert.deepEqual(r.errors, []);
  });

  it('the real server still answers what fixtures/real-apiserver.json records', () => {
    const live = normalise(recording) as Record<string, unknown>;
    if (record) {
      mkdirSync(join(RECORDING_PATH, '..'), { recursive: true });
      writeFileSync(RECORDING_PATH, `${JSON.stringify(live, null, 2)}\n`);
      console.log(`# recorded ${Object.keys(live).join(', ')} into ${RECORDING_PATH}`);
      return;
    }
    const saved = JSON.parse(readFileSync(RECORDING_PATH, 'utf8')) as Record<string, unknown>;
    for (const key of Object.keys(saved)) {
      if (live[key] === undefined) continue; // that test was skipped in this run
      assert.deepEqual(live[key], saved[key], `recording "${key}" changed`);
    }
  });
});
