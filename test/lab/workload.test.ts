import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { ClusterIpForwarder } from '@grpc-kube/lab/internal/lab/clusterip.js';
import { computeRunRecord, distinctPodsPerClient } from '@grpc-kube/lab/internal/lab/metrics.js';
import { parsePodConfig, startPod, type RunningPod } from '@grpc-kube/lab/internal/lab/pod-main.js';
import { incompleteRun } from '@grpc-kube/lab/internal/lab/runner.js';
import {
  FAILURE_SAMPLES,
  longestIdle,
  RpcLog,
  runWorkload,
  startWorkload,
} from '@grpc-kube/lab/internal/lab/workload.js';

type T = { after: (fn: () => unknown) => void };

async function pods(t: T, base: string, delays: number[]): Promise<RunningPod[]> {
  const out: RunningPod[] = [];
  let port = 0;
  for (const [i, responseDelayMs] of delays.entries()) {
    const pod = await startPod(
      parsePodConfig({ name: `pod-${i + 1}`, host: `${base}.${i + 1}`, port, responseDelayMs }),
    );
    t.after(() => pod.close());
    port = pod.port;
    out.push(pod);
  }
  return out;
}

const ROUND_ROBIN = { 'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }) };

function staticTarget(list: RunningPod[]): string {
  return 'ipv4:' + list.map((p) => `${p.config.host}:${p.port}`).join(',');
}

async function freePort(host: string): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

test('RpcLog grows, interns pod names, stores failures as pod -1', () => {
  const log = new RpcLog();
  for (let i = 0; i < 5000; i++)
    log.push(i * 0.5, i % 7, i % 3 === 0 ? 14 : 0, i % 3 === 0 ? '' : `p${i % 2}`, i % 4);
  assert.equal(log.length, 5000);
  assert.deepEqual(log.podNames, ['p1', 'p0']);
  assert.equal(log.tMs[4999], 2499.5);
  assert.equal(log.latencyMs[4999], 4999 % 7);
  assert.equal(log.code[3], 14);
  assert.equal(log.pod[3], -1);
  assert.equal(log.pod[1], 0);
  assert.equal(log.pod[2], 1);
  assert.equal(log.client[4999], 3);
  assert.equal(log.tMs.length, 5000);
});

/** Float32 latencies: an end may come out a few µs past the next start. */
const EPSILON_MS = 0.5;

/** The RPCs of `log` by start time, with their end times (one clock), in rounds of `size`. */
function roundsOf(log: RpcLog, size = 10): Array<Array<{ start: number; end: number; pod: string }>> {
  const rpcs = Array.from({ length: log.length }, (_, i) => ({
    start: log.tMs[i] as number,
    end: (log.tMs[i] as number) + (log.latencyMs[i] as number),
    pod: log.podNames[log.pod[i] as number] ?? '',
  })).sort((a, b) => a.start - b.start);
  const out = [];
  for (let k = 0; k < rpcs.length; k += size) out.push(rpcs.slice(k, k + size));
  return out;
}

/**
 * Whether an RPC of `slowPod` was overtaken: while it was in flight, another RPC started, ended, and
 * a further one started after that. Rounds never allow it (a round waits for all of its RPCs).
 */
function overtaken(log: RpcLog, slowPod: string): boolean {
  const rpcs = roundsOf(log, 1).map((r) => r[0] as { start: number; end: number; pod: string });
  for (const slow of rpcs.filter((r) => r.pod === slowPod))
    for (const m of rpcs)
      if (m !== slow && m.start >= slow.start && m.end < slow.end)
        if (rpcs.some((i) => i.start > m.end + EPSILON_MS && i.start < slow.end - EPSILON_MS)) return true;
  return false;
}

test('rounds (the east-west demo): ten concurrent RPCs, wait for all, loop; round_robin spreads them evenly', async (t) => {
  const list = await pods(t, '127.0.9', [0, 0, 0]);
  // A count-bounded run for the spread: however slowly the machine brings the connections up, the
  // second half of 30 rounds runs over all three.
  const even = await runWorkload({
    target: staticTarget(list),
    channelOptions: ROUND_ROBIN,
    durationMs: 60_000,
    maxRpcs: 300,
  });
  const perPod = new Map<string, number>();
  for (const round of roundsOf(even).slice(15))
    for (const rpc of round) perPod.set(rpc.pod, (perPod.get(rpc.pod) ?? 0) + 1);
  assert.deepEqual([...perPod.keys()].sort(), ['pod-1', 'pod-2', 'pod-3']);
  const counts = [...perPod.values()];
  assert.ok(Math.max(...counts) - Math.min(...counts) <= 10, `round_robin even: ${counts}`);

  // A time-bounded run for the duration's semantics.
  const log = await runWorkload({ target: staticTarget(list), channelOptions: ROUND_ROBIN, durationMs: 400 });
  t.diagnostic(`${log.length} RPCs in 400 ms`);
  assert.ok(log.length >= 10, `${log.length} RPCs: the first round starts at once`);
  assert.equal(log.length % 10, 0, 'only whole rounds');
  const rec = computeRunRecord({
    scenario: 's',
    strategy: 'x',
    records: log,
    timeline: [],
    steadyWindowMs: [0, 1],
  });
  assert.equal(rec.failed, 0);
  assert.equal(rec.successRate, 1);
  // A round starts only while time is left (400 ms); its ten RPCs start one after another, so the
  // last round may straddle the bound — or lie wholly past it, when the clock crossed 400 ms between
  // the round's check and its first RPC (a hair, or a stall) — but no further round starts: per
  // client, at most one round's RPCs start at or after 400 ms.
  const late = new Map<number, number>();
  for (let i = 0; i < log.length; i++) {
    assert.ok((log.tMs[i] as number) >= 0);
    if ((log.tMs[i] as number) >= 400)
      late.set(log.client[i] as number, (late.get(log.client[i] as number) ?? 0) + 1);
  }
  for (const [client, n] of late)
    assert.ok(n <= 10, `client ${client}: ${n} RPCs started after the duration`);
});

test('maxRpcs bounds the run exactly', async (t) => {
  const list = await pods(t, '127.0.10', [0]);
  const log = await runWorkload({ target: staticTarget(list), durationMs: 60_000, maxRpcs: 95 });
  assert.equal(log.length, 95);
});

test('a slow pod holds every round back (rounds), not the independent loops', async (t) => {
  const list = await pods(t, '127.0.11', [100, 0, 0]);
  // Bounded by count, not time: the claims below are about order, which no stall changes.
  const opts = { target: staticTarget(list), channelOptions: ROUND_ROBIN, durationMs: 60_000, maxRpcs: 150 };
  const roundsLog = await runWorkload({ ...opts, mode: 'rounds' });
  const rounds = roundsOf(roundsLog);
  assert.equal(roundsLog.length, 150);
  for (const [k, round] of rounds.entries()) {
    // Ten RPCs start together: all before the first of them ends.
    const lastStart = Math.max(...round.map((r) => r.start));
    assert.ok(lastStart <= Math.min(...round.map((r) => r.end)), `round ${k} starts together`);
    // The next ten only once the slowest has answered.
    const prevEnd = Math.max(...(rounds[k - 1] ?? []).map((r) => r.end));
    if (k > 0)
      assert.ok((round[0]?.start ?? 0) >= prevEnd - EPSILON_MS, `round ${k} waited for round ${k - 1}`);
  }
  assert.ok(
    rounds.some((round) => round.some((r) => r.pod === 'pod-1')),
    'the slow pod served some rounds',
  );
  assert.equal(overtaken(roundsLog, 'pod-1'), false);
  // Independent loops: a loop on a fast pod goes on at once, while the slow pod's RPC is in flight.
  const loopsLog = await runWorkload({ ...opts, mode: 'loops' });
  assert.equal(overtaken(loopsLog, 'pod-1'), true, 'loops overtake the slow pod');
});

test('pacingMs spaces the rounds', async (t) => {
  const list = await pods(t, '127.0.16', [0]);
  const log = await runWorkload({
    target: staticTarget(list),
    durationMs: 60_000,
    maxRpcs: 60,
    pacingMs: 50,
  });
  const starts = Array.from(log.tMs).sort((a, b) => a - b);
  assert.equal(log.length, 60);
  for (let k = 10; k < starts.length; k += 10) {
    assert.ok(
      (starts[k] as number) - (starts[k - 10] as number) >= 49,
      `round ${k / 10} began 50 ms after the last`,
    );
  }
});

test('several clients behind a ClusterIP: each client channel reaches one pod', async (t) => {
  const list = await pods(t, '127.0.12', [0, 0, 0]);
  const values = [0.1, 0.5, 0.9, 0.2];
  let k = 0;
  const fwd = new ClusterIpForwarder({
    host: '127.0.1.10',
    port: 0,
    random: () => values[k++ % values.length] as number,
    backends: list.map((p) => ({ host: p.config.host, port: p.port })),
  });
  t.after(() => fwd.close());
  await fwd.listen();
  // Each client starts its first round at once, so 80 RPCs reach every client however slow the machine.
  const log = await runWorkload({
    target: `ipv4:${fwd.address}`,
    clients: 4,
    durationMs: 60_000,
    maxRpcs: 80,
  });
  assert.deepEqual(distinctPodsPerClient(log, 4), [1, 1, 1, 1]);
  assert.deepEqual(
    [0, 1, 2, 3].map((c) => {
      for (let i = 0; i < log.length; i++) if (log.client[i] === c) return log.podNames[log.pod[i] as number];
      return undefined;
    }),
    ['pod-1', 'pod-2', 'pod-3', 'pod-1'],
  );
  assert.equal(fwd.picks.size, 3, 'four separate connections, not one shared subchannel');
});

test('failures are recorded with their status; failurePauseMs throttles a failing client', async () => {
  const port = await freePort('127.0.13.1');
  const log = await runWorkload({ target: `ipv4:127.0.13.1:${port}`, durationMs: 300, failurePauseMs: 50 });
  assert.ok(log.length > 0 && log.length <= 70, `${log.length} RPCs`);
  for (let i = 0; i < log.length; i++) {
    assert.equal(log.code[i], grpc.status.UNAVAILABLE);
    assert.equal(log.pod[i], -1);
  }
});

test('failures(): the first failed RPCs keep what grpc-js said of them (a deadline: where the time went)', async (t) => {
  const list = await pods(t, '127.0.17', [400]);
  const w = startWorkload({ target: staticTarget(list), durationMs: 250, deadlineMs: 100, concurrency: 8 });
  const log = await w.done;
  assert.ok(log.length > FAILURE_SAMPLES, `${log.length} RPCs`);
  const f = w.failures();
  assert.equal(f.length, FAILURE_SAMPLES, 'the first ones only');
  for (const x of f) {
    assert.equal(x.code, grpc.status.DEADLINE_EXCEEDED);
    assert.equal(x.status, 'DEADLINE_EXCEEDED');
    assert.equal(x.client, 0);
    assert.ok(x.tMs >= 0, `started at ${x.tMs} ms`);
    // grpc-js names where the call's time went and the pod it was on.
    assert.match(x.details, /Deadline exceeded/);
    assert.match(x.details, /remote_addr=127\.0\.17\.\d+:\d+/);
  }
  t.diagnostic(f[0]?.details ?? '');
});

test('deadline: a pod slower than deadlineMs yields DEADLINE_EXCEEDED at the deadline', async (t) => {
  const list = await pods(t, '127.0.14', [400]);
  const log = await runWorkload({
    target: staticTarget(list),
    durationMs: 250,
    deadlineMs: 100,
    concurrency: 2,
  });
  assert.ok(log.length >= 2);
  for (let i = 0; i < log.length; i++) {
    assert.equal(log.code[i], grpc.status.DEADLINE_EXCEEDED);
    // DEADLINE_EXCEEDED, not the answer at 400 ms; at least the deadline (no upper bound on a loaded machine).
    const lat = log.latencyMs[i] as number;
    assert.ok(lat >= 95, `latency ${lat}`);
  }
  t.diagnostic(`latencies ${Array.from(log.latencyMs, (l) => l.toFixed(0)).join(' ')} ms (deadline 100)`);
});

test('stop() ends a long run early; tMs is measured from originMs on the given clock', async (t) => {
  const list = await pods(t, '127.0.15', [0]);
  const clock = (): number => performance.now();
  const run = startWorkload({
    target: staticTarget(list),
    durationMs: 60_000,
    clock,
    originMs: clock() - 1000,
  });
  await new Promise((r) => setTimeout(r, 150));
  const t0 = performance.now();
  const log = await run.stop();
  t.diagnostic(`stop() took ${(performance.now() - t0).toFixed(0)} ms`);
  assert.ok(performance.now() - t0 < 30_000, 'ended long before its 60 s');
  assert.equal(run.inFlight(), 0);
  assert.equal(run.started(), log.length);
  for (let i = 0; i < log.length; i++) assert.ok((log.tMs[i] as number) >= 1000);
  assert.equal(await run.done, log);
});

test('bad options are typed errors naming the field', () => {
  const bad: [Record<string, unknown>, string][] = [
    [{ target: '', durationMs: 1 }, 'target'],
    [{ target: 'x', durationMs: 0 }, 'durationMs'],
    [{ target: 'x', durationMs: 1, clients: 0 }, 'clients'],
    [{ target: 'x', durationMs: 1, concurrency: 1.5 }, 'concurrency'],
    [{ target: 'x', durationMs: 1, mode: 'burst' }, 'mode'],
    [{ target: 'x', durationMs: 1, failurePauseMs: -1 }, 'failurePauseMs'],
    [{ target: 'x', durationMs: 1, pacingMs: 0.5 }, 'pacingMs'],
  ];
  for (const [opts, field] of bad) {
    assert.throws(() => startWorkload(opts as never), { code: 'GK_ERR_INVALID_OPTION', field });
  }
});

test('RpcLog.renamePods: labels become pod names, labels naming one pod merge', () => {
  const log = new RpcLog();
  log.push(0, 1, 0, '10.0.0.1:50051', 0);
  log.push(1, 1, 0, '10.0.0.2:50051', 0);
  log.push(2, 1, 14, '', 1);
  log.push(3, 1, 0, '10.0.0.3:50051', 1);
  const names: Record<string, string> = {
    '10.0.0.1:50051': 'a',
    '10.0.0.2:50051': 'b',
    '10.0.0.3:50051': 'a',
  };
  log.renamePods((l) => names[l] ?? l);
  assert.deepEqual(log.podNames, ['a', 'b']);
  assert.deepEqual([...log.pod], [0, 1, -1, 0]);
  log.push(4, 1, 0, 'b', 0);
  assert.deepEqual([...log.pod], [0, 1, -1, 0, 1], 'later pushes use the merged index');
});

test('longestIdle: the longest stretch of the run without an RPC start, head and tail included, in any order', () => {
  assert.deepEqual(longestIdle([400, 0, 2400, 200], 5400), { fromMs: 2400, toMs: 5400 });
  assert.deepEqual(longestIdle([3000, 3100, 5300], 5400), { fromMs: 0, toMs: 3000 });
  assert.deepEqual(longestIdle([0, 100, 2100, 2200, 4000], 4100), { fromMs: 100, toMs: 2100 });
  assert.deepEqual(longestIdle([], 5400), { fromMs: 0, toMs: 5400 });
});

/** Start times of `loops` loops paced `pacingMs` apart from 0 until `untilMs`. */
function pacedStarts(loops: number, pacingMs: number, untilMs: number): number[] {
  const out: number[] = [];
  for (let t = 0; t < untilMs; t += pacingMs) for (let k = 0; k < loops; k++) out.push(t + k);
  return out;
}

test('incompleteRun: a workload that stopped starting RPCs at 2.4 s of a 5.4 s run is reported, a full one is not', () => {
  // The reported run: 5 loops paced 200 ms, 60 RPCs, then nothing for the last 3 s.
  const base = {
    strategy: 'kubernetes',
    durationMs: 5400,
    deadlineMs: 1000,
    pacingMs: 200,
    failurePauseMs: 0,
  };
  const short = incompleteRun({
    ...base,
    tMs: pacedStarts(5, 200, 2400),
    loopDelayMsMax: 70,
    ended: { by: 'duration', atMs: 5401 },
  });
  assert.ok(short);
  assert.equal(short.rpcs, 60);
  assert.deepEqual([short.idleFromMs, short.idleToMs], [2204, 5400]);
  assert.match(short.reason, /started no RPC from 2\.2 to 5\.4 s of the 5\.4 s run \(60 RPCs/);
  assert.match(short.reason, /stopped by duration at 5\.4 s; client event loop late by up to 70 ms/);
  // The same run in full, and one whose RPCs all waited their whole deadline once: both covered it.
  const full = pacedStarts(5, 200, 5400);
  assert.equal(incompleteRun({ ...base, tMs: full, loopDelayMsMax: 70, ended: undefined }), undefined);
  // (the last RPCs started at 1.8 s ran to their 1 s deadline; the loops went on at 2.8 s)
  const slow = [...pacedStarts(5, 200, 2000), ...pacedStarts(5, 200, 2600).map((t) => t + 2800)];
  assert.equal(incompleteRun({ ...base, tMs: slow, loopDelayMsMax: 70, ended: undefined }), undefined);
  // A stalled event loop covers nothing while it stalls: reported too, with the stall in the reason.
  const stalled = incompleteRun({
    ...base,
    tMs: full.filter((t) => t < 2400 || t > 5000),
    loopDelayMsMax: 2600,
    ended: undefined,
  });
  assert.match(stalled?.reason ?? '', /late by up to 2600 ms/);
});

test('ended(): a workload says why and when it stopped starting RPCs — its duration, its budget, or stop()', async (t) => {
  const list = await pods(t, '127.0.16', [0]);
  const target = staticTarget(list);
  const byDuration = startWorkload({
    target,
    durationMs: 300,
    concurrency: 2,
    mode: 'loops',
    pacingMs: 20,
    deadlineMs: 5000,
  });
  assert.equal(byDuration.ended(), undefined);
  const log = await byDuration.done;
  assert.equal(byDuration.ended()?.by, 'duration');
  assert.ok((byDuration.ended()?.atMs ?? 0) >= 300);
  // It covered its run: no stretch without a start longer than a loop's turn (its deadline and pause).
  assert.equal(
    incompleteRun({
      strategy: 's',
      tMs: log.tMs,
      durationMs: 300,
      deadlineMs: 5000,
      pacingMs: 20,
      failurePauseMs: 0,
      loopDelayMsMax: 0,
      ended: byDuration.ended(),
    }),
    undefined,
  );

  const byBudget = startWorkload({ target, durationMs: 60_000, maxRpcs: 3, deadlineMs: 5000 });
  await byBudget.done;
  assert.equal(byBudget.ended()?.by, 'budget');

  const stopped = startWorkload({
    target,
    durationMs: 60_000,
    mode: 'loops',
    concurrency: 1,
    pacingMs: 20,
    deadlineMs: 5000,
  });
  while (stopped.log.length === 0) await new Promise((r) => setTimeout(r, 10));
  const early = await stopped.stop();
  assert.equal(stopped.ended()?.by, 'stopped');
  const short = incompleteRun({
    strategy: 's',
    tMs: early.tMs,
    durationMs: 60_000,
    deadlineMs: 5000,
    pacingMs: 20,
    failurePauseMs: 0,
    loopDelayMsMax: 0,
    ended: stopped.ended(),
  });
  assert.match(short?.reason ?? '', /stopped by stopped at/);
});
