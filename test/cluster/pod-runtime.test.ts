// NodeScriptRuntime's pods do not outlive the process that started them, even when that process is
// killed by a signal and runs no exit handler (a test run or a lab stopped with SIGKILL): a pod left
// behind would keep its address and answer the next lab's probes.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const RUNTIME = fileURLToPath(new URL('../../src/cluster/pod-runtime.js', import.meta.url));

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
    const end = Date.now() + 3000;
    while (alive(pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    assert.equal(alive(pid), false, `pod ${pid} outlived its SIGKILLed parent`);
  },
);
