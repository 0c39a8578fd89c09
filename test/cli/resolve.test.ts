import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveCommand } from '@grpc-kube/cli/internal/resolve.js';
import { SliceWriter, startApi, until } from '../helpers/kube.js';

const clock = () => new Date('2026-11-23T12:00:00.000Z');

async function kubeconfigFile(t: { after(fn: () => unknown): void }, yaml: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-resolve-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'kubeconfig');
  await writeFile(file, yaml);
  return file;
}

test('grpc-kube resolve prints the set, then every change with a timestamp, like kubectl get -w', async (t) => {
  const api = await startApi();
  t.after(() => api.close());
  const w = new SliceWriter(api, 'hello', 50051);
  w.put('hello-a', [
    { ip: '10.1.0.1', pod: 'hello-1' },
    { ip: '10.1.0.2', pod: 'hello-2' },
  ]);
  const lines: string[] = [];
  const ac = new AbortController();
  const done = resolveCommand({
    target: 'kubernetes:///hello.default:50051',
    kubeconfig: await kubeconfigFile(t, api.kubeConfigYaml()),
    out: (l) => lines.push(l),
    now: clock,
    signal: ac.signal,
  });
  await until(() => lines.some((l) => l.includes('SYNC')));
  w.put('hello-a', [
    { ip: '10.1.0.1', pod: 'hello-1', ready: false, serving: true, terminating: true },
    { ip: '10.1.0.2', pod: 'hello-2' },
    { ip: '10.1.0.3', pod: 'hello-3' },
  ]);
  await until(() => lines.some((l) => l.includes('CHANGED')) && lines.some((l) => l.includes('ADDED')));
  w.remove('hello-a');
  await until(() => lines.filter((l) => l.includes('REMOVED')).length === 3);
  ac.abort();
  assert.equal(await done, 0);
  const text = lines.join('\n');
  assert.match(
    text,
    /^2026-11-23T12:00:00.000Z {2}WATCH {4}Service default\/hello on http:\/\/127\.0\.0\.1:\d+$/m,
  );
  assert.match(
    text,
    /SYNC {5}2 endpoints \(2 ready\)\n {4}10\.1\.0\.1:50051 +ready +hello-1\n {4}10\.1\.0\.2:50051 +ready +hello-2/,
  );
  assert.match(text, /ADDED {4}10\.1\.0\.3:50051 +ready +hello-3/);
  assert.match(text, /CHANGED {2}10\.1\.0\.1:50051 +draining +hello-1 +\(was ready\)/);
});

test('grpc-kube resolve --once: a 403 prints the typed error and exits 1', async (t) => {
  const api = await startApi();
  t.after(() => api.close());
  api.addToken('nobody', { user: 'nobody', rules: [] });
  const lines: string[] = [];
  const code = await resolveCommand({
    target: 'kubernetes://default/hello:grpc',
    kubeconfig: await kubeconfigFile(t, api.kubeConfigYaml('nobody')),
    once: true,
    out: (l) => lines.push(l),
    now: clock,
  });
  assert.equal(code, 1);
  assert.match(lines.join('\n'), /ERROR {4}GK_ERR_KUBE_FORBIDDEN: RBAC forbids "list" on endpointslices/);
});

test('grpc-kube resolve rejects a target it cannot parse with GK_ERR_INVALID_TARGET', async () => {
  await assert.rejects(
    resolveCommand({ target: 'http://x', out: () => {} }),
    (e: { code?: string }) => e.code === 'GK_ERR_INVALID_TARGET',
  );
  await assert.rejects(
    resolveCommand({ target: 'kubernetes:///hello', out: () => {} }),
    (e: { code?: string }) => e.code === 'GK_ERR_INVALID_TARGET',
  );
});
