// The image without a container engine (none on the machines that run these tests): the Dockerfile's
// runtime stage is rebuilt as a directory from its own COPY --from=build lines, and the Hello server
// and client run from there — so a file the image forgets (a proto, a compiled module) fails here.
// Every package the shipped code imports must survive the build stage's `npm install --omit=dev`
// (after it pins the peers the CLI needs as the image's dependencies), and the file set sent
// to the build (.dockerignore) must hold everything the build stage copies.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';

const repoRoot = join(import.meta.dirname, '..', '..', '..');
const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');

/** `FROM … AS name` stages, each with its instruction lines (continuations joined). */
function stages(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of text.replace(/\\\n/g, ' ').split('\n')) {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) continue;
    const from = /^FROM\s+\S+(?:\s+AS\s+(\S+))?$/i.exec(l);
    if (from) {
      current = [];
      out.set(from[1] ?? `stage${out.size}`, current);
    } else current?.push(l);
  }
  return out;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)],
  );
}

function run(
  script: string,
  cwd: string,
  env: Record<string, string>,
): {
  done: Promise<{ code: number | null; out: string }>;
  kill: (s: NodeJS.Signals) => void;
  /** Resolves when the output so far matches `re`; rejects if the process exits first. */
  waitFor: (re: RegExp) => Promise<void>;
  /** Everything it printed so far (stdout and stderr). */
  output: () => string;
} {
  const child = spawn(process.execPath, [script], {
    cwd,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', NODE_ENV: 'production', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (c: string): void => {
    out += c;
    for (const w of waiters) w();
  };
  child.stdout.setEncoding('utf8').on('data', onData);
  child.stderr.setEncoding('utf8').on('data', onData);
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  timer.unref();
  return {
    done: new Promise((resolve) =>
      child.once('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      }),
    ),
    kill: (s) => void (child.exitCode === null && child.kill(s)),
    output: () => out,
    waitFor: (re) =>
      new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (re.test(out)) {
            waiters.delete(check);
            resolve();
          }
        };
        waiters.add(check);
        check();
        child.once('exit', () => {
          waiters.delete(check);
          if (!re.test(out)) reject(new Error(`exited before printing ${re}: ${out}`));
        });
      }),
  };
}

