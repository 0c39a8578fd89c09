// Who may subscribe to what on the ADS server: a node reads its own namespace only (from its mTLS
// certificate, else its node metadata, else `default`), holds at most maxNamesPerStream names per
// type, and a refused name creates no watch — 300 made-up names on one anonymous stream used to
// build 300 targets and send ~600 requests to the API server. ADS over TLS and mutual TLS, with the
// certificate files re-read when they change.

import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { connect, type PeerCertificate } from 'node:tls';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { type AdsEvent, spiffeNamespace } from '@grpc-kube/xds/internal/ads-server.js';
import { XdsControlPlane, type XdsControlPlaneOptions } from '@grpc-kube/xds/internal/control-plane.js';
import { EDS, LDS } from '@grpc-kube/xds/internal/protos.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { testPki, type TestPki } from '../helpers/pki.js';
import { openAds } from './fixture.js';

let api: EmbeddedApiServer;
let pki: TestPki;

before(async () => {
  api = await startApi();
  api.store.create(RESOURCES.namespaces, {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: 'other' },
  });
  new SliceWriter(api, 'app', 9090, 'default').put('app-a', [{ ip: '10.0.0.1' }]);
  new SliceWriter(api, 'app', 9090, 'other').put('app-a', [{ ip: '10.0.1.1' }]);
  pki = await testPki();
});

after(async () => {
  await api?.stop();
  await pki?.remove();
});

async function controlPlane(
  t: { after(fn: () => unknown): void },
  extra: Partial<XdsControlPlaneOptions> = {},
): Promise<{ cp: XdsControlPlane; events: AdsEvent[]; logs: string[] }> {
  const logs: string[] = [];
  const cp = await XdsControlPlane.start({
    kubeConfigYaml: api.kubeConfigYaml(),
    idleTargetTtlMs: 0,
    log: (l) => logs.push(l),
    ...extra,
  });
  t.after(() => cp.close());
  const events: AdsEvent[] = [];
  cp.onAdsEvent((e) => events.push(e));
  return { cp, events, logs };
}

function sliceRequests(): number {
  const r = api.stats().httpRequests;
  return Object.entries(r)
    .filter(([k]) => k.endsWith('endpointslices'))
    .reduce((s, [, v]) => s + v, 0);
}

test('300 made-up names on one stream: other namespaces refused, the rest capped; watches and API requests stay bounded', async (t) => {
  const { cp, events, logs } = await controlPlane(t);
  const before = sliceRequests();
  const s = openAds(cp.address);
  t.after(() => s.close());
  const names = Array.from({ length: 300 }, (_, i) => `fake${i}.${i % 2 === 0 ? 'other' : 'default'}:80`);
  s.send({ type: LDS, names });
  // LDS answers every name it serves; the refused ones are simply absent (no NACK, no error).
  const r = await s.next();
  assert.ok(r.resources.length <= 100, `${r.resources.length} Listeners served`);
  assert.equal(cp.targetNames().length, 100);
  assert.ok(
    cp.targetNames().every((n) => n.endsWith('.default:80')),
    'only the node’s own namespace is built',
  );
  const refused = events.flatMap((e) => (e.kind === 'refused' ? [e.error] : []));
  assert.deepEqual(refused.map((e) => [e.code, e.reason, e.names.length]).sort(), [
    ['GK_ERR_XDS_REFUSED', 'cap', 50],
    ['GK_ERR_XDS_REFUSED', 'namespace', 150],
  ]);
  assert.equal(cp.ads.stats.refused, 200);
  // Each refusal kind is logged once, however often the client repeats itself.
  s.send({ type: LDS, names, nonce: r.nonce, version: r.version_info });
  await until(() => events.filter((e) => e.kind === 'refused').length === 4);
  assert.equal(logs.filter((l) => l.includes('GK_ERR_XDS_REFUSED') || l.includes('refused')).length, 2);
  // Each built target lists and watches once: at most 2 requests per admitted name.
  await until(() => sliceRequests() - before >= 100);
  const requests = sliceRequests() - before;
  assert.ok(requests <= 2 * 100 + 10, `${requests} EndpointSlice requests`);
});

