// The server kit against real grpc-js servers and clients on 127.0.0.1: readiness and holds as the
// grpc.health.v1 Check RPC reports them, the SIGTERM sequence in order (signals from an
// EventEmitter, waits from a delay the test releases), in-flight RPCs finishing after GOAWAY while
// new connections are refused, and force-close when the grace period runs out.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import diagnostics from 'node:diagnostics_channel';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import {
  createServerKit,
  maxConnectionAgeOptions,
  SERVER_CHANNEL_NAME,
  type DelayFn,
  type ServerKitEvent,
  type ServerKitOptions,
} from 'grpc-kube/internal/server/index.js';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';
import { echo, ECHO_SERVICE, type EchoHandler } from './echo.js';
import { until } from '../helpers/wait.js';

type HealthClient = grpc.Client & {
  check(
    req: { service: string },
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: { status: string }) => void,
  ): void;
};

const healthPkg = grpc.loadPackageDefinition(
  protoLoader.loadSync(healthProtoPath, { enums: String, keepCase: true, defaults: true }),
) as unknown as {
  grpc: { health: { v1: { Health: new (addr: string, creds: grpc.ChannelCredentials) => HealthClient } } };
};

function checkHealth(client: HealthClient, service = ''): Promise<string> {
  return new Promise((resolve) => {
    client.check({ service }, { deadline: Date.now() + 30_000 }, (err, res) =>
      resolve(err ? `ERROR ${grpc.status[err.code]}` : (res?.status ?? '?')),
    );
  });
}

/** A delay the test resolves by hand; `waits` lists the requested durations in order. */
function manualDelay(): {
  fn: DelayFn;
  waits: number[];
  release(i: number): void;
  until(n: number): Promise<void>;
} {
  const waits: number[] = [];
  const resolvers: Array<() => void> = [];
  return {
    waits,
    fn: (ms, signal) =>
      new Promise<void>((resolve) => {
        waits.push(ms);
        resolvers.push(resolve);
        signal.addEventListener('abort', () => resolve(), { once: true });
      }),
    release(i) {
      resolvers[i]?.();
    },
    async until(n) {
      // Bounded by time, not by a count of 2 ms sleeps (which a stalled machine can use up at once).
      const end = Date.now() + 30_000;
      while (waits.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 2));
      assert.ok(waits.length >= n, `expected ${n} waits, got ${waits.length}`);
    },
  };
}

function recordEvents(t: { after(fn: () => void): void }): ServerKitEvent[] {
  const events: ServerKitEvent[] = [];
  const onMessage = (m: unknown): void => {
    events.push(m as ServerKitEvent);
  };
  diagnostics.subscribe(SERVER_CHANNEL_NAME, onMessage);
  t.after(() => diagnostics.unsubscribe(SERVER_CHANNEL_NAME, onMessage));
  return events;
}

async function start(handler: EchoHandler, opts: ServerKitOptions) {
  const server = new grpc.Server();
  server.addService(ECHO_SERVICE, { Echo: handler as grpc.handleUnaryCall<Buffer, Buffer> });
  const kit = createServerKit(server, opts);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { server, kit, address: `127.0.0.1:${port}` };
}

