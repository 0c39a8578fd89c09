// The lab report (`grpc-kube lab --report FILE.html`): one self-contained HTML page — no external
// resource, no script — with, per scenario, the per-pod RPC rate over time of every strategy (inline
// SVG, one line per pod, markers for the scenario's events) and the summary table of docs/figures.md.
// Runs whose balancer reports per-endpoint gauges (grpc_kube_p2c, grpc_kube_ewma) also get that
// policy's outstanding RPCs and latency estimate per endpoint over time, sampled from the metrics.

import type { EndpointSeries, LabRunRecord, Percentiles, RateSeries } from './metrics.js';
import { SATURATION_ADVICE, type HarnessSeries } from './harness.js';

export interface ScenarioEvent {
  /** ms from run start, on the same clock as the RPC records. */
  atMs: number;
  label: string;
}

export interface ReportRun {
  record: LabRunRecord;
  series: RateSeries;
  events?: readonly ScenarioEvent[];
  /** Shaded on the plot: the window balanceMaxOverMean was measured over. */
  steadyWindowMs?: readonly [number, number];
  /** Distinct pods reached per client (the clusterip finding), shown under the plot. */
  podsPerClient?: readonly number[];
  /** The lab's own load over the run (event-loop delay of the client process, machine CPU). */
  harness?: HarnessSeries;
  /** Per-endpoint balancer gauges sampled during the run (policies that report them). */
  endpoints?: EndpointSeries;
}

export interface ReportMeta {
  title?: string;
  /** ISO time; default now. */
  generatedAt?: string;
  /** The command line that produced the runs. */
  command?: string;
  seed?: string | number;
  /** Free lines shown under the title (machine, versions, notes). */
  notes?: readonly string[];
}

const PALETTE = [
  '#4e79a7',
  '#f28e2b',
  '#59a14f',
  '#b07aa1',
  '#edc948',
  '#76b7b2',
  '#ff9da7',
  '#9c755f',
  '#1f3a93',
  '#8cd17d',
  '#d37295',
  '#499894',
];
const FAILED_COLOR = '#e15759';

const W = 560;
const H = 230;
const M = { left: 46, right: 12, top: 14, bottom: 30 };

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

function fmtMs(n: number | null): string {
  if (n === null) return '—';
  return n >= 10 ? String(Math.round(n)) : n.toFixed(1);
}

function fmtPct(p: Percentiles): string {
  return `${fmtMs(p.p50)} / ${fmtMs(p.p99)}`;
}

/** A round axis maximum ≥ v: 1, 2, 5 × 10^k. */
function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function ticks(max: number, count: number): number[] {
  const step = niceMax(max / count);
  const out: number[] = [];
  for (let v = 0; v <= max + 1e-9; v += step) out.push(v);
  return out;
}

