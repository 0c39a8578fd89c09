// EmbeddedApiServer over real HTTP on 127.0.0.1: CRUD, conflicts, pagination, selectors, watch
// sequences, bookmarks, 410 ERROR events, authentication and RBAC denials, graceful pod deletion,
// outages (stop/start), stats, and @kubernetes/client-node reading from it.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiscoveryV1Api, KubeConfig, CoreV1Api, Watch } from '@kubernetes/client-node';
import {
  EmbeddedApiServer,
  type EmbeddedApiServerOptions,
} from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import type { KubeObject } from 'grpc-kube/internal/kube/types.js';

const ES_PATH = '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices';
const POD_PATH = '/api/v1/namespaces/default/pods';

async function startServer(t: TestContext, opts: EmbeddedApiServerOptions = {}): Promise<EmbeddedApiServer> {
  const s = new EmbeddedApiServer(opts);
  await s.start();
  t.after(() => s.close());
  return s;
}

interface Reply {
  status: number;
  headers: Headers;
  body: unknown;
  text: string;
}

async function api(
  s: EmbeddedApiServer,
  method: string,
  path: string,
  opts: { token?: string | null; body?: unknown; contentType?: string } = {},
): Promise<Reply> {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? s.adminToken : opts.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (opts.body !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
  const res = await fetch(`${s.url}${path}`, {
    method,
    headers,
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // plain text (healthz)
  }
  return { status: res.status, headers: res.headers, body, text };
}

function slice(name: string, labels: Record<string, string> = {}): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, labels },
    addressType: 'IPv4',
    endpoints: [{ addresses: ['127.0.0.2'], conditions: { ready: true } }],
    ports: [{ name: 'grpc', port: 50051, protocol: 'TCP' }],
  } as KubeObject;
}

interface WatchEventJson {
  type: string;
  object: {
    kind?: string;
    apiVersion?: string;
    metadata: { name?: string; resourceVersion?: string; [k: string]: unknown };
    [k: string]: unknown;
  };
}

interface WatchClient {
  status: number;
  headers: http.IncomingHttpHeaders;
  next(timeoutMs?: number): Promise<WatchEventJson>;
  /** Resolves when the server ends or breaks the stream. */
  ended: Promise<'end' | 'error'>;
  close(): void;
}

/** A raw watch over node:http, so the test sees the bytes as the API sends them. */
function openWatch(s: EmbeddedApiServer, path: string, token: string = s.adminToken): Promise<WatchClient> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      `${s.url}${path}`,
      { headers: { authorization: `Bearer ${token}` }, agent: false },
      (res) => {
        const queue: WatchEventJson[] = [];
        const waiters: Array<(e: WatchEventJson) => void> = [];
        let buf = '';
        let settle: (v: 'end' | 'error') => void = () => {};
        const ended = new Promise<'end' | 'error'>((r) => (settle = r));
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let i;
          while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (line.trim() === '') continue;
            const ev = JSON.parse(line) as WatchEventJson;
            const w = waiters.shift();
            if (w) w(ev);
            else queue.push(ev);
          }
        });
        res.on('end', () => settle('end'));
        res.on('error', () => settle('error'));
        res.on('close', () => settle(res.complete ? 'end' : 'error'));
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          ended,
          close: () => req.destroy(),
          next: (timeoutMs = 30_000) => {
            const q = queue.shift();
            if (q) return Promise.resolve(q);
            return new Promise((res2, rej) => {
              const waiter = (e: WatchEventJson): void => {
                clearTimeout(timer);
                res2(e);
              };
              // A waiter that timed out must not swallow the next event.
              const timer = setTimeout(() => {
                waiters.splice(waiters.indexOf(waiter), 1);
                rej(new Error(`no watch event within ${timeoutMs} ms`));
              }, timeoutMs);
              waiters.push(waiter);
            });
          },
        });
      },
    );
    req.on('error', reject);
  });
}

function brief(e: WatchEventJson): string {
  return `${e.type} ${e.object.metadata.name ?? ''}@${e.object.metadata.resourceVersion ?? ''}`;
}

const READER = 'reader-token';
function addReader(s: EmbeddedApiServer): void {
  s.addToken(READER, {
    user: 'system:serviceaccount:default:reader',
    rules: [
      {
        verbs: ['get'],
        apiGroups: ['discovery.k8s.io'],
        resources: ['endpointslices'],
        namespaces: ['default'],
      },
    ],
  });
}

