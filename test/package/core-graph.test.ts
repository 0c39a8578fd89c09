// The core's static import graph: what `import 'grpc-kube/register'` and `import 'grpc-kube'` load
// before any code runs. Walks the compiled ES modules of packages/grpc-kube (every static
// `import`/`export … from`; dynamic `import()` and createRequire are the deliberate deferrals) and
// fails when the graph reaches another package of ours (xDS, the proxy, the lab), or a package the
// core defers (client-node, grpc-js-xds, grpc-health-check, protobufjs, js-yaml). Start-up time
// itself is a figure: `npm run bench -- startup`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGES = fileURLToPath(new URL('../../../packages/', import.meta.url));
const DIST_SRC = `${PACKAGES}grpc-kube/dist/src/`;

/** Static specifiers of one compiled module (comments and strings in code are not imports). */
export function staticImports(code: string): string[] {
  const re = /^\s*(?:import|export)\s+(?:type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?['"]([^'"]+)['"]/gm;
  return [...code.matchAll(re)].map((m) => m[1] ?? '');
}

export function importGraph(entry: string): { modules: string[]; packages: string[] } {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const queue = [resolve(entry)];
  for (let f = queue.pop(); f !== undefined; f = queue.pop()) {
    if (seen.has(f)) continue;
    seen.add(f);
    for (const spec of staticImports(readFileSync(f, 'utf8'))) {
      if (spec.startsWith('.')) queue.push(resolve(dirname(f), spec));
      else if (!spec.startsWith('node:'))
        packages.add(spec.split('/', spec.startsWith('@') ? 2 : 1).join('/'));
    }
  }
  return {
    modules: [...seen].map((m) => relative(DIST_SRC, m)).sort(),
    packages: [...packages].sort(),
  };
}

// A relative import never leaves the core's dist/src (lint forbids it in the sources).
const FORBIDDEN_DIRS = /^\.\.\//;
const FORBIDDEN_PACKAGES = [
  '@grpc-kube/xds',
  '@grpc-kube/proxy',
  '@grpc-kube/lab',
  '@grpc-kube/cli',
  '@kubernetes/client-node',
  '@grpc/grpc-js-xds',
  'grpc-health-check',
  'protobufjs',
  'js-yaml',
  're2-wasm',
  'ajv',
];

for (const entry of ['register.js', 'index.js']) {
  test(`${entry}: the static import graph holds only the core and @grpc/grpc-js`, () => {
    const g = importGraph(DIST_SRC + entry);
    assert.deepEqual(
      g.modules.filter((m) => FORBIDDEN_DIRS.test(m)),
      [],
    );
    assert.deepEqual(
      g.packages.filter((p) => FORBIDDEN_PACKAGES.includes(p)),
      [],
    );
    assert.deepEqual(g.packages, ['@grpc/grpc-js']);
    assert.ok(
      g.modules.includes('kube/kubeconfig.js') && g.modules.includes('resolver/setup.js'),
      'walked the core',
    );
  });
}

test('the walker sees what a static import would load, and not deferred loads', () => {
  const code = [
    "import { a } from './a.js';",
    "import type { T } from './types.js';",
    "export * from './b.js';",
    "export { c } from '@scope/pkg/sub';",
    "import './side-effect.js';",
    "const m = await import('./lazy.js');",
    "// import { x } from './comment.js';",
    'const s = "import { y } from \'./string.js\'";',
  ].join('\n');
  assert.deepEqual(staticImports(code), [
    './a.js',
    './types.js',
    './b.js',
    '@scope/pkg/sub',
    './side-effect.js',
  ]);
  // The xDS entry point does reach what the core must not: the walker would see it.
  const xds = importGraph(`${PACKAGES}xds/dist/src/index.js`);
  assert.ok(xds.packages.includes('protobufjs'), xds.packages.join());
});
