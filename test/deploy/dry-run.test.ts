// Every manifest under deploy/ passes SERVER-SIDE dry-run against the REAL kube-apiserver (the one the
// lab starts, built by scripts/build-control-plane.sh): what `kubectl apply --dry-run=server` checks —
// defaulting, validation (probes, selectors, RBAC rules, CRD schemas) and admission — without
// persisting anything. Per scenario: render the overlay (packages/lab/src/manifests/kustomize.ts), create its
// Namespace for real, then POST each object with ?dryRun=All (PUT for the Namespace that now exists)
// and check that the server answered with the object and stored nothing. The GRPCRoute CRD from
// deploy/crds is dry-run like the rest and then installed for real, so the canary's GRPCRoute is
// validated against its schema. A broken Deployment and a GRPCRoute with a negative weight must be
// rejected with 422, so the test can fail.
//
// Skips only when the binaries are absent and GRPC_KUBE_REAL is unset; with GRPC_KUBE_REAL=1 a missing
// binary fails.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as https from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { KubeConfig } from '@kubernetes/client-node';

import {
  controlPlaneBinDir,
  controlPlaneBinariesPresent,
} from '@grpc-kube/lab/internal/cluster/real/binaries.js';
import {
  startRealControlPlane,
  type RealControlPlane,
} from '@grpc-kube/lab/internal/cluster/real/control-plane.js';
import { installCrds, type CrdObject } from '@grpc-kube/lab/internal/cluster/real/crds.js';
import { KINDS, httpKube, kindOf, type Kube } from '@grpc-kube/lab/internal/cluster/kube-api.js';
import {
  applyOrder,
  idOf,
  renderKustomization,
  type KubeObject,
} from '@grpc-kube/lab/internal/manifests/kustomize.js';

const repoRoot = join(import.meta.dirname, '..', '..', '..');
const deployDir = join(repoRoot, 'deploy');
export const SCENARIOS = [
  'clusterip',
  'headless',
  'max-connection-age',
  'kubernetes',
  'proxy',
  'sidecar',
  'canary',
  'xds',
] as const;

const realRequired = (process.env['GRPC_KUBE_REAL'] ?? '') !== '';
const skipReal =
  !realRequired && !controlPlaneBinariesPresent()
    ? `real control plane not built (${controlPlaneBinDir()}); run scripts/build-control-plane.sh ` +
      'or set GRPC_KUBE_REAL=1 to make this a failure'
    : false;

const noKubectl =
  spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8', timeout: 10_000 }).status === 0
    ? false
    : 'kubectl is not installed';

interface Answer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/**
 * Raw JSON requests with the admin kubeconfig's client certificate, for what the lab's Kube does not
 * do: ?dryRun=All, with collection paths from API discovery (as kubectl finds them).
 */
class Api {
  private constructor(
    private readonly base: URL,
    private readonly tls: https.RequestOptions,
  ) {}

  static async fromKubeConfig(yaml: string): Promise<Api> {
    const kc = new KubeConfig();
    kc.loadFromString(yaml);
    const server = kc.getCurrentCluster()?.server;
    assert.ok(server, 'kubeconfig has a server');
    const tls: https.RequestOptions = {};
    await kc.applyToHTTPSOptions(tls);
    return new Api(new URL(server), tls);
  }