test('create, get, list, update, delete with the API’s status codes and shapes', async (t) => {
  const s = await startServer(t);
  const created = await api(s, 'POST', ES_PATH, {
    body: slice('web-abc', { 'kubernetes.io/service-name': 'web' }),
  });
  assert.equal(created.status, 201);
  assert.equal(created.headers.get('content-type'), 'application/json');
  const obj = created.body as KubeObject;
  assert.equal(obj.kind, 'EndpointSlice');
  assert.equal(obj.apiVersion, 'discovery.k8s.io/v1');
  assert.equal(obj.metadata.namespace, 'default');
  assert.match(obj.metadata.uid ?? '', /^[0-9a-f-]{36}$/);
  assert.match(obj.metadata.creationTimestamp ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

  const dup = await api(s, 'POST', ES_PATH, { body: slice('web-abc') });
  assert.equal(dup.status, 409);
  assert.deepEqual(dup.body, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'endpointslices.discovery.k8s.io "web-abc" already exists',
    reason: 'AlreadyExists',
    details: { name: 'web-abc', group: 'discovery.k8s.io', kind: 'endpointslices' },
    code: 409,
  });

  const got = await api(s, 'GET', `${ES_PATH}/web-abc`);
  assert.equal(got.status, 200);
  assert.deepEqual(got.body, obj);

  const list = await api(s, 'GET', ES_PATH);
  const l = list.body as {
    kind: string;
    apiVersion: string;
    metadata: { resourceVersion: string };
    items: KubeObject[];
  };
  assert.equal(l.kind, 'EndpointSliceList');
  assert.equal(l.apiVersion, 'discovery.k8s.io/v1');
  assert.equal(l.metadata.resourceVersion, s.store.resourceVersion);
  assert.equal(l.items.length, 1);
  assert.equal(l.items[0]?.kind, undefined, 'list items carry no kind');
  assert.equal(l.items[0]?.apiVersion, undefined);
  const cluster = await api(s, 'GET', '/apis/discovery.k8s.io/v1/endpointslices');
  assert.equal((cluster.body as { items: unknown[] }).items.length, 1);

  const updated = await api(s, 'PUT', `${ES_PATH}/web-abc`, { body: { ...obj, endpoints: [] } });
  assert.equal(updated.status, 200);
  const stale = await api(s, 'PUT', `${ES_PATH}/web-abc`, { body: { ...obj, endpoints: null } });
  assert.equal(stale.status, 409);
  assert.deepEqual(stale.body, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message:
      'Operation cannot be fulfilled on endpointslices.discovery.k8s.io "web-abc": the object has been modified; ' +
      'please apply your changes to the latest version and try again',
    reason: 'Conflict',
    details: { name: 'web-abc', group: 'discovery.k8s.io', kind: 'endpointslices' },
    code: 409,
  });
  const renamed = await api(s, 'PUT', `${ES_PATH}/web-abc`, {
    body: { ...obj, metadata: { ...obj.metadata, name: 'x' } },
  });
  assert.equal(renamed.status, 400);

  const del = await api(s, 'DELETE', `${ES_PATH}/web-abc`);
  assert.equal(del.status, 200);
  assert.deepEqual(del.body, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Success',
    details: { name: 'web-abc', group: 'discovery.k8s.io', kind: 'endpointslices', uid: obj.metadata.uid },
  });
  const missing = await api(s, 'GET', `${ES_PATH}/web-abc`);
  assert.equal(missing.status, 404);
  assert.deepEqual(missing.body, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'endpointslices.discovery.k8s.io "web-abc" not found',
    reason: 'NotFound',
    details: { name: 'web-abc', group: 'discovery.k8s.io', kind: 'endpointslices' },
    code: 404,
  });
  const corePod = await api(s, 'GET', `${POD_PATH}/nope`);
  assert.deepEqual(
    (corePod.body as { details: unknown }).details,
    { name: 'nope', kind: 'pods' },
    'no group for core',
  );

  const invalid = await api(s, 'POST', POD_PATH, { body: { metadata: {} } });
  assert.equal(invalid.status, 422);
  assert.equal(
    (invalid.body as { message: string }).message,
    'Pod "" is invalid: metadata.name: Required value: name or generateName is required',
  );
});

