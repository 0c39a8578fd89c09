// What the deploy/ manifests promise, checked on the rendered overlays without a cluster: the drain
// arithmetic (terminationGracePeriodSeconds covers preStop + DRAIN_PROPAGATION_MS + DRAIN_GRACE_MS +
// a margin), gRPC probes on the kit's health names, each scenario's client target, least-privilege
// RBAC that is actually bound, Services that select pods, $(VAR) references that expand, the
// canary's weights and the xDS bootstrap. Also the renderer itself: kustomize's merge order, and the
// same output as `kubectl kustomize` whenever kubectl is installed.

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import yaml from 'js-yaml';

import {
  commandOf,
  COMMANDS,
  parseCommandLine,
  parseHostPort,
  PROXY_FLAGS,
} from '@grpc-kube/cli/internal/options.js';
import { xdsServeSettings } from '@grpc-kube/cli/internal/xds.js';
import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { xdsBootstrap } from '@grpc-kube/xds/internal/bootstrap.js';
import {
  idOf,
  renderKustomization,
  strategicMerge,
  type KubeObject,
} from '@grpc-kube/lab/internal/manifests/kustomize.js';

const repoRoot = join(import.meta.dirname, '..', '..', '..');
const deployDir = join(repoRoot, 'deploy');
const SCENARIOS = [
  'clusterip',
  'headless',
  'max-connection-age',
  'kubernetes',
  'proxy',
  'sidecar',
  'canary',
  'xds',
] as const;
type Scenario = (typeof SCENARIOS)[number];

const SERVER_SCRIPT = 'dist/examples/hello/server.js';
const CLIENT_SCRIPT = 'dist/examples/hello/client.js';
const CLI_SCRIPT = 'packages/cli/dist/src/main.js';
/** Seconds the process needs to exit after its drain, on top of the kit's timings. */
const EXIT_MARGIN_S = 3;

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}
interface Probe {
  grpc?: { port: number; service?: string };
  tcpSocket?: { port: number | string };
  exec?: { command?: string[] };
  periodSeconds?: number;
  failureThreshold?: number;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: Array<{ name?: string; containerPort: number }>;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  restartPolicy?: string;
  lifecycle?: { preStop?: { sleep?: { seconds: number } } };
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean };
}
interface PodSpec {
  serviceAccountName?: string;
  terminationGracePeriodSeconds?: number;
  securityContext?: { runAsNonRoot?: boolean };
  containers: Container[];
  initContainers?: Container[];
}
interface DeploymentSpec {
  selector: { matchLabels: Record<string, string> };
  template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
}

const rendered = new Map<Scenario, KubeObject[]>(
  SCENARIOS.map((s) => [s, renderKustomization(join(deployDir, s))]),
);

