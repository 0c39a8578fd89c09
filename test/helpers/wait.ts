// The tests' one way to wait for a condition: poll it with a real deadline (bounded by time, and by
// count so a stuck clock cannot spin forever), and fail naming what was awaited.

import { setTimeout as delay } from 'node:timers/promises';

/**
 * Poll `check` (at most every `everyMs`) until it holds; throws naming `what` after `timeoutMs`.
 * The default cap is generous: it only bounds a hang, and a loaded machine may stall for seconds.
 */
export async function until(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  everyMs = 5,
  what = 'condition',
): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (let i = 0; i < 1_000_000; i++) {
    if (await check()) return;
    if (Date.now() > end) break;
    await delay(everyMs);
  }
  throw new Error(`${what}: not met within ${timeoutMs} ms`);
}

/** `until` for slower peers (a real control plane): names what it waits for first, polls every 25 ms. */
export function eventually(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 60_000,
): Promise<void> {
  return until(check, timeoutMs, 25, what);
}
