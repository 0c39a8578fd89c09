// The lab kubelet runs init containers and postStart hooks as Kubernetes does: run-to-completion init
// containers in spec order, interleaved with native sidecars, each to exit 0 before the next starts;
// a failing one retried with the back-off (or failing the pod under restartPolicy Never); the status
// the real kubelet writes meanwhile (Pending, Initialized False, PodInitializing, initContainerStatuses).
// postStart runs between the process's start and Running; a failing one kills the container
// (FailedPostStartHook). Real processes (fixtures/spec-pod.ts and sh), real hooks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RESOURCES } from '@grpc-kube/lab/internal/cluster/store-api.js';
import { IpPool, Kubelet } from '@grpc-kube/lab/internal/cluster/kubelet.js';
import { KINDS, httpKube } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import { ImageRuntime } from '@grpc-kube/lab/internal/cluster/pod-runtime.js';
import { podFailure } from '@grpc-kube/lab/internal/manifests/pod-failures.js';
import {
  isPodReady,
  type Container,
  type ContainerStatus,
  type Pod,
} from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { TEST_NAMESPACE as NS } from './fixtures/store.js';
import { eventually } from '../helpers/wait.js';
import { FIXTURE_DIR, IMAGE, specPod, startSpecKubelet, waitForPod } from '../helpers/spec-kubelet.js';
import { realControlPlaneSkip, startRealApi } from '../helpers/real.js';

const TCP_PORT = 47683;

let block = 90;
function setup(t: { after: (fn: () => Promise<void> | void) => void }): ReturnType<typeof startSpecKubelet> {
  return startSpecKubelet(t, block++);
}

/** A container running `script` in sh, in the fixture image, with EVENTS_FILE and extra env. */
function sh(
  name: string,
  script: string,
  env: Record<string, string>,
  more: Partial<Container> = {},
): Container {
  return {
    name,
    image: IMAGE,
    command: ['sh', '-c', script],
    env: Object.entries(env).map(([n, value]) => ({ name: n, value })),
    ...more,
  };
}

function lines(file: string): string[] {
  return existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
    : [];
}

function initStatus(p: Pod, name: string): ContainerStatus | undefined {
  return p.status?.initContainerStatuses?.find((c) => c.name === name);
}

function condition(p: Pod, type: string): { status?: string; reason?: string; message?: string } | undefined {
  return p.status?.conditions?.find((c) => c.type === type);
}

test('init containers run in spec order, each to exit 0, a sidecar started between them; then the main one', async (t) => {
  const { store, kubelet, dir } = await setup(t);
  const events = join(dir, 'events');
  const go = join(dir, 'go');
  const env = { EVENTS_FILE: events, GO_FILE: go };
  const p = specPod('order', {
    command: ['sh', '-c', 'echo main start >> "$EVENTS_FILE"; exec node spec-pod.js'],
    env: [{ name: 'EVENTS_FILE', value: events }],
  });
  p.spec.initContainers = [
    sh(
      'init-a',
      'echo init-a start >> "$EVENTS_FILE"; echo hello from init-a; sleep 0.2; echo init-a done >> "$EVENTS_FILE"',
      env,
    ),
    sh(
      'proxy',
      'echo proxy start >> "$EVENTS_FILE"; exec node spec-pod.js',
      { ...env, ROLE: 'proxy' },
      {
        restartPolicy: 'Always',
        // Started once it has written its line: init-b must wait for that.
        startupProbe: { exec: { command: ['sh', '-c', 'grep -qx "proxy start" "$EVENTS_FILE"'] } },
      },
    ),
    // Waits for the test's go-ahead, so the test can read the status while the pod initializes.
    sh(
      'init-b',
      'echo init-b start >> "$EVENTS_FILE"; while [ ! -f "$GO_FILE" ]; do sleep 0.05; done; echo init-b done >> "$EVENTS_FILE"',
      env,
    ),
  ];
  store.create<Pod>(RESOURCES.pods, p);
  await eventually('init-b runs', () => lines(events).includes('init-b start'));
  const mid = await waitForPod(store, 'order', (x) =>
    initStatus(x, 'init-b')?.state?.running !== undefined && initStatus(x, 'proxy')?.started === true
      ? x
      : undefined,
  );
  assert.equal(mid.status?.phase, 'Pending', 'Pending while initializing');
  assert.ok(mid.status?.podIP, 'the pod has its address while initializing');
  assert.deepEqual(condition(mid, 'Initialized'), {
    ...condition(mid, 'Initialized'),
    status: 'False',
    reason: 'ContainersNotInitialized',
    message: 'containers with incomplete status: [init-b]',
  });
  assert.equal(mid.status?.containerStatuses?.[0]?.state?.waiting?.reason, 'PodInitializing');
  const a = initStatus(mid, 'init-a');
  assert.equal(a?.state?.terminated?.exitCode, 0);
  assert.equal(a?.state?.terminated?.reason, 'Completed');
  assert.equal(a?.ready, true, 'a completed init container is ready');
  assert.equal(a?.started, false);
  assert.equal(a?.restartCount, 0);
  assert.deepEqual(
    mid.status?.initContainerStatuses?.map((c) => c.name),
    ['init-a', 'proxy', 'init-b'],
    'in spec order',
  );
  assert.deepEqual(kubelet.logs(NS, 'order', { container: 'init-a' }), ['hello from init-a']);

  writeFileSync(go, '');
  const done = await waitForPod(store, 'order', (x) => (isPodReady(x) ? x : undefined));
  assert.equal(done.status?.phase, 'Running');
  assert.equal(condition(done, 'Initialized')?.status, 'True');
  assert.equal(initStatus(done, 'init-b')?.state?.terminated?.reason, 'Completed');
  assert.ok(initStatus(done, 'proxy')?.state?.running, 'the sidecar keeps running');
  await eventually('main runs', () => lines(events).includes('main start'));
  assert.deepEqual(lines(events), [
    'init-a start',
    'init-a done',
    'proxy start',
    'init-b start',
    'init-b done',
    'main start',
  ]);
  // Deletion: the sidecar stops after main (each prints its start line once it handles SIGTERM).
  for (const container of ['main', 'proxy']) {
    await eventually(`${container}'s start line`, () =>
      (kubelet.logs(NS, 'order', { container }) ?? []).some((l) => l.startsWith('start ')),
    );
  }
  store.delete(RESOURCES.pods, NS, 'order');
  await eventually('the pod is gone', () => store.get(RESOURCES.pods, NS, 'order') === undefined);
  assert.deepEqual(lines(events).slice(-2), ['SIGTERM', 'SIGTERM proxy']);
});

