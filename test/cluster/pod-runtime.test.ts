// NodeScriptRuntime's pods do not outlive the process that started them, even when that process is
// killed by a signal and runs no exit handler (a test run or a lab stopped with SIGKILL): a pod left
// behind would keep its address and answer the next lab's probes.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const RUNTIME = fileURLToPath(
  new URL('../../../packages/lab/dist/src/cluster/pod-runtime.js', import.meta.url),
);

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test(
  'a pod dies with its kubelet process, also when that process is SIGKILLed',
  { skip: existsSync('/usr/bin/setpriv') ? false : 'setpriv (util-linux) not found' },
  async (t) => {
    // The "kubelet": starts one pod (a node process that would run for a minute), prints its pid.
    const parent = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { NodeScriptRuntime } from ${JSON.stringify(RUNTIME)};
         const rt = new NodeScriptRuntime({ script: '-e', args: () => ['setTimeout(() => {}, 60000)'] });
         const p = await rt.start({ namespace: 'ns', name: 'p', uid: 'u', ip: '127.0.0.1', port: 1, env: {}, container: { name: 'c' }, restartCount: 0 });
         console.log(p.pid);
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    t.after(() => parent.kill('SIGKILL'));
    const pid = await new Promise<number>((resolve, reject) => {
      parent.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      parent.once('exit', (code) => reject(new Error(`parent exited ${code}`)));
    });
    assert.ok(pid > 0 && alive(pid), `pod ${pid} runs`);
    const exited = new Promise((r) => parent.once('exit', r));
    parent.kill('SIGKILL');
    await exited;
    const end = Date.now() + 30_000;
    while (alive(pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    assert.equal(alive(pid), false, `pod ${pid} outlived its SIGKILLed parent`);
  },
);

/** A pod's start spec with what these tests vary. */
const podSpec = (name: string, ip: string, port: number) => ({
  namespace: 'ns',
  name,
  uid: 'u',
  ip,
  port,
  env: {},
  container: { name: 'c' },
  restartCount: 0,
});

test('pods run at the niceness the runtime is given, from their first instruction', async (t) => {
  const { NodeScriptRuntime } = await import('@grpc-kube/lab/internal/cluster/pod-runtime.js');
  assert.throws(() => new NodeScriptRuntime({ script: '-e', nice: 20 }), { code: 'GK_ERR_INVALID_OPTION' });
  assert.throws(() => new NodeScriptRuntime({ script: '-e', nice: -1 }), { code: 'GK_ERR_INVALID_OPTION' });
  // The pod prints the niceness it started with (field 19 of /proc/self/stat, after the command name).
  const lines: string[] = [];
  const rt = new NodeScriptRuntime({
    script: '-e',
    args: () => [
      "const s = require('fs').readFileSync('/proc/self/stat', 'utf8'); console.log('nice', s.slice(s.lastIndexOf(')') + 2).split(' ')[16], process.env.PORT); setTimeout(() => {}, 30000)",
    ],
    nice: 7,
    onOutput: (_pod, _stream, line) => lines.push(line),
  });
  const p = await rt.start(podSpec('p', '127.0.0.1', 4321));
  t.after(() => p.kill('SIGKILL'));
  const end = Date.now() + 20_000;
  while (lines.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(lines, ['nice 7 4321'], 'niceness and the PORT of the pod contract');
});

test('a shell command runs as the pod, with the pod contract in its environment', async () => {
  const { NodeScriptRuntime } = await import('@grpc-kube/lab/internal/cluster/pod-runtime.js');
  const lines: string[] = [];
  const rt = new NodeScriptRuntime({
    script: 'unused',
    shellCommand: 'echo "$POD_NAME $POD_IP $PORT"',
    onOutput: (_pod, _stream, line) => lines.push(line),
  });
  const p = await rt.start(podSpec('web-1', '127.0.0.9', 50051));
  const exit = await p.exited;
  assert.deepEqual(exit, { code: 0, signal: null });
  // 'exit' can come before the last of stdout is read: wait for the line, bounded.
  const end = Date.now() + 10_000;
  while (lines.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(lines, ['web-1 127.0.0.9 50051']);
});