function objects(s: Scenario): KubeObject[] {
  return rendered.get(s) ?? [];
}
function find(s: Scenario, kind: string, name: string): KubeObject {
  const o = objects(s).find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `deploy/${s} renders ${kind}/${name}`);
  return o;
}
function deployments(s: Scenario): Array<{ name: string; spec: DeploymentSpec }> {
  return objects(s)
    .filter((o) => o.kind === 'Deployment')
    .map((o) => ({ name: o.metadata.name, spec: o['spec'] as DeploymentSpec }));
}
function allContainers(spec: PodSpec): Container[] {
  return [...(spec.initContainers ?? []), ...spec.containers];
}
function envOf(c: Container): Map<string, string> {
  return new Map((c.env ?? []).map((e) => [e.name, e.value ?? `<from ${e.valueFrom?.fieldRef?.fieldPath}>`]));
}
function clientContainer(s: Scenario): Container {
  const d = deployments(s).find((x) => x.name === 'hello-client');
  assert.ok(d, `deploy/${s} has the hello-client Deployment`);
  const c = d.spec.template.spec.containers.find((x) => x.name === 'client');
  assert.ok(c);
  return c;
}
function matches(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

describe('test renderer (kustomize subset)', () => {
  const base: KubeObject = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'd' },
    spec: {
      replicas: 1,
      template: {
        spec: {
          containers: [
            {
              name: 'a',
              env: [
                { name: 'A', value: '1' },
                { name: 'B', value: '2' },
                { name: 'C', value: '3' },
              ],
              ports: [{ containerPort: 1 }],
            },
          ],
        },
      },
    },
  };

  it('merges lists by key as kustomize does: patch items first in patch order, then the others', () => {
    // The expected order is what `kubectl kustomize` (kustomize v5.5) printed for these inputs.
    const patched = strategicMerge(base, {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd' },
      spec: {
        replicas: null,
        template: {
          spec: {
            containers: [
              { name: 'b', image: 'x' },
              {
                name: 'a',
                env: [
                  { name: 'X', value: 'x' },
                  { name: 'B', value: '22' },
                  { name: 'Y', value: 'y' },
                ],
                ports: [{ containerPort: 2 }],
              },
            ],
          },
        },
      },
    } as unknown as KubeObject);
    assert.deepEqual(patched['spec'], {
      template: {
        spec: {
          containers: [
            { name: 'b', image: 'x' },
            {
              name: 'a',
              env: [
                { name: 'X', value: 'x' },
                { name: 'B', value: '22' },
                { name: 'Y', value: 'y' },
                { name: 'A', value: '1' },
                { name: 'C', value: '3' },
              ],
              ports: [{ containerPort: 2 }, { containerPort: 1 }],
            },
          ],
        },
      },
    });
    // Inputs untouched.
    assert.equal((base['spec'] as { replicas: number }).replicas, 1);
  });

  it('refuses what it does not implement, with a typed error', () => {
    const patch = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd' },
      spec: { template: { spec: { containers: [{ name: 'a', $patch: 'delete' }] } } },
    } as unknown as KubeObject;
    assert.throws(
      () => strategicMerge(base, patch),
      (e: unknown) => e instanceof GrpcKubeError && e.code === 'GK_ERR_INVALID_OPTION',
    );
  });

  it('renders every scenario with exactly its objects', () => {
    const names = (s: Scenario): string[] =>
      objects(s)
        .map((o) => `${o.kind}/${o.metadata.name}`)
        .sort();
    const base = [
      'Deployment/hello',
      'Deployment/hello-client',
      'Service/hello',
      'Service/hello-headless',
      'Namespace/x',
    ];
    const withNs = (s: Scenario, extra: string[]): string[] =>
      [...base.map((n) => (n === 'Namespace/x' ? `Namespace/hello-${s}` : n)), ...extra].sort();
    const rbac = [
      'ServiceAccount/hello-client',
      'Role/grpc-kube-endpoints',
      'RoleBinding/hello-client-endpoints',
    ];
    const xds = [
      'ServiceAccount/grpc-kube-xds',
      'Role/grpc-kube-xds',
      'RoleBinding/grpc-kube-xds',
      'Service/grpc-kube-xds',
      'Deployment/grpc-kube-xds',
    ];
    assert.deepEqual(names('clusterip'), withNs('clusterip', []));
    assert.deepEqual(names('headless'), withNs('headless', []));
    assert.deepEqual(names('max-connection-age'), withNs('max-connection-age', []));
    assert.deepEqual(names('kubernetes'), withNs('kubernetes', rbac));
    assert.deepEqual(names('sidecar'), withNs('sidecar', rbac));
    assert.deepEqual(
      names('proxy'),
      withNs('proxy', [
        'ServiceAccount/grpc-kube-proxy',
        'Role/grpc-kube-proxy',
        'RoleBinding/grpc-kube-proxy',
        'Service/hello-proxy',
        'Deployment/hello-proxy',
      ]),
    );
    assert.deepEqual(names('xds'), withNs('xds', xds));
    assert.deepEqual(
      names('canary'),
      withNs('canary', [
        ...xds,
        'Deployment/hello-v2',
        'Service/hello-v1',
        'Service/hello-v2',
        'GRPCRoute/hello',
      ]),
    );
    for (const s of SCENARIOS) {
      for (const o of objects(s)) {
        if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, `hello-${s}`, `${s}: ${idOf(o)}`);
      }
    }
  });

  const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8', timeout: 10_000 });
  const noKubectl = kubectl.status === 0 ? false : 'kubectl is not installed: nothing to compare with';
  it('renders exactly what `kubectl kustomize` renders', { skip: noKubectl }, () => {
    for (const dir of [...SCENARIOS, 'crds', 'base']) {
      const out = execFileSync('kubectl', ['kustomize', join(deployDir, dir)], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      const theirs = new Map(
        (yaml.loadAll(out) as KubeObject[]).filter((o) => o !== null).map((o) => [idOf(o), o] as const),
      );
      const ours = new Map(renderKustomization(join(deployDir, dir)).map((o) => [idOf(o), o] as const));
      assert.deepEqual([...ours.keys()].sort(), [...theirs.keys()].sort(), `deploy/${dir}: same objects`);
      for (const [id, o] of ours) assert.deepEqual(o, theirs.get(id), `deploy/${dir}: ${id}`);
    }
  });
});

