// lab --manifests, the parts that need no cluster: each strategy's overlay rendered into a namespace
// of its own with what its client dials, and the reasons a pod of an overlay fails a run.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  expand,
  overlayNamespace,
  planOverlay,
  PORT_FORWARD_CONTAINER,
  serviceAddress,
  serviceAccountRules,
  STRATEGY_OVERLAYS,
} from '@grpc-kube/lab/internal/manifests/overlays.js';
import { forbiddenLine, lastLine, podFailure } from '@grpc-kube/lab/internal/manifests/pod-failures.js';
import { labConfig } from '@grpc-kube/lab/internal/lab/config.js';
import { STRATEGIES } from '@grpc-kube/lab/internal/lab/strategies/index.js';
import type { Pod } from '@grpc-kube/lab/internal/cluster/controllers/kinds.js';
import { GrpcKubeError, InvalidOptionError } from 'grpc-kube/internal/errors.js';

const root = join(import.meta.dirname, '..', '..', '..');
const plan = (strategy: string, canary = false, sharedNetwork?: boolean) =>
  planOverlay({ root, strategy, canary, replicas: 3, canaryReplicas: 1, sharedNetwork });

test('every lab strategy but dns-poll has an overlay; dns-poll fails alone with GK_ERR_LAB_MANIFESTS', () => {
  for (const s of STRATEGIES) {
    if (s.name === 'dns-poll') {
      assert.throws(
        () => plan(s.name),
        (e) => e instanceof GrpcKubeError && e.code === 'GK_ERR_LAB_MANIFESTS',
      );
      continue;
    }
    assert.ok(STRATEGY_OVERLAYS[s.name], s.name);
    const p = plan(s.name);
    assert.equal(p.namespace, overlayNamespace(s.name));
    // Every namespaced object in the run's namespace; the Namespace renamed to it; applied first.
    assert.equal(p.objects[0]?.kind, 'Namespace');
    assert.equal(p.objects[0]?.metadata.name, p.namespace);
    for (const o of p.objects.slice(1))
      assert.equal(o.metadata.namespace, p.namespace, `${o.kind}/${o.metadata.name}`);
    assert.ok(!p.client.target.includes('$('), p.client.target);
  }
});

test('the two headless strategies share deploy/headless but not a namespace; their policies differ', () => {
  const a = plan('headless-pick-first');
  const b = plan('headless-dns-round-robin');
  assert.equal(a.overlay, 'deploy/headless');
  assert.equal(b.overlay, 'deploy/headless');
  assert.notEqual(a.namespace, b.namespace);
  assert.equal(a.client.target, `dns:///hello-headless.${a.namespace}.svc.cluster.local:50051`);
  assert.equal(a.client.lbPolicy, 'pick_first');
  assert.equal(b.client.lbPolicy, 'round_robin');
});

test('overlay clients: what each dials, RBAC subjects moved with their ServiceAccount', () => {
  const k = plan('kubernetes');
  assert.equal(k.client.target, 'kubernetes:///hello.lab-kubernetes:50051');
  assert.ok(!k.objects.some((o) => o.metadata.name === 'hello-client' && o.kind === 'Deployment'));
  const binding = k.objects.find((o) => o.kind === 'RoleBinding') as unknown as {
    subjects: { namespace: string }[];
  };
  assert.equal(binding.subjects[0]?.namespace, 'lab-kubernetes');
  const x = plan('xds');
  assert.equal(x.client.target, 'xds:///hello.lab-xds:50051');
  assert.equal(x.client.xdsServer, 'grpc-kube-xds.lab-xds.svc.cluster.local:18000');
  assert.deepEqual(
    x.deployments.map((d) => d.name),
    ['hello', 'grpc-kube-xds'],
  );
  const cp = x.objects.find(
    (o) => o.kind === 'Deployment' && o.metadata.name === 'grpc-kube-xds',
  ) as unknown as {
    spec: { template: { spec: { containers: { args: string[] }[] } } };
  };
  // Passed as written: the kubelet expands $(POD_NAMESPACE) from the downward API.
  assert.deepEqual(cp.spec.template.spec.containers[0]?.args, [
    '--listen=0.0.0.0:18000',
    '--namespace=$(POD_NAMESPACE)',
  ]);
  // Embedded (pods on loopback addresses): the sidecar listens on its pod's address.
  const sc = plan('sidecar', false, true);
  assert.equal(sc.client.target, 'ipv4:127.0.0.1:15001');
  assert.equal(sc.client.authority, 'hello.lab-sidecar:50051');
  assert.deepEqual(sc.client.sidecar, { container: 'proxy', port: 15001 });
  const client = sc.objects.find(
    (o) => o.kind === 'Deployment' && o.metadata.name === 'hello-client',
  ) as unknown as {
    spec: { template: { spec: { initContainers: { args: string[]; env: { name: string }[] }[] } } };
  };
  const proxy = client.spec.template.spec.initContainers[0];
  assert.ok(proxy?.args.includes('--listen=$(POD_IP):15001'));
  assert.equal(proxy?.env[0]?.name, 'POD_IP');
  assert.ok(sc.adaptations.some((a) => a.includes('$(POD_IP)')));
  // Real (a pod address is not loopback; a sidecar listens on loopback only): the sidecar as written,
  // and a port-forward container in the client pod from $(POD_IP):15001 to it.
  const real = plan('sidecar').objects.find(
    (o) => o.kind === 'Deployment' && o.metadata.name === 'hello-client',
  ) as unknown as {
    spec: {
      template: {
        spec: { initContainers: { args: string[] }[]; containers: { name: string; args?: string[] }[] };
      };
    };
  };
  assert.ok(real.spec.template.spec.initContainers[0]?.args.includes('--listen=127.0.0.1:15001'));
  assert.deepEqual(real.spec.template.spec.containers.find((c) => c.name === PORT_FORWARD_CONTAINER)?.args, [
    '$(POD_IP):15001',
    '127.0.0.1:15001',
  ]);
  assert.throws(
    () => plan('proxy', true),
    (e) =>
      e instanceof GrpcKubeError && e.code === 'GK_ERR_LAB_MANIFESTS' && /no canary overlay/.test(e.message),
  );
  const c = plan('xds', true);
  assert.equal(c.overlay, 'deploy/canary');
  assert.deepEqual(
    c.deployments.map((d) => `${d.name}:${d.replicas}`),
    ['hello:3', 'grpc-kube-xds:1', 'hello-v2:1'],
  );
});

