// A small kustomize renderer for the deploy/ tree: `grpc-kube lab --manifests` renders each strategy's
// overlay with it at run time, and the tests render the manifests on a machine without kustomize or
// kubectl. It implements exactly the subset deploy/ uses, the way
// kustomize v5 does it, and refuses anything else (so a new feature in a kustomization fails loudly
// instead of rendering wrong):
//   - resources: YAML files and directories holding a kustomization.yaml (rendered recursively);
//   - patches: strategic-merge patches by `path:` or inline `patch:`, matched by apiVersion, kind and
//     name. Maps merge recursively, null deletes, lists with a merge key (containers by name, env by
//     name, ports by containerPort / port…) merge item by item — patch items first in patch order,
//     then the original items the patch did not name (kustomize's order; it matters for env $(VAR)
//     expansion) — and every other list is replaced;
//   - namespace: set on every namespaced object; Namespace objects are renamed to it.
// test/deploy/manifests.test.ts compares this renderer's output with `kubectl kustomize` whenever
// kubectl is installed. CLI: `node packages/lab/dist/src/manifests/kustomize.js deploy/<scenario>`
// prints the YAML.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import yaml from 'js-yaml';
import { InvalidOptionError } from 'grpc-kube/internal/errors.js';

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [key: string]: unknown };
  [key: string]: unknown;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Kinds in deploy/ that are not namespaced (kustomize's list is longer; these are the ones we use). */
const CLUSTER_SCOPED = new Set([
  'Namespace',
  'CustomResourceDefinition',
  'ClusterRole',
  'ClusterRoleBinding',
]);

/** Merge keys of the lists deploy/ patches, by field name (Kubernetes' patchMergeKey tags). */
const MERGE_KEYS: Readonly<Record<string, (item: Record<string, Json>) => string | undefined>> = {
  containers: () => 'name',
  initContainers: () => 'name',
  env: () => 'name',
  volumes: () => 'name',
  volumeMounts: () => 'mountPath',
  imagePullSecrets: () => 'name',
  // Container ports merge by containerPort, Service ports by port.
  ports: (item) => ('containerPort' in item ? 'containerPort' : 'port'),
};

const KUSTOMIZATION_FILES = ['kustomization.yaml', 'kustomization.yml', 'Kustomization'];
const KNOWN_FIELDS = new Set(['apiVersion', 'kind', 'namespace', 'resources', 'patches']);

function isMap(v: unknown): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

export function idOf(o: KubeObject): string {
  const group = o.apiVersion.includes('/') ? o.apiVersion.split('/')[0] : '';
  return `${group}/${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

/** Parse a multi-document YAML file into objects, each checked to look like a Kubernetes object. */
export function loadObjects(file: string): KubeObject[] {
  const docs = yaml.loadAll(readFileSync(file, 'utf8'));
  return docs
    .filter((d) => d !== null && d !== undefined)
    .map((d, i) => {
      const o = d as Partial<KubeObject>;
      if (
        !isMap(o) ||
        typeof o.apiVersion !== 'string' ||
        typeof o.kind !== 'string' ||
        !isMap(o.metadata) ||
        typeof o.metadata['name'] !== 'string'
      ) {
        throw new InvalidOptionError(`${file} document ${i}`, 'must have apiVersion, kind and metadata.name');
      }
      return o as KubeObject;
    });
}

function mergeList(orig: Json[], patch: Json[], field: string): Json[] {
  const keyOf = MERGE_KEYS[field];
  const allMaps = [...orig, ...patch].every(isMap);
  if (keyOf === undefined || !allMaps || patch.length === 0) return clone(patch);
  const key = (item: Record<string, Json>): Json => item[keyOf(item) ?? ''] ?? null;
  const origMaps = orig as Array<Record<string, Json>>;
  const used = new Set<number>();
  const out: Json[] = [];
  for (const p of patch as Array<Record<string, Json>>) {
    const k = key(p);
    if (k === null) throw new InvalidOptionError(`patch list ${field}`, `item lacks its merge key`);
    const i = origMaps.findIndex((o, idx) => !used.has(idx) && key(o) === k);
    if (i >= 0) {
      used.add(i);
      out.push(mergeValue(origMaps[i] as Json, p, field));
    } else out.push(stripNulls(clone(p)));
  }
  origMaps.forEach((o, idx) => {
    if (!used.has(idx)) out.push(clone(o));
  });
  return out;
}

function stripNulls(v: Json): Json {
  if (Array.isArray(v)) return v.map(stripNulls);
  if (!isMap(v)) return v;
  const out: Record<string, Json> = {};
  for (const [k, x] of Object.entries(v)) if (x !== null) out[k] = stripNulls(x);
  return out;
}

function mergeValue(orig: Json, patch: Json, field: string): Json {
  if (isMap(patch) && Object.keys(patch).some((k) => k.startsWith('$'))) {
    throw new InvalidOptionError(
      `patch ${field}`,
      'uses a $patch directive the test renderer does not support',
    );
  }
  if (isMap(orig) && isMap(patch)) {
    const out: Record<string, Json> = clone(orig);
    for (const [k, p] of Object.entries(patch)) {
      if (p === null) delete out[k];
      else if (k in out) out[k] = mergeValue(out[k] as Json, p, k);
      else out[k] = stripNulls(clone(p));
    }
    return out;
  }
  if (Array.isArray(orig) && Array.isArray(patch)) return mergeList(orig, patch, field);
  return stripNulls(clone(patch));
}

/** Strategic-merge `patch` into `target` (a new object; neither input is changed). */
export function strategicMerge(target: KubeObject, patch: KubeObject): KubeObject {
  return mergeValue(target as unknown as Json, patch as unknown as Json, '') as unknown as KubeObject;
}

function kustomizationFile(dir: string): string {
  for (const f of KUSTOMIZATION_FILES) {
    const p = join(dir, f);
    if (existsSync(p)) return p;
  }
  throw new InvalidOptionError(dir, 'has no kustomization.yaml');
}

/** Render the kustomization in `dir` as kustomize would (for the subset above). */
export function renderKustomization(dir: string): KubeObject[] {
  const file = kustomizationFile(dir);
  const k = yaml.load(readFileSync(file, 'utf8'));
  if (!isMap(k)) throw new InvalidOptionError(file, 'must be a map');
  for (const key of Object.keys(k)) {
    if (!KNOWN_FIELDS.has(key)) {
      throw new InvalidOptionError(
        `${file}: ${key}`,
        'is not supported by the lab renderer; use kubectl kustomize',
      );
    }
  }
  const resources = k['resources'] ?? [];
  if (!Array.isArray(resources) || !resources.every((r) => typeof r === 'string')) {
    throw new InvalidOptionError(`${file}: resources`, 'must be a list of paths');
  }
  let objects: KubeObject[] = [];
  for (const r of resources as string[]) {
    if (/^[a-z]+:\/\//.test(r))
      throw new InvalidOptionError(`${file}: ${r}`, 'remote resources are not supported');
    const p = resolve(dir, r);
    objects.push(...(statSync(p).isDirectory() ? renderKustomization(p) : loadObjects(p)));
  }
  const patches = k['patches'] ?? [];
  if (!Array.isArray(patches)) throw new InvalidOptionError(`${file}: patches`, 'must be a list');
  for (const [i, entry] of patches.entries()) {
    if (!isMap(entry) || Object.keys(entry).some((key) => key !== 'path' && key !== 'patch')) {
      throw new InvalidOptionError(`${file}: patches[${i}]`, 'must have only path: or patch: (no target)');
    }
    const docs =
      typeof entry['path'] === 'string'
        ? loadObjects(resolve(dir, entry['path']))
        : (yaml.loadAll(String(entry['patch'])) as KubeObject[]);
    for (const patch of docs) {
      const matches = objects.filter(
        (o) =>
          o.apiVersion === patch.apiVersion &&
          o.kind === patch.kind &&
          o.metadata.name === patch.metadata.name &&
          (patch.metadata.namespace === undefined || o.metadata.namespace === patch.metadata.namespace),
      );
      if (matches.length !== 1) {
        throw new InvalidOptionError(
          `${file}: patches[${i}]`,
          `matches ${matches.length} resources for ${patch.kind}/${patch.metadata.name}, need exactly 1`,
        );
      }
      objects = objects.map((o) => (o === matches[0] ? strategicMerge(o, patch) : o));
    }
  }
  const ns = k['namespace'];
  if (ns !== undefined) {
    if (typeof ns !== 'string' || ns === '')
      throw new InvalidOptionError(`${file}: namespace`, 'must be a name');
    objects = inNamespace(objects, ns);
  }
  const seen = new Set<string>();
  for (const o of objects) {
    const id = idOf(o);
    if (seen.has(id)) throw new InvalidOptionError(file, `renders ${id} twice`);
    seen.add(id);
  }
  return objects;
}

/**
 * What kustomize's `namespace:` does: every namespaced object moves to `ns`, Namespace objects are
 * renamed to it, and RoleBinding subjects that name a ServiceAccount of these objects (by name,
 * whatever the subject's kind) follow it when their namespace is unset, 'default', or the
 * ServiceAccount's own. The lab uses it again to move a rendered overlay into a namespace per run.
 */
export function inNamespace(objects: readonly KubeObject[], ns: string): KubeObject[] {
  const accounts = new Map(
    objects.filter((o) => o.kind === 'ServiceAccount').map((o) => [o.metadata.name, o.metadata.namespace]),
  );
  return objects.map((o) => {
    const c = clone(o);
    if (c.kind === 'Namespace') c.metadata.name = ns;
    else if (!CLUSTER_SCOPED.has(c.kind)) c.metadata.namespace = ns;
    if ((c.kind === 'RoleBinding' || c.kind === 'ClusterRoleBinding') && Array.isArray(c['subjects'])) {
      for (const subject of c['subjects'] as Array<{ name?: string; namespace?: string }>) {
        const name = subject.name ?? '';
        if (!accounts.has(name)) continue;
        const from = subject.namespace ?? '';
        if (from === '' || from === 'default' || from === accounts.get(name)) subject.namespace = ns;
      }
    }
    return c;
  });
}

/** Namespaces first, then CRDs, then the rest in kustomization order: the order to create them in. */
export function applyOrder(objects: readonly KubeObject[]): KubeObject[] {
  const rank = (o: KubeObject): number =>
    o.kind === 'Namespace' ? 0 : o.kind === 'CustomResourceDefinition' ? 1 : 2;
  return [...objects].sort((a, b) => rank(a) - rank(b));
}

export function toYaml(objects: readonly KubeObject[]): string {
  return objects.map((o) => yaml.dump(o, { noRefs: true, lineWidth: 120 })).join('---\n');
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const dir = process.argv[2];
  if (dir === undefined) {
    process.stderr.write('usage: node packages/lab/dist/src/manifests/kustomize.js deploy/<scenario>\n');
    process.exit(2);
  }
  process.stdout.write(toYaml(applyOrder(renderKustomization(dir))));
}
