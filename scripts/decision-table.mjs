#!/usr/bin/env node
// Builds docs/decision-table.md's tables from a lab JSON (`grpc-kube lab --json FILE`, keys in
// shared FIGURES.md): for each situation, the options ranked by what the lab measured, and the
// scenario × option matrix behind it. Nothing here is an adjective: every cell is a number from the
// JSON, and the generated block names the file and its SHA-256 so a reader can find the run.
//
//   node scripts/decision-table.mjs LAB.json                        print the decision-table block
//   node scripts/decision-table.mjs LAB.json --write DOC.md...      replace the blocks in each DOC
//   node scripts/decision-table.mjs LAB.json --check DOC.md...      exit 1 if a DOC's blocks differ
//
// Blocks: <!-- decision-table:begin --> … <!-- decision-table:end --> (the tables above), and in the
// scenario guides <!-- lab-strategy:NAME:begin --> … <!-- lab-strategy:NAME:end --> (one option's
// numbers in every scenario). A DOC without blocks is left as it is.

import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { pathToFileURL } from 'node:url';

export const BEGIN = '<!-- decision-table:begin -->';
export const END = '<!-- decision-table:end -->';

/** Strategy names and order as in FIGURES.md; unknown names found in a JSON go last. */
const STRATEGIES = [
  'clusterip',
  'headless-pick-first',
  'headless-dns-round-robin',
  'max-connection-age',
  'kubernetes',
  'kubernetes-p2c',
  'kubernetes-ewma',
  'proxy',
  'sidecar',
  'xds',
];
const SCENARIOS = [
  'scale-up',
  'scale-down',
  'rolling-update',
  'pod-kill',
  'api-outage',
  'canary-shift',
  'slow-pod',
];