test('a failing init container is retried with the back-off until it exits 0; its logs, previous run included', async (t) => {
  const { store, kubelet, dir } = await setup(t);
  const count = join(dir, 'count');
  const p = specPod('retry', {});
  // Fails on its first two runs, succeeds on the third.
  p.spec.initContainers = [
    sh(
      'migrate',
      'n=$(cat "$COUNT" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$COUNT"; echo "try $n"; [ $n -ge 3 ]',
      {
        COUNT: count,
      },
    ),
  ];
  store.create<Pod>(RESOURCES.pods, p);
  const seen: string[] = [];
  const stop = store.watch<Pod>(RESOURCES.pods, {}, (ev) => {
    const x = ev.object as Pod;
    const r = initStatus(x, 'migrate')?.state?.waiting?.reason;
    if (x.metadata.name === 'retry' && r !== undefined && seen.at(-1) !== r) seen.push(r);
    if (
      x.metadata.name === 'retry' &&
      x.status?.containerStatuses?.[0]?.state?.running &&
      initStatus(x, 'migrate')?.state?.terminated === undefined
    )
      seen.push('main ran before the init container completed');
  });
  t.after(stop);
  const ready = await waitForPod(store, 'retry', (x) => (isPodReady(x) ? x : undefined));
  const m = initStatus(ready, 'migrate');
  assert.equal(m?.restartCount, 2);
  assert.equal(m?.state?.terminated?.reason, 'Completed');
  assert.equal(m?.lastState?.terminated?.exitCode, 1);
  assert.equal(m?.lastState?.terminated?.reason, 'Error');
  assert.ok(
    seen.includes('CrashLoopBackOff'),
    `waited in CrashLoopBackOff between tries: ${JSON.stringify(seen)}`,
  );
  assert.ok(!seen.includes('main ran before the init container completed'), JSON.stringify(seen));
  assert.deepEqual(kubelet.logs(NS, 'retry', { container: 'migrate' }), ['try 3']);
  assert.deepEqual(kubelet.logs(NS, 'retry', { container: 'migrate', previous: true }), ['try 2']);
});

