import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  computeRunRecord,
  distinctPodsPerClient,
  podRateSeries,
  recordsFromRows,
  type EndpointSeries,
  type PodTimeline,
  type RpcRow,
} from '@grpc-kube/lab/internal/lab/metrics.js';
import { renderReport, type ReportRun } from '@grpc-kube/lab/internal/lab/report.js';
import { chromiumSkip, openFile } from '../helpers/chromium.js';

const DURATION_MS = 10_000;

type Route = (tick: number, k: number) => string;

/** A synthetic run: 10 RPCs every 20 ms for 10 s, routed by `route`; `fail(tick)` marks failures. */
function syntheticRun(
  scenario: string,
  strategy: string,
  timeline: PodTimeline[],
  route: Route,
  events: { atMs: number; label: string }[],
  fail: (tick: number, k: number) => boolean = () => false,
): ReportRun {
  const rows: RpcRow[] = [];
  for (let tick = 0; tick < DURATION_MS / 20; tick++) {
    for (let k = 0; k < 10; k++) {
      const failed = fail(tick, k);
      rows.push({
        tMs: tick * 20,
        pod: failed ? '' : route(tick, k),
        code: failed ? 'UNAVAILABLE' : 'OK',
        latencyMs: 1 + ((tick * 7 + k) % 5),
        client: k % 2,
      });
    }
  }
  const records = recordsFromRows(rows);
  const steady: [number, number] = [6000, 10_000];
  return {
    record: computeRunRecord({
      scenario,
      strategy,
      records,
      timeline,
      steadyWindowMs: steady,
      durationMs: DURATION_MS,
    }),
    series: podRateSeries(records, { endMs: DURATION_MS, podOrder: timeline.map((p) => p.name) }),
    events,
    steadyWindowMs: steady,
    podsPerClient: distinctPodsPerClient(records, 2),
  };
}

function pod(
  name: string,
  readyAtMs: number,
  isNew: boolean,
  terminatingAtMs: number | null = null,
): PodTimeline {
  return { name, readyAtMs, terminatingAtMs, goneAtMs: terminatingAtMs, isNew };
}

/** Per-endpoint gauges of a run, sampled every 250 ms: each pod's outstanding RPCs and latency. */
function endpointCurves(pods: readonly string[]): EndpointSeries {
  const tMs = Array.from({ length: DURATION_MS / 250 }, (_, i) => i * 250);
  return {
    policy: 'grpc_kube_ewma',
    tMs,
    endpoints: pods.map((p, k) => ({
      endpoint: `10.0.0.${k + 1}:8080`,
      label: p,
      // The last pod joins half way: no value before.
      outstanding: tMs.map((t) => (k === pods.length - 1 && t < 5000 ? null : 1 + ((t / 250 + k) % 4))),
      latencyMs: tMs.map((t) => (k === pods.length - 1 && t < 5000 ? null : 2 + k + (t % 1000) / 500)),
    })),
  };
}

function syntheticRuns(): ReportRun[] {
  const scaleUp = [pod('hello-1', 0, false), pod('hello-2', 0, false), pod('hello-3', 0, false)];
  scaleUp.push(pod('hello-4', 5000, true), pod('hello-5', 5000, true));
  const scaleEvents = [{ atMs: 4500, label: 'scale to 5' }];
  const kill = [
    pod('p-1', 0, false),
    pod('p-2', 0, false, 4000),
    pod('p-3', 0, false),
    pod('p-4', 6000, true),
  ];
  const killEvents = [
    { atMs: 4000, label: 'SIGKILL p-2' },
    { atMs: 6000, label: 'p-4 Ready' },
  ];
  return [
    syntheticRun(
      'scale-up',
      'clusterip',
      scaleUp,
      (_t, k) => (k % 2 === 0 ? 'hello-2' : 'hello-3'),
      scaleEvents,
    ),
    syntheticRun(
      'scale-up',
      'headless-dns-round-robin',
      scaleUp,
      (t, k) => `hello-${((t + k) % 3) + 1}`,
      scaleEvents,
    ),
    {
      ...syntheticRun(
        'scale-up',
        'kubernetes',
        scaleUp,
        (t, k) => `hello-${((t + k) % (t * 20 >= 5040 ? 5 : 3)) + 1}`,
        scaleEvents,
      ),
      endpoints: endpointCurves(['hello-1', 'hello-2', 'hello-3', 'hello-4']),
    },
    syntheticRun(
      'pod-kill',
      'headless-pick-first',
      kill,
      (t) => (t * 20 < 4000 ? 'p-2' : 'p-1'),
      killEvents,
      (t) => t * 20 >= 4000 && t * 20 < 4300,
    ),
    syntheticRun(
      'pod-kill',
      'kubernetes',
      kill,
      (t, k) => {
        const live =
          t * 20 < 4000 ? ['p-1', 'p-2', 'p-3'] : t * 20 < 6000 ? ['p-1', 'p-3'] : ['p-1', 'p-3', 'p-4'];
        return live[(t + k) % live.length] as string;
      },
      killEvents,
      (t, k) => t * 20 === 4000 && k < 3,
    ),
  ];
}