  request(method: string, path: string, body?: unknown, timeoutMs = 15_000): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      const req = https.request({
        ...this.tls,
        method,
        hostname: this.base.hostname,
        port: this.base.port,
        path,
        agent: false,
        headers: {
          Accept: 'application/json',
          ...(data !== undefined
            ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) }
            : {}),
        },
      });
      const timer = setTimeout(
        () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
      timer.unref();
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          clearTimeout(timer);
          let parsed: Record<string, unknown>;
          try {
            parsed = JSON.parse(text) as Record<string, unknown>;
          } catch {
            parsed = { text };
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      });
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.end(data);
    });
  }

  private readonly discovery = new Map<string, Array<{ name: string; kind: string; namespaced: boolean }>>();

  /** The collection path of an object, from API discovery (as kubectl finds it). */
  async collectionPath(o: KubeObject): Promise<string> {
    const gv = o.apiVersion.includes('/') ? `/apis/${o.apiVersion}` : `/api/${o.apiVersion}`;
    let list = this.discovery.get(gv);
    if (list === undefined) {
      const a = await this.request('GET', gv);
      assert.equal(a.status, 200, `discovery ${gv}: ${JSON.stringify(a.body)}`);
      list = a.body['resources'] as Array<{ name: string; kind: string; namespaced: boolean }>;
      this.discovery.set(gv, list);
    }
    const r = list.find((x) => x.kind === o.kind && !x.name.includes('/'));
    assert.ok(r, `the server serves no ${o.kind} in ${o.apiVersion}`);
    if (!r.namespaced) return `${gv}/${r.name}`;
    assert.ok(o.metadata.namespace, `${idOf(o)} is namespaced but has no namespace`);
    return `${gv}/namespaces/${o.metadata.namespace}/${r.name}`;
  }

  forget(gv: string): void {
    this.discovery.delete(gv);
  }
}

function statusText(a: Answer): string {
  return `${a.status} ${String(a.body['message'] ?? JSON.stringify(a.body))}`;
}

/** POST ?dryRun=All; for an object that exists already (the Namespace), PUT ?dryRun=All. */
async function dryRunApply(api: Api, o: KubeObject, exists: boolean): Promise<Answer> {
  const collection = await api.collectionPath(o);
  return exists
    ? api.request('PUT', `${collection}/${o.metadata.name}?dryRun=All&fieldManager=grpc-kube-test`, o)
    : api.request('POST', `${collection}?dryRun=All&fieldManager=grpc-kube-test`, o);
}

