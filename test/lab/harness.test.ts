// The harness verdict and its inputs: /proc/stat arithmetic and the saturation rules with hand-made
// numbers, and the monitor against a real event-loop stall of this process.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { test } from 'node:test';
import {
  HarnessMonitor,
  SATURATION_LIMITS,
  busyPct,
  harnessVerdict,
  parseProcStat,
  raiseLabPriority,
  readAutogroupNice,
  type CpuTimes,
} from '@grpc-kube/lab/internal/lab/harness.js';

test('parseProcStat: busy = all but idle and iowait, over the first (all cores) line', () => {
  const t = parseProcStat('cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n');
  assert.deepEqual(t, { busy: 160, total: 1000 });
  assert.equal(parseProcStat('intr 1 2 3\n'), null);
  assert.equal(parseProcStat('cpu x y z\n'), null);
  assert.equal(parseProcStat(''), null);
});

test('busyPct: the share of busy jiffies between two readings', () => {
  assert.equal(busyPct({ busy: 100, total: 1000 }, { busy: 400, total: 1400 }), 75);
  assert.equal(busyPct(null, { busy: 1, total: 2 }), null);
  assert.equal(busyPct({ busy: 1, total: 2 }, { busy: 1, total: 2 }), null, 'no time passed');
});

test('harnessVerdict: each limit, relative to the deadline, names itself in the reason', () => {
  const d = { deadlineMs: 1000 };
  assert.deepEqual(harnessVerdict({ loopDelayMsP99: 20, loopDelayMsMax: 120, machineCpuBusyPct: 80 }, d), {
    saturated: false,
    reason: '',
  });
  const stall = harnessVerdict({ loopDelayMsP99: 20, loopDelayMsMax: 500, machineCpuBusyPct: 50 }, d);
  assert.equal(stall.saturated, true);
  assert.match(stall.reason, /stalled 500 ms at most \(limit 500: half the 1000 ms deadline\)/);
  const p99 = harnessVerdict({ loopDelayMsP99: 100, loopDelayMsMax: 200, machineCpuBusyPct: 50 }, d);
  assert.equal(p99.saturated, true);
  assert.match(p99.reason, /p99 delay was 100 ms \(limit 100/);
  // A full machine alone is not saturation; a full machine the client loop felt is.
  const full = SATURATION_LIMITS.cpuBusyPct;
  assert.equal(
    harnessVerdict({ loopDelayMsP99: 5, loopDelayMsMax: 40, machineCpuBusyPct: full }, d).saturated,
    false,
  );
  assert.equal(
    harnessVerdict({ loopDelayMsP99: 49, loopDelayMsMax: 90, machineCpuBusyPct: 99 }, d).saturated,
    false,
  );
  const cpu = harnessVerdict({ loopDelayMsP99: 50, loopDelayMsMax: 90, machineCpuBusyPct: 99.4 }, d);
  assert.equal(cpu.saturated, true);
  assert.match(
    cpu.reason,
    /CPU was 99.4 % busy \(limit 97 %\) and the client event loop felt it \(p99 delay 50 ms, limit 50/,
  );
  // A shorter deadline tightens the loop limits: 60 ms of stall is fine at 1 s, not at 100 ms.
  assert.equal(
    harnessVerdict({ loopDelayMsP99: 5, loopDelayMsMax: 60, machineCpuBusyPct: 10 }, d).saturated,
    false,
  );
  assert.equal(
    harnessVerdict({ loopDelayMsP99: 5, loopDelayMsMax: 60, machineCpuBusyPct: 10 }, { deadlineMs: 100 })
      .saturated,
    true,
  );
});

test('HarnessMonitor sees a real stall of this event loop and the CPU readings it is given', async () => {
  const readings: CpuTimes[] = [
    { busy: 0, total: 100 },
    { busy: 30, total: 200 },
    { busy: 90, total: 300 },
  ];
  let i = 0;
  const m = new HarnessMonitor({
    bucketMs: 50,
    cpuTimes: () => readings[Math.min(i++, readings.length - 1)] ?? null,
  });
  m.start();
  await new Promise((r) => setTimeout(r, 60));
  const end = performance.now() + 250;
  while (performance.now() < end) {
    // a 250 ms stall: no timer, no I/O callback runs meanwhile
  }
  await new Promise((r) => setTimeout(r, 30));
  const { figures, series } = m.stop(1000);
  // The stall is at least 250 ms whatever the load (more when the machine is busy).
  assert.ok(figures.loopDelayMsMax >= 240, `max ${figures.loopDelayMsMax}`);
  assert.ok(
    series.loopDelayMaxMs.some((v) => v >= 240),
    JSON.stringify(series.loopDelayMaxMs),
  );
  // CPU over the whole run: first to last reading taken (start, then one per bucket closed).
  assert.equal(figures.machineCpuBusyPct, 45);
  assert.equal(series.loopLimitMs, 500);
  assert.deepEqual(m.stop(), { figures, series }, 'stop() is idempotent');
});

test('raiseLabPriority raises the process and its autogroup (root), and puts both back', (t) => {
  assert.equal(readAutogroupNice('/autogroup-112 nice 0\n'), 0);
  assert.equal(readAutogroupNice('/autogroup-7 nice -5'), -5);
  assert.equal(readAutogroupNice('garbage'), undefined);
  if (process.getuid?.() !== 0) {
    t.skip('raising a priority needs root; without it the lab runs as it was started (a no-op)');
    return;
  }
  const group = (): number | undefined => {
    try {
      return readAutogroupNice(readFileSync('/proc/self/autogroup', 'utf8'));
    } catch {
      return undefined; // a kernel without autogroup
    }
  };
  const [nice0, group0] = [getPriority(), group()];
  const restore = raiseLabPriority(-7);
  try {
    assert.equal(getPriority(), Math.min(nice0, -7));
    if (group0 !== undefined) assert.equal(group(), Math.min(group0, -7));
  } finally {
    restore();
  }
  assert.equal(getPriority(), nice0);
  assert.equal(group(), group0);
});