function plot(run: ReportRun, yMax: number, index: number): string {
  const s = run.series;
  const spanMs = s.buckets * s.bucketMs;
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const x = (ms: number): number => M.left + ((ms - s.startMs) / spanMs) * iw;
  const y = (v: number): number => M.top + ih - (Math.min(v, yMax) / yMax) * ih;
  const parts: string[] = [];
  const clip = `clip-${index}`;
  parts.push(
    `<clipPath id="${clip}"><rect x="${M.left}" y="${M.top}" width="${iw}" height="${ih}"/></clipPath>`,
  );

  if (run.steadyWindowMs) {
    const [a, b] = run.steadyWindowMs;
    const x0 = Math.max(M.left, x(a));
    const x1 = Math.min(M.left + iw, x(b));
    if (x1 > x0) {
      parts.push(
        `<rect class="steady" x="${x0.toFixed(1)}" y="${M.top}" width="${(x1 - x0).toFixed(1)}" height="${ih}" fill="#f3f3f3"><title>steady window</title></rect>`,
      );
    }
  }
  // Axes and grid.
  for (const v of ticks(yMax, 4)) {
    const yy = y(v).toFixed(1);
    parts.push(`<line x1="${M.left}" x2="${M.left + iw}" y1="${yy}" y2="${yy}" stroke="#e4e4e4"/>`);
    parts.push(
      `<text x="${M.left - 5}" y="${yy}" dy="0.32em" text-anchor="end" class="tick">${fmtInt(v)}</text>`,
    );
  }
  const spanS = spanMs / 1000;
  for (const v of ticks(spanS, 8)) {
    const xx = x(s.startMs + v * 1000).toFixed(1);
    parts.push(`<line x1="${xx}" x2="${xx}" y1="${M.top + ih}" y2="${M.top + ih + 4}" stroke="#888"/>`);
    parts.push(`<text x="${xx}" y="${M.top + ih + 15}" text-anchor="middle" class="tick">${v}s</text>`);
  }
  parts.push(
    `<rect x="${M.left}" y="${M.top}" width="${iw}" height="${ih}" fill="none" stroke="#999"/>`,
    `<text x="12" y="${M.top + ih / 2}" transform="rotate(-90 12 ${M.top + ih / 2})" text-anchor="middle" class="axis">RPC/s per pod</text>`,
  );

  const line = (values: readonly number[]): string => {
    let d = '';
    values.forEach((v, b) => {
      const px = x(s.startMs + (b + 0.5) * s.bucketMs).toFixed(1);
      d += `${b === 0 ? 'M' : 'L'}${px} ${y(v).toFixed(1)}`;
    });
    return d;
  };
  const lines: string[] = [];
  s.pods.forEach((p, i) => {
    const color = PALETTE[i % PALETTE.length] as string;
    lines.push(
      `<path class="series" data-pod="${esc(p.pod)}" d="${line(p.rps)}" fill="none" stroke="${color}" stroke-width="1.6" stroke-opacity="0.9"><title>${esc(p.pod)}</title></path>`,
    );
  });
  if (s.failedRps.some((v) => v > 0)) {
    lines.push(
      `<path class="failed" d="${line(s.failedRps)}" fill="none" stroke="${FAILED_COLOR}" stroke-width="1.4" stroke-dasharray="4 3"><title>failed RPCs</title></path>`,
    );
  }
  parts.push(`<g clip-path="url(#${clip})">${lines.join('')}</g>`);

  for (const ev of run.events ?? []) {
    if (ev.atMs < s.startMs || ev.atMs > s.startMs + spanMs) continue;
    const xx = x(ev.atMs).toFixed(1);
    parts.push(
      `<g class="event"><line x1="${xx}" x2="${xx}" y1="${M.top}" y2="${M.top + ih}" stroke="#333" stroke-dasharray="2 3"/>` +
        `<text x="${xx}" y="${M.top + 10}" dx="3" class="event-label">${esc(ev.label)}</text></g>`,
    );
  }
  return (
    `<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" ` +
    `aria-label="${esc(`${run.record.scenario} / ${run.record.strategy}: RPC rate per pod over time`)}">` +
    parts.join('') +
    '</svg>'
  );
}

/** A bar of each pod's share of the run's successful RPCs: equal rates draw overlapping lines above,
 *  the bar still tells them apart. */
function shareBar(run: ReportRun): string {
  const totals = run.series.pods.map((p) => p.rps.reduce((a, b) => a + b, 0));
  const sum = totals.reduce((a, b) => a + b, 0);
  if (sum === 0) return '';
  const iw = W - M.left - M.right;
  let x = M.left;
  const segs: string[] = [];
  run.series.pods.forEach((p, i) => {
    const share = (totals[i] as number) / sum;
    if (share === 0) return;
    const w = share * iw;
    segs.push(
      `<rect class="share-seg" x="${x.toFixed(1)}" y="2" width="${w.toFixed(1)}" height="12" fill="${PALETTE[i % PALETTE.length]}">` +
        `<title>${esc(p.pod)}: ${(share * 100).toFixed(1)}%</title></rect>`,
    );
    x += w;
  });
  return (
    `<svg class="share" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} 16" width="${W}" height="16" role="img" aria-label="share of RPCs per pod">` +
    `<text x="${M.left - 5}" y="11" text-anchor="end" class="tick">share</text>${segs.join('')}</svg>`
  );
}

const HS = 46; // height of the harness strip

/**
 * The lab's own load under each plot, on the same time axis: bars of the client process's worst
 * event-loop delay per bucket (scaled to the RPC deadline's half, the saturation limit) and a line of
 * the machine's CPU busy %. A dip in the RPC rate with a tall bar under it is the harness, not the
 * strategy.
 */
