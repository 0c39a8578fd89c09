// Lab runs in tests, honest under load: a run whose harness says it was saturated measured the
// machine, not the strategy, so its figures cannot be asserted. It is re-run, at most `attempts`
// times; if every attempt was saturated the test fails with the reasons — never a silent pass.

import { spawn } from 'node:child_process';
import type { TestContext } from 'node:test';
import type { LabRunRecord } from '@grpc-kube/lab/internal/lab/metrics.js';

export async function unsaturatedLab<T>(
  t: TestContext,
  run: () => Promise<T>,
  records: (result: T) => readonly LabRunRecord[],
  attempts = 3,
): Promise<T> {
  const reasons: string[] = [];
  for (let i = 1; i <= attempts; i++) {
    const result = await run();
    const saturated = records(result).find((r) => r.harness?.saturated === true);
    if (saturated === undefined) return result;
    const why = `attempt ${i}: ${saturated.scenario}/${saturated.strategy}: ${saturated.harness?.reason}`;
    reasons.push(why);
    t.diagnostic(`saturated, re-running: ${why}`);
  }
  throw new Error(`every lab run was saturated, so none can be asserted:\n${reasons.join('\n')}`);
}

/** Run `node <args>` (the CLI, as a user runs it) to its exit; its output as text. */
export function runNode(
  args: readonly string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('exit', (c) => resolve({ code: c, stdout: out, stderr: err }));
  });
}
