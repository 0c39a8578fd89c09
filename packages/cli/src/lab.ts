// `grpc-kube lab`: every scenario against every strategy on a lab cluster (embedded or real), side by side.
// Prints progress while it runs and a summary table at the end; --json writes the docs/figures.md records,
// --report a self-contained HTML page with per-pod traffic over time. --tls runs every scenario with
// mutual TLS end to end (a CA made for the run), then again in plaintext, and prints what TLS cost.
//
// grpc-js reads GRPC_NODE_USE_ALTERNATIVE_RESOLVER once, when it loads: every strategy whose clients
// dial dns: needs it (the headless ones; with --manifests each overlay whose client dials dns:), as
// their targets name the lab's DNS server, so main.ts sets it before any module that loads grpc-js,
// and this module loads the lab itself with dynamic imports.

import { writeFileSync } from 'node:fs';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { LAB_FLAGS, parseCommandLine } from './options.js';
import { startMetrics, writeMetricsFile } from './metrics.js';
import { textTable } from '@grpc-kube/lab/internal/lab/text-table.js';
// No grpc-js in its import graph (see above), so it loads statically.
import { LAB_DEFAULTS, labConfig } from '@grpc-kube/lab/internal/lab/config.js';

/** The lab's defaults, as the CLI uses them: the library's one table. */
export { LAB_DEFAULTS };

/** A (scenario, strategy) that threw instead of running: in the JSON, the report and the summary. */
export interface FailedRun {
  readonly scenario: string;
  readonly strategy: string;
  readonly reason: string;
}

/** A run whose workload did not cover its scenario (runner.ts incompleteRun): in the JSON, the report, the summary. */
export interface IncompleteLabRun {
  readonly scenario: string;
  readonly strategy: string;
  readonly tls: boolean;
  readonly idleFromMs: number;
  readonly idleToMs: number;
  readonly durationMs: number;
  readonly reason: string;
}

export interface LabCommandIo {
  /** Scenarios and strategies selectable by name besides the built-in ones (tests). */
  readonly scenarios?: readonly import('@grpc-kube/lab/internal/lab/scenario.js').Scenario[];
  readonly strategies?: readonly import('@grpc-kube/lab/internal/lab/strategy.js').LabStrategy[];
}

