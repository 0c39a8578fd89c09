// The package as a user installs it: the tarball of `npm pack` installed into a fresh project
// (test/helpers/tarball.ts), then imported as ES modules, required from CommonJS, compiled against by
// a TypeScript consumer (moduleResolution node16 and bundler), and the README's quick start run as
// written against a real grpc-js server found through a local API server — at the newest 1.x of
// @grpc/grpc-js and at the oldest the peer range allows.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { EmbeddedApiServer } from '@grpc-kube/lab/internal/cluster/apiserver.js';
import { SliceWriter, until } from '../helpers/kube.js';
import {
  consumer,
  installInto,
  pack,
  PACKAGES,
  removePacked,
  REPO_ROOT,
  tempDir,
} from '../helpers/tarball.js';

after(() => removePacked());

/** The oldest @grpc/grpc-js the peer range admits (package.json says why the range is what it is). */
const OLDEST_GRPC_JS = '1.14.0';

/** What each tarball must hold besides package.json, LICENSE and README.md. */
const MUST_HOLD: Readonly<Record<string, readonly string[]>> = {
  'grpc-kube': ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/register.js', 'dist/src/register.d.ts'],
  '@grpc-kube/xds': ['dist/src/index.js', 'dist/src/index.d.ts'],
  '@grpc-kube/proxy': ['dist/src/index.js', 'dist/src/index.d.ts'],
  '@grpc-kube/lab': ['dist/src/lab/runner.js', 'dist/src/cluster/embedded.js'],
  '@grpc-kube/cli': ['dist/src/main.js'],
};