function harnessStrip(run: ReportRun): string {
  const h = run.harness;
  if (!h || h.loopDelayMaxMs.length === 0) return '';
  const limitMs = h.loopLimitMs;
  const s = run.series;
  const spanMs = s.buckets * s.bucketMs;
  const iw = W - M.left - M.right;
  const top = 4;
  const ih = HS - top - 12;
  const x = (ms: number): number => M.left + ((ms - s.startMs) / spanMs) * iw;
  const bw = Math.max(1, (h.bucketMs / spanMs) * iw - 0.5);
  const parts: string[] = [
    `<rect x="${M.left}" y="${top}" width="${iw}" height="${ih}" fill="none" stroke="#ccc"/>`,
    `<text x="${M.left - 5}" y="${top + ih / 2}" dy="0.32em" text-anchor="end" class="tick">loop</text>`,
  ];
  h.loopDelayMaxMs.forEach((ms, b) => {
    const bx = x(b * h.bucketMs);
    if (bx >= M.left + iw) return;
    const frac = Math.min(ms / limitMs, 1);
    const bh = frac * ih;
    const color = ms >= limitMs ? FAILED_COLOR : ms >= limitMs / 5 ? '#edc948' : '#9fb7cf';
    parts.push(
      `<rect class="loop-delay" x="${bx.toFixed(1)}" y="${(top + ih - bh).toFixed(1)}" width="${bw.toFixed(1)}" height="${bh.toFixed(1)}" fill="${color}"><title>${Math.round(b * h.bucketMs) / 1000}s: event loop ${ms.toFixed(1)} ms late at most</title></rect>`,
    );
  });
  let d = '';
  h.cpuBusyPct.forEach((pct, b) => {
    if (pct === null) return;
    const px = x((b + 0.5) * h.bucketMs);
    if (px > M.left + iw) return;
    d += `${d === '' ? 'M' : 'L'}${px.toFixed(1)} ${(top + ih - (pct / 100) * ih).toFixed(1)}`;
  });
  if (d !== '')
    parts.push(
      `<path class="cpu" d="${d}" fill="none" stroke="#555" stroke-width="1"><title>machine CPU busy %</title></path>`,
    );
  parts.push(
    `<text x="${M.left}" y="${HS - 1}" class="tick">bars: client event-loop delay (full = ${Math.round(limitMs)} ms, the saturation limit) · line: machine CPU busy %</text>`,
  );
  return (
    `<svg class="harness" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${HS}" width="${W}" height="${HS}" role="img" aria-label="lab load over time">` +
    parts.join('') +
    '</svg>'
  );
}

const HE = 120; // height of an endpoint plot

/**
 * One of the per-endpoint plots under the rate plot, on the same time axis: a line per endpoint,
 * coloured as its pod is above, gaps where the endpoint was not in the balancer.
 */
