import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// The lab command's exit bound (packages/cli/src/lab-exit.ts), in a real process: once the lab has
// returned, a handle left open (here a listening server and a child process, as a pod left behind
// would be) must not keep the process — and the test lock it holds — alive. Without the bound the
// child below never exits and the test fails at its own limit.

const LAB_EXIT = fileURLToPath(new URL('../../../packages/cli/dist/src/lab-exit.js', import.meta.url));
/** Far above any exit of the processes below; reaching it is the failure. */
const STUCK_MS = 60_000;

function runScript(
  source: string,
): Promise<{ code: number | null; stderr: string; stdout: string; stuck: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', source], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    let stuck = false;
    const limit = setTimeout(() => {
      stuck = true;
      child.kill('SIGKILL');
    }, STUCK_MS);
    child.on('exit', (code) => {
      clearTimeout(limit);
      resolve({ code, stderr, stdout, stuck });
    });
  });
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('a lab process held by a leaked server and child process exits with its code, naming them, and ends the child', async () => {
  const r = await runScript(`
    import { createServer } from 'node:net';
    import { spawn } from 'node:child_process';
    import { exitWhenStuck } from ${JSON.stringify(LAB_EXIT)};
    createServer().listen(0, '127.0.0.1');
    const child = spawn('sleep', ['600'], { stdio: 'ignore' });
    process.stdout.write(String(child.pid));
    process.exitCode = 3;
    exitWhenStuck({ graceMs: 200 });
  `);
  assert.equal(r.stuck, false, 'the process ended by itself');
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /warning: the process was still held 200 ms after the lab finished/);
  assert.match(r.stderr, /TCPServerWrap/);
  const pid = Number(r.stdout);
  assert.ok(pid > 0);
  assert.match(r.stderr, new RegExp(`ProcessWrap \\(pid ${pid} sleep 600\\)`));
  // SIGKILLed before the exit; the kernel may take a moment to reap it.
  for (let i = 0; i < 600 && alive(pid); i++) await new Promise((res) => setTimeout(res, 50));
  assert.equal(alive(pid), false, 'the leaked child process was ended');
});

test('a lab process that closed everything exits at once: the bound never holds it nor warns', async () => {
  const r = await runScript(`
    import { createServer } from 'node:net';
    import { exitWhenStuck } from ${JSON.stringify(LAB_EXIT)};
    const server = createServer().listen(0, '127.0.0.1');
    process.exitCode = 4;
    exitWhenStuck({ graceMs: ${10 * STUCK_MS} });
    setTimeout(() => server.close(), 50);
  `);
  assert.equal(r.stuck, false, 'the unref-ed bound does not keep the process alive');
  assert.equal(r.code, 4);
  assert.doesNotMatch(r.stderr, /warning/);
});