test('restartPolicy Never: a failing init container fails the pod; the sidecar before it stops, main never starts', async (t) => {
  const { store, kubelet, dir } = await setup(t);
  const events = join(dir, 'events');
  const ready = join(dir, 'ready');
  writeFileSync(ready, '');
  const p = specPod('never', { env: [{ name: 'EVENTS_FILE', value: events }] }, { restartPolicy: 'Never' });
  p.spec.initContainers = [
    // Started once its TCP port opens: by then its SIGTERM handler is in place.
    sh(
      'proxy',
      'exec node spec-pod.js',
      { EVENTS_FILE: events, ROLE: 'proxy', READY_FILE: ready, TCP_PORT: String(TCP_PORT) },
      { restartPolicy: 'Always', startupProbe: { tcpSocket: { port: TCP_PORT }, failureThreshold: 1000 } },
    ),
    sh('check', 'echo dependency missing; exit 3', {}),
  ];
  store.create<Pod>(RESOURCES.pods, p);
  const failed = await waitForPod(store, 'never', (x) =>
    x.status?.phase === 'Failed' && initStatus(x, 'proxy')?.state?.terminated ? x : undefined,
  );
  const c = initStatus(failed, 'check');
  assert.equal(c?.state?.terminated?.exitCode, 3);
  assert.equal(c?.state?.terminated?.reason, 'Error');
  assert.equal(c?.restartCount, 0, 'not retried under restartPolicy Never');
  assert.equal(condition(failed, 'Initialized')?.status, 'False');
  assert.equal(failed.status?.containerStatuses?.[0]?.state?.waiting?.reason, 'PodInitializing');
  assert.deepEqual(lines(events), ['SIGTERM proxy'], 'the sidecar got SIGTERM; main never ran');
  assert.deepEqual(kubelet.logs(NS, 'never', { container: 'check' }), ['dependency missing']);
  assert.deepEqual(kubelet.logs(NS, 'never'), [], 'main wrote nothing: it never started');
  store.delete(RESOURCES.pods, NS, 'never');
  await eventually('the pod is gone', () => store.get(RESOURCES.pods, NS, 'never') === undefined);
});

test('postStart (exec, in the container env): the container is not Running nor started until it returns', async (t) => {
  const { store, kubelet, dir } = await setup(t);
  const events = join(dir, 'events');
  const go = join(dir, 'go');
  store.create<Pod>(
    RESOURCES.pods,
    specPod('post', {
      env: [
        { name: 'EVENTS_FILE', value: events },
        { name: 'GO_FILE', value: go },
      ],
      lifecycle: {
        postStart: {
          exec: {
            command: [
              'sh',
              '-c',
              'echo "postStart $HOSTNAME" >> "$EVENTS_FILE"; while [ ! -f "$GO_FILE" ]; do sleep 0.05; done',
            ],
          },
        },
      },
    }),
  );
  await eventually('the hook runs', () => lines(events).includes('postStart post'));
  // The process runs (it has printed its start line) while the hook holds the container back.
  await eventually(
    'the start line',
    () => kubelet.logs(NS, 'post')?.some((l) => l.startsWith('start ')) === true,
  );
  await new Promise((r) => setTimeout(r, 200));
  const held = store.get<Pod>(RESOURCES.pods, NS, 'post') as Pod;
  const cs = held.status?.containerStatuses?.[0];
  assert.equal(cs?.state?.running, undefined, `not Running during postStart: ${JSON.stringify(cs?.state)}`);
  assert.equal(cs?.started, false);
  assert.equal(held.status?.phase, 'Pending');
  assert.equal(isPodReady(held), false);
  writeFileSync(go, '');
  const ready = await waitForPod(store, 'post', (x) => (isPodReady(x) ? x : undefined));
  assert.equal(ready.status?.containerStatuses?.[0]?.started, true);
  assert.equal(ready.status?.containerStatuses?.[0]?.restartCount, 0);
});

