// The server kit under client load: two of three servers run the SIGTERM sequence one after the
// other while six workers keep calling through round_robin with clientDefaults(). The client is not
// told anything (static ipv4: target): GOAWAY, closed listeners and the retry policy alone must
// keep every RPC successful.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { createServerKit, type ServerKit } from 'grpc-kube/internal/server/index.js';
import { clientDefaults } from 'grpc-kube/internal/client/defaults.js';
import { echo, ECHO_SERVICE } from './echo.js';

async function startKitServer(
  name: string,
): Promise<{ server: grpc.Server; kit: ServerKit; address: string }> {
  const server = new grpc.Server();
  server.addService(ECHO_SERVICE, {
    Echo: ((_call: unknown, cb: grpc.sendUnaryData<Buffer>) => {
      setTimeout(() => cb(null, Buffer.from(name)), 5);
    }) as grpc.handleUnaryCall<Buffer, Buffer>,
  });
  const kit = createServerKit(server, {
    signals: [],
    exit: null,
    propagationDelayMs: 50,
    // Longer than any stall: the RPCs take 5 ms, so a forced close would mean the drain lost track.
    graceMs: 30_000,
    startServing: true,
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { server, kit, address: `127.0.0.1:${port}` };
}

test('two of three servers drain with the kit under load: 0 failed RPCs, drained servers stop cleanly', async (t) => {
  const servers = await Promise.all(['a', 'b', 'c'].map(startKitServer));
  t.after(() => {
    for (const s of servers) s.server.forceShutdown();
  });
  const client = new grpc.Client(
    `ipv4:${servers.map((s) => s.address).join(',')}`,
    grpc.credentials.createInsecure(),
    clientDefaults({ retry: { initialBackoffMs: 10, maxBackoffMs: 50 } }),
  );
  t.after(() => client.close());
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + 60_000, (e) => (e ? reject(e) : resolve())),
  );

  const TOTAL = 900;
  const failures: string[] = [];
  const perServer: Record<string, number> = {};
  const shutdowns: Array<Promise<{ forced: boolean }>> = [];
  let issued = 0;
  const worker = async (): Promise<void> => {
    while (issued < TOTAL) {
      issued++;
      if (issued === 150) shutdowns.push((servers[0] as { kit: ServerKit }).kit.shutdown('rollout a'));
      if (issued === 450) shutdowns.push((servers[1] as { kit: ServerKit }).kit.shutdown('rollout b'));
      const r = await echo(client, 'x', 30_000);
      if (r.code !== grpc.status.OK) failures.push(`${grpc.status[r.code]}: ${r.details}`);
      else perServer[r.body] = (perServer[r.body] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  const results = await Promise.all(shutdowns);
  t.diagnostic(JSON.stringify(perServer));
  assert.deepEqual(failures, []);
  assert.deepEqual(
    results.map((r) => r.forced),
    [false, false],
  );
  assert.equal((servers[0] as { kit: ServerKit }).kit.phase, 'stopped');
  assert.ok((perServer.a ?? 0) > 0 && (perServer.b ?? 0) > (perServer.a ?? 0), JSON.stringify(perServer));
  assert.ok((perServer.c ?? 0) > TOTAL / 3, 'the survivor took the rest');
});
