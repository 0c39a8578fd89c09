import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { INSTRUMENTS } from 'grpc-kube/internal/metrics/instruments.js';

// docs/metrics.md's instrument table, row for row, against the code's table: same names, kinds,
// units and attributes, and every attribute explained.
test('docs/metrics.md lists every instrument with its kind, unit and attributes, and nothing else', () => {
  const doc = readFileSync(fileURLToPath(new URL('../../../docs/metrics.md', import.meta.url)), 'utf8');
  const code = (cell: string): string[] => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1] as string);
  const documented = new Map<string, string>();
  const explained = new Set<string>();
  for (const line of doc.split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length === 7) {
      const [, name, kind, unit, attrs] = cells as [string, string, string, string, string];
      const n = code(name)[0];
      if (n !== undefined) documented.set(n, JSON.stringify([kind, code(unit)[0], code(attrs).sort()]));
    } else if (cells.length === 4) {
      const a = code(cells[1] as string)[0];
      if (a !== undefined) explained.add(a);
    }
  }
  const expected = new Map(
    Object.entries(INSTRUMENTS).map(([n, s]) => [
      n,
      JSON.stringify([s.kind, s.unit, [...s.attributes].sort()]),
    ]),
  );
  assert.deepEqual(documented, expected);
  const attributes = new Set(Object.values(INSTRUMENTS).flatMap((s) => s.attributes));
  assert.deepEqual(
    [...attributes].filter((a) => !explained.has(a)),
    [],
  );
});