test('each tarball holds its built code, its types, LICENSE and README; no tests, sources or maps', async () => {
  const set = await pack();
  assert.deepEqual(Object.keys(set).sort(), [...PACKAGES].sort());
  for (const name of PACKAGES) {
    const files: readonly string[] = set[name]?.files ?? [];
    for (const f of ['package.json', 'LICENSE', 'README.md', ...(MUST_HOLD[name] ?? [])])
      assert.ok(files.includes(f), `${name}: ${f} is packed`);
    const stray = files.filter((f) =>
      /^(src|test|bench|dist\/test|dist\/bench)\/|\.map$|\.tsbuildinfo$/.test(f),
    );
    assert.deepEqual(stray, [], name);
    const dir = join(REPO_ROOT, 'packages', name.replace(/^@grpc-kube\//, ''));
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
      exports: Record<string, string | { types?: string; default?: string }>;
    };
    for (const [entry, target] of Object.entries(pkg.exports)) {
      // `./internal/*.js` is a pattern over dist/src, which the `files` check above covers.
      if (typeof target === 'string' || entry.includes('*')) continue;
      for (const path of [target.types, target.default])
        assert.ok(
          path !== undefined && files.includes(path.replace(/^\.\//, '')),
          `${name}: ${entry} → ${path} is packed`,
        );
    }
  }
});

test('ESM: every entry point imports from the installed tarball', async () => {
  const c = await consumer();
  await writeFile(
    join(c.dir, 'esm.mjs'),
    `import * as core from 'grpc-kube';
import * as xds from '@grpc-kube/xds';
import * as proxy from '@grpc-kube/proxy';
await import('grpc-kube/register');
const missing = await xds.registerXdsClientOnce('127.0.0.1:1', 'node').then(() => 'registered', (e) => e.code);
console.log(JSON.stringify({
  setup: typeof core.setup, client: typeof core.KubeClient, load: typeof core.loadKubeConfig,
  xds: typeof xds.XdsControlPlane, proxy: typeof proxy.GrpcProxy, xdsInCore: 'XdsControlPlane' in core,
  missing,
}));
`,
  );
  const { stdout } = await c.node(['esm.mjs']);
  assert.deepEqual(JSON.parse(stdout), {
    setup: 'function',
    client: 'function',
    load: 'function',
    xds: 'function',
    proxy: 'function',
    xdsInCore: false,
    // @grpc/grpc-js-xds is an optional peer: without it the xDS client says what to install.
    missing: 'GK_ERR_MISSING_PACKAGE',
  });
});

test('CLI: resolve needs only the core; xds, proxy and lab name the package to install', async () => {
  const set = await pack();
  const dir = await tempDir('gk-cli-');
  await installInto(
    dir,
    ['grpc-kube', '@grpc-kube/cli'].map((n) => set[n]?.tarball ?? ''),
    '^1',
  );
  const run = (args: string[]): Promise<{ code: number; out: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [join(dir, 'node_modules', '.bin', 'grpc-kube'), ...args], {
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.once('exit', (code) => resolve({ code: code ?? -1, out }));
    });
  const help = await run(['--help']);
  assert.equal(help.code, 0, help.out);
  assert.match(help.out, /resolve/);
  for (const [args, pkg] of [
    [['xds', 'serve'], '@grpc-kube/xds'],
    [['proxy', '--mode=ingress', '--target=a.b:1'], '@grpc-kube/proxy'],
    [['lab'], '@grpc-kube/lab'],
  ] as const) {
    const r = await run([...args]);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, new RegExp(`GK_ERR_MISSING_PACKAGE: .*npm install ${pkg}`), r.out);
  }
});

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
const requireEsm = (major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major >= 23;

test(
  'CommonJS: require() of the ES module package (Node >= 20.19 / 22.12)',
  { skip: !requireEsm },
  async () => {
    const c = await consumer();
    await writeFile(
      join(c.dir, 'cjs.cjs'),
      `const core = require('grpc-kube');
require('grpc-kube/register');
const proxy = require('@grpc-kube/proxy');
console.log(JSON.stringify({ setup: typeof core.setup, policies: core.POLICY_NAMES, proxy: typeof proxy.GrpcProxy }));
`,
    );
    const { stdout } = await c.node(['--no-warnings', 'cjs.cjs']);
    assert.deepEqual(JSON.parse(stdout), {
      setup: 'function',
      policies: ['grpc_kube_p2c', 'grpc_kube_ewma'],
      proxy: 'function',
    });
  },
);

const TS_CONSUMER = `import * as grpc from '@grpc/grpc-js';
import { setup, loadKubeConfig, KubeClient, GrpcKubeError, type KubeConfigLike, type SetupOptions } from 'grpc-kube';
import { XdsControlPlane } from '@grpc-kube/xds';
import { GrpcProxy } from '@grpc-kube/proxy';
import 'grpc-kube/register';

const options: SetupOptions = { defaultLbPolicy: 'grpc_kube_p2c', dnsPollIntervalMs: 5000 };
const kc: KubeConfigLike = loadKubeConfig({ kubeconfig: 'kubeconfig.yaml' });
const kube = setup({ ...options, kubeConfig: new KubeClient(kc) });
const closed: Promise<void> = kube.close();
// @ts-expect-error: the types are real, not any
setup({ defaultLbPolicy: 5 });
const code: string = new GrpcKubeError('GK_ERR_KUBE_CONFIG', 'x').code;
const classes: unknown[] = [XdsControlPlane, GrpcProxy, grpc.Client];
export { closed, code, classes };
`;

for (const [module, moduleResolution] of [
  ['node16', 'node16'],
  ['esnext', 'bundler'],
] as const) {
  test(`TypeScript: a consumer compiles against the packed .d.ts (moduleResolution ${moduleResolution})`, async () => {
    const c = await consumer();
    const dir = join(c.dir, `ts-${moduleResolution}`);
    await writeFile(join(c.dir, `consumer-${moduleResolution}.ts`), TS_CONSUMER);
    await writeFile(
      join(c.dir, `tsconfig.${moduleResolution}.json`),
      JSON.stringify({
        compilerOptions: {
          module,
          moduleResolution,
          target: 'ES2022',
          strict: true,
          noEmit: true,
          // Our own .d.ts are checked; skipLibCheck would hide a broken one.
          skipLibCheck: false,
          types: ['node'],
          typeRoots: [join(REPO_ROOT, 'node_modules', '@types')],
          outDir: dir,
        },
        files: [`consumer-${moduleResolution}.ts`],
      }),
    );
    const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = await c
      .node([tsc, '-p', `tsconfig.${moduleResolution}.json`])
      .catch((e: { stdout: string }) => e);
    assert.equal(r.stdout, '', `tsc reported:\n${r.stdout}`);
  });
}

/** The README's quick start, as written, with its one placeholder (the generated client) filled in. */
function readmeQuickStart(): string {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const block = [...readme.matchAll(/```js\n([\s\S]*?)```/g)]
    .map((m) => m[1] ?? '')
    .find((b) => b.includes("from 'grpc-kube'"));
  assert.ok(block !== undefined, 'README.md has a js block importing grpc-kube');
  const generated = /^import \{ GreeterClient \} from '.*';.*$/m;
  assert.match(block, generated);
  return block.replace(
    generated,
    `const json = { serialize: (v) => Buffer.from(JSON.stringify(v)), deserialize: (b) => JSON.parse(b.toString()) };
const GreeterClient = grpc.makeGenericClientConstructor({
  sayHello: { path: '/helloworld.Greeter/SayHello', requestStream: false, responseStream: false,
    requestSerialize: json.serialize, requestDeserialize: json.deserialize,
    responseSerialize: json.serialize, responseDeserialize: json.deserialize },
}, 'Greeter');`,
  );
}

async function greeter(t: { after(fn: () => unknown): void }): Promise<number> {
  const server = new grpc.Server();
  server.register<{ name: string }, { message: string }>(
    '/helloworld.Greeter/SayHello',
    (call: grpc.ServerUnaryCall<{ name: string }, unknown>, cb: grpc.sendUnaryData<{ message: string }>) =>
      cb(null, { message: `hello ${call.request.name}` }),
    (v) => Buffer.from(JSON.stringify(v)),
    (b) => JSON.parse(b.toString()) as { name: string },
    'unary',
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  t.after(() => server.forceShutdown());
  return port;
}

for (const version of [process.env.GRPC_KUBE_TEST_GRPC_JS ?? '^1', OLDEST_GRPC_JS]) {
  test(`the README quick start reaches a grpc-js server through the API server (@grpc/grpc-js ${version})`, async (t) => {
    const c = await consumer(version);
    const installed = JSON.parse(
      readFileSync(join(c.dir, 'node_modules', '@grpc', 'grpc-js', 'package.json'), 'utf8'),
    ) as { version: string };
    if (version === OLDEST_GRPC_JS) assert.equal(installed.version, OLDEST_GRPC_JS);
    const api = new EmbeddedApiServer();
    await api.start();
    t.after(() => api.close());
    const port = await greeter(t);
    new SliceWriter(api, 'hello', port).put('hello-1', [{ ip: '127.0.0.1' }]);
    await writeFile(join(c.dir, 'kubeconfig.yaml'), api.kubeConfigYaml());
    await writeFile(join(c.dir, 'quickstart.mjs'), readmeQuickStart());
    const env = { PATH: process.env.PATH, HOME: c.dir, KUBECONFIG: join(c.dir, 'kubeconfig.yaml') };
    const child = spawn(process.execPath, ['quickstart.mjs'], {
      cwd: c.dir,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    t.after(() => child.kill('SIGKILL'));
    let out = '';
    let exited: number | null = null;
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => (exited = code ?? -1));
    // The watch keeps the client process alive; it is done once it has printed the reply.
    await until(() => out.includes('\n') || exited !== null, 60_000);
    assert.equal(out.trim(), 'hello world', `@grpc/grpc-js ${installed.version}`);
  });
}
