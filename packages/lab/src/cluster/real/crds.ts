// CustomResourceDefinitions for the real lab cluster, from a kustomization directory such as
// deploy/crds (its `resources:` files): created at start and waited for until Established, so the
// lab's GRPCRoutes (canary-shift) are served by the real apiserver as users' clusters serve them.
// The embedded API server knows grpcroutes natively; kube-apiserver only through the CRD.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { loadAllYaml, loadYaml } from '@kubernetes/client-node';

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import type { ResourcePath } from 'grpc-kube/internal/kube/client.js';
import { statusOf, type LabApi } from './kube-http.js';

export interface CrdObject {
  apiVersion: string;
  kind: 'CustomResourceDefinition';
  metadata: { name: string };
  spec: unknown;
  status?: { conditions?: Array<{ type: string; status: string }> };
}

const CRDS: ResourcePath = {
  group: 'apiextensions.k8s.io',
  version: 'v1',
  resource: 'customresourcedefinitions',
};
const CRD_PATH = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';

/** The CRDs listed by `dir/kustomization.yaml` (its resources: files); anything else is refused. */
export function readCrds(dir: string): CrdObject[] {
  const read = (file: string): string => {
    try {
      return readFileSync(join(dir, file), 'utf8');
    } catch (err) {
      throw new GrpcKubeError('GK_ERR_LAB', `cannot read the CRDs in ${dir}: ${(err as Error).message}`);
    }
  };
  const k = loadYaml<{ resources?: unknown }>(read('kustomization.yaml'));
  const files = Array.isArray(k?.resources) ? (k.resources as unknown[]) : [];
  const out: CrdObject[] = [];
  for (const f of files) {
    for (const o of loadAllYaml(read(String(f))) as Array<Partial<CrdObject> | null>) {
      if (o === null) continue;
      if (o.kind !== 'CustomResourceDefinition' || typeof o.metadata?.name !== 'string')
        throw new GrpcKubeError(
          'GK_ERR_LAB',
          `${join(dir, String(f))}: only CustomResourceDefinitions belong here`,
        );
      out.push(o as CrdObject);
    }
  }
  return out;
}

/** Create each CRD (one that exists is kept) and wait until every one is Established. */
export async function installCrds(
  api: LabApi,
  crds: readonly CrdObject[],
  timeoutMs = 30_000,
): Promise<void> {
  for (const crd of crds) {
    try {
      await api.request('POST', CRD_PATH, crd, CRDS);
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
    }
  }
  const end = Date.now() + timeoutMs;
  for (const crd of crds) {
    for (let i = 0; ; i++) {
      const got = await api.request<CrdObject>('GET', `${CRD_PATH}/${crd.metadata.name}`, undefined, CRDS);
      if (got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
      if (Date.now() > end)
        throw new GrpcKubeError(
          'GK_ERR_LAB',
          `CRD ${crd.metadata.name} not Established within ${timeoutMs} ms`,
        );
      await delay(Math.min(20 * 2 ** i, 500));
    }
  }
}
