// The lab's `kubectl port-forward` for a sidecar overlay on the real cluster: a container the lab adds
// to the client pod, so it runs in the pod's network namespace, listening on the pod's address and
// piping each connection to the sidecar on the pod's loopback (a sidecar proxy listens on loopback
// only, and the lab's clients run outside the pod). Plain TCP, no parsing: what the clients send is
// what the sidecar reads.
//
//   node port-forward.js <listen host:port> <to host:port>

import * as net from 'node:net';

function hostPort(s: string | undefined, what: string): { host: string; port: number } {
  const i = s?.lastIndexOf(':') ?? -1;
  const port = Number(s?.slice(i + 1));
  if (s === undefined || i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    process.stderr.write(`port-forward: ${what} must be host:port, got ${JSON.stringify(s)}\n`);
    process.exit(2);
  }
  return { host: s.slice(0, i), port };
}

const listen = hostPort(process.argv[2], 'the listen address');
const to = hostPort(process.argv[3], 'the target');
const sockets = new Set<net.Socket>();

const server = net.createServer((down) => {
  const up = net.connect(to);
  for (const s of [down, up]) {
    // Each chunk goes on as it came: with Nagle a frame written right after another waits for the
    // peer's delayed ACK, some 40 ms an RPC (HTTP/2 writes a request in more than one chunk).
    s.setNoDelay(true);
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    // Either side failing ends both: the client sees the connection close, as with a dead sidecar.
    s.once('error', () => {
      down.destroy();
      up.destroy();
    });
  }
  down.pipe(up);
  up.pipe(down);
});
server.once('error', (err) => {
  process.stderr.write(`port-forward: ${err.message}\n`);
  process.exit(1);
});
server.listen(listen.port, listen.host, () =>
  process.stdout.write(`port-forward ${listen.host}:${listen.port} -> ${to.host}:${to.port}\n`),
);
process.once('SIGTERM', () => {
  server.close();
  for (const s of sockets) s.destroy();
  process.exit(0);
});