describe('Dockerfile', () => {
  const all = stages(dockerfile);

  it('is multi-stage: build on node:20, runtime on node:20-slim as uid 1000, one target per program', () => {
    assert.deepEqual([...all.keys()], ['build', 'runtime', 'client', 'proxy', 'xds', 'server']);
    assert.match(dockerfile, /^FROM node:\$\{NODE_VERSION\}-bookworm AS build$/m);
    assert.match(dockerfile, /^FROM node:\$\{NODE_VERSION\}-bookworm-slim AS runtime$/m);
    assert.match(dockerfile, /^ARG NODE_VERSION=20$/m);
    assert.ok(all.get('runtime')?.includes('USER 1000:1000'));
    const cmd = (s: string): string | undefined => all.get(s)?.find((l) => l.startsWith('CMD'));
    assert.equal(cmd('server'), 'CMD ["node", "dist/examples/hello/server.js"]');
    assert.equal(cmd('client'), 'CMD ["node", "dist/examples/hello/client.js"]');
    assert.match(cmd('proxy') ?? '', /^CMD \["node", "packages\/cli\/dist\/src\/main\.js", "proxy"/);
    assert.match(cmd('xds') ?? '', /^CMD \["node", "packages\/cli\/dist\/src\/main\.js", "xds", "serve"/);
    // The proxy image carries nghttpx for --data-plane nghttpx, and still runs as uid 1000.
    assert.ok(all.get('proxy')?.some((l) => /apt-get install .*nghttp2-proxy/.test(l)));
    assert.equal(
      all
        .get('proxy')
        ?.filter((l) => l.startsWith('USER'))
        .at(-1),
      'USER 1000:1000',
    );
    // Dev dependencies are dropped before the runtime stage copies node_modules.
    assert.ok(all.get('build')?.some((l) => l.includes('npm install --omit=dev')));
  });

  it('.dockerignore sends every path the build stage copies', () => {
    const allowed = readFileSync(join(repoRoot, '.dockerignore'), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('!'))
      .map((l) => l.slice(1));
    const copied = (all.get('build') ?? [])
      .filter((l) => l.startsWith('COPY ') && !l.includes('--from'))
      .flatMap((l) => l.split(/\s+/).slice(1, -1));
    assert.ok(copied.length >= 6);
    for (const p of copied) assert.ok(allowed.includes(p), `${p} is sent to the build`);
  });

  it('every package the image’s code imports is a production dependency', () => {
    type Manifest = {
      name: string;
      workspaces?: string[];
      dependencies?: Record<string, string>;
      peerDependencies?: Record<string, string>;
    };
    const read = (dir: string): Manifest =>
      JSON.parse(readFileSync(join(repoRoot, dir, 'package.json'), 'utf8')) as Manifest;
    const root = read('.');
    const workspaces = (root.workspaces ?? []).map(read);
    // The root's dependencies, the workspace packages themselves, and theirs.
    const prod = new Set([
      ...Object.keys(root.dependencies ?? {}),
      ...workspaces.flatMap((w) => [w.name, ...Object.keys(w.dependencies ?? {})]),
    ]);
    const peers = new Set(workspaces.flatMap((w) => Object.keys(w.peerDependencies ?? {})));
    for (const n of peers) prod.add(n);
    const lock = JSON.parse(readFileSync(join(repoRoot, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean }>;
    };
    const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
    const pinList = /for \(const n of \[([^\]]*)\]\) p\.dependencies\[n\]/.exec(dockerfile)?.[1] ?? '';
    const pinned = new Set([...pinList.matchAll(/'([^']+)'/g)].map((m) => m[1] as string));
    assert.ok(pinned.has('@grpc/grpc-js'), 'the build stage pins the grpc-js peer for the image');
    for (const n of pinned) assert.ok(peers.has(n), `${n} is pinned but is not a peer of our packages`);
    const files = [
      join(repoRoot, 'dist', 'examples'),
      ...(root.workspaces ?? []).map((w) => join(repoRoot, w, 'dist', 'src')),
    ]
      .flatMap(filesUnder)
      .filter((f) => f.endsWith('.js'));
    assert.ok(files.length > 20);
    // Present only as a dependency of a dependency: works, but belongs in package.json.
    const undeclared = new Set<string>();
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      for (const m of text.matchAll(/(?:from\s+|import\()\s*'([^'.][^']*)'/g)) {
        const spec = m[1] as string;
        if (spec.startsWith('node:')) continue;
        const name = spec.startsWith('@')
          ? spec.split('/').slice(0, 2).join('/')
          : (spec.split('/')[0] as string);
        // What the build stage keeps: every package the lock file does not mark dev-only, and the
        // peers it pins as the image's own dependencies.
        const entry = lock.packages[`node_modules/${name}`];
        assert.ok(
          entry !== undefined && (entry.dev !== true || pinned.has(name)),
          `${relative(repoRoot, f)} imports ${name}, which the image lacks`,
        );
        if (!prod.has(name)) undeclared.add(`${name} (${relative(repoRoot, f)})`);
      }
    }
    if (undeclared.size > 0) console.log(`# imported but not in package.json: ${[...undeclared].join(', ')}`);
  });

  describe('the runtime stage’s files, as a directory', () => {
    const dir = mkdtempSync(join(tmpdir(), 'grpc-kube-image-'));
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('hold a Hello server and client that answer each other', async () => {
      const copies = (all.get('runtime') ?? []).filter((l) => l.startsWith('COPY --from=build'));
      assert.ok(copies.length >= 5);
      for (const line of copies) {
        const [src, dst] = line.split(/\s+/).slice(-2) as [string, string];
        const from = join(repoRoot, relative('/src', src));
        const to = join(dir, dst);
        // node_modules: the repo's own (with dev deps; the import check above covers pruning).
        if (src.endsWith('node_modules')) symlinkSync(from, to, 'dir');
        else cpSync(from, to, { recursive: true });
      }
      for (const f of [
        'dist/examples/hello/server.js',
        'packages/cli/dist/src/main.js',
        'proto/hello.proto',
      ]) {
        assert.ok(existsSync(join(dir, f)), `${f} is in the image`);
      }
      assert.ok(!existsSync(join(dir, 'dist', 'test')), 'no tests in the image');

      const server = run('dist/examples/hello/server.js', dir, {
        POD_NAME: 'hello-image-0',
        LISTEN_HOST: '127.0.0.1',
        // Port 0: the kernel picks a free one and the server says which (a fixed port can be taken,
        // e.g. as another program's ephemeral port, and the server then cannot listen).
        PORT: '0',
        DRAIN_PROPAGATION_MS: '100',
        DRAIN_GRACE_MS: '30000',
      });
      try {
        await server.waitFor(/listening on 127\.0\.0\.1:\d+/);
        const port = /listening on 127\.0\.0\.1:(\d+)/.exec(server.output())?.[1];
        assert.ok(port !== undefined && Number(port) > 0, 'the server names the port it listens on');
        const client = run('dist/examples/hello/client.js', dir, {
          TARGET: `ipv4:127.0.0.1:${port}`,
          CLIENT_ID: 'image-test',
          ROUNDS: '2',
          INTERVAL_MS: '0',
          DEADLINE_MS: '30000',
        });
        const { code, out } = await client.done;
        assert.equal(code, 0, out);
        assert.match(out, /round 1 10\/10 ok {2}hello-image-0=10\nround 2 10\/10 ok {2}hello-image-0=10\n/);
      } finally {
        server.kill('SIGTERM');
      }
      const end = await server.done;
      assert.equal(end.code, 0, end.out);
      // The kit's drain ran on SIGTERM: draining → goaway → stopped → exit.
      assert.match(end.out, /kit draining \(signal\)[\s\S]*kit goaway[\s\S]*kit stopped[\s\S]*kit exit/);
    });
  });
});
