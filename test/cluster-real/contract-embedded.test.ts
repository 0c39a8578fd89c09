// The embedded API server is a stand-in for kube-apiserver, so it is held to what the real one was
// recorded answering (fixtures/real-apiserver.json, written by contract-source.test.ts against
// kube-apiserver v1.36.3): the same requests, normalised the same way, compared field by field. Every
// field that differs must be listed in KNOWN_DIFFERENCES with the reason it does not matter to our
// clients; an unlisted difference fails, and so does a listed one that has gone (keep the list true).
// Needs no real binaries: it runs in every `npm test`.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import type { EndpointSlice } from 'grpc-kube/internal/kube/types.js';
import { normalise, rawGet, rawWatch, type RawAuth } from './contract-http.js';

const RECORDING_PATH = join(
  import.meta.dirname,
  '..',
  '..',
  '..',
  'test',
  'cluster-real',
  'fixtures',
  'real-apiserver.json',
);
const NS = 'gk-contract';
const SLICES_PATH = `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`;
const SELECTOR = `labelSelector=${encodeURIComponent('kubernetes.io/service-name=echo')}`;

/**
 * Fields (JSON paths into the normalised recording) where the embedded server answers differently,
 * and why our clients do not care. KubeClient reads of a BOOKMARK only metadata.resourceVersion.
 */
const KNOWN_DIFFERENCES: Record<string, Record<string, string>> = {
  bookmark: {
    'events[0].object.addressType': 'real: the empty Go struct ("" / null fields); embedded: absent',
    'events[0].object.endpoints': 'real: null; embedded: absent',
    'events[0].object.ports': 'real: null; embedded: absent',
  },
  initialEventsEnd: {
    'events[1].object.addressType': 'as bookmark',
    'events[1].object.endpoints': 'as bookmark',
    'events[1].object.ports': 'as bookmark',
  },
};

/** Flattens to `path → JSON of the leaf` so two answers can be compared one field at a time. */
function flatten(v: unknown, path = '', out = new Map<string, string>()): Map<string, string> {
  if (Array.isArray(v)) {
    if (v.length === 0) out.set(path, '[]');
    v.forEach((x, i) => flatten(x, `${path}[${i}]`, out));
  } else if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v);
    if (keys.length === 0) out.set(path, '{}');
    for (const k of keys) flatten((v as Record<string, unknown>)[k], path === '' ? k : `${path}.${k}`, out);
  } else out.set(path, JSON.stringify(v));
  return out;
}

/** Paths (to the first level where they diverge: a whole subtree present on one side only counts once). */
function differences(real: unknown, embedded: unknown): Map<string, string> {
  const a = flatten(real);
  const b = flatten(embedded);
  const diff = new Map<string, string>();
  for (const p of new Set([...a.keys(), ...b.keys()])) {
    if (a.get(p) === b.get(p)) continue;
    diff.set(p, `real ${a.get(p) ?? '(absent)'} / embedded ${b.get(p) ?? '(absent)'}`);
  }
  return diff;
}

function slice(name: string, service: string, ip: string): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: NS, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [ip], conditions: { ready: true, serving: true, terminating: false } }],
    ports: [{ name: 'grpc', port: 50051, protocol: 'TCP' }],
  };
}