test('list pagination with limit and continue keeps the first page’s resourceVersion', async (t) => {
  const s = await startServer(t);
  for (const n of ['d', 'a', 'c', 'b', 'e'])
    assert.equal((await api(s, 'POST', ES_PATH, { body: slice(n) })).status, 201);
  const rv = s.store.resourceVersion;
  const names: string[] = [];
  let cont = '';
  for (let page = 0; page < 10; page++) {
    const r = await api(s, 'GET', `${ES_PATH}?limit=2${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`);
    const b = r.body as {
      metadata: { resourceVersion: string; continue?: string; remainingItemCount?: number };
      items: KubeObject[];
    };
    assert.equal(b.metadata.resourceVersion, rv);
    names.push(...b.items.map((o) => o.metadata.name ?? ''));
    if (page === 0) {
      assert.equal(b.metadata.remainingItemCount, 3);
      await api(s, 'POST', ES_PATH, { body: slice('aa') }); // not in this list's snapshot
    }
    if (!b.metadata.continue) break;
    cont = b.metadata.continue;
  }
  assert.deepEqual(names, ['a', 'b', 'c', 'd', 'e']);
  s.store.compact();
  const expired = await api(s, 'GET', `${ES_PATH}?limit=2&continue=${encodeURIComponent(cont)}`);
  assert.equal(expired.status, 410);
  assert.equal((expired.body as { reason: string }).reason, 'Expired');
});

test('labelSelector and fieldSelector on lists; a bad selector is 400', async (t) => {
  const s = await startServer(t);
  await api(s, 'POST', ES_PATH, { body: slice('a', { 'kubernetes.io/service-name': 'web' }) });
  await api(s, 'POST', ES_PATH, { body: slice('b', { 'kubernetes.io/service-name': 'db' }) });
  await api(s, 'POST', ES_PATH, { body: slice('c') });
  const names = async (q: string): Promise<string[]> =>
    ((await api(s, 'GET', `${ES_PATH}?${q}`)).body as { items: KubeObject[] }).items.map(
      (o) => o.metadata.name ?? '',
    );
  assert.deepEqual(await names(`labelSelector=${encodeURIComponent('kubernetes.io/service-name=web')}`), [
    'a',
  ]);
  assert.deepEqual(
    await names(`labelSelector=${encodeURIComponent('kubernetes.io/service-name in (web,db)')}`),
    ['a', 'b'],
  );
  assert.deepEqual(await names(`labelSelector=${encodeURIComponent('!kubernetes.io/service-name')}`), ['c']);
  assert.deepEqual(await names('fieldSelector=metadata.name%3Db'), ['b']);
  const bad = await api(s, 'GET', `${ES_PATH}?labelSelector=${encodeURIComponent('a in ()')}`);
  assert.equal(bad.status, 400);
  assert.equal((bad.body as { reason: string }).reason, 'BadRequest');
  const badField = await api(s, 'GET', `${ES_PATH}?fieldSelector=spec.x%3D1`);
  assert.equal(badField.status, 400);
  assert.equal((badField.body as { message: string }).message, 'field label not supported: spec.x');
});

test('watch: chunked JSON lines from a resourceVersion, exact sequence, objects carry kind', async (t) => {
  const s = await startServer(t);
  await api(s, 'POST', ES_PATH, { body: slice('a') });
  const rv = s.store.resourceVersion;
  const w = await openWatch(s, `${ES_PATH}?watch=1&resourceVersion=${rv}`);
  t.after(() => w.close());
  assert.equal(w.status, 200);
  assert.equal(w.headers['content-type'], 'application/json');
  assert.equal(w.headers['transfer-encoding'], 'chunked');
  const a = (await api(s, 'GET', `${ES_PATH}/a`)).body as KubeObject;
  await api(s, 'PUT', `${ES_PATH}/a`, { body: { ...a, endpoints: [] } });
  await api(s, 'POST', ES_PATH, { body: slice('b') });
  await api(s, 'DELETE', `${ES_PATH}/a`);
  const n = Number(rv);
  const got = [await w.next(), await w.next(), await w.next()];
  assert.deepEqual(got.map(brief), [`MODIFIED a@${n + 1}`, `ADDED b@${n + 2}`, `DELETED a@${n + 3}`]);
  for (const e of got) {
    assert.equal(e.object.kind, 'EndpointSlice');
    assert.equal(e.object.apiVersion, 'discovery.k8s.io/v1');
  }

  // Absent resourceVersion: synthetic ADDED for what exists, then live events.
  const w2 = await openWatch(s, `${ES_PATH}?watch=true`);
  t.after(() => w2.close());
  assert.equal(brief(await w2.next()), `ADDED b@${n + 2}`);
  await api(s, 'POST', ES_PATH, { body: slice('c') });
  assert.equal(brief(await w2.next()), `ADDED c@${n + 4}`);
  assert.equal(brief(await w.next()), `ADDED c@${n + 4}`);
});