export async function labCommand(args: string[], io: LabCommandIo = {}): Promise<number> {
  const { values } = parseCommandLine(LAB_FLAGS, args);
  const { builtinScenarios, scaleScenario, SCENARIO_NAMES } =
    await import('@grpc-kube/lab/internal/lab/scenario.js');
  const { STRATEGIES, OPTIONAL_STRATEGIES } = await import('@grpc-kube/lab/internal/lab/strategies/index.js');
  const { runScenario, failureReason, dnsDialingStrategies } =
    await import('@grpc-kube/lab/internal/lab/runner.js');
  const { renderReport } = await import('@grpc-kube/lab/internal/lab/report.js');
  const { SATURATION_ADVICE } = await import('@grpc-kube/lab/internal/lab/harness.js');
  const { seededRandom } = await import('grpc-kube/internal/balancer/index.js');
  const { tlsCostTable } = await import('@grpc-kube/lab/internal/lab/tls-cost.js');
  const { alternativeResolverError } = await import('@grpc-kube/lab/internal/lab/dns-server.js');

  const pick = <T extends { name: string }>(
    all: readonly T[],
    list: string | undefined,
    what: string,
    known: readonly string[],
    defaults: readonly T[] = all,
  ): T[] => {
    if (list === undefined) return [...defaults];
    const names = list
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '');
    for (const n of names) {
      if (!all.some((x) => x.name === n)) {
        throw new InvalidOptionError(`--${what}`, `has unknown name "${n}"; known: ${known.join(', ')}`);
      }
    }
    return all.filter((x) => names.includes(x.name));
  };
  const everyScenario = [...builtinScenarios(), ...(io.scenarios ?? [])];
  const scenarios = pick(everyScenario, values.scenario, 'scenario', [
    ...SCENARIO_NAMES,
    ...(io.scenarios ?? []).map((x) => x.name),
  ]);
  // Optional strategies (proxy-nghttpx, and the caller's) run only when named.
  const everyStrategy = [...STRATEGIES, ...OPTIONAL_STRATEGIES, ...(io.strategies ?? [])];
  const strategies = pick(
    everyStrategy,
    values.strategy,
    'strategy',
    everyStrategy.map((s) => s.name),
    STRATEGIES,
  );
  const quick = values.quick ?? false;
  const timeScale = quick ? 0.3 : 1;
  const seed = values.seed === undefined ? LAB_DEFAULTS.seed : Number(values.seed);
  if (!Number.isInteger(seed)) throw new InvalidOptionError('--seed', 'must be an integer');
  // Before anything runs: a strategy dialling dns: (an overlay's TARGET with --manifests) needs
  // grpc-js's c-ares resolver, which only the environment grpc-js loaded with can give.
  const resolverError = alternativeResolverError(
    dnsDialingStrategies(strategies, { manifests: values.manifests ?? false }),
  );
  if (resolverError !== undefined) throw resolverError;
  // Assertions are checked before anything runs: a typo must not cost a whole lab run.
  const { parseAssertion, checkAssertions } = await import('@grpc-kube/lab/internal/lab/assert.js');
  const assertions = (values.assert ?? []).map((a) =>
    parseAssertion(a, { scenarios: SCENARIO_NAMES, strategies: everyStrategy.map((s) => s.name) }),
  );
  // Every run option validated once, into the frozen config the runner reads as it is.
  const config = labConfig({
    strategyCount: strategies.length,
    ...(values.cluster !== undefined ? { cluster: values.cluster } : {}),
    ...(values.clients !== undefined ? { clients: Number(values.clients) } : {}),
    ...(values.pacing !== undefined ? { pacingMs: Number(values.pacing) } : {}),
    ...(values.pods !== undefined ? { pods: values.pods } : {}),
    ...(values['client-defaults'] !== undefined ? { clientDefaults: values['client-defaults'] } : {}),
    ...(values.idempotent !== undefined ? { idempotent: values.idempotent } : {}),
    ...(values.hedge !== undefined ? { hedgeMs: Number(values.hedge) } : {}),
    ...(values['pod-command'] !== undefined ? { podCommand: values['pod-command'] } : {}),
    ...(values['pod-nice'] !== undefined ? { podNice: Number(values['pod-nice']) } : {}),
    ...(values.tls !== undefined ? { tls: values.tls } : {}),
    ...(values.manifests !== undefined ? { manifests: values.manifests } : {}),
  });
  const { cluster, clients, pacingMs, pods } = config;
  // TLS first, then the same scenarios in plaintext: the cost of TLS from one run.
  const tlsSets = config.tls ? [true, false] : [false];
  const random = seededRandom(seed);
  const out = (l: string): void => void process.stderr.write(l + '\n');
  const started = Date.now();
  out(
    `grpc-kube lab: ${scenarios.length} scenarios × ${strategies.length} strategies on the ${cluster} cluster${quick ? ' (quick)' : ''}${values.tls === true ? ', with TLS then without' : ''}, seed ${seed}`,
  );
  const metrics = await startMetrics(values['metrics-address'], {
    wantText: values.metrics !== undefined,
    ...(values.metrics !== undefined ? { collectEveryMs: 1000 } : {}),
  });
  if (metrics?.address !== undefined) out(`grpc-kube lab: metrics at http://${metrics.address}/metrics`);
  const results = [];
  // Each scenario (and within it each strategy) fails alone: the results of the others are kept,
  // written and reported, and the command exits 1 naming what failed and why.
  const failedRuns: FailedRun[] = [];
  // A run whose clients stopped or stalled early is reported, never counted as if it ran in full.
  const incompleteRuns: IncompleteLabRun[] = [];
  for (const { tls, sc } of tlsSets.flatMap((tls) => scenarios.map((sc) => ({ tls, sc })))) {
    const scenario = quick ? scaleScenario(sc, timeScale) : sc;
    out(
      `▶ ${scenario.name}${tls ? ' with TLS' : ''} (${Math.round(scenario.durationMs / 1000)} s): ${scenario.description}`,
    );
    const r = await runScenario({
      scenario,
      strategies,
      timeScale,
      random,
      config: Object.freeze({ ...config, tls }),
      onProgress: out,
    }).catch((err: unknown) => {
      const reason = `${tls ? 'with TLS: ' : ''}${failureReason(err)}`;
      out(`  ${scenario.name}: FAILED: ${reason}`);
      for (const s of strategies) failedRuns.push({ scenario: scenario.name, strategy: s.name, reason });
      return undefined;
    });
    if (r === undefined) continue;
    for (const s of r.skipped) out(`  ${scenario.name}: ${s.strategy} skipped (${s.why})`);
    for (const f of r.failed)
      failedRuns.push({ scenario: scenario.name, ...f, ...(tls ? { reason: `with TLS: ${f.reason}` } : {}) });
    for (const x of r.incomplete)
      incompleteRuns.push({
        scenario: scenario.name,
        strategy: x.strategy,
        tls,
        idleFromMs: x.idleFromMs,
        idleToMs: x.idleToMs,
        durationMs: x.durationMs,
        reason: x.reason,
      });
    results.push(r);
  }
  const runs = results.flatMap((r) => r.runs);
  const records = runs.map((r) => r.record);
  process.stdout.write(summaryTable(runs, incompleteRuns) + '\n');
  const { blackholeLine } = await import('@grpc-kube/lab/internal/lab/blackhole.js');
  for (const r of records)
    if (r.blackhole) process.stdout.write(blackholeLine(r.strategy, r.blackhole) + '\n');
  const failedLines = failedRuns.map((f) => `FAILED ${f.scenario}/${f.strategy}: ${f.reason}`);
  if (failedLines.length > 0) process.stdout.write(failedLines.join('\n') + '\n');
  if (values.tls === true) process.stdout.write(tlsCostTable(records) + '\n');
  for (const w of saturationWarnings(runs, SATURATION_ADVICE)) out(w);
  const incompleteLines = incompleteRuns.map(
    (x) => `INCOMPLETE ${x.scenario}${x.tls ? ' with TLS' : ''}/${x.strategy}: ${x.reason}`,
  );
  for (const l of incompleteLines) out(`warning: ${l}`);
  out(`lab finished in ${Math.round((Date.now() - started) / 1000)} s`);
  if (metrics !== undefined && values.metrics !== undefined) {
    await writeMetricsFile(metrics, values.metrics);
    out(`wrote ${values.metrics}`);
  }
  await metrics?.close();
  if (values.json !== undefined) {
    writeFileSync(
      values.json,
      JSON.stringify(
        {
          runs: records,
          podsPerClient: runs.map((r) => ({
            scenario: r.record.scenario,
            strategy: r.record.strategy,
            podsPerClient: r.podsPerClient,
          })),
          failedRuns,
          incompleteRuns,
        },
        null,
        2,
      ) + '\n',
    );
    out(`wrote ${values.json}`);
  }
  if (values.report !== undefined) {
    writeFileSync(
      values.report,
      renderReport(runs, {
        title: 'grpc-kube lab',
        command: `grpc-kube lab ${args.join(' ')}`.trim(),
        seed,
        notes: [
          `${cluster} cluster${config.manifests ? ', every strategy from its deploy/ overlay (--manifests)' : ''}; ${clients} client channels per strategy × ${config.concurrency} RPCs in flight, paced ${pacingMs} ms; all strategies run at once against the same pods; pods: ${pods}${values['client-defaults'] ? '; clients with grpc-kube client defaults (retry on UNAVAILABLE)' : ''}`,
          ...results.flatMap((r) => r.skipped.map((s) => `${r.scenario}: ${s.strategy} skipped (${s.why})`)),
          ...failedLines,
          ...incompleteLines,
        ],
      }),
    );
    out(`wrote ${values.report}`);
  }
  if (failedRuns.length > 0)
    out(`lab: ${failedRuns.length} runs FAILED (listed above, in the JSON and the report)`);
  const failedExit = failedRuns.length > 0 ? 1 : 0;
  if (assertions.length === 0) return failedExit;
  const outcomes = checkAssertions(assertions, records);
  const failed = outcomes.filter((o) => !o.ok);
  for (const o of outcomes) {
    out(`${o.ok ? 'assert ok  ' : 'assert FAIL'} ${o.assertion.text}`);
    if (!o.ok) for (const d of o.details) out(`    ${d}`);
  }
  out(`assertions: ${outcomes.length - failed.length} held, ${failed.length} failed`);
  return failed.length === 0 ? failedExit : 1;
}

