// `grpc-kube proxy` as a user runs it: a separate process with static targets, an RPC through it,
// then SIGTERM in the middle of a slow RPC — the RPC finishes, the process exits 0, and the port is
// closed. Bad flags are typed errors.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { proxyCommand, workerExecArgv } from '@grpc-kube/cli/internal/proxy.js';
import { DEFAULT_NGHTTPX } from '@grpc-kube/proxy/internal/index.js';
import { newJsonClient, startJsonServer, unary } from './fixtures/json-service.js';
import { until } from '../helpers/kube.js';

const MAIN = fileURLToPath(new URL('../../../packages/cli/dist/src/main.js', import.meta.url));

/** Flags of an ingress proxy to one static target, for the flag-checking cases. */
const STATIC_INGRESS = [
  '--mode',
  'ingress',
  '--listen',
  '127.0.0.1:0',
  '--target',
  'a.b:1',
  '--static',
  'a.b:1=127.0.0.1:1',
] as const;

interface ProxyProcess {
  readonly child: ReturnType<typeof spawn>;
  readonly address: string;
  /** stdout lines so far. */
  readonly lines: string[];
  readonly stderr: () => string;
  readonly exited: Promise<number | null>;
}

/** `grpc-kube proxy <args>` as a process: its stdout lines, its stderr, its exit code. */
function spawnProxy(
  t: { after(fn: () => unknown): void },
  args: readonly string[],
  detached = false,
): Omit<ProxyProcess, 'address'> {
  // detached: the proxy leads its own process group, which a test can signal as a whole (Ctrl-C).
  const child = spawn(process.execPath, [MAIN, 'proxy', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached,
  });
  t.after(() => {
    if (detached && child.exitCode === null && child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // The group is gone already.
      }
    }
    child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const lines: string[] = [];
  child.stdout.on('data', (d: Buffer) => {
    for (const l of d.toString().split('\n')) if (l !== '') lines.push(l);
  });
  return { child, lines, stderr: () => stderr, exited };
}

/** `grpc-kube proxy --mode ingress` to app.prod:9000 = the given backend ports, once it listens. */
async function proxyProcess(
  t: { after(fn: () => unknown): void },
  backendPorts: readonly number[],
  extra: readonly string[] = [],
  detached = false,
): Promise<ProxyProcess> {
  const p = spawnProxy(
    t,
    [
      '--mode',
      'ingress',
      '--listen',
      '127.0.0.1:0',
      '--target',
      'app.prod:9000',
      '--static',
      `app.prod:9000=${backendPorts.map((port) => `127.0.0.1:${port}`).join(',')}`,
      '--grace-ms',
      '30000',
      ...extra,
    ],
    detached,
  );
  // With --workers the primary's line names the worker count; it comes once all of them listen.
  const ready = extra.includes('--workers') ? /listening on (\S+) \(\d+ workers\)/ : /listening on (\S+)/;
  let exitCode: number | null | undefined;
  void p.exited.then((c) => (exitCode = c));
  for (;;) {
    const m = p.lines.map((l) => ready.exec(l)).find((x) => x !== null);
    if (m !== undefined && m !== null) return { ...p, address: m[1] as string };
    if (exitCode !== undefined) throw new Error(`proxy exited ${exitCode}: ${p.stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('grpc-kube proxy: serves, then drains on SIGTERM and exits 0', async (t) => {
  const b = await startJsonServer('b0', '127.0.0.1');
  t.after(() => b.kill());
  const { child, address, lines, exited } = await proxyProcess(t, [b.port]);
  const client = newJsonClient(address);
  t.after(() => client.close());
  assert.equal((await unary(client, {})).res?.server, 'b0');
  const slow = unary(client, { delayMs: 400 }, { deadlineMs: 60_000 });
  // SIGTERM once the RPC is in flight at the backend (not after a fixed sleep it may not reach by).
  await until(() => b.inFlight === 1, 30_000);
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

test('grpc-kube proxy: handles SIGTERM by the time it says it listens (a prompt signal drains it, not kills it)', async () => {
  // Whoever waits for the line may signal at once; a process with no handler yet dies of it. Call
  // the handlers the proxy added (not process.emit: the test runner has handlers of its own).
  const before = new Set(process.listeners('SIGTERM'));
  let added: NodeJS.SignalsListener[] | undefined;
  let noHandler!: (e: Error) => void;
  const unhandled = new Promise<never>((_, reject) => (noHandler = reject));
  const lines: string[] = [];
  const code = await Promise.race([
    proxyCommand([...STATIC_INGRESS], {
      out: (l) => {
        lines.push(l);
        if (!l.includes('listening on')) return;
        added = process.listeners('SIGTERM').filter((h) => !before.has(h));
        if (added.length === 0) noHandler(new Error(`no SIGTERM handler when it said: ${l}`));
        for (const h of added) h('SIGTERM');
      },
    }),
    unhandled,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`no stop 60 s after: ${lines.join(' | ')}`)), 60_000).unref(),
    ),
  ]);
  assert.equal(added?.length, 1, 'one SIGTERM handler, in place when the line was written');
  assert.equal(code, 0);
  assert.ok(
    lines.some((l) => l.includes('draining')),
    lines.join('\n'),
  );
  assert.equal(process.listeners('SIGTERM').length, before.size, 'the handler is gone after the stop');
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
  await assert.rejects(proxyCommand([...STATIC_INGRESS, '--policy', 'random']), {
    code: 'GK_ERR_INVALID_OPTION',
    field: '--policy',
  });
});

test('grpc-kube proxy --workers 2: connections spread over both workers; SIGTERM drains each; a crashed worker is replaced', async (t) => {
  const b = await startJsonServer('b0', '127.0.0.1');
  t.after(() => b.kill());
  const p = await proxyProcess(t, [b.port], ['--workers', '2']);
  // Eight client connections (local subchannel pools): the primary hands them out round-robin, and
  // each worker has its own backend session, so the backend sees two peers.
  const clients = Array.from({ length: 8 }, () => newJsonClient(p.address));
  t.after(() => clients.forEach((c) => c.close()));
  const first = await Promise.all(clients.map((c) => unary(c, {})));
  assert.deepEqual(
    first.map((r) => r.err?.code ?? 0),
    Array(8).fill(0),
  );
  const peers = new Set(first.map((r) => r.res?.peer));
  assert.equal(peers.size, 2, `backend peers: ${[...peers].join(' ')}`);

  // A worker dies: the primary restarts it; connections to the dead one fail over on reconnect.
  const workerPids = (await import('node:child_process'))
    .execFileSync('pgrep', ['-P', String(p.child.pid)], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .map(Number);
  assert.equal(workerPids.length, 2, `workers: ${workerPids.join(',')}`);
  process.kill(workerPids[0] as number, 'SIGKILL');
  await until(() => p.stderr().includes('restarting it'), 30_000, 50).catch(() => {});
  assert.match(p.stderr(), new RegExp(`worker ${workerPids[0]} exited \\(SIGKILL\\); restarting it`));
  const fresh = Array.from({ length: 4 }, () => newJsonClient(p.address));
  t.after(() => fresh.forEach((c) => c.close()));
  await until(() => p.lines.some((l) => l.endsWith('listening (a replacement)')), 30_000, 50).catch(() => {});
  assert.ok(
    p.lines.some((l) => l.endsWith('listening (a replacement)')),
    p.lines.join('\n'),
  );
  const again = await Promise.all(fresh.map((c) => unary(c, {}, { deadlineMs: 30_000 })));
  assert.deepEqual(
    again.map((r) => r.err?.code ?? 0),
    Array(4).fill(0),
  );

  // SIGTERM: RPCs in flight on every worker finish, then the primary exits 0.
  const slow = clients.map((c) => unary(c, { delayMs: 400 }, { deadlineMs: 60_000 }));
  // SIGTERM once all eight are in flight at the backend, however long reconnecting took.
  await until(() => b.inFlight === 8, 30_000);
  p.child.kill('SIGTERM');
  const results = await Promise.all(slow);
  const code = await p.exited;
  assert.equal(code, 0, `${p.stderr()}\n${p.lines.join('\n')}`);
  // Clients of the killed worker reconnected to a live one; every RPC in flight at SIGTERM finished.
  assert.deepEqual(
    results.map((r) => r.err?.code ?? 0),
    Array(8).fill(0),
    JSON.stringify(results.map((r) => r.err?.details)),
  );
  assert.ok(p.lines.includes('grpc-kube proxy: all 2 workers stopped'), p.lines.join('\n'));
});

test('grpc-kube proxy --workers 2: a signal to the whole process group (Ctrl-C, systemd) drains, with the drain delay, and exits 0', async (t) => {
  const b = await startJsonServer('b0', '127.0.0.1');
  t.after(() => b.kill());
  // The drain delay must outlast reading the log line and sending the RPCs below: generous, so a stall
  // of a few seconds does not land those RPCs after it.
  const p = await proxyProcess(t, [b.port], ['--workers', '2', '--drain-delay-ms', '6000'], true);
  const clients = Array.from({ length: 4 }, () => newJsonClient(p.address));
  t.after(() => clients.forEach((c) => c.close()));
  assert.deepEqual(
    (await Promise.all(clients.map((c) => unary(c, {})))).map((r) => r.err?.code ?? 0),
    Array(4).fill(0),
  );
  const slow = clients.map((c) => unary(c, { delayMs: 400 }, { deadlineMs: 60_000 }));
  await until(() => b.inFlight === 4, 30_000);
  const signalledAt = Date.now();
  // Every process of the group gets it: the primary and both workers.
  process.kill(-(p.child.pid as number), 'SIGTERM');
  await until(() => p.lines.filter((l) => l.includes('serving 6000 ms more')).length === 2, 30_000);
  // Within the drain delay the workers still serve new RPCs on the connections they have.
  const during = await Promise.all(clients.map((c) => unary(c, {}, { deadlineMs: 30_000 })));
  const results = await Promise.all(slow);
  const code = await p.exited;
  const out = `${p.stderr()}\n${p.lines.join('\n')}`;
  assert.equal(code, 0, out);
  assert.ok(Date.now() - signalledAt >= 6000, `exited before the drain delay was over\n${out}`);
  assert.deepEqual(
    [...results, ...during].map((r) => r.err?.code ?? 0),
    Array(8).fill(0),
  );
  assert.equal(p.lines.filter((l) => l.startsWith('grpc-kube proxy: stopped after')).length, 2, out);
  assert.ok(p.lines.includes('grpc-kube proxy: all 2 workers stopped'), out);
});

test('grpc-kube proxy --workers: a bad count is a typed error, a worker that cannot listen stops them all', async (t) => {
  await assert.rejects(proxyCommand([...STATIC_INGRESS, '--workers', '0']), {
    code: 'GK_ERR_INVALID_OPTION',
    field: '--workers',
  });
  // Workers run main.js with the primary's node flags, less the ones that run inline code.
  assert.deepEqual(
    workerExecArgv([
      '--max-old-space-size=512',
      '--input-type=module',
      '-e',
      'code',
      '--',
      '--enable-source-maps',
    ]),
    ['--max-old-space-size=512', '--enable-source-maps'],
  );
  // The port is taken: every worker fails to listen, and the primary says so and exits 1.
  const holder = await startJsonServer('holder', '127.0.0.1');
  t.after(() => holder.kill());
  const p = spawnProxy(t, [
    '--mode',
    'ingress',
    '--listen',
    `127.0.0.1:${holder.port}`,
    '--target',
    'a.b:1',
    '--static',
    'a.b:1=127.0.0.1:1',
    '--workers',
    '2',
  ]);
  const code = await p.exited;
  const stderr = p.stderr();
  assert.equal(code, 1);
  assert.match(stderr, /EADDRINUSE/);
  assert.match(stderr, /GK_ERR_PROXY_WORKER: a proxy worker exited \(code 1\) before listening/);
});

test(
  'grpc-kube proxy --data-plane nghttpx: RPCs through nghttpx, SIGTERM drains it; node-only flags are typed errors',
  { skip: existsSync(DEFAULT_NGHTTPX) ? false : 'nghttpx not found: apt-get install -y nghttp2-proxy' },
  async (t) => {
    const bs = [await startJsonServer('x0', '127.0.0.1'), await startJsonServer('x1', '127.0.0.1')];
    t.after(() => bs.forEach((b) => b.kill()));
    const p = await proxyProcess(
      t,
      bs.map((b) => b.port),
      ['--data-plane', 'nghttpx'],
    );
    assert.ok(
      p.lines.some((l) => l.includes('(data plane nghttpx, 1 workers)')),
      p.lines.join('\n'),
    );
    const client = newJsonClient(p.address);
    t.after(() => client.close());
    const served = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await unary(client, {});
      assert.equal(r.err, undefined, r.err?.details);
      served.add(r.res?.server ?? '');
    }
    assert.deepEqual([...served].sort(), ['x0', 'x1']);
    const slow = unary(client, { delayMs: 300 }, { deadlineMs: 60_000 });
    await until(() => bs.some((b) => b.inFlight === 1), 30_000);
    p.child.kill('SIGTERM');
    assert.equal((await slow).err, undefined, 'the RPC in flight finished');
    assert.equal(await p.exited, 0, p.stderr());

    for (const extra of [['--policy', 'p2c'], ['--grpc-routes'], ['--max-attempts', '2']]) {
      await assert.rejects(proxyCommand([...STATIC_INGRESS, '--data-plane', 'nghttpx', ...extra]), {
        code: 'GK_ERR_INVALID_OPTION',
        field: '--data-plane',
      });
    }
    await assert.rejects(
      proxyCommand(['--mode', 'sidecar', '--static', 'a.b:1=127.0.0.1:1', '--data-plane', 'envoy']),
      { code: 'GK_ERR_INVALID_OPTION', field: '--data-plane' },
    );
  },
);

test(
  'grpc-kube proxy --data-plane nghttpx: when nghttpx dies, the proxy exits 1 with GK_ERR_PROXY_DATA_PLANE',
  {
    skip: existsSync(DEFAULT_NGHTTPX) ? false : 'nghttpx not found: apt-get install -y nghttp2-proxy',
    // A proxy that outlives its data plane never exits: fail then, rather than hang the suite.
    timeout: 120_000,
  },
  async (t) => {
    const b = await startJsonServer('x0', '127.0.0.1');
    t.after(() => b.kill());
    const p = await proxyProcess(t, [b.port], ['--data-plane', 'nghttpx']);
    const client = newJsonClient(p.address);
    t.after(() => client.close());
    assert.equal((await unary(client, {})).res?.server, 'x0');
    // nghttpx is this proxy's child (its workers are threads): kill it as the OOM killer would.
    const nghttpx = (await import('node:child_process'))
      .execFileSync('pgrep', ['-P', String(p.child.pid), '-x', 'nghttpx'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map(Number);
    assert.equal(nghttpx.length, 1, `nghttpx children: ${nghttpx.join(',')}`);
    process.kill(nghttpx[0] as number, 'SIGKILL');
    assert.equal(await p.exited, 1, p.stderr());
    assert.match(p.stderr(), /GK_ERR_PROXY_DATA_PLANE: nghttpx exited \(SIGKILL\)/);
    // Once, from the command's failure, not also from the data plane's error callback.
    assert.equal(p.stderr().match(/GK_ERR_PROXY_DATA_PLANE/g)?.length, 1, p.stderr());
  },
);

test('grpc-kube proxy TLS flags: halves of a pair and missing files are typed errors', async () => {
  await assert.rejects(proxyCommand([...STATIC_INGRESS, '--tls-cert', '/nonexistent.crt']), {
    code: 'GK_ERR_INVALID_OPTION',
    field: '--tls-cert',
  });
  await assert.rejects(proxyCommand([...STATIC_INGRESS, '--backend-tls-ca', '/nonexistent.crt']), {
    code: 'GK_ERR_INVALID_OPTION',
    field: '--backend-tls-cert',
  });
  await assert.rejects(
    proxyCommand([...STATIC_INGRESS, '--tls-cert', '/nonexistent.crt', '--tls-key', '/nonexistent.key']),
    { code: 'GK_ERR_TLS' },
  );
});
