// What TLS costs, from one `grpc-kube lab --tls` run: the same scenarios ran with TLS and then in
// plaintext, so each (scenario, strategy) has a pair of records; this sets their latencies side by
// side (p50 and p99 of successful RPCs, TLS / plaintext and the ratio).

import type { LabRunRecord } from './metrics.js';
import { textTable } from './text-table.js';

export interface TlsCostRow {
  readonly scenario: string;
  readonly strategy: string;
  readonly tls: LabRunRecord['latencyMs'];
  readonly plain: LabRunRecord['latencyMs'];
  /** TLS over plaintext; null when either side has no figure. */
  readonly p50Ratio: number | null;
  readonly p99Ratio: number | null;
  /** Either run measured a saturated machine: its figures say little. */
  readonly saturated: boolean;
}

const ratio = (a: number | null, b: number | null): number | null =>
  a === null || b === null || b === 0 ? null : a / b;

/** One row per (scenario, strategy) that ran both ways, in the TLS runs' order. */
export function tlsCostRows(records: readonly LabRunRecord[]): TlsCostRow[] {
  const plain = new Map(records.filter((r) => !r.tls).map((r) => [`${r.scenario}\n${r.strategy}`, r]));
  const rows: TlsCostRow[] = [];
  for (const t of records) {
    if (!t.tls) continue;
    const p = plain.get(`${t.scenario}\n${t.strategy}`);
    if (p === undefined) continue;
    rows.push({
      scenario: t.scenario,
      strategy: t.strategy,
      tls: t.latencyMs,
      plain: p.latencyMs,
      p50Ratio: ratio(t.latencyMs.p50, p.latencyMs.p50),
      p99Ratio: ratio(t.latencyMs.p99, p.latencyMs.p99),
      saturated: t.harness?.saturated === true || p.harness?.saturated === true,
    });
  }
  return rows;
}

/** The terminal table `grpc-kube lab --tls` prints. */
export function tlsCostTable(records: readonly LabRunRecord[]): string {
  const f = (x: number | null, d: number): string => (x === null ? '–' : x.toFixed(d));
  const head = ['scenario', 'strategy', 'p50 ms tls/plain', 'p50 ×', 'p99 ms tls/plain', 'p99 ×', ''];
  const rows = tlsCostRows(records).map((r) => [
    r.scenario,
    r.strategy,
    `${f(r.tls.p50, 2)}/${f(r.plain.p50, 2)}`,
    f(r.p50Ratio, 2),
    `${f(r.tls.p99, 1)}/${f(r.plain.p99, 1)}`,
    f(r.p99Ratio, 2),
    r.saturated ? 'SATURATED' : '',
  ]);
  return `TLS cost (latency of successful RPCs, TLS run / plaintext run):\n${textTable(head, rows)}`;
}