describe('deploy/: server-side dry-run against the real kube-apiserver', { skip: skipReal }, () => {
  let cp: RealControlPlane | undefined;
  let api: Api;
  let kube: Kube | undefined;

  before(async () => {
    // Only the apiserver matters here; the controllers would only add load on a shared machine.
    cp = await startRealControlPlane({ controllers: ['namespace-controller', 'serviceaccount-controller'] });
    api = await Api.fromKubeConfig(cp.adminKubeConfig);
    kube = httpKube(cp.adminKubeConfig, { retryTransientMs: 30_000 });
  });
  after(async () => {
    kube?.close();
    await cp?.stop();
  });
  /** Whether the API holds `o` (a dry-run must leave it absent). */
  const stored = async (o: KubeObject): Promise<boolean> => {
    const rt = kindOf(o.apiVersion, o.kind);
    assert.ok(rt && kube, `the lab knows ${o.apiVersion} ${o.kind}`);
    return (await kube.get(rt, o.metadata.namespace, o.metadata.name)) !== undefined;
  };

  it('deploy/crds: the GRPCRoute and ReferenceGrant CRDs pass dry-run, then install and are Established', async () => {
    const objects = renderKustomization(join(deployDir, 'crds'));
    assert.deepEqual(
      objects.map((o) => `${o.kind}/${o.metadata.name}`),
      [
        'CustomResourceDefinition/grpcroutes.gateway.networking.k8s.io',
        'CustomResourceDefinition/referencegrants.gateway.networking.k8s.io',
      ],
    );
    for (const crd of objects as KubeObject[]) {
      const dry = await dryRunApply(api, crd, false);
      assert.equal(dry.status, 201, statusText(dry));
      assert.equal(await stored(crd), false, 'dry-run must not store the CRD');
    }
    // Then for real, as the lab's real cluster installs them: created and Established.
    assert.ok(kube);
    await installCrds(kube, objects as unknown as CrdObject[]);
    api.forget('/apis/gateway.networking.k8s.io/v1');
    api.forget('/apis/gateway.networking.k8s.io/v1beta1');
  });

  for (const scenario of SCENARIOS) {
    it(`deploy/${scenario}: every object passes server-side dry-run and none is stored`, async () => {
      const objects = applyOrder(renderKustomization(join(deployDir, scenario)));
      const namespaces = objects.filter((o) => o.kind === 'Namespace');
      assert.equal(namespaces.length, 1, 'each overlay brings its own Namespace');
      const ns = namespaces[0] as KubeObject;
      assert.ok(kube);
      await kube.create(KINDS.namespaces, ns);
      assert.equal(await stored(ns), true, 'stored() sees what exists');
      for (const o of objects) {
        const a = await dryRunApply(api, o, o.kind === 'Namespace');
        assert.ok(a.status === 200 || a.status === 201, `${idOf(o)}: ${statusText(a)}`);
        const meta = a.body['metadata'] as Record<string, unknown>;
        assert.equal(meta['name'], o.metadata.name);
        assert.equal(meta['namespace'], o.metadata.namespace);
        if (o.kind !== 'Namespace')
          assert.equal(await stored(o), false, `${idOf(o)} must not be stored by a dry-run`);
        if (o.kind === 'Deployment') {
          // Defaulting ran (the server filled the strategy), so this was a full server-side pass.
          const spec = a.body['spec'] as { strategy?: { type?: string } };
          assert.equal(spec.strategy?.type, 'RollingUpdate', idOf(o));
        }
      }
    });
  }

  it(
    'kubectl apply -k --dry-run=server accepts every overlay as kustomize renders it',
    { skip: noKubectl },
    () => {
      // The namespaces and the CRD exist by now (the tests above created them for real).
      const kubeconfig: string = cp?.adminKubeConfigPath ?? '';
      assert.ok(kubeconfig !== '');
      for (const scenario of SCENARIOS) {
        const r = spawnSync(
          'kubectl',
          ['--kubeconfig', kubeconfig, 'apply', '--dry-run=server', '-k', join(deployDir, scenario)],
          { encoding: 'utf8', timeout: 60_000 },
        );
        assert.equal(r.status, 0, `deploy/${scenario}: ${r.stderr}`);
        // One "(server dry run)" line per object.
        const lines = r.stdout.trim().split('\n');
        assert.equal(lines.length, renderKustomization(join(deployDir, scenario)).length, r.stdout);
        assert.ok(
          lines.every((l) => l.endsWith('(server dry run)')),
          r.stdout,
        );
      }
    },
  );

  it('rejects what is wrong (so the checks above can fail): bad probe port, negative route weight', async () => {
    const objects = renderKustomization(join(deployDir, 'canary'));
    const ns = 'hello-canary';
    const deployment = structuredClone(
      objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'hello'),
    );
    assert.ok(deployment);
    const containers = (
      deployment['spec'] as { template: { spec: { containers: Array<Record<string, unknown>> } } }
    ).template.spec.containers;
    (containers[0] as { readinessProbe: { grpc: { port: number } } }).readinessProbe.grpc.port = 0;
    const bad = await dryRunApply(api, deployment, false);
    assert.equal(bad.status, 422, statusText(bad));
    assert.match(String(bad.body['message']), /readinessProbe\.grpc\.port/);

    const route = structuredClone(objects.find((o) => o.kind === 'GRPCRoute'));
    assert.ok(route);
    assert.equal(route.metadata.namespace, ns);
    const rules = (route['spec'] as { rules: Array<{ backendRefs: Array<{ weight: number }> }> }).rules;
    (rules[0]?.backendRefs[0] as { weight: number }).weight = -1;
    const badRoute = await dryRunApply(api, route, false);
    assert.equal(badRoute.status, 422, statusText(badRoute));
    assert.match(String(badRoute.body['message']), /weight/);
  });
});