function endpointPlot(run: ReportRun, kind: 'outstanding' | 'latencyMs'): string {
  const e = run.endpoints;
  if (e === undefined || e.tMs.length === 0) return '';
  if (e.endpoints.every((ep) => ep[kind].every((v) => v === null))) return '';
  const s = run.series;
  const spanMs = s.buckets * s.bucketMs;
  const iw = W - M.left - M.right;
  const top = 8;
  const ih = HE - top - 18;
  let max = 0;
  for (const ep of e.endpoints) for (const v of ep[kind]) if (v !== null && v > max) max = v;
  const yMax = niceMax(max);
  const x = (ms: number): number => M.left + ((ms - s.startMs) / spanMs) * iw;
  const y = (v: number): number => top + ih - (Math.min(v, yMax) / yMax) * ih;
  const parts: string[] = [];
  for (const v of ticks(yMax, 2)) {
    const yy = y(v).toFixed(1);
    parts.push(`<line x1="${M.left}" x2="${M.left + iw}" y1="${yy}" y2="${yy}" stroke="#eee"/>`);
    parts.push(
      `<text x="${M.left - 5}" y="${yy}" dy="0.32em" text-anchor="end" class="tick">${kind === 'latencyMs' ? fmtMs(v) : fmtInt(v)}</text>`,
    );
  }
  parts.push(`<rect x="${M.left}" y="${top}" width="${iw}" height="${ih}" fill="none" stroke="#ccc"/>`);
  const podIndex = new Map(s.pods.map((p, i) => [p.pod, i]));
  e.endpoints.forEach((ep, i) => {
    let d = '';
    let pen = false;
    ep[kind].forEach((v, j) => {
      const t = e.tMs[j] as number;
      if (v === null || t < s.startMs || t > s.startMs + spanMs) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${x(t).toFixed(1)} ${y(v).toFixed(1)}`;
      pen = true;
    });
    if (d === '') return;
    const color = PALETTE[(podIndex.get(ep.label) ?? s.pods.length + i) % PALETTE.length] as string;
    parts.push(
      `<path class="endpoint-series" data-endpoint="${esc(ep.endpoint)}" d="${d}" fill="none" stroke="${color}" stroke-width="1.3"><title>${esc(ep.label)}</title></path>`,
    );
  });
  const what =
    kind === 'outstanding'
      ? `RPCs outstanding per endpoint (${e.policy}, summed over its clients)`
      : `latency estimate per endpoint, ms (${e.policy} peak EWMA)`;
  parts.push(`<text x="${M.left}" y="${HE - 3}" class="tick">${esc(what)}</text>`);
  return (
    `<svg class="endpoints" data-kind="${kind}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${HE}" width="${W}" height="${HE}" role="img" aria-label="${esc(what)}">` +
    parts.join('') +
    '</svg>'
  );
}

function saturationNote(r: LabRunRecord): string {
  if (!r.harness?.saturated) return '';
  return `<div class="stats saturated">saturated: ${esc(r.harness.reason)} — these figures measured the machine, not the strategy; ${esc(SATURATION_ADVICE)}</div>`;
}

function legend(run: ReportRun): string {
  const items = run.series.pods.map(
    (p, i) =>
      `<span class="key"><i style="background:${PALETTE[i % PALETTE.length]}"></i>${esc(p.pod)}</span>`,
  );
  if (run.series.failedRps.some((v) => v > 0)) {
    items.push(`<span class="key"><i class="dash" style="border-color:${FAILED_COLOR}"></i>failed</span>`);
  }
  return `<div class="legend">${items.join('')}</div>`;
}

function failedCell(r: LabRunRecord): string {
  const codes = Object.entries(r.failedByCode)
    .map(([c, n]) => `${esc(c)} ${fmtInt(n)}`)
    .join(', ');
  const cls = r.failed > 0 ? ' class="bad"' : '';
  return `<td${cls} title="${codes}">${fmtInt(r.failed)}${codes ? `<br><small>${codes}</small>` : ''}</td>`;
}

function harnessCell(r: LabRunRecord): string {
  const h = r.harness;
  if (!h) return '<td>—</td>';
  const text = `${fmtMs(h.loopDelayMsP99)} / ${fmtMs(h.loopDelayMsMax)} · ${Math.round(h.machineCpuBusyPct)}%`;
  return h.saturated
    ? `<td class="bad saturated" title="${esc(h.reason)}">${text}<br><small>saturated</small></td>`
    : `<td>${text}</td>`;
}

function tableRows(runs: readonly ReportRun[], withScenario: boolean): string {
  return runs
    .map(({ record: r }) => {
      const never = r.newPodsNeverServed > 0 ? ' class="bad"' : '';
      return (
        '<tr>' +
        (withScenario ? `<td>${esc(r.scenario)}</td>` : '') +
        `<td>${esc(r.strategy)}${r.overlay !== undefined ? `<br><small>${esc(r.overlay)}</small>` : ''}</td>` +
        `<td>${fmtInt(r.rpcs)}</td>` +
        failedCell(r) +
        `<td>${(r.successRate * 100).toFixed(3)}%</td>` +
        `<td>${fmtPct(r.readyToFirstRpcMs)}</td>` +
        `<td${never}>${r.newPodsNeverServed}</td>` +
        `<td>${r.balanceMaxOverMean === null ? '—' : r.balanceMaxOverMean.toFixed(2)}</td>` +
        `<td>${fmtPct(r.latencyMs)}</td>` +
        `<td>${(r.durationMs / 1000).toFixed(1)}</td>` +
        harnessCell(r) +
        '</tr>'
      );
    })
    .join('\n');
}

function table(runs: readonly ReportRun[], withScenario: boolean): string {
  return (
    '<table class="summary"><thead><tr>' +
    (withScenario ? '<th>scenario</th>' : '') +
    '<th>strategy</th><th>rpcs</th><th>failed</th><th>successRate</th>' +
    '<th>readyToFirstRpcMs<br>p50 / p99</th><th>newPods<br>NeverServed</th><th>balance<br>MaxOverMean</th>' +
    '<th>latencyMs<br>p50 / p99</th><th>duration s</th><th>harness: loop delay<br>p99 / max ms · CPU</th>' +
    `</tr></thead><tbody>\n${tableRows(runs, withScenario)}\n</tbody></table>`
  );
}

const CSS = `
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:12px}.grid{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:8px;background:#fff}
figure svg{display:block}figcaption{font-weight:600;margin-bottom:4px}.stats{font-size:12px;color:#555;margin-top:2px}
.tick{font-size:10px;fill:#666}.axis{font-size:11px;fill:#444}.event-label{font-size:10px;fill:#333}
.legend{font-size:11px;display:flex;flex-wrap:wrap;gap:4px 10px;max-width:${W}px}
.key i{display:inline-block;width:14px;height:3px;margin-right:4px;vertical-align:middle}
.key i.dash{height:0;border-top:2px dashed}
table.summary{border-collapse:collapse;font-size:13px;margin:8px 0}
.summary th,.summary td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
.summary th{background:#f5f5f5;font-weight:600;text-align:center}
.summary td:first-child,.summary td:nth-child(2){text-align:left}
.summary small{color:#a33}.bad{background:#fdecea}.saturated{color:#a33}
`;

/** Render the report page for `runs` (any order; grouped by scenario in first-seen order). */
export function renderReport(runs: readonly ReportRun[], meta: ReportMeta = {}): string {
  const title = meta.title ?? 'grpc-kube lab';
  const scenarios: string[] = [];
  for (const r of runs) if (!scenarios.includes(r.record.scenario)) scenarios.push(r.record.scenario);

  let plotIndex = 0;
  const sections = scenarios.map((scenario) => {
    const group = runs.filter((r) => r.record.scenario === scenario);
    // One y scale per scenario so the strategies compare at a glance.
    let max = 0;
    for (const r of group) for (const p of r.series.pods) for (const v of p.rps) if (v > max) max = v;
    const yMax = niceMax(max);
    const figures = group.map((run) => {
      const perClient = run.podsPerClient
        ? `<div class="stats">pods reached per client: ${run.podsPerClient.join(', ')}</div>`
        : '';
      return (
        `<figure data-strategy="${esc(run.record.strategy)}"><figcaption>${esc(run.record.strategy)}${run.record.overlay !== undefined ? ` (${esc(run.record.overlay)})` : ''}</figcaption>` +
        plot(run, yMax, plotIndex++) +
        harnessStrip(run) +
        endpointPlot(run, 'outstanding') +
        endpointPlot(run, 'latencyMs') +
        shareBar(run) +
        legend(run) +
        perClient +
        saturationNote(run.record) +
        '</figure>'
      );
    });
    return (
      `<section data-scenario="${esc(scenario)}"><h2>${esc(scenario)}</h2>` +
      `<div class="grid">${figures.join('\n')}</div>` +
      table(group, false) +
      '</section>'
    );
  });

  const metaLines = [
    `generated ${esc(meta.generatedAt ?? new Date().toISOString())}`,
    meta.command ? `command <code>${esc(meta.command)}</code>` : '',
    meta.seed !== undefined ? `seed ${esc(String(meta.seed))}` : '',
    ...(meta.notes ?? []).map(esc),
  ].filter((l) => l !== '');

  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title><style>${CSS}</style></head>
<body>
<h1>${esc(title)}</h1>
<div class="meta">${metaLines.join(' · ')}</div>
<h2>Summary</h2>
${table(runs, true)}
<p class="meta">readyToFirstRpcMs: from a new pod turning Ready to the first RPC it served (— when no new pod
served). balanceMaxOverMean: the largest per-pod share of RPCs ÷ the mean share over the pods Ready for the whole
steady window (shaded on the plots); 1.00 is even. Plots: successful RPCs per second per pod, by RPC start time;
dashed red: failed RPCs per second; dotted verticals: scenario events; the bar under each plot: each pod's
share of the run's successful RPCs; the strip under it: how late the lab's client event loop ran and how
busy the machine was; under runs whose policy reports them (grpc_kube_p2c, grpc_kube_ewma), the RPCs outstanding on each
endpoint and the policy's latency estimate for it, sampled from the balancer's metrics. harness: a run marked <em>saturated</em> measured the lab's own load, not the strategy.</p>
${sections.join('\n')}
</body></html>
`;
}
