// docs/decision-table.md and the scenario guides carry numbers only through blocks that
// scripts/decision-table.mjs generates from the committed lab JSON (docs/decision-table.lab.json):
// the committed docs must be exactly what the script makes of that JSON, and the script must rank
// by the numbers (an unbalanced option that got lucky ranks after the balanced ones), show ties as
// ties, name what was not measured, and refuse a malformed JSON naming the field.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';

const repoRoot = join(import.meta.dirname, '..', '..', '..');
const script = join(repoRoot, 'scripts', 'decision-table.mjs');
const labJson = join(repoRoot, 'docs', 'decision-table.lab.json');

interface DecisionTable {
  renderBlock(text: string, sourceName: string): string;
  renderStrategyBlock(text: string, sourceName: string, strategy: string): string;
  updateDocument(doc: string, text: string, sourceName: string): string;
}
const mod = (await import(pathToFileURL(script).href)) as DecisionTable;

interface Run {
  scenario: string;
  strategy: string;
  cluster: string;
  rpcs: number;
  failed: number;
  successRate: number;
  newPodsNeverServed: number;
  balanceMaxOverMean: number | null;
  readyToFirstRpcMs: { p50: number | null; p99: number | null };
  latencyMs: { p50: number; p99: number };
}

function run(scenario: string, strategy: string, fields: Partial<Run>): Run {
  return {
    scenario,
    strategy,
    cluster: 'embedded',
    rpcs: 1000,
    failed: 0,
    successRate: 1,
    newPodsNeverServed: 0,
    balanceMaxOverMean: 1,
    readyToFirstRpcMs: { p50: null, p99: null },
    latencyMs: { p50: 5, p99: 50 },
    ...fields,
  };
}

/** The "best measured" cell of a situation's row. */
function best(block: string, situation: string): string {
  const row = block.split('\n').find((l) => l.startsWith(`| ${situation}`));
  assert.ok(row, situation);
  return row.split(' | ')[1] ?? '';
}

