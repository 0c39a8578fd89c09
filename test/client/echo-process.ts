// A child-process echo server for the pod-kill test: binds 127.0.0.1:0, prints its port on stdout,
// answers after a short delay, and dies only by signal (the test SIGKILLs it).

import { startEchoServer } from '../server/echo.js';

const name = process.argv[2] ?? 'pod';
const delayMs = Number(process.argv[3] ?? '5');
const s = await startEchoServer((_call, cb) => {
  setTimeout(() => cb(null, Buffer.from(name)), delayMs);
});
process.stdout.write(`${s.port}\n`);
// Exit with the parent so no orphan outlives a crashed test run.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