describe('deploy/ manifests', () => {
  it('every hello server drains within terminationGracePeriodSeconds (preStop + propagation + grace + margin)', () => {
    let checked = 0;
    for (const s of SCENARIOS) {
      for (const d of deployments(s)) {
        const pod = d.spec.template.spec;
        const server = pod.containers.find((c) => c.command?.includes(SERVER_SCRIPT));
        if (server === undefined) continue;
        checked++;
        const env = envOf(server);
        const preStopS = server.lifecycle?.preStop?.sleep?.seconds ?? 0;
        const propagationMs = Number(env.get('DRAIN_PROPAGATION_MS'));
        const graceMs = Number(env.get('DRAIN_GRACE_MS'));
        assert.ok(propagationMs > 0 && graceMs > 0, `${s}/${d.name}: both drain timings are set`);
        const tgps = pod.terminationGracePeriodSeconds;
        assert.ok(tgps !== undefined, `${s}/${d.name}: terminationGracePeriodSeconds is explicit`);
        const needS = preStopS + propagationMs / 1000 + graceMs / 1000 + EXIT_MARGIN_S;
        assert.ok(
          tgps >= needS,
          `${s}/${d.name}: ${tgps} s < ${preStopS} + ${propagationMs / 1000} + ${graceMs / 1000} + ${EXIT_MARGIN_S}`,
        );
        // A preStop sleep and the kit's propagation delay would add up: use one or the other.
        assert.ok(
          preStopS === 0 || propagationMs === 0,
          `${s}/${d.name}: preStop and DRAIN_PROPAGATION_MS both set`,
        );
        // Probes on the kit's health names: '' follows readiness, 'liveness' only process life.
        const port = server.ports?.find((p) => p.name === 'grpc')?.containerPort;
        assert.equal(env.get('PORT'), String(port), `${s}/${d.name}: PORT matches the container port`);
        assert.deepEqual(server.readinessProbe?.grpc, { port }, `${s}/${d.name}: readiness on ''`);
        assert.deepEqual(server.livenessProbe?.grpc, { port, service: 'liveness' });
        // A pod that cannot serve keeps new RPCs for at most period × threshold.
        const r = server.readinessProbe;
        assert.ok(
          (r?.periodSeconds ?? 10) * (r?.failureThreshold ?? 3) <= 2,
          `${s}/${d.name}: readiness reacts in <= 2 s`,
        );
      }
    }
    assert.equal(checked, SCENARIOS.length + 1, 'one server per scenario, two in the canary');
    // The kubernetes overlay shortens the propagation (every client watches EndpointSlices).
    const k = deployments('kubernetes').find((d) => d.name === 'hello');
    assert.equal(envOf(k?.spec.template.spec.containers[0] as Container).get('DRAIN_PROPAGATION_MS'), '2000');
    assert.equal(k?.spec.template.spec.terminationGracePeriodSeconds, 25);
  });

  it('each scenario’s client dials what the scenario is about', () => {
    const expected: Record<Scenario, [string, string]> = {
      clusterip: ['dns:///hello.$(POD_NAMESPACE).svc.cluster.local:50051', 'round_robin'],
      headless: ['dns:///hello-headless.$(POD_NAMESPACE).svc.cluster.local:50051', 'round_robin'],
      'max-connection-age': ['dns:///hello-headless.$(POD_NAMESPACE).svc.cluster.local:50051', 'round_robin'],
      kubernetes: ['kubernetes:///hello.$(POD_NAMESPACE):50051', 'round_robin'],
      proxy: ['dns:///hello-proxy.$(POD_NAMESPACE).svc.cluster.local:50051', 'round_robin'],
      sidecar: ['ipv4:127.0.0.1:15001', 'pick_first'],
      xds: ['xds:///hello.$(POD_NAMESPACE):50051', 'round_robin'],
      canary: ['xds:///hello.$(POD_NAMESPACE):50051', 'round_robin'],
    };
    for (const s of SCENARIOS) {
      const env = envOf(clientContainer(s));
      assert.deepEqual([env.get('TARGET'), env.get('LB_POLICY')], expected[s], s);
      assert.equal(env.get('CONCURRENCY'), '10', `${s}: the east-west demo's ten concurrent RPCs`);
      assert.deepEqual(clientContainer(s).command, ['node', CLIENT_SCRIPT]);
    }
    // The sidecar routes by :authority; only its client sets one.
    for (const s of SCENARIOS) {
      const expectedAuthority = s === 'sidecar' ? 'hello.$(POD_NAMESPACE):50051' : undefined;
      assert.equal(envOf(clientContainer(s)).get('AUTHORITY'), expectedAuthority, s);
    }
    const proxyArgs = (s: Scenario, deployment: string): string[] | undefined => {
      const pod = deployments(s).find((d) => d.name === deployment)?.spec.template.spec;
      return allContainers(pod as PodSpec).find((c) => c.name === 'proxy')?.args;
    };
    assert.deepEqual(proxyArgs('proxy', 'hello-proxy'), [
      '--mode=ingress',
      '--listen=0.0.0.0:50051',
      '--target=hello.$(POD_NAMESPACE):50051',
      '--drain-delay-ms=5000',
      '--grace-ms=20000',
      '--max-connection-age-ms=300000',
    ]);
    // The ingress proxy's drain fits its grace period: drain delay + grace + a margin.
    const proxyPod = deployments('proxy').find((d) => d.name === 'hello-proxy')?.spec.template
      .spec as PodSpec & {
      terminationGracePeriodSeconds?: number;
    };
    assert.ok((proxyPod.terminationGracePeriodSeconds ?? 30) >= 5 + 20 + EXIT_MARGIN_S);
    assert.deepEqual(proxyArgs('sidecar', 'hello-client'), [
      '--mode=sidecar',
      '--listen=127.0.0.1:15001',
      '--namespace=$(POD_NAMESPACE)',
    ]);
    const server = (s: Scenario): Map<string, string> =>
      envOf(deployments(s).find((d) => d.name === 'hello')?.spec.template.spec.containers[0] as Container);
    assert.equal(server('max-connection-age').get('MAX_CONNECTION_AGE_MS'), '30000');
    assert.equal(server('max-connection-age').get('MAX_CONNECTION_AGE_GRACE_MS'), '10000');
    for (const s of SCENARIOS.filter((x) => x !== 'max-connection-age')) {
      assert.equal(server(s).get('MAX_CONNECTION_AGE_MS'), undefined, `${s}: no max age`);
    }
  });

  it('every $(VAR) reference names a variable defined earlier in the same container', () => {
    for (const s of SCENARIOS) {
      for (const d of deployments(s)) {
        for (const c of allContainers(d.spec.template.spec)) {
          const defined = new Set<string>();
          const check = (text: string, where: string): void => {
            for (const m of text.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
              assert.ok(
                defined.has(m[1] as string),
                `${s}/${d.name}/${c.name} ${where}: $(${m[1]}) is not defined before`,
              );
            }
          };
          for (const e of c.env ?? []) {
            if (e.value !== undefined) check(e.value, `env ${e.name}`);
            defined.add(e.name);
          }
          for (const a of [...(c.command ?? []), ...(c.args ?? [])]) check(a, 'command/args');
        }
      }
    }
  });

  it('RBAC: every pod identity exists and holds exactly the read access its role needs', () => {
    const rulesFor = (s: Scenario, sa: string): string[] => {
      const out: string[] = [];
      for (const rb of objects(s).filter((o) => o.kind === 'RoleBinding')) {
        const subjects = rb['subjects'] as Array<{ kind: string; name: string; namespace?: string }>;
        if (
          !subjects.some(
            (x) => x.kind === 'ServiceAccount' && x.name === sa && x.namespace === rb.metadata.namespace,
          )
        )
          continue;
        const ref = rb['roleRef'] as { kind: string; name: string };
        const role = find(s, ref.kind, ref.name);
        for (const r of role['rules'] as Array<{
          apiGroups: string[];
          resources: string[];
          verbs: string[];
        }>) {
          for (const g of r.apiGroups)
            for (const res of r.resources) out.push(`${g}/${res}:${[...r.verbs].sort().join(',')}`);
        }
      }
      return out.sort();
    };
    const read = 'get,list,watch';
    const slices = `discovery.k8s.io/endpointslices:${read}`;
    // Route servers read GRPCRoutes and ReferenceGrants and write the routes' status.
    const routes = [
      `gateway.networking.k8s.io/grpcroutes/status:update`,
      `gateway.networking.k8s.io/grpcroutes:${read}`,
      `gateway.networking.k8s.io/referencegrants:${read}`,
    ];
    // A numeric port in a target is the Service port: the Service is read (get only) to map it.
    const services = '/services:get';
    const expected: Record<Scenario, Record<string, string[]>> = {
      clusterip: {},
      headless: {},
      'max-connection-age': {},
      kubernetes: { 'hello-client': [services, slices] },
      proxy: { 'grpc-kube-proxy': [services, slices, ...routes].sort() },
      sidecar: { 'hello-client': [services, slices, ...routes].sort() },
      xds: { 'grpc-kube-xds': [services, slices, ...routes].sort() },
      canary: { 'grpc-kube-xds': [services, slices, ...routes].sort() },
    };
    for (const s of SCENARIOS) {
      const used = new Set<string>();
      for (const d of deployments(s)) {
        const sa = d.spec.template.spec.serviceAccountName;
        if (sa === undefined) continue;
        used.add(sa);
        find(s, 'ServiceAccount', sa);
      }
      assert.deepEqual(
        [...used].sort(),
        Object.keys(expected[s]).sort(),
        `${s}: pods with their own identity`,
      );
      for (const [sa, rules] of Object.entries(expected[s]))
        assert.deepEqual(rulesFor(s, sa), rules, `${s}: ${sa}`);
    }
  });

  it('Services select pods that expose the target port; Deployments do not adopt each other’s pods', () => {
    for (const s of SCENARIOS) {
      const ds = deployments(s);
      for (const svc of objects(s).filter((o) => o.kind === 'Service')) {
        const spec = svc['spec'] as {
          selector: Record<string, string>;
          ports: Array<{ targetPort: string }>;
        };
        const pods = ds.filter((d) => matches(spec.selector, d.spec.template.metadata.labels));
        assert.ok(pods.length > 0, `${s}: Service ${svc.metadata.name} selects no pod`);
        for (const d of pods) {
          for (const p of spec.ports) {
            const names = allContainers(d.spec.template.spec).flatMap((c) =>
              (c.ports ?? []).map((x) => x.name),
            );
            assert.ok(
              names.includes(p.targetPort),
              `${s}: ${svc.metadata.name} → ${d.name} port ${p.targetPort}`,
            );
          }
        }
      }
      for (const a of ds) {
        assert.ok(
          matches(a.spec.selector.matchLabels, a.spec.template.metadata.labels),
          `${s}/${a.name} selects its pods`,
        );
        for (const b of ds) {
          if (a !== b) {
            assert.ok(
              !matches(a.spec.selector.matchLabels, b.spec.template.metadata.labels),
              `${s}: ${a.name}'s selector matches ${b.name}'s pods`,
            );
          }
        }
      }
    }
  });

  it('runs non-root on a read-only root filesystem, one image for every container', () => {
    for (const s of SCENARIOS) {
      for (const d of deployments(s)) {
        const pod = d.spec.template.spec;
        assert.equal(pod.securityContext?.runAsNonRoot, true, `${s}/${d.name}`);
        for (const c of allContainers(pod)) {
          assert.equal(c.image, 'grpc-kube:0.1.0', `${s}/${d.name}/${c.name}`);
          assert.equal(c.securityContext?.allowPrivilegeEscalation, false);
          assert.equal(c.securityContext?.readOnlyRootFilesystem, true);
          // The image's files: node runs one of them directly, so SIGTERM reaches the process.
          assert.equal(c.command?.[0], 'node', `${s}/${d.name}/${c.name}`);
          const script = c.command?.[1] ?? '';
          assert.ok(existsSync(join(repoRoot, script)), `${s}/${d.name}/${c.name}: ${script} is built`);
        }
      }
    }
    // The sidecar is a native sidecar: an init container that keeps running.
    const sidecar = deployments('sidecar').find((d) => d.name === 'hello-client')?.spec.template.spec;
    assert.deepEqual(
      sidecar?.initContainers?.map((c) => [c.name, c.restartPolicy, c.args?.[0]]),
      [['proxy', 'Always', '--mode=sidecar']],
    );
  });

  it('canary: a GRPCRoute on Service hello splits 90/10 between Services of v1 and v2 pods', () => {
    const route = find('canary', 'GRPCRoute', 'hello');
    assert.equal(route.apiVersion, 'gateway.networking.k8s.io/v1');
    const spec = route['spec'] as {
      parentRefs: Array<{ group: string; kind: string; name: string; port: number }>;
      rules: Array<{ backendRefs: Array<{ name: string; port: number; weight: number }> }>;
    };
    assert.deepEqual(spec.parentRefs, [{ group: '', kind: 'Service', name: 'hello', port: 50051 }]);
    const refs = spec.rules.flatMap((r) => r.backendRefs);
    assert.deepEqual(
      refs.map((r) => [r.name, r.weight]),
      [
        ['hello-v1', 90],
        ['hello-v2', 10],
      ],
    );
    const ds = deployments('canary');
    for (const [ref, version] of [
      [refs[0], 'v1'],
      [refs[1], 'v2'],
    ] as const) {
      const svc = find('canary', 'Service', ref?.name ?? '');
      const selector = (svc['spec'] as { selector: Record<string, string> }).selector;
      const selected = ds.filter((d) => matches(selector, d.spec.template.metadata.labels));
      assert.deepEqual(
        selected.map((d) => d.spec.template.metadata.labels['version']),
        [version],
        `${ref?.name} selects only ${version}`,
      );
      const env = envOf(selected[0]?.spec.template.spec.containers[0] as Container);
      assert.equal(env.get('VERSION'), version);
    }
  });

  it('xds: the client bootstrap is valid JSON naming the control plane Service and a locality', () => {
    for (const s of ['xds', 'canary'] as const) {
      const env = envOf(clientContainer(s));
      const raw = env.get('GRPC_XDS_BOOTSTRAP_CONFIG') ?? '';
      const text = raw
        .replaceAll('$(POD_NAMESPACE)', `hello-${s}`)
        .replaceAll('$(POD_NAME)', 'hello-client-x');
      const svc = find(s, 'Service', 'grpc-kube-xds');
      const port = (svc['spec'] as { ports: Array<{ port: number }> }).ports[0]?.port;
      // Exactly what the control plane's own bootstrap helper makes for this pod.
      assert.deepEqual(
        JSON.parse(text),
        xdsBootstrap({
          server: `grpc-kube-xds.hello-${s}.svc.cluster.local:${port}`,
          nodeId: `hello-${s}/hello-client-x`,
        }),
      );
      // The control plane listens on the Service's port (what its flags mean is checked below, by
      // the CLI's own parser).
      const cp = deployments(s).find((d) => d.name === 'grpc-kube-xds')?.spec.template.spec.containers[0];
      const line = commandLine(cp as Container, `hello-${s}`);
      assert.deepEqual(line.slice(0, 4), ['node', CLI_SCRIPT, 'xds', 'serve']);
      assert.equal(
        xdsServeSettings(parseCommandLine(COMMANDS['xds serve'].flags, line.slice(4)).values).port,
        port,
      );
    }
  });
});

