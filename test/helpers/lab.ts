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
  /**
   * The test's assertions on a result (throwing when one fails). With it, a saturated run whose
   * assertions all hold is accepted: load can make a strategy lose RPCs or answer late, not hide a
   * loss or a late answer; a saturated run that fails them is re-run. Without it, any saturated run
   * is re-run.
   */
  holds?: (result: T) => void,
): Promise<T> {
  const reasons: string[] = [];
  for (let i = 1; i <= attempts; i++) {
    const result = await run();
    const saturated = records(result).find((r) => r.harness?.saturated === true);
    if (saturated === undefined) {
      holds?.(result);
      return result;
    }
    const why = `attempt ${i}: ${saturated.scenario}/${saturated.strategy}: ${saturated.harness?.reason}`;
    if (holds !== undefined) {
      try {
        holds(result);
        t.diagnostic(`saturated, but every assertion held: ${why}`);
        return result;
      } catch (err) {
        reasons.push(`${why}; and: ${(err as Error).message.split('\n')[0]}`);
        t.diagnostic(`saturated and an assertion failed, re-running: ${why}`);
        continue;
      }
    }
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