describe('the embedded API server answers as the recorded kube-apiserver', () => {
  const recorded = JSON.parse(readFileSync(RECORDING_PATH, 'utf8')) as Record<string, unknown>;
  let api: EmbeddedApiServer;
  let admin: RawAuth;
  const nobody = 'nobody-token';

  before(async () => {
    api = new EmbeddedApiServer({ bookmarkIntervalMs: 500 });
    await api.start();
    admin = { token: api.adminToken };
    api.addToken(nobody, {
      user: `system:serviceaccount:${NS}:nobody`,
      groups: ['system:serviceaccounts', `system:serviceaccounts:${NS}`, 'system:authenticated'],
      rules: [],
    });
    api.store.create(RESOURCES.namespaces, {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: NS },
    });
    api.store.create(RESOURCES.endpointslices, slice('echo-a', 'echo', '10.244.1.1'));
  });
  after(() => api.close());

  const check = (key: string, embedded: unknown): void => {
    const real = recorded[key];
    assert.ok(real !== undefined, `the recording has no "${key}"`);
    const diff = differences(real, normalise(embedded));
    const known = KNOWN_DIFFERENCES[key] ?? {};
    const unexpected = [...diff].filter(([p]) => !(p in known)).map(([p, d]) => `${p}: ${d}`);
    assert.deepEqual(unexpected, [], `${key}: the embedded server differs from kube-apiserver`);
    const gone = Object.keys(known).filter((p) => !diff.has(p));
    assert.deepEqual(gone, [], `${key}: listed as a known difference but now equal; remove it from the list`);
  };

  it('403 on list and on watch: same status, reason, message, details', async () => {
    const list = await rawGet(api.url, `${SLICES_PATH}?${SELECTOR}`, { token: nobody });
    check('forbiddenList', { status: list.status, contentType: list.contentType, body: list.body });
    const watch = await rawGet(api.url, `${SLICES_PATH}?watch=1&${SELECTOR}&resourceVersion=0`, {
      token: nobody,
    });
    check('forbiddenWatch', { status: watch.status, contentType: watch.contentType, body: watch.body });
  });

  it('401 for an unknown token', async () => {
    const bad = await rawGet(api.url, `${SLICES_PATH}?${SELECTOR}`, { token: 'not-a-token' });
    check('unauthorizedList', { status: bad.status, contentType: bad.contentType, body: bad.body });
  });

  it('410 on a watch from a compacted resourceVersion: HTTP 200, one ERROR event, then the end', async () => {
    const list = await rawGet(api.url, `${SLICES_PATH}?${SELECTOR}`, admin);
    const oldRv = (list.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    api.store.create(RESOURCES.endpointslices, slice('bump', 'unrelated', '10.244.8.8'));
    api.store.compact();
    const w = await rawWatch(
      api.url,
      `${SLICES_PATH}?watch=1&${SELECTOR}&allowWatchBookmarks=true&resourceVersion=${oldRv}`,
      admin,
      30_000,
    );
    check('expiredWatch', {
      status: w.status,
      contentType: w.contentType,
      events: w.events,
      endedByServer: w.endedByServer,
    });
  });

  it('BOOKMARK event shape', async () => {
    const list = await rawGet(api.url, `${SLICES_PATH}?${SELECTOR}`, admin);
    const rv = (list.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    const w = await rawWatch(
      api.url,
      `${SLICES_PATH}?watch=1&${SELECTOR}&allowWatchBookmarks=true&timeoutSeconds=4&resourceVersion=${rv}`,
      admin,
      30_000,
      (evs) => evs.some((e) => e.type === 'BOOKMARK'),
    );
    check('bookmark', { status: w.status, contentType: w.contentType, events: w.events });
  });

  it('sendInitialEvents: ADDED events, then the initial-events-end BOOKMARK', async () => {
    const w = await rawWatch(
      api.url,
      `${SLICES_PATH}?watch=1&${SELECTOR}&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=30`,
      admin,
      30_000,
      (evs) => evs.some((e) => e.type === 'BOOKMARK'),
    );
    const real = recorded['initialEventsEnd'] as { events: { type: string; object: unknown }[] };
    assert.deepEqual(
      w.events.map((e) => e.type),
      real.events.map((e) => e.type),
    );
    // The ADDED object is our own test data (the real one carries managedFields of its writer):
    // compare the event types and the bookmark, field by field.
    check('initialEventsEnd', {
      status: w.status,
      contentType: w.contentType,
      events: [real.events[0], w.events[1]],
    });
  });

  it(
    'a quiet watch gets no BOOKMARK (the real cacher sends none whose resourceVersion is not newer than the watch start)',
    {
      todo:
        'embedded sends a bookmark every bookmarkIntervalMs even when nothing moved; real kube-apiserver ' +
        'sends none (contract-source.test.ts: "no endpointslice changed: the real server sends no bookmark")',
    },
    async () => {
      const list = await rawGet(api.url, `${SLICES_PATH}?${SELECTOR}`, admin);
      const rv = (list.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
      const w = await rawWatch(
        api.url,
        `${SLICES_PATH}?watch=1&${SELECTOR}&allowWatchBookmarks=true&timeoutSeconds=2&resourceVersion=${rv}`,
        admin,
        30_000,
      );
      assert.equal(w.endedByServer, true);
      assert.deepEqual(
        w.events.map((e) => e.type),
        [],
      );
    },
  );
});
