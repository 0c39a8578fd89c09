// The lab kubelet runs pod specs as written (ImageRuntime): image → a local command in the image's
// directory, env with the downward API's fieldRef and `$(VAR)` expansion, command/args expanded,
// startup/liveness/readiness probes of every handler kind, preStop before SIGTERM, CrashLoopBackOff
// with lastState and the crashed container's log. Real processes (fixtures/spec-pod.ts), real probes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import type { Kubelet } from '@grpc-kube/lab/internal/cluster/kubelet.js';
import {
  isPodReady,
  type Container,
  type ContainerStatus,
  type Pod,
} from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { TEST_NAMESPACE as NS } from './fixtures/store.js';
import { eventually } from '../helpers/wait.js';
import {
  FIXTURE_DIR,
  IMAGE,
  specPod as pod,
  startSpecKubelet,
  waitForPod as waitFor,
} from '../helpers/spec-kubelet.js';

const HTTP_PORT = 47681;
const TCP_PORT = 47682;

let block = 40;
function setup(t: { after: (fn: () => Promise<void> | void) => void }): ReturnType<typeof startSpecKubelet> {
  return startSpecKubelet(t, block++);
}

function status(p: Pod): ContainerStatus | undefined {
  return p.status?.containerStatuses?.[0];
}

function startLine(
  kubelet: Kubelet,
  name: string,
): { argv: string[]; env: Record<string, string | null>; cwd: string } | undefined {
  const line = kubelet.logs(NS, name)?.find((l) => l.startsWith('start '));
  return line === undefined ? undefined : JSON.parse(line.slice('start '.length));
}

