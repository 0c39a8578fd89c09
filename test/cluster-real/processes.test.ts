// Process plumbing of the real control plane, with real child processes (sleep, sh, node) standing in
// for the Kubernetes binaries: readiness failures carry the log tail, stop() escalates to SIGKILL, a
// fatal signal kills registered children, and the reaper cleans up after a crashed owner only.

import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import {
  freePorts,
  reapLeftovers,
  startProcess,
  waitHealthy,
} from '@grpc-kube/lab/internal/cluster/real/processes.js';

const work = mkdtempSync(join(tmpdir(), 'grpc-kube-proc-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

function exitOf(child: ChildProcess): Promise<number | string> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve(child.exitCode ?? child.signalCode ?? '');
    else child.once('exit', (code, sig) => resolve(code ?? sig ?? ''));
  });
}

/** A SIGKILLed orphan lingers as a zombie until init reaps it: count that as gone. */
async function goneWithin(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    let state: string | undefined;
    try {
      state = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
    } catch {
      return true;
    }
    if (state === 'Z') return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('startProcess / waitHealthy', () => {
  it('a binary that cannot be spawned is a typed error, not an unhandled error event', async () => {
    assert.throws(() => startProcess('ghost', join(work, 'no-such-binary'), [], join(work, 'g.log')), {
      code: 'GK_ERR_LAB',
      message: /could not start ghost/,
    });
    await new Promise((r) => setImmediate(r)); // the 'error' event fires here; it must not crash the run
  });

  it('fails fast with the log tail when the process exits before it is healthy', async (t) => {
    const [port] = await freePorts(1);
    const p = startProcess(
      'crasher',
      '/bin/sh',
      ['-c', 'echo "bind: address in use"; exit 3'],
      join(work, 'c.log'),
    );
    const t0 = Date.now();
    await assert.rejects(
      waitHealthy(p, { url: `http://127.0.0.1:${port}/health` }, 60_000),
      (err: unknown) => {
        assert.ok(err instanceof GrpcKubeError);
        assert.equal(err.code, 'GK_ERR_LAB');
        assert.match(err.message, /crasher exited \(3\)/);
        assert.match(err.message, /bind: address in use/);
        return true;
      },
    );
    t.diagnostic(`failed ${Date.now() - t0} ms after the start`);
    assert.ok(Date.now() - t0 < 30_000, 'did not wait for the 60 s deadline');
  });

  it('times out with the last probe result while the process runs on', async () => {
    const srv = createServer((_req, res) => {
      res.writeHead(503);
      res.end('[-]etcd failed');
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const { port } = srv.address() as { port: number };
    const p = startProcess('sleeper', '/bin/sleep', ['30'], join(work, 's.log'));
    try {
      await assert.rejects(
        waitHealthy(p, { url: `http://127.0.0.1:${port}/readyz` }, 400),
        (err: unknown) => {
          assert.ok(err instanceof GrpcKubeError);
          assert.match(
            err.message,
            /not healthy .* within 400 ms \(last probe: HTTP 503: \[-\]etcd failed\)/,
          );
          return true;
        },
      );
    } finally {
      await p.stop(1000);
      srv.close();
    }
    assert.equal(await p.exited, 'SIGTERM');
  });

  it('resolves once the endpoint answers 200', async () => {
    let hits = 0;
    const srv = createServer((_req, res) => {
      hits++;
      res.writeHead(hits < 3 ? 500 : 200);
      res.end();
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const { port } = srv.address() as { port: number };
    const p = startProcess('sleeper', '/bin/sleep', ['30'], join(work, 's2.log'));
    try {
      await waitHealthy(p, { url: `http://127.0.0.1:${port}/health` }, 60_000);
      assert.equal(hits, 3);
    } finally {
      await p.stop(1000);
      srv.close();
    }
  });

  it('stop() escalates to SIGKILL when SIGTERM is ignored, and is idempotent', async () => {
    const p = startProcess(
      'stubborn',
      process.execPath,
      [
        '-e',
        'process.on("SIGTERM", () => console.log("ignored")); console.log("up"); setInterval(() => {}, 1000)',
      ],
      join(work, 'stubborn.log'),
    );
    // Its handler is installed once it says "up" (node may take a while to start on a loaded machine).
    const log = join(work, 'stubborn.log');
    for (let i = 0; i < 3000 && !(existsSync(log) && readFileSync(log, 'utf8').includes('up')); i++)
      await new Promise((r) => setTimeout(r, 10));
    const t0 = Date.now();
    await Promise.all([p.stop(300), p.stop(300)]);
    assert.equal(await p.exited, 'SIGKILL');
    assert.ok(Date.now() - t0 >= 290);
  });
});

describe('exit hooks', () => {
  it('a SIGTERM to the owner kills its registered children', async () => {
    const mod = fileURLToPath(
      new URL('../../../packages/lab/dist/src/cluster/real/processes.js', import.meta.url),
    );
    const script = `
      import { startProcess, onProcessExit } from ${JSON.stringify(mod)};
      const p = startProcess('child', '/bin/sleep', ['60'], ${JSON.stringify(join(work, 'hook.log'))});
      onProcessExit(() => p.killNow());
      console.log(p.pid);
      setTimeout(() => process.kill(process.pid, 'SIGTERM'), 100);
      setInterval(() => {}, 1000);
    `;
    const out = await new Promise<{ stdout: string; signal: string | null }>((resolve) => {
      execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000 }, (err, stdout) =>
        resolve({ stdout, signal: (err as { signal?: string } | null)?.signal ?? null }),
      );
    });
    assert.equal(out.signal, 'SIGTERM', 'owner still dies of the signal');
    const pid = Number(out.stdout.trim());
    assert.ok(pid > 0, out.stdout);
    assert.equal(await goneWithin(pid, 30_000), true, `child ${pid} survived its owner`);
  });
});

describe('reapLeftovers', () => {
  it('kills children of a dead owner that still run the recorded binary, and only those', async () => {
    const runDir = join(work, 'run');
    mkdirSync(runDir);
    const deadOwner = spawn('/bin/true');
    await exitOf(deadOwner);
    // Detached so they are not our children: the reaper's real victims belong to a dead process.
    const orphan = spawn('/bin/sleep', ['60'], { detached: true, stdio: 'ignore' });
    const reused = spawn('/bin/sleep', ['60'], { detached: true, stdio: 'ignore' });
    const ofLiveOwner = spawn('/bin/sleep', ['60'], { detached: true, stdio: 'ignore' });
    try {
      const sleepExe = readlinkSync(`/proc/${orphan.pid}/exe`);
      const deadTmp = mkdtempSync(join(work, 'grpc-kube-cp-'));
      const liveTmp = mkdtempSync(join(work, 'grpc-kube-cp-'));
      writeFileSync(
        join(runDir, 'control-plane-1-a.json'),
        JSON.stringify({
          ownerPid: deadOwner.pid,
          tmpDir: deadTmp,
          children: [
            { pid: orphan.pid, exe: sleepExe },
            { pid: reused.pid, exe: '/somewhere/kube-apiserver' }, // pid recycled by another program
          ],
        }),
      );
      writeFileSync(
        join(runDir, 'control-plane-2-b.json'),
        JSON.stringify({
          ownerPid: process.ppid,
          tmpDir: liveTmp,
          children: [{ pid: ofLiveOwner.pid, exe: sleepExe }],
        }),
      );
      writeFileSync(join(runDir, 'control-plane-3-c.json'), '{not json');

      assert.equal(reapLeftovers(runDir), 1);
      assert.equal(await exitOf(orphan), 'SIGKILL');
      assert.equal(existsSync(deadTmp), false);
      assert.equal(existsSync(join(runDir, 'control-plane-1-a.json')), false);
      assert.equal(existsSync(join(runDir, 'control-plane-3-c.json')), false);
      assert.equal(reused.exitCode, null);
      assert.equal(ofLiveOwner.exitCode, null);
      assert.equal(existsSync(liveTmp), true);
      assert.equal(existsSync(join(runDir, 'control-plane-2-b.json')), true);
    } finally {
      for (const c of [orphan, reused, ofLiveOwner]) c.kill('SIGKILL');
      await Promise.all([exitOf(reused), exitOf(ofLiveOwner)]);
    }
  });
});
