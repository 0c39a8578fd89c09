import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KubernetesEndpointSource, type EndpointListener } from 'grpc-kube/internal/discovery/kube-source.js';
import type { Endpoint, EndpointDiff } from 'grpc-kube/internal/discovery/endpoint.js';
import { KubeClient } from 'grpc-kube/internal/kube/client.js';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import type { PortSelector } from 'grpc-kube/internal/discovery/slices.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';

interface Recorder extends EndpointListener {
  sets: Array<readonly Endpoint[]>;
  diffs: EndpointDiff[];
  errors: GrpcKubeError[];
  last(): string[];
}

function recorder(): Recorder {
  const r: Recorder = {
    sets: [],
    diffs: [],
    errors: [],
    onEndpoints(view, diff) {
      r.sets.push(view.endpoints());
      r.diffs.push(diff);
    },
    onError(err) {
      r.errors.push(err);
    },
    last: () => (r.sets.at(-1) ?? []).map((e) => `${e.address}:${e.port}=${e.state}`),
  };
  return r;
}

const fastBackoff = { backoff: { initialMs: 20, maxMs: 100 } };

interface SourceFixture {
  api: EmbeddedApiServer;
  w: SliceWriter;
  src: KubernetesEndpointSource;
  r: Recorder;
}

/** An API server, a slice writer for Service hello, and a source subscribed to `port` with a recorder. */
async function sourceFixture(
  t: { after(fn: () => unknown): void },
  opts: {
    port?: PortSelector;
    token?: string;
    bookmarkIntervalMs?: number;
    seed?: (w: SliceWriter, api: EmbeddedApiServer) => void;
  } = {},
): Promise<SourceFixture> {
  const api = await startApi(
    opts.bookmarkIntervalMs === undefined ? {} : { bookmarkIntervalMs: opts.bookmarkIntervalMs },
  );
  t.after(() => api.close());
  const w = new SliceWriter(api, 'hello', 50051);
  opts.seed?.(w, api);
  const src = new KubernetesEndpointSource(
    KubeClient.fromKubeConfigString(api.kubeConfigYaml(opts.token ?? api.adminToken)),
    'default',
    'hello',
    fastBackoff,
  );
  t.after(() => src.stop());
  const r = recorder();
  src.subscribe(opts.port ?? { kind: 'number', port: 50051 }, r);
  return { api, w, src, r };
}

test('list then watch: the set follows slice ADDED, MODIFIED and DELETED events', async (t) => {
  const { w, src, r } = await sourceFixture(t, {
    seed: (w) => {
      w.put('hello-a', [{ ip: '10.1.0.1' }, { ip: '10.1.0.2' }]);
    },
  });
  await until(() => r.sets.length === 1);
  assert.deepEqual(r.last(), ['10.1.0.1:50051=ready', '10.1.0.2:50051=ready']);

  w.put('hello-b', [{ ip: '10.1.0.3' }]);
  await until(() => r.sets.length === 2);
  assert.deepEqual(
    r.diffs[1]?.added.map((e) => e.address),
    ['10.1.0.3'],
  );

  w.put('hello-a', [{ ip: '10.1.0.1', ready: false, serving: true, terminating: true }, { ip: '10.1.0.2' }]);
  await until(() => r.sets.length === 3);
  assert.deepEqual(
    r.diffs[2]?.changed.map((c) => `${c.after.address}=${c.after.state}`),
    ['10.1.0.1=draining'],
  );

  w.remove('hello-a');
  await until(() => r.sets.length === 4);
  assert.deepEqual(r.last(), ['10.1.0.3:50051=ready']);
  assert.equal(src.stats.lists, 1);
  assert.equal(r.errors.length, 0);
});

test('endpoints moving between three slices are never removed, even across a 410 re-list', async (t) => {
  const ips = ['10.2.0.1', '10.2.0.2', '10.2.0.3', '10.2.0.4', '10.2.0.5', '10.2.0.6'];
  const { api, w, src, r } = await sourceFixture(t, {
    port: { kind: 'name', name: 'grpc' },
    seed: (w) => {
      w.put('s1', [{ ip: ips[0]! }, { ip: ips[1]! }]);
      w.put('s2', [{ ip: ips[2]! }, { ip: ips[3]! }]);
      w.put('s3', [{ ip: ips[4]! }, { ip: ips[5]! }]);
    },
  });
  await until(() => r.sets.length === 1);
  // The controller moves 10.2.0.1 into s2 (listed there first, then dropped from s1), then
  // 10.2.0.3 into s3, while the watch is cut and the history compacted so the source must re-list.
  w.put('s2', [{ ip: ips[2]! }, { ip: ips[3]! }, { ip: ips[0]! }]);
  w.put('s1', [{ ip: ips[1]! }]);
  await until(() => src.stats.events >= 2);
  api.dropWatches('destroy');
  w.put('s3', [{ ip: ips[4]! }, { ip: ips[5]! }, { ip: ips[2]! }]);
  new SliceWriter(api, 'other', 50051).put('o1', [{ ip: '10.9.9.9' }]);
  api.store.compact();
  w.put('s2', [{ ip: ips[3]! }, { ip: ips[0]! }]);
  await until(() => src.stats.lists >= 2 && src.stats.expired >= 1, 30_000);
  await until(() => (r.sets.at(-1) ?? []).length === 6 && src.status === 'synced');
  for (const d of r.diffs) assert.deepEqual(d.removed, [], 'no endpoint was ever removed');
  assert.equal(r.last().length, 6);
  assert.equal(r.errors.length, 0);
});

