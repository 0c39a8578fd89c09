// `grpc-kube proxy` as a user runs it: a separate process with static targets, an RPC through it,
// then SIGTERM in the middle of a slow RPC — the RPC finishes, the process exits 0, and the port is
// closed. Bad flags are typed errors.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { proxyCommand } from '../../src/cli/proxy.js';
import { newJsonClient, startJsonServer, unary } from './fixtures/json-service.js';

const CLI = fileURLToPath(new URL('../../src/cli/proxy.js', import.meta.url));

test('grpc-kube proxy: serves, then drains on SIGTERM and exits 0', async (t) => {
  const b = await startJsonServer('b0', '127.0.0.1');
  t.after(() => b.kill());
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { proxyCommand } from ${JSON.stringify(CLI)}; process.exitCode = await proxyCommand(process.argv.slice(1));`,
      '--',
      '--mode',
      'ingress',
      '--listen',
      '127.0.0.1:0',
      '--target',
      'app.prod:9000',
      '--static',
      `app.prod:9000=127.0.0.1:${b.port}`,
      '--grace-ms',
      '3000',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.after(() => child.kill('SIGKILL'));
  const lines: string[] = [];
  const address = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      for (const l of d.toString().split('\n')) {
        if (l === '') continue;
        lines.push(l);
        const m = /listening on (\S+)/.exec(l);
        if (m !== null) resolve(m[1] as string);
      }
    });
    child.once('exit', (code) => reject(new Error(`proxy exited ${code}`)));
  });
  const client = newJsonClient(address);
  t.after(() => client.close());
  assert.equal((await unary(client, {})).res?.server, 'b0');
  const slow = unary(client, { delayMs: 400 });
  await new Promise((r) => setTimeout(r, 100));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  const r = await slow;
  assert.equal(r.err, undefined, 'the RPC in flight at SIGTERM finished');
  assert.equal(await exited, 0);
  assert.ok(
    lines.some((l) => l.includes('draining (1 RPCs in flight')),
    lines.join('\n'),
  );
  const late = newJsonClient(address);
  t.after(() => late.close());
  assert.ok((await unary(late, {}, { deadlineMs: 300 })).err !== undefined);
});

test('grpc-kube proxy: bad flags are typed errors', async () => {
  await assert.rejects(proxyCommand(['--mode', 'mesh', '--listen', '127.0.0.1:0']), {
    code: 'GK_ERR_INVALID_OPTION',
  });
  await assert.rejects(
    proxyCommand([
      '--mode',
      'ingress',
      '--listen',
      'nowhere',
      '--target',
      'a.b:1',
      '--static',
      'a.b:1=127.0.0.1:1',
    ]),
    { code: 'GK_ERR_INVALID_OPTION' },
  );
  await assert.rejects(
    proxyCommand([
      '--mode',
      'ingress',
      '--listen',
      '127.0.0.1:0',
      '--target',
      'a.b:1',
      '--static',
      'a.b:1=127.0.0.1:1',
      '--policy',
      'random',
    ]),
    { code: 'GK_ERR_INVALID_OPTION', field: '--policy' },
  );
});