test('watch: BOOKMARK events at bookmarkIntervalMs carry only kind, apiVersion and resourceVersion', async (t) => {
  const s = await startServer(t, { bookmarkIntervalMs: 25 });
  await api(s, 'POST', ES_PATH, { body: slice('a') });
  const rv = s.store.resourceVersion;
  const w = await openWatch(s, `${ES_PATH}?watch=1&allowWatchBookmarks=true&resourceVersion=${rv}`);
  t.after(() => w.close());
  assert.deepEqual(await w.next(), {
    type: 'BOOKMARK',
    object: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: rv } },
  });
  await api(s, 'POST', '/api/v1/namespaces', { body: { metadata: { name: 'elsewhere' } } }); // another kind moves the revision
  const next = await w.next();
  assert.equal(next.type, 'BOOKMARK');
  assert.equal(next.object.metadata.resourceVersion, String(Number(rv) + 1));
  // Without allowWatchBookmarks none are sent.
  const quiet = await openWatch(s, `${ES_PATH}?watch=1&resourceVersion=${s.store.resourceVersion}`);
  t.after(() => quiet.close());
  await assert.rejects(quiet.next(120), /no watch event/);
});

test('watch: a compacted resourceVersion is 200 then one ERROR 410 event, then the end', async (t) => {
  const s = await startServer(t);
  for (const n of ['a', 'b', 'c']) await api(s, 'POST', ES_PATH, { body: slice(n) });
  s.store.compact();
  const w = await openWatch(s, `${ES_PATH}?watch=1&resourceVersion=5`);
  assert.equal(w.status, 200);
  assert.deepEqual(await w.next(), {
    type: 'ERROR',
    object: {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: `too old resource version: 5 (${s.store.resourceVersion})`,
      reason: 'Expired',
      code: 410,
    },
  });
  assert.equal(await w.ended, 'end');
});

test('watch: timeoutSeconds and watchTimeoutSeconds end the stream cleanly', async (t) => {
  const s = await startServer(t, { watchTimeoutSeconds: 0.05 });
  const w = await openWatch(s, `${ES_PATH}?watch=1&resourceVersion=${s.store.resourceVersion}`);
  assert.equal(await w.ended, 'end');
  assert.equal(s.stats().watchStreams, 0);
  assert.equal(s.stats().watches.length, 0);
});

test('watch: label-selected watch sees ADDED on entering and DELETED on leaving the selector', async (t) => {
  const s = await startServer(t);
  const w = await openWatch(s, `${ES_PATH}?watch=1&labelSelector=${encodeURIComponent('app=web')}`);
  t.after(() => w.close());
  const a = (await api(s, 'POST', ES_PATH, { body: slice('a', { app: 'db' }) })).body as KubeObject;
  const a2 = (
    await api(s, 'PATCH', `${ES_PATH}/a`, {
      body: { metadata: { labels: { app: 'web' } } },
      contentType: 'application/merge-patch+json',
    })
  ).body as KubeObject;
  await api(s, 'PATCH', `${ES_PATH}/a`, {
    body: [{ op: 'replace', path: '/metadata/labels/app', value: 'db' }],
    contentType: 'application/json-patch+json',
  });
  const n = Number(a.metadata.resourceVersion);
  assert.equal(a2.metadata.resourceVersion, String(n + 1));
  const e1 = await w.next();
  const e2 = await w.next();
  assert.deepEqual([brief(e1), brief(e2)], [`ADDED a@${n + 1}`, `DELETED a@${n + 2}`]);
  assert.deepEqual(e2.object.metadata.labels, { app: 'web' });
});

