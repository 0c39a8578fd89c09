// Pod kill with the default retry policy: three server processes on 127.0.0.1, steady client load
// through round_robin with clientDefaults(); one process is SIGKILLed mid-run (no GOAWAY, no drain,
// calls in flight die with the connection). Every call must still succeed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { clientDefaults } from 'grpc-kube/internal/client/defaults.js';
import { echo } from '../server/echo.js';

const SERVER = fileURLToPath(new URL('./echo-process.js', import.meta.url));

async function spawnServer(name: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [SERVER, name, '5'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  try {
    let out = '';
    for await (const chunk of child.stdout as NodeJS.ReadableStream) {
      out += String(chunk);
      if (out.includes('\n')) break;
    }
    const port = Number(out.trim());
    assert.ok(port > 0, `server ${name} printed its port: ${out}`);
    return { child, port };
  } finally {
    clearTimeout(timer);
  }
}

// Known limit (issue 4 note): now and then one RPC in flight on the killed server fails even with
// the retry policy (about 1 in 4 runs of this test on a loaded box); grpc-js does not replay it. Its
// message is "Connection dropped", or "read ECONNRESET" when the kernel's reset reaches the socket
// before grpc-js saw the end of the stream — the same loss, reported from a different place. The assertion holds the rest exactly: only such RPCs may fail, at most
// one per worker, and every other RPC succeeds.
test('SIGKILL of one of three servers under load: with the default retry policy only RPCs in flight on it can fail', async (t) => {
  const servers = await Promise.all(['a', 'b', 'c'].map(spawnServer));
  t.after(() => {
    for (const s of servers)
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
  });
  const target = `ipv4:${servers.map((s) => `127.0.0.1:${s.port}`).join(',')}`;
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), clientDefaults());
  t.after(() => client.close());
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + 60_000, (e) => (e ? reject(e) : resolve())),
  );

  const TOTAL = 600;
  const KILL_AT = 200;
  const failures: string[] = [];
  const perServer: Record<string, number> = {};
  let issued = 0;
  let killed = false;
  const victim = servers[0] as { child: ChildProcess };
  const worker = async (): Promise<void> => {
    while (issued < TOTAL) {
      issued++;
      if (!killed && issued >= KILL_AT) {
        killed = true;
        victim.child.kill('SIGKILL');
      }
      // A deadline no stall reaches: only the kill may fail an RPC.
      const r = await echo(client, 'x', 30_000);
      if (r.code !== grpc.status.OK) failures.push(`${grpc.status[r.code]}: ${r.details}`);
      else perServer[r.body] = (perServer[r.body] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  if (victim.child.exitCode === null && victim.child.signalCode === null) await once(victim.child, 'exit');
  assert.equal(victim.child.signalCode, 'SIGKILL');
  t.diagnostic(JSON.stringify(perServer));
  t.diagnostic(`failures: ${JSON.stringify(failures)}`);
  assert.ok(failures.length <= 6, `at most one in-flight RPC per worker may fail: ${failures.length}`);
  for (const f of failures) assert.match(f, /^UNAVAILABLE: (Connection dropped|read ECONNRESET)$/);
  assert.equal(
    Object.values(perServer).reduce((a, b) => a + b, 0),
    TOTAL - failures.length,
  );
  assert.ok(
    (perServer.a ?? 0) > 0 && (perServer.a ?? 0) < TOTAL / 2,
    'the killed server served until it died',
  );
});
