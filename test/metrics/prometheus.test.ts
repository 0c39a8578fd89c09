// A real Prometheus (Debian's package) scrapes `grpc-kube proxy --metrics-address` and a running
// `grpc-kube xds serve --metrics-address` (its own process, as users run it), and PromQL over its
// HTTP API returns the series each recorded: the whole path a user's dashboard takes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { proxyCommand } from '@grpc-kube/cli/internal/proxy.js';
import { freePorts } from 'grpc-kube/internal/net/ports.js';
import { LDS } from '@grpc-kube/xds/internal/protos.js';
import { startApi, until } from '../helpers/kube.js';
import { openAds } from '../xds/fixture.js';
import { newJsonClient, startJsonServer, unary } from '../proxy/fixtures/json-service.js';

const PROMETHEUS = '/usr/bin/prometheus';
const CLI = fileURLToPath(new URL('../../../packages/cli/dist/src/main.js', import.meta.url));

/** `grpc-kube xds serve --metrics-address` in a child process; resolves with its two addresses. */
async function startXdsServe(
  kubeconfig: string,
): Promise<{ ads: string; metrics: string; stop(): Promise<void> }> {
  const child = spawn(
    process.execPath,
    [CLI, 'xds', 'serve', '--kubeconfig', kubeconfig, '--port', '0', '--metrics-address', '127.0.0.1:0'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let metrics = '';
  const ads = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (l) => {
      metrics ||= /metrics at http:\/\/(\S+)\/metrics/.exec(l)?.[1] ?? '';
      const a = /ADS listening on (\S+)/.exec(l)?.[1];
      if (a !== undefined) resolve(a);
    });
    void exited.then(() => reject(new Error(`xds serve exited: ${stderr}`)));
  });
  return {
    ads,
    metrics,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

function prometheusSkip(): string | false {
  if (existsSync(PROMETHEUS)) return false;
  if (process.getuid?.() === 0) {
    const script = fileURLToPath(new URL('../../../scripts/install-deps.sh', import.meta.url));
    spawnSync('bash', [script], { stdio: 'inherit' });
    if (existsSync(PROMETHEUS)) return false;
  }
  return `${PROMETHEUS} not found: install Debian's prometheus (scripts/install-deps.sh as root)`;
}

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

async function query(api: string, promql: string): Promise<Sample[]> {
  const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await res.json()) as { status: string; data?: { result: Sample[] }; error?: string };
  if (body.status !== 'success') throw new Error(`${promql}: ${body.error ?? res.status}`);
  return body.data?.result ?? [];
}