test('authentication: missing or unknown token is 401; health and version need none', async (t) => {
  const s = await startServer(t);
  const unauthorized = {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'Unauthorized',
    reason: 'Unauthorized',
    code: 401,
  };
  const none = await api(s, 'GET', ES_PATH, { token: null });
  assert.equal(none.status, 401);
  assert.deepEqual(none.body, unauthorized);
  const wrong = await api(s, 'GET', ES_PATH, { token: 'nope' });
  assert.equal(wrong.status, 401);
  assert.deepEqual(wrong.body, unauthorized);
  for (const p of ['/healthz', '/readyz', '/livez']) {
    const r = await api(s, 'GET', p, { token: null });
    assert.equal(r.status, 200);
    assert.equal(r.text, 'ok');
  }
  const v = await api(s, 'GET', '/version', { token: null });
  assert.equal((v.body as { gitVersion: string }).gitVersion, 'v1.36.3-grpc-kube-embedded');
  assert.equal((v.body as { major: string }).major, '1');
  const apis = await api(s, 'GET', '/apis');
  const groups = (apis.body as { groups: Array<{ name: string }> }).groups.map((g) => g.name);
  assert.ok(groups.includes('discovery.k8s.io') && groups.includes('apps'));
  const core = await api(s, 'GET', '/api/v1');
  const res = (core.body as { resources: Array<{ name: string }> }).resources.map((r) => r.name);
  assert.ok(res.includes('pods') && res.includes('pods/status'));
});

test('authorization: 403 with kube-apiserver’s message for every verb; 404 and 405 for bad paths', async (t) => {
  const s = await startServer(t);
  addReader(s);
  await api(s, 'POST', ES_PATH, { body: slice('a') });
  assert.equal((await api(s, 'GET', `${ES_PATH}/a`, { token: READER })).status, 200, 'get is granted');
  const user = 'system:serviceaccount:default:reader';
  const cases: Array<[string, string, string, unknown, string]> = [
    ['list', 'GET', ES_PATH, undefined, ''],
    ['watch', 'GET', `${ES_PATH}?watch=1`, undefined, ''],
    ['create', 'POST', ES_PATH, slice('b'), ''],
    ['update', 'PUT', `${ES_PATH}/a`, slice('a'), 'a'],
    ['patch', 'PATCH', `${ES_PATH}/a`, {}, 'a'],
    ['delete', 'DELETE', `${ES_PATH}/a`, undefined, 'a'],
    ['deletecollection', 'DELETE', ES_PATH, undefined, ''],
  ];
  for (const [verb, method, path, body, name] of cases) {
    const r = await api(s, method, path, {
      token: READER,
      ...(body !== undefined ? { body } : {}),
      ...(method === 'PATCH' ? { contentType: 'application/merge-patch+json' } : {}),
    });
    assert.equal(r.status, 403, verb);
    const subject = name ? `endpointslices.discovery.k8s.io "${name}"` : 'endpointslices.discovery.k8s.io';
    assert.deepEqual(
      r.body,
      {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message:
          `${subject} is forbidden: User "${user}" cannot ${verb} resource "endpointslices" ` +
          `in API group "discovery.k8s.io" in the namespace "default"`,
        reason: 'Forbidden',
        details: { ...(name ? { name } : {}), group: 'discovery.k8s.io', kind: 'endpointslices' },
        code: 403,
      },
      verb,
    );
  }
  const core = await api(s, 'GET', POD_PATH, { token: READER });
  assert.equal(
    (core.body as { message: string }).message,
    `pods is forbidden: User "${user}" cannot list resource "pods" in API group "" in the namespace "default"`,
  );
  const clusterWide = await api(s, 'GET', '/apis/discovery.k8s.io/v1/endpointslices/', { token: READER });
  assert.equal(
    (clusterWide.body as { message: string }).message,
    `endpointslices.discovery.k8s.io is forbidden: User "${user}" cannot list resource "endpointslices" ` +
      `in API group "discovery.k8s.io" at the cluster scope`,
  );
  const other = await api(s, 'GET', '/apis/discovery.k8s.io/v1/namespaces/other/endpointslices/a', {
    token: READER,
  });
  assert.equal(other.status, 403);

  const unknown = await api(s, 'GET', '/apis/nothing.example/v1/things');
  assert.equal(unknown.status, 404);
  assert.deepEqual(unknown.body, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'the server could not find the requested resource',
    reason: 'NotFound',
    details: {},
    code: 404,
  });
  assert.equal((await api(s, 'GET', '/nowhere')).status, 404);
  assert.equal(
    (await api(s, 'GET', `${ES_PATH}/a/status`)).status,
    404,
    'endpointslices have no status subresource',
  );
  assert.equal((await api(s, 'POST', `${ES_PATH}/a`, { body: slice('a') })).status, 405);
  const patch415 = await api(s, 'PATCH', `${ES_PATH}/a`, { body: {}, contentType: 'application/json' });
  assert.equal(patch415.status, 415);
});

