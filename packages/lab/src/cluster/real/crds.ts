// CustomResourceDefinitions for the real lab cluster, from a kustomization directory such as
// deploy/crds (its `resources:` files): created at start and waited for until Established, so the
// lab's GRPCRoutes (canary-shift) are served by the real apiserver as users' clusters serve them.
// The embedded API server knows grpcroutes natively; kube-apiserver only through the CRD.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAllYaml, loadYaml } from '@kubernetes/client-node';

import { GrpcKubeError } from 'grpc-kube/internal/errors.js';
import { KINDS, statusOf, type Kube } from '../kube-api.js';
import { waitForState } from '../workloads.js';

export interface CrdObject {
  apiVersion: string;
  kind: 'CustomResourceDefinition';
  metadata: { name: string };
  spec: unknown;
  status?: { conditions?: Array<{ type: string; status: string }> };
}

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
export async function installCrds(kube: Kube, crds: readonly CrdObject[], timeoutMs = 30_000): Promise<void> {
  for (const crd of crds) {
    try {
      await kube.create(KINDS.customresourcedefinitions, crd);
    } catch (err) {
      if (statusOf(err) !== 409) throw err;
    }
  }
  const established = (o: CrdObject | undefined): boolean =>
    o?.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') === true;
  await waitForState(
    kube,
    [KINDS.customresourcedefinitions],
    undefined,
    (v) =>
      crds.every((c) => established(v.get<CrdObject>(KINDS.customresourcedefinitions, c.metadata.name)))
        ? true
        : undefined,
    timeoutMs,
    (v) =>
      `CRDs ${crds
        .filter((c) => !established(v.get<CrdObject>(KINDS.customresourcedefinitions, c.metadata.name)))
        .map((c) => c.metadata.name)
        .join(', ')} to be Established`,
  );
}