describe('scripts/decision-table.mjs', () => {
  const docs = [
    join(repoRoot, 'docs', 'decision-table.md'),
    ...readdirSync(join(repoRoot, 'docs'))
      .filter((f) => f.startsWith('guide-') && f.endsWith('.md'))
      .map((f) => join(repoRoot, 'docs', f)),
  ];

  it('the committed docs are exactly what the script makes of the committed lab JSON', () => {
    const r = spawnSync(process.execPath, [script, labJson, '--check', ...docs], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const table = readFileSync(docs[0] as string, 'utf8');
    // Spot check the header and one cell against the JSON itself.
    const lab = JSON.parse(readFileSync(labJson, 'utf8')) as { runs: Run[] };
    assert.match(
      table,
      new RegExp(`from ${lab.runs.length} runs \\(cluster: embedded; sha256 [0-9a-f]{12}\\)`),
    );
    const k = lab.runs.find((x) => x.scenario === 'rolling-update' && x.strategy === 'kubernetes');
    assert.ok(k);
    const guide = readFileSync(join(repoRoot, 'docs', 'guide-kubernetes.md'), 'utf8');
    assert.ok(
      guide.includes(`| rolling-update | ${k.rpcs} | ${k.failed} | ${(k.successRate * 100).toFixed(2)} % |`),
    );
  });

  it('the prose of decision-table.md and guide-kubernetes.md still holds for the committed JSON', () => {
    // When a refreshed lab JSON breaks one of these, rewrite the sentence that makes the claim.
    const lab = JSON.parse(readFileSync(labJson, 'utf8')) as { runs: Run[] };
    const get = (scenario: string, strategy: string): Run => {
      const r = lab.runs.find((x) => x.scenario === scenario && x.strategy === strategy);
      assert.ok(r, `${scenario}/${strategy}`);
      return r;
    };
    const strategies = [...new Set(lab.runs.map((r) => r.strategy))];
    // "the options that follow the EndpointSlices … left no new pod idle in scale-up, rolling update
    // and API outage alike; none of the others did"
    const neverIdle = strategies.filter((st) =>
      ['scale-up', 'rolling-update', 'api-outage'].every((sc) => get(sc, st).newPodsNeverServed === 0),
    );
    assert.deepEqual(neverIdle.sort(), [
      'kubernetes',
      'kubernetes-ewma',
      'kubernetes-p2c',
      'proxy',
      'sidecar',
      'xds',
    ]);
    // "and it lost no RPC in the rolling update"
    for (const st of neverIdle) assert.equal(get('rolling-update', st).failed, 0, st);
    // "grpc_kube_ewma … its slow-pod success rate is the highest of the balanced options"
    const balanced = strategies.filter((st) => (get('slow-pod', st).balanceMaxOverMean ?? Infinity) <= 2);
    const bestSlow = balanced.reduce((a, b) =>
      get('slow-pod', a).successRate >= get('slow-pod', b).successRate ? a : b,
    );
    assert.equal(bestSlow, 'kubernetes-ewma');
    // "DNS-based clients fail during rolling updates in this run"
    for (const st of ['headless-pick-first', 'headless-dns-round-robin', 'max-connection-age']) {
      assert.ok(get('rolling-update', st).successRate < 0.5, st);
    }
    // max-connection-age: "its first RPC to a new pod waits for a connection to age out (tens of seconds)"
    assert.ok((get('scale-up', 'max-connection-age').readyToFirstRpcMs.p99 ?? 0) > 10_000);
    // "ClusterIP and pick_first pin each client connection to one pod": unbalanced everywhere.
    for (const st of ['clusterip', 'headless-pick-first']) {
      for (const r of lab.runs.filter((x) => x.strategy === st && x.balanceMaxOverMean !== null)) {
        assert.ok((r.balanceMaxOverMean ?? 0) > 1.4, `${st} ${r.scenario}`);
      }
    }
  });

  it('--check fails when a generated number was edited by hand', () => {
    const doc = readFileSync(docs[0] as string, 'utf8');
    const edited = doc.replace(/never served 0/, 'never served 7');
    assert.notEqual(edited, doc);
    const text = readFileSync(labJson, 'utf8');
    assert.equal(mod.updateDocument(edited, text, 'decision-table.lab.json'), doc);
  });

  it('ranks by the numbers; a lucky unbalanced option ranks after the balanced ones; ties are ties', () => {
    const text = JSON.stringify({
      runs: [
        // pick_first pinned to a fast pod: 100 % but balance 5.00.
        run('slow-pod', 'headless-pick-first', { balanceMaxOverMean: 5 }),
        run('slow-pod', 'kubernetes', { successRate: 0.8, failed: 200, balanceMaxOverMean: 1.2 }),
        run('slow-pod', 'kubernetes-ewma', { successRate: 0.995, failed: 5, balanceMaxOverMean: 1.4 }),
        run('scale-down', 'kubernetes', { balanceMaxOverMean: 1.001 }),
        run('scale-down', 'max-connection-age', { balanceMaxOverMean: 1.004 }),
        run('scale-up', 'max-connection-age', { readyToFirstRpcMs: { p50: 20000, p99: 26000 } }),
        run('scale-up', 'kubernetes', { readyToFirstRpcMs: { p50: 40, p99: 60 } }),
        run('scale-up', 'headless-dns-round-robin', { newPodsNeverServed: 2, balanceMaxOverMean: 1.6 }),
      ],
    });
    const block = mod.renderBlock(text, 'x.json');
    assert.equal(best(block, 'One pod is much slower'), '**kubernetes-ewma**');
    assert.equal(best(block, 'Pods are removed'), '**max-connection-age**, **kubernetes**');
    assert.equal(best(block, 'Pods are added'), '**kubernetes**');
    assert.match(block, /\| Rolling updates \(every deploy\) \| not measured in this run \|/);
    assert.match(block, /Not measured in this run: clusterip, kubernetes-p2c, proxy, sidecar, xds\./);
    assert.match(mod.renderStrategyBlock(text, 'x.json', 'xds'), /_Not measured in `x\.json`/);
  });

  it('refuses a malformed lab JSON, naming the field', () => {
    assert.throws(() => mod.renderBlock('{"runs": {}}', 'x.json'), /"runs" must be an array/);
    const bad = JSON.stringify({ runs: [{ ...run('scale-up', 'kubernetes', {}), successRate: '1' }] });
    assert.throws(() => mod.renderBlock(bad, 'x.json'), /runs\[0\]\.successRate must be a number/);
  });
});