test('pods: DELETE marks deletionTimestamp (MODIFIED) and keeps the pod; grace 0 removes it', async (t) => {
  const s = await startServer(t);
  const pod = { metadata: { name: 'p' }, spec: { nodeName: 'node-1', terminationGracePeriodSeconds: 30 } };
  const created = (await api(s, 'POST', POD_PATH, { body: pod })).body as KubeObject & { status: unknown };
  assert.deepEqual(created.status, { phase: 'Pending' }, 'status is the kubelet’s to write');
  const w = await openWatch(
    s,
    `${POD_PATH}?watch=1&resourceVersion=${created.metadata.resourceVersion ?? ''}`,
  );
  t.after(() => w.close());
  const del = await api(s, 'DELETE', `${POD_PATH}/p`);
  assert.equal(del.status, 200);
  const marked = del.body as KubeObject;
  assert.equal(marked.kind, 'Pod');
  assert.equal(marked.metadata.deletionGracePeriodSeconds, 30);
  assert.ok(marked.metadata.deletionTimestamp);
  assert.equal((await api(s, 'GET', `${POD_PATH}/p`)).status, 200);
  const ev = await w.next();
  assert.equal(ev.type, 'MODIFIED');
  assert.equal(ev.object.metadata.deletionGracePeriodSeconds, 30);

  const now = await api(s, 'DELETE', `${POD_PATH}/p`, {
    body: { kind: 'DeleteOptions', apiVersion: 'v1', gracePeriodSeconds: 0 },
  });
  assert.equal(now.status, 200);
  assert.deepEqual([(await w.next()).type, (await w.next()).type], ['MODIFIED', 'DELETED']);
  assert.equal((await api(s, 'GET', `${POD_PATH}/p`)).status, 404);

  await api(s, 'POST', POD_PATH, { body: pod });
  const uid = await api(s, 'DELETE', `${POD_PATH}/p?gracePeriodSeconds=0`, {
    body: { preconditions: { uid: 'wrong' } },
  });
  assert.equal(uid.status, 409);
  assert.match(
    (uid.body as { message: string }).message,
    /^Operation cannot be fulfilled on Pod "p": the UID in the precondition \(wrong\) does not match/,
  );
});

test('status subresource: PUT on the pod ignores status; PUT/PATCH on /status changes only status', async (t) => {
  const s = await startServer(t);
  await api(s, 'POST', POD_PATH, { body: { metadata: { name: 'p' }, spec: { nodeName: 'n1' } } });
  const cur = (await api(s, 'GET', `${POD_PATH}/p`)).body as KubeObject & { status: unknown };
  const put = (await api(s, 'PUT', `${POD_PATH}/p`, { body: { ...cur, status: { phase: 'Running' } } }))
    .body as {
    status: unknown;
  };
  assert.deepEqual(put.status, { phase: 'Pending' });
  const st = await api(s, 'PATCH', `${POD_PATH}/p/status`, {
    body: { status: { phase: 'Running', podIP: '127.0.0.5' }, spec: { nodeName: 'n2' } },
    contentType: 'application/strategic-merge-patch+json',
  });
  assert.equal(st.status, 200);
  const after = st.body as { status: unknown; spec: unknown };
  assert.deepEqual(after.status, { phase: 'Running', podIP: '127.0.0.5' });
  assert.deepEqual(after.spec, { nodeName: 'n1' });
  const running = await api(s, 'GET', `${POD_PATH}?fieldSelector=status.phase%3DRunning,spec.nodeName%3Dn1`);
  assert.equal((running.body as { items: unknown[] }).items.length, 1);
});

test('stop() is an outage: watches and keep-alive sockets die at once, data stays, start() reuses the port', async (t) => {
  const s = await startServer(t);
  await api(s, 'POST', ES_PATH, { body: slice('a') });
  const url = s.url;
  const w = await openWatch(s, `${ES_PATH}?watch=1&resourceVersion=${s.store.resourceVersion}`);
  assert.equal(s.stats().watchStreams, 1);
  await s.stop();
  assert.equal(await w.ended, 'error', 'the stream breaks, as when the API server dies');
  assert.equal(s.stats().watches.length, 0);
  await assert.rejects(fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) }));
  s.store.create(RESOURCES.endpointslices, { ...slice('b'), metadata: { name: 'b', namespace: 'default' } });
  await s.start();
  assert.equal(s.url, url);
  const names = ((await api(s, 'GET', ES_PATH)).body as { items: KubeObject[] }).items.map(
    (o) => o.metadata.name,
  );
  assert.deepEqual(names, ['a', 'b']);
  await s.close();
  await assert.rejects(s.start(), (err: unknown) => (err as { code?: string }).code === 'GK_ERR_DESTROYED');
});

