// ServicePool: a backend that turned Ready is connected before it is picked. Least-request favours a
// backend with nothing outstanding — exactly a new one — so without this every RPC of a scale-up
// waited for the new pod's HTTP/2 handshake (on a busy machine, past its deadline). Real sockets:
// one real HTTP/2 server, and a TCP listener that accepts and never completes the handshake.

import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { test } from 'node:test';
import type { Endpoint, EndpointView } from 'grpc-kube/internal/discovery/endpoint.js';
import type { EndpointListener } from 'grpc-kube/internal/discovery/kube-source.js';
import { seededRandom } from 'grpc-kube/internal/balancer/runtime.js';
import { createPicker } from '@grpc-kube/proxy/internal/picker.js';
import { until } from '../helpers/kube.js';
import { ServicePool } from '@grpc-kube/proxy/internal/pool.js';

const view = (eps: Endpoint[]): EndpointView => ({ size: eps.length, endpoints: () => eps });

test('a new ready backend is warmed at once and gets no pick until its handshake completes', async (t) => {
  const h2 = http2.createServer();
  await new Promise<void>((r) => h2.listen(0, '127.0.0.1', r));
  // Accepts TCP, never sends HTTP/2 SETTINGS: the session stays "connecting".
  const held: net.Socket[] = [];
  const silent = net.createServer((s) => void held.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  let listener: EndpointListener | undefined;
  const runtime = { now: () => performance.now(), random: seededRandom(5) };
  const pool = new ServicePool(
    'ns/svc:1',
    (l) => {
      listener = l;
      return { unsubscribe: () => {} };
    },
    createPicker('p2c', runtime),
    { idleMs: 60_000, connectTimeoutMs: 60_000, ejectBaseMs: 250, ejectMaxMs: 10_000, ...runtime },
    runtime,
  );
  t.after(async () => {
    pool.destroyBackends();
    pool.close();
    for (const s of held) s.destroy();
    await new Promise((r) => silent.close(r));
    await new Promise((r) => h2.close(r));
  });
  const a: Endpoint = { address: '127.0.0.1', port: (h2.address() as AddressInfo).port, state: 'ready' };
  const b: Endpoint = { address: '127.0.0.1', port: (silent.address() as AddressInfo).port, state: 'ready' };
  const keyA = `127.0.0.1:${a.port}`;
  const keyB = `127.0.0.1:${b.port}`;

  listener?.onEndpoints(view([a]), { added: [a], removed: [], changed: [] });
  // Warmed by the update alone: no RPC asked for it.
  await until(() => pool.backend(keyA)?.handshaken === true, 20_000); // A connects

  listener?.onEndpoints(view([a, b]), { added: [b], removed: [], changed: [] });
  assert.equal(pool.backend(keyB)?.sessionCount, 1, 'B is being connected before any pick');
  await until(() => held.length === 1, 20_000); // B's TCP accept
  const picks = new Map<string, number>();
  for (let i = 0; i < 200; i++) {
    const o = pool.pick(new Set());
    assert.equal(o.kind, 'backend');
    if (o.kind === 'backend') {
      picks.set(o.backend.key, (picks.get(o.backend.key) ?? 0) + 1);
      // Calls stay in flight on A: least-request alone would now send everything to idle B.
      pool.picker.begin(o.backend.stats);
    }
  }
  assert.deepEqual(Object.fromEntries(picks), { [keyA]: 200 }, 'B, still connecting, took no RPC');
  assert.equal(pool.backend(keyB)?.sessionCount, 1, 'picks did not open more sessions to B');

  // When nothing is connected, a connecting backend is still picked (the RPC waits for it): A gone.
  listener?.onEndpoints(view([b]), { added: [], removed: [a], changed: [] });
  const o = pool.pick(new Set());
  assert.equal(o.kind === 'backend' ? o.backend.key : o.kind, keyB);
});