test('image → local command in the image directory; env with fieldRef and $(VAR) expansion; args expanded', async (t) => {
  const { store, kubelet } = await setup(t);
  const created = store.create<Pod>(
    RESOURCES.pods,
    pod(
      'env',
      {
        args: ['--greet=$(GREETING)', '$$(POD_NAME)', '$(UNDEFINED)'],
        env: [
          {
            name: 'SHOW_ENV',
            value: 'MY_NAME,MY_NS,MY_UID,APP,NOTE,NODE,SA,MY_IP,HOST_IP,GREETING,EARLY,FROM_IMAGE,POD_NAME',
          },
          { name: 'EARLY', value: 'before $(MY_NAME)' },
          { name: 'MY_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
          { name: 'MY_NS', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
          { name: 'MY_UID', valueFrom: { fieldRef: { fieldPath: 'metadata.uid' } } },
          { name: 'APP', valueFrom: { fieldRef: { fieldPath: "metadata.labels['app']" } } },
          { name: 'NOTE', valueFrom: { fieldRef: { fieldPath: "metadata.annotations['note']" } } },
          { name: 'NODE', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
          { name: 'SA', valueFrom: { fieldRef: { fieldPath: 'spec.serviceAccountName' } } },
          { name: 'MY_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
          { name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
          { name: 'GREETING', value: 'hi $(MY_NAME) in $(MY_NS), $$(MY_NS) stays' },
        ],
      },
      { serviceAccountName: 'reader' },
    ),
  );
  const ip = await waitFor(store, 'env', (p) => (status(p)?.state?.running ? p.status?.podIP : undefined));
  await eventually('the start line', () => startLine(kubelet, 'env') !== undefined);
  const start = startLine(kubelet, 'env');
  assert.equal(start?.cwd, FIXTURE_DIR, 'the command runs in the image directory');
  assert.deepEqual(start?.argv, ['--greet=hi env in lab, $(MY_NS) stays', '$(POD_NAME)', '$(UNDEFINED)']);
  assert.deepEqual(start?.env, {
    MY_NAME: 'env',
    MY_NS: NS,
    MY_UID: created.metadata.uid,
    APP: 'spec',
    NOTE: 'from-annotation',
    NODE: 'node-a',
    SA: 'reader',
    MY_IP: ip,
    HOST_IP: '127.0.0.1',
    GREETING: 'hi env in lab, $(MY_NS) stays',
    // Only variables defined earlier expand.
    EARLY: 'before $(MY_NAME)',
    FROM_IMAGE: 'yes',
    // The image runtime adds no POD_* identity besides POD_IP: the spec says what the process gets.
    POD_NAME: null,
  });
});

test('an image with no entry: Waiting ErrImagePull, then ImagePullBackOff, with a message naming the map', async (t) => {
  const { store, errors } = await setup(t);
  store.create<Pod>(RESOURCES.pods, pod('noimage', { image: 'example.com/nowhere:1' }));
  const first = await waitFor(store, 'noimage', (p) => status(p)?.state?.waiting);
  assert.equal(first.reason, 'ErrImagePull');
  assert.match(
    first.message ?? '',
    /"example\.com\/nowhere:1" is not in the lab kubelet's image map.*images/,
  );
  await waitFor(store, 'noimage', (p) =>
    status(p)?.state?.waiting?.reason === 'ImagePullBackOff' ? true : undefined,
  );
  const p = store.get<Pod>(RESOURCES.pods, NS, 'noimage');
  assert.equal(p?.status?.phase, 'Pending');
  assert.equal(status(p as Pod)?.restartCount, 0, 'a pull that failed is not a restart');
  assert.ok(errors.some((e) => (e as { code?: string }).code === 'GK_ERR_LAB_IMAGE'));
});

test('an env source the lab does not run: Waiting CreateContainerConfigError, typed', async (t) => {
  const { store } = await setup(t);
  store.create<Pod>(
    RESOURCES.pods,
    pod('cm', { env: [{ name: 'X', valueFrom: { configMapKeyRef: { name: 'c', key: 'k' } } }] }),
  );
  const w = await waitFor(store, 'cm', (p) => status(p)?.state?.waiting);
  assert.equal(w.reason, 'CreateContainerConfigError');
  assert.match(w.message ?? '', /configMapKeyRef is not run by the lab kubelet/);
});

test('a native sidecar starts first (its startup probe gates the main container), shares the pod IP, stops last', async (t) => {
  const { store, kubelet, dir } = await setup(t);
  const events = join(dir, 'events');
  const ready = join(dir, 'ready');
  const p = pod('sidecar', {
    env: [
      { name: 'EVENTS_FILE', value: events },
      { name: 'SHOW_ENV', value: 'ROLE' },
      { name: 'ROLE', value: 'main' },
    ],
  });
  p.spec.initContainers = [
    {
      name: 'proxy',
      image: IMAGE,
      restartPolicy: 'Always',
      command: ['node', 'spec-pod.js'],
      env: [
        { name: 'READY_FILE', value: ready },
        { name: 'TCP_PORT', value: String(TCP_PORT) },
        { name: 'SHOW_ENV', value: 'ROLE,POD_IP' },
        { name: 'ROLE', value: 'sidecar' },
        { name: 'EVENTS_FILE', value: events },
      ],
      startupProbe: { tcpSocket: { port: TCP_PORT }, failureThreshold: 1000 },
    },
  ];
  store.create<Pod>(RESOURCES.pods, p);
  const proxyLine = (): string | undefined =>
    kubelet.logs(NS, 'sidecar', { container: 'proxy' })?.find((l) => l.startsWith('start '));
  await eventually('the sidecar runs', () => proxyLine() !== undefined);
  // Its startup probe fails until the file opens its port: the main container must not start meanwhile.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(startLine(kubelet, 'sidecar'), undefined, 'the main container waits for the sidecar');
  writeFileSync(ready, '');
  const ip = await waitFor(store, 'sidecar', (x) => (isPodReady(x) ? x.status?.podIP : undefined));
  await eventually('the main container runs', () => startLine(kubelet, 'sidecar') !== undefined);
  assert.equal(startLine(kubelet, 'sidecar')?.env['ROLE'], 'main');
  assert.equal(JSON.parse(proxyLine()?.slice('start '.length) ?? '{}').env.POD_IP, ip, 'one pod IP');
  const x = store.get<Pod>(RESOURCES.pods, NS, 'sidecar') as Pod;
  assert.deepEqual(
    x.status?.initContainerStatuses?.map((c) => [c.name, c.ready, c.started]),
    [['proxy', true, true]],
  );
  assert.deepEqual(
    x.status?.containerStatuses?.map((c) => [c.name, c.ready]),
    [['main', true]],
  );
  store.delete(RESOURCES.pods, NS, 'sidecar');
  await eventually('the pod is gone', () => store.get(RESOURCES.pods, NS, 'sidecar') === undefined);
  // The main container stops first, the sidecar after it.
  assert.deepEqual(readFileSync(events, 'utf8').split('\n'), ['SIGTERM main', 'SIGTERM sidecar', '']);
});

test('terminationGracePeriodSeconds counts the preStop hook: SIGKILL when it is over', async (t) => {
  const { store, kubelet } = await setup(t);
  store.create<Pod>(
    RESOURCES.pods,
    pod(
      'slow-hook',
      { env: [{ name: 'IGNORE_SIGTERM', value: '1' }], lifecycle: { preStop: { sleep: { seconds: 30 } } } },
      { terminationGracePeriodSeconds: 1 },
    ),
  );
  await waitFor(store, 'slow-hook', (p) => (isPodReady(p) ? true : undefined));
  await eventually('the start line', () => startLine(kubelet, 'slow-hook') !== undefined);
  store.delete(RESOURCES.pods, NS, 'slow-hook');
  const term = await waitFor(store, 'slow-hook', (p) => status(p)?.state?.terminated, 60_000);
  assert.equal(term.exitCode, 137, 'killed by SIGKILL at the end of the grace, inside the 30 s hook');
});

test('CrashLoopBackOff: waiting reason, lastState.terminated with the exit code, restartCount, the log', async (t) => {
  const { store, kubelet } = await setup(t);
  store.create<Pod>(RESOURCES.pods, pod('crash', { env: [{ name: 'EXIT_CODE', value: '7' }] }));
  const cs = await waitFor(store, 'crash', (p) => {
    const c = status(p);
    return c?.state?.waiting?.reason === 'CrashLoopBackOff' && c.restartCount >= 2 ? c : undefined;
  });
  assert.equal(cs.lastState?.terminated?.exitCode, 7);
  assert.equal(cs.lastState?.terminated?.reason, 'Error');
  assert.match(
    cs.state?.waiting?.message ?? '',
    /^back-off \d+ms restarting failed container=main pod=crash_lab\(/,
  );
  assert.equal(cs.ready, false);
  const log = kubelet.logs(NS, 'crash') ?? [];
  assert.ok(log.includes('boom'), `the crashed container's log: ${JSON.stringify(log)}`);
  assert.throws(() => kubelet.logs(NS, 'crash', { container: 'other' }), { code: 'GK_ERR_LAB_POD_SPEC' });
});

test('readiness by exec, httpGet (named port) and tcpSocket gates Ready; a file toggles it', async (t) => {
  const { store, dir } = await setup(t);
  const ready = join(dir, 'ready');
  const env = [
    { name: 'READY_FILE', value: ready },
    { name: 'HTTP_PORT', value: String(HTTP_PORT) },
    { name: 'TCP_PORT', value: String(TCP_PORT) },
  ];
  const ports = [
    { name: 'http', containerPort: HTTP_PORT },
    { name: 'tcp', containerPort: TCP_PORT },
  ];
  const probes: Array<[string, Container['readinessProbe']]> = [
    ['exec', { exec: { command: ['sh', '-c', 'test -f "$READY_FILE"'] }, failureThreshold: 1 }],
    ['http', { httpGet: { port: 'http', path: '/healthz' }, failureThreshold: 1 }],
    ['tcp', { tcpSocket: { port: 'tcp' }, failureThreshold: 1 }],
  ];
  for (const [kind, readinessProbe] of probes) {
    rmSync(ready, { force: true });
    const name = `ready-${kind}`;
    store.create<Pod>(
      RESOURCES.pods,
      pod(name, { env, ports, ...(readinessProbe ? { readinessProbe } : {}) }),
    );
    await waitFor(store, name, (p) => (status(p)?.state?.running ? true : undefined));
    // Several probe periods pass without the file: never Ready.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(
      isPodReady(store.get<Pod>(RESOURCES.pods, NS, name) as Pod),
      false,
      `${kind}: not Ready without the file`,
    );
    writeFileSync(ready, '');
    await waitFor(store, name, (p) => (isPodReady(p) ? true : undefined));
    rmSync(ready);
    await waitFor(store, name, (p) => (isPodReady(p) ? undefined : true));
    store.delete(RESOURCES.pods, NS, name, { gracePeriodSeconds: 0 });
    await waitFor(store, name, () => undefined, 100).catch(() => undefined);
  }
});

test('a failing liveness probe restarts the container; a failing startup probe too, and gates readiness', async (t) => {
  const { store, kubelet, dir } = await setup(t);
  const alive = join(dir, 'alive');
  writeFileSync(alive, '');
  store.create<Pod>(
    RESOURCES.pods,
    pod('live', {
      env: [{ name: 'ALIVE_FILE', value: alive }],
      livenessProbe: {
        exec: { command: ['sh', '-c', 'test -f "$ALIVE_FILE"'] },
        periodSeconds: 1,
        failureThreshold: 1,
      },
    }),
  );
  await waitFor(store, 'live', (p) => (isPodReady(p) ? true : undefined));
  await eventually('the start line', () => startLine(kubelet, 'live') !== undefined);
  rmSync(alive);
  const cs = await waitFor(store, 'live', (p) =>
    (status(p)?.restartCount ?? 0) >= 1 ? status(p) : undefined,
  );
  // Killed by SIGTERM: the fixture exits 0 on it.
  assert.equal(cs.lastState?.terminated?.exitCode, 0);
  await eventually('the previous run logged SIGTERM', () =>
    (kubelet.logs(NS, 'live', { previous: true }) ?? []).includes('SIGTERM'),
  );

  store.create<Pod>(
    RESOURCES.pods,
    pod('startup', {
      startupProbe: { exec: { command: ['false'] }, failureThreshold: 2 },
      readinessProbe: { exec: { command: ['true'] } },
    }),
  );
  let everReady = false;
  const stop = store.watch<Pod>(RESOURCES.pods, {}, (ev) => {
    const p = ev.object as Pod;
    if (p.metadata.name === 'startup' && isPodReady(p)) everReady = true;
  });
  t.after(stop);
  const st = await waitFor(store, 'startup', (p) =>
    (status(p)?.restartCount ?? 0) >= 2 ? status(p) : undefined,
  );
  assert.equal(st.started, false);
  assert.equal(everReady, false, 'readiness waits for the startup probe');
});

test('preStop runs before SIGTERM (httpGet, exec in the container env) and sleep delays it', async (t) => {
  const { store, kubelet, dir } = await setup(t);
  const events = join(dir, 'events');
  store.create<Pod>(
    RESOURCES.pods,
    pod('hooks', {
      env: [
        { name: 'HTTP_PORT', value: String(HTTP_PORT) },
        { name: 'EVENTS_FILE', value: events },
      ],
      ports: [{ name: 'http', containerPort: HTTP_PORT }],
      lifecycle: { preStop: { httpGet: { port: 'http', path: '/prestop' } } },
    }),
  );
  await waitFor(store, 'hooks', (p) => (isPodReady(p) ? true : undefined));
  // The pod has no readiness probe: Ready comes before its HTTP server listens, and a preStop hook
  // that finds nothing listening fails (and SIGTERM follows), as in Kubernetes.
  await eventually('the HTTP server', () => kubelet.logs(NS, 'hooks')?.includes('http listening') === true);
  store.delete(RESOURCES.pods, NS, 'hooks');
  await eventually('the pod is gone', () => store.get(RESOURCES.pods, NS, 'hooks') === undefined);
  assert.deepEqual(readFileSync(events, 'utf8').split('\n'), ['preStop http', 'SIGTERM', '']);

  store.create<Pod>(
    RESOURCES.pods,
    pod('exec-hook', {
      env: [{ name: 'EVENTS_FILE', value: events }],
      lifecycle: {
        preStop: { exec: { command: ['sh', '-c', 'echo "preStop exec $HOSTNAME" >> "$EVENTS_FILE"'] } },
      },
    }),
  );
  await waitFor(store, 'exec-hook', (p) => (isPodReady(p) ? true : undefined));
  await eventually('the start line', () => startLine(kubelet, 'exec-hook') !== undefined);
  rmSync(events, { force: true });
  store.delete(RESOURCES.pods, NS, 'exec-hook');
  await eventually('the pod is gone', () => store.get(RESOURCES.pods, NS, 'exec-hook') === undefined);
  assert.deepEqual(readFileSync(events, 'utf8').split('\n'), ['preStop exec exec-hook', 'SIGTERM', '']);

  store.create<Pod>(
    RESOURCES.pods,
    pod('sleep-hook', {
      env: [{ name: 'EVENTS_FILE', value: events }],
      lifecycle: { preStop: { sleep: { seconds: 1 } } },
    }),
  );
  await waitFor(store, 'sleep-hook', (p) => (isPodReady(p) ? true : undefined));
  await eventually('the start line', () => startLine(kubelet, 'sleep-hook') !== undefined);
  rmSync(events, { force: true });
  const deletedAt = Date.now();
  store.delete(RESOURCES.pods, NS, 'sleep-hook');
  await eventually('SIGTERM', () => existsSync(events));
  assert.ok(Date.now() - deletedAt >= 1000, 'SIGTERM came after the preStop sleep');
});
