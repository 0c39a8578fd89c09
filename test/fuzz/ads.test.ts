// Fuzzing the ADS server with DiscoveryRequests: random bytes where a protobuf should be, and
// well-formed requests with hostile contents (unknown and huge type URLs, made-up, malformed and
// oversized names, stale and foreign nonces, NACKs, nodes that claim any namespace), on many
// streams of both protocol variants that come and go. The server must stay up, keep its watches
// within the per-stream cap, keep its memory bounded, and answer a valid client afterwards.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { XdsControlPlane } from '@grpc-kube/xds/internal/control-plane.js';
import { CDS, EDS, LDS, RDS } from '@grpc-kube/xds/internal/protos.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';
import { openAds, openDeltaAds } from '../xds/fixture.js';
import { Gen, heapMiB } from './gen.js';

let api: EmbeddedApiServer;
let cp: XdsControlPlane;

before(async () => {
  api = await startApi();
  new SliceWriter(api, 'app', 9090).put('app-a', [{ ip: '10.0.0.1' }]);
  cp = await XdsControlPlane.start({
    kubeConfigYaml: api.kubeConfigYaml(),
    idleTargetTtlMs: 0,
    log: () => {},
    access: { maxNamesPerStream: 20 },
  });
});

after(async () => {
  await cp?.close();
  await api?.stop();
});

const identity = (b: Buffer): Buffer => b;
const RawClient = grpc.makeGenericClientConstructor(
  {
    Sotw: {
      path: '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources',
      requestStream: true,
      responseStream: true,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    },
  },
  'RawAds',
);

test('random bytes as DiscoveryRequests: streams fail, the server does not', async (t) => {
  const g = new Gen(11);
  const client = new RawClient(cp.address, grpc.credentials.createInsecure());
  t.after(() => client.close());
  let ended = 0;
  for (let s = 0; s < 40; s++) {
    const call = (client as unknown as { Sotw(): grpc.ClientDuplexStream<Buffer, Buffer> }).Sotw();
    call.on('data', () => {});
    const done = new Promise<void>((resolve) => {
      call.on('error', () => resolve());
      call.on('end', () => resolve());
    });
    for (let i = 0; i < 50; i++) call.write(g.bytes(g.pick([0, 1, 5, 64, 1000, 70_000])));
    call.end();
    await done;
    ended++;
  }
  assert.equal(ended, 40);
  await assertHealthy();
});

const NAMES = ['app.default:9090', 'default/app:9090', 'app.other:9090', 'other/app:1', 'x.y:0'];
const TYPES = [LDS, RDS, CDS, EDS];

test('hostile DiscoveryRequests on state-of-the-world and delta streams: watches stay capped, memory bounded', async (t) => {
  const g = new Gen(12);
  const heapBefore = heapMiB();
  let requests = 0;
  let maxTargets = 0;
  for (let round = 0; round < 30; round++) {
    const readBefore = cp.ads.stats.requests;
    let sent = 0;
    const streams = Array.from({ length: 5 }, (_, i) =>
      i % 2 === 0 ? openAds(cp.address) : openDeltaAds(cp.address),
    );
    for (let i = 0; i < 100; i++) {
      const s = g.pick(streams);
      const type = g.chance(0.9) ? g.pick(TYPES) : g.mutateString(g.pick(TYPES));
      const names = Array.from({ length: g.pick([0, 1, 3, 30]) }, () =>
        g.chance(0.5) ? g.mutateString(g.pick(NAMES)) : g.chance(0.5) ? g.pick(NAMES) : String(g.weird()),
      );
      const nonce = g.pick(['', '1', String(g.int(10_000)), g.string('0123456789', 12)]);
      try {
        if (streams.indexOf(s) % 2 === 0) {
          (s as ReturnType<typeof openAds>).send({
            type,
            names,
            nonce,
            version: g.pick(['', '1', 'zzz']),
            ...(g.chance(0.1) ? { error: g.string('abc', 200) } : {}),
            ...(g.chance(0.3) ? { namespace: g.pick(['default', 'other', 'Bad_NS', '']) } : {}),
            ...(g.chance(0.2) ? { nodeId: g.pick(['other/p', 'x'.repeat(5000), '']) } : {}),
          });
        } else {
          (s as ReturnType<typeof openDeltaAds>).send({
            type,
            subscribe: names,
            unsubscribe: g.chance(0.3) ? [g.pick(NAMES), '*'] : [],
            nonce,
            ...(g.chance(0.1) ? { initial: { [g.pick(NAMES)]: g.string('0123', 5) } } : {}),
            ...(g.chance(0.1) ? { error: 'nack' } : {}),
          });
        }
        sent++;
      } catch {
        // A request the client-side encoder refuses (a name that is not a string) never leaves.
      }
      requests++;
    }
    // Let the server read them; the targets they built stay within 5 streams x the cap of 20.
    await until(() => cp.ads.stats.requests === readBefore + sent, 60_000);
    maxTargets = Math.max(maxTargets, cp.targetNames().length);
    for (const s of streams) s.close();
  }
  await until(() => cp.ads.streamCount === 0, 60_000);
  // Every stream gone: every demand released, so no target and no watch stays.
  await until(() => cp.targetNames().length === 0, 60_000);
  assert.ok(maxTargets <= 100, `${maxTargets} targets at once`);
  const grown = heapMiB() - heapBefore;
  assert.ok(grown < 64, `heap grew ${grown.toFixed(1)} MiB over ${requests} requests`);
  t.diagnostic(
    `${requests} requests sent, ${cp.ads.stats.requests} read, ${cp.ads.stats.refused} names refused, ` +
      `${cp.ads.stats.nacks} NACKs, at most ${maxTargets} targets, heap +${grown.toFixed(1)} MiB`,
  );
  await assertHealthy();
});

/** A well-behaved client gets its Listener and endpoints. */
async function assertHealthy(): Promise<void> {
  const s = openAds(cp.address);
  try {
    s.send({ type: LDS, names: ['app.default:9090'] });
    const r = await s.next(30_000);
    assert.equal(r.type_url, LDS);
    assert.equal(r.resources.length, 1);
    s.send({ type: EDS, names: ['default/app:9090'] });
    assert.equal((await s.next(30_000)).resources.length, 1);
  } finally {
    s.close();
  }
}