test('dropWatches() ends streams but keeps serving; a client leaving mid-stream is cleaned up', async (t) => {
  const s = await startServer(t);
  const w1 = await openWatch(s, `${ES_PATH}?watch=1`);
  const w2 = await openWatch(s, `${ES_PATH}?watch=1`);
  assert.equal(s.dropWatches(), 2);
  assert.equal(await w1.ended, 'end');
  assert.equal(await w2.ended, 'end');
  assert.equal((await api(s, 'GET', ES_PATH)).status, 200);
  const w3 = await openWatch(s, `${ES_PATH}?watch=1`);
  assert.equal(s.stats().watches.length, 1);
  w3.close();
  for (let i = 0; i < 100 && s.stats().watches.length > 0; i++) await new Promise((r) => setImmediate(r));
  assert.equal(s.stats().watches.length, 0);
  await api(s, 'POST', ES_PATH, { body: slice('after') }); // no write to a dead socket
  s.failNextRequests(1, { pathPrefix: '/apis/' });
  assert.equal((await api(s, 'GET', ES_PATH)).status, 503);
  assert.equal((await api(s, 'GET', ES_PATH)).status, 200);
});

test('stats(): one shared watch shows as exactly one, with its namespace and selector', async (t) => {
  const s = await startServer(t);
  const sel = 'kubernetes.io/service-name=web';
  const w = await openWatch(s, `${ES_PATH}?watch=1&labelSelector=${encodeURIComponent(sel)}`);
  t.after(() => w.close());
  await api(s, 'GET', ES_PATH);
  const st = s.stats();
  assert.equal(st.watches.length, 1);
  assert.deepEqual(
    st.watches.map((x) => [x.resource, x.namespace, x.labelSelector, x.client]),
    [['endpointslices', 'default', sel, 'kubernetes-admin']],
  );
  assert.equal(st.requests.endpointslices?.watch, 1);
  assert.equal(st.requests.endpointslices?.list, 1);
  assert.equal(st.httpRequests['watch endpointslices'], 1);
  assert.equal(st.httpRequests['list endpointslices'], 1);
});

