// `grpc-kube lab --assert`: the lab as a CI gate. An assertion names runs (scenario/strategy, `*` for
// any), one figure of their JSON record (dotted when nested) and a bound:
//
//   rolling-update/kubernetes:failed==0      scale-up/*:readyToFirstRpcMs.p99<=500
//
// Parsing is strict and happens before the lab runs (a typo must not cost a ten-minute run):
// unknown scenario, strategy or figure, a missing operator or a non-number → GK_ERR_INVALID_ASSERTION.
// Checking is strict too: an assertion that matches no run, a figure with no value (a p99 over no
// new pod), or a run whose harness was saturated fails, with its reason — never passes silently.

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { LabRunRecord } from './metrics.js';
import { STATUS_NAMES } from './metrics.js';

export const ASSERT_OPS = ['==', '!=', '<=', '>=', '<', '>'] as const;
export type AssertOp = (typeof ASSERT_OPS)[number];

export interface LabAssertion {
  readonly text: string;
  readonly scenario: string; // or '*'
  readonly strategy: string; // or '*'
  readonly figure: readonly string[];
  readonly op: AssertOp;
  readonly value: number;
}

/** The numeric figures of a run record an assertion may name (the `--json` keys, docs/lab.md). */
export const ASSERTABLE_FIGURES: readonly string[] = [
  'rpcs',
  'failed',
  'readyToFirstRpcMs.p50',
  'readyToFirstRpcMs.p99',
  'newPodsNeverServed',
  'balanceMaxOverMean',
  'latencyMs.p50',
  'latencyMs.p99',
  'successRate',
  'durationMs',
  'attempts',
  'retryLoadPct',
  'canary.maxErrorPct',
  'harness.loopDelayMsP99',
  'harness.loopDelayMsMax',
  'harness.machineCpuBusyPct',
  ...STATUS_NAMES.map((s) => `failedByCode.${s}`),
];

export class InvalidAssertionError extends GrpcKubeError {
  readonly assertion: string;
  constructor(assertion: string, why: string) {
    super(
      'GK_ERR_INVALID_ASSERTION',
      `--assert "${assertion}": ${why}. Write <scenario>/<strategy>:<figure><op><number>, e.g. "rolling-update/kubernetes:failed==0" ('*' for any scenario or strategy; ops ${ASSERT_OPS.join(' ')})`,
    );
    this.assertion = assertion;
    this.name = 'InvalidAssertionError';
  }
}

const SHAPE = /^\s*([^/\s:]+)\s*\/\s*([^:\s]+)\s*:\s*([A-Za-z0-9_.]+)\s*(==|!=|<=|>=|<|>)\s*(\S+)\s*$/;

export function parseAssertion(
  text: string,
  known: { scenarios: readonly string[]; strategies: readonly string[] },
): LabAssertion {
  const m = SHAPE.exec(text);
  if (m === null)
    throw new InvalidAssertionError(text, 'it does not have the form scenario/strategy:figure<op>number');
  const [, scenario, strategy, figure, op, num] = m as unknown as [
    string,
    string,
    string,
    string,
    AssertOp,
    string,
  ];
  if (scenario !== '*' && !known.scenarios.includes(scenario))
    throw new InvalidAssertionError(
      text,
      `unknown scenario "${scenario}" (known: ${known.scenarios.join(', ')})`,
    );
  if (strategy !== '*' && !known.strategies.includes(strategy))
    throw new InvalidAssertionError(
      text,
      `unknown strategy "${strategy}" (known: ${known.strategies.join(', ')})`,
    );
  if (!ASSERTABLE_FIGURES.includes(figure))
    throw new InvalidAssertionError(
      text,
      `unknown figure "${figure}" (numeric figures: ${ASSERTABLE_FIGURES.filter((f) => !f.startsWith('failedByCode.')).join(', ')}, failedByCode.<STATUS>)`,
    );
  // Number() alone would take '' and '0x10'; a figure bound is a plain decimal.
  if (!/^-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(num))
    throw new InvalidAssertionError(text, `"${num}" is not a number`);
  return Object.freeze({
    text,
    scenario,
    strategy,
    figure: Object.freeze(figure.split('.')),
    op,
    value: Number(num),
  });
}

export interface AssertionOutcome {
  readonly assertion: LabAssertion;
  readonly ok: boolean;
  /** One line per run it was checked on, or why it could not be. */
  readonly details: readonly string[];
}

function figureValue(record: LabRunRecord, path: readonly string[]): number | null {
  // failedByCode lists only the codes that happened: any other code failed 0 times.
  if (path[0] === 'failedByCode') return record.failedByCode[path[1] as string] ?? 0;
  let v: unknown = record;
  for (const k of path) {
    if (v === null || typeof v !== 'object') return null;
    v = (v as Record<string, unknown>)[k];
  }
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

export function compare(a: number, op: AssertOp, b: number): boolean {
  switch (op) {
    case '==':
      return a === b;
    case '!=':
      return a !== b;
    case '<':
      return a < b;
    case '<=':
      return a <= b;
    case '>':
      return a > b;
    case '>=':
      return a >= b;
  }
}

export function checkAssertions(
  assertions: readonly LabAssertion[],
  records: readonly LabRunRecord[],
): AssertionOutcome[] {
  return assertions.map((a) => {
    const runs = records.filter(
      (r) =>
        (a.scenario === '*' || r.scenario === a.scenario) &&
        (a.strategy === '*' || r.strategy === a.strategy),
    );
    if (runs.length === 0) return { assertion: a, ok: false, details: ['matched no run of this lab'] };
    let ok = true;
    const details = runs.map((r) => {
      const where = `${r.scenario}/${r.strategy}`;
      const v = figureValue(r, a.figure);
      if (r.harness?.saturated) {
        ok = false;
        return `${where}: the run was saturated (${r.harness.reason}), so it cannot pass`;
      }
      if (v === null) {
        ok = false;
        return `${where}: ${a.figure.join('.')} has no value in this run`;
      }
      const held = compare(v, a.op, a.value);
      if (!held) ok = false;
      return `${where}: ${a.figure.join('.')} = ${v} ${held ? 'holds' : 'FAILS'} ${a.op} ${a.value}`;
    });
    return { assertion: a, ok, details };
  });
}