test('a watch from a compacted resourceVersion gets 410 and re-lists without losing an endpoint', async (t) => {
  const { api, w, src, r } = await sourceFixture(t, {
    seed: (w) => {
      w.put('s1', [{ ip: '10.3.0.1' }]);
    },
  });
  await until(() => r.sets.length === 1 && src.stats.watches === 1);
  // Other Services' writes move the store past the source's resourceVersion (no bookmarks here);
  // compaction then drops that history, so re-watching from it must answer 410.
  const other = new SliceWriter(api, 'other', 50051);
  for (let i = 0; i < 10; i++) other.put('other', [{ ip: `10.9.0.${i}` }]);
  api.store.compact();
  api.dropWatches('end');
  await until(() => src.stats.expired >= 1 && src.stats.lists >= 2);
  w.put('s1', [{ ip: '10.3.0.1' }, { ip: '10.3.0.2' }]);
  await until(() => r.last().length === 2);
  for (const d of r.diffs) assert.deepEqual(d.removed, []);
});

test('bookmarks advance the resourceVersion', async (t) => {
  const { src } = await sourceFixture(t, {
    bookmarkIntervalMs: 30,
    seed: (w) => w.put('s1', [{ ip: '10.4.0.1' }]),
  });
  await until(() => src.stats.bookmarks >= 2);
});

test('a port the Service does not have is a typed error naming the ports it has', async (t) => {
  const { r } = await sourceFixture(t, {
    port: { kind: 'name', name: 'http' },
    seed: (w) => w.put('s1', [{ ip: '10.5.0.1' }]),
  });
  await until(() => r.errors.length === 1);
  assert.equal(r.errors[0]?.code, 'GK_ERR_PORT_NOT_FOUND');
  assert.match(r.errors[0]?.message ?? '', /no port "http".*50051 \(grpc\)/);
  assert.equal(r.sets.length, 0);
});

test('403: a typed error naming the RBAC verb and resource, and the source keeps retrying', async (t) => {
  const { api, r } = await sourceFixture(t, {
    token: 'nobody',
    seed: (_w, api) => api.addToken('nobody', { user: 'system:serviceaccount:default:nobody', rules: [] }),
  });
  await until(() => r.errors.length >= 2);
  const err = r.errors[0];
  assert.equal(err?.code, 'GK_ERR_KUBE_FORBIDDEN');
  assert.match(err?.message ?? '', /"list" on endpointslices\.discovery\.k8s\.io in namespace "default"/);
  assert.match(err?.message ?? '', /verbs get, list, watch/);
  assert.equal(r.sets.length, 0, 'never a silent empty list');
  // Granting the permission heals it without a restart.
  api.addToken('nobody', {
    user: 'system:serviceaccount:default:nobody',
    rules: [
      {
        verbs: ['get', 'list', 'watch'],
        apiGroups: ['discovery.k8s.io'],
        resources: ['endpointslices'],
        namespaces: ['default'],
      },
    ],
  });
  await until(() => r.sets.length === 1);
  assert.deepEqual(r.last(), []);
});

test('API down: the last set is kept with no error, and changes made meanwhile arrive after it returns', async (t) => {
  const { api, w, src, r } = await sourceFixture(t, {
    seed: (w) => {
      w.put('s1', [{ ip: '10.6.0.1' }]);
    },
  });
  await until(() => r.sets.length === 1 && src.stats.watches === 1);
  await api.stop();
  w.put('s1', [{ ip: '10.6.0.1' }, { ip: '10.6.0.2' }]);
  await until(() => src.stats.errors >= 3);
  assert.equal(r.errors.length, 0, 'listeners hear nothing while a set is being served');
  assert.equal(src.status, 'retrying');
  await api.start();
  await until(() => r.last().length === 2);
  assert.equal(src.status, 'synced');
});

test('stop() ends the watch and no listener is called afterwards', async (t) => {
  const api = await startApi();
  t.after(() => api.close());
  const w = new SliceWriter(api, 'hello', 50051);
  w.put('s1', [{ ip: '10.7.0.1' }]);
  const src = new KubernetesEndpointSource(
    KubeClient.fromKubeConfigString(api.kubeConfigYaml()),
    'default',
    'hello',
    fastBackoff,
  );
  const r = recorder();
  src.subscribe({ kind: 'number', port: 50051 }, r);
  await until(() => r.sets.length === 1 && api.stats().watches.length === 1);
  await src.stop();
  await until(() => api.stats().watches.length === 0);
  w.put('s1', [{ ip: '10.7.0.2' }]);
  await new Promise((res) => setImmediate(res));
  assert.equal(r.sets.length, 1);
  assert.throws(
    () => src.subscribe({ kind: 'number', port: 50051 }, r),
    (e: unknown) => e instanceof GrpcKubeError && e.code === 'GK_ERR_DESTROYED',
  );
});