type Run = {
  record: import('@grpc-kube/lab/internal/lab/metrics.js').LabRunRecord;
  podsPerClient?: readonly number[] | undefined;
};

function summaryTable(runs: readonly Run[], incomplete: readonly IncompleteLabRun[]): string {
  const withTls = runs.some((r) => r.record.tls);
  const head = [
    'scenario',
    'strategy',
    ...(withTls ? ['tls'] : []),
    'rpcs',
    'failed',
    'success',
    'attempts (+retry %)',
    'ready→1st p50/p99 ms',
    'never served',
    'balance',
    'latency p50/p99 ms',
    'pods/client',
    'loop p99/max ms',
    'cpu',
  ];
  const f = (x: number | null, d = 0): string => (x === null ? '–' : x.toFixed(d));
  const rows = runs.map(({ record: r, podsPerClient }) => [
    r.scenario,
    r.strategy,
    ...(withTls ? [r.tls ? 'yes' : 'no'] : []),
    incomplete.some((x) => x.scenario === r.scenario && x.strategy === r.strategy && x.tls === r.tls)
      ? `${r.rpcs} INCOMPLETE`
      : String(r.rpcs),
    String(r.failed),
    (r.successRate * 100).toFixed(2) + '%',
    r.attempts == null ? '–' : `${r.attempts} (${signed(r.retryLoadPct ?? null)})`,
    `${f(r.readyToFirstRpcMs.p50)}/${f(r.readyToFirstRpcMs.p99)}`,
    String(r.newPodsNeverServed),
    f(r.balanceMaxOverMean, 2),
    `${f(r.latencyMs.p50, 1)}/${f(r.latencyMs.p99, 1)}`,
    (podsPerClient ?? []).join(','),
    r.harness ? `${f(r.harness.loopDelayMsP99, 1)}/${f(r.harness.loopDelayMsMax, 1)}` : '–',
    r.harness ? `${Math.round(r.harness.machineCpuBusyPct)}%${r.harness.saturated ? ' SATURATED' : ''}` : '–',
  ]);
  return textTable(head, rows);
}

/** A retry-load percentage with its sign: +3.1%, -0.2%. */
function signed(pct: number | null): string {
  if (pct === null) return '–';
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(1)}%`;
}

/** One warning per saturated scenario (its strategies share the harness), saying what to do. */
function saturationWarnings(runs: readonly Run[], advice: string): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const { record: r } of runs) {
    if (!r.harness?.saturated || seen.has(r.scenario)) continue;
    seen.add(r.scenario);
    out.push(
      `warning: ${r.scenario} was SATURATED (${r.harness.reason}): its figures measured the lab's own load, not the strategies; ${advice}`,
    );
  }
  return out;
}
