// The CLI's metrics flags as users run them: `xds serve --metrics-address` serves Prometheus text at
// /metrics while clients talk ADS, and `lab --metrics FILE` writes every component's series at the
// end of a run (in its own process, as `grpc-kube lab`).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { xdsCommand } from '@grpc-kube/cli/internal/xds.js';
import { LDS } from '@grpc-kube/xds/internal/protos.js';
import { startApi, until } from '../helpers/kube.js';
import { openAds } from '../xds/fixture.js';

const CLI = fileURLToPath(new URL('../../../packages/cli/dist/src/main.js', import.meta.url));

test('xds serve --metrics-address serves ACKs per node and the clients gauge at /metrics, 404 elsewhere', async (t) => {
  const api = await startApi();
  t.after(() => api.stop());
  const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-metrics-cli-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const kc = join(dir, 'kubeconfig');
  await writeFile(kc, api.kubeConfigYaml());
  const ac = new AbortController();
  const out: string[] = [];
  let address = '';
  const done = xdsCommand(['serve', '--kubeconfig', kc, '--port', '0', '--metrics-address', '127.0.0.1:0'], {
    out: (l) => out.push(l),
    err: () => {},
    signal: ac.signal,
    onListening: (a) => (address = a),
  });
  t.after(async () => {
    ac.abort();
    await done;
  });
  await until(() => address !== '');
  const metricsAt = /metrics at http:\/\/(\S+)\/metrics/.exec(out.join('\n'))?.[1];
  assert.ok(metricsAt, out.join('\n'));
  const s = openAds(address);
  t.after(() => s.close());
  s.send({ type: LDS, names: ['hello.default:50051'], nodeId: 'cli-node' });
  const r = await s.next();
  s.send({ type: LDS, names: ['hello.default:50051'], nonce: r.nonce, version: r.version_info });
  let text = '';
  await until(
    async () => {
      text = await (await fetch(`http://${metricsAt}/metrics`)).text();
      return text.includes('grpc_kube_xds_acks_total{');
    },
    30_000,
    20,
  );
  assert.match(text, /^grpc_kube_xds_acks_total\{xds_type="[^"]+Listener",xds_node="cli-node"[^}]*\} 1$/m);
  assert.match(text, /^grpc_kube_xds_clients\{[^}]*\} 1$/m);
  assert.equal((await fetch(`http://${metricsAt}/other`)).status, 404);
});

test('lab --metrics FILE writes the resolver and balancer series of the run in Prometheus text', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-metrics-lab-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'metrics.prom');
  const args = [
    CLI,
    'lab',
    '--quick',
    '--scenario',
    'scale-up',
    '--strategy',
    'kubernetes-p2c',
    '--metrics',
    file,
  ];
  const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('exit', (c) => resolve({ code: c, stderr: err }));
  });
  assert.equal(code, 0, stderr.slice(-3000));
  const text = await readFile(file, 'utf8');
  t.diagnostic(
    text
      .split('\n')
      .filter((l) => /^grpc_kube_(resolver_endpoints|balancer_picks_total)\{/.test(l))
      .slice(0, 8)
      .join('\n'),
  );
  assert.match(text, /^grpc_kube_resolver_list_started_total\{[^}]*\} [1-9]/m);
  assert.match(text, /^grpc_kube_resolver_endpoints\{[^}]*grpc_kube_endpoint_state="ready"[^}]*\} [0-9]/m);
  const picks = [
    ...text.matchAll(
      /^grpc_kube_balancer_picks_total\{[^}]*grpc_kube_policy="grpc_kube_p2c"[^}]*\} (\d+)$/gm,
    ),
  ];
  assert.ok(picks.length >= 2, `picks on at least two pods:\n${picks.map((m) => m[0]).join('\n')}`);
  assert.ok(picks.reduce((n, m) => n + Number(m[1]), 0) > 0);
});