test(
  'Prometheus scrapes proxy and xds serve --metrics-address; PromQL returns requests by status and backend, and the xDS clients and ACKs',
  { skip: prometheusSkip() },
  async (t) => {
    const backends = [];
    for (let i = 0; i < 2; i++) {
      const s = await startJsonServer(`b${i}`, `127.0.14.${i + 1}`);
      t.after(() => s.kill());
      backends.push(s);
    }
    const lines: string[] = [];
    const stop = new AbortController();
    let listening: (address: string) => void = () => {};
    const proxyAddress = new Promise<string>((resolve) => (listening = resolve));
    const done = proxyCommand(
      [
        '--mode',
        'ingress',
        '--listen',
        '127.0.0.1:0',
        '--target',
        'app.prod:9000',
        '--static',
        `app.prod:9000=${backends.map((b) => b.address).join(',')}`,
        '--metrics-address',
        '127.0.0.1:0',
      ],
      { signal: stop.signal, out: (l) => lines.push(l), onListening: (p) => listening(p.address) },
    );
    t.after(async () => {
      stop.abort();
      await done;
    });
    const client = newJsonClient(await proxyAddress);
    t.after(() => client.close());
    const metricsAt = /metrics at http:\/\/(\S+)\/metrics/.exec(lines.join('\n'))?.[1];
    assert.ok(metricsAt, lines.join('\n'));
    for (let i = 0; i < 20; i++) assert.equal((await unary(client, { payload: 'x' })).err, undefined);
    for (let i = 0; i < 3; i++)
      assert.equal(
        (await unary(client, { fail: { code: grpc.status.NOT_FOUND, message: 'no' } })).err?.code,
        grpc.status.NOT_FOUND,
      );
    const scrape = await (await fetch(`http://${metricsAt}/metrics`)).text();
    const excerpt = scrape
      .split('\n')
      .filter((l) => l.startsWith('grpc_kube_proxy_request') && !l.includes('_bucket'))
      .join('\n');
    t.diagnostic(`scrape excerpt:\n${excerpt}`);

    // The xDS control plane, with one client that has ACKed one Listener.
    const kube = await startApi();
    t.after(() => kube.stop());
    const dir0 = await mkdtemp(join(tmpdir(), 'grpc-kube-prometheus-kc-'));
    t.after(() => rm(dir0, { recursive: true, force: true }));
    const kubeconfig = join(dir0, 'kubeconfig');
    await writeFile(kubeconfig, kube.kubeConfigYaml());
    const xds = await startXdsServe(kubeconfig);
    t.after(() => xds.stop());
    assert.ok(xds.metrics !== '', 'xds serve printed its metrics address');
    const ads = openAds(xds.ads);
    t.after(() => ads.close());
    ads.send({ type: LDS, names: ['hello.default:50051'], nodeId: 'prom-node' });
    const r = await ads.next();
    ads.send({ type: LDS, names: ['hello.default:50051'], nonce: r.nonce, version: r.version_info });

    const dir = await mkdtemp(join(tmpdir(), 'grpc-kube-prometheus-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const config = join(dir, 'prometheus.yml');
    await writeFile(
      config,
      [
        'global:',
        // A stalled scrape marks the series stale until the next one: the queries below read the last
        // value of the past minutes (the counters were final before the first scrape), so one slow
        // scrape cannot empty them.
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        'scrape_configs:',
        '  - job_name: grpc-kube-proxy',
        '    static_configs:',
        `      - targets: ['${metricsAt}']`,
        '  - job_name: grpc-kube-xds',
        '    static_configs:',
        `      - targets: ['${xds.metrics}']`,
        '',
      ].join('\n'),
    );
    const [webPort] = await freePorts(1);
    const api = `http://127.0.0.1:${webPort}`;
    const prom = spawn(
      PROMETHEUS,
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${webPort}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    prom.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolve) => prom.once('exit', () => resolve()));
    t.after(async () => {
      prom.kill('SIGTERM');
      await exited;
    });

    // Until the first scrape is stored (bounded; the assertions below are on values, not time).
    await until(
      async () => {
        try {
          return (
            (await query(api, 'sum(grpc_kube_proxy_requests_total)')).length > 0 &&
            (await query(api, 'grpc_kube_xds_acks_total')).length > 0
          );
        } catch {
          return false;
        }
      },
      60_000,
      250,
    ).catch((err: Error) => assert.fail(`${err.message}; prometheus said: ${stderr}`));

    const up = await query(api, 'max_over_time(up{job="grpc-kube-proxy"}[5m])');
    assert.equal(up[0]?.value[1], '1');
    const byStatus = Object.fromEntries(
      (await query(api, 'sum by (grpc_status) (last_over_time(grpc_kube_proxy_requests_total[5m]))')).map(
        (s) => [s.metric.grpc_status, Number(s.value[1])],
      ),
    );
    assert.deepEqual(byStatus, { OK: 20, NOT_FOUND: 3 });
    const byBackend = Object.fromEntries(
      (
        await query(api, 'sum by (grpc_kube_backend) (last_over_time(grpc_kube_proxy_requests_total[5m]))')
      ).map((s) => [s.metric.grpc_kube_backend, Number(s.value[1])]),
    );
    assert.deepEqual(byBackend, Object.fromEntries(backends.map((b) => [b.address, b.started.Unary ?? 0])));
    const count = await query(api, 'sum(last_over_time(grpc_kube_proxy_request_duration_count[5m]))');
    assert.equal(count[0]?.value[1], '23');

    assert.equal((await query(api, 'max_over_time(up{job="grpc-kube-xds"}[5m])'))[0]?.value[1], '1');
    const clients = await query(api, 'last_over_time(grpc_kube_xds_clients{job="grpc-kube-xds"}[5m])');
    t.diagnostic(`PromQL grpc_kube_xds_clients{job="grpc-kube-xds"} → ${JSON.stringify(clients)}`);
    assert.equal(clients.length, 1);
    assert.equal(clients[0]?.value[1], '1');
    const acks = await query(
      api,
      'sum by (xds_node, xds_type) (last_over_time(grpc_kube_xds_acks_total{job="grpc-kube-xds"}[5m]))',
    );
    t.diagnostic(`PromQL sum by (xds_node, xds_type) (grpc_kube_xds_acks_total) → ${JSON.stringify(acks)}`);
    assert.deepEqual(
      acks.map((a) => [a.metric.xds_node, a.metric.xds_type, a.value[1]]),
      [['prom-node', LDS, '1']],
    );
  },
);
