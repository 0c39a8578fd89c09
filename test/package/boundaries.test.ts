// The package boundaries that lint keeps (scripts/eslint-package-boundaries.js), tried on imports
// someone could add: the core importing another package of ours, a relative path out of a package,
// a file outside packages/ reaching into one by path — and the imports that are allowed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ESLint } from 'eslint';
import { REPO_ROOT } from '../helpers/tarball.js';

const eslint = new ESLint({ cwd: REPO_ROOT });

/** The package-boundaries messages for `code` linted as if it were the file `path`. */
async function boundaryErrors(path: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: join(REPO_ROOT, path) });
  return (result?.messages ?? [])
    .filter((m) => m.ruleId === 'grpc-kube/package-boundaries')
    .map((m) => m.message);
}

const CASES: ReadonlyArray<{ path: string; code: string; fails: RegExp | undefined }> = [
  {
    path: 'packages/grpc-kube/src/probe.ts',
    code: "import { XdsControlPlane } from '@grpc-kube/xds';\nexport const x = XdsControlPlane;\n",
    fails: /grpc-kube may not import @grpc-kube\/xds.*the core imports no other package of ours/,
  },
  {
    path: 'packages/grpc-kube/src/probe.ts',
    code: "export const load = () => import('@grpc-kube/proxy');\n",
    fails: /grpc-kube may not import @grpc-kube\/proxy/,
  },
  {
    path: 'packages/proxy/src/probe.ts',
    code: "export { ERROR_CODES } from '../../grpc-kube/src/errors.js';\n",
    fails: /leaves package @grpc-kube\/proxy/,
  },
  {
    path: 'packages/proxy/src/probe.ts',
    code: "export * from '@grpc-kube/xds';\n",
    fails: /@grpc-kube\/proxy may not import @grpc-kube\/xds/,
  },
  {
    path: 'test/probe.test.ts',
    code: "import '../packages/grpc-kube/src/errors.js';\n",
    fails: /reaches into packages\/grpc-kube/,
  },
  {
    path: 'packages/grpc-kube/src/probe.ts',
    code: "import 'grpc-kube/internal/errors.js';\n",
    fails: /imports itself by name/,
  },
  // Allowed: by name, to a package the importer's package.json lists; relative within a package.
  { path: 'packages/proxy/src/probe.ts', code: "import 'grpc-kube/internal/errors.js';\n", fails: undefined },
  { path: 'packages/grpc-kube/src/kube/probe.ts', code: "import '../errors.js';\n", fails: undefined },
  {
    path: 'test/probe.test.ts',
    code: "import '@grpc-kube/xds';\nimport '../src/lab/x.js';\n",
    fails: undefined,
  },
];

for (const { path, code, fails } of CASES) {
  test(`${path}: ${code.split('\n')[0]} ${fails === undefined ? 'passes' : 'fails'} lint`, async () => {
    const errors = await boundaryErrors(path, code);
    if (fails === undefined) assert.deepEqual(errors, []);
    else {
      assert.equal(errors.length, 1, errors.join('\n'));
      assert.match(errors[0] ?? '', fails);
    }
  });
}