test("scenario replicas and rollout limits replace the overlay's, and say so", () => {
  const p = planOverlay({
    root,
    strategy: 'kubernetes',
    canary: false,
    replicas: 5,
    maxSurge: 1,
    maxUnavailable: 0,
  });
  const d = p.objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'hello') as unknown as {
    spec: { replicas: number; strategy: unknown };
  };
  assert.equal(d.spec.replicas, 5);
  assert.deepEqual(d.spec.strategy, {
    type: 'RollingUpdate',
    rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
  });
  assert.ok(p.adaptations.some((a) => a.includes('replicas 3 → 5')));
});

test('$(VAR) expansion as the kubelet does it', () => {
  assert.equal(expand('a.$(NS):1', { NS: 'x' }), 'a.x:1');
  assert.equal(expand('$$(NS) $(NOPE)', { NS: 'x' }), '$(NS) $(NOPE)');
  assert.equal(expand(undefined, {}), undefined);
  assert.deepEqual(serviceAddress('hello.ns.svc.cluster.local:50051'), {
    service: 'hello',
    namespace: 'ns',
    port: 50051,
  });
  assert.deepEqual(serviceAddress('hello.ns.svc:7'), { service: 'hello', namespace: 'ns', port: 7 });
  assert.equal(serviceAddress('hello.ns:7'), undefined);
  assert.equal(serviceAddress('example.com:443'), undefined);
});

function pod(status: unknown, deleting = false): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: 'grpc-kube-xds-abc',
      namespace: 'lab-xds',
      ...(deleting ? { deletionTimestamp: 'x' } : {}),
    },
    spec: { containers: [{ name: 'xds' }] },
    status,
  } as unknown as Pod;
}

test('podFailure: a crash loop names pod, container, restarts, exit code and the last log line', () => {
  const why = podFailure(
    pod({
      containerStatuses: [
        {
          name: 'xds',
          restartCount: 3,
          state: { waiting: { reason: 'CrashLoopBackOff' } },
          lastState: {
            terminated: { exitCode: 2, reason: 'Error', message: 'starting\nunknown flag --listen\n' },
          },
        },
      ],
    }),
    0,
  );
  assert.deepEqual(why, {
    container: 'xds',
    reason:
      'pod lab-xds/grpc-kube-xds-abc container xds: CrashLoopBackOff after 3 restarts, last exit code 2 (Error): unknown flag --listen',
    wantsLog: false,
  });
});

test('podFailure: the back-off after a kill of the scenario is no failure; a crash loop beyond it is', () => {
  const looping = (restartCount: number) =>
    pod({
      containerStatuses: [
        {
          name: 'xds',
          restartCount,
          state: { waiting: { reason: 'CrashLoopBackOff' } },
          lastState: { terminated: { exitCode: 137, reason: 'Error' } },
        },
      ],
    });
  assert.equal(podFailure(looping(1), 1), undefined);
  assert.match(
    podFailure(looping(2), 1)?.reason ?? '',
    /CrashLoopBackOff after 2 restarts, last exit code 137/,
  );
  assert.match(podFailure(looping(1), 0)?.reason ?? '', /CrashLoopBackOff after 1 restarts/);
});

