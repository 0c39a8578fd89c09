// Loopback ports for the processes grpc-kube starts itself (the real control plane, nghttpx, the
// benchmarks' peers): free ports to give them, and a wait until one of them listens.

import net from 'node:net';

/** Distinct free TCP ports on `host` (all held open together so no two are the same). */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const srv = net.createServer();
      servers.push(srv);
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(0, host, () => resolve());
      });
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/**
 * Resolves once a TCP connect to host:port succeeds. Rejects with an Error saying which, when
 * `alive()` turns false or after `timeoutMs`; callers wrap it in their own typed error.
 */
export async function waitForListen(
  host: string,
  port: number,
  alive: () => boolean,
  timeoutMs = 10_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (!alive()) throw new Error(`the process exited before listening on ${host}:${port}`);
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, host);
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
}
