// canary-shift's figure: does a strategy's traffic follow the route's weights? Between two
// set-weights steps the weight of the canary is fixed; from `settleMs` after a step (the route
// reaching the clients: the xDS server's or proxy's watch, then the push) to the next, the share of
// the strategy's successful RPCs its canary pods answered is measured and set against that weight.
//
// A weighted pick is a draw per RPC (grpc-js's weighted_target and the proxy both pick at random by
// weight), so a phase of n RPCs at weight w has a share with standard deviation 100·√(w(1−w)/n)
// points: a phase is off when |share − weight| > tolerancePct + 4 of those (a 50/50 phase of 60 RPCs
// is allowed 10 + 26 points; of 600, 10 + 8). Strategies that ignore the weights (an even spread over
// 3 stable and 2 canary pods gives ~40 %) are off in the 99/1 and 0/100 phases whatever n is.

import type { RpcRecordsView } from './metrics.js';
import type { ScenarioStep } from './scenario.js';

export interface CanaryPhase {
  /** The window measured, ms from the run's start: settleMs after its step to the next step. */
  readonly fromMs: number;
  readonly toMs: number;
  /** The canary's weight in %, of stable + canary. */
  readonly weightPct: number;
  /** Successful RPCs started in the window. */
  readonly rpcs: number;
  /** Of those, the % its canary pods answered; null when none succeeded. */
  readonly sharePct: number | null;
}

export interface CanaryFigures {
  readonly phases: readonly CanaryPhase[];
  /** The largest |share − weight| over the phases, in points; null when a phase has no share. */
  readonly maxErrorPct: number | null;
}

/** The windows of the scenario's weight phases (see the file comment). */
export function weightPhases(
  steps: readonly ScenarioStep[],
  durationMs: number,
  settleMs: number,
): Array<{ fromMs: number; toMs: number; weightPct: number }> {
  const sets = steps
    .filter((s): s is Extract<ScenarioStep, { action: 'set-weights' }> => s.action === 'set-weights')
    .sort((a, b) => a.atMs - b.atMs);
  return sets.map((s, i) => {
    const total = s.weights.stable + s.weights.canary;
    return {
      fromMs: s.atMs + settleMs,
      toMs: sets[i + 1]?.atMs ?? durationMs,
      weightPct: total === 0 ? 0 : (100 * s.weights.canary) / total,
    };
  });
}

/** The canary's share per phase of one strategy's RPCs; `isCanary` tells a canary pod by name. */
export function canaryFigures(
  records: RpcRecordsView,
  isCanary: (pod: string) => boolean,
  phases: ReadonlyArray<{ fromMs: number; toMs: number; weightPct: number }>,
): CanaryFigures {
  const canaryIndex = records.podNames.map(isCanary);
  const out = phases.map((p) => {
    let rpcs = 0;
    let canary = 0;
    for (let i = 0; i < records.length; i++) {
      const t = records.tMs[i] as number;
      if (t < p.fromMs || t >= p.toMs || records.code[i] !== 0) continue;
      rpcs++;
      if (canaryIndex[records.pod[i] as number] === true) canary++;
    }
    return { ...p, rpcs, sharePct: rpcs === 0 ? null : (100 * canary) / rpcs };
  });
  const errors = out.map((p) => (p.sharePct === null ? null : Math.abs(p.sharePct - p.weightPct)));
  return {
    phases: out,
    maxErrorPct: errors.some((e) => e === null) ? null : Math.max(0, ...(errors as number[])),
  };
}

/** Why the share did not follow the weights (one clause per phase that is off), or undefined. */
export function canaryVerdict(
  figures: CanaryFigures,
  tolerancePct: number,
  canaryName: string,
): string | undefined {
  const off: string[] = [];
  for (const p of figures.phases) {
    const window = `${Math.round(p.fromMs)}–${Math.round(p.toMs)} ms`;
    if (p.sharePct === null) {
      off.push(`no RPC succeeded in ${window} (weight ${fmt(p.weightPct)} %)`);
      continue;
    }
    const w = p.weightPct / 100;
    const allowed = tolerancePct + 4 * 100 * Math.sqrt((w * (1 - w)) / p.rpcs);
    if (Math.abs(p.sharePct - p.weightPct) > allowed)
      off.push(
        `${canaryName} served ${fmt(p.sharePct)} % of ${p.rpcs} RPCs in ${window} at weight ${fmt(p.weightPct)} % (allowed ±${fmt(allowed)})`,
      );
  }
  return off.length === 0
    ? undefined
    : `the canary's share did not follow the route's weights: ${off.join('; ')}`;
}

/** One progress line: the share per phase. */
export function canaryLine(strategy: string, figures: CanaryFigures, canaryName: string): string {
  const phases = figures.phases.map(
    (p) => `${p.sharePct === null ? '–' : fmt(p.sharePct)} % at weight ${fmt(p.weightPct)} (${p.rpcs} RPCs)`,
  );
  return `${strategy}: ${canaryName} served ${phases.join(', ')}`;
}

function fmt(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(1);
}