test("podFailure: a container that cannot start (its spec, its image) says the kubelet's reason", () => {
  const p = pod({
    containerStatuses: [
      {
        name: 'xds',
        state: {
          waiting: { reason: 'CreateContainerConfigError', message: 'the lab runs one container per pod' },
        },
      },
    ],
  });
  assert.equal(
    podFailure(p, 0)?.reason,
    'pod lab-xds/grpc-kube-xds-abc container xds: CreateContainerConfigError: the lab runs one container per pod',
  );
  assert.equal(
    podFailure(
      pod({ containerStatuses: [{ name: 'xds', state: { waiting: { reason: 'ContainerCreating' } } }] }),
      0,
    ),
    undefined,
  );
});

test('podFailure: a 403 in a termination message, a non-zero exit; not an exit the scenario caused', () => {
  const denied = pod({
    containerStatuses: [
      {
        name: 'xds',
        state: { running: {} },
        lastState: {
          terminated: { exitCode: 1, message: 'GET /apis/discovery.k8s.io/v1/endpointslices: 403 Forbidden' },
        },
      },
    ],
  });
  assert.match(podFailure(denied, 1)?.reason ?? '', /container xds: the API refused it .*403 Forbidden/);
  const exited = pod({ containerStatuses: [{ name: 'xds', state: { terminated: { exitCode: 137 } } }] });
  assert.match(podFailure(exited, 0)?.reason ?? '', /container xds: exit code 137/);
  assert.equal(podFailure(exited, 0)?.wantsLog, true);
  assert.equal(podFailure(exited, 1), undefined);
  assert.equal(
    podFailure(
      pod({ containerStatuses: [{ name: 'xds', state: { terminated: { exitCode: 137 } } }] }, true),
      0,
    ),
    undefined,
  );
  assert.equal(
    podFailure(pod({ containerStatuses: [{ name: 'xds', state: { terminated: { exitCode: 0 } } }] }), 0),
    undefined,
  );
  assert.equal(
    podFailure(pod({ containerStatuses: [{ name: 'xds', state: { running: {} } }] }), 0),
    undefined,
  );
  assert.equal(forbiddenLine('ok\nlisting: Forbidden (user "x")\n'), 'listing: Forbidden (user "x")');
  // The error, not the usage text printed after it.
  assert.equal(
    lastLine(
      'grpc-kube xds: GK_ERR_INVALID_OPTION: --listen: unknown flag\nusage: grpc-kube xds serve\n  --json  print\n',
    ),
    'grpc-kube xds: GK_ERR_INVALID_OPTION: --listen: unknown flag',
  );
  assert.equal(lastLine('a\nb\n\n'), 'b');
  assert.equal(
    lastLine("grpc-kube xds: Unknown option '--listen'\nusage: grpc-kube xds serve [flags]\n"),
    "grpc-kube xds: Unknown option '--listen'",
  );
  assert.equal(forbiddenLine('served 4030 RPCs'), undefined);
  assert.equal(
    forbiddenLine(
      'x\ngrpc-kube xds: GK_ERR_KUBE_FORBIDDEN: system:serviceaccount:ns:sa may not list grpcroutes',
    ),
    'grpc-kube xds: GK_ERR_KUBE_FORBIDDEN: system:serviceaccount:ns:sa may not list grpcroutes',
  );
});

test('labConfig: --manifests runs the overlays in plaintext and their own containers', () => {
  assert.equal(labConfig({ strategyCount: 1, manifests: true }).manifests, true);
  assert.throws(() => labConfig({ strategyCount: 1, manifests: true, tls: true }), InvalidOptionError);
  assert.throws(() => labConfig({ strategyCount: 1, manifests: true, podCommand: 'x' }), InvalidOptionError);
});

test("serviceAccountRules: a RoleBinding gives its ServiceAccount its Role's rules in its namespace only", () => {
  const x = plan('xds');
  const rules = serviceAccountRules(x.objects);
  const cp = rules('lab-xds', 'grpc-kube-xds');
  assert.ok(cp.length >= 3);
  assert.ok(cp.every((r) => r.namespaces?.length === 1 && r.namespaces[0] === 'lab-xds'));
  assert.ok(cp.some((r) => r.resources.includes('endpointslices') && r.verbs.includes('watch')));
  assert.deepEqual(rules('lab-xds', 'default'), []);
  assert.deepEqual(rules('other', 'grpc-kube-xds'), []);
  const k = serviceAccountRules(plan('kubernetes').objects)('lab-kubernetes', 'hello-client');
  assert.deepEqual(
    k.map((r) => r.resources.join(',')),
    ['endpointslices', 'services'],
  );
});
