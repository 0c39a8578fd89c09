// The real-cluster pieces that need neither root nor the Go binaries, on real HTTP: httpKube's typed
// errors and bounded retry of transient failures, its watch's catch-up after an outage with
// compaction (410 → re-list → MODIFIED / DELETED / ADDED for what changed meanwhile), and the
// kubelet's option checks with the real node's options. They run in every `npm test`.

import assert from 'node:assert/strict';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';

import { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import type { Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { KINDS, httpKube, statusOf, type Kube } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import { Kubelet } from '@grpc-kube/lab/internal/cluster/kubelet.js';
import { realNodeOptions } from '@grpc-kube/lab/internal/cluster/real/kubelet.js';
import type { LabNetwork } from '@grpc-kube/lab/internal/cluster/real/netns.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { WatchEvent } from 'grpc-kube/internal/kube/types.js';

function kubeConfigFor(url: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: c',
    '  cluster:',
    `    server: ${JSON.stringify(url)}`,
    '    insecure-skip-tls-verify: true',
    'users:',
    '- name: u',
    '  user:',
    '    token: "t"',
    'contexts:',
    '- name: c',
    '  context: { cluster: c, user: u }',
    'current-context: c',
    '',
  ].join('\n');
}

/** A server answering each request with the next [status, body] of `answers` (the last one repeats). */
async function scripted(
  answers: Array<[number, unknown]>,
): Promise<{ url: string; hits: () => number; close(): Promise<void> }> {
  let n = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    const [status, body] = answers[Math.min(n++, answers.length - 1)] ?? [500, {}];
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits: () => n,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

const status = (code: number, reason: string): unknown => ({
  kind: 'Status',
  apiVersion: 'v1',
  status: 'Failure',
  code,
  reason,
  message: reason,
});

describe('httpKube', () => {
  it('retries 503 within retryTransientMs, then answers', async (t) => {
    const s = await scripted([
      [503, status(503, 'ServiceUnavailable')],
      [503, status(503, 'ServiceUnavailable')],
      [200, { kind: 'Pod', metadata: { name: 'a' } }],
    ]);
    t.after(() => s.close());
    const kube = httpKube(kubeConfigFor(s.url), { retryTransientMs: 10_000 });
    t.after(() => kube.close());
    const pod = await kube.get<Pod>(KINDS.pods, 'default', 'a');
    assert.equal(pod?.metadata.name, 'a');
    assert.equal(s.hits(), 3);
  });

  it('without retry, or for a non-transient status, fails at once with the typed error', async (t) => {
    const s = await scripted([[409, status(409, 'Conflict')]]);
    t.after(() => s.close());
    const kube = httpKube(kubeConfigFor(s.url), { retryTransientMs: 10_000 });
    t.after(() => kube.close());
    const a = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'a', namespace: 'default' } };
    await assert.rejects(kube.replace(KINDS.pods, a), (err: unknown) => {
      assert.ok(err instanceof GrpcKubeError);
      assert.equal(statusOf(err), 409);
      return true;
    });
    assert.equal(s.hits(), 1, 'a conflict is not retried');

    const down = httpKube(kubeConfigFor('http://127.0.0.1:1'));
    t.after(() => down.close());
    await assert.rejects(down.get(KINDS.pods, 'default', 'a'), (err: unknown) => {
      assert.ok(err instanceof GrpcKubeError);
      assert.equal(err.code, 'GK_ERR_KUBE_UNREACHABLE');
      assert.equal(statusOf(err), 0);
      return true;
    });
  });
});

describe('httpKube watch', () => {
  it('after an outage with compaction, the re-list brings the caller up to date: MODIFIED, DELETED, ADDED', async (t) => {
    const api = new EmbeddedApiServer();
    await api.start();
    t.after(() => api.close());
    const pod = (name: string, labels: Record<string, string> = {}): Pod => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'default', labels },
      spec: { containers: [{ name: 'c', image: 'i' }] },
    });
    api.store.create(RESOURCES.pods, pod('a'));
    api.store.create(RESOURCES.pods, pod('b'));
    const kube = httpKube(api.kubeConfigYaml());
    t.after(() => kube.close());
    const events: string[] = [];
    let synced = 0;
    const stop = kube.watch<Pod>(
      KINDS.pods,
      { namespace: 'default' },
      (ev: WatchEvent<Pod>) => events.push(`${ev.type} ${(ev.object as Pod).metadata.name}`),
      { onSynced: () => void synced++ },
    );
    t.after(stop);
    for (let i = 0; i < 3000 && synced < 1; i++) await delay(10);
    assert.deepEqual(events.sort(), ['ADDED a', 'ADDED b'], 'synced: the existing pods are delivered');

    await api.stop();
    const a = api.store.get<Pod>(RESOURCES.pods, 'default', 'a');
    assert.ok(a);
    api.store.update(RESOURCES.pods, { ...a, metadata: { ...a.metadata, labels: { v: '2' } } });
    api.store.delete(RESOURCES.pods, 'default', 'b', { gracePeriodSeconds: 0 });
    api.store.create(RESOURCES.pods, pod('c'));
    api.store.compact();
    events.length = 0;
    await api.start();
    for (let i = 0; i < 3000 && synced < 2; i++) await delay(10);
    assert.deepEqual(events.sort(), ['ADDED c', 'DELETED b', 'MODIFIED a'], 'synced again after the re-list');

    // And it keeps watching from there.
    api.store.create(RESOURCES.pods, pod('d'));
    for (let i = 0; i < 3000 && events.length < 4; i++) await delay(10);
    assert.deepEqual(events.at(-1), 'ADDED d');
    stop();
    api.store.create(RESOURCES.pods, pod('e'));
    await delay(100);
    assert.equal(events.length, 4, 'no event after stop');
  });
});

describe('the lab kubelet with the real node options', () => {
  const net = { cidr: '10.250.0.0/16', gateway: '10.250.255.254' } as unknown as LabNetwork;
  for (const [what, opts] of [
    ['kube not a Kube', { kube: { watch: () => () => {} } }],
    ['no nodes', { nodes: [] }],
    ['probePeriodMs below 10', { probePeriodMs: 1 }],
    ['heartbeatMs below 10', { heartbeatMs: 5 }],
  ] as const) {
    it(`rejects ${what} with GK_ERR_INVALID_OPTION`, () => {
      const kube = httpKube(kubeConfigFor('http://127.0.0.1:1'));
      try {
        const { kube: given, ...rest } = { kube, ...(opts as object) } as { kube: Kube };
        assert.throws(
          () =>
            new Kubelet(given, {
              ...realNodeOptions(kube, net),
              runtime: { start: () => Promise.reject(new Error('unused')) },
              ...rest,
            }),
          (err: unknown) => err instanceof GrpcKubeError && err.code === 'GK_ERR_INVALID_OPTION',
        );
      } finally {
        kube.close();
      }
    });
  }
});