test('a failing postStart kills the container (FailedPostStartHook) and it restarts by policy; sleep delays Running', async (t) => {
  const { store, errors } = await setup(t);
  store.create<Pod>(
    RESOURCES.pods,
    specPod('hookfail', {
      lifecycle: { postStart: { exec: { command: ['sh', '-c', 'echo hook out; exit 3'] } } },
    }),
  );
  const cs = await waitForPod(store, 'hookfail', (x) => {
    const c = x.status?.containerStatuses?.[0];
    return (c?.restartCount ?? 0) >= 1 && c?.state?.waiting?.reason === 'PostStartHookError' ? c : undefined;
  });
  assert.match(
    cs.state?.waiting?.message ?? '',
    /^FailedPostStartHook: Exec lifecycle hook \(\[sh -c echo hook out; exit 3\]\) for Container "main" in Pod "hookfail_lab\([0-9a-f-]+\)" failed - error: command 'sh -c echo hook out; exit 3' exited with 3, message: "hook out\\n"$/,
  );
  assert.ok(cs.lastState?.terminated, 'the killed run is the last state');
  // `lab --manifests` fails the run on it, saying why.
  assert.match(
    podFailure(store.get<Pod>(RESOURCES.pods, NS, 'hookfail') as Pod, 0)?.reason ?? '',
    /^pod lab\/hookfail container main: FailedPostStartHook: Exec lifecycle hook/,
  );
  assert.equal(cs.ready, false);
  assert.ok(
    errors.some(
      (e) =>
        /FailedPostStartHook/.test((e as Error).message) && (e as { code?: string }).code === 'GK_ERR_LAB',
    ),
  );

  // httpGet to a port nothing listens on, restartPolicy Never: killed once, not restarted, saying why.
  store.create<Pod>(
    RESOURCES.pods,
    specPod(
      'httpfail',
      { lifecycle: { postStart: { httpGet: { port: 47689, path: '/started' } } } },
      { restartPolicy: 'Never' },
    ),
  );
  const term = await waitForPod(
    store,
    'httpfail',
    (x) => x.status?.containerStatuses?.[0]?.state?.terminated,
  );
  assert.match(
    term.message ?? '',
    /^FailedPostStartHook: HTTP lifecycle hook \(\/started\) for Container "main"/,
  );
  assert.equal(
    (store.get<Pod>(RESOURCES.pods, NS, 'httpfail') as Pod).status?.containerStatuses?.[0]?.restartCount,
    0,
  );

  const createdAt = Date.now();
  store.create<Pod>(
    RESOURCES.pods,
    specPod('sleepy', { lifecycle: { postStart: { sleep: { seconds: 1 } } } }),
  );
  await waitForPod(store, 'sleepy', (x) =>
    x.status?.containerStatuses?.[0]?.state?.running ? true : undefined,
  );
  assert.ok(Date.now() - createdAt >= 1000, 'Running only after the postStart sleep');
});

test(
  'on the real kube-apiserver: the statuses of an initializing pod are accepted as written, then it runs',
  { skip: realControlPlaneSkip() },
  async (t) => {
    const { cp } = await startRealApi(t);
    const kube = httpKube(cp.adminKubeConfig);
    t.after(() => kube.close());
    await kube.create(KINDS.namespaces, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    const runtime = new ImageRuntime({ images: { [IMAGE]: { cwd: FIXTURE_DIR } } });
    const errors: unknown[] = [];
    const kubelet = new Kubelet(httpKube(cp.adminKubeConfig), {
      runtime,
      nodes: [{ name: 'node-a', zone: 'zone-a' }],
      ipAllocator: new IpPool({ first: '127.0.99.1' }),
      timestamps: 's',
      restartBackoffMs: 50,
      restartBackoffMaxMs: 400,
      onError: (_w, e) => void errors.push(e),
    });
    await kubelet.start();
    t.after(async () => {
      await kubelet.stop();
      assert.equal(runtime.running, 0);
    });
    const dir = mkdtempSync(join(tmpdir(), 'kubelet-init-real-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const count = join(dir, 'count');
    const go = join(dir, 'go');
    const p = specPod('real-init', {});
    p.spec.initContainers = [
      sh('migrate', 'n=$(cat "$COUNT" 2>/dev/null || echo 0); echo $((n+1)) > "$COUNT"; [ $n -ge 1 ]', {
        COUNT: count,
      }),
      sh('wait', 'while [ ! -f "$GO_FILE" ]; do sleep 0.05; done', { GO_FILE: go }),
    ];
    await kube.create(KINDS.pods, p);
    const get = (): Promise<Pod | undefined> => kube.get<Pod>(KINDS.pods, NS, 'real-init');
    let mid: Pod | undefined;
    await eventually(
      'the real API holds the initializing status',
      async () => {
        mid = await get();
        return mid !== undefined && initStatus(mid, 'wait')?.state?.running !== undefined;
      },
      60_000,
    );
    const m = mid as Pod;
    assert.equal(m.status?.phase, 'Pending');
    assert.equal(condition(m, 'Initialized')?.status, 'False');
    assert.equal(condition(m, 'Initialized')?.message, 'containers with incomplete status: [wait]');
    assert.equal(m.status?.containerStatuses?.[0]?.state?.waiting?.reason, 'PodInitializing');
    assert.equal(initStatus(m, 'migrate')?.restartCount, 1);
    assert.equal(initStatus(m, 'migrate')?.state?.terminated?.reason, 'Completed');
    assert.equal(initStatus(m, 'migrate')?.lastState?.terminated?.exitCode, 1);
    writeFileSync(go, '');
    await eventually(
      'Running and Ready on the real API',
      async () => {
        const x = await get();
        return x !== undefined && x.status?.phase === 'Running' && isPodReady(x);
      },
      60_000,
    );
    assert.equal(condition((await get()) as Pod, 'Initialized')?.status, 'True');
    // A status the API refuses comes back as an error of the write (422 Invalid).
    assert.deepEqual(
      errors.map(String).filter((e) => /\b422\b|Invalid/.test(e)),
      [],
      'the API accepted every status the kubelet wrote',
    );
  },
);
