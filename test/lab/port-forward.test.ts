// The lab's `kubectl port-forward` (src/manifests/port-forward.ts, the container the lab adds to a
// sidecar overlay's client pod on the real cluster) forwards each chunk as it comes. With Nagle on
// its sockets, an HTTP/2 request written in two chunks had its second chunk held until the peer
// ACKed the first, and the peer delays that ACK (Linux: at least 40 ms, TCP_DELACK_MIN): every RPC
// through it took ~44 ms instead of ~1 ms, and the sidecar's latency on the real cluster measured
// the forwarder (p50 23–47 ms against proxy's 3–8 ms). Here the forwarder runs as the pod runs it
// (its compiled script, its own process) between a grpc-js client and server on loopback, beside a
// direct channel to the same server, the calls interleaved so both see the same load: the
// forwarder's median must stay below the direct median plus that 40 ms floor.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { newEchoClient, startEchoServer, who } from '../helpers/echo.js';

const SCRIPT = fileURLToPath(
  new URL('../../../packages/lab/dist/src/manifests/port-forward.js', import.meta.url),
);

/**
 * A port free on `host` right now. Not on 127.0.0.1: between this probe and the forwarder's bind, a
 * connection from 127.0.0.1 may take the same ephemeral port; none starts from a loopback address of
 * its own.
 */
async function freePort(host: string): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

test('port-forward: an RPC through it costs no delayed-ACK wait (its sockets send without Nagle)', async (t) => {
  const server = await startEchoServer('hello-0', '127.0.0.1');
  t.after(() => server.kill());
  const host = '127.0.77.1';
  const port = await freePort(host);
  const fwd = spawn(process.execPath, [SCRIPT, `${host}:${port}`, `127.0.0.1:${server.port}`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => fwd.kill('SIGKILL'));
  await new Promise((r) => fwd.stdout.once('data', r));
  const direct = newEchoClient(`127.0.0.1:${server.port}`);
  const forwarded = newEchoClient(`${host}:${port}`);
  t.after(() => {
    direct.close();
    forwarded.close();
  });
  const time = async (c: typeof direct): Promise<number> => {
    const t0 = performance.now();
    assert.equal((await who(c, 30_000)).server, 'hello-0');
    return performance.now() - t0;
  };
  // Connections up and past the kernel's quick-ACK start, where every segment is ACKed at once.
  for (let i = 0; i < 20; i++) await Promise.all([time(direct), time(forwarded)]);
  const d: number[] = [];
  const f: number[] = [];
  for (let i = 0; i < 60; i++) {
    d.push(await time(direct));
    f.push(await time(forwarded));
  }
  t.diagnostic(`median ms: direct ${median(d).toFixed(2)}, through port-forward ${median(f).toFixed(2)}`);
  assert.ok(
    median(f) < median(d) + 40,
    `through port-forward ${median(f).toFixed(1)} ms, direct ${median(d).toFixed(1)} ms: a delayed ACK per RPC`,
  );
});