test('renderReport: self-contained, one plot per run, one line per pod, escaped text', () => {
  const runs = syntheticRuns();
  const html = renderReport(runs, { title: 'lab <test>', command: 'grpc-kube lab --quick', seed: 7 });
  assert.match(html, /^<!DOCTYPE html>/);
  assert.doesNotMatch(
    html,
    /<script|<link|<img|<iframe|\ssrc=|url\((?!#)/i,
    'no external or scripted resource',
  );
  assert.equal(html.match(/<svg class="plot"/g)?.length, 5);
  assert.equal(html.match(/<path class="series"/g)?.length, 5 + 5 + 5 + 4 + 4);
  assert.equal(html.match(/<path class="failed"/g)?.length, 2);
  assert.equal(html.match(/<g class="event">/g)?.length, 3 + 2 * 2);
  // Share bars: pods that served anything (clusterip 2, dns 3, kubernetes 5, pick-first 2, kubernetes 4).
  assert.equal(html.match(/<rect class="share-seg"/g)?.length, 2 + 3 + 5 + 2 + 4);
  // Per-endpoint curves under the one run that has them: outstanding and latency, a line per endpoint.
  assert.equal(html.match(/<svg class="endpoints" data-kind="outstanding"/g)?.length, 1);
  assert.equal(html.match(/<svg class="endpoints" data-kind="latencyMs"/g)?.length, 1);
  assert.equal(html.match(/<path class="endpoint-series"/g)?.length, 4 + 4);
  // The endpoint that joined half way starts there: its line begins at the 5 s mark.
  const late = /<path class="endpoint-series" data-endpoint="10\.0\.0\.4:8080" d="M([\d.]+) /.exec(html);
  assert.ok(late && Number(late[1]) > 46 + (560 - 46 - 12) * 0.49, late?.[1]);
  assert.ok(html.includes('lab &#60;test&#62;'));
  assert.ok(!html.includes('lab <test>'));
  // Summary numbers from the records: headless-dns never reached the two new pods.
  const dns = runs[1]!.record;
  assert.equal(dns.newPodsNeverServed, 2);
  assert.equal(runs[2]!.record.newPodsNeverServed, 0);
  assert.deepEqual(runs[0]!.podsPerClient, [1, 1]);
});

test(
  'the report renders in headless Chromium: every plot drawn, no console error, screenshot saved',
  {
    skip: chromiumSkip(),
    timeout: 120_000,
  },
  async (t) => {
    // Kept after the test (overwritten by the next run) so the screenshot can be looked at.
    const dir = process.env['GRPC_KUBE_REPORT_DIR'] ?? join(tmpdir(), 'grpc-kube-lab-report');
    await mkdir(dir, { recursive: true });
    const runs = syntheticRuns();
    const file = join(dir, 'report.html');
    await writeFile(file, renderReport(runs, { command: 'grpc-kube lab --quick', seed: 1 }));
    const { page, errors, foreign } = await openFile(file, t);

    const drawn = await page.evaluate(() => {
      const plots = [...document.querySelectorAll('svg.plot')];
      return plots.map((svg) => {
        const box = svg.getBoundingClientRect();
        const series = [...svg.querySelectorAll<SVGPathElement>('path.series')];
        return {
          width: box.width,
          height: box.height,
          series: series.length,
          drawnSeries: series.filter((p) => p.getTotalLength() > 100 && p.getBBox().width > 100).length,
          events: svg.querySelectorAll('g.event').length,
        };
      });
    });
    assert.deepEqual(
      drawn.map((d) => [d.series, d.drawnSeries, d.events]),
      [
        [5, 5, 1],
        [5, 5, 1],
        [5, 5, 1],
        [4, 4, 2],
        [4, 4, 2],
      ],
    );
    for (const d of drawn) assert.ok(d.width >= 500 && d.height >= 200, `plot ${d.width}×${d.height}`);
    const curves = await page.evaluate(() =>
      [...document.querySelectorAll('svg.endpoints')].map((svg) => {
        const paths = [...svg.querySelectorAll<SVGPathElement>('path.endpoint-series')];
        return [
          svg.getAttribute('data-kind'),
          paths.length,
          paths.filter((p) => p.getTotalLength() > 100 && p.getBBox().width > 100).length,
        ];
      }),
    );
    assert.deepEqual(curves, [
      ['outstanding', 4, 4],
      ['latencyMs', 4, 4],
    ]);
    assert.equal(await page.locator('table.summary').count(), 3, 'the overall table and one per scenario');
    assert.equal(await page.locator('table.summary').first().locator('tbody tr').count(), 5);
    assert.deepEqual(errors, []);
    assert.deepEqual(foreign, []);

    const shot = join(dir, 'report.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(existsSync(shot));
    t.diagnostic(`report: ${file}`);
    t.diagnostic(`screenshot: ${shot}`);
  },
);

test('renderReport: a run from a deploy/ overlay (lab --manifests) names it in the table and its plot', () => {
  const [run, ...rest] = syntheticRuns();
  assert.ok(run);
  const html = renderReport([{ ...run, record: { ...run.record, overlay: 'deploy/kubernetes' } }, ...rest], {
    title: 't',
    command: 'grpc-kube lab --manifests',
    seed: 1,
  });
  const name = run.record.strategy;
  assert.ok(html.includes(`<td>${name}<br><small>deploy/kubernetes</small></td>`));
  assert.ok(html.includes(`<figcaption>${name} (deploy/kubernetes)</figcaption>`));
  assert.doesNotMatch(renderReport(syntheticRuns(), { title: 't', command: 'c', seed: 1 }), /deploy\//);
});