test('@kubernetes/client-node reads and watches through the kubeconfig', async (t) => {
  const s = await startServer(t);
  await api(s, 'POST', ES_PATH, { body: slice('web-1', { 'kubernetes.io/service-name': 'web' }) });
  const kc = new KubeConfig();
  kc.loadFromOptions(s.kubeConfig());
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const list = await discovery.listNamespacedEndpointSlice({ namespace: 'default' });
  assert.equal(list.items.length, 1);
  assert.equal(list.items[0]?.metadata?.name, 'web-1');
  assert.equal(list.items[0]?.endpoints[0]?.addresses[0], '127.0.0.2');
  assert.equal(list.items[0]?.ports?.[0]?.port, 50051);
  assert.equal(list.metadata?.resourceVersion, s.store.resourceVersion);

  // YAML kubeconfig with a restricted token: reads work, 403 surfaces as an ApiException code.
  addReader(s);
  const kc2 = new KubeConfig();
  kc2.loadFromString(s.kubeConfigYaml(READER));
  assert.equal(kc2.getCurrentUser()?.name, 'system:serviceaccount:default:reader');
  const d2 = kc2.makeApiClient(DiscoveryV1Api);
  const one = await d2.readNamespacedEndpointSlice({ name: 'web-1', namespace: 'default' });
  assert.equal(one.metadata?.uid, list.items[0]?.metadata?.uid);
  await assert.rejects(
    d2.listNamespacedEndpointSlice({ namespace: 'default' }),
    (err: unknown) => (err as { code?: number }).code === 403,
  );

  const core = kc.makeApiClient(CoreV1Api);
  const ns = await core.listNamespace();
  assert.ok(ns.items.some((n) => n.metadata?.name === 'default'));

  // client-node's Watch parses our stream.
  const events: string[] = [];
  const got = new Promise<void>((resolve) => {
    void new Watch(kc)
      .watch(
        ES_PATH,
        { resourceVersion: s.store.resourceVersion, allowWatchBookmarks: true },
        (type: string, obj: KubeObject) => {
          events.push(`${type} ${obj.metadata.name ?? ''}`);
          if (events.length === 1) resolve();
        },
        () => {},
      )
      .then((req) => t.after(() => req.abort()));
  });
  // The watch request may still be in flight: create after it registered.
  for (let i = 0; i < 200 && s.stats().watches.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
  await api(s, 'POST', ES_PATH, { body: slice('web-2') });
  await got;
  assert.deepEqual(events, ['ADDED web-2']);
});

function opensslAvailable(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test(
  'TLS: https with the kubeconfig carrying the CA; client-node verifies it',
  { skip: !opensslAvailable() },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'gk-apiserver-tls-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore', timeout: 10_000 },
    );
    const s = await startServer(t, {
      tls: { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
    });
    assert.match(s.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    s.store.create(RESOURCES.endpointslices, {
      ...slice('tls'),
      metadata: { name: 'tls', namespace: 'default' },
    });
    const kc = new KubeConfig();
    kc.loadFromString(s.kubeConfigYaml());
    assert.equal(kc.getCurrentCluster()?.skipTLSVerify, false);
    const list = await kc.makeApiClient(DiscoveryV1Api).listNamespacedEndpointSlice({ namespace: 'default' });
    assert.deepEqual(
      list.items.map((o) => o.metadata?.name),
      ['tls'],
    );
    await s.stop();
    await s.start();
    const again = await kc
      .makeApiClient(DiscoveryV1Api)
      .listNamespacedEndpointSlice({ namespace: 'default' });
    assert.equal(again.items.length, 1);
  },
);

test('setPartitioned(): requests hang and watch events are held, then all arrive in order', async (t) => {
  const s = await startServer(t);
  const w = await openWatch(s, `${ES_PATH}?watch=1&resourceVersion=${s.store.resourceVersion}`);
  t.after(() => w.close());
  s.setPartitioned(true);
  s.store.create(RESOURCES.endpointslices, {
    ...slice('p1'),
    metadata: { name: 'p1', namespace: 'default' },
  });
  s.store.create(RESOURCES.endpointslices, {
    ...slice('p2'),
    metadata: { name: 'p2', namespace: 'default' },
  });
  await assert.rejects(w.next(100), /no watch event/);
  let answered = false;
  const pending = api(s, 'GET', ES_PATH).then((r) => {
    answered = true;
    return r;
  });
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(answered, false, 'a request to a partitioned API gets no answer');
  s.setPartitioned(false);
  assert.equal((await pending).status, 200);
  assert.deepEqual(
    [(await w.next()).object.metadata.name, (await w.next()).object.metadata.name],
    ['p1', 'p2'],
  );
});

test('stop() racing start() leaves nothing listening; start() again works', async (t) => {
  const s = new EmbeddedApiServer();
  t.after(() => s.close());
  const starting = s.start();
  await s.stop();
  await starting;
  assert.equal(s.listening, false);
  await assert.rejects(fetch(`${s.url}/healthz`, { signal: AbortSignal.timeout(2000) }));
  await s.start();
  assert.equal((await api(s, 'GET', '/healthz')).text, 'ok');
});

test('watch with sendInitialEvents: ADDED for each object, then a BOOKMARK marking the end of them', async (t) => {
  const s = await startServer(t);
  await api(s, 'POST', ES_PATH, { body: slice('a') });
  await api(s, 'POST', ES_PATH, { body: slice('b') });
  const rv = s.store.resourceVersion;
  const w = await openWatch(
    s,
    `${ES_PATH}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true`,
  );
  t.after(() => w.close());
  const evs = [await w.next(), await w.next(), await w.next()];
  assert.deepEqual(
    evs.map((e) => e.type),
    ['ADDED', 'ADDED', 'BOOKMARK'],
  );
  assert.deepEqual(evs[2]?.object.metadata, {
    resourceVersion: rv,
    annotations: { 'k8s.io/initial-events-end': 'true' },
  });
  // A single-object watch via the named path filters on metadata.name.
  const one = await openWatch(s, `${ES_PATH}/b?watch=1`);
  t.after(() => one.close());
  assert.equal(brief(await one.next()), `ADDED b@${rv}`);
  await api(s, 'POST', ES_PATH, { body: slice('c') });
  await api(s, 'DELETE', `${ES_PATH}/b`);
  assert.equal((await one.next()).type, 'DELETED');
});