test('readiness: starting → serving, holds keep it NOT_SERVING until all are released; liveness stays SERVING', async (t) => {
  const events = recordEvents(t);
  const signals = new EventEmitter();
  const { server, kit, address } = await start((_c, cb) => cb(null, Buffer.from('hi')), {
    services: ['grpckube.test.Echo'],
    signalSource: signals,
    exit: null,
  });
  t.after(() => {
    kit.close();
    server.forceShutdown();
  });
  const health = new healthPkg.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
  t.after(() => health.close());
  const snapshot = async () => [
    await checkHealth(health),
    await checkHealth(health, 'grpckube.test.Echo'),
    await checkHealth(health, 'liveness'),
  ];

  assert.equal(kit.phase, 'starting');
  assert.deepEqual(await snapshot(), ['NOT_SERVING', 'NOT_SERVING', 'SERVING']);
  const warm = kit.hold('warming cache');
  kit.setServing();
  assert.equal(kit.phase, 'serving');
  assert.equal(kit.ready, false);
  assert.deepEqual(await snapshot(), ['NOT_SERVING', 'NOT_SERVING', 'SERVING']);
  const migrate = kit.hold('migrating schema');
  assert.deepEqual(kit.holds, ['warming cache', 'migrating schema']);
  warm();
  warm(); // releasing twice is harmless
  assert.deepEqual(kit.holds, ['migrating schema']);
  assert.deepEqual(await snapshot(), ['NOT_SERVING', 'NOT_SERVING', 'SERVING']);
  migrate();
  assert.equal(kit.ready, true);
  assert.deepEqual(await snapshot(), ['SERVING', 'SERVING', 'SERVING']);
  const again = kit.hold('reloading config');
  assert.deepEqual(await snapshot(), ['NOT_SERVING', 'NOT_SERVING', 'SERVING']);
  again();
  assert.deepEqual(await snapshot(), ['SERVING', 'SERVING', 'SERVING']);
  assert.equal(await checkHealth(health, 'unknown.Service'), 'ERROR NOT_FOUND');
  assert.deepEqual(
    events.map((e) => e.phase),
    ['starting', 'serving', 'ready', 'not-ready', 'ready'],
  );
  assert.equal(signals.listenerCount('SIGTERM'), 1);
  kit.close();
  assert.equal(signals.listenerCount('SIGTERM'), 0);
});

test('SIGTERM: NOT_SERVING at once, serve during propagation, then GOAWAY: in-flight RPC finishes, new connections refused, exit(0)', async (t) => {
  const events = recordEvents(t);
  const signals = new EventEmitter();
  const delay = manualDelay();
  const exits: number[] = [];
  let releaseSlow: (() => void) | undefined;
  let slowEntered = false;
  const { server, kit, address } = await start(
    (call, cb) => {
      if (call.request.toString() === 'slow') {
        slowEntered = true;
        releaseSlow = () => cb(null, Buffer.from('slow done'));
      } else cb(null, Buffer.from('fast'));
    },
    {
      signalSource: signals,
      exit: (c) => exits.push(c),
      delay: delay.fn,
      propagationDelayMs: 3000,
      graceMs: 7000,
      startServing: true,
    },
  );
  t.after(() => server.forceShutdown());
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const health = new healthPkg.grpc.health.v1.Health(address, grpc.credentials.createInsecure());
  t.after(() => {
    client.close();
    health.close();
  });
  assert.equal(await checkHealth(health), 'SERVING');
  const slow = echo(client, 'slow', 120_000);
  await until(() => slowEntered, 30_000, 2, 'slow RPC reached the handler');

  signals.emit('SIGTERM');
  signals.emit('SIGTERM'); // a second signal does not start a second sequence
  assert.equal(kit.phase, 'draining');
  assert.equal(await checkHealth(health), 'NOT_SERVING');
  await delay.until(1);
  assert.deepEqual(delay.waits, [3000]);
  // Still serving new RPCs while the endpoint removal propagates.
  assert.deepEqual(await echo(client, 'x'), { code: grpc.status.OK, details: '', body: 'fast' });

  delay.release(0);
  await delay.until(2);
  assert.deepEqual(delay.waits, [3000, 7000]);
  assert.equal(events.at(-1)?.phase, 'goaway');
  // A new channel cannot connect any more.
  const late = new grpc.Client(address, grpc.credentials.createInsecure());
  t.after(() => late.close());
  assert.equal((await echo(late, 'x')).code, grpc.status.UNAVAILABLE);
  // The old connection got GOAWAY: a new RPC on it is not accepted either.
  assert.equal((await echo(client, 'x')).code, grpc.status.UNAVAILABLE);
  assert.deepEqual(exits, [], 'no exit while an RPC is in flight');

  releaseSlow?.();
  assert.deepEqual(await slow, { code: grpc.status.OK, details: '', body: 'slow done' });
  client.close();
  health.close();
  const result = await kit.shutdown();
  assert.deepEqual(result, { forced: false, reason: 'signal' });
  assert.deepEqual(exits, [0]);
  assert.equal(kit.phase, 'stopped');
  assert.deepEqual(
    events.map((e) => e.phase),
    ['serving', 'draining', 'goaway', 'stopped', 'exit'],
  );
  assert.equal(events.at(-1)?.exitCode, 0);
  assert.equal(signals.listenerCount('SIGTERM'), 0, 'listeners removed after stop');
});

