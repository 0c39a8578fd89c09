// ESLint rule: each workspace under packages/ is a package of its own. A file in packages/NAME may
// import another package of ours only by its name, and only one its package.json lists (dependencies,
// peerDependencies or devDependencies): the core, grpc-kube, lists none, so it imports none of them.
// No relative import leaves the package it is written in. Files outside packages/ (the cross-package
// tests, benchmarks, examples) import the packages by name, never by a path into packages/.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PACKAGES = join(ROOT, 'packages');

/** dir name → { name, allowed: names of our packages it may import } */
function readPackages() {
  const byDir = new Map();
  for (const dir of readdirSync(PACKAGES)) {
    let pkg;
    try {
      pkg = JSON.parse(readFileSync(join(PACKAGES, dir, 'package.json'), 'utf8'));
    } catch {
      continue;
    }
    byDir.set(dir, {
      name: pkg.name,
      deps: { ...pkg.dependencies, ...pkg.peerDependencies, ...pkg.devDependencies },
    });
  }
  const ours = new Set([...byDir.values()].map((p) => p.name));
  for (const p of byDir.values()) p.allowed = new Set(Object.keys(p.deps).filter((d) => ours.has(d)));
  return { byDir, ours };
}

const { byDir, ours } = readPackages();

/** The package name a bare specifier names, or undefined when it is not one of ours. */
function ourPackage(spec) {
  const parts = spec.split('/');
  const name = spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
  return ours.has(name) ? name : undefined;
}

/** 'packages/NAME/…' → NAME; undefined outside packages/. */
function packageDirOf(file) {
  const rel = relative(PACKAGES, file);
  if (rel.startsWith('..') || rel === '') return undefined;
  return rel.split(sep)[0];
}

export const packageBoundaries = {
  meta: {
    type: 'problem',
    docs: { description: 'keep imports within the package boundaries of packages/*' },
    schema: [],
  },
  create(context) {
    const file = resolve(context.filename);
    const dir = packageDirOf(file);
    const self = dir === undefined ? undefined : byDir.get(dir);
    function check(node, source) {
      if (
        source === null ||
        source === undefined ||
        source.type !== 'Literal' ||
        typeof source.value !== 'string'
      )
        return;
      const spec = source.value;
      if (spec.startsWith('.')) {
        const target = resolve(dirname(file), spec);
        const targetDir = packageDirOf(target);
        if (dir !== undefined && targetDir !== dir)
          context.report({
            node: source,
            message: `'${spec}' leaves package ${self?.name ?? dir}: import another package by its name`,
          });
        else if (dir === undefined && targetDir !== undefined)
          context.report({
            node: source,
            message: `'${spec}' reaches into packages/${targetDir}: import it by its package name`,
          });
        return;
      }
      const name = ourPackage(spec);
      if (name === undefined || self === undefined) return;
      if (name === self.name)
        context.report({
          node: source,
          message: `${self.name} imports itself by name ('${spec}'): use a relative path`,
        });
      else if (!self.allowed.has(name))
        context.report({
          node: source,
          message: `${self.name} may not import ${name}: not in its package.json dependencies${self.allowed.size === 0 ? ' (the core imports no other package of ours)' : ''}`,
        });
    }
    return {
      ImportDeclaration: (n) => check(n, n.source),
      ExportNamedDeclaration: (n) => check(n, n.source),
      ExportAllDeclaration: (n) => check(n, n.source),
      ImportExpression: (n) => check(n, n.source),
      TSImportType: (n) => check(n, n.argument?.literal ?? n.argument),
    };
  },
};