const pct = (x) => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(2)} %`);
const ms = (x) => (x === null || x === undefined ? '–' : `${Math.round(x)} ms`);
const ratio = (x) => (x === null || x === undefined ? '–' : x.toFixed(2));
// Ranking uses the numbers as printed, so that options equal in the table are equal in the ranking.
const inf = (x, digits = 0) =>
  x === null || x === undefined ? Number.POSITIVE_INFINITY : Number(x.toFixed(digits));
const rate = (x) => Number(x.toFixed(4));
/**
 * An option whose busiest pod took more than twice the mean share did not balance (ClusterIP and
 * pick_first pin a client to one pod): it ranks after every option that did, whatever its luck in
 * the run (pinned to a pod that happened not to be the slow or the killed one).
 */
export const BALANCED_MAX_OVER_MEAN = 2;
const unbalanced = (r) => (inf(r.balanceMaxOverMean, 2) > BALANCED_MAX_OVER_MEAN ? 1 : 0);

/** The situations a user is in, each answered by one scenario's numbers. */
const SITUATIONS = [
  {
    situation: 'Pods are added (scale-up, autoscaling)',
    scenario: 'scale-up',
    // Fewest new pods left without traffic, then the quickest first RPC, then the evenest spread.
    key: (r) => [
      unbalanced(r),
      r.newPodsNeverServed,
      inf(r.readyToFirstRpcMs?.p99),
      inf(r.balanceMaxOverMean, 2),
    ],
    show: (r) =>
      `never served ${r.newPodsNeverServed}, ready→1st RPC p99 ${ms(r.readyToFirstRpcMs?.p99)}, ` +
      `balance ${ratio(r.balanceMaxOverMean)}`,
  },
  {
    situation: 'Rolling updates (every deploy)',
    scenario: 'rolling-update',
    key: (r) => [unbalanced(r), -rate(r.successRate), r.newPodsNeverServed, inf(r.balanceMaxOverMean, 2)],
    show: (r) =>
      `success ${pct(r.successRate)} (${r.failed} of ${r.rpcs} failed), never served ${r.newPodsNeverServed}`,
  },
  {
    situation: 'Pods are removed (scale-down)',
    scenario: 'scale-down',
    key: (r) => [unbalanced(r), -rate(r.successRate), inf(r.balanceMaxOverMean, 2)],
    show: (r) => `success ${pct(r.successRate)} (${r.failed} failed), balance ${ratio(r.balanceMaxOverMean)}`,
  },
  {
    situation: 'A pod dies without warning (SIGKILL)',
    scenario: 'pod-kill',
    key: (r) => [unbalanced(r), -rate(r.successRate), inf(r.balanceMaxOverMean, 2)],
    show: (r) => `success ${pct(r.successRate)} (${r.failed} failed), balance ${ratio(r.balanceMaxOverMean)}`,
  },
  {
    situation: 'The Kubernetes API is down while pods change',
    scenario: 'api-outage',
    key: (r) => [unbalanced(r), -rate(r.successRate), r.newPodsNeverServed, inf(r.readyToFirstRpcMs?.p99)],
    show: (r) =>
      `success ${pct(r.successRate)}, never served ${r.newPodsNeverServed}, ` +
      `ready→1st RPC p99 ${ms(r.readyToFirstRpcMs?.p99)}`,
  },
  {
    situation: 'Shifting traffic between versions (canary)',
    scenario: 'canary-shift',
    key: (r) => [unbalanced(r), -rate(r.successRate), inf(r.latencyMs?.p99)],
    show: (r) => `success ${pct(r.successRate)}, latency p99 ${ms(r.latencyMs?.p99)}`,
  },
  {
    situation: 'One pod is much slower than the others',
    scenario: 'slow-pod',
    key: (r) => [unbalanced(r), -rate(r.successRate), inf(r.latencyMs?.p99)],
    show: (r) => `success ${pct(r.successRate)} (${r.failed} failed), latency p99 ${ms(r.latencyMs?.p99)}`,
  },
];

/** What each option costs to adopt: facts about the option, not measurements. */
const NEEDS = {
  clusterip: 'nothing (a ClusterIP Service)',
  'headless-pick-first': 'a headless Service',
  'headless-dns-round-robin': "a headless Service + `round_robin` in the client's service config",
  'max-connection-age': 'headless + `maxConnectionAgeOptions()` on the server',
  kubernetes: 'grpc-kube in a Node client (`setup()`), RBAC get/list/watch endpointslices',
  'kubernetes-p2c': 'as kubernetes, policy `grpc_kube_p2c`',
  'kubernetes-ewma': 'as kubernetes, policy `grpc_kube_ewma`',
  proxy: 'a proxy Deployment + Service and its RBAC; one extra network hop',
  sidecar: 'a proxy container in every client pod; a localhost hop',
  xds: 'the xDS control plane + an xDS client (grpc-js-xds, grpc-go, grpc-java) and its bootstrap',
};

function compareKeys(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return 0;
}

function order(strategies) {
  const rank = (s) => (STRATEGIES.includes(s) ? STRATEGIES.indexOf(s) : STRATEGIES.length);
  return [...strategies].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** Parse and check the lab JSON; throws with the field at fault. */
export function readLab(text) {
  const lab = JSON.parse(text);
  if (!lab || !Array.isArray(lab.runs)) throw new Error('lab JSON: "runs" must be an array');
  lab.runs.forEach((r, i) => {
    for (const f of ['scenario', 'strategy', 'cluster']) {
      if (typeof r[f] !== 'string') throw new Error(`lab JSON: runs[${i}].${f} must be a string`);
    }
    for (const f of ['rpcs', 'failed', 'successRate', 'newPodsNeverServed']) {
      if (typeof r[f] !== 'number') throw new Error(`lab JSON: runs[${i}].${f} must be a number`);
    }
  });
  return lab;
}

/** The generated markdown block (markers included) for a lab JSON's text. */
export function renderBlock(text, sourceName) {
  const lab = readLab(text);
  const sha = createHash('sha256').update(text).digest('hex').slice(0, 12);
  const clusters = [...new Set(lab.runs.map((r) => r.cluster))].join(', ');
  const strategies = order(new Set(lab.runs.map((r) => r.strategy)));
  const scenarios = SCENARIOS.filter((s) => lab.runs.some((r) => r.scenario === s));
  const run = (scenario, strategy) =>
    lab.runs.find((r) => r.scenario === scenario && r.strategy === strategy);
  const lines = [BEGIN, ''];
  lines.push(
    `_Generated by \`node scripts/decision-table.mjs ${sourceName}\` from ${lab.runs.length} runs ` +
      `(cluster: ${clusters}; sha256 ${sha}). Do not edit by hand._`,
    '',
    '### Which option for which situation',
    '',
    `Ranked by the situation's numbers; an option whose busiest pod took more than ` +
      `${BALANCED_MAX_OVER_MEAN}× the mean share (or that never reached a steady balance, "–") ranks ` +
      'after every option that balanced.',
    '',
    '| situation | best measured | its numbers | every option, best first |',
    '| --- | --- | --- | --- |',
  );
  for (const s of SITUATIONS) {
    const runs = strategies.map((st) => run(s.scenario, st)).filter(Boolean);
    if (runs.length === 0) {
      lines.push(`| ${s.situation} | not measured in this run | – | – |`);
      continue;
    }
    const ranked = [...runs].sort((a, b) => compareKeys(s.key(a), s.key(b)));
    const top = ranked.filter((r) => compareKeys(s.key(r), s.key(ranked[0])) === 0);
    lines.push(
      `| ${s.situation} | ${top.map((r) => `**${r.strategy}**`).join(', ')} | ${s.show(ranked[0])} | ` +
        `${ranked.map((r) => `${r.strategy} (${s.show(r)})`).join('; ')} |`,
    );
  }
  const missing = STRATEGIES.filter((s) => !strategies.includes(s));
  if (missing.length > 0) lines.push('', `Not measured in this run: ${missing.join(', ')}.`);

  lines.push(
    '',
    '### Every scenario × every option',
    '',
    'Cells: success rate · new pods never served · ready→first RPC p99 · balance (max/mean share; 1.00 = even) · latency p99.',
    '',
    `| option | ${scenarios.join(' | ')} |`,
    `| --- | ${scenarios.map(() => '---').join(' | ')} |`,
  );
  for (const st of strategies) {
    const cells = scenarios.map((sc) => {
      const r = run(sc, st);
      if (!r) return '–';
      return [
        pct(r.successRate),
        `${r.newPodsNeverServed} never`,
        ms(r.readyToFirstRpcMs?.p99),
        ratio(r.balanceMaxOverMean),
        ms(r.latencyMs?.p99),
      ].join(' · ');
    });
    lines.push(`| ${st} | ${cells.join(' | ')} |`);
  }

  lines.push('', '### What each option needs', '', '| option | needs |', '| --- | --- |');
  for (const st of order(new Set([...strategies, ...Object.keys(NEEDS)]))) {
    lines.push(`| ${st} | ${NEEDS[st] ?? '–'} |`);
  }
  lines.push('', END);
  return lines.join('\n');
}

