// Lab scenarios: JSON files validated against a schema at the edge, then frozen. A scenario is a
// starting Deployment and a timeline of steps (scale, rollout, kill, API outage, canary weights, a
// slow pod). Times are in ms from the start of the workload; `--quick` scales them all by timeScale.

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { packageRoot } from './paths.js';

export const SCENARIO_NAMES = [
  'scale-up',
  'scale-down',
  'rolling-update',
  'pod-kill',
  'api-outage',
  'canary-shift',
  'slow-pod',
  'blackhole',
  'overload',
  'overload-retry',
  'api-outage-during-rollout',
] as const;
export type ScenarioName = (typeof SCENARIO_NAMES)[number];

/**
 * What kill-pods sends: SIGKILL (crash), SIGTERM (shutdown), SIGSTOP (the pod stops answering and
 * sends no RST: a blackhole on the embedded cluster), SIGUSR2 (the lab pod turns overloaded and sheds
 * every call with RESOURCE_EXHAUSTED and pushback).
 */
export const POD_SIGNALS = ['SIGKILL', 'SIGTERM', 'SIGSTOP', 'SIGUSR2'] as const;
export type PodSignal = (typeof POD_SIGNALS)[number];

export type ScenarioStep =
  | { atMs: number; action: 'scale'; replicas: number }
  | { atMs: number; action: 'rollout' }
  | { atMs: number; action: 'kill-pods'; count: number; signal: PodSignal }
  | { atMs: number; action: 'api-down'; forMs: number }
  | { atMs: number; action: 'set-weights'; weights: { stable: number; canary: number } };

export interface Scenario {
  readonly name: ScenarioName;
  readonly description: string;
  readonly replicas: number;
  readonly maxSurge: number;
  readonly maxUnavailable: number;
  /** Per-RPC deadline of the workload. */
  readonly deadlineMs: number;
  readonly durationMs: number;
  /** Window over which balanceMaxOverMean is measured. */
  readonly steady: { readonly fromMs: number; readonly toMs: number };
  /** Replicas of the canary Deployment (canary-shift only). */
  readonly canaryReplicas?: number;
  /** Service time every pod adds to each RPC. Default 0. */
  readonly responseDelayMs?: number;
  /** One of the replicas (a Deployment of its own behind the same Service) is `factor` times slower. */
  readonly slowPod?: { readonly factor: number };
  /** The `grpc-retry-pushback-ms` an overloaded pod sends. Default 1000 (the pod's). */
  readonly overloadPushbackMs?: number;
  /**
   * With set-weights steps: the canary's share of each strategy's RPCs is measured per weight phase
   * from `settleMs` after each step (not scaled by --quick: the route takes as long to arrive), and
   * a run whose share is off its weight by more than `tolerancePct` points (plus 4 standard
   * deviations of a random pick) fails (canary.ts).
   */
  readonly canaryShare?: { readonly settleMs: number; readonly tolerancePct: number };
  readonly steps: readonly ScenarioStep[];
}

const ms = { type: 'integer', minimum: 0, maximum: 600000 } as const;