test('a node reads its own namespace: metadata names it, other namespaces’ Listeners and Clusters do not exist for it', async (t) => {
  const { cp } = await controlPlane(t);
  const other = openAds(cp.address);
  t.after(() => other.close());
  other.send({ type: LDS, names: ['app.other:9090', 'app.default:9090'], namespace: 'other' });
  const lds = await other.next();
  assert.equal(lds.resources.length, 1);
  assert.deepEqual(cp.targetNames(), ['app.other:9090']);
  await until(() => cp.cache.has(EDS, 'other/app:9090'));

  // A default-namespace node asks for the Cluster the other node made: it does not exist for it.
  const mine = openAds(cp.address);
  t.after(() => mine.close());
  mine.send({ type: EDS, names: ['other/app:9090'] });
  mine.send({ type: LDS, names: ['app.default:9090'] });
  const first = await mine.next();
  assert.equal(first.type_url, LDS, 'no EDS answer: the name is not served to this node');
  assert.equal(first.resources.length, 1);
  assert.equal(cp.ads.subscribed(EDS).get('other/app:9090'), undefined);

  // A node id `<namespace>/<pod>` (as deploy/xds writes it) names the namespace too.
  const byId = openAds(cp.address);
  t.after(() => byId.close());
  byId.send({ type: LDS, names: ['app.other:9090', 'app.default:9090'], nodeId: 'other/pod-1' });
  assert.equal((await byId.next()).resources.length, 1);
  assert.ok(cp.ads.nodes().some((n) => n.id === 'other/pod-1' && n.namespace === 'other'));

  // --allow-namespaces: the default namespace may read `other` too.
  const { cp: open } = await controlPlane(t, { access: { allowNamespaces: { default: ['other'] } } });
  const s = openAds(open.address);
  t.after(() => s.close());
  s.send({ type: LDS, names: ['app.other:9090', 'app.default:9090'] });
  assert.equal((await s.next()).resources.length, 2);
});

test('SPIFFE URI SANs name the namespace', () => {
  assert.equal(spiffeNamespace('URI:spiffe://cluster.local/ns/prod/sa/web'), 'prod');
  assert.equal(spiffeNamespace('DNS:x, URI:spiffe://td/ns/a-b/sa/s'), 'a-b');
  assert.equal(spiffeNamespace('URI:spiffe://td/ns/Bad_NS/sa/s'), undefined);
  assert.equal(spiffeNamespace('URI:https://td/ns/prod/sa/web'), undefined);
  assert.equal(spiffeNamespace(undefined), undefined);
});

function peerCert(port: number, ca: Buffer): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, ALPNProtocols: ['h2'] }, () => {
      resolve(socket.getPeerCertificate());
      socket.end();
    });
    socket.on('error', reject);
  });
}

test('ADS over mutual TLS: the certificate’s namespace outranks metadata, clients without a trusted certificate are refused, rotated files are picked up', async (t) => {
  const server = await pki.server('ads');
  const ca = await readFile(pki.ca);
  const { cp } = await controlPlane(t, {
    tls: { ...server, caFile: pki.ca, refreshMs: 50 },
  });
  const otherClient = await pki.client('client-other', 'other');
  const creds = async (c: { certFile: string; keyFile: string }): Promise<grpc.ChannelCredentials> =>
    grpc.credentials.createSsl(ca, await readFile(c.keyFile), await readFile(c.certFile));

  const s = openAds(cp.address, await creds(otherClient));
  t.after(() => s.close());
  // The node claims `default`; its certificate says `other`.
  s.send({ type: LDS, names: ['app.other:9090', 'app.default:9090'], namespace: 'default' });
  const r = await s.next();
  assert.equal(r.resources.length, 1);
  assert.deepEqual(cp.targetNames(), ['app.other:9090']);
  assert.deepEqual(
    cp.ads.nodes().map((n) => [n.namespace, n.namespaceFrom]),
    [['other', 'certificate']],
  );

  // No client certificate, or a plaintext client: no stream.
  const anon = openAds(cp.address, grpc.credentials.createSsl(ca));
  t.after(() => anon.close());
  anon.send({ type: LDS, names: ['app.other:9090'] });
  await assert.rejects(anon.next(3000));
  const plain = openAds(cp.address);
  t.after(() => plain.close());
  plain.send({ type: LDS, names: ['app.other:9090'] });
  await assert.rejects(plain.next(3000));

  // Rotation: new serving certificate files; new connections get it, the open stream carries on.
  const before = await peerCert(cp.port, ca);
  const next = await pki.server('ads-next');
  await copyFile(next.certFile, server.certFile);
  await copyFile(next.keyFile, server.keyFile);
  await until(async () => (await peerCert(cp.port, ca)).serialNumber !== before.serialNumber, 30_000);
  assert.equal(cp.ads.tlsFiles?.generation, 2);
  s.send({ type: LDS, names: ['app.other:9090'], nonce: r.nonce, version: r.version_info });
  s.send({ type: EDS, names: ['other/app:9090'] });
  const eds = await s.next();
  assert.equal(eds.type_url, EDS);
  assert.equal(eds.resources.length, 1);
});