/** One option's runs, a row per scenario: the block the scenario guides embed. */
export function renderStrategyBlock(text, sourceName, strategy) {
  const lab = readLab(text);
  const sha = createHash('sha256').update(text).digest('hex').slice(0, 12);
  const begin = `<!-- lab-strategy:${strategy}:begin -->`;
  const end = `<!-- lab-strategy:${strategy}:end -->`;
  const runs = SCENARIOS.map((sc) =>
    lab.runs.find((r) => r.scenario === sc && r.strategy === strategy),
  ).filter(Boolean);
  const lines = [begin, ''];
  if (runs.length === 0) {
    lines.push(`_Not measured in \`${sourceName}\` (sha256 ${sha})._`, '', end);
    return lines.join('\n');
  }
  lines.push(
    `_\`${strategy}\` in \`${sourceName}\` (sha256 ${sha}), generated by \`node scripts/decision-table.mjs\`._`,
    '',
    '| scenario | RPCs | failed | success | new pods never served | ready→1st RPC p50 / p99 | balance | latency p50 / p99 |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const r of runs) {
    lines.push(
      `| ${r.scenario} | ${r.rpcs} | ${r.failed} | ${pct(r.successRate)} | ${r.newPodsNeverServed} | ` +
        `${ms(r.readyToFirstRpcMs?.p50)} / ${ms(r.readyToFirstRpcMs?.p99)} | ${ratio(r.balanceMaxOverMean)} | ` +
        `${ms(r.latencyMs?.p50)} / ${ms(r.latencyMs?.p99)} |`,
    );
  }
  lines.push('', end);
  return lines.join('\n');
}

function replaceBetween(doc, begin, end, block) {
  const i = doc.indexOf(begin);
  const j = doc.indexOf(end);
  if (i < 0 || j < i) throw new Error(`the document has no ${begin} … ${end} block`);
  return doc.slice(0, i) + block + doc.slice(j + end.length);
}

/** `doc` with its decision-table block replaced by `block`; throws if the markers are missing. */
export function replaceBlock(doc, block) {
  return replaceBetween(doc, BEGIN, END, block);
}

/** Every block in `doc` regenerated from the lab JSON text; a document without blocks is unchanged. */
export function updateDocument(doc, text, sourceName) {
  let out = doc;
  let blocks = 0;
  if (out.includes(BEGIN) || out.includes(END)) {
    out = replaceBlock(out, renderBlock(text, sourceName));
    blocks++;
  }
  for (const m of doc.matchAll(/<!-- lab-strategy:([a-z0-9-]+):begin -->/g)) {
    const name = m[1];
    out = replaceBetween(
      out,
      `<!-- lab-strategy:${name}:begin -->`,
      `<!-- lab-strategy:${name}:end -->`,
      renderStrategyBlock(text, sourceName, name),
    );
    blocks++;
  }
  return blocks === 0 ? doc : out;
}

function main(argv) {
  const [file, mode, ...docs] = argv;
  if (
    file === undefined ||
    (mode !== undefined && (docs.length === 0 || !['--write', '--check'].includes(mode)))
  ) {
    process.stderr.write(
      'usage: node scripts/decision-table.mjs LAB.json [--write DOC.md... | --check DOC.md...]\n',
    );
    return 2;
  }
  const text = readFileSync(file, 'utf8');
  const name = basename(file);
  if (mode === undefined) {
    process.stdout.write(`${renderBlock(text, name)}\n`);
    return 0;
  }
  let stale = 0;
  for (const doc of docs) {
    const current = readFileSync(doc, 'utf8');
    const next = updateDocument(current, text, name);
    if (next === current) continue;
    if (mode === '--write') writeFileSync(doc, next);
    else {
      process.stderr.write(`${doc}: its tables differ from ${file}; run with --write\n`);
      stale++;
    }
  }
  return stale === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = main(process.argv.slice(2));
}
