// Config fields shared by grpc-kube's policies, and the field-by-field JSON checks behind their
// createFromJson(). grpc-js hands createFromJson() the raw service-config object; every bad or
// unknown field is rejected with an InvalidOptionError naming the field (`grpc_kube_p2c.slowStart.windowMs`),
// which grpc-js turns into a service-config error instead of silently running with defaults.

import { InvalidOptionError } from '../errors.js';
import { outlierDetectionToJson, parseOutlierDetection, type OutlierDetectionConfig } from './outlier.js';

export interface SlowStartConfig {
  /** Endpoints younger than this ramp up; 0 turns slow start off. */
  readonly windowMs: number;
  /** Envoy's aggression: 1 is linear, larger ramps faster at first. */
  readonly aggression: number;
  /** Floor of the weight factor while ramping, in percent (Envoy's min_weight_percent). */
  readonly minWeightPercent: number;
}

export interface CommonPolicyConfig {
  /** Zone of this client; endpoints hinted for (or located in) it are preferred. */
  readonly localZone: string | undefined;
  /** Below this share of connected endpoints, balance over all eligible ones (Envoy's panic mode). 0 = off. */
  readonly panicThresholdPercent: number;
  readonly slowStart: SlowStartConfig | undefined;
  /** gRFC A50 ejection; absent = off (pushback is honoured either way). */
  readonly outlierDetection: OutlierDetectionConfig | undefined;
}

export const SLOW_START_DEFAULTS = Object.freeze({ aggression: 1, minWeightPercent: 10 });

type JsonObject = Record<string, unknown>;

export function asObject(value: unknown, field: string): JsonObject {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidOptionError(field, `must be a JSON object, got ${describe(value)}`);
  }
  return value as JsonObject;
}

export function rejectUnknown(obj: JsonObject, allowed: readonly string[], field: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) {
      throw new InvalidOptionError(
        `${field}.${key}`,
        `is not a known field; known fields: ${allowed.join(', ')}`,
      );
    }
  }
}

export function readNumber(
  obj: JsonObject,
  key: string,
  field: string,
  range: { min: number; max?: number; minExclusive?: boolean },
  fallback: number,
): number {
  const value = obj[key];
  if (value === undefined) return fallback;
  const name = `${field}.${key}`;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new InvalidOptionError(name, `must be a finite number, got ${describe(value)}`);
  }
  if (range.minExclusive === true ? value <= range.min : value < range.min) {
    throw new InvalidOptionError(
      name,
      `must be ${range.minExclusive === true ? '>' : '>='} ${range.min}, got ${value}`,
    );
  }
  if (range.max !== undefined && value > range.max) {
    throw new InvalidOptionError(name, `must be <= ${range.max}, got ${value}`);
  }
  return value;
}

export function readOptionalString(obj: JsonObject, key: string, field: string): string | undefined {
  const value = obj[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') {
    throw new InvalidOptionError(`${field}.${key}`, `must be a non-empty string, got ${describe(value)}`);
  }
  return value;
}

export const COMMON_FIELDS = ['localZone', 'panicThresholdPercent', 'slowStart', 'outlierDetection'] as const;

export function parseCommon(obj: JsonObject, field: string): CommonPolicyConfig {
  const localZone = readOptionalString(obj, 'localZone', field);
  const panicThresholdPercent = readNumber(obj, 'panicThresholdPercent', field, { min: 0, max: 100 }, 0);
  let slowStart: SlowStartConfig | undefined;
  if (obj.slowStart !== undefined) {
    const ssField = `${field}.slowStart`;
    const ss = asObject(obj.slowStart, ssField);
    rejectUnknown(ss, ['windowMs', 'aggression', 'minWeightPercent'], ssField);
    if (ss.windowMs === undefined) throw new InvalidOptionError(`${ssField}.windowMs`, 'is required');
    const windowMs = readNumber(ss, 'windowMs', ssField, { min: 0 }, 0);
    const aggression = readNumber(
      ss,
      'aggression',
      ssField,
      { min: 0, minExclusive: true },
      SLOW_START_DEFAULTS.aggression,
    );
    const minWeightPercent = readNumber(
      ss,
      'minWeightPercent',
      ssField,
      { min: 0, max: 100 },
      SLOW_START_DEFAULTS.minWeightPercent,
    );
    slowStart = windowMs > 0 ? Object.freeze({ windowMs, aggression, minWeightPercent }) : undefined;
  }
  const outlierDetection =
    obj.outlierDetection === undefined
      ? undefined
      : parseOutlierDetection(obj.outlierDetection, `${field}.outlierDetection`);
  return Object.freeze({ localZone, panicThresholdPercent, slowStart, outlierDetection });
}

/** The JSON form of the common fields, omitting defaults so a round trip is stable. */
export function commonToJson(c: CommonPolicyConfig): JsonObject {
  const out: JsonObject = {};
  if (c.localZone !== undefined) out.localZone = c.localZone;
  if (c.panicThresholdPercent !== 0) out.panicThresholdPercent = c.panicThresholdPercent;
  if (c.slowStart !== undefined) out.slowStart = { ...c.slowStart };
  if (c.outlierDetection !== undefined) out.outlierDetection = outlierDetectionToJson(c.outlierDetection);
  return out;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') return String(value);
  return typeof value;
}

/**
 * Envoy's slow-start weight factor: max(minWeightPercent/100, (age/window)^(1/aggression)), and 1
 * once the endpoint is older than the window.
 */
export function slowStartFactor(ageMs: number, s: SlowStartConfig): number {
  if (ageMs >= s.windowMs) return 1;
  const t = Math.max(ageMs, 0) / s.windowMs;
  return Math.max(s.minWeightPercent / 100, Math.pow(t, 1 / s.aggression));
}