export const SCENARIO_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: [
    'name',
    'description',
    'replicas',
    'maxSurge',
    'maxUnavailable',
    'deadlineMs',
    'durationMs',
    'steady',
    'steps',
  ],
  properties: {
    $schema: { type: 'string' },
    name: { enum: [...SCENARIO_NAMES] },
    description: { type: 'string' },
    replicas: { type: 'integer', minimum: 1, maximum: 50 },
    maxSurge: { type: 'integer', minimum: 0, maximum: 50 },
    maxUnavailable: { type: 'integer', minimum: 0, maximum: 50 },
    deadlineMs: { type: 'integer', minimum: 10, maximum: 60000 },
    durationMs: { type: 'integer', minimum: 1000, maximum: 600000 },
    canaryReplicas: { type: 'integer', minimum: 1, maximum: 50 },
    responseDelayMs: { type: 'integer', minimum: 0, maximum: 10000 },
    overloadPushbackMs: { type: 'integer', minimum: 0, maximum: 60000 },
    canaryShare: {
      type: 'object',
      additionalProperties: false,
      required: ['settleMs', 'tolerancePct'],
      properties: { settleMs: ms, tolerancePct: { type: 'number', minimum: 0, maximum: 100 } },
    },
    slowPod: {
      type: 'object',
      additionalProperties: false,
      required: ['factor'],
      properties: { factor: { type: 'number', minimum: 1, maximum: 1000 } },
    },
    steady: {
      type: 'object',
      additionalProperties: false,
      required: ['fromMs', 'toMs'],
      properties: { fromMs: ms, toMs: ms },
    },
    steps: {
      type: 'array',
      items: {
        oneOf: [
          step('scale', { replicas: { type: 'integer', minimum: 0, maximum: 50 } }),
          step('rollout', {}),
          step('kill-pods', {
            count: { type: 'integer', minimum: 1, maximum: 50 },
            signal: { enum: [...POD_SIGNALS] },
          }),
          step('api-down', { forMs: { type: 'integer', minimum: 100, maximum: 600000 } }),
          step('set-weights', {
            weights: {
              type: 'object',
              additionalProperties: false,
              required: ['stable', 'canary'],
              properties: {
                stable: { type: 'integer', minimum: 0, maximum: 100 },
                canary: { type: 'integer', minimum: 0, maximum: 100 },
              },
            },
          }),
        ],
      },
    },
  },
} as const;

function step(action: string, props: Record<string, unknown>): Record<string, unknown> {
  return {
    type: 'object',
    additionalProperties: false,
    required: ['atMs', 'action', ...Object.keys(props)],
    properties: { atMs: ms, action: { const: action }, ...props },
  };
}

const ajv = new Ajv({ allErrors: true });
const validate = ajv.compile(SCENARIO_SCHEMA);

export function parseScenario(source: string, value: unknown): Scenario {
  if (!validate(value)) {
    const why = (validate.errors ?? [])
      .map((e: ErrorObject) => `${e.instancePath || '/'} ${e.message ?? ''}`)
      .join('; ');
    throw new GrpcKubeError('GK_ERR_INVALID_SCENARIO', `scenario ${source} is invalid: ${why}`);
  }
  const s = value as unknown as Scenario;
  if (s.steady.toMs <= s.steady.fromMs || s.steady.toMs > s.durationMs) {
    throw new GrpcKubeError(
      'GK_ERR_INVALID_SCENARIO',
      `scenario ${source}: steady must satisfy fromMs < toMs <= durationMs`,
    );
  }
  for (const st of s.steps) {
    if (st.atMs >= s.durationMs) {
      throw new GrpcKubeError(
        'GK_ERR_INVALID_SCENARIO',
        `scenario ${source}: step ${st.action} at ${st.atMs} ms is after durationMs`,
      );
    }
  }
  return deepFreeze(structuredClone(s));
}

/** The same scenario with every time multiplied by `k` (for --quick). */
export function scaleScenario(s: Scenario, k: number): Scenario {
  const t = (x: number): number => Math.round(x * k);
  return deepFreeze({
    ...s,
    durationMs: t(s.durationMs),
    steady: { fromMs: t(s.steady.fromMs), toMs: t(s.steady.toMs) },
    steps: s.steps.map((st) =>
      'forMs' in st ? { ...st, atMs: t(st.atMs), forMs: t(st.forMs) } : { ...st, atMs: t(st.atMs) },
    ),
  });
}

export function scenarioDir(): string {
  return join(packageRoot(), 'scenarios');
}

export function loadScenarioFile(path: string): Scenario {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new GrpcKubeError(
      'GK_ERR_INVALID_SCENARIO',
      `scenario ${path} is not readable JSON: ${String(err)}`,
      { cause: err },
    );
  }
  return parseScenario(path, raw);
}

/** The built-in scenarios, in the order the lab runs them. */
export function builtinScenarios(): Scenario[] {
  const dir = scenarioDir();
  const files = new Set(readdirSync(dir));
  return SCENARIO_NAMES.filter((n) => files.has(`${n}.json`)).map((n) =>
    loadScenarioFile(join(dir, `${n}.json`)),
  );
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