test('SIGTERM: when the grace period runs out, connections are force-closed and exit(1)', async (t) => {
  const events = recordEvents(t);
  const signals = new EventEmitter();
  const delay = manualDelay();
  const exits: number[] = [];
  let entered = false;
  const { server, kit, address } = await start(
    () => {
      entered = true; // never answers
    },
    {
      signalSource: signals,
      exit: (c) => exits.push(c),
      delay: delay.fn,
      propagationDelayMs: 10,
      graceMs: 20,
      startServing: true,
    },
  );
  t.after(() => server.forceShutdown());
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  t.after(() => client.close());
  const stuck = echo(client, 'stuck', 10_000);
  await until(() => entered, 30_000, 2, 'stuck RPC reached the handler');
  signals.emit('SIGTERM');
  await delay.until(1);
  delay.release(0);
  await delay.until(2);
  delay.release(1);
  const result = await kit.shutdown();
  assert.equal(result.forced, true);
  const r = await stuck;
  assert.notEqual(r.code, grpc.status.OK);
  assert.deepEqual(exits, [1]);
  assert.deepEqual(
    events.map((e) => e.phase),
    ['serving', 'draining', 'goaway', 'force-close', 'stopped', 'exit'],
  );
});

test('default delay: real (small) timers run the whole sequence; shutdown() works without signals', async (t) => {
  const { server, kit, address } = await start((_c, cb) => cb(null, Buffer.from('ok')), {
    signals: [],
    exit: null,
    propagationDelayMs: 20,
    // Far longer than the rest of the sequence: a stop that waited for it would still be pending at the
    // 30 s bound below, however slow the machine.
    graceMs: 120_000,
    startServing: true,
  });
  t.after(() => server.forceShutdown());
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  assert.equal((await echo(client, 'x')).code, grpc.status.OK);
  client.close();
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([
    kit.shutdown('test'),
    new Promise<string>((r) => (timer = setTimeout(() => r('waited for the grace timer'), 30_000))),
  ]).finally(() => clearTimeout(timer));
  assert.deepEqual(
    result,
    { forced: false, reason: 'test' },
    'graceful stop did not wait for the grace timer',
  );
  assert.throws(() => kit.hold('late'), { code: 'GK_ERR_DESTROYED' });
});

test('options are validated at the edge', () => {
  const rows: Array<[ServerKitOptions, string]> = [
    [{ propagationDelayMs: -1 }, 'propagationDelayMs'],
    [{ graceMs: 1.5 }, 'graceMs'],
    [{ graceMs: Number.NaN }, 'graceMs'],
    [{ services: [''] }, 'services[0]'],
    [{ livenessService: '' }, 'livenessService'],
    [{ services: ['a.B'], livenessService: 'a.B' }, 'livenessService'],
    [{ exit: 3 as unknown as null }, 'exit'],
  ];
  for (const [opts, field] of rows) {
    const server = new grpc.Server();
    assert.throws(
      () => createServerKit(server, { signals: [], exit: null, ...opts }),
      (e: unknown) => e instanceof InvalidOptionError && e.field === field,
      field,
    );
  }
  const server = new grpc.Server();
  const kit = createServerKit(server, { signals: [], exit: null });
  assert.throws(() => kit.hold(''), InvalidOptionError);
});

test('maxConnectionAgeOptions: grpc-js server options, validated', () => {
  assert.deepEqual(maxConnectionAgeOptions(), {
    'grpc.max_connection_age_ms': 30_000,
    'grpc.max_connection_age_grace_ms': 10_000,
  });
  assert.deepEqual(maxConnectionAgeOptions({ maxConnectionAgeMs: 60_000, graceMs: 5_000 }), {
    'grpc.max_connection_age_ms': 60_000,
    'grpc.max_connection_age_grace_ms': 5_000,
  });
  assert.throws(() => maxConnectionAgeOptions({ maxConnectionAgeMs: 0 }), { field: 'maxConnectionAgeMs' });
  assert.throws(() => maxConnectionAgeOptions({ graceMs: -5 }), { field: 'graceMs' });
});
