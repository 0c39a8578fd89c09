// The contract between grpc-kube resolvers and our policies, through a real grpc-js channel: the
// per-endpoint info travels as the ENDPOINT_INFO_ATTRIBUTE resolver attribute, and a listed
// endpoint the info marks draining or unready never gets an RPC, while zone preference applies.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import * as grpc from '@grpc/grpc-js';
import {
  ENDPOINT_INFO_ATTRIBUTE,
  registerResolver,
  statusOrFromValue,
  type GrpcUri,
  type ResolverListener,
} from 'grpc-kube/internal/adapter/grpc-js.js';
import type { Endpoint } from 'grpc-kube/internal/discovery/endpoint.js';
import {
  BALANCER_CHANNEL_NAME,
  registerPolicies,
  type BalancerEvent,
} from 'grpc-kube/internal/balancer/index.js';
import { clientDefaults } from 'grpc-kube/internal/client/defaults.js';
import { echo, startEchoServer, type StartedServer } from '../server/echo.js';

const SCHEME = 'gk-balancer-test';
const tables = new Map<string, Endpoint[]>();

class TableResolver {
  private timer: NodeJS.Immediate | undefined;
  constructor(
    private readonly target: GrpcUri,
    private readonly listener: ResolverListener,
  ) {}
  updateResolution(): void {
    if (this.timer !== undefined) return;
    // Never call the listener synchronously (grpc-js contract).
    this.timer = setImmediate(() => {
      this.timer = undefined;
      const eps = tables.get(this.target.path) ?? [];
      const info = new Map(eps.map((e) => [`${e.address}:${e.port}`, e]));
      this.listener(
        statusOrFromValue(eps.map((e) => ({ addresses: [{ host: e.address, port: e.port }] }))),
        { [ENDPOINT_INFO_ATTRIBUTE]: info },
        null,
        '',
      );
    });
  }
  destroy(): void {
    if (this.timer !== undefined) clearImmediate(this.timer);
  }
  static getDefaultAuthority(target: GrpcUri): string {
    return target.path;
  }
}

test('through a real channel: draining/unready endpoints in the list get no RPC; local zone preferred', async (t) => {
  registerPolicies();
  registerResolver(SCHEME, TableResolver as unknown as Parameters<typeof registerResolver>[1]);
  const servers: StartedServer[] = [];
  t.after(() => {
    for (const s of servers) s.server.forceShutdown();
  });
  for (let i = 0; i < 4; i++) {
    servers.push(await startEchoServer((_call, cb) => cb(null, Buffer.from(`s${i}`))));
  }
  const ep = (i: number, extra: Partial<Endpoint>): Endpoint => ({
    address: '127.0.0.1',
    port: (servers[i] as StartedServer).port,
    state: 'ready',
    ...extra,
  });
  tables.set('drain', [ep(0, {}), ep(1, { state: 'draining' }), ep(2, { state: 'unready' }), ep(3, {})]);
  tables.set('zone', [
    ep(0, { zone: 'b' }),
    ep(1, { zone: 'a' }),
    ep(2, { zone: 'a' }),
    ep(3, { zone: 'b' }),
  ]);
  t.after(() => tables.clear());

  const cases: Array<{ path: string; policy: string; config: Record<string, unknown>; want: string[] }> = [
    { path: 'drain', policy: 'grpc_kube_p2c', config: {}, want: ['s0', 's3'] },
    { path: 'drain', policy: 'grpc_kube_ewma', config: {}, want: ['s0', 's3'] },
    { path: 'zone', policy: 'grpc_kube_p2c', config: { localZone: 'a' }, want: ['s1', 's2'] },
  ];
  for (const c of cases) {
    let onEvent: (m: unknown) => void = () => {};
    const settled = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${c.policy} ${c.path}: picker never listed ${c.want}`)),
        30_000,
      );
      onEvent = (m) => {
        const e = m as BalancerEvent;
        if (
          e.state === 'READY' &&
          e.candidates === c.want.length &&
          e.localOnly === 'localZone' in c.config
        ) {
          clearTimeout(timer);
          resolve();
        }
      };
    });
    diagnostics.subscribe(BALANCER_CHANNEL_NAME, onEvent);
    t.after(() => diagnostics.unsubscribe(BALANCER_CHANNEL_NAME, onEvent));
    const client = new grpc.Client(
      `${SCHEME}:${c.path}`,
      grpc.credentials.createInsecure(),
      clientDefaults({ lbPolicy: c.policy, lbConfig: c.config }),
    );
    try {
      // While the local endpoints are still connecting, the policy rightly falls back to any
      // connected zone; count once the picker lists every wanted endpoint.
      const r0 = await echo(client, 'x');
      assert.equal(r0.code, grpc.status.OK, r0.details);
      await settled;
      const seen = new Set<string>();
      for (let i = 0; i < 60; i++) {
        const r = await echo(client, 'x');
        assert.equal(r.code, grpc.status.OK, r.details);
        seen.add(r.body);
      }
      const got = [...seen].sort();
      assert.ok(got.length > 0 && got.every((b) => c.want.includes(b)), `${c.policy} ${c.path}: ${got}`);
      // Sequential calls tie on outstanding requests, so p2c spreads over both; peak-EWMA may
      // rightly stick to whichever endpoint measured faster.
      if (c.policy === 'grpc_kube_p2c') assert.deepEqual(got, c.want, `${c.policy} ${c.path}`);
    } finally {
      client.close();
    }
  }
});