/** A container's command and args with $(VAR) expanded as the kubelet does (fieldRefs as this pod's). */
function commandLine(c: Container, namespace: string): string[] {
  const env = new Map<string, string>();
  const expand = (text: string): string =>
    text.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => env.get(name) ?? all);
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.fieldRef?.fieldPath;
    env.set(
      e.name,
      e.value !== undefined
        ? expand(e.value)
        : ref === 'metadata.namespace'
          ? namespace
          : ref === 'metadata.name'
            ? 'pod-0'
            : '',
    );
  }
  return [...(c.command ?? []), ...(c.args ?? [])].map(expand);
}

/**
 * Run a container's command line through the CLI's own parser and option checks, as the process
 * would at start-up: an unknown flag, a flag without its value, or a value the command refuses
 * throws here as it would crash-loop the pod. `ports` are the container's (or image's) ports: a
 * server must listen on one of them. Returns the command run (or the script, for the examples).
 */
function checkCommandLine(
  where: string,
  argv: readonly string[],
  ports: readonly number[],
  namespace?: string,
): string {
  assert.equal(argv[0], 'node', `${where}: node runs the script itself (SIGTERM reaches it)`);
  const script = argv[1] ?? '';
  if (script !== CLI_SCRIPT) {
    // The examples take their settings from the environment and no argument.
    assert.ok([SERVER_SCRIPT, CLIENT_SCRIPT].includes(script), `${where}: runs ${script}`);
    assert.deepEqual(argv.slice(2), [], `${where}: ${script} takes no arguments`);
    return script;
  }
  const cmd = commandOf(argv.slice(2));
  assert.ok(cmd !== undefined, `${where}: "${argv.slice(2, 4).join(' ')}" is a grpc-kube command`);
  let values: Record<string, unknown>;
  try {
    const parsed = parseCommandLine(COMMANDS[cmd.command].flags, cmd.args);
    // --help prints the flags and exits 0 (the proxy image's default: it needs its Service named).
    if (parsed.help) return `${cmd.command} --help`;
    values = parsed.values;
    if (cmd.command === 'xds serve') {
      const s = xdsServeSettings(parsed.values as Parameters<typeof xdsServeSettings>[0]);
      assert.ok(ports.includes(s.port), `${where}: ADS on ${s.port}, the container has ${ports.join(',')}`);
      // Other pods dial it through its Service: not loopback.
      assert.equal(s.host, '0.0.0.0', `${where}: ADS listens on every interface`);
      if (namespace !== undefined)
        assert.ok(
          [undefined, namespace].includes(s.routeNamespace),
          `${where}: GRPCRoutes of its own namespace`,
        );
    } else if (cmd.command === 'proxy') {
      const v = parsed.values as { mode?: string; listen?: string; target?: string };
      assert.ok(v.mode === 'sidecar' || v.mode === 'ingress', `${where}: --mode ${v.mode}`);
      if (v.mode === 'ingress') assert.ok(v.target !== undefined, `${where}: an ingress names its --target`);
      const { port } = parseHostPort(v.listen ?? '127.0.0.1:15001', '--listen');
      assert.ok(
        ports.includes(port),
        `${where}: the proxy listens on ${port}, the container has ${ports.join(',')}`,
      );
    } else assert.fail(`${where}: deploy/ runs xds serve and proxy, not ${cmd.command}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.fail(`${where}: ${argv.slice(2).join(' ')}: ${(e as Error).message}`);
  }
  assert.ok(Object.keys(values).length > 0);
  return cmd.command;
}

/** The Dockerfile's stages: name → [parent, lines]. */
function dockerStages(text: string): Map<string, { from: string; lines: string[] }> {
  const out = new Map<string, { from: string; lines: string[] }>();
  let cur: string[] | undefined;
  for (const line of text.split('\n')) {
    const m = /^FROM (\S+) AS (\S+)$/.exec(line);
    if (m !== null) {
      cur = [];
      out.set(m[2] as string, { from: m[1] as string, lines: cur });
    } else if (cur !== undefined && line.trim() !== '' && !line.startsWith('#')) cur.push(line.trim());
  }
  return out;
}

describe('every command line shipped runs under the CLI as built', () => {
  it('each container in deploy/ parses with the command’s own flags and option checks', () => {
    const seen: string[] = [];
    for (const s of SCENARIOS) {
      for (const o of objects(s)) {
        const template = (o['spec'] as { template?: { spec?: PodSpec } } | undefined)?.template?.spec;
        const pod = o.kind === 'Pod' ? (o['spec'] as PodSpec) : template;
        if (pod === undefined) continue;
        for (const c of allContainers(pod)) {
          const where = `deploy/${s} ${o.kind}/${o.metadata.name}/${c.name}`;
          const ports = (c.ports ?? []).map((p) => p.containerPort);
          // A sidecar's port is in its startup probe (loopback only: no containerPort to publish),
          // an exec in the container: a tcpSocket probe dials the pod IP, where a loopback listener
          // is not (the real lab's kubelet, as Kubernetes', restarted the sidecar for it).
          if (c.restartPolicy === 'Always')
            assert.equal(
              c.startupProbe?.tcpSocket,
              undefined,
              `${where}: a tcpSocket probe misses a loopback listener`,
            );
          const probe = /connect\((\d+), '127\.0\.0\.1'\)/.exec(
            c.startupProbe?.exec?.command?.join(' ') ?? '',
          );
          if (probe) ports.push(Number(probe[1]));
          const ran = checkCommandLine(where, commandLine(c, `hello-${s}`), ports, `hello-${s}`);
          seen.push(`${s} ${o.metadata.name}/${c.name}: ${ran}`);
        }
      }
    }
    // Every container was looked at: the CLI runs exactly where the overlays put it.
    const cli = seen.filter((x) => !x.endsWith('.js')).sort();
    assert.deepEqual(cli, [
      'canary grpc-kube-xds/xds: xds serve',
      'proxy hello-proxy/proxy: proxy',
      'sidecar hello-client/proxy: proxy',
      'xds grpc-kube-xds/xds: xds serve',
    ]);
    assert.equal(seen.length, cli.length + 2 * SCENARIOS.length + 1, seen.join('\n'));
  });

  it('each Dockerfile target’s CMD parses with the command’s own flags and option checks', () => {
    const stages = dockerStages(readFileSync(join(repoRoot, 'Dockerfile'), 'utf8'));
    const seen: string[] = [];
    for (const [name, stage] of stages) {
      const cmd = stage.lines.find((l) => l.startsWith('CMD '));
      if (cmd === undefined) continue;
      const exposed = (st: { from: string; lines: string[] } | undefined): number[] =>
        st === undefined
          ? []
          : [
              ...st.lines
                .filter((l) => l.startsWith('EXPOSE '))
                .flatMap((l) => l.split(/\s+/).slice(1).map(Number)),
              ...exposed(stages.get(st.from)),
            ];
      const argv = JSON.parse(cmd.slice(4)) as string[];
      seen.push(`${name}: ${checkCommandLine(`Dockerfile ${name}`, argv, exposed(stage))}`);
    }
    assert.deepEqual(seen, [
      `client: ${CLIENT_SCRIPT}`,
      'proxy: proxy --help',
      'xds: xds serve',
      `server: ${SERVER_SCRIPT}`,
    ]);
  });

  it('would catch a flag the CLI does not know, a missing value, and a value it refuses', () => {
    const xds = ['node', CLI_SCRIPT, 'xds', 'serve'];
    assert.equal(
      checkCommandLine('ok', [...xds, '--listen=0.0.0.0:18000', '--namespace=ns'], [18000], 'ns'),
      'xds serve',
    );
    for (const [bad, why] of [
      [[...xds, '--listen=0.0.0.0:18000', '--bind=x'], /Unknown option '--bind'/],
      [[...xds, '--listen'], /argument missing/],
      [[...xds, '--listen=0.0.0.0'], /must be host:port/],
      [[...xds, '--listen=0.0.0.0:18001'], /ADS on 18001/],
      [['node', CLI_SCRIPT, 'proxy', '--mode=ingress', '--listen=0.0.0.0:18000'], /names its --target/],
      [['node', CLI_SCRIPT, 'xds', 'serv'], /is a grpc-kube command/],
      [['node', SERVER_SCRIPT, '--port=1'], /takes no arguments/],
    ] as const) {
      assert.throws(() => checkCommandLine('bad', bad, [18000], 'ns'), why);
    }
    // The table is what the parser knows: every flag of the proxy manifest is in it.
    assert.ok('listen' in PROXY_FLAGS && 'drain-delay-ms' in PROXY_FLAGS);
  });
});
